"""Running a candidate on one case: the arguments it is handed (inside guard bands), forward and
backward through autograd, and what a check returns. The checks (checks.py) and the identities
(identity.py) are built on it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from . import guards
from .candidates import Candidate
from .case import Case
from .memory import clone
from .op import Op, Tensors

BEYOND = "beyond"


@dataclass
class Context:
    device: str = "cpu"
    interpreter: bool = False
    repeats: int = 3
    eager_opinion: bool = True


@dataclass
class CheckResult:
    verdict: str  # pass | fail | error | skip | range
    reason: str = ""
    errors: dict = field(default_factory=dict)
    worst: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    duration_s: float = 0.0
    #: sha256 of every output's bits (repeat check): equal digests from two processes, or two
    #: machines of one kind, show the kernel deterministic across processes too
    digest: str = ""

    @property
    def failed(self) -> bool:
        return self.verdict in ("fail", "error")


class CandidateError(Exception):
    """The candidate broke its calling convention (no gradient, wrong output count, ...)."""


class WrongShape(CandidateError):
    """An output of the wrong shape: a broken contract, found before autograd trips on it."""


class MissingGradient(CandidateError):
    """A gradient the candidate declares (``grads``, every one by default) did not arrive: a broken
    contract, which the contract check fails; the checks that need the gradient cannot run."""


def _wants_grad(cand: Candidate, name: str) -> bool:
    """Whether the candidate is differentiated with respect to input ``name``: when it declares
    that gradient (``grads``; every one by default)."""
    return cand.provides("d" + name)


def reference(cand: Candidate, op: Op, inputs: Tensors, case: Case):
    """The op's reference, less the gradients the candidate does not declare."""
    expected = op.reference(inputs, case, cand.variant, backward=cand.backward)
    return {k: e for k, e in expected.items()
            if not (k.startswith("d") and k[1:] in op.differentiable and not _wants_grad(cand, k[1:]))}


def execute(cand: Candidate, op: Op, case: Case, inputs: Tensors, backward: bool = True,
            fn: Callable | None = None) -> tuple[Tensors, Tensors]:
    """Run forward (and backward through autograd); return (outputs and gradients, arguments
    as the candidate left them)."""
    fn = fn or cand.resolve()
    backward = backward and cand.backward
    args: Tensors = {}
    fences: list[guards.Guard | None] = []
    for k, v in inputs.items():
        if k.startswith("grad:"):
            continue
        a = _handed(k, v, fences)
        if backward and k in op.differentiable and _wants_grad(cand, k):
            a.requires_grad_(True)
        args[k] = a
    outs = op.call(fn, args, case, cand.variant)
    for name, t in outs.items():
        if not isinstance(t, torch.Tensor):
            raise CandidateError(f"output {name!r} is a {type(t).__name__}, not a tensor")
        want = op.output_shape(name, inputs, case)
        if backward and tuple(t.shape) != tuple(want):
            # said plainly here, before autograd reports it as a "Mismatch in shape" of its own
            raise WrongShape(f"{name} shape {tuple(t.shape)}, expected {tuple(want)}")
    result = {k: v.detach() for k, v in outs.items()}
    if backward:
        names = list(outs)
        missing = [n for n in names if outs[n].grad_fn is None and not outs[n].requires_grad]
        if missing:
            raise CandidateError(f"output {missing[0]!r} is not connected to autograd, but the candidate "
                                 "declares a backward (register it with backward=False if it has none)")
        grads = {n: _handed("grad:" + n, inputs["grad:" + n].to(outs[n].dtype), fences) for n in names}
        for n in names:
            if grads[n].dtype == inputs["grad:" + n].dtype:  # a cast copy cannot show in-place writes
                args["grad:" + n] = grads[n]
        wrt = [k for k in op.differentiable if k in args and args[k].requires_grad]
        gs = torch.autograd.grad([outs[n] for n in names], [args[k] for k in wrt],
                                 grad_outputs=[grads[n] for n in names], allow_unused=True)
        for k, g in zip(wrt, gs, strict=True):
            if g is None:
                declared = "" if cand.grads is None else f" (declared grads={list(cand.grads)})"
                raise MissingGradient(f"no gradient reached input {k!r}{declared}: declare the gradients the "
                                      "backward provides with grads=(...) if it computes fewer")
            result["d" + k] = g.detach()
    guards.verify(fences)
    return result, args


def _handed(name: str, t: torch.Tensor, fences: list) -> torch.Tensor:
    """The copy of ``t`` a candidate gets: inside guard bands (harness/guards.py), or a plain copy
    with the guards off."""
    if not guards.enabled():
        return clone(t)
    a, g = guards.place(name, t)
    fences.append(g)
    return a


def _beyond(case: Case, res: CheckResult) -> CheckResult:
    if res.verdict == "fail" and case.regime == BEYOND:
        res.verdict = "range"
        res.reason = "beyond the variant's claimed domain (a range limit, not a bug): " + res.reason
    return res
