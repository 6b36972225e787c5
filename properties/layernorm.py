"""LayerNorm as an op: y = (h - mean) * rstd * w + b, rstd = (var + eps)^-1/2, h = x [+ residual].

Calling convention of a candidate: ``fn(x, weight, bias, eps)``, or
``fn(x, weight, bias, eps, residual)`` returning ``(y, h)``. ``weight``/``bias`` are None when the
variant has none.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from normgate.kernels import references as ref
from normgate.op import register_op

from .norm import NormOp, NormVariant


@dataclass(frozen=True)
class LayerNormVariant(NormVariant):
    """weight/bias: which affine parameters exist (bias without weight: ``y = xhat + b``); residual:
    fused ``h = x + residual``; casting: gemma (all float32, one rounding) | llama | none; out:
    mixed-dtype rule or the caller's dtype; residual_mode: rounded | unrounded | fp32 (properties/norm.py)."""

    weight: bool = True
    bias: bool = True
    residual: bool = False
    casting: str = "gemma"
    out: str = "input"
    residual_mode: str = field(default="rounded", metadata={"key_when_set": True})


class LayerNormOp(NormOp):
    name = "layernorm"
    variant_type = LayerNormVariant
    # h - mean can be twice as large as h: its square must still fit
    edge_divisor = 8.0

    def params(self, variant):
        return tuple(n for n in ("weight", "bias") if getattr(variant, n))

    def call(self, fn, inputs, case, variant):
        args = [inputs["x"], inputs.get("weight"), inputs.get("bias"), case.eps]
        if variant.residual:
            args.append(inputs["residual"])
        return self.wrap_outputs(fn(*args), variant)

    def exact(self, h, p, eps, variant):
        return ref.layernorm_forward(h, p["weight"], p["bias"], eps)

    def exact_backward(self, stats, p, dy, variant, magnitude):
        dx, dw, db = ref.layernorm_backward(stats, p["weight"], dy, variant.bias, magnitude)
        return {"dx": dx, "dweight": dw, "dbias": db}

    def row_directions(self, stats, g, eps):
        # dx = rstd (g - mean(g) - xhat mean(g xhat)); sum_j xhat_j = 0 exactly, and
        # mean(xhat^2) = var / (var + eps) = 1 - eps rstd^2. So sum_j dx_j = 0 (no eps term) and
        # sum_j dx_j xhat_j = rstd sum(g xhat) (1 - mean(xhat^2)) = eps rstd^3 sum_j g_j xhat_j.
        ones = torch.ones_like(stats.rstd)
        zero = torch.zeros_like(stats.rstd)
        r3 = eps * stats.rstd ** 3
        return [("sum(dx)", ones, zero, zero, zero),
                ("dx.xhat", stats.xhat, stats.xhat_mag, r3 * (g * stats.xhat).sum(-1, keepdim=True),
                 r3 * (g.abs() * stats.xhat_mag).sum(-1, keepdim=True))]

    def eager(self, variant):
        from normgate.kernels.baselines import layer_norm_eager

        def fn(x, weight, bias, eps, residual=None):
            return layer_norm_eager(x, weight, bias, eps, residual, casting=variant.casting, out=variant.out,
                                    residual_mode=variant.residual_mode)

        return fn


LAYERNORM = register_op(LayerNormOp())
