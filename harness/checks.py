"""The checks: accuracy against the float64 reference, the contract, and determinism.

Each check takes a candidate, its op and one case, and returns a :class:`CheckResult`. A check
never raises because of the candidate: whatever the candidate raises becomes verdict ``error``.
"""

from __future__ import annotations

import contextlib
import math
import time
import traceback
from collections.abc import Callable

import torch

from . import boundaries, guards, memory
from .candidates import Candidate
from .case import Case
from .execution import BEYOND as BEYOND
from .execution import CandidateError as CandidateError
from .execution import CheckResult as CheckResult
from .execution import Context as Context
from .execution import MissingGradient as MissingGradient
from .execution import WrongShape as WrongShape
from .execution import _beyond, execute, reference
from .gpushare import GPU_MEMORY_SHARED, beyond_the_share, workers_per_gpu
from .memory import clone as clone
from .names import CHECKS as CHECKS  # re-exported: the checks are named in one place
from .names import DETERMINISM as DETERMINISM
from .names import SPEC
from .op import Op, Tensors
from .tolerance import compare, final_rounding, surely_finite

OUT_OF_MEMORY = "out of memory: "
# A check that ran out of memory is run again this many times, after the process returned its
# cached memory: a case is a pure function of its inputs, and memory is what other work on the
# device (other workers, other programs) happens to hold at that moment. The last try may go beyond
# the worker's share of a shared GPU (gpushare.beyond_the_share).
OOM_RETRIES = 2


def _out_of_memory(e: BaseException) -> bool:
    low = str(e).lower()
    return isinstance(e, MemoryError) or "out of memory" in low or "can't allocate memory" in low


def _describe(e: BaseException) -> str:
    text = f"{type(e).__name__}: {e}".strip()
    if _out_of_memory(e):
        return OUT_OF_MEMORY + text[:400]
    return text[:600]


def _return_memory(device: str) -> None:
    if device.startswith("cuda"):
        with contextlib.suppress(Exception):
            torch.cuda.empty_cache()


def _memory_note(device: str) -> str:
    """Where the memory went, for an out-of-memory error that retries did not cure."""
    sharing = workers_per_gpu()
    if device.startswith("cuda") and sharing > 1:
        return (f"; {sharing} workers share this GPU and each may use 1/{sharing} of {GPU_MEMORY_SHARED:.0%} "
                "of its memory (a last try with all the memory the GPU had free failed too): run fewer "
                "--workers for cases this big")
    return ""


def guarded(check):
    """Turn anything the candidate raises into verdict ``error``, and time the check."""

    def run(cand: Candidate, op: Op, case: Case, ctx: Context) -> CheckResult:
        t0 = time.perf_counter()
        for attempt in range(OOM_RETRIES + 1):
            last_try = attempt == OOM_RETRIES
            try:
                with beyond_the_share(ctx.device) if last_try else contextlib.nullcontext():
                    res = check(cand, op, case, ctx)
                break
            except guards.OutOfBounds as e:  # a broken contract whichever check ran the call
                res = CheckResult("fail", str(e))
                break
            except Exception as e:  # noqa: BLE001 - a kernel's exception is a result, not a crash
                oom, reason = _out_of_memory(e), _describe(e)
                tb = traceback.extract_tb(e.__traceback__)
                where = f" (at {tb[-1].filename}:{tb[-1].lineno})" if tb else ""
                del e, tb  # the traceback holds the failed attempt's tensors
                _return_memory(ctx.device)
                if oom and attempt < OOM_RETRIES:
                    if ctx.device.startswith("cuda"):  # give other workers' cases time to end
                        time.sleep(0.5 * (attempt + 1))
                    continue
                res = CheckResult("error", reason + where + (_memory_note(ctx.device) if oom else ""))
                break
        res.duration_s = time.perf_counter() - t0
        return res

    run.__name__ = check.__name__
    return run


