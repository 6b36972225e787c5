"""The one private hypothesis hook normgate replaces, and the version range that guards it.

``normgate.worker.pin_generation`` swaps ``providers._get_local_constants`` so that generated
cases depend on the seed alone (not on which local modules a process imported). These tests fail
when the installed hypothesis is outside the range pyproject pins, when the hook moved, or when
the replacement stops taking effect."""

from __future__ import annotations

import sys
from importlib.metadata import version
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

from normgate import worker

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    tomllib = pytest.importorskip("tomli")


def _pinned() -> Requirement:
    """hypothesis as pyproject requires it (the checkout's, not a possibly stale install's metadata)."""
    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    (hyp,) = [r for r in reqs if r.name == "hypothesis" and not r.marker]
    return hyp


def test_pyproject_pins_the_range_the_worker_names():
    assert _pinned().specifier == Requirement("hypothesis" + worker.HYPOTHESIS_RANGE).specifier


def test_installed_hypothesis_is_in_the_pinned_range():
    assert Version(version("hypothesis")) in _pinned().specifier


def test_the_hook_is_replaced_and_finds_no_local_constants(monkeypatch):
    providers = pytest.importorskip("hypothesis.internal.conjecture.providers")
    if not hasattr(providers, "_get_local_constants"):
        pytest.skip("this hypothesis has no local constants")
    monkeypatch.setattr(providers, "_get_local_constants", providers._get_local_constants)
    before = providers._get_local_constants
    kinds = ("integer", "float", "string", "bytes")
    # normgate's own modules are local to hypothesis here (an editable install): the hook finds their constants
    assert any(len(before().set_for_type(t)) for t in kinds)
    worker.pin_generation()
    assert providers._get_local_constants is not before
    consts = providers._get_local_constants()
    assert not any(len(consts.set_for_type(t)) for t in kinds)


def test_a_release_without_the_hook_is_refused(monkeypatch):
    providers = pytest.importorskip("hypothesis.internal.conjecture.providers")
    pytest.importorskip("hypothesis.internal.constants_ast")
    monkeypatch.delattr(providers, "_get_local_constants", raising=False)
    with pytest.raises(RuntimeError, match="install hypothesis>=6.100,<6.171"):
        worker.pin_generation()
