"""The error model: ULPs, and bounds tight enough to catch one extra rounding yet never fail a
correctly rounded result."""

import torch

from normgate import dtypes
from normgate.op import Expected
from normgate.tolerance import compare

F64 = torch.float64


def test_ulp_values():
    v = torch.tensor([1.0, 1.5, 2.0, 0.0, 1e-45], dtype=F64)
    assert dtypes.ulp(v, torch.bfloat16).tolist()[:3] == [2**-7, 2**-7, 2**-6]
    assert dtypes.ulp(v, torch.float32)[0].item() == 2**-23
    # zero and subnormals: the subnormal spacing
    assert dtypes.ulp(v, torch.float32)[3].item() == 2**-149
    assert dtypes.ulp(v, torch.float16)[3].item() == 2**-24


def _expected(value, dtype, steps=0, internal=torch.float32):
    return Expected(value, value.abs(), steps, internal, 0.0, dtype)


def test_round_to_nearest_passes_and_truncation_fails():
    g = torch.Generator().manual_seed(0)
    exact = torch.randn(4096, generator=g, dtype=F64)
    exp = _expected(exact, torch.bfloat16, steps=4096 + 8)
    nearest = exact.to(torch.bfloat16)
    assert compare("y", nearest, exp, 0.5).ok
    # truncation towards zero: what a store without rounding does
    f32 = exact.to(torch.float32)
    truncated = (f32.view(torch.int32) & ~0xFFFF).view(torch.float32).to(torch.bfloat16)
    c = compare("y", truncated, exp, 0.5)
    assert not c.ok and 0.9 < c.max_ulp <= 1.0
    # ... unless the store is known to truncate (Triton's interpreter): allowance one ULP
    assert compare("y", truncated, exp, 1.0).ok


def test_one_extra_rounding_fails():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2048, generator=g, dtype=F64)
    w = torch.randn(2048, generator=g, dtype=F64)
    exp = Expected(x * w, (x * w).abs(), 16, torch.float32, 0.0, torch.bfloat16)
    once = (x * w).to(torch.bfloat16)
    twice = (x.to(torch.bfloat16).double() * w).to(torch.bfloat16)  # x rounded first
    assert compare("y", once, exp, 0.5).ok
    assert not compare("y", twice, exp, 0.5).ok


def test_cancellation_is_bounded_by_magnitude_not_result():
    terms = torch.tensor([[1.0, -1.0 + 2**-20]], dtype=F64)
    value = terms.sum(-1)
    exp = Expected(value, terms.abs().sum(-1), 2, torch.float32, 0.0, torch.float32)
    computed = terms.to(torch.float32).sum(-1)  # exact here; a perturbed order may not be
    assert compare("db", computed, exp, 0.5).ok
    wrong = computed + 2**-18
    assert not compare("db", wrong, exp, 0.5).ok


def test_nan_and_overflow():
    exp = _expected(torch.tensor([1.0, 70000.0, 65519.0], dtype=F64), torch.float16)
    good = torch.tensor([1.0, float("inf"), 65504.0], dtype=torch.float16)
    assert compare("y", good, exp, 0.5).ok
    assert not compare("y", torch.tensor([float("nan"), float("inf"), 65504.0], dtype=torch.float16),
                       exp, 0.5).ok
    assert not compare("y", torch.tensor([1.0, 65504.0, 65504.0], dtype=torch.float16), exp, 0.5).ok


def test_undefined_elements_are_not_compared():
    exp = _expected(torch.tensor([1.0, 2.0], dtype=F64), torch.float16)
    exp.defined = torch.tensor([True, False])
    assert compare("dx", torch.tensor([1.0, float("nan")], dtype=torch.float16), exp, 0.5).ok
    assert not compare("dx", torch.tensor([float("nan"), 2.0], dtype=torch.float16), exp, 0.5).ok


def test_an_infinity_within_the_bound_of_the_overflow_edge_is_accuracy_not_a_broken_contract():
    from normgate.tolerance import surely_finite

    # fp16 results of 8191 fp32 terms of magnitude 1e5: a bound of a few fp16 ULPs at 65,504
    value = torch.tensor([65500.0, 60000.0, 1000.0], dtype=torch.float64)
    exp = Expected(value, torch.full_like(value, 1e5), 8191, torch.float32, 0.0, torch.float16)
    assert surely_finite(exp, 0.5).tolist() == [False, True, True]
    tight = Expected(value, value.abs(), 1, torch.float32, 0.0, torch.float16)  # one rounding: 0.5 ULP
    assert surely_finite(tight, 0.5).tolist() == [True, True, True]
    # an infinity there passes accuracy as well: it counts as the edge, within the bound
    got = torch.tensor([float("inf"), 60000.0, 1000.0], dtype=torch.float16)
    assert compare("dx", got, exp, 0.5).ratio <= 1.0
