"""What RMSNorm and LayerNorm share: inputs, the fused residual add, casting modes, the domain.

Casting modes (as in Liger-Kernel), for both ops:
- ``gemma``: everything in float32, one rounding to the output dtype at the end;
- ``llama``: the statistics and the normalized value in float32, the normalized value rounded to
  the input dtype, then the affine step and a second rounding (the variant's own double rounding);
- ``none``: computed in the input dtype.

Mixed-dtype rule (``out``): ``input`` means every output has the activation dtype (PyTorch's
``F.rms_norm``/``F.layer_norm``, Gemma, our kernels); ``promote`` means
``torch.promote_types(x.dtype, weight.dtype)`` (HF Llama's ``weight * h.to(input_dtype)``).
Gradients always have the dtype of the input they belong to.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from hypothesis import strategies as st

from normgate import dtypes, features
from normgate.case import Case, CaseField
from normgate.kernels.references import F64, fused_add, resolve_eps
from normgate.op import Claim, Expected, Identity, Op, Profile, Scaling, Tensors, Variant
from normgate.tolerance import bound

from . import boundaries as B
from . import strategies as S

CASTINGS = ("llama", "gemma", "none")
#: ``out``: a rule (the activation dtype, or promoted with the parameters') or a dtype the caller
#: chose (flash-attention's ``out_dtype``): y has that dtype whatever the inputs'
OUT_RULES = ("input", "promote")
OUT_DTYPES = ("fp32", "bf16", "fp16")
#: ``residual_mode`` of a fused residual add h = x + residual:
#: - ``rounded``: h rounded to x's dtype, and that rounded h normalized (HF, Liger, vLLM);
#: - ``unrounded``: the float32 sum normalized, h returned rounded to x's dtype (flash-attention's
#:   default: its kernel adds in float32 and normalizes before it stores h);
#: - ``fp32``: an fp32 residual stream: the incoming residual is float32, h is returned in float32
#:   (flash-attention's ``residual_in_fp32=True``).
RESIDUAL_MODES = ("rounded", "unrounded", "fp32")
#: roundings outside the reductions (squares, rsqrt, products, the affine step)
ELEMENTWISE_STEPS = 8


def _eps_values(v, name: str) -> tuple[float | None, ...] | None:
    if v is None:
        return None
    if not tuple(v):
        raise ValueError(f"candidate {name!r} declares eps_values=(): give at least one eps it accepts")
    return tuple(v)


def _max_n(v, name: str) -> int | dict[str, int] | None:
    if isinstance(v, dict):
        for k, n in v.items():
            try:
                dtypes.split_pair(k)
            except ValueError as e:
                raise ValueError(f"candidate {name!r} declares max_n for dtype {k!r}: {e}") from None
            if not isinstance(n, int) or n < 1:
                raise ValueError(f"candidate {name!r} declares max_n[{k!r}]={n!r}: it must be at least 1")
        return dict(sorted(v.items()))
    if v is not None and v < 1:
        raise ValueError(f"candidate {name!r} declares max_n={v}: it must be at least 1")
    return v


#: what a norm kernel claims beyond the core's declarations (``register(..., max_n=4096)``); the
#: case strategies read them, and GroupNorm's shares them
NORM_CLAIMS: dict[str, Claim] = {
    "strided": Claim(True, "accepts rows whose stride is not N"),
    "eps_none": Claim(True, "accepts eps=None (PyTorch's \"machine epsilon\" default)"),
    "full_range": Claim(False, "claims every finite input (e.g. a scaled sum of squares)"),
    "eps_values": Claim(None, "the only eps it takes (a module's fixed eps); None: any", _eps_values),
    # flash-attention's 64 KB per row: {"fp32": 16384, "bf16": 32768}, by the activation dtype or
    # the whole dtype string ("bf16/fp32")
    "max_n": Claim(None, "the widest row it takes (a documented limit); a mapping gives it per dtype", _max_n),
}
#: what a norm's case carries besides op, shape, dtype and seed, in the order of its key
#: (``rmsnorm,4x8,bf16,x=normal,dy=normal,w=normal,eps=1e-06,contiguous,seed=0``)
NORM_CASE_FIELDS = (
    CaseField("x", "normal"),  # value regime of the activations
    CaseField("dy", "normal"),  # of the upstream gradients
    CaseField("w", "normal"),  # of the parameters
    CaseField("eps", 1e-6, kind="eps"),
    CaseField("layout", "contiguous", bare=True),  # or "strided": rows padded, stride[-2] > N
)
#: the outputs and gradients that are one row per row of x (batch invariance compares them)
ROW_OUTPUTS = ("y", "h", "dx", "dresidual")
#: the gradients a norm's backward provides; "dx" is the row gradient (of x, and of the residual in a
#: fused add, which receives the same values)
NORM_GRADIENTS = ("dx", "dweight", "dbias")
NORM_GRADIENT_ALIASES = {"dw": "dweight", "db": "dbias", "dresidual": "dx"}


def rows_of(case: Case) -> int:
    """A norm case's rows: every dim of the activation but the last, the normalized one."""
    return math.prod(case.shape[:-1])


