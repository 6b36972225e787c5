"""Exact float64 references for the normalization ops, forward and backward, every variant.

Each function takes float64 tensors shaped (rows, N) and returns float64 results. The backward is
written in closed form (checked against autograd and gradcheck in tests/test_references.py) so that
the same formula can also be evaluated on magnitudes: with every input replaced by its absolute
value and every subtraction by an addition, it gives, element by element, the sum of the absolute
values of the terms the result is built from. That is the quantity a floating-point evaluation's
rounding error is proportional to (see normgate/tolerance.py), and it stays meaningful where the
true value cancels to ~0, where a bound relative to the result would fail correct kernels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

F64 = torch.float64


@dataclass
class Norm:
    """Row statistics shared by forward and backward."""

    h: torch.Tensor  # the normalized input (x, or the fused add's x + residual: references.fused_add)
    xhat: torch.Tensor  # h normalized: (h - mean) * rstd, or h * rstd for RMSNorm
    rstd: torch.Tensor  # (rows, 1)
    xhat_mag: torch.Tensor  # magnitude of the terms xhat is computed from


def resolve_eps(eps: float | None, input_dtype: torch.dtype) -> float:
    """The epsilon PyTorch really uses for ``eps=None``: the machine epsilon of the compute type.

    ``torch.nn.RMSNorm`` and ``F.rms_norm`` document ``torch.finfo(x.dtype).eps``, but compute in
    float32 for bf16/fp16/fp32 inputs and use float32's epsilon (float64's for float64 inputs);
    bf16's would be 65,536 times larger.
    """
    if eps is not None:
        return float(eps)
    return float(torch.finfo(F64 if input_dtype == F64 else torch.float32).eps)


def fused_add(x: torch.Tensor, residual: torch.Tensor | None, dtype: torch.dtype,
              mode: str = "rounded") -> torch.Tensor:
    """The h a fused residual add normalizes: with ``rounded``, x + residual rounded once to the
    input dtype (the fused add's mandated rounding); with ``unrounded`` (float32 sum normalized,
    flash-attention) and ``fp32`` (an fp32 residual stream), the exact sum: what the variant
    normalizes is the sum itself, not its rounding to x's dtype."""
    if residual is None:
        return x
    if mode == "rounded":
        return (x + residual).to(dtype).to(F64)
    return x + residual


# --------------------------------------------------------------------------------------------
# RMSNorm: y = h * rstd * (offset + w), rstd = (mean(h^2) + eps)^-1/2
# --------------------------------------------------------------------------------------------


def rms_stats(h: torch.Tensor, eps: float) -> Norm:
    rstd = torch.rsqrt(h.square().mean(-1, keepdim=True) + eps)
    xhat = h * rstd
    return Norm(h, xhat, rstd, xhat.abs())


def rmsnorm_forward(h: torch.Tensor, w: torch.Tensor | None, eps: float, offset: float):
    s = rms_stats(h, eps)
    if w is None:
        return s.xhat, s.xhat_mag, s
    return s.xhat * (offset + w), s.xhat_mag * (abs(offset) + w.abs()), s


def rmsnorm_backward(s: Norm, w: torch.Tensor | None, dy: torch.Tensor, offset: float, magnitude: bool):
    """dx = rstd * (g - xhat * mean(g * xhat)), g = dy * (offset + w); dw = sum_rows dy * xhat.

    With ``magnitude`` the same formula on absolute values with the subtraction turned into an
    addition.
    """
    n = s.h.shape[-1]
    if magnitude:
        scale = torch.ones_like(dy[0]) if w is None else abs(offset) + w.abs()
        g = dy.abs() * scale
        xh = s.xhat_mag
        dx = s.rstd * (g + xh * (g * xh).sum(-1, keepdim=True) / n)
        dw = None if w is None else (dy.abs() * xh).sum(0)
    else:
        scale = torch.ones_like(dy[0]) if w is None else offset + w
        g = dy * scale
        dx = s.rstd * (g - s.xhat * (g * s.xhat).sum(-1, keepdim=True) / n)
        dw = None if w is None else (dy * s.xhat).sum(0)
    return dx, dw


# --------------------------------------------------------------------------------------------
# LayerNorm: y = (h - mean) * rstd * w + b, rstd = (var + eps)^-1/2, var the biased variance
# --------------------------------------------------------------------------------------------


def layer_stats(h: torch.Tensor, eps: float) -> Norm:
    mean = h.mean(-1, keepdim=True)
    d = h - mean
    rstd = torch.rsqrt(d.square().mean(-1, keepdim=True) + eps)
    # h - mean is computed from h and a mean whose own error grows with mean(|h|): a row with a
    # large offset and a small spread (heavy cancellation) is ill-conditioned, and the magnitude
    # says so instead of the tolerance being loosened for every row.
    mag = (h.abs() + h.abs().mean(-1, keepdim=True)) * rstd
    return Norm(h, d * rstd, rstd, mag)


def layernorm_forward(h, w, b, eps: float):
    s = layer_stats(h, eps)
    y, mag = s.xhat, s.xhat_mag
    if w is not None:
        y, mag = y * w, mag * w.abs()
    if b is not None:
        y, mag = y + b, mag + b.abs()
    return y, mag, s


