"""``LigerRMSNormFunction``, ``LigerLayerNormFunction`` and ``LigerFusedAddRMSNormFunction`` with
Liger-Kernel's ``apply`` signatures, as autograd Functions over plain PyTorch."""

from __future__ import annotations

import torch


def _rms(h, weight, eps, offset, casting):
    if casting == "none":
        return h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps) * (offset + weight.to(h.dtype))
    s = h.float()
    xhat = s * torch.rsqrt(s.pow(2).mean(-1, keepdim=True) + eps)
    if casting == "llama":
        xhat = xhat.to(h.dtype).float()
    return (xhat * (offset + weight.float())).to(h.dtype)


class _Autograd(torch.autograd.Function):
    """Forward and backward through autograd of ``fn``, as one Function with an ``apply``."""

    @staticmethod
    def forward(ctx, fn, *args):
        tensors = [a for a in args if isinstance(a, torch.Tensor)]
        ctx.fn, ctx.args = fn, args
        ctx.save_for_backward(*tensors)
        with torch.no_grad():
            return fn(*args)

    @staticmethod
    def backward(ctx, *grads):
        with torch.enable_grad():
            it = iter(t.detach().requires_grad_(True) for t in ctx.saved_tensors)
            args = [next(it) if isinstance(a, torch.Tensor) else a for a in ctx.args]
            leaves = [a for a in args if isinstance(a, torch.Tensor)]
            out = ctx.fn(*args)
            outs = list(out) if isinstance(out, tuple) else [out]
            got = torch.autograd.grad(outs, leaves, [g for g in grads], allow_unused=True)
        it = iter(got)
        return (None, *[next(it) if isinstance(a, torch.Tensor) else None for a in ctx.args])


class LigerRMSNormFunction:
    @staticmethod
    def apply(X, W, eps, offset=0.0, casting_mode="llama", in_place=True, row_mode=None):
        return _Autograd.apply(lambda x, w, e: _rms(x, w, e, offset, casting_mode), X, W, eps)


class LigerLayerNormFunction:
    @staticmethod
    def apply(X, W, B, eps):
        def fn(x, w, b, e):
            s = x.float()
            d = s - s.mean(-1, keepdim=True)
            return (d * torch.rsqrt(d.pow(2).mean(-1, keepdim=True) + e) * w.float() + b.float()).to(x.dtype)

        return _Autograd.apply(fn, X, W, B, eps)


class LigerFusedAddRMSNormFunction:
    @staticmethod
    def apply(X, R, W, eps, offset=0.0, casting_mode="llama", in_place=False):
        def fn(x, r, w, e):
            h = x + r  # the sum in the input dtype
            return _rms(h, w, e, offset, casting_mode), h

        return _Autograd.apply(fn, X, R, W, eps)
