"""Leaves a thread running past the end of its task (it ends by itself 3 s later, harmlessly), once
per process, as libraries do. Its task line must say so; the worker goes on.

A deliberately broken candidate for tests/test_isolation.py (otherwise correct).
"""

import threading
import time

import torch

import normgate


def _rmsnorm(x: torch.Tensor, weight: torch.Tensor, eps: float | None) -> torch.Tensor:
    eps = torch.finfo(torch.float32).eps if eps is None else eps
    h = x.float()
    return (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps) * weight.float()).to(x.dtype)


_started = []


@normgate.register("broken_thread_lingers", op="rmsnorm",
                   variant=normgate.RMSNormVariant(casting="gemma", offset=0.0), dtypes=("fp32",),
                   devices=("cpu", "cuda"))
def thread_lingers(x, weight, eps):
    if not _started:
        _started.append(threading.Thread(target=time.sleep, args=(3,), name="lingering", daemon=True))
        _started[0].start()
    return _rmsnorm(x, weight, eps)
