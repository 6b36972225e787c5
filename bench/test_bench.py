"""Bandwidth benchmarks of our Triton RMSNorm/LayerNorm against quack, Liger-Kernel, torch.compile,
torch.nn.functional and a copy ceiling (the fastest copy of the same bytes, bench/ceiling.py), bf16,
forward and forward+backward. A peer that is not importable is skipped with the reason.

Run: ``pytest bench --benchmark-json bench/results/<gpu>.json`` (nox -s bench). Every step is
captured in a CUDA graph and timed by triton.testing.do_bench's median of the replays; that median
is the figure (``extra_info["time_us"]``), pytest-benchmark's own timing of the synchronized
replays is recorded beside it. Everything is skipped without a CUDA device.
"""

from __future__ import annotations

import functools

import ceiling as CEIL
import graphtime as T
import peers
import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

M = 16384
NS = (1024, 2048, 4096, 8192, 16384, 32768)
SMALL_MS = (1, 32, 128)
SMALL_N = 4096
KERNELS = ("normgate", "normgate_gemma", "quack", "liger", "torch_compile", "torch")
DTYPE = torch.bfloat16


def _record(benchmark, g, info):
    def replay():
        g.replay()
        torch.cuda.synchronize()

    benchmark.extra_info.update(info)
    benchmark.pedantic(replay, rounds=20, warmup_rounds=2)


@functools.cache
def _ceiling(nbytes: int) -> CEIL.Ceiling:
    c = CEIL.measure(nbytes, T.step_us)
    T.release()
    return c


def _run(benchmark, kernel, op, pass_, m, n):
    why = peers.skip_reason(kernel, op, pass_)
    if why is not None:
        pytest.skip(why)
    fn, params = peers.make(kernel, op, n, DTYPE)
    x, dy = T.activations(m, n, pass_, seed=m * 7 + n, dtype=DTYPE)
    g = T.capture(T.step_for(fn, x, params, dy, pass_))
    try:
        us = T.median_us(g)
        nbytes = T.norm_bytes(m, n, 2, len(params), pass_, peers.param_bytes(kernel, op, DTYPE))
        ceil = _ceiling(T.norm_bytes(m, n, 2, 1, pass_))
        gbps = nbytes / us / 1e3
        frac, above = CEIL.fraction(gbps, ceil.gbps, ceil.how)
        info = {
            "kernel": kernel, "op": op, "pass": pass_, "dtype": "bf16", "M": m, "N": n,
            "time_us": us, "bytes": nbytes, "gbps": gbps, "copy_gbps": ceil.copy_gbps,
            "fraction_of_copy": gbps / ceil.copy_gbps, "ceiling_gbps": ceil.gbps, "ceiling_how": ceil.how,
            "fraction_of_ceiling": frac, "gpu": torch.cuda.get_device_name(),
        }
        if above:
            info["above_ceiling_why"] = above
        _record(benchmark, g, info)
    finally:
        del g, x, dy, fn, params
        T.release()


@pytest.mark.parametrize("n", NS)
@pytest.mark.parametrize("pass_", T.PASSES)
def test_copy(benchmark, pass_, n):
    """torch's copy_ of the bytes the norm must move (RMSNorm's count), beside the ceiling."""
    nbytes = T.norm_bytes(M, n, 2, 1, pass_)
    ceil = _ceiling(nbytes)  # one measurement of copy_, the ceiling's own: its fraction stays <= 1
    gbps = ceil.copy_gbps
    us = nbytes / gbps / 1e3
    numel = nbytes // 4
    src = torch.randn(numel, device="cuda").to(DTYPE)
    dst = torch.empty_like(src)
    g = T.capture(functools.partial(dst.copy_, src))
    try:
        _record(benchmark, g, {
            "kernel": "copy", "op": "copy", "pass": pass_, "dtype": "bf16", "M": M, "N": n,
            "time_us": us, "bytes": nbytes, "gbps": gbps, "copy_gbps": gbps, "fraction_of_copy": 1.0,
            "ceiling_gbps": ceil.gbps, "ceiling_how": ceil.how,
            "fraction_of_ceiling": CEIL.fraction(gbps, ceil.gbps, ceil.how)[0],
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
