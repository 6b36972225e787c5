"""Incident 4 (xFormers): fused LayerNorm with fp32 parameters and bf16 activations.

The kernel computes in the parameters' float32 and returns that, while its variant states the
activation dtype (``out="input"``) that downstream fp16/bf16-only kernels rely on.
"""

import torch

import normgate


def layer_norm_fp32_params(x, weight, bias, eps):
    return torch.nn.functional.layer_norm(x.float(), (x.shape[-1],), weight.float(), bias.float(), eps)


normgate.register("incident_mixed_dtype", layer_norm_fp32_params, op="layernorm",
                  variant=normgate.LayerNormVariant(out="input"),
                  dtypes=("bf16/fp32", "fp16/fp32"), eps_none=False)
