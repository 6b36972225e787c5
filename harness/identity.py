"""The ``identities`` check: properties a correct kernel's outputs have, judged without a reference.

Two kinds, both asked of the op (``Op.identities``, ``Op.scalings``), so the core knows no formula:

- **Row identities** the op derives (LayerNorm's dx sums to 0 per row and is orthogonal to x-hat
  up to an eps term; RMSNorm's dx is orthogonal to x up to one): each comes with a bound derived
  from the same error model as the accuracy check's, evaluated on the candidate's own outputs.
- **Exact scalings**: gradients are linear in the upstream gradient, so multiplying every upstream
  gradient by 2**k multiplies every gradient by 2**k and leaves the forward outputs alone, bit for
  bit, wherever nothing overflows or turns subnormal; the op adds its own (a norm's output and dx
  are homogeneous of degree 1 in its weight, its dW and dB of degree 0). A backward that applies
  the weight twice keeps every row identity (its dx is still projected the same way) and the
  dy scaling, and breaks the weight's: dx scales by 4**k.

An exact scaling needs no bound: a power of two commutes with every rounding in the normal range.
Elements whose old or new value is subnormal, infinite or NaN are not compared (the rounding grid
changes there), and a scaling whose inputs cannot be scaled exactly in both directions is skipped.
"""

from __future__ import annotations

import torch

from . import dtypes, memory
from .candidates import Candidate
from .case import Case
from .execution import CheckResult, Context, _beyond, execute
from .op import Op, Scaling, Tensors
from .tolerance import final_rounding

#: |k| of the 2**k scalings, chosen from the case's seed: small, so that a huge-gradient case rarely
#: leaves the range, and both signs, since underflow and overflow are avoided on opposite sides
POWERS = (1, 2, 3)


def _power(case: Case) -> int:
    k = POWERS[case.seed % len(POWERS)]
    return k if (case.seed // len(POWERS)) % 2 == 0 else -k


def _scaled_exactly(t: torch.Tensor, k: int) -> torch.Tensor | None:
    """``t * 2**k`` when that is exact for every element (no overflow, no bits lost to subnormals),
    in ``t``'s layout. A compacted copy of a strided input would change the row stride, and Triton
    compiles another binary for another stride (divisible by 16 or not, or 1), whose loads may
    split the row over the threads differently and so sum it in another order: on an H200 that
    changed dx in the last bit and failed the scaling on five of normgate's kernels (and its
    GroupNorm) where the arithmetic was exact."""
    s = memory.clone(t).mul_(2.0 ** k)
    if not bool(torch.isfinite(s).eq(torch.isfinite(t)).all()):
        return None
    back = s * (2.0 ** -k)
    return s if memory.same_bits(back, t) else None


def _comparable(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Elements where a power-of-two scaling from ``a`` to ``b`` must be exact: both finite, and
    each zero or at least twice the smallest normal of their dtype. A result that rounded to the
    smallest normal itself may come from a subnormal value, whose coarser grid does not scale (an
    fp16 dx of exactly 2**-14 against 2**-13 - 2**-23 after scaling by 2, measured in the zoo)."""
    tiny = dtypes.smallest_normal(a.dtype)

    def ok(t):
        t = t.double()
        return torch.isfinite(t) & ((t == 0) | (t.abs() >= 2 * tiny))

    return ok(a) & ok(b)


def dy_scaling(op: Op, inputs: Tensors, got: Tensors) -> Scaling:
    """The homogeneity every op has: gradients linear in the upstream gradients."""
    grads = tuple(k for k in inputs if k.startswith("grad:"))
    powers = {name: (1 if name.startswith("d") and name[1:] in op.differentiable else 0) for name in got}
    return Scaling("upstream gradient", grads, powers)


def check_scaling(cand: Candidate, op: Op, case: Case, inputs: Tensors, got: Tensors, scaling: Scaling,
                  k: int) -> tuple[str, str]:
    """("fail" reason, "") or ("", note): one scaling, by 2**k, or by 2**-k when 2**k cannot be
    applied exactly."""
    for sign in (k, -k):
        scaled = dict(inputs)
        for name in scaling.inputs:
            if inputs.get(name) is None:
                continue
            s = _scaled_exactly(inputs[name], sign)
            if s is None:
                break
            scaled[name] = s
        else:
            break
    else:
        return "", f"{scaling.name} scaling skipped: 2**{k} and 2**{-k} both leave the inputs' range"
    k = sign
    other, _ = execute(cand, op, case, scaled)
    problems = []
    for name, p in scaling.powers.items():
        if name not in got or name not in other:
            continue
        a, b = got[name], other[name]
        want = a * (2.0 ** (k * p)) if p else a
        where = _comparable(a, want) & _comparable(b, b)
        bad = where & (memory.bit_view(want) != memory.bit_view(b))
        n_bad = int(bad.sum())
        if n_bad:
            i = int(bad.reshape(-1).nonzero()[0])
            problems.append(f"{name}: {n_bad} of {int(where.sum())} elements are not exactly 2**{k * p} times "
                            f"their unscaled value (e.g. element {i}: {float(b.reshape(-1)[i]):.6g} against "
                            f"{float(want.reshape(-1)[i]):.6g})")
    if problems:
        return (f"{scaling.name} scaled by 2**{k} ({', '.join(scaling.inputs)}): " + "; ".join(problems)), ""
    return "", ""


def run(cand: Candidate, op: Op, case: Case, ctx: Context) -> CheckResult:
    """The check's body (``checks.identities`` runs it guarded)."""
    inputs = op.make_inputs(case, cand.variant, ctx.device)
    got, _ = execute(cand, op, case, inputs)
    rounding = final_rounding(torch.bfloat16, ctx.interpreter and cand.triton)
    failures, notes, judged = [], [], 0
    ratios = []
    for ident in op.identities(inputs, got, case, cand.variant, rounding):
        judged += 1
        ratios.append(f"{ident.name} {ident.ratio:.3g}")
        if not ident.ratio <= 1.0:
            failures.append(f"{ident.name}: {ident.detail}")
    if ratios:
        # the per-output "errors" of a results line are ULPs against a reference; these are not
        notes.append("row identities, error/bound: " + ", ".join(ratios))
    why_not = op.scaling_undecidable(cand.variant, case)
    if why_not:
        notes.append("scalings skipped: " + why_not)
    else:
        k = _power(case)
        scalings = ([dy_scaling(op, inputs, got)] if cand.backward else []) + op.scalings(cand.variant, case)
        for scaling in scalings:
            fail, note = check_scaling(cand, op, case, inputs, got, scaling, k)
            judged += 0 if note else 1
            if fail:
                failures.append(fail)
            if note:
                notes.append(note)
    if failures:
        return _beyond(case, CheckResult("fail", "; ".join(failures), notes=notes))
    if not judged:
        return CheckResult("skip", "no identity could be judged on this case: " + ("; ".join(notes) or
                                                                                     f"op {op.name} has none"),
                           notes=notes)
    return CheckResult("pass", notes=notes)
