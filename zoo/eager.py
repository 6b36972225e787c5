"""A correct eager RMSNorm and LayerNorm, and the mistakes that live in plain PyTorch wrappers.

Each mutant is a small function over the correct one: the same code a kernel's Python wrapper
would contain, with one plausible mistake. The correct functions are candidates of their own, so
a false alarm on them counts against the harness.
"""

from __future__ import annotations

import math

import torch

from normgate.kernels.references import resolve_eps


# ---- correct ------------------------------------------------------------------------------------
def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float | None, residual: torch.Tensor | None = None,
             *, offset: float = 0.0):
    """Gemma casting: float32 throughout, ``(offset + weight)``, one rounding to x's dtype.
    With a residual, h = x + residual is rounded to x's dtype first and returned too."""
    h = x if residual is None else x + residual
    h32 = h.float()
    y = h32 * torch.rsqrt(h32.pow(2).mean(-1, keepdim=True) + resolve_eps(eps, x.dtype))
    y = (y * (offset + weight.float())).to(x.dtype)
    return y if residual is None else (y, h)


def rms_norm_offset1(x, weight, eps):
    return rms_norm(x, weight, eps, offset=1.0)


def layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float | None) -> torch.Tensor:
    """Float32 two-pass variance, one rounding to x's dtype."""
    h = x.float()
    d = h - h.mean(-1, keepdim=True)
    y = d * torch.rsqrt(d.pow(2).mean(-1, keepdim=True) + resolve_eps(eps, x.dtype))
    return (y * weight.float() + bias.float()).to(x.dtype)


# ---- RMSNorm mutants ----------------------------------------------------------------------------
def eps_default(x, weight, eps):
    # the module's eps is read from an attribute that is not there; a default fills in
    return rms_norm(x, weight, 1e-6)


def eps_none_input_dtype(x, weight, eps):
    # eps=None taken as the documented finfo(x.dtype).eps: bf16's is 65,536 times float32's
    return rms_norm(x, weight, torch.finfo(x.dtype).eps if eps is None else eps)


def offset_missing(x, weight, eps):
    # Gemma's (1 + weight) computed with the Llama formula
    return rms_norm(x, weight, eps, offset=0.0)


def output_promoted(x, weight, eps):
    # the result left in the promoted dtype (fp32 for bf16 activations with fp32 weights)
    h = x.float()
    y = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + resolve_eps(eps, x.dtype))
    return (y * weight.float()).to(torch.promote_types(x.dtype, weight.dtype))


def squeeze_size_one(x, weight, eps):
    # a wrapper that "drops the batch dims" with squeeze(): wrong shape for one row, and for
    # N = 1 the mean runs over the rows
    h = x.float().squeeze()
    y = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + resolve_eps(eps, x.dtype))
    return (y * weight.float().squeeze()).to(x.dtype)


def one_row_fast_path(x, weight, eps):
    # a latency path for a single row (decode) that forgets eps
    if math.prod(x.shape[:-1]) == 1:
        h = x.float()
        return (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True)) * weight.float()).to(x.dtype)
    return rms_norm(x, weight, eps)


def norm_without_eps(x, weight, eps):
    # RMSNorm as x / ||x|| * sqrt(N): eps dropped, 0/0 on a zero row
    h = x.float()
    y = h / h.norm(dim=-1, keepdim=True) * math.sqrt(x.shape[-1])
    return (y * weight.float()).to(x.dtype)


def residual_h_is_x(x, weight, eps, residual):
    # the fused kernel returns its input instead of the updated residual stream
    y, _ = rms_norm(x, weight, eps, residual)
    return y, x


def residual_unrounded(x, weight, eps, residual):
    # h kept in float32 for the norm: the returned h and the normalized one differ
    h32 = x.float() + residual.float()
    y = rms_norm(h32, weight, eps).to(x.dtype)
    return y, h32.to(x.dtype)


def residual_in_place(x, weight, eps, residual):
    # h written back into x's storage to save memory, without declaring it
    y, h = rms_norm(x, weight, eps, residual)
    with torch.no_grad():
        x.copy_(h)
    return y, h


# ---- LayerNorm mutants --------------------------------------------------------------------------
def unbiased_variance(x, weight, bias, eps):
    # torch.var's default is the unbiased (N - 1) estimator; NaN for N = 1
    h = x.float()
    y = (h - h.mean(-1, keepdim=True)) * torch.rsqrt(h.var(-1, keepdim=True) + resolve_eps(eps, x.dtype))
    return (y * weight.float() + bias.float()).to(x.dtype)


def bias_before_weight(x, weight, bias, eps):
    h = x.float()
    d = h - h.mean(-1, keepdim=True)
    y = d * torch.rsqrt(d.pow(2).mean(-1, keepdim=True) + resolve_eps(eps, x.dtype))
    return ((y + bias.float()) * weight.float()).to(x.dtype)


def ln_output_promoted(x, weight, bias, eps):
    # xFormers' incident: fp32 parameters, bf16 activations, an fp32 result
    return torch.nn.functional.layer_norm(x.float(), (x.shape[-1],), weight.float(), bias.float(),
                                          resolve_eps(eps, x.dtype))
