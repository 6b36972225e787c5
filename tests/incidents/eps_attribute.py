"""Incident 1 (Unsloth + Megatron-LM): the norm's epsilon read from the wrong place.

Unsloth's fast path read ``layernorm.variance_epsilon``; a module that stores it elsewhere either
raised or, in the silent form of the bug, fell back to a default. This candidate ignores the eps
it is given and uses 1e-6, as a kernel patched onto a module with its own eps would.
"""

import torch

import normgate


def rmsnorm_default_eps(x, weight, eps):
    h = x.float()
    h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6)  # the module's own eps is lost
    return weight * h.to(x.dtype)


normgate.register("incident_eps_attribute", rmsnorm_default_eps, op="rmsnorm",
                  variant=normgate.RMSNormVariant(casting="llama", out="promote"),
                  dtypes=("fp32", "bf16", "fp16"), eps_none=False)
