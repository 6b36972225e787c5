"""A fresh install holds what normgate needs: nothing it imports at run time is left undeclared.

A clean venv is the real test (.ci/run builds one), but it only sees what the test suite happens
to reach, and a machine whose Python already has a package hides it. Here every module of the
package is imported, and a Triton kernel is run through the CPU interpreter and a determinism
check, in a subprocess that can import only the standard library, normgate, and the distributions
that pyproject.toml declares (with what they in turn require): an import of anything else fails
there even when it is installed.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

tomllib = pytest.importorskip("tomllib")
requirements = pytest.importorskip("packaging.requirements")


def declared(pyproject: Path = ROOT / "pyproject.toml") -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    return [requirements.Requirement(r).name for r in project["dependencies"]]


def closure(names: list[str]) -> list[metadata.Distribution]:
    """The installed distributions of ``names`` and of everything they require (no extras)."""
    seen: dict[str, metadata.Distribution] = {}
    todo = list(names)
    while todo:
        name = todo.pop()
        key = re.sub(r"[-_.]+", "-", name).lower()
        if key in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # a requirement for another platform, or not installed: nothing to import
        seen[key] = dist
        for spec in dist.requires or ():
            r = requirements.Requirement(spec)
            if r.marker is None or r.marker.evaluate({"extra": ""}):
                todo.append(r.name)
    return list(seen.values())


def top_level_modules(dist: metadata.Distribution) -> set[str]:
    text = dist.read_text("top_level.txt")
    if text:
        return {line.strip() for line in text.splitlines() if line.strip()}
    tops = set()
    for f in dist.files or ():
        parts = Path(str(f)).parts
        if not parts or parts[0] == ".." or parts[0].endswith((".dist-info", ".egg-info", ".pth")):
            continue
        tops.add(parts[0].removesuffix(".py").split(".")[0])
    return tops


# Runs in the subprocess: refuse every import outside the allowed top-level names, then import
# every normgate module and run one Triton kernel under the interpreter through two checks.
PROBE = r"""
import importlib, importlib.abc, importlib.machinery, json, os, pkgutil, sys
allowed = set(json.loads(sys.argv[1]))
stdlib = os.path.dirname(os.path.realpath(os.__file__)) + os.sep  # lib-dynload is inside it

def in_stdlib(origin):
    path = os.path.realpath(origin)
    return path.startswith(stdlib) and not any(d in path for d in ("site-packages", "dist-packages"))

class Undeclared(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if path is not None or name in allowed:  # submodules follow their top-level package
            return None
        spec = importlib.machinery.PathFinder.find_spec(name)
        origin = getattr(spec, "origin", None)
        if spec is None or origin in (None, "built-in", "frozen") or in_stdlib(origin):
            return None
        raise ModuleNotFoundError(f"No module named {name!r} (installed, but not a declared dependency)",
                                  name=name)

sys.meta_path.insert(0, Undeclared())
import normgate
# the pytest plugin is imported by pytest alone, which the [test] extra brings
skip = {"normgate.plugin"}
for mod in pkgutil.walk_packages(normgate.__path__, "normgate."):
    if mod.name not in skip:
        importlib.import_module(mod.name)
from normgate.cli import main
code = main(["run", "--device", "cpu", "--kernels", "triton_rmsnorm_gemma", "--dtypes", "fp32",
             "--checks", "accuracy,repeat", "--examples", "2", "--workers", "0", "--out", sys.argv[2]])
sys.exit(code)
"""


def run_probe(tmp_path: Path, allowed: set[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    return subprocess.run([sys.executable, "-c", PROBE, json.dumps(sorted(allowed)), str(tmp_path / "r.jsonl")],
                          capture_output=True, text=True, env=env, timeout=600)


def allowed_modules(deps: list[str]) -> set[str]:
    names = {"normgate", "_distutils_hack", "sitecustomize", "usercustomize"}
    for dist in closure(deps):
        names |= top_level_modules(dist)
    return names


def test_every_runtime_import_is_declared(tmp_path):
    proc = run_probe(tmp_path, allowed_modules(declared()))
    assert proc.returncode == 0, (
        "with only the declared dependencies importable, normgate failed:\n" + proc.stderr[-4000:])
    lines = [json.loads(ln) for ln in (tmp_path / "r.jsonl").read_text().splitlines()]
    verdicts = {ln["verdict"] for ln in lines if ln.get("type") == "result"}
    assert verdicts == {"pass"}, verdicts


def test_an_undeclared_import_fails_the_probe(tmp_path):
    """The probe is not blind: without numpy in the declaration (the code and Triton's interpreter
    still need it) the same run fails, naming numpy."""
    deps = [d for d in declared() if d != "numpy"]
    assert len(deps) < len(declared()), "numpy is declared: this test removes it"
    proc = run_probe(tmp_path, allowed_modules(deps) - {"numpy"})
    assert proc.returncode != 0
    assert "numpy" in proc.stderr + proc.stdout
