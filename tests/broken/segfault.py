"""Reads address 0: the process dies of SIGSEGV, as a kernel with a bad pointer does.

A deliberately broken candidate for tests/test_isolation.py: correct on the first (1x1) case
hypothesis draws, broken on larger ones, so one run shows both a passing case and the failure.
"""

import ctypes

import torch

import normgate


def _rmsnorm(x: torch.Tensor, weight: torch.Tensor, eps: float | None) -> torch.Tensor:
    eps = torch.finfo(torch.float32).eps if eps is None else eps
    h = x.float()
    return (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps) * weight.float()).to(x.dtype)


@normgate.register("broken_segfault", op="rmsnorm", variant=normgate.RMSNormVariant(casting="gemma", offset=0.0),
                   dtypes=("fp32",), devices=("cpu", "cuda"))
def broken_segfault(x: torch.Tensor, weight: torch.Tensor, eps: float | None) -> torch.Tensor:
    if x.numel() > 1:
        ctypes.string_at(0)
    return _rmsnorm(x, weight, eps)
