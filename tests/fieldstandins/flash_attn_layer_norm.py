"""``layer_norm_fn`` / ``rms_norm_fn`` with flash-attention's signature (the later releases': with
``zero_centered_weight`` and ``out_dtype``). The residual is added in float32 and that sum is
normalized; h is returned in the residual's dtype (float32 with ``residual_in_fp32`` and no
residual); rows of at most 64 KB."""

from __future__ import annotations

import torch


def _norm(x, weight, bias, residual, eps, prenorm, residual_in_fp32, zero_centered_weight, is_rms_norm, out_dtype):
    if x.shape[-1] * x.element_size() > 65536:
        raise RuntimeError("This layer norm doesn't support feature dim >= 64KB.")
    res_dtype = residual.dtype if residual is not None else (torch.float32 if residual_in_fp32 else x.dtype)
    s = x.float() if residual is None else x.float() + residual.float()
    if is_rms_norm:
        xhat = s * torch.rsqrt(s.square().mean(-1, keepdim=True) + eps)
    else:
        d = s - s.mean(-1, keepdim=True)
        xhat = d * torch.rsqrt(d.square().mean(-1, keepdim=True) + eps)
    w = weight.float() + (1.0 if zero_centered_weight else 0.0)
    y = xhat * w + (bias.float() if bias is not None else 0.0)
    y = y.to(x.dtype if out_dtype is None else out_dtype)
    return (y, s.to(res_dtype)) if prenorm else y


def layer_norm_fn(x, weight, bias, residual=None, x1=None, weight1=None, bias1=None, eps=1e-6, dropout_p=0.0,
                  rowscale=None, prenorm=False, residual_in_fp32=False, zero_centered_weight=False, is_rms_norm=False,
                  return_dropout_mask=False, out_dtype=None, out=None, residual_out=None):
    return _norm(x, weight, bias, residual, eps, prenorm, residual_in_fp32, zero_centered_weight, is_rms_norm,
                 out_dtype)


def rms_norm_fn(x, weight, bias, residual=None, x1=None, weight1=None, bias1=None, eps=1e-6, dropout_p=0.0,
                rowscale=None, prenorm=False, residual_in_fp32=False, zero_centered_weight=False,
                return_dropout_mask=False, out_dtype=None, out=None, residual_out=None):
    return _norm(x, weight, bias, residual, eps, prenorm, residual_in_fp32, zero_centered_weight, True, out_dtype)
