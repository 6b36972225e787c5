#!/usr/bin/env bash
# The H200 benchmark in one device call: copy ceilings, the full peer table (ours, quack, Liger,
# torch.compile, torch.nn.functional) and the launch-config sweep (bench/h200.py), within ~9 minutes.
#   bash bench/h200.sh          # everything lands in $OUT (default bench/results/h200), as it is measured
#   bash bench/h200.sh stage    # the first of two calls when quack is split (bench/quack-wheels.sh split)
# Packages travel in .whl-quack/ (or .whl-quack-a/ then .whl-quack-b/): wheels, and nvidia-cutlass-dsl's
# unpacked files as an xz tarball, checked against its sha256 before anything is installed.
set -uo pipefail
OUT=${OUT:-bench/results/h200}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
site=${SITE_DIR:-/tmp/site}
parts=${PARTS_DIR:-/tmp/quack-parts}
t0=$(date +%s)
if [ "${1:-}" = stage ]; then  # what this call leaves in /tmp waits for the next one while the machine is warm
  mkdir -p "$parts" && cp .whl-quack-a/* "$parts"/ && ls -la "$parts"
  exit 0
fi
src=.whl-quack
[ -d .whl-quack-b ] && src=.whl-quack-b
mkdir -p "$site"
if [ -f "$src/cutlass-dsl.tar.xz.sha256" ]; then
  if [ -f "$src/cutlass-dsl.tar.xz" ]; then
    tarball="$src/cutlass-dsl.tar.xz"
  else
    tarball=/tmp/cutlass-dsl.tar.xz
    cat "$parts"/cutlass-dsl.tar.xz.part-* "$src"/cutlass-dsl.tar.xz.part-* > "$tarball" 2>/dev/null
  fi
  if echo "$(cat "$src/cutlass-dsl.tar.xz.sha256")  $tarball" | sha256sum -c --quiet; then
    python3 -c "import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2], filter='data')" "$tarball" "$site" \
      && echo "nvidia-cutlass-dsl unpacked into $site"
  else
    echo "nvidia-cutlass-dsl: tarball incomplete or corrupt (a split whose first call's /tmp is gone?): quack is left out"
  fi
fi
if ls "$src"/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$site" "$src"/*.whl 2>&1 \
    | grep -v "already exists\|WARNING: Target directory" || true
fi
export PYTHONPATH="$site:$site/nvidia_cutlass_dsl/python_packages${PYTHONPATH:+:$PYTHONPATH}"
echo "install: $(( $(date +%s) - t0 )) s"
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,clocks.max.mem --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)" | tee -a "$OUT/gpu.txt"
# TOTAL_S: the work's budget (each phase stops starting new cells when it is spent); H200_S: the hard stop
timeout -k 5 "${H200_S:-520}" python3 bench/h200.py --out "$OUT" --total-s "${TOTAL_S:-480}" --sweep-s "${SWEEP_S:-150}" ${H200_ARGS:-} 2>&1 \
  | tee "$OUT/h200.log"
echo "h200.py: rc ${PIPESTATUS[0]}"
[ -s "$OUT/h200.jsonl" ] && python3 bench/summarize.py "$OUT/h200.jsonl" > "$OUT/h200.md"
echo "bench/h200.sh: $(( $(date +%s) - t0 )) s"
