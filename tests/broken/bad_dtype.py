"""A candidate declaring a dtype normgate does not know: registration fails, `normgate run` exits 2."""

import torch

import normgate


@normgate.register("broken_dtype", op="rmsnorm", variant=normgate.RMSNormVariant(), dtypes=("fp32", "fp8"))
def broken_dtype(x: torch.Tensor, weight: torch.Tensor, eps: float | None) -> torch.Tensor:
    return x
