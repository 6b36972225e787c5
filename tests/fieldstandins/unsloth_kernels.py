"""``fast_rms_layernorm(layernorm, X, gemma=False)`` and ``fast_layernorm(layernorm, X)`` with
Unsloth's signatures: weight and eps read from the object passed, a backward that returns dX only
(the Llama path and the LayerNorm write it into dY's storage)."""

from __future__ import annotations

import torch


class _RMS(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, eps, gemma):
        s = x.float()
        rstd = torch.rsqrt(s.square().mean(-1, keepdim=True) + eps)
        if gemma:
            y = (s * rstd * (weight.float() + 1.0)).to(x.dtype)
        else:
            y = ((s * rstd).to(weight.dtype) * weight).to(x.dtype)  # cast to the weight's dtype first
        ctx.save_for_backward(x, weight, rstd)
        ctx.gemma = gemma
        return y

    @staticmethod
    def backward(ctx, dy):
        x, weight, rstd = ctx.saved_tensors
        xhat = x.float() * rstd
        wg = dy.float() * (weight.float() + (1.0 if ctx.gemma else 0.0))
        dx = rstd * (wg - xhat * (wg * xhat).mean(-1, keepdim=True))
        out = torch.empty_like(dy) if ctx.gemma else dy  # dX into dY's storage on the Llama path
        out.copy_(dx)
        return out, None, None, None


def fast_rms_layernorm(layernorm, X, gemma=False):
    eps = layernorm.variance_epsilon if hasattr(layernorm, "variance_epsilon") else layernorm.eps
    return _RMS.apply(X, layernorm.weight, eps, gemma)


class _LN(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, eps):
        x2 = x.view(-1, x.shape[-1])
        s = x2.float()
        d = s - s.mean(-1, keepdim=True)
        rstd = torch.rsqrt(d.square().mean(-1, keepdim=True) + eps)
        ctx.save_for_backward(x2, weight, rstd)
        return ((d * rstd) * weight.float() + bias.float()).to(x.dtype).view(x.shape)

    @staticmethod
    def backward(ctx, dy):
        x2, weight, rstd = ctx.saved_tensors
        s = x2.float()
        xhat = (s - s.mean(-1, keepdim=True)) * rstd
        dy2 = dy.view(-1, dy.shape[-1])
        wg = dy2.float() * weight.float()
        dx = rstd * (wg - wg.mean(-1, keepdim=True) - xhat * (wg * xhat).mean(-1, keepdim=True))
        dy2.copy_(dx)  # dX written into dY
        return dy, None, None, None


def fast_layernorm(layernorm, X):
    assert layernorm.elementwise_affine is True
    eps = layernorm.variance_epsilon if hasattr(layernorm, "variance_epsilon") else layernorm.eps
    return _LN.apply(X, layernorm.weight, layernorm.bias, eps)
