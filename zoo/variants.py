"""Correct candidates and mutants for the declarations real kernels make beyond a casting mode.

Each base declares one of them (a residual mode, the gradients its backward provides, a row-width
limit per dtype, an output dtype the caller chose, LayerNorm with a bias and no weight); each
mutant claims what its base claims and does something else, the way a kernel gets it wrong:

- a fused residual add declared ``unrounded`` (flash-attention's) that normalizes the sum rounded
  to x's dtype, and an fp32 residual stream that rounds the stream to x's dtype on the way in;
- a dx-only backward (older Unsloth: no weight gradient) whose dx uses ``w`` for ``1 + w``, and
  backwards that leave out a gradient they declare (dW, dB);
- a row limit of 256 bytes (fp32: 64, bf16/fp16: 128 columns; small enough for the CPU profile to
  reach past it) computed from fp32's element size whatever the dtype: half-precision rows past
  64 columns normalized by the first 64 only;
- an fp32 output the caller asked for, rounded to x's dtype first;
- a bias-only LayerNorm wrapper that hands the bias over in the weight's place.

All plain PyTorch over ``eager.py``'s correct functions; a custom autograd Function stands for a
kernel's own backward where the mistake is in which gradients it returns. ``entries`` builds them
with the catalog's classes (catalog.py imports this module to add them).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from normgate.kernels.references import resolve_eps
from normgate.properties.layernorm import LayerNormVariant
from normgate.properties.rmsnorm import RMSNormVariant

from . import eager as E

#: the 256-byte row of ``zoo_eager_rmsnorm_row_bytes``, as columns per activation dtype
ROW_BYTES = 256
ROW_LIMIT = {"fp32": ROW_BYTES // 4, "bf16": ROW_BYTES // 2, "fp16": ROW_BYTES // 2}


# ---- a backward that returns some gradients only -----------------------------------------------
class _Backward(torch.autograd.Function):
    """Outputs of ``forward_fn``; gradients from autograd through ``backward_fn`` (the same function
    for a correct kernel), for the inputs in ``keep`` only: the others get None, as a kernel's own
    backward that does not compute them returns."""

    @staticmethod
    def forward(ctx, forward_fn, backward_fn, keep, eps, *tensors):
        ctx.backward_fn, ctx.keep, ctx.eps = backward_fn, keep, eps
        ctx.save_for_backward(*tensors)
        with torch.no_grad():
            return forward_fn(*tensors, eps)  # (x, weight, eps) or (x, weight, bias, eps)

    @staticmethod
    def backward(ctx, dy):
        saved = ctx.saved_tensors
        with torch.enable_grad():
            leaves = [t.detach().requires_grad_(True) for t in saved]
            out = ctx.backward_fn(*leaves, ctx.eps)
            grads = torch.autograd.grad(out, leaves, dy, allow_unused=True)
        kept = [g if i in ctx.keep else None for i, g in enumerate(grads)]
        return (None, None, None, None, *kept)


def _rms_backward(forward_fn: Callable, backward_fn: Callable, keep: tuple[int, ...]) -> Callable:
    def fn(x, weight, eps):
        return _Backward.apply(forward_fn, backward_fn, keep, eps, x, weight)

    return fn


def _ln_backward(keep: tuple[int, ...]) -> Callable:
    def fn(x, weight, bias, eps):
        return _Backward.apply(E.layer_norm, E.layer_norm, keep, eps, x, weight, bias)

    return fn


# ---- fused residual add: the three modes ---------------------------------------------------------
def _rms32(h32: torch.Tensor, weight: torch.Tensor, eps: float | None, dtype: torch.dtype) -> torch.Tensor:
    y = h32 * torch.rsqrt(h32.pow(2).mean(-1, keepdim=True) + resolve_eps(eps, dtype))
    return (y * weight.float()).to(dtype)


def residual_unrounded(x, weight, eps, residual):
    # flash-attention's: the float32 sum is normalized; h leaves rounded to x's dtype
    s = x.float() + residual.float()
    return _rms32(s, weight, eps, x.dtype), s.to(x.dtype)


def residual_rounded_for_unrounded(x, weight, eps, residual):
    # the sum rounded to x's dtype, then normalized: right for residual_mode="rounded" only
    return E.rms_norm(x, weight, eps, residual)


def residual_fp32(x, weight, eps, residual):
    # an fp32 residual stream: the residual arrives in float32 and h leaves in it
    s = x.float() + residual
    return _rms32(s, weight, eps, x.dtype), s


def residual_stream_rounded(x, weight, eps, residual):
    # the incoming fp32 stream rounded to x's dtype before the add, as a kernel that loads the
    # residual with x's element type does
    s = (x + residual.to(x.dtype)).float()
    return _rms32(s, weight, eps, x.dtype), s


# ---- row width limited per dtype ----------------------------------------------------------------
def row_bytes(x, weight, eps):
    # one block of 256 bytes per row, refused past it (flash-attention's 64 KB rule, scaled down)
    if x.shape[-1] * x.element_size() > ROW_BYTES:
        raise ValueError(f"rows of {x.shape[-1]} {x.dtype} elements exceed {ROW_BYTES} bytes")
    return E.rms_norm(x, weight, eps)


def row_limit_from_fp32(x, weight, eps):
    # the block computed from float32's element size whatever the dtype: wider half-precision
    # rows get their rstd from the first block only
    block = ROW_BYTES // 4
    h = x.float()
    rstd = torch.rsqrt(h[..., :block].pow(2).mean(-1, keepdim=True) + resolve_eps(eps, x.dtype))
    return (h * rstd * weight.float()).to(x.dtype)


# ---- output dtype chosen by the caller ----------------------------------------------------------
def out_fp32(x, weight, eps):
    h = x.float()
    y = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + resolve_eps(eps, x.dtype))
    return y * weight.float()


def out_fp32_rounded_first(x, weight, eps):
    # the output stored in x's dtype and converted to the dtype asked for afterwards
    return E.rms_norm(x, weight, eps).float()


# ---- LayerNorm with a bias and no weight --------------------------------------------------------
def _xhat(x, eps):
    h = x.float()
    d = h - h.mean(-1, keepdim=True)
    return d * torch.rsqrt(d.pow(2).mean(-1, keepdim=True) + resolve_eps(eps, x.dtype))


def bias_only(x, weight, bias, eps):
    return (_xhat(x, eps) + bias.float()).to(x.dtype)


def bias_in_weight_slot(x, weight, bias, eps):
    # a wrapper that passes its parameters positionally to a kernel taking (weight, bias): with
    # no weight, the bias lands in the weight's place
    return (_xhat(x, eps) * bias.float()).to(x.dtype)


def entries(Base, Mutant) -> tuple[tuple, tuple]:  # noqa: N803 - the catalog's classes
    """(bases, mutants) of the declarations above, as the catalog's Base and Mutant."""
    bases = (
        Base("zoo_eager_rmsnorm_residual_unrounded", "rmsnorm",
             RMSNormVariant(casting="gemma", residual=True, residual_mode="unrounded"), residual_unrounded,
             description="the zoo's fused residual add + RMSNorm normalizing the float32 sum (flash-attention's)"),
        Base("zoo_eager_rmsnorm_residual_fp32", "rmsnorm",
             RMSNormVariant(casting="gemma", residual=True, residual_mode="fp32"), residual_fp32,
             description="the zoo's fused residual add + RMSNorm with an fp32 residual stream"),
        Base("zoo_eager_rmsnorm_dx_only", "rmsnorm", RMSNormVariant(casting="gemma", offset=1.0),
             _rms_backward(E.rms_norm_offset1, E.rms_norm_offset1, (0,)),
             description="the zoo's Gemma RMSNorm whose backward returns dx only (older Unsloth's)",
             declare=(("grads", ("dx",)),)),
        Base("zoo_eager_layernorm_dx_dw", "layernorm", LayerNormVariant(), _ln_backward((0, 1)),
             description="the zoo's LayerNorm whose backward returns dx and dW, no dB",
             declare=(("grads", ("dx", "dweight")),)),
        Base("zoo_eager_rmsnorm_row_bytes", "rmsnorm", RMSNormVariant(casting="gemma"), row_bytes,
             description=f"the zoo's RMSNorm taking rows of up to {ROW_BYTES} bytes", declare=(("max_n", ROW_LIMIT),)),
        Base("zoo_eager_rmsnorm_out_fp32", "rmsnorm", RMSNormVariant(casting="gemma", out="fp32"), out_fp32,
             description="the zoo's RMSNorm with an fp32 output asked for by the caller"),
        Base("zoo_eager_layernorm_bias_only", "layernorm", LayerNormVariant(weight=False), bias_only,
             description="the zoo's LayerNorm with a bias and no weight"),
    )

    mutants = (
        Mutant("residual_rounded_for_unrounded", "zoo_eager_rmsnorm_residual_unrounded",
               "claims the float32 sum normalized (unrounded), normalizes it rounded to x's dtype",
               residual_rounded_for_unrounded),
        Mutant("residual_stream_rounded", "zoo_eager_rmsnorm_residual_fp32",
               "fp32 residual stream rounded to x's dtype before the add", residual_stream_rounded),
        Mutant("dx_only_offset_missing_bwd", "zoo_eager_rmsnorm_dx_only",
               "a dx-only backward that uses weight, not (1 + weight)",
               _rms_backward(E.rms_norm_offset1, E.rms_norm, (0,))),
        Mutant("dweight_not_returned", "zoo_eager_rmsnorm", "claims every gradient, its backward returns dx only",
               _rms_backward(E.rms_norm, E.rms_norm, (0,))),
        Mutant("dweight_not_returned_ln", "zoo_eager_layernorm_dx_dw", "claims dx and dW, its backward returns dx only",
               _ln_backward((0,))),
        Mutant("dbias_not_returned", "zoo_eager_layernorm", "claims dx, dW and dB, its backward returns no dB",
               _ln_backward((0, 1))),
        Mutant("row_limit_from_fp32", "zoo_eager_rmsnorm_row_bytes",
               "row block sized by float32's element size in every dtype: half-precision rows past 64 columns "
               "normalized by their first 64", row_limit_from_fp32),
        Mutant("out_fp32_rounded_first", "zoo_eager_rmsnorm_out_fp32",
               "the fp32 output the caller asked for, rounded to x's dtype first", out_fp32_rounded_first),
        Mutant("bias_in_weight_slot", "zoo_eager_layernorm_bias_only",
               "no weight: the bias handed over in the weight's place (y = xhat * b)", bias_in_weight_slot),
    )
    return bases, mutants
