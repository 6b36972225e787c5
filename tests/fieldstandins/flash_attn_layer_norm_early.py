"""``rms_norm_fn`` with the early releases' signature (no ``zero_centered_weight``, no
``out_dtype``) and their backward's dW: partial sums per program in ``torch.empty`` buffers, a
fixed number of programs, and programs that own no row returning before they write theirs, so dW
holds whatever that memory held when there are fewer rows than programs."""

from __future__ import annotations

import math

import torch

PROGRAMS = 8


class _RMSNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, eps):
        s = x.float()
        rstd = torch.rsqrt(s.square().mean(-1, keepdim=True) + eps)
        ctx.save_for_backward(x, weight, rstd)
        return (s * rstd * weight.float()).to(x.dtype)

    @staticmethod
    def backward(ctx, dy):
        x, weight, rstd = ctx.saved_tensors
        shape = x.shape
        xhat = (x.float() * rstd).reshape(-1, shape[-1])
        g = dy.float().reshape(-1, shape[-1])
        wg = g * weight.float()
        dx = rstd.reshape(-1, 1) * (wg - xhat * (wg * xhat).mean(-1, keepdim=True))
        m, n = xhat.shape
        partial = torch.empty(PROGRAMS, n, dtype=torch.float32)
        per = math.ceil(m / PROGRAMS)
        for p in range(PROGRAMS):
            lo = p * per
            if lo >= m:
                continue  # the early exit: this program's partial row is never written
            partial[p] = (g[lo:lo + per] * xhat[lo:lo + per]).sum(0)
        return dx.reshape(shape).to(x.dtype), partial.sum(0).to(weight.dtype), None


def rms_norm_fn(x, weight, bias, residual=None, x1=None, weight1=None, bias1=None, eps=1e-6, dropout_p=0.0,
                rowscale=None, prenorm=False, residual_in_fp32=False, return_dropout_mask=False):
    assert residual is None and bias is None, "this stand-in has no residual or bias"
    return _RMSNorm.apply(x, weight, eps)
