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
