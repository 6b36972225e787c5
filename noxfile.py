"""nox sessions: tests, lint, report (the main job), gate, bench, zoo.

Each picks CPU or GPU budgets by itself (a GPU when torch sees one; otherwise the CPU, with Triton
kernels under TRITON_INTERPRET=1 and small budgets). Extra arguments after ``--`` go to the
underlying command, e.g. ``nox -s report -- --examples 500 --kernels 'triton_*'``.

Sessions reuse the interpreter's installed torch and triton (the venv sees system site-packages),
so a machine that already has the right torch build does not download another.
"""

from __future__ import annotations

import os

import nox

nox.options.sessions = ["tests", "lint"]
nox.options.reuse_existing_virtualenvs = True
VENV = {"venv_params": ["--system-site-packages"]}


def _install(session, extras: str = "") -> None:
    session.install("-e", f".{extras}")


def _device(session) -> str:
    code = "import torch; print('cuda' if torch.cuda.is_available() else 'cpu')"
    return session.run("python", "-c", code, silent=True).strip().splitlines()[-1]


@nox.session(**VENV)
def tests(session):
    """The test suite (CPU; Triton kernels under the interpreter)."""
    _install(session, "[test]")
    session.env["TRITON_INTERPRET"] = "1"
    session.run("python", "-m", "pytest", "-q", "-p", "no:cacheprovider", *session.posargs)


@nox.session(**VENV)
def lint(session):
    session.install("ruff>=0.4")
    session.run("ruff", "check", ".")


@nox.session(**VENV)
def report(session):
    """The main job: run every check over the built-in kernels, then write report.html."""
    _install(session)
    args = ["--out", "results.jsonl", "--report", "report.html"]
    if _device(session) == "cpu":
        session.env["TRITON_INTERPRET"] = "1"
        args += ["--workers", str(os.cpu_count() or 1)]
    if os.path.isdir("bench/results"):
        for name in sorted(os.listdir("bench/results")):
            if name.endswith(".json"):
                args += ["--bench", f"bench/results/{name}"]
    session.run("normgate", "run", *args, *session.posargs)


@nox.session(**VENV)
def gate(session):
    """Gate results against a baseline: nox -s gate -- results.jsonl --baseline baseline.json ..."""
    _install(session)
    if not session.posargs:
        session.error("usage: nox -s gate -- results.jsonl --baseline BASELINE.json [--summary S.md] [--junit J.xml]")
    session.run("normgate", "gate", *session.posargs)


@nox.session(**VENV)
def bench(session):
    """Benchmarks on the GPU (pytest-benchmark); skipped without one.

    The JSON is named after the GPU (bench/results/nvidia-h100-80gb-hbm3.json), so results from
    different cards sit side by side and `nox -s report` shows them all."""
    _install(session, "[bench]")
    code = ("import re, torch; print(re.sub('[^a-z0-9]+', '-', torch.cuda.get_device_name().lower()).strip('-') "
            "if torch.cuda.is_available() else 'no-gpu')")
    name = session.run("python", "-c", code, silent=True).strip().splitlines()[-1]
    if name == "no-gpu":  # everything skips; write no JSON that a report would pick up
        session.run("python", "-m", "pytest", "bench", "-q", "-p", "no:cacheprovider", *session.posargs)
        return
    out = f"bench/results/{name}.json"
    session.run("python", "-m", "pytest", "bench", "-q", "-p", "no:cacheprovider", "--benchmark-json", out,
                *session.posargs)
    session.run("python", "bench/summarize.py", out)


@nox.session(**VENV)
def zoo(session):
    """Detection power: every mutant and every correct candidate, the kill matrix."""
    _install(session, "[test]")
    if _device(session) == "cpu":
        session.env["TRITON_INTERPRET"] = "1"
    session.run("normgate", "zoo", *session.posargs)


@nox.session(**VENV)
def integrations(session):
    """Third-party kernels and the pytest plugin, with transformers and Liger-Kernel installed."""
    _install(session, "[test,integrations]")
    session.env["TRITON_INTERPRET"] = "1"
    session.run("python", "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_adapt.py",
                "tests/test_thirdparty.py", "tests/test_plugin.py", "tests/test_entry_points.py",
                "tests/test_benchmark_integration.py", *session.posargs)
