# Sourced by the GPU scripts: packages the GPU machine lacks (Liger-Kernel, newer pytest plugins)
# travel as wheels in .whl/; install them into /tmp/site and put it on PYTHONPATH. Without them,
# the peers' rows are skipped, not failed. --upgrade: a warm machine may hold an earlier install.
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target /tmp/site .whl/*.whl >/dev/null \
    && export PYTHONPATH=/tmp/site
fi
