"""A kernel package's entry-point module (docs/integrations.md): installed with

    [project.entry-points."normgate.candidates"]
    my_kernels = "my_package.normgate_kernels"

its kernels show in ``normgate list`` and run under ``normgate run``/``normgate replay`` with no --load.
"""

import torch

import normgate


@normgate.register("ep_rmsnorm", variant=normgate.RMSNormVariant(casting="gemma"),
                   dtypes=("fp32", "bf16"), description="an RMSNorm registered through an entry point")
def ep_rmsnorm(x: torch.Tensor, weight: torch.Tensor, eps: float | None) -> torch.Tensor:
    eps = torch.finfo(torch.float32).eps if eps is None else eps
    h = x.float()
    return (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps) * weight.float()).to(x.dtype)


# a module can be registered the same way, through normgate.adapt
normgate.adapt(torch.nn.LayerNorm(8), name="ep_layernorm", dtypes=("fp32",), register=True)