def width(case: Case) -> int:
    """N, the normalized (last) dim."""
    return case.shape[-1]


def with_rows(case: Case, rows: int) -> Case:
    """The same case as ``rows`` rows of N (a batch invariance slice, a sampled reference)."""
    return dataclasses.replace(case, shape=(rows, width(case)))


def max_n_for(candidate, dtype: str) -> int | None:
    """The widest row ``candidate`` takes in ``dtype`` (a dtype string such as "bf16/fp32"), or None."""
    max_n = candidate.max_n
    if not isinstance(max_n, dict):
        return max_n
    if dtype in max_n:
        return max_n[dtype]
    return max_n.get(dtypes.split_pair(dtype)[0])


@dataclass(frozen=True)
class NormVariant(Variant):
    def __post_init__(self) -> None:
        if self.casting not in CASTINGS:
            raise ValueError(f"casting must be one of {CASTINGS}, got {self.casting!r}")
        if self.out not in OUT_RULES + OUT_DTYPES:
            raise ValueError(f"out must be one of {OUT_RULES} or a dtype the caller chose, one of {OUT_DTYPES}; "
                             f"got {self.out!r}")
        if self.residual_mode not in RESIDUAL_MODES:
            raise ValueError(f"residual_mode must be one of {RESIDUAL_MODES}, got {self.residual_mode!r}")
        if self.residual_mode != "rounded" and not self.residual:
            raise ValueError(f"residual_mode={self.residual_mode!r} describes a fused residual add: "
                             "it needs residual=True")
        if self.residual_mode != "rounded" and self.casting == "none":
            raise ValueError(f"residual_mode={self.residual_mode!r} keeps the sum in float32, which casting='none' "
                             "(computed in the input dtype) does not")


