"""Row widths at dispatch boundaries, and the huge shapes whose element offsets pass 2**31.

Kept apart from ``strategies.py`` (the compile-aware width draw): an op's case strategy asks these
functions for a few extra widths and, on a GPU with the memory for it, for a huge shape.

Widths. Kernels switch at powers of two (a block size, ``next_power_of_2(N)``) and fail one past
them (flashinfer #4480 at 1152, #718 at 16,384; misaligned addresses at odd widths): N = 2**k - 1,
2**k, 2**k + 1, and the candidate's declared ``boundaries["n"]`` with their neighbours. A task
draws from two of them, chosen by the task's width seed, so a JIT-compiled kernel builds two more
binaries per task, not one per boundary; the run's tasks (kernels x dtypes) cover the list.

Huge shapes. Offsets computed in 32 bits overflow past 2**31 elements (flashinfer #3007, vllm
#44604). Such a case is a few GB per tensor: it is drawn only on CUDA, only when the GPU has the
memory free, and the float64 reference is then computed on a sample of rows (``sample_rows``).
"""

from __future__ import annotations

import random

from normgate.op import Profile

#: a task adds this many boundary widths to its draw
PER_TASK = 2
#: huge cases: rows of these widths, with M * N just past 2**31
HUGE_N = (4096, 8192, 16384)
HUGE_ELEMENTS = (1 << 31) + 1
#: bytes per element the checks hold at once for a huge case in a 2-byte dtype: x and dy, their
#: guarded copies, y and dx of three repeat runs, what autograd saves (about 14 tensors), with room
HUGE_BYTES_PER_ELEMENT = 32


def widths_at_boundaries(profile: Profile, declared: tuple[int, ...] = (), max_n: int | None = None) -> list[int]:
    """Every boundary width this profile can draw: 2**k - 1, 2**k, 2**k + 1 and the declared ones
    with their neighbours, up to the profile's widest row."""
    top = max((profile.max_n, *profile.big_n))
    if max_n is not None:
        top = min(top, max_n)
    out = set()
    k = 1
    while (1 << k) - 1 <= top:
        out |= {(1 << k) - 1, 1 << k, (1 << k) + 1}
        k += 1
    for b in declared:
        out |= {b - 1, b, b + 1}
    return sorted(w for w in out if 1 <= w <= top)


def task_boundary_widths(profile: Profile, declared: tuple[int, ...] = (), max_n: int | None = None) -> list[int]:
    """The few boundary widths one task draws from (the declared ones first, then powers of two):
    chosen by the task's width seed, so every check of a kernel and dtype uses the same ones."""
    every = widths_at_boundaries(profile, declared, max_n)
    if not every:
        return []
    rng = random.Random(profile.widths_seed if profile.widths_seed is not None else 0)
    decl = [w for w in every if any(abs(w - b) <= 1 for b in declared)]
    picked = rng.sample(decl, 1) if decl else []  # one declared, the others from the whole list
    rest = [w for w in every if w not in picked]
    picked += rng.sample(rest, min(PER_TASK - len(picked), len(rest))) if len(picked) < PER_TASK else []
    return sorted(picked)


def huge_allowed(profile: Profile, element_size: int = 2) -> bool:
    """A huge case is drawn only on CUDA, when this worker's share of the GPU's free memory holds
    it (with k workers on one GPU, 1/k of what is free now): the repeat check keeps three runs'
    outputs, and an out-of-memory error is an error, never a verdict on the kernel."""
    if profile.name != "gpu":
        return False
    import torch

    if not torch.cuda.is_available():
        return False
    from normgate.gpushare import workers_per_gpu

    try:
        free, _ = torch.cuda.mem_get_info()
    except Exception:  # noqa: BLE001 - no answer means no huge case
        return False
    return free / workers_per_gpu() >= HUGE_ELEMENTS * HUGE_BYTES_PER_ELEMENT * element_size / 2


def huge_shape(n: int) -> tuple[int, int]:
    """(M, N) with M * N just past 2**31 elements."""
    return (-(-HUGE_ELEMENTS // n), n)


#: a case above this many elements gets a reference on sampled rows (``sample_rows``)
SAMPLE_ABOVE = 1 << 27
SAMPLED = 64


def sample_rows(m: int, n: int, seed: int, k: int | None = None) -> list[int]:
    """Rows the float64 reference covers for a huge case: the first and last, the rows around where
    the element offset passes 2**31 (where 32-bit offsets wrap) and 2**32, and random others,
    sorted. Deterministic in (m, n, seed), so a replay samples the same rows."""
    k = SAMPLED if k is None else k
    if m <= k:
        return list(range(m))
    picked = {0, 1, m - 2, m - 1}
    for edge in (1 << 31, 1 << 32):
        r = edge // n
        picked |= {r - 1, r, r + 1}
    rng = random.Random(seed * 1_000_003 + m)
    while len([r for r in picked if 0 <= r < m]) < k:
        picked.add(rng.randrange(m))
    return sorted(r for r in picked if 0 <= r < m)