@guarded
def accuracy(cand: Candidate, op: Op, case: Case, ctx: Context) -> CheckResult:
    inputs = op.make_inputs(case, cand.variant, ctx.device)
    got, _ = execute(cand, op, case, inputs)
    expected = reference(cand, op, inputs, case)
    truncating = ctx.interpreter and cand.triton
    res = CheckResult("pass")
    if truncating and any(e.dtype == torch.bfloat16 for e in expected.values()):
        res.notes.append("Triton interpreter: bf16 stores truncate, final rounding allowance 1 ULP")
    eager = _eager_outputs(cand, op, case, inputs, ctx)
    failing = []
    for name, exp in expected.items():
        if name not in got:
            raise CandidateError(f"the candidate returned no {name!r}")
        mine = exp.pick(got[name])
        if mine.numel() != exp.value.numel():
            raise CandidateError(f"{name} has shape {tuple(got[name].shape)}, expected "
                                 f"{op.output_shape(name, inputs, case)}")
        c = compare(name, mine, exp, final_rounding(exp.dtype, truncating))
        res.errors[name] = c.summary()
        if eager is not None and name in eager:
            res.errors[name]["eager_max_ulp"] = compare(name, exp.pick(eager[name]), exp, 0.5).summary()["max_ulp"]
        if not c.ok:
            failing.append(c)
    if failing:
        res.verdict = "fail"
        res.worst = [w for c in failing for w in c.worst]
        res.reason = "; ".join(f"{c.name}: {c.max_ulp:.4g} ULP max, bound {c.bound_ulp:.3g} ULP "
                               f"(error/bound {c.ratio:.3g})" for c in failing)
    return _beyond(case, res)


def _eager_outputs(cand, op, case, inputs, ctx) -> Tensors | None:
    if not ctx.eager_opinion:
        return None
    try:
        out, _ = execute(cand, op, case, inputs, fn=op.eager(cand.variant))
        return out
    except Exception:  # noqa: BLE001 - the second opinion is information, never a verdict
        return None


@guarded
def contract(cand: Candidate, op: Op, case: Case, ctx: Context) -> CheckResult:
    inputs = op.make_inputs(case, cand.variant, ctx.device)
    try:
        got, args = execute(cand, op, case, inputs)
    except (WrongShape, MissingGradient) as e:
        return CheckResult("fail", str(e))
    expected = reference(cand, op, inputs, case)
    problems = []
    for name, exp in expected.items():
        t = got.get(name)
        if t is None:
            problems.append(f"no {name!r} returned")
            continue
        want_shape = tuple(op.output_shape(name, inputs, case))
        if tuple(t.shape) != want_shape:
            problems.append(f"{name} shape {tuple(t.shape)}, expected {want_shape}")
        if t.dtype != exp.dtype:
            rule = f"the variant's rule out={cand.variant.out}" if hasattr(cand.variant, "out") else "the variant"
            problems.append(f"{name} dtype {str(t.dtype).replace('torch.', '')}, expected "
                            f"{str(exp.dtype).replace('torch.', '')} ({rule})")
        if t.device.type != torch.device(ctx.device).type:
            problems.append(f"{name} on {t.device}, expected {ctx.device}")
        t = exp.pick(t)  # a huge case: the items its reference covers
        if t.numel() == exp.value.numel():
            rounding = final_rounding(exp.dtype, ctx.interpreter and cand.triton)
            should_be_finite = torch.isfinite(exp.value.to(exp.dtype)) & surely_finite(exp, rounding)
            if exp.defined is not None:
                should_be_finite &= exp.defined.expand_as(should_be_finite)
            should_be_finite = should_be_finite.reshape(-1).cpu()
            finite = torch.isfinite(t.detach()).reshape(-1).cpu()
            bad = int((should_be_finite & ~finite).sum())
            if bad:
                problems.append(f"{name} has {bad} non-finite values where the reference is finite")
    if not cand.inplace:
        for name, original in inputs.items():
            after = args.get(name)
            if after is not None and not memory.same_bits(original, after):
                problems.append(f"input {name!r} was modified (declare inplace=True if that is intended)")
    if problems:
        return _beyond(case, CheckResult("fail", "; ".join(problems)))
    return CheckResult("pass")


def _runs(cand, op, case, ctx, inputs, n, before_each=None) -> list[Tensors]:
    outs = []
    for i in range(n):
        if before_each:
            before_each(i)
        got, _ = execute(cand, op, case, inputs)
        outs.append({k: v.clone() for k, v in got.items()})
        if ctx.device.startswith("cuda"):
            torch.cuda.synchronize()
    return outs


