"""Timing helpers for the benchmarks: CUDA-graph capture + triton.testing.do_bench median.

Why a graph: on the GPU machine (a virtualized host) host-side launch overhead adds 100+ us to
some eager/autograd steps and would swamp every size below a few MB; a replayed graph times the
device work (the graph launch floor is ~6 us). do_bench flushes L2 before each replay, so the data
comes from HBM, and returns the median.

Bytes are the minimum an op must move (each input read once, each output written once):
forward 2*M*N activation elements + the parameters, forward+backward 5*M*N + the parameters read
twice and their gradients written once.
"""

from __future__ import annotations

import gc
from collections.abc import Callable

import torch
import triton

PASSES = ("forward", "forward_backward")


def capture(step: Callable[[], object], warmup_calls: int = 3) -> torch.cuda.CUDAGraph:
    """Run ``step`` a few times on a side stream (compiles, autotunes, allocates), then capture it."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(warmup_calls):
            step()
    torch.cuda.current_stream().wait_stream(s)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        step()
    torch.cuda.synchronize()
    return g


# do_bench's warm-up and measuring time (ms) when a caller gives none: a driver with a time budget
# (bench/h200.py) lowers them for its sweep.
WARMUP_MS = 25
REP_MS = 100


def median_us(g: torch.cuda.CUDAGraph, warmup_ms: int | None = None, rep_ms: int | None = None) -> float:
    warmup = WARMUP_MS if warmup_ms is None else warmup_ms
    rep = REP_MS if rep_ms is None else rep_ms
    return 1e3 * triton.testing.do_bench(g.replay, warmup=warmup, rep=rep, return_mode="median")


def step_us(step: Callable[[], object]) -> float:
    """Median microseconds of one step, captured in a CUDA graph and replayed; the graph is freed
    after (ceiling.measure's and the drivers' timer)."""
    g = capture(step)
    try:
        return median_us(g)
    finally:
        del g


def release() -> None:
    gc.collect()
    if torch.cuda.is_available():  # the drivers' CPU tests run without one
        torch.cuda.synchronize()
        torch.cuda.empty_cache()


def norm_bytes(m: int, n: int, elem: int, n_params: int, pass_: str, param_elem: int | None = None) -> int:
    """Minimum bytes: forward reads x and the params and writes y; forward+backward also reads x,
    dy and the params again and writes dx and the parameter gradients."""
    pe = elem if param_elem is None else param_elem
    if pass_ == "forward":
        return 2 * m * n * elem + n_params * n * pe
    return 5 * m * n * elem + 3 * n_params * n * pe


def activations(m: int, n: int, pass_: str, seed: int, dtype: torch.dtype = torch.bfloat16,
                device: str = "cuda") -> tuple[torch.Tensor, torch.Tensor]:
    """Seeded (x, dy) of shape (m, n); x requires grad when the pass has a backward."""
    gen = torch.Generator(device=device).manual_seed(seed)
    x = torch.randn((m, n), device=device, dtype=dtype, generator=gen).requires_grad_(pass_ != "forward")
    dy = torch.randn((m, n), device=device, dtype=dtype, generator=gen)
    return x, dy


def step_for(fn: Callable, x: torch.Tensor, params: list[torch.Tensor], dy: torch.Tensor, pass_: str):
    """The timed step: forward, or forward + backward through autograd (torch.autograd.grad, so
    nothing accumulates into .grad between replays)."""
    if pass_ == "forward":
        def fwd():
            with torch.no_grad():
                return fn(x)
        return fwd

    leaves = [x, *params]

    def fwd_bwd():
        return torch.autograd.grad(fn(x), leaves, dy)

    return fwd_bwd


_COPY: dict[int, float] = {}


def copy_gbps(nbytes: int, device: torch.device | str = "cuda") -> tuple[float, float]:
    """(us, GB/s) of a device-to-device copy moving ``nbytes`` (half read, half written)."""
    if nbytes not in _COPY:
        numel = max(1, nbytes // 4)  # bf16: 2 bytes read + 2 written per element
        src = torch.randn(numel, device=device).to(torch.bfloat16)
        dst = torch.empty_like(src)
        g = capture(lambda: dst.copy_(src))
        _COPY[nbytes] = median_us(g)
        del g, src, dst
        release()
    us = _COPY[nbytes]
    return us, nbytes / us / 1e3
