"""Returns one column too many.

A deliberately broken candidate for tests/test_isolation.py: correct on the first (1x1) case
hypothesis draws, broken on larger ones, so one run shows both a passing case and the failure.
"""

import torch

import normgate


def _rmsnorm(x: torch.Tensor, weight: torch.Tensor, eps: float | None) -> torch.Tensor:
    eps = torch.finfo(torch.float32).eps if eps is None else eps
    h = x.float()
    return (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps) * weight.float()).to(x.dtype)


@normgate.register("broken_wrong_shape", op="rmsnorm", variant=normgate.RMSNormVariant(casting="gemma", offset=0.0),
                   dtypes=("fp32",), devices=("cpu", "cuda"))
def broken_wrong_shape(x: torch.Tensor, weight: torch.Tensor, eps: float | None) -> torch.Tensor:
    y = _rmsnorm(x, weight, eps)
    return torch.cat([y, y[..., :1]], dim=-1) if x.numel() > 1 else y