def layernorm_backward(s: Norm, w, dy: torch.Tensor, has_bias: bool, magnitude: bool):
    """dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), g = dy * w; dw = sum dy*xhat; db = sum dy."""
    if magnitude:
        g = dy.abs() if w is None else dy.abs() * w.abs()
        xh = s.xhat_mag
        dx = s.rstd * (g + g.mean(-1, keepdim=True) + xh * (g * xh).mean(-1, keepdim=True))
        dw = None if w is None else (dy.abs() * xh).sum(0)
        db = dy.abs().sum(0) if has_bias else None
    else:
        g = dy if w is None else dy * w
        dx = s.rstd * (g - g.mean(-1, keepdim=True) - s.xhat * (g * s.xhat).mean(-1, keepdim=True))
        dw = None if w is None else (dy * s.xhat).sum(0)
        db = dy.sum(0) if has_bias else None
    return dx, dw, db


# --------------------------------------------------------------------------------------------
# Autograd wrappers: the closed forms as torch.autograd.Functions, for gradcheck and for users
# who want an fp64 module to compare against.
# --------------------------------------------------------------------------------------------


class RMSNormRef(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, w, eps, offset):
        y, _, s = rmsnorm_forward(h, w, eps, offset)
        ctx.save_for_backward(h, w)
        ctx.eps, ctx.offset = eps, offset
        return y

    @staticmethod
    def backward(ctx, dy):
        h, w = ctx.saved_tensors
        s = rms_stats(h, ctx.eps)
        dx, dw = rmsnorm_backward(s, w, dy, ctx.offset, magnitude=False)
        return dx, dw, None, None


class LayerNormRef(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h, w, b, eps):
        y, _, s = layernorm_forward(h, w, b, eps)
        ctx.save_for_backward(h, w)
        ctx.eps, ctx.has_bias = eps, b is not None
        return y

    @staticmethod
    def backward(ctx, dy):
        h, w = ctx.saved_tensors
        s = layer_stats(h, ctx.eps)
        dx, dw, db = layernorm_backward(s, w, dy, ctx.has_bias, magnitude=False)
        return dx, dw, db, None


# --------------------------------------------------------------------------------------------
# GroupNorm: x (N, C, *spatial), G groups of C / G adjacent channels; each (sample, group) is
# normalized as one LayerNorm row of L = (C / G) * prod(spatial) elements, then y = xhat * w[c] + b[c]
# with a per-channel affine.
# --------------------------------------------------------------------------------------------


def _group_rows(t: torch.Tensor, groups: int) -> torch.Tensor:
    """(N, C, *spatial) as (N * G, L): a group's channels are adjacent, so each row is one group."""
    return t.reshape(t.shape[0] * groups, -1)


def _per_element(p: torch.Tensor, shape: torch.Size, groups: int) -> torch.Tensor:
    """A per-channel parameter broadcast to every element of x, as (N * G, L) rows."""
    n, c = shape[0], shape[1]
    hw = math.prod(shape[2:])
    return p.reshape(1, c, 1).expand(n, c, hw).reshape(n * groups, -1)


def groupnorm_forward(x: torch.Tensor, w: torch.Tensor | None, b: torch.Tensor | None, groups: int, eps: float):
    """(y, magnitude of y, stats) in float64; y and its magnitude have x's shape, the stats are
    LayerNorm's over the (N * G, L) rows (``layer_stats``: two-pass variance, the mean's
    conditioning in the magnitude)."""
    s = layer_stats(_group_rows(x, groups), eps)
    y, mag = s.xhat, s.xhat_mag
    if w is not None:
        we = _per_element(w, x.shape, groups)
        y, mag = y * we, mag * we.abs()
    if b is not None:
        be = _per_element(b, x.shape, groups)
        y, mag = y + be, mag + be.abs()
    return y.reshape(x.shape), mag.reshape(x.shape), s


def groupnorm_backward(s: Norm, w: torch.Tensor | None, dy: torch.Tensor, groups: int, has_bias: bool,
                       magnitude: bool):
    """dx = rstd * (g - mean_group(g) - xhat * mean_group(g * xhat)), g = dy * w[c];
    dw[c] = sum over samples and spatial positions of dy * xhat; db[c] = the same sum of dy.

    With ``magnitude`` the same formula on absolute values with every subtraction an addition."""
    shape = dy.shape
    c = shape[1]
    d = _group_rows(dy, groups)
    xh = s.xhat_mag if magnitude else s.xhat
    if magnitude:
        d = d.abs()
    g = d if w is None else d * _per_element(w.abs() if magnitude else w, shape, groups)
    if magnitude:
        dx = s.rstd * (g + g.mean(-1, keepdim=True) + xh * (g * xh).mean(-1, keepdim=True))
    else:
        dx = s.rstd * (g - g.mean(-1, keepdim=True) - xh * (g * xh).mean(-1, keepdim=True))

    def per_channel(t):
        return t.reshape(shape[0], c, -1).sum((0, 2))

    dw = None if w is None else per_channel(d * xh)
    db = per_channel(d) if has_bias else None
    return dx.reshape(shape), dw, db


class GroupNormRef(torch.autograd.Function):
    """The closed-form GroupNorm as an autograd Function, for gradcheck and fp64 comparisons."""

    @staticmethod
    def forward(ctx, x, w, b, groups, eps):
        y, _, _ = groupnorm_forward(x, w, b, groups, eps)
        ctx.save_for_backward(x, w)
        ctx.groups, ctx.eps, ctx.has_bias = groups, eps, b is not None
        return y

    @staticmethod
    def backward(ctx, dy):
        x, w = ctx.saved_tensors
        s = layer_stats(_group_rows(x, ctx.groups), ctx.eps)
        dx, dw, db = groupnorm_backward(s, w, dy, ctx.groups, ctx.has_bias, magnitude=False)
        return dx, dw, db, None, None
