"""A case: a small, shrinkable, printable description of one input.

Tensors are never drawn element by element: a case names a shape, dtypes, a value regime for each
tensor role and a seed, and the op makes the tensors from a seeded ``torch.Generator``. A 16k-wide
row costs microseconds to describe, hypothesis shrinks the description (regimes towards
``normal``, shapes towards 1, the seed towards 0), and the key printed with every failure rebuilds
the same bits anywhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

from . import dtypes


@dataclass(frozen=True)
class Case:
    op: str
    shape: tuple[int, ...]  # the activation's shape; the last dim is the normalized one
    dtype: str  # "bf16", or "bf16/fp32" for bf16 activations with fp32 parameters
    x: str = "normal"  # value regime of the activations
    dy: str = "normal"  # value regime of the upstream gradients
    w: str = "normal"  # value regime of the parameters
    eps: float | None = 1e-6
    layout: str = "contiguous"  # or "strided": rows padded, stride[-2] > N
    seed: int = 0

    @property
    def rows(self) -> int:
        return math.prod(self.shape[:-1])

    @property
    def n(self) -> int:
        return self.shape[-1]

    @property
    def x_dtype(self) -> str:
        return dtypes.split_pair(self.dtype)[0]

    @property
    def param_dtype(self) -> str:
        return dtypes.split_pair(self.dtype)[1]

    def key(self) -> str:
        shape = "x".join(map(str, self.shape))
        eps = "None" if self.eps is None else repr(float(self.eps))
        return (f"{self.op},{shape},{self.dtype},x={self.x},dy={self.dy},w={self.w},"
                f"eps={eps},{self.layout},seed={self.seed}")

    @classmethod
    def from_key(cls, key: str) -> Case:
        try:
            op, shape, dtype, x, dy, w, eps, layout, seed = key.split(",")
            vals = dict(p.split("=", 1) for p in (x, dy, w, eps, seed))
            dtypes.split_pair(dtype)
            return cls(op=op, shape=tuple(int(s) for s in shape.split("x")), dtype=dtype,
                       x=vals["x"], dy=vals["dy"], w=vals["w"],
                       eps=None if vals["eps"] == "None" else float(vals["eps"]),
                       layout=layout, seed=int(vals["seed"]))
        except (ValueError, KeyError) as e:
            raise ValueError(f"malformed case key {key!r}: {e}") from None

    def with_rows(self, rows: int) -> Case:
        return replace(self, shape=(rows, self.n))


CASE_FIELDS = tuple(f.name for f in fields(Case))


@dataclass(frozen=True)
class ReplayKey:
    """What ``normgate replay`` needs: the kernel, the check, and the case."""

    kernel: str
    check: str
    case: Case

    def __str__(self) -> str:
        return f"{self.kernel}@{self.check}:{self.case.key()}"

    @classmethod
    def parse(cls, text: str) -> ReplayKey:
        head, sep, case = text.partition(":")
        kernel, at, check = head.partition("@")
        if not sep or not at or not kernel or not check:
            raise ValueError(f"malformed replay key {text!r}; expected KERNEL@CHECK:CASE")
        return cls(kernel, check, Case.from_key(case))
