"""A copy ceiling that is one: the fastest way found to copy the same bytes, per size.

``torch.Tensor.copy_`` alone is no ceiling on an H200: at 16-32k columns it moved 2.7 TB/s where
torch.compile's RMSNorm forward moved 4.2 (shared/ANCHORS.md), so a norm "above the copy" said
nothing about the memory system. Here the same bytes are copied by ``copy_`` and by a plain Triton
copy kernel at several block sizes and warp counts; the ceiling of a size is the fastest of them.

A fraction of that ceiling can still pass 1 (a norm kernel whose access pattern the memory system
likes better than every copy tried). ``fraction`` never returns such a value without the reason,
and the report also gives each kernel against the best memory-bound rate seen in the run, which
is at most 1 by construction.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

# (elements per program, num_warps): from half a 16-byte vector per thread (1024 elements, 16
# warps) up to 32 vectors (16384, 4 warps); the fastest differs by size (tail effects at small
# sizes, requests in flight at large ones).
COPY_CONFIGS: tuple[tuple[int, int], ...] = tuple(itertools.product((1024, 4096, 16384), (4, 8, 16)))


@triton.jit
def _copy(SRC, DST, numel, BLOCK: tl.constexpr):
    offs = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < numel
    tl.store(DST + offs, tl.load(SRC + offs, mask=mask), mask=mask)


def triton_copy(src: torch.Tensor, dst: torch.Tensor, block: int, num_warps: int) -> None:
    """dst[:] = src (both contiguous, same numel) with one program per ``block`` elements."""
    numel = src.numel()
    _copy[(triton.cdiv(numel, block),)](src, dst, numel, BLOCK=block, num_warps=num_warps)


def copy_steps(src: torch.Tensor, dst: torch.Tensor) -> dict[str, Callable[[], object]]:
    """Every way of copying src into dst that the ceiling tries, by name."""
    steps: dict[str, Callable[[], object]] = {"copy_": lambda: dst.copy_(src)}
    for block, warps in COPY_CONFIGS:
        steps[f"triton b{block} w{warps}"] = (lambda b=block, w=warps: triton_copy(src, dst, b, w))
    return steps


@dataclass(frozen=True)
class Ceiling:
    nbytes: int
    gbps: float  # the fastest copy of these bytes
    how: str  # which copy that was
    copy_gbps: float  # torch's copy_ alone
    all_gbps: dict[str, float]


def from_times(nbytes: int, times_us: dict[str, float]) -> Ceiling:
    """The ceiling from each copy's time (us; the lowest of its rounds)."""
    gbps = {k: nbytes / us / 1e3 for k, us in times_us.items()}
    how = max(gbps, key=gbps.__getitem__)
    return Ceiling(nbytes, gbps[how], how, gbps.get("copy_", float("nan")), gbps)


def measure(nbytes: int, time_us: Callable[[Callable[[], object]], float], rounds: int = 2,
            device: str = "cuda") -> Ceiling:
    """Time every copy of ``nbytes`` (half read, half written, bf16) in ``rounds`` interleaved
    rounds through ``time_us(step)``; each copy keeps its fastest round."""
    numel = max(1, nbytes // 4)
    src = torch.randn(numel, device=device).to(torch.bfloat16)
    dst = torch.empty_like(src)
    steps = copy_steps(src, dst)
    best: dict[str, float] = {}
    for _ in range(rounds):
        for name, step in steps.items():
            us = time_us(step)
            best[name] = min(us, best.get(name, float("inf")))
    if not torch.equal(src, dst):
        raise AssertionError("a copy kernel did not copy")
    return from_times(nbytes, best)


def fraction(gbps: float, ceiling_gbps: float, ceiling_how: str) -> tuple[float, str]:
    """(gbps / ceiling, why) where why is empty unless the fraction passes 1: then it says that
    the kernel outran every copy tried, so the copy is no bound at this size."""
    f = gbps / ceiling_gbps
    if f <= 1.0:
        return f, ""
    return f, (f"{gbps:.0f} GB/s outran every copy tried for these bytes (best: {ceiling_how}, "
               f"{ceiling_gbps:.0f} GB/s): no copy here bounds it; see the fraction of the best seen")