def _bitwise_diff(runs: list[Tensors]) -> str:
    first = runs[0]
    for i, other in enumerate(runs[1:], start=2):
        for name, t in first.items():
            if not memory.same_bits(t, other[name]):
                n = memory.differing(t, other[name])
                return f"{name} differs bitwise between run 1 and run {i} ({n} of {t.numel()} elements)"
    return ""


@guarded
def repeat(cand: Candidate, op: Op, case: Case, ctx: Context) -> CheckResult:
    inputs = op.make_inputs(case, cand.variant, ctx.device)
    runs = _runs(cand, op, case, ctx, inputs, ctx.repeats)
    diff = _bitwise_diff(runs)
    return CheckResult("fail", diff) if diff else CheckResult("pass", digest=memory.digest(runs[0]))


@guarded
def poisoned(cand: Candidate, op: Op, case: Case, ctx: Context) -> CheckResult:
    """Free memory is filled with a different garbage pattern before each run: a kernel that
    reads memory nobody wrote gives different bits every time instead of passing by luck."""
    inputs = op.make_inputs(case, cand.variant, ctx.device)
    with memory.uninitialized_left_as_is():
        runs = _runs(cand, op, case, ctx, inputs, max(2, ctx.repeats),
                     before_each=lambda i: memory.poison(ctx.device, i))
    diff = _bitwise_diff(runs)
    return CheckResult("fail", diff + " with poisoned free memory") if diff else CheckResult("pass")


@guarded
def batch_invariance(cand: Candidate, op: Op, case: Case, ctx: Context) -> CheckResult:
    """An item's outputs (a norm's row) must not depend on the other items of the batch."""
    m, n = op.batch(case), op.item_elements(case)
    if m < 2 and not boundaries.m_boundaries(cand, ctx.device, n, case.seed):
        return CheckResult("skip", "one row: nothing to vary")
    if m < 2:
        return _not_claimed(cand, boundaries.across(cand, op, case, ctx.device, execute))
    inputs = op.make_inputs(case, cand.variant, ctx.device)
    full, _ = execute(cand, op, case, inputs)
    a = case.seed % m
    b = a + 1 + (case.seed // m) % (m - a)
    if b - a == m:
        a, b = 0, m - 1
    # a drawn sub-range, and the first row of it alone: the batch of one is where kernels most
    # often switch strategy, and a last-bit difference there is easy to miss in a wider slice
    for lo, hi in ((a, b), (a, a + 1)) if b - a > 1 else ((a, b),):
        small = op.with_batch(case, hi - lo)
        part, _ = execute(cand, op, small, op.take(inputs, case, lo, hi))
        for name, t in part.items():
            whole = op.items(name, full[name], case) if name in full else None
            mine = op.items(name, t, small)
            if whole is None or mine is None:
                continue
            whole = whole[lo:hi]
            if not memory.same_bits(whole, mine):
                k = memory.differing(whole, mine)
                seen = (f"{name} of items {lo}..{hi - 1} differs bitwise when run as a batch of {hi - lo} "
                        f"instead of {m} ({k} elements)")
                return _not_claimed(cand, seen)
    # then batch sizes either side of the M boundaries where kernels switch (harness/boundaries.py)
    return _not_claimed(cand, boundaries.across(cand, op, case, ctx.device, execute))


def _not_claimed(cand: Candidate, seen: str) -> CheckResult:
    if not seen:
        return CheckResult("pass")
    if not cand.batch_invariant:
        # observed and reported, not judged: the candidate does not claim it
        return CheckResult("skip", "not claimed (batch_invariant=False): " + seen)
    return CheckResult("fail", seen)


@guarded
def identities(cand: Candidate, op: Op, case: Case, ctx: Context) -> CheckResult:
    """Reference-free identities of the op and exact power-of-two scalings (harness/identity.py)."""
    from .identity import run

    return run(cand, op, case, ctx)


#: each check in names.SPECS, by its name: the function of that name above
ALL: dict[str, Callable[[Candidate, Op, Case, Context], CheckResult]] = {name: globals()[name] for name in CHECKS}


def budget(check: str, examples: int) -> int:
    """Cases per check: its share (names.SPECS) of the budget."""
    return max(1, math.ceil(examples * SPEC[check].share))
