"""The op seam, exercised by an op that is not a norm: a sum over the last axis of (B, K, L).

Everything the core needs comes from the op: its case fields (the key has no eps, no dy, no w),
its candidates' claims (``max_items``; a norm's ``max_n`` is refused), its shapes (an item is one
(K, L) slab of the batch; the output is (B, K)). The checks run it without knowing what it is,
and batch invariance catches a candidate whose summation order follows the batch size.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from hypothesis import strategies as st

import normgate
from normgate import candidates, checks, dtypes
from normgate.candidates import Candidate
from normgate.case import Case, CaseField
from normgate.op import Claim, Expected, Op, Variant, register_op, unregister_op
from normgate.runner import Task, run_task

CTX = checks.Context(device="cpu", eager_opinion=False)


@dataclass(frozen=True)
class SumVariant(Variant):
    """y = sum over the last axis, in float32, rounded once to x's dtype."""


class SumOp(Op):
    name = "toysum"
    variant_type = SumVariant
    differentiable = ("x",)
    row_tensors = ("x", "grad:y")
    case_fields = (CaseField("x", "normal"), CaseField("layout", "dense", bare=True))
    regime_field = "x"
    claims = {"max_items": Claim(None, "the largest batch it takes")}
    gradients = ("dx",)
    required_gradients = ("dx",)

    def make_inputs(self, case, variant, device):
        gen = torch.Generator().manual_seed(case.seed)
        x = torch.randn(case.shape, generator=gen, dtype=torch.float64)
        if case.x == "zeros":
            x.zero_()
        dt = dtypes.to_torch(case.x_dtype)
        dy = torch.randn(case.shape[:-1], generator=gen, dtype=torch.float64)
        return {"x": x.to(dt).to(device), "grad:y": dy.to(dt).to(device)}

    def call(self, fn, inputs, case, variant):
        return {"y": fn(inputs["x"])}

    def reference(self, inputs, case, variant, backward):
        x = inputs["x"].detach().to(torch.float64)
        dt = dtypes.to_torch(case.x_dtype)
        # a sum of L terms in float32: L roundings of at most u_32 of the running |sum| each
        out = {"y": Expected(x.sum(-1), x.abs().sum(-1), case.shape[-1], torch.float32, 0.0, dt)}
        if backward:
            dy = inputs["grad:y"].to(torch.float64)
            g = dy.unsqueeze(-1).expand(case.shape)
            out["dx"] = Expected(g, g.abs(), 0, torch.float32, 0.0, dt)
        return out

    def cases(self, candidate, dtype, profile):
        top = candidate.max_items or 6
        return st.builds(lambda b, k, l, x, seed: Case(self.name, (b, k, l), dtype, x=x, seed=seed),
                         st.integers(1, top), st.integers(1, 3), st.integers(1, 16),
                         st.sampled_from(("normal", "zeros")), st.integers(0, 2**20))

    def eager(self, variant):
        return lambda x: x.float().sum(-1).to(x.dtype)

    def output_dtype(self, variant, case):
        return dtypes.to_torch(case.x_dtype)

    def batch(self, case):
        return case.shape[0]

    def item_elements(self, case):
        return case.shape[1] * case.shape[2]

    def with_batch(self, case, items):
        return Case(case.op, (items, *case.shape[1:]), case.dtype, seed=case.seed, fields=case.fields)

    def take(self, inputs, case, lo, hi):
        return {k: (v[lo:hi] if k in self.row_tensors else v) for k, v in inputs.items()}

    def items(self, name, t, case):
        return t.reshape(case.shape[0], -1) if t.shape[:1] == (case.shape[0],) else None

    def output_shape(self, name, inputs, case):
        return tuple(inputs["x"].shape) if name == "dx" else tuple(case.shape[:-1])


OP = SumOp()


@pytest.fixture(autouse=True, scope="module")
def _only_here():
    """The toy op and its candidate are in the registries for this module's tests only."""
    register_op(OP)
    yield
    candidates.unregister("toysum_sequential")
    unregister_op("toysum")


