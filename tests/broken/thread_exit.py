"""Starts a background thread that ends the process half a second later: the task itself has
usually finished by then. The death must be blamed on this kernel, not on the next task.

A deliberately broken candidate for tests/test_isolation.py (otherwise correct).
"""

import os
import threading
import time

import torch

import normgate

_started = []


def _rmsnorm(x: torch.Tensor, weight: torch.Tensor, eps: float | None) -> torch.Tensor:
    eps = torch.finfo(torch.float32).eps if eps is None else eps
    h = x.float()
    return (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps) * weight.float()).to(x.dtype)


def _later() -> None:
    time.sleep(0.5)
    os._exit(7)


@normgate.register("broken_thread_exit", op="rmsnorm", variant=normgate.RMSNormVariant(casting="gemma", offset=0.0),
                   dtypes=("fp32",), devices=("cpu", "cuda"))
def broken_thread_exit(x: torch.Tensor, weight: torch.Tensor, eps: float | None) -> torch.Tensor:
    if not _started:
        _started.append(threading.Thread(target=_later, daemon=True))
        _started[0].start()
    return _rmsnorm(x, weight, eps)
