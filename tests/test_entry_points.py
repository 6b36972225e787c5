"""The ``normgate.candidates`` entry-point group, for real: an installed package (a .dist-info on
PYTHONPATH, as pip would write it) whose kernels `normgate list` and `normgate run` find unaided."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).parent.parent / "docs" / "examples" / "entry_point_kernels.py"


def install(site: Path, name: str, entry_points: str, modules: dict[str, str]) -> None:
    for rel, text in modules.items():
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        (site / rel).write_text(text)
    info = site / f"{name}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(entry_points)


def cli(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(site), TRITON_INTERPRET="1")
    return subprocess.run([sys.executable, "-m", "normgate.cli", *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=600)


@pytest.fixture
def site(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    install(site, "my_kernels", '[normgate.candidates]\nmy_kernels = my_package.normgate_kernels\n',
            {"my_package/__init__.py": "", "my_package/normgate_kernels.py": EXAMPLE.read_text()})
    return site


def test_list_shows_entry_point_kernels_and_skips_a_broken_one(site, tmp_path):
    install(site, "broken_kernels", '[normgate.candidates]\nbroken = broken_package\n',
            {"broken_package/__init__.py": "raise RuntimeError('no GPU driver found')\n"})
    res = cli(site, tmp_path, "list")
    assert res.returncode == 0, res.stderr
    assert "ep_rmsnorm" in res.stdout and "ep_layernorm" in res.stdout
    assert "entry point 'broken'" in res.stderr and "no GPU driver found" in res.stderr
    assert "triton_rmsnorm_gemma" in res.stdout  # the built-ins are still there


def test_run_and_replay_need_no_load(site, tmp_path):
    out = tmp_path / "r.jsonl"
    res = cli(site, tmp_path, "run", "--kernels", "ep_rmsnorm", "--checks", "accuracy", "--dtypes", "fp32",
              "--examples", "3", "--workers", "0", "--out", str(out))
    assert res.returncode == 0, res.stderr
    results = [json.loads(line) for line in out.read_text().splitlines()]
    cases = [r["case"] for r in results if r.get("type") == "result" and r["kernel"] == "ep_rmsnorm"]
    assert cases
    res = cli(site, tmp_path, "replay", f"ep_rmsnorm@accuracy:{cases[0]}")
    assert res.returncode == 0, res.stdout + res.stderr


def test_ops_and_top_level_names_come_through_entry_points(tmp_path, monkeypatch, capsys):
    """The groups the core reads (harness/entrypoints.py): normgate's own first and strict, another
    package's op and top-level name found, a broken one reported and skipped."""
    from normgate import entrypoints

    site = tmp_path / "site"
    site.mkdir()
    install(site, "toy_ops", '[normgate.ops]\ntoy = toy_ops_pkg:OP\n\n[normgate.api]\nToyName = toy_ops_pkg:NAME\n',
            {"toy_ops_pkg/__init__.py": "OP = 'an op'\nNAME = 42\n"})
    install(site, "broken_ops", "[normgate.ops]\nbroken = broken_ops_pkg:OP\n",
            {"broken_ops_pkg/__init__.py": "raise RuntimeError('no driver')\n"})
    monkeypatch.syspath_prepend(str(site))
    ops = entrypoints.ordered(entrypoints.OPS_GROUP)
    names = [ep.name for ep in ops]
    ours = [entrypoints.is_builtin(ep) for ep in ops]
    assert {"rmsnorm", "layernorm", "toy", "broken"} <= set(names)
    assert ours == sorted(ours, reverse=True) and not ours[names.index("toy")]  # normgate's own first
    got = []
    entrypoints.load(entrypoints.OPS_GROUP, lambda obj, ep: got.append((ep.name, obj)))
    assert ("toy", "an op") in got and not any(n == "broken" for n, _ in got)
    assert "entry point 'broken'" in capsys.readouterr().err

    import normgate

    assert normgate.ToyName == 42 and "ToyName" in dir(normgate)
    monkeypatch.delattr(normgate, "ToyName")  # the lazy attribute was cached on the package


def test_a_builtin_entry_point_that_fails_is_not_skipped(monkeypatch):
    from normgate import entrypoints

    ours = [ep for ep in entrypoints.ordered(entrypoints.CANDIDATES_GROUP) if entrypoints.is_builtin(ep)]
    assert ours, "normgate's built-in candidates are entry points of its own distribution"

    def broken(obj, ep):
        raise RuntimeError("a bug in a built-in")

    with pytest.raises(RuntimeError, match="a bug in a built-in"):
        entrypoints.load(entrypoints.CANDIDATES_GROUP, broken)
