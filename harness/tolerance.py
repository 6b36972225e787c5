"""The error model: how far from the float64 reference a correct kernel can be, element by element.

Derivation. Let u_t = 2^-p_t be the unit roundoff of dtype t (fp32 2^-24, fp16 2^-11, bf16 2^-8).
A kernel computes a value v from its inputs in an internal dtype t, then rounds it once to the
output dtype d. Write v' for the value before that last rounding.

1. Accumulation. A sum of n terms evaluated in any order in dtype t has absolute error at most
   (n - 1) u_t * sum|terms| (to first order; Higham, Accuracy and Stability, 4.2). Every other
   rounding (a square, rsqrt, a product) adds at most u_t relative to the magnitude of what it
   feeds. So |v' - v| <= steps * u_t * M, where M is the magnitude of the element: the same formula
   evaluated on absolute values with every subtraction made an addition (``Expected.magnitude``),
   and ``steps`` is the length of the longest reduction the element depends on plus a few
   elementwise roundings (N + 8 for y and dx; M + N + 8 for dW; M + 8 for dB). Bounding by M
   rather than |v| keeps the bound honest where v cancels to ~0 (LayerNorm's w * xhat + b, dW on
   zero-mean gradients): correct kernels show 100+ ULP of the *result* there.
2. Mandated intermediate roundings. A variant that itself rounds on the way (llama's cast of the
   normalized value to the input dtype) adds ``intermediate`` * M (u of that dtype), plus half the
   subnormal spacing times the value's coefficient where it lands among subnormals (``floor``).
   The relative term also carries the row-wise loss of up to one smallest normal to underflow in
   the sum of squares.
3. The final rounding to d adds at most half an ULP of d at |v'| (round to nearest), a whole ULP
   where the rounding is known to truncate (Triton's interpreter stores fp32 -> bf16 by
   truncation: see ``final_rounding``).

bound(element) = r * ulp_d(|v| + e) + e,  e = (steps * u_t + intermediate) * M + floor,  r in {0.5, 1}.

For bf16 outputs of a gemma-mode RMSNorm at N = 4096 this is ~0.53 ULP: a truncating store (up to
1 ULP) or one extra rounding of w or rstd (1.5-2.6 ULP) fails, a correct kernel never does. For
fp32 outputs computed in fp32 the order-independent bound is loose (N/2 ULP and more): the
report's "no worse than eager" column carries the information there.

Where the reference rounds to infinity in d (an output beyond d's range), that infinity is exact;
near the edge, an infinity counts as the smallest value that rounds to it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from . import dtypes
from .op import Expected


@dataclass
class Comparison:
    name: str
    ok: bool
    max_ulp: float
    mean_ulp: float
    max_abs: float
    bound_ulp: float  # the bound in ULPs at the element where error/bound is largest
    ratio: float  # max(error / bound); <= 1 passes
    worst: list[dict]

    def summary(self) -> dict:
        return {"max_ulp": _r(self.max_ulp), "mean_ulp": _r(self.mean_ulp), "max_abs": _r(self.max_abs),
                "bound_ulp": _r(self.bound_ulp), "ratio": _r(self.ratio)}


def _r(v: float) -> float | str:
    if v != v:
        return "nan"
    if v in (float("inf"), float("-inf")):
        return "inf" if v > 0 else "-inf"
    return float(f"{v:.4g}")


def final_rounding(dtype: torch.dtype, truncating_bf16: bool) -> float:
    return 1.0 if (truncating_bf16 and dtype == torch.bfloat16) else 0.5


def bound(exp: Expected, rounding: float) -> torch.Tensor:
    # A truncating backend (rounding 1.0: Triton's interpreter) truncates every cast to the narrow
    # dtype, not only the final store: the variant's own intermediate roundings then err by up to a
    # whole ULP too, twice what round-to-nearest allows.
    slack = 2.0 if rounding == 1.0 else 1.0
    e = (exp.steps * dtypes.unit_roundoff(exp.internal) + slack * exp.intermediate) * exp.magnitude \
        + slack * exp.floor
    return rounding * dtypes.ulp(exp.value.abs() + e, exp.dtype) + e


def overflow_edge(dtype: torch.dtype) -> float:
    """T = max + ulp(max)/2: values at or past it round to infinity in ``dtype``."""
    fmax = dtypes.max_finite(dtype)
    return fmax + 0.5 * float(dtypes.ulp(torch.tensor([fmax], dtype=torch.float64), dtype)[0])


def surely_finite(exp: Expected, rounding: float) -> torch.Tensor:
    """Where every result within the bound is finite: the reference is, and it stays short of the
    overflow edge by more than its bound. Elsewhere an infinity is within the bound (``compare``
    counts it as the edge): an fp16 dx of 8191 fp32 terms of dy = 6e4 erred by a few ULPs past
    65,504 on an H200 where the exact one stayed below, and that is accuracy, not a broken contract."""
    ref = exp.value
    b = bound(exp, rounding).to(ref.device).expand_as(ref)
    return torch.isfinite(ref) & (ref.abs() + b < overflow_edge(exp.dtype))


def compare(name: str, got: torch.Tensor, exp: Expected, rounding: float, worst_k: int = 3) -> Comparison:
    """Compare a candidate's tensor with the reference, element by element, under the bound."""
    # Everything stays where the reference is (the GPU on a GPU run): dozens of elementwise passes
    # over tens of millions of float64 elements cost seconds on one CPU thread, microseconds there.
    ref = exp.value
    g = got.detach().to(device=ref.device, dtype=torch.float64).reshape(ref.shape)
    b = bound(exp, rounding).to(ref.device).expand_as(ref)
    # Overflow: values at or past T = max + ulp(max)/2 round to infinity. Where the reference is
    # past T, the right infinity is exact; elsewhere an infinity counts as T, so a result within
    # the bound of the edge may land on either side of it.
    edge = overflow_edge(exp.dtype)
    g_edge = torch.where(torch.isinf(g), g.sign() * edge, g)
    past = ref.abs() >= edge
    err = torch.where(past & (g == ref.sign() * float("inf")), 0.0, (g_edge - ref).abs())
    finite_ref = torch.isfinite(ref)
    # a reference that is itself not finite (e.g. eps = 0 on a zero row) only matches itself
    err = torch.where(finite_ref, err, torch.where((g == ref) | (g.isnan() & ref.isnan()), 0.0, float("inf")))
    err = torch.nan_to_num(err, nan=float("inf"))
    if exp.defined is not None:
        err = torch.where(exp.defined.to(err.device).expand_as(err), err, 0.0)
    u = dtypes.ulp(ref.where(finite_ref, torch.zeros_like(ref)), exp.dtype)
    err_ulp = err / u
    ratio = torch.where(b > 0, err / b, torch.where(err > 0, float("inf"), 0.0))
    ok = bool((ratio <= 1.0).all()) if ratio.numel() else True
    if ratio.numel() == 0:
        return Comparison(name, True, 0.0, 0.0, 0.0, 0.0, 0.0, [])
    flat = ratio.reshape(-1)
    top = torch.topk(flat, min(worst_k, flat.numel())).indices
    worst = []
    for i in top.tolist():  # a few scalars: .item() per element is fine here
        idx = list(torch.unravel_index(torch.tensor(i), ratio.shape))
        worst.append({"output": name, "index": [int(j) for j in idx],
                      "expected": _r(float(ref.reshape(-1)[i])), "got": _r(float(g.reshape(-1)[i])),
                      "ulp": _r(float(err_ulp.reshape(-1)[i])),
                      "bound_ulp": _r(float((b / u).reshape(-1)[i]))})
    j = int(flat.argmax())
    finite_err = err_ulp[torch.isfinite(err_ulp)]
    return Comparison(
        name=name, ok=ok, max_ulp=float(err_ulp.max()),
        mean_ulp=float(finite_err.mean()) if finite_err.numel() else float("inf"),
        max_abs=float(err.max()), bound_ulp=float((b / u).reshape(-1)[j]), ratio=float(flat[j]), worst=worst)