def sequential_sum(x: torch.Tensor) -> torch.Tensor:
    acc = torch.zeros(x.shape[:-1], dtype=torch.float32)
    for i in range(x.shape[-1]):
        acc = acc + x[..., i].float()
    return acc.to(x.dtype)


def batch_dependent_sum(x: torch.Tensor) -> torch.Tensor:
    """A batch of three or more sums its terms in reverse: each item's bits follow the batch size."""
    if x.shape[0] < 3:
        return sequential_sum(x)
    return sequential_sum(x.flip(-1))


def keeps_the_last_axis(x: torch.Tensor) -> torch.Tensor:
    return x.float().sum(-1, keepdim=True).to(x.dtype)


def cand(fn, name="t", **kw) -> Candidate:
    return Candidate(name=name, variant=SumVariant(), fn=fn, dtypes=("fp32",), **kw)


def test_the_case_key_is_the_ops_own():
    c = Case("toysum", (4, 3, 8), "fp32", x="zeros", seed=3)
    assert c.key() == "toysum,4x3x8,fp32,x=zeros,dense,seed=3"
    assert Case.from_key(c.key()) == c and c.regime == "zeros"
    with pytest.raises(TypeError, match="unknown: eps"):
        Case("toysum", (4, 3, 8), "fp32", eps=1e-6)
    with pytest.raises(ValueError, match="malformed case key"):
        Case.from_key("toysum,4x3x8,fp32,x=normal,eps=1e-06,dense,seed=3")


def test_claims_and_op_follow_from_the_variant():
    c = cand(sequential_sum, max_items=4)
    assert c.op == "toysum" and c.max_items == 4 and c.declaration()["max_items"] == 4
    with pytest.raises(TypeError, match="toysum candidates claim max_items; unknown: max_n"):
        cand(sequential_sum, max_n=16)
    with pytest.raises(ValueError, match="is op 'toysum'"):
        Candidate(name="t", op="rmsnorm", variant=SumVariant(), fn=sequential_sum)
    with pytest.raises(ValueError, match="grads="):
        cand(sequential_sum, grads=("dweight",))
    assert normgate.RMSNormVariant().__class__ is not SumVariant  # the norms are untouched beside it


def test_the_checks_run_an_op_they_know_nothing_about():
    case = Case("toysum", (5, 2, 13), "fp32", seed=11)
    good = cand(sequential_sum)
    for check in ("accuracy", "contract", "repeat", "poisoned", "batch_invariance"):
        res = checks.ALL[check](good, OP, case, CTX)
        assert res.verdict == "pass", (check, res.reason)
    # the contract knows the output's shape from the op: (B, K), not (B, K, 1)
    res = checks.contract(cand(keeps_the_last_axis), OP, case, CTX)
    assert res.verdict == "fail" and "(5, 2)" in res.reason, res.reason


def test_batch_invariance_catches_a_batch_dependent_order():
    case = Case("toysum", (6, 3, 16), "fp32", seed=7)
    assert checks.batch_invariance(cand(sequential_sum), OP, case, CTX).verdict == "pass"
    res = checks.batch_invariance(cand(batch_dependent_sum), OP, case, CTX)
    assert res.verdict == "fail" and "items" in res.reason, res.reason


def test_a_task_draws_the_ops_cases_and_claims():
    normgate.register("toysum_sequential", sequential_sum, variant=SumVariant(), dtypes=("fp32",), max_items=2,
                      replace=True)
    lines: list[dict] = []
    run_task(Task("toysum_sequential", "fp32", "accuracy", 12), CTX, lines.append)
    results = [ln for ln in lines if ln.get("type") == "result"]
    assert results and all(ln["verdict"] == "pass" for ln in results), results[:2]
    assert all(Case.from_key(ln["case"]).shape[0] <= 2 for ln in results)
    assert {ln["regime"] for ln in results} <= {"normal", "zeros"}
