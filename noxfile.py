"""nox sessions: tests, lint, report (the main job), gate, bench, zoo, integrations.

Each picks CPU or GPU budgets by itself (a GPU when torch sees one; otherwise the CPU, with Triton
kernels under TRITON_INTERPRET=1 and small budgets). Extra arguments after ``--`` go to the
underlying command, e.g. ``nox -s report -- --examples 500 --kernels 'triton_*'``.

Which torch a session gets (torch is the one dependency worth gigabytes, so it is never chosen
behind the user's back):
- the torch of the Python that runs nox, when it has one: the session sees that torch and the
  packages torch itself requires (linked in, nothing copied or downloaded), and nothing else of that
  Python, so a test session proves what a fresh install of normgate holds;
- otherwise one torch installed once into .nox/_torch and shared by every session: the pip
  arguments in ``NORMGATE_TORCH`` (e.g. ``torch==2.13.0``, or
  ``torch --index-url https://download.pytorch.org/whl/cu128``), else, on a machine without an
  NVIDIA GPU, PyTorch's CPU build (about 200 MB from download.pytorch.org/whl/cpu; PyPI's default
  torch for Linux is a CUDA build of several GB), and on a machine with one, PyPI's default.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from importlib import metadata

import nox
from packaging.requirements import Requirement

nox.options.sessions = ["tests", "lint"]
nox.options.reuse_existing_virtualenvs = True
# The CPU index also serves torch's own requirements. Where it cannot be reached, pip falls back to
# whatever other index it is configured with, which may serve a CUDA build: said below, not hidden.
CPU_TORCH = ["torch", "--index-url", "https://download.pytorch.org/whl/cpu"]


def _has_nvidia_gpu() -> bool:
    return shutil.which("nvidia-smi") is not None or os.path.exists("/proc/driver/nvidia/version")


def _find(name: str, path: list[str] | None) -> metadata.Distribution | None:
    """The installed distribution ``name`` on ``path`` (None: the Python that runs nox)."""
    if path is None:
        try:
            return metadata.distribution(name)
        except metadata.PackageNotFoundError:
            return None
    return next(iter(metadata.Distribution.discover(name=name, path=path)), None)


def _requirement_closure(name: str, path: list[str] | None) -> list[metadata.Distribution]:
    """``name``'s distribution and every distribution it requires (extras left out)."""
    seen: dict[str, metadata.Distribution] = {}
    todo = [name]
    while todo:
        req = todo.pop()
        key = req.lower().replace("_", "-")
        dist = None if key in seen else _find(req, path)
        if dist is None:
            continue  # seen, or an optional or platform-specific requirement that is not installed
        seen[key] = dist
        for spec in dist.requires or ():
            r = Requirement(spec)
            if r.marker is None or r.marker.evaluate({"extra": ""}):
                todo.append(r.name)
    return list(seen.values())


SHARED_TORCH = os.path.join(".nox", "_torch")  # one torch for every session, when nox's Python has none


def _torch_source(session) -> list[str] | None:
    """Where the session's torch comes from: None for the Python that runs nox (when it has one),
    else a folder that every session shares, with torch installed into it once."""
    if _find("torch", None) is not None:
        return None
    target = os.path.abspath(SHARED_TORCH)
    if _find("torch", [target]) is None:
        spec = os.environ.get("NORMGATE_TORCH")
        if spec:
            args = shlex.split(spec)
        elif not _has_nvidia_gpu():
            session.log("no torch in the Python that runs nox and no NVIDIA GPU: installing PyTorch's CPU build "
                        f"once into {SHARED_TORCH} (set NORMGATE_TORCH to choose another)")
            args = CPU_TORCH
        else:
            args = ["torch"]
        session.run_install("python", "-m", "pip", "install", "--quiet", "--target", target, *args)
        torch = _find("torch", [target])
        if torch is not None and not _has_nvidia_gpu() and any(r.startswith("nvidia-") for r in torch.requires or ()):
            session.warn(f"pip installed a CUDA build of torch {torch.version} into {SHARED_TORCH} on a machine "
                         "without an NVIDIA GPU (several GB); to use a CPU build, delete that folder and set "
                         "NORMGATE_TORCH (e.g. NORMGATE_TORCH='torch==2.13.0' where a CPU wheel is at hand)")
    return [target]


def _torch(session) -> None:
    """Make the session see one torch (and what torch requires) through a folder of symlinks named
    in a .pth file, after the session's own site-packages: nothing copied, nothing downloaded
    twice, and nothing else of the Python that runs nox visible."""
    path = _torch_source(session)
    site = session.run_install("python", "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])",
                               silent=True)
    if site is None:  # nox -R / --no-install: the links from the first run are still there
        return
    site = site.strip().splitlines()[-1]
    links = os.path.join(session.virtualenv.location, "normgate-linked-torch")
    shutil.rmtree(links, ignore_errors=True)
    os.makedirs(links)
    for dist in _requirement_closure("torch", path):
        base = str(dist.locate_file(""))
        tops = {str(f).split("/")[0] for f in dist.files or () if not str(f).startswith("..")}
        for top in sorted(tops):
            src, dst = os.path.join(base, top), os.path.join(links, top)
            if top.endswith(".pth") or top == "bin" or not os.path.exists(src) or os.path.exists(dst):
                continue
            os.symlink(src, dst)
    with open(os.path.join(site, "normgate-linked-torch.pth"), "w") as f:
        f.write(links + "\n")
    torch = _find("torch", path)
    session.log(f"torch {torch.version} from {path[0] if path else sys.executable} (linked, not copied)")


