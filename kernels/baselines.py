"""The PyTorch baselines people compare their kernels against, each its exact variant.

``hf_llama_rmsnorm`` and ``hf_gemma_rmsnorm`` follow the eager modules of Hugging Face
transformers line by line; ``rms_norm_eager`` and ``layer_norm_eager`` compute any declared variant
in PyTorch eager and are the "no worse than eager" yardstick of the report.
"""

from __future__ import annotations

import functools

import torch

from .references import resolve_eps


def hf_llama_rmsnorm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """LlamaRMSNorm.forward: float32 statistics, cast back to the input dtype, then ``weight *``
    (so bf16 activations with fp32 weights give an fp32 output: the ``promote`` rule)."""
    input_dtype = x.dtype
    hidden = x.to(torch.float32)
    variance = hidden.pow(2).mean(-1, keepdim=True)
    hidden = hidden * torch.rsqrt(variance + eps)
    return weight * hidden.to(input_dtype)


def hf_gemma_rmsnorm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """GemmaRMSNorm.forward: everything in float32 with ``(1 + weight)``, one cast at the end."""
    out = x.float()
    out = out * torch.rsqrt(out.pow(2).mean(-1, keepdim=True) + eps)
    out = out * (1.0 + weight.float())
    return out.type_as(x)


def torch_rms_norm(x: torch.Tensor, weight: torch.Tensor | None, eps: float | None) -> torch.Tensor:
    return torch.nn.functional.rms_norm(x, (x.shape[-1],), weight, eps)


def torch_layer_norm(x, weight, bias, eps):
    return torch.nn.functional.layer_norm(x, (x.shape[-1],), weight, bias, eps)


_OUT_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _out_dtype(x: torch.Tensor, weight: torch.Tensor | None, out: str) -> torch.dtype:
    if out in _OUT_DTYPES:  # the dtype the caller chose
        return _OUT_DTYPES[out]
    if out == "promote" and weight is not None:
        return torch.promote_types(x.dtype, weight.dtype)
    return x.dtype


def _residual_add(x: torch.Tensor, residual: torch.Tensor | None, mode: str, internal: bool):
    """(what is normalized, the h returned). ``rounded``: x + residual in x's dtype, both; the
    ``unrounded`` and ``fp32`` modes (properties/norm.py): the float32 sum is normalized, and h is
    that sum rounded to x's dtype (unrounded) or kept in float32 (fp32)."""
    if residual is None:
        return x, None
    if mode == "rounded":
        h = x + residual  # rounded once to the input dtype
        return h, h
    s = x.float() + residual.float()
    return (s if internal else s.to(x.dtype)), (s if mode == "fp32" else s.to(x.dtype))


def rms_norm_eager(x, weight, eps, residual=None, *, casting="llama", offset=0.0, out="input",
                   residual_mode="rounded"):
    """Any RMSNorm variant in PyTorch eager. Returns y, or (y, h) with a residual."""
    h, h_out = _residual_add(x, residual, residual_mode, casting != "none")
    eps = resolve_eps(eps, x.dtype)
    if casting == "none":
        y = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
        if weight is not None:
            y = y * (offset + weight.to(h.dtype))
    else:
        h32 = h.float()
        y = h32 * torch.rsqrt(h32.pow(2).mean(-1, keepdim=True) + eps)
        if casting == "llama":
            y = y.to(x.dtype).float()
        if weight is not None:
            y = y * (offset + weight.float())
    y = y.to(_out_dtype(x, weight, out))
    return y if residual is None else (y, h_out)


def layer_norm_eager(x, weight, bias, eps, residual=None, *, casting="gemma", out="input", residual_mode="rounded"):
    """Any LayerNorm variant in PyTorch eager (two-pass variance). Returns y, or (y, h)."""
    h, h_out = _residual_add(x, residual, residual_mode, casting != "none")
    eps = resolve_eps(eps, x.dtype)
    c = h if casting == "none" else h.float()
    d = c - c.mean(-1, keepdim=True)
    y = d * torch.rsqrt(d.pow(2).mean(-1, keepdim=True) + eps)
    if casting == "llama":
        y = y.to(x.dtype).float()
    if weight is not None:
        y = y * weight.to(y.dtype)
    if bias is not None:
        y = y + bias.to(y.dtype)
    y = y.to(_out_dtype(x, weight, out))
    return y if residual is None else (y, h_out)


def group_norm_eager(x: torch.Tensor, num_groups: int, weight: torch.Tensor | None, bias: torch.Tensor | None,
                     eps: float | None) -> torch.Tensor:
    """GroupNorm written out in float32: the group's mean, the variance about it (two passes),
    the per-channel affine, one cast to x's dtype at the end."""
    eps = float(torch.finfo(torch.float32).eps) if eps is None else eps
    n, c = x.shape[0], x.shape[1]
    h = x.float().reshape(n, num_groups, -1)
    mean = h.mean(-1, keepdim=True)
    d = h - mean
    var = d.square().mean(-1, keepdim=True)
    y = (d * torch.rsqrt(var + eps)).reshape(n, c, -1)
    if weight is not None:
        y = y * weight.float().reshape(1, c, 1)
    if bias is not None:
        y = y + bias.float().reshape(1, c, 1)
    return y.reshape(x.shape).to(x.dtype)


def compiled(fn):
    """torch.compile of a baseline, compiled on its first call (the GPU candidates: importing the
    registry must not start Dynamo)."""

    @functools.cache
    def build():
        import torch._dynamo

        # Many shapes and dtypes: without a raised limit, dynamo silently falls back to eager.
        for knob in ("recompile_limit", "cache_size_limit", "accumulated_recompile_limit",
                     "accumulated_cache_size_limit"):
            if hasattr(torch._dynamo.config, knob):
                setattr(torch._dynamo.config, knob, 4096)
        return torch.compile(fn, dynamic=True)

    @functools.wraps(fn)
    def call(*args):
        return build()(*args)

    return call