class NormOp(Op):
    differentiable = ("x", "weight", "bias", "residual")
    #: inputs and upstream gradients that are rows x N (``take`` slices them; parameters are shared)
    row_tensors = ("x", "residual", "grad:y", "grad:h")
    claims = NORM_CLAIMS
    gradients = NORM_GRADIENTS
    gradient_aliases = NORM_GRADIENT_ALIASES
    required_gradients = ("dx",)
    boundary_axes = ("n", "m")  # widths (properties/boundaries.py) and batch sizes (harness/boundaries.py)
    case_fields = NORM_CASE_FIELDS
    regime_field = "x"
    #: how many times the largest |h| may sit in the squared terms before the sum overflows
    edge_divisor = 4.0

    # ---- what differs between the ops -------------------------------------------------------
    def params(self, variant) -> tuple[str, ...]:
        raise NotImplementedError

    def param_offset(self, variant) -> float:
        return 0.0

    def exact(self, h, p: Mapping[str, torch.Tensor | None], eps: float, variant):
        """(y, magnitude of y, stats) in float64."""
        raise NotImplementedError

    def exact_backward(self, stats, p, dy, variant, magnitude: bool) -> dict[str, torch.Tensor | None]:
        raise NotImplementedError

    # ---- shared -----------------------------------------------------------------------------
    def internal(self, variant, case: Case) -> torch.dtype:
        return dtypes.to_torch(case.x_dtype) if variant.casting == "none" else torch.float32

    def output_dtype(self, variant, case: Case) -> torch.dtype:
        x, p = dtypes.to_torch(case.x_dtype), dtypes.to_torch(case.param_dtype)
        if variant.out in OUT_DTYPES:
            return dtypes.to_torch(variant.out)
        if variant.out == "promote" and self.params(variant):
            return torch.promote_types(x, p)
        return x

    def residual_dtype(self, variant, case: Case) -> torch.dtype:
        """The dtype of the incoming residual and of h: float32 for an fp32 residual stream."""
        return torch.float32 if variant.residual_mode == "fp32" else dtypes.to_torch(case.x_dtype)

    def edges(self, variant, case: Case, full_range: bool) -> tuple[float, float | None]:
        """(largest in-domain magnitude, magnitude of the probe past the edge or None)."""
        x_max = dtypes.max_finite(dtypes.to_torch(case.x_dtype))
        if full_range:
            return x_max / 4, None
        # The sum of N squares must fit the internal dtype: rms(h) < sqrt(max / N). The backward
        # of the eager formula (autograd through rsqrt) forms rstd^3, which must stay normal:
        # rms(h) < smallest_normal^(-1/3) (4.4e12 in float32). Correct kernels, PyTorch's own
        # included, lose dx past that, so it is the edge of every variant's claimed domain.
        t = self.internal(variant, case)
        edge = min(math.sqrt(dtypes.max_finite(t) / width(case)) / self.edge_divisor,
                   dtypes.smallest_normal(t) ** (-1 / 3))
        limit = min(edge / 4, x_max / 4)
        beyond = min(edge * 4, x_max / 2)
        return limit, (beyond if beyond > edge else None)

    def domain(self, variant, case: Case, full_range: bool) -> float:
        return self.edges(variant, case, full_range)[0]

    # ---- shapes: a norm's item is a row, its outputs viewed as rows x N ---------------------
    def batch(self, case: Case) -> int:
        return rows_of(case)

    def item_elements(self, case: Case) -> int:
        return width(case)

    def with_batch(self, case: Case, items: int) -> Case:
        return with_rows(case, items)

    def take(self, inputs, case: Case, lo: int, hi: int) -> Tensors:
        return {k: (v.reshape(-1, width(case))[lo:hi] if k in self.row_tensors else v) for k, v in inputs.items()}

    def items(self, name: str, t: torch.Tensor, case: Case) -> torch.Tensor | None:
        if name not in ROW_OUTPUTS or t.numel() != rows_of(case) * width(case):
            return None
        return t.reshape(-1, width(case))

    def output_shape(self, name: str, inputs, case: Case) -> tuple[int, ...]:
        # a gradient has its input's shape (a parameter's is (N,)); an output has the activation's
        src = inputs.get(name[1:]) if name.startswith("d") else None
        return tuple(src.shape) if src is not None else tuple(case.shape)

    def make_inputs(self, case: Case, variant, device: str) -> Tensors:
        xdt, pdt = dtypes.to_torch(case.x_dtype), dtypes.to_torch(case.param_dtype)
        limit, beyond = self.edges(variant, case, full_range=False)
        beyond = beyond or limit
        out: Tensors = {"x": S.place(S.fill(case.x, case.shape, xdt, S.generator(case.seed, 0, device), limit, beyond),
                                     xdt, device, case.layout)}
        for i, name in enumerate(self.params(variant)):
            regime = case.w if name == "weight" else _bias_regime(case.w)
            offset = self.param_offset(variant) if name == "weight" else 0.0
            out[name] = S.fill_param(regime, width(case), S.generator(case.seed, 1 + i), offset).to(pdt).to(device)
        if variant.residual:
            # an fp32 residual stream: the residual arrives in float32 (drawn at x's scale), h leaves in it
            rdt = self.residual_dtype(variant, case)
            out["residual"] = S.place(S.fill(case.x, case.shape, xdt, S.generator(case.seed, 3, device), limit, beyond),
                                      rdt, device, case.layout)
            out["grad:h"] = _grad_layout(S.fill_grad(case.dy, case.shape, rdt, S.generator(case.seed, 5, device)), rdt,
                                         device, case.layout)
        ydt = self.output_dtype(variant, case)
        dy = S.fill_grad(case.dy, case.shape, ydt, S.generator(case.seed, 4, device))
        out["grad:y"] = _grad_layout(dy, ydt, device, case.layout)
        return out

    def outputs(self, variant) -> tuple[str, ...]:
        return ("y", "h") if variant.residual else ("y",)

    def wrap_outputs(self, result, variant) -> Tensors:
        names = self.outputs(variant)
        if len(names) == 1:
            if isinstance(result, (tuple, list)):
                raise TypeError(f"expected one tensor (y), got a {type(result).__name__} of {len(result)}")
            return {"y": result}
        if not isinstance(result, (tuple, list)) or len(result) != 2:
            raise TypeError("a fused residual variant must return (y, h), got "
                            f"{type(result).__name__}")
        return dict(zip(names, result, strict=True))

    def reference(self, inputs, case: Case, variant, backward: bool) -> dict[str, Expected]:
        if rows_of(case) * width(case) > B.SAMPLE_ABOVE:
            return self._sampled_reference(inputs, case, variant, backward)
        return self._reference(inputs, case, variant, backward)

    def _rows_of(self, inputs, n: int, idx: torch.Tensor) -> Tensors:
        return {k: (v.reshape(-1, n)[idx.to(v.device)] if k in self.row_tensors else v) for k, v in inputs.items()}

    def _sampled_reference(self, inputs, case: Case, variant, backward: bool) -> dict[str, Expected]:
        """A huge case: row outputs on sampled rows (properties/boundaries.sample_rows), parameter
        gradients over every row in chunks, so no float64 copy of the whole case is ever held."""
        m, n = rows_of(case), width(case)
        idx = torch.tensor(B.sample_rows(m, n, case.seed))
        res = self._reference(self._rows_of(inputs, n, idx), with_rows(case, len(idx)), variant, backward)
        for name in ROW_OUTPUTS:
            if name in res:
                res[name].rows, res[name].of_items = idx, m
        params = [("d" + p) for p in self.params(variant)] if backward else []
        if not params:
            return res
        chunk = max(1, B.SAMPLE_ABOVE // (4 * n))
        sums: dict[str, Expected] = {}
        for lo in range(0, m, chunk):
            part = torch.arange(lo, min(m, lo + chunk))
            r = self._reference(self._rows_of(inputs, n, part), with_rows(case, len(part)), variant, True)
            for name in params:
                e = r[name]
                if name not in sums:
                    sums[name] = e
                    continue
                s = sums[name]
                s.value, s.magnitude = s.value + e.value, s.magnitude + e.magnitude
                s.floor = s.floor + e.floor  # half_sub * (sum |dy| + rows): additive over chunks
                s.intermediate = max(float(s.intermediate), float(e.intermediate))
                if e.defined is not None:
                    s.defined = e.defined if s.defined is None else s.defined & e.defined
        for name, e in sums.items():
            e.steps = m + e.steps - min(m, chunk)  # the reduction runs over all m rows, not the first chunk's
            res[name] = e
        return res

    def _reference(self, inputs, case: Case, variant, backward: bool) -> dict[str, Expected]:
        n = width(case)
        xdt = dtypes.to_torch(case.x_dtype)
        internal = self.internal(variant, case)
        eps = resolve_eps(case.eps, xdt)

        def rows(t):
            return None if t is None else t.detach().to(F64).reshape(-1, n)

        p = {k: (None if inputs.get(k) is None else inputs[k].detach().to(F64)) for k in ("weight", "bias")}
        h = fused_add(rows(inputs["x"]), rows(inputs.get("residual")), xdt, variant.residual_mode)
        y, y_mag, stats = self.exact(h, p, eps, variant)
        # The sum of squares can also lose up to one smallest-normal of the internal dtype to
        # underflow (flushed or subnormal squares): rstd's relative error grows by half of that
        # over (mean + eps), row by row. Negligible in float32; dominant for fp16-internal
        # variants on 1e-4-scale rows, which is exactly where those variants are inaccurate.
        flush = 0.5 * dtypes.smallest_normal(internal) * stats.rstd.square()
        # llama's intermediate rounding of the normalized value (forward) and of the gradient
        # reaching it (backward) to the input dtype: u relative, half a subnormal spacing absolute.
        # ``none`` rounds xhat to the input dtype too: its relative part is in the steps (the
        # internal dtype is the input's), the absolute part where xhat lands among subnormals is not.
        llama = variant.casting == "llama"
        mid = dtypes.unit_roundoff(xdt) if llama else 0.0
        rounds_xhat = variant.casting in ("llama", "none")
        half_sub = dtypes.smallest_normal(xdt) * dtypes.unit_roundoff(xdt) if rounds_xhat else 0.0
        w = p.get("weight")
        coef = (abs(self.param_offset(variant)) + w.abs()) if w is not None else 1.0
        steps = n + ELEMENTWISE_STEPS
        # The unrounded and fp32 residual modes normalize s' = fl32(x + residual), within u_32 |s|
        # of the exact sum s the reference normalizes. A relative perturbation u of every element
        # of h moves xhat by at most u |xhat| and rstd by at most u rstd (mean(h^2) moves by 2u
        # relative, its root by u), so y, dx and dW move by at most 2 u_32 times their magnitudes
        # (LayerNorm: h - mean moves by u (|h| + mean|h|), which xhat's magnitude already is):
        # two more steps in float32. The rounded mode's sum is exact before its mandated rounding.
        unrounded = variant.residual and variant.residual_mode != "rounded"
        steps += 2 if unrounded else 0
        out_dt = self.output_dtype(variant, case)

        # Row tensors are compared as (rows, N); the check reshapes the candidate's outputs.
        def exp(value, mag, steps, dtype, intermediate, floor=0.0):
            return Expected(value, mag, steps, internal, intermediate, dtype, floor)

        res = {"y": exp(y, y_mag, steps, out_dt, mid + flush, half_sub * coef)}
        if variant.residual:
            # rounded: the exact sum rounded once, to x's dtype (h is that rounded value itself);
            # unrounded: fl32(x + residual) rounded again to x's dtype, a double rounding: one u_32 step
            # before the final half ULP; fp32: the exact sum rounded once, to float32
            rdt = self.residual_dtype(variant, case)
            res["h"] = Expected(h, h.abs(), 1 if variant.residual_mode == "unrounded" else 0, torch.float32, 0.0,
                                rdt if variant.residual_mode == "fp32" else xdt)
        if not backward:
            return res
        dy = rows(inputs["grad:y"])
        g = self.exact_backward(stats, p, dy, variant, magnitude=False)
        gm = self.exact_backward(stats, p, dy, variant, magnitude=True)
        dx, dx_mag = g["dx"], gm["dx"]
        # backward of llama: the gradient reaching the rounded xhat (dy * w) is itself rounded
        # to the input dtype, then multiplied by xhat's rounding for dW: two roundings per term
        mid = 2 * mid
        dx_mid, dx_floor = mid + flush, 2 * half_sub * stats.rstd
        x_max = dtypes.max_finite(xdt)
        defined = dw_defined = None
        if llama:
            # ... and where those roundings overflow the input dtype the variant gives inf - inf
            defined = ((dy.abs() * coef) <= x_max).all(-1, keepdim=True).expand_as(dy)
            dw_defined = ((dy.abs() * stats.xhat.abs()) <= x_max).all(0)
        dx_steps = steps
        if variant.residual and not unrounded:
            # Autograd hands the norm's dx back in the input dtype before adding the residual
            # branch's gradient: one more rounding of dx_norm, which composed kernels cannot avoid.
            dh = rows(inputs["grad:h"])
            dx, dx_mag = dx + dh, dx_mag + dh.abs()
            dx_mid = dx_mid + dtypes.unit_roundoff(xdt)
            dx_floor = dx_floor + dtypes.smallest_normal(xdt) * dtypes.unit_roundoff(xdt)
            fits = g["dx"].abs() <= x_max
            defined = fits if defined is None else defined & fits
        elif variant.residual:
            # the sum is float32 (h is the float32 s, or s rounded on its way out): the norm's dx
            # and dh meet in float32, one more u_32 step, and nothing is rounded to x's dtype first
            dh = rows(inputs["grad:h"])
            dx, dx_mag = dx + dh, dx_mag + dh.abs()
            dx_steps += 1
        res["dx"] = exp(dx, dx_mag, dx_steps, xdt, dx_mid, dx_floor)
        res["dx"].defined = defined
        if variant.residual:
            res["dresidual"] = exp(dx, dx_mag, dx_steps, self.residual_dtype(variant, case), dx_mid, dx_floor)
            res["dresidual"].defined = defined
        m = dy.shape[0]
        for name in self.params(variant):
            pdt = inputs[name].dtype
            # A parameter's gradient sums over all M rows; the relative terms are per row, so
            # their largest value bounds the whole sum.
            is_w = name == "weight"
            rel = mid + float(flush.max()) if is_w and flush.numel() else 0.0
            # xhat's rounding scaled by |dy|, and each product dy * xhat rounded on its own
            floor = half_sub * (dy.abs().sum(0) + m) if is_w else 0.0
            res["d" + name] = Expected(g["d" + name], gm["d" + name], m + steps, internal, rel, pdt, floor,
                                       dw_defined if is_w else None)
        return res

    # ---- reference-free identities (the ``identities`` check) --------------------------------
    def row_directions(self, stats, g: torch.Tensor, eps: float) -> list[tuple[str, torch.Tensor, torch.Tensor,
                                                                             torch.Tensor, torch.Tensor]]:
        """Per op: (name, v, |error of v| scale, target, magnitude of target) such that the exact dx
        of the norm satisfies sum_j dx_j v_j = target in every row (float64, rows x N or rows x 1)."""
        raise NotImplementedError

    def identities(self, inputs, got, case: Case, variant, rounding: float) -> list[Identity]:
        """The row identities of dx, each bounded by the accuracy check's error model.

        If the exact dx satisfies sum_j dx_j v_j = T in a row, the candidate's dx' satisfies
        |sum_j dx'_j v_j - T| <= sum_j |dx'_j - dx_j| |v_j| <= sum_j b_j |v_j|, where b_j bounds
        the candidate's error at element j: the accuracy bound (tolerance.bound: n * u * the
        magnitude, the variant's intermediate roundings, the final rounding) evaluated at the
        candidate's own value, doubled, since the ULP there can be half the ULP at the exact value.
        Only the error model's magnitudes are used, never the reference value. On top, the sum is
        taken in float64 from float64 v and T, with relative errors of (N + 8) u_64 on their
        magnitudes: 4 (N + 8) u_64 (sum |dx'_j| |v|_j + |T|) covers them with room."""
        if "dx" not in got:
            return []
        n = width(case)
        xdt = dtypes.to_torch(case.x_dtype)
        eps = resolve_eps(case.eps, xdt)
        exp = self.reference(inputs, case, variant, backward=True)["dx"]
        got = dict(got)
        if exp.rows is not None:  # a huge case: the rows the error model covers
            inputs = self._rows_of(inputs, n, exp.rows)
            got["dx"] = exp.pick(got["dx"])

        def rows(t):
            return None if t is None else t.detach().to(F64).reshape(-1, n)

        p = {k: (None if inputs.get(k) is None else inputs[k].detach().to(F64)) for k in ("weight", "bias")}
        h = fused_add(rows(inputs["x"]), rows(inputs.get("residual")), xdt, variant.residual_mode)
        _, _, stats = self.exact(h, p, eps, variant)
        w = p.get("weight")
        g = rows(inputs["grad:y"]) * (self.param_offset(variant) + w if w is not None else 1.0)
        dx = rows(got["dx"]).to(exp.magnitude.device)
        # the bound at the candidate's own dx, the whole of it: its final rounding is to the ULP of
        # dx_norm + dh, which can be far coarser than dx_norm's own where dh dominates
        err = 2 * bound(Expected(dx.abs(), exp.magnitude, exp.steps, exp.internal, exp.intermediate, exp.dtype,
                                 exp.floor), rounding)
        if variant.residual:
            dx = dx - rows(inputs["grad:h"]).to(dx.device)  # the norm's own part; dx' - dh errs as dx' does
        # rows with a non-finite dx are the contract check's to judge (against the reference), not
        # an identity's: an overflow to inf in a narrow dtype has no finite sum to compare
        keep = torch.isfinite(err).all(-1) & torch.isfinite(dx).all(-1)
        if exp.defined is not None:
            keep &= exp.defined.expand_as(dx).all(-1)
        return directional_identities(dx, err, keep, self.row_directions(stats, g, eps), lambda row: f"row {row}")

    def scalings(self, variant, case: Case) -> list[Scaling]:
        # y and dx are homogeneous of degree 1 in (weight, bias), dW and dB of degree 0, h of 0.
        # With a fused residual, dx = dx_norm + dh: dh (the gradient reaching h) is scaled too.
        # Not with a weight offset: (offset + w) does not scale with w.
        params = self.params(variant)
        if "weight" not in params or self.param_offset(variant) != 0:
            return []
        scaled = params + (("grad:h",) if variant.residual else ())
        return [Scaling("weight", scaled, {"y": 1, "h": 0, "dx": 1, "dresidual": 1, "dweight": 0, "dbias": 0})]

    def scaling_undecidable(self, variant, case: Case) -> str:
        # fp16's exponent range is narrow: a product such as dy * w rounded to fp16 (llama's
        # mandated rounding, or any step of the "none" mode) is often subnormal for 1e-3-scale
        # factors, and a subnormal rounding does not commute with a power of two. bf16 has
        # float32's exponent range: nothing a case draws gets near its subnormals.
        if case.x_dtype == "fp16" and variant.casting in ("llama", "none"):
            return f"casting {variant.casting} rounds intermediates to fp16, whose subnormals break exact scaling"
        if case.x_dtype == "fp16" and variant.residual:
            # dx = dx_norm + dh with dx_norm rounded to fp16 first (autograd hands it back in the
            # input dtype): a subnormal dx_norm under a normal dx (81 of 613 elements of a
            # composed fp16/fp32 kernel in the zoo)
            return "the fused residual's dx adds the norm's dx rounded to fp16, whose subnormals break exact scaling"
        return ""

    def cases(self, candidate, dtype: str, profile: Profile) -> st.SearchStrategy[Case]:
        variant = candidate.variant
        layouts = ("contiguous", "strided") if candidate.strided else ("contiguous",)
        max_n = max_n_for(candidate, dtype)  # a limit may depend on the dtype (bytes per row)
        edge_widths = ([] if features.off("n_boundaries") else
                       B.task_boundary_widths(profile, (candidate.boundaries or {}).get("n", ()), max_n))
        huge = B.huge_allowed(profile, dtypes.to_torch(dtypes.split_pair(dtype)[0]).itemsize)

        @st.composite
        def draw_case(draw) -> Case:
            shape = draw(S.shapes(profile))
            if max_n is not None and shape[-1] > max_n:
                shape = (*shape[:-1], max_n)  # a clamp, not a filter: shrinking is unchanged
            shape = draw(_at_boundaries(shape, edge_widths, huge, profile, max_n))
            probe = Case(self.name, shape, dtype)
            regimes = S.X_REGIMES
            if not candidate.full_range and self.edges(variant, probe, False)[1] is not None:
                regimes = regimes + (S.BEYOND,)
            return Case(
                op=self.name, shape=shape, dtype=dtype,
                x=draw(st.sampled_from(regimes)),
                dy=draw(st.sampled_from(S.DY_REGIMES)) if candidate.backward else "normal",
                w=draw(st.sampled_from(S.W_REGIMES)) if self.params(variant) else "normal",
                eps=draw(st.sampled_from(candidate.eps_values) if candidate.eps_values is not None
                         else S.eps_values(candidate.eps_none)),
                layout=draw(st.sampled_from(layouts)),
                seed=draw(st.integers(0, 2**31 - 1)),
            )

        return draw_case()


def directional_identities(dx: torch.Tensor, err: torch.Tensor, keep: torch.Tensor, directions,
                           where: Callable[[int], str]) -> list[Identity]:
    """Per row of ``dx`` (a row, or a group), each identity dx . v = target of ``directions``
    (name, v, its error, target, the target's magnitude), within the accuracy bound ``err`` at the
    candidate's own dx summed along v plus float64's rounding of the sums; the worst row of each,
    among the rows ``keep`` selects, named by ``where(row)``."""
    length = dx.shape[-1]
    u64 = dtypes.unit_roundoff(F64)
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
                            f"{where(row)}: {float(measured[row]):.6g}, expected {float(target.reshape(-1)[row]):.6g} "
                            f"within {float(limit[row]):.3g} (error/bound {float(ratio[r]):.3g})"))
    return out


