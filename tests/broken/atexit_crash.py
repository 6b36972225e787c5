"""Registers an exit handler that ends the process with exit code 9: it runs when its worker
ends, long after the task was reported done. The death must be blamed on this kernel.

A deliberately broken candidate for tests/test_isolation.py (otherwise correct).
"""

import atexit
import os

import torch

import normgate

_registered = []


def _rmsnorm(x: torch.Tensor, weight: torch.Tensor, eps: float | None) -> torch.Tensor:
    eps = torch.finfo(torch.float32).eps if eps is None else eps
    h = x.float()
    return (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps) * weight.float()).to(x.dtype)


@normgate.register("broken_atexit", op="rmsnorm", variant=normgate.RMSNormVariant(casting="gemma", offset=0.0),
                   dtypes=("fp32",), devices=("cpu", "cuda"))
def broken_atexit(x: torch.Tensor, weight: torch.Tensor, eps: float | None) -> torch.Tensor:
    if not _registered:
        _registered.append(atexit.register(os._exit, 9))
    return _rmsnorm(x, weight, eps)
