"""Raises the error CUDA gives after an illegal memory access, which leaves the context unusable.

On the CPU this stands in for tests/broken/oob_triton.py (GPU only), and like a dead CUDA context
it breaks the whole process: once it has failed, every ``torch.empty_strided`` in the process (the
harness copies every input with it) raises the same error. The run must record the error on this
case without shrinking and replace the worker: a kernel run after it in the same process would
fail too.

A deliberately broken candidate for tests/test_isolation.py: correct on the first (1x1) case
hypothesis draws, broken on larger ones, so one run shows both a passing case and the failure.
"""

import torch

import normgate

STICKY = "CUDA error: an illegal memory access was encountered"


def _rmsnorm(x: torch.Tensor, weight: torch.Tensor, eps: float | None) -> torch.Tensor:
    eps = torch.finfo(torch.float32).eps if eps is None else eps
    h = x.float()
    return (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps) * weight.float()).to(x.dtype)


def _poison_process() -> None:
    def dead(*args, **kwargs):
        raise RuntimeError(STICKY)

    torch.empty_strided = dead


@normgate.register("broken_sticky", op="rmsnorm", variant=normgate.RMSNormVariant(casting="gemma", offset=0.0),
                   dtypes=("fp32",), devices=("cpu", "cuda"))
def broken_sticky(x: torch.Tensor, weight: torch.Tensor, eps: float | None) -> torch.Tensor:
    if x.numel() > 1:
        _poison_process()
        raise RuntimeError(STICKY)
    return _rmsnorm(x, weight, eps)
