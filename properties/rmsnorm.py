"""RMSNorm as an op: y = h * rstd * (offset + w), rstd = (mean(h^2) + eps)^-1/2, h = x [+ residual].

Calling convention of a candidate: ``fn(x, weight, eps)``, or ``fn(x, weight, eps, residual)``
returning ``(y, h)`` for the fused residual variant. ``weight`` is None when the variant has none.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from normgate.kernels import references as ref
from normgate.op import register_op

from .norm import NormOp, NormVariant


@dataclass(frozen=True)
class RMSNormVariant(NormVariant):
    """casting: llama | gemma | none; offset: 0 (Llama) or 1 (Gemma's ``1 + weight``);
    residual: fused ``h = x + residual``; weight: has an affine weight; out: mixed-dtype rule
    (input | promote) or the dtype the caller chose (fp32 | bf16 | fp16); residual_mode: rounded |
    unrounded | fp32 (properties/norm.py)."""

    casting: str = "llama"
    offset: float = 0.0
    residual: bool = False
    weight: bool = True
    out: str = "input"
    residual_mode: str = field(default="rounded", metadata={"key_when_set": True})


class RMSNormOp(NormOp):
    name = "rmsnorm"
    variant_type = RMSNormVariant

    def params(self, variant):
        return ("weight",) if variant.weight else ()

    def param_offset(self, variant):
        return variant.offset

    def call(self, fn, inputs, case, variant):
        args = [inputs["x"], inputs.get("weight"), case.eps]
        if variant.residual:
            args.append(inputs["residual"])
        return self.wrap_outputs(fn(*args), variant)

    def exact(self, h, p, eps, variant):
        return ref.rmsnorm_forward(h, p["weight"], eps, variant.offset)

    def exact_backward(self, stats, p, dy, variant, magnitude):
        dx, dw = ref.rmsnorm_backward(stats, p["weight"], dy, variant.offset, magnitude)
        return {"dx": dx, "dweight": dw}

    def row_directions(self, stats, g, eps):
        # dx = rstd (g - xhat mean(g xhat)), xhat = h rstd, mean(h^2) = ms, rstd^-2 = ms + eps:
        # sum_j dx_j h_j = rstd (sum g h - rstd^2 ms sum g h) = rstd sum(g h) eps / (ms + eps)
        #                = eps rstd^3 sum_j g_j h_j:  dx is orthogonal to x up to that eps term.
        r3 = eps * stats.rstd ** 3
        return [("dx.x", stats.h, stats.h.abs(), r3 * (g * stats.h).sum(-1, keepdim=True),
                 r3 * (g * stats.h).abs().sum(-1, keepdim=True))]

    def eager(self, variant):
        from normgate.kernels.baselines import rms_norm_eager

        def fn(x, weight, eps, residual=None):
            return rms_norm_eager(x, weight, eps, residual, casting=variant.casting, offset=variant.offset,
                                  out=variant.out, residual_mode=variant.residual_mode)

        return fn


RMSNORM = register_op(RMSNormOp())
