"""Allocates far beyond any machine's memory: PyTorch refuses with a RuntimeError ("can't allocate memory").

2**60 bytes exceeds every address space, so even with overcommit on nothing is ever touched.

A deliberately broken candidate for tests/test_isolation.py: correct on the first (1x1) case
hypothesis draws, broken on larger ones, so one run shows both a passing case and the failure.
"""

import torch

import normgate


def _rmsnorm(x: torch.Tensor, weight: torch.Tensor, eps: float | None) -> torch.Tensor:
    eps = torch.finfo(torch.float32).eps if eps is None else eps
    h = x.float()
    return (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps) * weight.float()).to(x.dtype)


@normgate.register("broken_oom", op="rmsnorm", variant=normgate.RMSNormVariant(casting="gemma", offset=0.0),
                   dtypes=("fp32",), devices=("cpu", "cuda"))
def broken_oom(x: torch.Tensor, weight: torch.Tensor, eps: float | None) -> torch.Tensor:
    if x.numel() > 1:
        torch.empty(1 << 60, dtype=torch.uint8)
    return _rmsnorm(x, weight, eps)
