"""GroupNorm as an op: x (N, C, *spatial), G groups of C / G adjacent channels, each (sample,
group) normalized over its L = (C / G) * prod(spatial) elements (biased variance, fp32 statistics),
then y = xhat * w[c] + b[c] with a per-channel affine.

Calling convention of a candidate, torch.nn.functional.group_norm's: ``fn(x, num_groups, weight,
bias, eps)`` returning y of x's shape and dtype; ``weight``/``bias`` are None when the variant has none.

How a case describes it. The core's case is a batch of rows; GroupNorm's unit of independence is
the sample, so a case's shape is (N, C * prod(spatial)): the batch-invariance check then slices
samples, and its boundary batches are numbers of samples. The geometry travels in the case's
``layout`` field, e.g. ``g4c8s5x3`` (4 groups, 8 channels, spatial 5 x 3) or ``g2c6`` (no spatial
dims), with ``-strided`` when samples sit in a padded buffer (stride(0) > C * HW). The op hands the
candidate x viewed as (N, C, *spatial) and reads its y back as (N, C * HW), after checking its shape.

Error model (normgate.tolerance), as LayerNorm's with a group for a row: y and dx depend on the
group's reductions of length L (steps L + 8); dW and dB sum over N * HW terms per channel on top
(N * HW + L + 8); the magnitudes come from the reference on absolute values
(references.groupnorm_backward), which covers a group with a large mean and a small spread.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from hypothesis import strategies as st

from normgate import dtypes
from normgate.case import Case
from normgate.kernels.references import F64, groupnorm_backward, groupnorm_forward, resolve_eps
from normgate.op import Expected, Identity, Op, Profile, Scaling, Tensors, Variant, register_op

from . import strategies as S
from .norm import ELEMENTWISE_STEPS, _bias_regime, _grad_layout

STRIDED = "-strided"
_GEOMETRY = re.compile(r"g(\d+)c(\d+)(?:s(\d+(?:x\d+)*))?(-strided)?")


@dataclass(frozen=True)
class GroupNormVariant(Variant):
    """weight/bias: which per-channel affine parameters exist (torch.nn.GroupNorm(affine=False) has
    neither). Everything is computed in float32 and y rounded once to x's dtype; gradients have
    the dtype of the input they belong to."""

    weight: bool = True
    bias: bool = True


@dataclass(frozen=True)
class Geometry:
    groups: int
    channels: int
    spatial: tuple[int, ...]
    strided: bool = False

    @property
    def hw(self) -> int:
        return math.prod(self.spatial)

    @property
    def per_group(self) -> int:
        """L: the elements one (sample, group) is normalized over."""
        return self.channels // self.groups * self.hw

    @property
    def features(self) -> int:
        return self.channels * self.hw

    def key(self) -> str:
        s = ("s" + "x".join(map(str, self.spatial))) if self.spatial else ""
        return f"g{self.groups}c{self.channels}{s}" + (STRIDED if self.strided else "")

    @classmethod
    def parse(cls, layout: str) -> Geometry:
        m = _GEOMETRY.fullmatch(layout)
        if not m:
            raise ValueError(f"a groupnorm case's layout is its geometry, e.g. 'g4c8s5x3' or 'g2c6-strided'; "
                             f"got {layout!r}")
        g, c = int(m.group(1)), int(m.group(2))
        spatial = tuple(int(v) for v in m.group(3).split("x")) if m.group(3) else ()
        if g < 1 or c % g or any(v < 1 for v in spatial):
            raise ValueError(f"groupnorm geometry {layout!r}: channels must split into groups, sizes >= 1")
        return cls(g, c, spatial, bool(m.group(4)))


def min_group_elements(candidate) -> int:
    """The fewest elements a group may have for this candidate: torch.nn.functional.group_norm
    refuses a group of one element ("Expected more than 1 value per channel when training"). The
    core's candidate has no field for a claim of one op; until it has, the claim is an attribute
    set on the registered candidate (kernels/groupnorm_builtins.py), read here."""
    return int(getattr(candidate, "min_group_elements", 1))


def geometry(case: Case) -> Geometry:
    geo = Geometry.parse(case.layout)
    if len(case.shape) != 2 or case.shape[1] != geo.features:
        raise ValueError(f"groupnorm case shape {case.shape} is not (N, {geo.features}) for geometry {case.layout}")
    return geo


def _rows(t: torch.Tensor, case: Case) -> torch.Tensor:
    """A tensor of the case as float64 (N, C, *spatial)."""
    geo = Geometry.parse(case.layout)
    return t.detach().to(F64).reshape(-1, geo.channels, *geo.spatial)


class GroupNormOp(Op):
    name = "groupnorm"
    variant_type = GroupNormVariant
    differentiable = ("x", "weight", "bias")
    row_tensors = ("x", "grad:y")  # (N, C * HW): a row is a sample
    # (x - mean) can be twice as large as x: its square must still fit, L times over
    edge_divisor = 8.0

    def params(self, variant: GroupNormVariant) -> tuple[str, ...]:
        return tuple(n for n in ("weight", "bias") if getattr(variant, n))

    def output_dtype(self, variant, case: Case) -> torch.dtype:
        return dtypes.to_torch(case.x_dtype)

    def edges(self, variant, case: Case, full_range: bool) -> tuple[float, float | None]:
        """(largest in-domain magnitude, magnitude of the probe past the edge or None), as the
        norms': the group's sum of L squares must fit float32, and rstd^3 (formed by the eager
        formula's backward) must stay normal."""
        x_max = dtypes.max_finite(dtypes.to_torch(case.x_dtype))
        if full_range:
            return x_max / 4, None
        t = torch.float32
        length = geometry(case).per_group
        edge = min(math.sqrt(dtypes.max_finite(t) / length) / self.edge_divisor,
                   dtypes.smallest_normal(t) ** (-1 / 3))
        limit = min(edge / 4, x_max / 4)
        beyond = min(edge * 4, x_max / 2)
        return limit, (beyond if beyond > edge else None)

    def domain(self, variant, case: Case, full_range: bool) -> float:
        return self.edges(variant, case, full_range)[0]

    def make_inputs(self, case: Case, variant, device: str) -> Tensors:
        geo = geometry(case)
        n = case.shape[0]
        xdt, pdt = dtypes.to_torch(case.x_dtype), dtypes.to_torch(case.param_dtype)
        limit, beyond = self.edges(variant, case, full_range=False)
        beyond = beyond or limit
        layout = "strided" if geo.strided else "contiguous"
        # the regimes act per group (a constant group, a zero group, an outlier per group, a group
        # with a large mean and a small spread): one group is one row of the fill
        groups = S.fill(case.x, (n * geo.groups, geo.per_group), xdt, S.generator(case.seed, 0), limit, beyond)
        out: Tensors = {"x": S.place(groups.reshape(n, geo.features), xdt, device, layout)}
        for i, name in enumerate(self.params(variant)):
            regime = case.w if name == "weight" else _bias_regime(case.w)
            out[name] = S.fill_param(regime, geo.channels, S.generator(case.seed, 1 + i)).to(pdt).to(device)
        out["grad:y"] = _grad_layout(S.fill_grad(case.dy, (n, geo.features), xdt, S.generator(case.seed, 4)), xdt,
                                     device, layout)
        return out

    def call(self, fn, inputs: Mapping[str, torch.Tensor], case: Case, variant) -> Tensors:
        from normgate.checks import WrongShape

        geo = Geometry.parse(case.layout)
        x = inputs["x"]
        x4 = x.view(x.shape[0], geo.channels, *geo.spatial)
        y = fn(x4, geo.groups, inputs.get("weight"), inputs.get("bias"), case.eps)
        if not isinstance(y, torch.Tensor):
            raise TypeError(f"expected one tensor (y), got a {type(y).__name__}")
        if tuple(y.shape) != tuple(x4.shape):
            raise WrongShape(f"y shape {tuple(y.shape)}, expected {tuple(x4.shape)}")
        return {"y": y.reshape(x.shape)}

    def reference(self, inputs, case: Case, variant, backward: bool) -> dict[str, Expected]:
        geo = geometry(case)
        xdt = dtypes.to_torch(case.x_dtype)
        internal = torch.float32
        eps = resolve_eps(case.eps, xdt)
        x = _rows(inputs["x"], case)
        p = {k: (None if inputs.get(k) is None else inputs[k].detach().to(F64)) for k in ("weight", "bias")}
        y, y_mag, stats = groupnorm_forward(x, p["weight"], p["bias"], geo.groups, eps)
        flat = inputs["x"].shape
        # the sum of squares can lose up to one smallest normal to underflow: rstd's relative
        # error grows by half of that over (var + eps), group by group (properties/norm.py)
        flush_g = 0.5 * dtypes.smallest_normal(internal) * stats.rstd.square()  # (N * G, 1)
        flush = flush_g.expand(-1, geo.per_group).reshape(flat)
        steps = geo.per_group + ELEMENTWISE_STEPS
        res = {"y": Expected(y.reshape(flat), y_mag.reshape(flat), steps, internal, flush, xdt)}
        if not backward:
            return res
        dy = _rows(inputs["grad:y"], case)
        dx, dw, db = groupnorm_backward(stats, p["weight"], dy, geo.groups, variant.bias, magnitude=False)
        dxm, dwm, dbm = groupnorm_backward(stats, p["weight"], dy, geo.groups, variant.bias, magnitude=True)
        res["dx"] = Expected(dx.reshape(flat), dxm.reshape(flat), steps, internal, flush, xdt)
        # a parameter's gradient sums over the N * HW positions of its channel; the per-group
        # relative terms are bounded by their largest value
        reduce_steps = flat[0] * geo.hw + steps
        rel = float(flush_g.max()) if flush_g.numel() else 0.0
        if variant.weight:
            res["dweight"] = Expected(dw, dwm, reduce_steps, internal, rel, inputs["weight"].dtype)
        if variant.bias:
            res["dbias"] = Expected(db, dbm, reduce_steps, internal, 0.0, inputs["bias"].dtype)
        return res

    def identities(self, inputs, got, case: Case, variant, rounding: float) -> list[Identity]:
        """dx of a group sums to 0, and sum(dx * xhat) = eps rstd^3 sum(g * xhat) over the group
        (as LayerNorm's row identities: mean(xhat) = 0, mean(xhat^2) = 1 - eps rstd^2), each
        bounded by the accuracy bound evaluated at the candidate's own dx (properties/norm.py,
        NormOp.identities, has the derivation)."""
        from normgate.tolerance import bound

        if "dx" not in got:
            return []
        geo = geometry(case)
        exp = self.reference(inputs, case, variant, backward=True)["dx"]
        xdt = dtypes.to_torch(case.x_dtype)
        eps = resolve_eps(case.eps, xdt)
        x = _rows(inputs["x"], case)
        _, _, stats = groupnorm_forward(x, None, None, geo.groups, eps)
        n_rows, length = stats.xhat.shape
        dy = _rows(inputs["grad:y"], case)
        w = inputs.get("weight")
        w_el = (w.detach().to(F64).reshape(1, -1, 1).expand(dy.shape[0], -1, geo.hw) if w is not None
                else torch.ones((1, 1, 1), dtype=F64))
        g = (dy.reshape(dy.shape[0], geo.channels, -1) * w_el).reshape(n_rows, length)
        dx = got["dx"].detach().to(F64).reshape(n_rows, length).to(exp.magnitude.device)
        err = 2 * bound(Expected(dx.abs().reshape(exp.value.shape), exp.magnitude, exp.steps, exp.internal,
                                 exp.intermediate, exp.dtype, exp.floor), rounding).reshape(n_rows, length)
        keep = torch.isfinite(err).all(-1) & torch.isfinite(dx).all(-1)
        u64 = dtypes.unit_roundoff(F64)
        r3 = eps * stats.rstd ** 3
        ones, zero = torch.ones_like(stats.rstd), torch.zeros_like(stats.rstd)
        directions = [("sum(dx)", ones, zero, zero, zero),
                      ("dx.xhat", stats.xhat, stats.xhat_mag, r3 * (g * stats.xhat).sum(-1, keepdim=True),
                       r3 * (g.abs() * stats.xhat_mag).sum(-1, keepdim=True))]
        out = []
        for name, v, v_err, target, target_mag in directions:
            v = v.expand_as(dx)
            measured = (dx * v).sum(-1)
            limit = (err * v.abs()).sum(-1) + 4 * (length + 8) * u64 * ((dx.abs() * v_err.expand_as(dx)).sum(-1)
                                                                         + target_mag.reshape(-1))
            miss = (measured - target.reshape(-1)).abs()
            ratio = torch.where(limit > 0, miss / limit, torch.where(miss > 0, float("inf"), 0.0))
            ratio = torch.nan_to_num(ratio, nan=float("inf"))[keep]
            if not ratio.numel():
                continue
            r = int(ratio.argmax())
            row = int(keep.nonzero()[r])
            out.append(Identity(name, float(ratio[r]),
                                f"sample {row // geo.groups}, group {row % geo.groups}: {float(measured[row]):.6g}, "
                                f"expected {float(target.reshape(-1)[row]):.6g} within {float(limit[row]):.3g} "
                                f"(error/bound {float(ratio[r]):.3g})"))
        return out

    def scalings(self, variant, case: Case) -> list[Scaling]:
        # y and dx are homogeneous of degree 1 in (weight, bias), dW and dB of degree 0
        if not variant.weight:
            return []
        return [Scaling("weight", self.params(variant), {"y": 1, "dx": 1, "dweight": 0, "dbias": 0})]

    def eager(self, variant):
        from normgate.kernels.groupnorm_builtins import group_norm_eager

        return group_norm_eager

    def cases(self, candidate, dtype: str, profile: Profile) -> st.SearchStrategy[Case]:
        variant = candidate.variant
        cap = profile.max_rows * profile.max_n  # elements of one case, as the norms cap M * N
        gpu = profile.name != "cpu"
        group_counts = (1, 2, 3, 4, 8, 16, 32) if gpu else (1, 2, 3, 4, 8)
        per_group = (1, 2, 3, 4, 5, 8, 10, 16, 20, 40) if gpu else (1, 2, 3, 4, 5, 8)
        sizes = (1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 31, 32, 33, 64) if gpu else (1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 31)
        batches = (1, 2, 3, 4, 5, 7, 8, 16, 33) if gpu else (1, 2, 3, 4, 5, 7, 8)
        edge = not candidate.full_range
        smallest_group = min_group_elements(candidate)

        @st.composite
        def draw_case(draw) -> Case:
            g = draw(st.sampled_from(group_counts))
            cg = draw(st.sampled_from(per_group))
            spatial = tuple(draw(st.lists(st.sampled_from(sizes), min_size=0, max_size=3)))
            c = g * max(cg, -(-smallest_group // math.prod(spatial)))
            n = draw(st.sampled_from(batches))
            # a clamp, not a filter, so shrinking is unchanged: drop trailing spatial dims, then
            # samples, until the case fits the profile
            while spatial and n * c * math.prod(spatial) > cap:
                spatial = spatial[:-1]
            n = max(1, min(n, cap // max(1, c * math.prod(spatial))))
            strided = candidate.strided and draw(st.booleans())
            geo = Geometry(g, c, spatial, strided)
            probe = Case(self.name, (n, geo.features), dtype, layout=geo.key())
            regimes = S.X_REGIMES
            if edge and self.edges(variant, probe, False)[1] is not None:
                regimes = regimes + (S.BEYOND,)
            return Case(
                op=self.name, shape=(n, geo.features), dtype=dtype,
                x=draw(st.sampled_from(regimes)),
                dy=draw(st.sampled_from(S.DY_REGIMES)) if candidate.backward else "normal",
                w=draw(st.sampled_from(S.W_REGIMES)) if self.params(variant) else "normal",
                eps=draw(st.sampled_from(candidate.eps_values) if candidate.eps_values is not None
                         else S.eps_values(candidate.eps_none)),
                layout=geo.key(),
                seed=draw(st.integers(0, 2**31 - 1)),
            )

        return draw_case()


GROUPNORM = register_op(GroupNormOp())
