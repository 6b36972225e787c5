"""The built-in GroupNorm candidates: torch.nn.functional.group_norm, an eager float32 version, its
torch.compile (CUDA), and our Triton kernel. Every one takes ``fn(x, num_groups, weight, bias, eps)``.
"""

from __future__ import annotations

import torch.nn.functional as F

from normgate.candidates import ALL_DTYPES, register
from normgate.properties.groupnorm import GroupNormVariant

from .baselines import compiled, group_norm_eager

ALL = ALL_DTYPES


def torch_group_norm(x, num_groups, weight, bias, eps):
    return F.group_norm(x, num_groups, weight, bias, eps)


def triton_group_norm(x, num_groups, weight, bias, eps):
    from normgate.kernels.groupnorm import group_norm

    return group_norm(x, num_groups, weight, bias, eps)


# PyTorch's CUDA reductions choose their split by the whole tensor's shape (kernels/builtins.py),
# so they claim no batch invariance: the check observes and reports it.
PYTORCH = dict(batch_invariant=False)

register("eager_groupnorm", group_norm_eager, variant=GroupNormVariant(), dtypes=ALL,
         **PYTORCH, description="eager GroupNorm in float32, two-pass variance, one cast at the end")
register("compile_groupnorm", compiled(group_norm_eager), variant=GroupNormVariant(), dtypes=ALL,
         eps_none=False, devices=("cuda",), **PYTORCH, description="torch.compile of eager GroupNorm")
# PyTorch's CPU group_norm backward for bf16 and fp16 parameters is not computed in float32 (dx
# off by ~1,000x the bound: `normgate replay 'torch_group_norm_cpu@accuracy:groupnorm,1x2,bf16,x=normal,
# dy=normal,w=normal,eps=1e-06,g1c2,seed=0'` once the CPU candidate claims bf16), while with float32
# parameters it is; so on the CPU it claims those. On CUDA its bf16 and fp16 backward is no better
# (H200, torch 2.11: dx 1.06e6 ULP off where the bound is 447, `normgate replay 'torch_group_norm@accuracy:
# groupnorm,1x2,bf16,x=normal,dy=normal,w=normal,eps=1e-06,groups=1,contiguous,seed=0' --device cuda`,
# and an fp16 dx of inf where the exact one is finite, `...@contract:groupnorm,1x2,fp16,x=huge,dy=huge,
# w=normal,eps=1e-06,groups=1,contiguous,seed=0`), so there it claims float32.
# F.group_norm refuses a group of one element ("Expected more than 1 value per channel when training")
register("torch_group_norm", torch_group_norm, variant=GroupNormVariant(), dtypes=("fp32",),
         eps_none=False, min_group_elements=2, devices=("cuda",), **PYTORCH,
         description="torch.nn.functional.group_norm")
register("torch_group_norm_cpu", torch_group_norm, variant=GroupNormVariant(),
         dtypes=("fp32", "bf16/fp32", "fp16/fp32"), eps_none=False, min_group_elements=2, devices=("cpu",),
         **PYTORCH, description="torch.nn.functional.group_norm on the CPU, float32 parameters")
for weight, bias in ((True, True), (False, False)):
    register("triton_groupnorm" + ("" if weight else "_noaffine"), triton_group_norm,
             variant=GroupNormVariant(weight=weight, bias=bias), dtypes=ALL, triton=True,
             description="normgate's Triton GroupNorm" + ("" if weight else ", no affine parameters"))
