"""Dtype names, unit roundoffs and ULP arithmetic.

A dtype is named on the command line and in results by a short string (``bf16``); a case with
mixed precision names activations and parameters as ``bf16/fp32``.
"""

from __future__ import annotations

import torch

from .names import split_dtype_pair

DTYPES: dict[str, torch.dtype] = {
    "fp64": torch.float64,
    "fp32": torch.float32,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}
NAMES: dict[torch.dtype, str] = {v: k for k, v in DTYPES.items()}


def to_torch(name: str) -> torch.dtype:
    try:
        return DTYPES[name]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}; expected one of {', '.join(DTYPES)}") from None


def name_of(dtype: torch.dtype) -> str:
    return NAMES.get(dtype, str(dtype).replace("torch.", ""))


split_pair = split_dtype_pair


def join_pair(x: str, p: str) -> str:
    return x if x == p else f"{x}/{p}"


_P = {torch.float64: 53, torch.float32: 24, torch.bfloat16: 8, torch.float16: 11}


def precision(dtype: torch.dtype) -> int:
    return _P[dtype]


def unit_roundoff(dtype: torch.dtype) -> float:
    """u = 2^-p: the largest relative error of one round-to-nearest."""
    return 2.0 ** -_P[dtype]


def ulp(values: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The ULP of ``dtype`` at each fp64 value, floored at the smallest normal's ULP.

    ULP(v) = 2^(floor(log2|v|) - p + 1). Below the smallest normal the spacing is constant (the
    subnormal spacing), which the floor reproduces, so zeros and subnormals are handled.
    """
    fi = torch.finfo(dtype)
    a = values.abs().to(torch.float64).clamp(min=fi.tiny)
    # frexp gives a = m * 2^e with m in [0.5, 1): floor(log2 a) = e - 1, exact for every double.
    _, e = torch.frexp(a)
    ulps = torch.ldexp(torch.ones_like(a), (e - 1 - (_P[dtype] - 1)).to(torch.int32))
    big = torch.tensor(float(fi.max), dtype=torch.float64, device=a.device)
    # ULP at the largest finite value, so overflowing references still compare in a sane unit.
    return torch.where(a > big, torch.ldexp(torch.ones_like(a), torch.full_like(e, _emax(dtype) - _P[dtype] + 1)),
                       ulps)


def _emax(dtype: torch.dtype) -> int:
    return {torch.float64: 1023, torch.float32: 127, torch.bfloat16: 127, torch.float16: 15}[dtype]


def max_finite(dtype: torch.dtype) -> float:
    return float(torch.finfo(dtype).max)


def smallest_normal(dtype: torch.dtype) -> float:
    return float(torch.finfo(dtype).tiny)
