"""Starts a long-running child process (its pid written to $NORMGATE_ORPHAN_PID), then calls
``os._exit(3)`` on a larger case: the child must end with its worker, not outlive the run.

A deliberately broken candidate for tests/test_isolation.py.
"""

import os
import subprocess

import torch

import normgate


def _rmsnorm(x: torch.Tensor, weight: torch.Tensor, eps: float | None) -> torch.Tensor:
    eps = torch.finfo(torch.float32).eps if eps is None else eps
    h = x.float()
    return (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps) * weight.float()).to(x.dtype)


@normgate.register("broken_orphan", op="rmsnorm", variant=normgate.RMSNormVariant(casting="gemma", offset=0.0),
                   dtypes=("fp32",), devices=("cpu", "cuda"))
def broken_orphan(x: torch.Tensor, weight: torch.Tensor, eps: float | None) -> torch.Tensor:
    if x.numel() > 1:
        child = subprocess.Popen(["sleep", "300"])
        with open(os.environ["NORMGATE_ORPHAN_PID"], "a") as f:
            f.write(f"{child.pid}\n")
        os._exit(3)
    return _rmsnorm(x, weight, eps)