@st.composite
def _at_boundaries(draw, shape: tuple[int, ...], widths: list[int], huge: bool, profile: Profile,
                   max_n: int | None) -> tuple[int, ...]:
    """Now and then a width at a dispatch boundary instead of the drawn one (the rows capped as the
    free draw caps them), and, where allowed, a shape past 2**31 elements (properties/boundaries.py).
    Both choices shrink to the drawn shape."""
    if widths and draw(st.integers(0, 3)) == 3:
        n = draw(st.sampled_from(widths))
        rows = max(1, min(math.prod(shape[:-1]), profile.max_rows * profile.max_n // n))
        shape = (rows, n)
    if huge and draw(st.integers(0, 31)) == 31:
        n = draw(st.sampled_from([w for w in B.HUGE_N if max_n is None or w <= max_n] or [max_n or 1]))
        shape = B.huge_shape(n)
    return shape


#: row padding of the upstream gradients in the strided layout: not the activations' (3, in
#: strategies.place), because a gradient arrives from elsewhere with a layout of its own, and a
#: kernel that addresses dy or dx with x's row stride is right whenever the two strides agree
GRAD_PAD = 5


def _grad_layout(values: torch.Tensor, dtype: torch.dtype, device: str, layout: str) -> torch.Tensor:
    """An upstream gradient, rows padded by GRAD_PAD in the strided layout (the gaps hold the guards'
    sentinel once the harness hands it over), contiguous otherwise."""
    t = values.to(dtype)
    if layout == "strided" and t.dim() >= 2 and not features.off("grad_strides"):
        n = t.shape[-1]
        buf = torch.full((*t.shape[:-1], n + GRAD_PAD), float("nan"), dtype=dtype, device=device)
        buf[..., :n] = t.to(device)
        return buf[..., :n]
    return t.to(device)


def _bias_regime(w_regime: str) -> str:
    # biases are drawn from the same regimes as weights except "cancel" (no offset to cancel)
    return "normal" if w_regime == "cancel" else w_regime


def promote_cast(result: torch.Tensor, x: torch.Tensor, weight: torch.Tensor | None, out: str) -> torch.Tensor:
    dt = torch.promote_types(x.dtype, weight.dtype) if (out == "promote" and weight is not None) else x.dtype
    return result.to(dt)


EagerFn = Callable[..., torch.Tensor]
