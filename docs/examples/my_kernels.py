import torch

import normgate


@normgate.register(
    "my_rmsnorm",
    variant=normgate.RMSNormVariant(casting="gemma", offset=0.0),
    dtypes=("fp32", "bf16", "fp16", "bf16/fp32"),
    devices=("cpu", "cuda"),
    backward=True,
)
def my_rmsnorm(x: torch.Tensor, weight: torch.Tensor, eps: float | None) -> torch.Tensor:
    eps = torch.finfo(torch.float32).eps if eps is None else eps
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return (h * weight.float()).to(x.dtype)
