"""The kernels the benchmark compares, each as ``fn(x) -> y`` plus its parameters.

All compute the same thing as ours in the bench: RMSNorm in the Llama variant (eps 1e-6) and
LayerNorm with weight and bias (eps 1e-5); weights ~1, bf16 like the activations. Two exceptions,
named by their rows: quack's RMSNorm rounds once (fp32 inside), so ``normgate_gemma`` (ours in
the same casting) sits beside it; quack's LayerNorm forward takes fp32 parameters.
"""

from __future__ import annotations

import functools
import importlib

import torch
import torch.nn.functional as F
from torch import nn

RMS_EPS = 1e-6
LN_EPS = 1e-5


class HFLlamaRMSNorm(nn.Module):
    """transformers' LlamaRMSNorm forward, verbatim arithmetic (eager)."""

    def __init__(self, n: int, eps: float = RMS_EPS) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))
        self.variance_epsilon = eps

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        dt = h.dtype
        h = h.to(torch.float32)
        var = h.pow(2).mean(-1, keepdim=True)
        h = h * torch.rsqrt(var + self.variance_epsilon)
        return self.weight * h.to(dt)


class EagerLayerNorm(nn.Module):
    """LayerNorm written out in fp32 (two-pass variance), one cast at the end."""

    def __init__(self, n: int, eps: float = LN_EPS) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(n))
        self.bias = nn.Parameter(torch.zeros(n))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.float()
        mean = h.mean(-1, keepdim=True)
        d = h - mean
        var = d.pow(2).mean(-1, keepdim=True)
        return (d * torch.rsqrt(var + self.eps) * self.weight.float() + self.bias.float()).to(x.dtype)


@functools.cache
def _dynamo_limits() -> None:
    import torch._dynamo

    # many shapes: without a raised limit dynamo silently falls back to eager
    for knob in ("recompile_limit", "cache_size_limit", "accumulated_recompile_limit",
                 "accumulated_cache_size_limit"):
        if hasattr(torch._dynamo.config, knob):
            setattr(torch._dynamo.config, knob, 4096)


def liger_available() -> bool:
    try:
        import liger_kernel.transformers  # noqa: F401
    except Exception:
        return False
    return True


def quack_available() -> bool:
    """quack (CuTe DSL kernels) imports only with nvidia-cutlass-dsl and a CUDA torch."""
    try:
        import quack.rmsnorm  # noqa: F401
    except Exception:
        return False
    return True


def skip_reason(kernel: str, op: str, pass_: str) -> str | None:
    """Why ``kernel`` has no row for (op, pass_), or None when it has one."""
    if kernel == "liger" and not liger_available():
        return "liger_kernel is not importable"
    if kernel == "normgate_gemma" and op != "rmsnorm":
        return "the gemma casting is RMSNorm's"
    if kernel == "quack":
        if not quack_available():
            return "quack is not importable (quack-kernels and nvidia-cutlass-dsl)"
        if op == "layernorm" and pass_ != "forward":
            return "quack 0.2.4 has a LayerNorm forward only (quack.rmsnorm.layernorm_fwd)"
    return None


def param_bytes(kernel: str, op: str, dtype: torch.dtype) -> int:
    """Bytes per parameter element the kernel reads: quack's LayerNorm takes fp32 weight and bias."""
    if kernel == "quack" and op == "layernorm":
        return 4
    return torch.empty((), dtype=dtype).element_size()


def _weights(n, dtype, device, bias):
    g = torch.Generator(device="cpu").manual_seed(n)
    w = (1.0 + 0.1 * torch.randn(n, generator=g)).to(device=device, dtype=dtype).requires_grad_(True)
    b = (0.1 * torch.randn(n, generator=g)).to(device=device, dtype=dtype).requires_grad_(True)
    return w, b if bias else None


def make(kernel: str, op: str, n: int, dtype: torch.dtype, device: str = "cuda"):
    """(fn, params) for ``kernel`` in {normgate, liger, torch_compile, torch, quack}."""
    w, b = _weights(n, dtype, device, bias=op == "layernorm")
    if kernel == "quack":
        # quack's package binds the name rmsnorm to the function, so `import quack.rmsnorm as q`
        # gives the function, not the module (seen on the H200 with quack-kernels 0.2.4)
        q = importlib.import_module("quack.rmsnorm")

        if op == "rmsnorm":  # autograd; fp32 inside, y rounded once (the gemma-style casting)
            return (lambda x: q.rmsnorm(x, w, eps=RMS_EPS)), [w]
        # forward only, and its parameters must be fp32
        w32, b32 = w.detach().float(), b.detach().float()
        return (lambda x: q.layernorm_fwd(x, w32, b32, LN_EPS)), [w32, b32]
    if kernel in ("normgate", "normgate_gemma"):
        if op == "rmsnorm":
            from normgate.kernels.rmsnorm import rms_norm

            casting = "gemma" if kernel == "normgate_gemma" else "llama"
            return (lambda x: rms_norm(x, w, RMS_EPS, casting=casting)), [w]
        if kernel == "normgate_gemma":
            raise ValueError("normgate_gemma is an RMSNorm casting")
        from normgate.kernels.layernorm import layer_norm

        return (lambda x: layer_norm(x, w, b, LN_EPS)), [w, b]
    if kernel == "torch":
        if op == "rmsnorm":
            return (lambda x: F.rms_norm(x, (n,), w, RMS_EPS)), [w]
        return (lambda x: F.layer_norm(x, (n,), w, b, LN_EPS)), [w, b]
    if kernel == "liger":
        from liger_kernel.transformers import LigerLayerNorm, LigerRMSNorm

        if op == "rmsnorm":
            mod = LigerRMSNorm(n, eps=RMS_EPS).to(device=device, dtype=dtype)
        else:
            mod = LigerLayerNorm(n, eps=LN_EPS).to(device=device, dtype=dtype)
    elif kernel == "torch_compile":
        _dynamo_limits()
        mod = (HFLlamaRMSNorm(n) if op == "rmsnorm" else EagerLayerNorm(n)).to(device=device, dtype=dtype)
        mod = torch.compile(mod, dynamic=False)
    else:
        raise ValueError(kernel)
    with torch.no_grad():
        for p, src in zip(mod.parameters(), [w, b], strict=False):
            p.copy_(src)
    return mod, list(mod.parameters())