def _install(session, extras: str = "") -> None:
    _torch(session)
    session.install("-e", f".{extras}")


def _probe(session, code: str) -> str | None:
    """What a line of Python prints in the session: through run_install under --install-only,
    through run under --no-install (-R), each of which skips the other; None when neither runs."""
    out = session.run_install("python", "-c", code, silent=True)
    if out is None:
        out = session.run("python", "-c", code, silent=True)
    return None if out is None else out.strip().splitlines()[-1]


def _device(session) -> str:
    return _probe(session, "import torch; print('cuda' if torch.cuda.is_available() else 'cpu')") or "cpu"


@nox.session
def tests(session):
    """The test suite (CPU; Triton kernels under the interpreter), then the sm_90 builds again under
    the GPU stack's Triton."""
    _install(session, "[test]")
    session.env["TRITON_INTERPRET"] = "1"
    # one pytest worker per core, a test file's tests on one worker (module fixtures such as the
    # zoo's run once); the slowest tests are listed at the end
    session.run("python", "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "auto", "--dist", "loadfile",
                "--durations", "15", *session.posargs)
    if not session.posargs:  # and the benchmark harness's own tests, which need no GPU (its sweep,
        # interleaving, ceilings and tables); bench/ has its own conftest, so a run of its own
        session.run("python", "-m", "pytest", "-q", "-p", "no:cacheprovider", "bench/test_offline.py")
        _hopper_builds_on_the_gpu_stack(session)


# The Triton of the GPU stack normgate's kernels are measured on (torch 2.11, Triton 3.6), beside the
# newest one the tests install: the two compilers do not accept the same code (Triton 3.6 rejected a
# constexpr argument left to its default in a nested call, which 3.9 and the interpreter take).
GPU_STACK_TRITON = "3.6.0"


def _hopper_builds_on_the_gpu_stack(session) -> None:
    """The tests that build our kernels for sm_90 (marked ``hopper``) again, with the GPU stack's
    Triton in front of the session's own (a folder of its own in the session: about 190 MB, once)."""
    target = os.path.join(session.virtualenv.location, f"triton-{GPU_STACK_TRITON}")
    if _find("triton", [target]) is None:
        session.run_install("python", "-m", "pip", "install", "--quiet", "--no-deps", "--target", target,
                            f"triton=={GPU_STACK_TRITON}")
    env = {"PYTHONPATH": target}
    session.run("python", "-c", f"import triton; assert triton.__version__ == {GPU_STACK_TRITON!r}, triton.__version__",
                env=env)
    session.run("python", "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "hopper", "tests", env=env)


@nox.session
def lint(session):
    session.install("ruff>=0.4")
    session.run("ruff", "check", ".")


@nox.session
def report(session):
    """The main job: run every check over the built-in kernels, then write report.html.

    Benchmarks appear in the report only when asked for (``-- --bench FILE.json``): the committed
    ones in bench/results/ were measured on other machines."""
    _install(session)
    args = ["--out", "results.jsonl", "--report", "report.html"]
    if _device(session) == "cpu":
        session.env["TRITON_INTERPRET"] = "1"
        args += ["--workers", str(os.cpu_count() or 1)]
    session.run("normgate", "run", *args, *session.posargs)


@nox.session
def gate(session):
    """Gate results against a baseline: nox -s gate -- results.jsonl --baseline baseline.json ..."""
    _install(session)
    if not session.posargs:
        session.error("usage: nox -s gate -- results.jsonl --baseline BASELINE.json [--summary S.md] [--junit J.xml]")
    session.run("normgate", "gate", *session.posargs)


@nox.session
def bench(session):
    """Benchmarks on the GPU (pytest-benchmark); skipped without one.

    The JSON is named after the GPU (bench/results/nvidia-h100-80gb-hbm3.json), so results from
    different cards sit side by side."""
    _install(session, "[bench]")
    code = ("import re, torch; print(re.sub('[^a-z0-9]+', '-', torch.cuda.get_device_name().lower()).strip('-') "
            "if torch.cuda.is_available() else 'no-gpu')")
    name = _probe(session, code) or "no-gpu"
    if name == "no-gpu":  # everything skips; write no JSON that a report would pick up
        session.run("python", "-m", "pytest", "bench", "-q", "-p", "no:cacheprovider", *session.posargs)
        return
    out = f"bench/results/{name}.json"
    session.run("python", "-m", "pytest", "bench", "-q", "-p", "no:cacheprovider", "--benchmark-json", out,
                *session.posargs)
    session.run("python", "bench/summarize.py", out)


@nox.session
def zoo(session):
    """Detection power: every mutant and every correct candidate, the kill matrix."""
    _install(session, "[test]")
    if _device(session) == "cpu":
        session.env["TRITON_INTERPRET"] = "1"
    session.run("normgate", "zoo", *session.posargs)


@nox.session
def integrations(session):
    """Third-party kernels and the pytest plugin, with transformers and Liger-Kernel installed."""
    _install(session, "[test,integrations]")
    session.env["TRITON_INTERPRET"] = "1"
    session.run("python", "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_adapt.py",
                "tests/test_thirdparty.py", "tests/test_plugin.py", "tests/test_entry_points.py",
                "tests/test_benchmark_integration.py", *session.posargs)
