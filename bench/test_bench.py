"""Bandwidth benchmarks of our Triton RMSNorm/LayerNorm against Liger-Kernel, torch.compile,
torch.nn.functional and a device-to-device copy, bf16, forward and forward+backward.

Run: ``pytest bench --benchmark-json bench/results/<gpu>.json`` (nox -s bench). Every step is
captured in a CUDA graph and timed by triton.testing.do_bench's median of the replays; that median
is the figure (``extra_info["time_us"]``), pytest-benchmark's own timing of the synchronized
replays is recorded beside it. Everything is skipped without a CUDA device.
"""

from __future__ import annotations

import functools

import graphtime as T
import peers
import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

M = 16384
NS = (1024, 2048, 4096, 8192, 16384, 32768)
SMALL_MS = (1, 32, 128)
SMALL_N = 4096
KERNELS = ("normgate", "liger", "torch_compile", "torch")
DTYPE = torch.bfloat16


def _record(benchmark, g, info):
    def replay():
        g.replay()
        torch.cuda.synchronize()

    benchmark.extra_info.update(info)
    benchmark.pedantic(replay, rounds=20, warmup_rounds=2)


def _run(benchmark, kernel, op, pass_, m, n):
    if kernel == "liger" and not peers.liger_available():
        pytest.skip("liger_kernel is not importable")
    fn, params = peers.make(kernel, op, n, DTYPE)
    x, dy = T.activations(m, n, pass_, seed=m * 7 + n, dtype=DTYPE)
    g = T.capture(T.step_for(fn, x, params, dy, pass_))
    try:
        us = T.median_us(g)
        nbytes = T.norm_bytes(m, n, 2, len(params), pass_)
        _, cgbps = T.copy_gbps(nbytes)
        gbps = nbytes / us / 1e3
        _record(benchmark, g, {
            "kernel": kernel, "op": op, "pass": pass_, "dtype": "bf16", "M": m, "N": n,
            "time_us": us, "bytes": nbytes, "gbps": gbps, "copy_gbps": cgbps,
            "fraction_of_copy": gbps / cgbps, "gpu": torch.cuda.get_device_name(),
        })
    finally:
        del g, x, dy, fn, params
        T.release()


@pytest.mark.parametrize("n", NS)
@pytest.mark.parametrize("pass_", T.PASSES)
def test_copy(benchmark, pass_, n):
    """The ceiling: a device-to-device copy moving the bytes the norm must move (RMSNorm's count)."""
    nbytes = T.norm_bytes(M, n, 2, 1, pass_)
    us, gbps = T.copy_gbps(nbytes)
    numel = nbytes // 4
    src = torch.randn(numel, device="cuda").to(DTYPE)
    dst = torch.empty_like(src)
    g = T.capture(functools.partial(dst.copy_, src))
    try:
        _record(benchmark, g, {
            "kernel": "copy", "op": "copy", "pass": pass_, "dtype": "bf16", "M": M, "N": n,
            "time_us": us, "bytes": nbytes, "gbps": gbps, "copy_gbps": gbps, "fraction_of_copy": 1.0,
            "gpu": torch.cuda.get_device_name(),
        })
    finally:
        del g, src, dst
        T.release()


@pytest.mark.parametrize("n", NS)
@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("pass_", T.PASSES)
@pytest.mark.parametrize("op", ("rmsnorm", "layernorm"))
def test_norm(benchmark, op, pass_, kernel, n):
    _run(benchmark, kernel, op, pass_, M, n)


@pytest.mark.parametrize("m", SMALL_MS)
@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("pass_", T.PASSES)
@pytest.mark.parametrize("op", ("rmsnorm", "layernorm"))
def test_small_batch(benchmark, op, pass_, kernel, m):
    _run(benchmark, kernel, op, pass_, m, SMALL_N)
