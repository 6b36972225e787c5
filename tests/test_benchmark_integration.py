"""normgate_bench: a kernel repo's pytest-benchmark tests write JSON that `normgate report --bench` reads."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from normgate.benchmark import norm_bytes
from normgate.reports.load import load_bench

pytest_plugins = "pytester"
DATA = Path(__file__).parent / "data"


def test_norm_bytes_counts_each_tensor_once():
    import torch

    x, w = torch.empty(4, 8, dtype=torch.bfloat16), torch.empty(8)
    assert norm_bytes(x, (w,), "forward") == 2 * 64 + 32  # read x, write y, read w
    assert norm_bytes(x, (w,), "backward") == 3 * 64 + 2 * 32  # x, dy, dx; w, dw
    assert norm_bytes(x, (w, None), "forward+backward", residual=True) == (4 * 64 + 32) + (4 * 64 + 64)
    with pytest.raises(KeyError):
        norm_bytes(x, (w,), "sideways")


def test_benchmarks_feed_the_report(pytester, tmp_path):
    if os.environ.get("PYTEST_XDIST_WORKER"):
        pytest.skip("starts a pytest session of its own, which an outer pytest-xdist worker disturbs; run serially")
    pytest.importorskip("pytest_benchmark")
    pytester.makepyfile(test_speed='''
import torch

def my_rmsnorm(x, w, eps):
    h = x.float()
    return (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps) * w.float()).to(x.dtype)

def test_speed(normgate_bench):
    x = torch.randn(64, 256, dtype=torch.bfloat16)
    w = torch.ones(256)
    info = normgate_bench(lambda: my_rmsnorm(x, w, 1e-6), kernel="my_rmsnorm", op="rmsnorm", x=x, params=(w,),
                          rounds=5)
    assert info["dtype"] == "bf16/fp32" and info["M"] == 64 and info["time_us"] > 0
''')
    out = tmp_path / "bench.json"
    res = pytester.runpytest_subprocess("-p", "no:cacheprovider", f"--benchmark-json={out}")
    res.assert_outcomes(passed=1)
    (bench,) = load_bench(str(out)).benches
    assert (bench.kernel, bench.op, bench.pass_, bench.dtype, bench.M, bench.N) == (
        "my_rmsnorm", "rmsnorm", "forward", "bf16/fp32", 64, 256)
    assert bench.bytes == 2 * 64 * 256 * 2 + 256 * 4 and bench.gbps and bench.time_us > 0
    html = tmp_path / "report.html"
    cmd = [sys.executable, "-m", "normgate.cli", "report", str(DATA / "pass.jsonl"), "--bench", str(out),
           "-o", str(html)]
    done = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ), timeout=300)
    assert done.returncode == 0, done.stderr
    assert "my_rmsnorm" in html.read_text()
