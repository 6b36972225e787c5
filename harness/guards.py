"""Guard bands: every buffer normgate hands a kernel sits inside a larger allocation of sentinel bits.

A tensor given to a candidate (an input, an upstream gradient, a parameter, a residual) is a view
into a buffer that has ``BAND_BYTES`` of sentinel before it and after it, and sentinel in every gap
between its rows where the layout is strided. After the call, the bands and the gaps are compared
with the sentinel bit for bit: a kernel that stored one element past a row, wrote dx with another
tensor's row stride, or ran off the end of a buffer is named with the tensor, the side and the
offset, instead of corrupting a neighbour silently (FlagGems #5392, unsloth #10617).

The sentinel is a NaN with an unusual payload in every float dtype (0x7FA5 for 16-bit, 0x7FA5A5A5
for 32-bit): a kernel that *reads* a guard gets NaN, which the accuracy check sees, and a store of
a computed value (a NaN of its own included) differs from it in its bits.

Cost: one fill of each buffer's bands and gaps before the call and one comparison after it
(``tests/test_guards.py`` measures it; docs/detection.md has the figures). Bands are
``BAND_BYTES`` = 4096 on each side, a multiple of every allocator alignment (CUDA's 512), so a
guarded tensor keeps the alignment of a fresh allocation and a vectorized kernel takes the same path.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from . import memory

BAND_BYTES = 4096
#: sentinel bits by element size: a quiet NaN with payload 0xA5... in fp16, bf16, fp32 and fp64
SENTINEL = {1: 0xA5, 2: 0x7FA5, 4: 0x7FA5A5A5, 8: 0x7FF5A5A5A5A5A5A5}
_INT = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def enabled() -> bool:
    """On unless NORMGATE_WITHOUT names them (harness/features.py)."""
    from .features import off

    return not off("guards")


class OutOfBounds(Exception):
    """A candidate wrote into a guard band or a gap between rows: a broken contract."""


@dataclass
class Guard:
    """One guarded tensor: its buffer (integer view of the bits) and where the tensor lies in it."""

    name: str
    bits: torch.Tensor  # the whole buffer, as integers of the element size
    front: int  # elements before the tensor's first element
    span: int  # elements from the tensor's first to its last element, inclusive
    gaps: torch.Tensor | None  # within the span: True where no element of the tensor lies
    sentinel: int

    def hits(self) -> list[str]:
        """Where the guard's bits changed, in words (empty: intact)."""
        found = []
        before = self.bits[: self.front]
        bad = (before != self.sentinel).nonzero()
        if bad.numel():
            # the offset of the lowest write, counted back from the tensor's first element
            found.append(f"{self.name}: written before its start, at element offset "
                         f"{int(bad[0]) - self.front} ({int(bad.numel())} elements of the front guard)")
        end = self.front + self.span
        after = self.bits[end:]
        bad = (after != self.sentinel).nonzero()
        if bad.numel():
            found.append(f"{self.name}: written past its end, at element offset +{int(bad[0]) + 1} after the last "
                         f"element ({int(bad.numel())} elements of the back guard)")
        if self.gaps is not None:
            inside = self.bits[self.front:end]
            bad = ((inside != self.sentinel) & self.gaps).nonzero()
            if bad.numel():
                found.append(f"{self.name}: written between its rows, at element offset {int(bad[0])} from its start "
                             f"({int(bad.numel())} gap elements)")
        return found


def place(name: str, t: torch.Tensor) -> tuple[torch.Tensor, Guard | None]:
    """A copy of ``t`` with the same sizes and strides inside a guarded buffer, and its guard.

    Tensors whose strides do not describe a dense-or-padded layout (negative, zero or
    overlapping strides) are copied as they are, unguarded."""
    if t.numel() == 0 or any(s < 0 for s in t.stride()) or t.element_size() not in _INT:
        return memory.clone(t), None
    size = t.element_size()
    band = BAND_BYTES // size
    span = 1 + sum((d - 1) * s for d, s in zip(t.shape, t.stride(), strict=True))
    if span < t.numel():  # overlapping (a zero stride: an expanded tensor)
        return memory.clone(t), None
    buf = torch.empty(band + span + band, dtype=t.dtype, device=t.device)
    bits = buf.view(_INT[size])
    sentinel = SENTINEL[size]
    bits.fill_(sentinel)
    view = buf.as_strided(t.shape, t.stride(), band)
    view.copy_(t)
    gaps = None
    if span != t.numel():
        covered = torch.zeros(span, dtype=torch.bool, device=t.device)
        covered.as_strided(t.shape, t.stride(), 0).fill_(True)
        gaps = ~covered
    return view, Guard(name, bits, band, span, gaps, sentinel)



def verify(guards: list[Guard | None]) -> None:
    """Raise :class:`OutOfBounds` naming every guard that was written."""
    found = [h for g in guards if g is not None for h in g.hits()]
    if found:
        raise OutOfBounds("out-of-bounds write: " + "; ".join(found))
