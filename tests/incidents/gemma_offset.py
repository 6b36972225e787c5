"""Incident 2 (Liger-Kernel): Gemma's RMSNorm multiplies by (1 + weight); this kernel reuses the
Llama formula (``* weight``) while claiming the Gemma variant."""

import torch

import normgate


def gemma_without_offset(x, weight, eps):
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps)
    return (h * weight.float()).to(x.dtype)  # should be (1 + weight)


normgate.register("incident_gemma_offset", gemma_without_offset, op="rmsnorm",
                  variant=normgate.RMSNormVariant(casting="gemma", offset=1.0),
                  dtypes=("fp32", "bf16", "fp16"), eps_none=False)
