"""Dispatch boundaries in M: the batch sizes a kernel is likely to switch strategy at.

Kernels pick launch configurations by the number of rows: a block size that changes at 256 tokens
(vllm #48271: a row's bits then depend on the batch size), a path for batch >= 65536 (apex #411),
grids sized in multiples of the SM count. The batch-invariance check runs a case's rows again in
batches just below and just above such a boundary (b - 1 and b + 1: a switch at ``M >= b`` and one
at ``M > b`` both fall between them), with each row at several positions, and compares every row's
outputs bit for bit with the case's own batch.

Which boundaries: 256 (the common switch), multiples of the SM count (1x, 2x, 4x on a GPU), the
candidate's own (``register(..., boundaries={"m": [...]})``) in every case, and one power of two,
chosen by the case's seed, in each (so a task's cases cover them all). Batches are capped at
``ELEMENTS`` elements, so a case stays cheap on the CPU.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from . import memory
from .candidates import Candidate
from .case import Case
from .op import Op

#: largest batch the check builds, in elements and in rows: on the CPU 2**18 elements (257 rows up
#: to N = 1020) and 513 rows (Triton's interpreter costs per program: a batch of 16,385 narrow rows
#: took 9 s, against 0.1 s for a typical case); on a GPU 2**26 elements and 65,537 rows (apex #411)
ELEMENTS = {"cpu": 1 << 18, "cuda": 1 << 26}
ROWS = {"cpu": 513, "cuda": 65537}
COMMON = (256,)


def sm_count(device: str) -> int | None:
    if not device.startswith("cuda") or not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_properties(torch.device(device)).multi_processor_count


def m_boundaries(cand: Candidate, device: str, n: int, seed: int) -> list[int]:
    """The boundaries this case tests, each as the batch sizes either side of it."""
    from .features import off

    if off("m_boundaries"):
        return []
    kind = "cuda" if device.startswith("cuda") else "cpu"
    cap = min(ELEMENTS[kind] // max(1, n), ROWS[kind])
    always = set(COMMON) | set((cand.boundaries or {}).get("m", ()))
    sms = sm_count(device)
    if sms:
        always |= {sms, 2 * sms, 4 * sms}
    powers = [1 << k for k in range(1, 17) if (1 << k) + 1 <= cap]
    chosen = {b for b in always if b + 1 <= cap}
    if powers:
        chosen.add(powers[seed % len(powers)])
    return sorted(chosen)


def across(cand: Candidate, op: Op, case: Case, device: str, execute: Callable) -> str:
    """"" when, at each boundary b, every row's outputs are the same bits in a batch of b + 1 rows
    and in a batch of b - 1 of them, where it sits at another position; else what differed.

    The rows are the case's inputs drawn for b + 1 rows (its seed and regimes), so b - 1 distinct
    rows are compared: a reduction order that changes with M changes the bits of some rows only
    (a third of 257 random fp32 rows, for a reversed sum of squares)."""
    for b in m_boundaries(cand, device, op.item_elements(case), case.seed):
        lo, hi = b - 1, b + 1
        if lo < 1:
            continue
        big_case = op.with_batch(case, hi)
        big = op.make_inputs(big_case, cand.variant, device)
        whole, _ = execute(cand, op, big_case, big)
        # items shift..shift + lo - 1 of the big batch are items 0..lo - 1 of the small one
        shift = 1 + case.seed % 2
        small = op.with_batch(case, lo)
        part, _ = execute(cand, op, small, op.take(big, big_case, shift, shift + lo))
        for name, t in part.items():
            full = op.items(name, whole[name], big_case) if name in whole else None
            got = op.items(name, t, small)
            if full is None or got is None:
                continue
            want = full[shift:shift + lo]
            if not memory.same_bits(want, got):
                rows = (memory.bit_view(want) != memory.bit_view(got)).any(-1).nonzero().reshape(-1)
                i = int(rows[0])
                return (f"{name} of a row differs bitwise between position {i + shift} of a batch of {hi} and "
                        f"position {i} of a batch of {lo} (either side of the boundary M = {b}; "
                        f"{int(rows.numel())} of {lo} rows differ)")
    return ""
