"""``rmsnorm(x, weight, ..., eps=...)`` with quack's signature: 2-D input, float32 inside, one
rounding to x's dtype."""

from __future__ import annotations

import torch


def rmsnorm(x, weight=None, bias=None, residual=None, out_dtype=None, residual_dtype=None, eps=1e-6, prenorm=False):
    assert x.dim() == 2, "Input must be 2D"
    s = x.float()
    y = s * torch.rsqrt(s.square().mean(-1, keepdim=True) + eps)
    if weight is not None:
        y = y * weight.float()
    return y.to(x.dtype if out_dtype is None else out_dtype)
