"""Kills its worker about 1 s after its last call (an armed SIGALRM): a death the worker cannot see
coming when it reports the task done, like an asynchronous device error surfacing at the next
synchronization. The death must be blamed on this kernel, not on whatever runs next.

A deliberately broken candidate for tests/test_isolation.py (otherwise correct).
"""

import signal

import torch

import normgate


def _rmsnorm(x: torch.Tensor, weight: torch.Tensor, eps: float | None) -> torch.Tensor:
    eps = torch.finfo(torch.float32).eps if eps is None else eps
    h = x.float()
    return (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps) * weight.float()).to(x.dtype)


@normgate.register("broken_late_alarm", op="rmsnorm", variant=normgate.RMSNormVariant(casting="gemma", offset=0.0),
                   dtypes=("fp32",), devices=("cpu", "cuda"))
def broken_late_alarm(x: torch.Tensor, weight: torch.Tensor, eps: float | None) -> torch.Tensor:
    signal.setitimer(signal.ITIMER_REAL, 1.0)  # re-armed on every call: fires once the calls stop
    return _rmsnorm(x, weight, eps)
