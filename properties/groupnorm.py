"""GroupNorm as an op: x (N, C, *spatial), G groups of C / G adjacent channels, each (sample,
group) normalized over its L = (C / G) * prod(spatial) elements (biased variance, fp32 statistics),
then y = xhat * w[c] + b[c] with a per-channel affine.

Calling convention of a candidate, torch.nn.functional.group_norm's: ``fn(x, num_groups, weight,
bias, eps)`` returning y of x's shape and dtype; ``weight``/``bias`` are None when the variant has none.

How a case describes it: its shape is x's, (N, C, *spatial); its fields are the norms' value
regimes and eps, the number of groups, and a layout (``strided``: samples in a padded buffer,
stride(0) > C * HW). An item (the unit whose outputs must not depend on the rest of the batch) is a
sample: the batch-invariance check and the dispatch boundaries run samples in batches of other sizes.

Error model (normgate.tolerance), as LayerNorm's with a group for a row: y and dx depend on the
group's reductions of length L (steps L + 8); dW and dB sum over N * HW terms per channel on top
(N * HW + L + 8); the magnitudes come from the reference on absolute values
(references.groupnorm_backward), which covers a group with a large mean and a small spread.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from hypothesis import strategies as st

from normgate import dtypes
from normgate.case import Case, CaseField
from normgate.kernels.references import F64, groupnorm_backward, groupnorm_forward, resolve_eps
from normgate.op import Claim, Expected, Identity, Op, Profile, Scaling, Tensors, Variant, register_op

from . import strategies as S
from .norm import ELEMENTWISE_STEPS, GRAD_PAD, NORM_CLAIMS, _bias_regime, directional_identities

#: the norms' claims (strided: samples in a padded buffer; eps_none, eps_values, full_range), less
#: the row width, plus the smallest group a candidate takes
GROUPNORM_CLAIMS: dict[str, Claim] = {
    **{k: v for k, v in NORM_CLAIMS.items() if k != "max_n"},
    "min_group_elements": Claim(1, "the fewest elements a group may have (torch.nn.functional.group_norm "
                                   "refuses a group of one)", lambda v, name: _at_least_one(v, name)),
}
GROUPNORM_CASE_FIELDS = (
    CaseField("x", "normal"),  # value regime of the activations, per group
    CaseField("dy", "normal"),  # of the upstream gradients
    CaseField("w", "normal"),  # of the per-channel parameters
    CaseField("eps", 1e-5, kind="eps"),
    CaseField("groups", 1, kind="int"),
    CaseField("layout", "contiguous", bare=True),  # or "strided": samples padded, stride(0) > C * HW
)
#: the outputs and gradients that are one per sample (batch invariance compares them)
SAMPLE_OUTPUTS = ("y", "dx")
#: row padding of a sample in the strided layout (the upstream gradient's is norm.GRAD_PAD)
X_PAD = 3


def _at_least_one(v, name: str) -> int:
    if not isinstance(v, int) or v < 1:
        raise ValueError(f"candidate {name!r} declares min_group_elements={v!r}: it must be an int >= 1")
    return v


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


def geometry(case: Case) -> Geometry:
    if len(case.shape) < 2 or case.groups < 1 or case.shape[1] % case.groups:
        raise ValueError(f"groupnorm case shape {case.shape} with {case.groups} groups: expected (N, C, *spatial) "
                         "with C a multiple of the groups")
    return Geometry(case.groups, case.shape[1], tuple(case.shape[2:]))


def _padded(values: torch.Tensor, shape: tuple[int, ...], dtype: torch.dtype, device: str, pad: int) -> torch.Tensor:
    """(N, C, *spatial) values, each sample followed by ``pad`` NaNs in one buffer (pad 0: contiguous)."""
    t = values.reshape(shape[0], -1).to(dtype)
    if not pad:
        return t.to(device).reshape(shape).contiguous()
    buf = torch.full((shape[0], t.shape[1] + pad), float("nan"), dtype=dtype, device=device)
    buf[:, :t.shape[1]] = t.to(device)
    return buf[:, :t.shape[1]].view(shape)


def _rows(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to(F64)


class GroupNormOp(Op):
    name = "groupnorm"
    variant_type = GroupNormVariant
    differentiable = ("x", "weight", "bias")
    row_tensors = ("x", "grad:y")  # one per sample
    claims = GROUPNORM_CLAIMS
    gradients = ("dx", "dweight", "dbias")
    gradient_aliases = {"dw": "dweight", "db": "dbias"}
    required_gradients = ("dx",)
    case_fields = GROUPNORM_CASE_FIELDS
    regime_field = "x"
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

    # ---- shapes: an item is a sample ----------------------------------------------------------
    def batch(self, case: Case) -> int:
        return case.shape[0]

    def item_elements(self, case: Case) -> int:
        return math.prod(case.shape[1:])

    def with_batch(self, case: Case, items: int) -> Case:
        return dataclasses.replace(case, shape=(items, *case.shape[1:]))

    def take(self, inputs, case: Case, lo: int, hi: int) -> Tensors:
        return {k: (v[lo:hi] if k in self.row_tensors else v) for k, v in inputs.items()}

    def items(self, name: str, t: torch.Tensor, case: Case) -> torch.Tensor | None:
        if name not in SAMPLE_OUTPUTS or t.numel() != math.prod(case.shape):
            return None
        return t.reshape(case.shape[0], -1)

    def output_shape(self, name: str, inputs, case: Case) -> tuple[int, ...]:
        if name in SAMPLE_OUTPUTS:
            return tuple(inputs["x"].shape)
        return (case.shape[1],)  # a per-channel parameter's gradient

    def make_inputs(self, case: Case, variant, device: str) -> Tensors:
        geo = geometry(case)
        n = case.shape[0]
        xdt, pdt = dtypes.to_torch(case.x_dtype), dtypes.to_torch(case.param_dtype)
        limit, beyond = self.edges(variant, case, full_range=False)
        beyond = beyond or limit
        strided = case.layout == "strided"
        # the regimes act per group (a constant group, a zero group, an outlier per group, a group
        # with a large mean and a small spread): one group is one row of the fill
        groups = S.fill(case.x, (n * geo.groups, geo.per_group), xdt, S.generator(case.seed, 0), limit, beyond)
        out: Tensors = {"x": _padded(groups, case.shape, xdt, device, X_PAD if strided else 0)}
        for i, name in enumerate(self.params(variant)):
            regime = case.w if name == "weight" else _bias_regime(case.w)
            out[name] = S.fill_param(regime, geo.channels, S.generator(case.seed, 1 + i)).to(pdt).to(device)
        # an upstream gradient arrives from elsewhere with a layout of its own (properties/norm.py)
        dy = S.fill_grad(case.dy, (n, geo.features), xdt, S.generator(case.seed, 4))
        out["grad:y"] = _padded(dy, case.shape, xdt, device, GRAD_PAD if strided else 0)
        return out

    def call(self, fn, inputs: Mapping[str, torch.Tensor], case: Case, variant) -> Tensors:
        y = fn(inputs["x"], case.groups, inputs.get("weight"), inputs.get("bias"), case.eps)
        if not isinstance(y, torch.Tensor):
            raise TypeError(f"expected one tensor (y), got a {type(y).__name__}")
        return {"y": y}

    def reference(self, inputs, case: Case, variant, backward: bool) -> dict[str, Expected]:
        geo = geometry(case)
        xdt = dtypes.to_torch(case.x_dtype)
        internal = torch.float32
        eps = resolve_eps(case.eps, xdt)
        x = _rows(inputs["x"])
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
        dy = _rows(inputs["grad:y"])
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
        x = _rows(inputs["x"])
        _, _, stats = groupnorm_forward(x, None, None, geo.groups, eps)
        n_rows, length = stats.xhat.shape
        dy = _rows(inputs["grad:y"])
        w = inputs.get("weight")
        w_el = (w.detach().to(F64).reshape(1, -1, 1).expand(dy.shape[0], -1, geo.hw) if w is not None
                else torch.ones((1, 1, 1), dtype=F64, device=dy.device))
        g = (dy.reshape(dy.shape[0], geo.channels, -1) * w_el).reshape(n_rows, length)
        dx = got["dx"].detach().to(F64).reshape(n_rows, length).to(exp.magnitude.device)
        err = 2 * bound(Expected(dx.abs().reshape(exp.value.shape), exp.magnitude, exp.steps, exp.internal,
                                 exp.intermediate, exp.dtype, exp.floor), rounding).reshape(n_rows, length)
        keep = torch.isfinite(err).all(-1) & torch.isfinite(dx).all(-1)
        r3 = eps * stats.rstd ** 3
        ones, zero = torch.ones_like(stats.rstd), torch.zeros_like(stats.rstd)
        directions = [("sum(dx)", ones, zero, zero, zero),
                      ("dx.xhat", stats.xhat, stats.xhat_mag, r3 * (g * stats.xhat).sum(-1, keepdim=True),
                       r3 * (g.abs() * stats.xhat_mag).sum(-1, keepdim=True))]
        return directional_identities(dx, err, keep, directions,
                                      lambda row: f"sample {row // geo.groups}, group {row % geo.groups}")

    def scalings(self, variant, case: Case) -> list[Scaling]:
        # y and dx are homogeneous of degree 1 in (weight, bias), dW and dB of degree 0
        if not variant.weight:
            return []
        return [Scaling("weight", self.params(variant), {"y": 1, "dx": 1, "dweight": 0, "dbias": 0})]

    def eager(self, variant):
        from normgate.kernels.baselines import group_norm_eager

        return group_norm_eager

    def cases(self, candidate, dtype: str, profile: Profile) -> st.SearchStrategy[Case]:
        variant = candidate.variant
        cap = profile.elements
        gpu = profile.name != "cpu"
        group_counts = (1, 2, 3, 4, 8, 16, 32) if gpu else (1, 2, 3, 4, 8)
        per_group = (1, 2, 3, 4, 5, 8, 10, 16, 20, 40) if gpu else (1, 2, 3, 4, 5, 8)
        sizes = (1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 31, 32, 33, 64) if gpu else (1, 2, 3, 4, 5, 7, 8, 9, 16, 17, 31)
        batches = (1, 2, 3, 4, 5, 7, 8, 16, 33) if gpu else (1, 2, 3, 4, 5, 7, 8)
        spatials = None  # free: up to three dims drawn from ``sizes``
        if gpu and profile.widths_seed is not None:
            # A JIT-compiled kernel builds a binary per group geometry (its block sizes and the
            # integers it specializes: C, HW, Cg equal to 1 or divisible by 16), seconds each on a
            # GPU (op.Profile.widths_seed). A task draws from a few geometries chosen by the seed,
            # the same for every check of a kernel and dtype; each keeps 1 (the edge case) and one
            # odd and one even choice. The batch, the regimes and the layout stay free.
            rng = random.Random(profile.widths_seed)
            group_counts = tuple(sorted({1, rng.choice((2, 3, 4, 8)), rng.choice((16, 32))}))
            per_group = tuple(sorted({1, rng.choice((3, 5)), rng.choice((2, 4, 8, 10, 16, 20, 40))}))
            odd, even = rng.choice((3, 5, 7, 9, 17, 31, 33)), rng.choice((2, 4, 8, 16, 32, 64))
            spatials = ((), (1,), (odd,), (even, odd), (rng.choice((32, 64)),) * 2)
        edge = not candidate.full_range
        smallest_group = candidate.min_group_elements
        layouts = ("contiguous", "strided") if candidate.strided else ("contiguous",)

        @st.composite
        def draw_case(draw) -> Case:
            g = draw(st.sampled_from(group_counts))
            cg = draw(st.sampled_from(per_group))
            spatial = (draw(st.sampled_from(spatials)) if spatials is not None
                       else tuple(draw(st.lists(st.sampled_from(sizes), min_size=0, max_size=3))))
            c = g * max(cg, -(-smallest_group // math.prod(spatial)))
            n = draw(st.sampled_from(batches))
            # a clamp, not a filter, so shrinking is unchanged: drop trailing spatial dims, then
            # samples, until the case fits the profile
            while spatial and n * c * math.prod(spatial) > cap:
                spatial = spatial[:-1]
            c = g * max(c // g, -(-smallest_group // math.prod(spatial)))
            n = max(1, min(n, cap // max(1, c * math.prod(spatial))))
            shape = (n, c, *spatial)
            probe = Case(self.name, shape, dtype, groups=g)
            regimes = S.X_REGIMES
            if edge and self.edges(variant, probe, False)[1] is not None:
                regimes = regimes + (S.BEYOND,)
            return Case(
                self.name, shape, dtype,
                x=draw(st.sampled_from(regimes)),
                dy=draw(st.sampled_from(S.DY_REGIMES)) if candidate.backward else "normal",
                w=draw(st.sampled_from(S.W_REGIMES)) if self.params(variant) else "normal",
                eps=draw(st.sampled_from(candidate.eps_values) if candidate.eps_values is not None
                         else S.eps_values(candidate.eps_none)),
                groups=g,
                layout=draw(st.sampled_from(layouts)),
                seed=draw(st.integers(0, 2**31 - 1)),
            )

        return draw_case()


GROUPNORM = register_op(GroupNormOp())
