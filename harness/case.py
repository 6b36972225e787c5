"""A case: a small, shrinkable, printable description of one input.

Tensors are never drawn element by element: a case names a shape, dtypes, a value regime for each
tensor role and a seed, and the op makes the tensors from a seeded ``torch.Generator``. A 16k-wide
row costs microseconds to describe, hypothesis shrinks the description (regimes towards
``normal``, shapes towards 1, the seed towards 0), and the key printed with every failure rebuilds
the same bits anywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import dtypes


@dataclass(frozen=True)
class CaseField:
    """One field an op's cases carry besides the core's (op, shape, dtype, seed): a value regime,
    eps, a layout, a number of groups. The op lists them (``Op.case_fields``) in the order the
    case key writes them: ``name=value``, or the value alone for a ``bare`` field (a layout).

    kind: "str", "int", "float", or "eps" (a float, or None for PyTorch's default)."""

    name: str
    default: Any
    kind: str = "str"
    bare: bool = False

    def write(self, value: Any) -> str:
        if self.kind == "eps":
            return "None" if value is None else repr(float(value))
        if self.kind == "float":
            return repr(float(value))
        return str(value)

    def read(self, text: str) -> Any:
        if self.kind == "eps":
            return None if text == "None" else float(text)
        if self.kind == "float":
            return float(text)
        if self.kind == "int":
            return int(text)
        return text


def _fields_of(op: str) -> tuple[CaseField, ...]:
    from .op import get_op

    return tuple(get_op(op).case_fields or ())


@dataclass(frozen=True, init=False)
class Case:
    """op, shape (the activation's), dtype ("bf16", or "bf16/fp32" for bf16 activations with fp32
    parameters) and seed are every op's; the rest are the op's own fields (``Op.case_fields``: for
    the norms x, dy and w regimes, eps and layout), given as keywords and read as attributes
    (``case.eps``)."""

    op: str
    shape: tuple[int, ...]
    dtype: str
    seed: int
    #: the op's fields, (name, value) in the op's order, defaults filled in
    fields: tuple[tuple[str, Any], ...]

    def __init__(self, op: str, shape: tuple[int, ...], dtype: str, seed: int = 0,
                 fields: tuple[tuple[str, Any], ...] | None = None, **values: Any) -> None:
        spec = _fields_of(op)
        given = {**dict(fields or ()), **values}
        unknown = sorted(set(given) - {f.name for f in spec})
        if unknown:
            raise TypeError(f"{op} cases have the fields {', '.join(f.name for f in spec) or 'none'} "
                            f"besides op, shape, dtype and seed; unknown: {', '.join(unknown)}")
        object.__setattr__(self, "op", op)
        object.__setattr__(self, "shape", tuple(int(s) for s in shape))
        object.__setattr__(self, "dtype", dtype)
        object.__setattr__(self, "seed", int(seed))
        object.__setattr__(self, "fields", tuple((f.name, given.get(f.name, f.default)) for f in spec))

    def __getattr__(self, name: str) -> Any:
        for k, v in self.__dict__.get("fields", ()):
            if k == name:
                return v
        raise AttributeError(f"{self.__dict__.get('op', 'a')} case has no field {name!r}")

    @property
    def x_dtype(self) -> str:
        return dtypes.split_pair(self.dtype)[0]

    @property
    def param_dtype(self) -> str:
        return dtypes.split_pair(self.dtype)[1]

    @property
    def regime(self) -> str:
        """The value regime results and reports group by (``Op.regime_field``)."""
        from .op import get_op

        name = get_op(self.op).regime_field
        return str(getattr(self, name)) if name else ""

    def key(self) -> str:
        values = dict(self.fields)
        parts = [self.op, "x".join(map(str, self.shape)), self.dtype]
        for f in _fields_of(self.op):
            text = f.write(values[f.name])
            parts.append(text if f.bare else f"{f.name}={text}")
        return ",".join([*parts, f"seed={self.seed}"])

    @classmethod
    def from_key(cls, key: str) -> Case:
        try:
            op, shape, dtype, *rest = key.split(",")
            spec = _fields_of(op)
            if len(rest) != len(spec) + 1 or not rest[-1].startswith("seed="):
                raise ValueError(f"expected {len(spec)} fields of op {op!r} and the seed")
            dtypes.split_pair(dtype)
            values = {}
            for f, raw in zip(spec, rest[:-1]):
                if f.bare:
                    values[f.name] = f.read(raw)
                    continue
                name, eq, text = raw.partition("=")
                if not eq or name != f.name:
                    raise ValueError(f"expected {f.name}=..., got {raw!r}")
                values[f.name] = f.read(text)
            return cls(op, tuple(int(s) for s in shape.split("x")), dtype, seed=int(rest[-1][5:]), **values)
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"malformed case key {key!r}: {e}") from None


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
