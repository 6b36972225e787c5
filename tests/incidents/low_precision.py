"""Incident 5 (Minimind): RMSNorm computed in the input dtype while claiming Llama's float32
statistics. At 1e-4 scale fp16 squares underflow; above 256 they overflow."""

import torch

import normgate


def rmsnorm_in_input_dtype(x, weight, eps):
    return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))


normgate.register("incident_low_precision", rmsnorm_in_input_dtype, op="rmsnorm",
                  variant=normgate.RMSNormVariant(casting="llama"), dtypes=("fp16",), eps_none=False)
