"""The float64 references against independent closed forms and against autograd."""

import math

import pytest
import torch

from normgate.kernels import references as ref

F64 = torch.float64


def rms(h, w=None, eps=1e-6, offset=0.0):
    return ref.rmsnorm_forward(h, w, eps, offset)[0]


def ln(h, w=None, b=None, eps=1e-5):
    return ref.layernorm_forward(h, w, b, eps)[0]


def test_rmsnorm_hand_computed_three_elements():
    h = torch.tensor([[1.0, 2.0, 2.0]], dtype=F64)  # mean of squares = 3
    w = torch.tensor([1.0, 0.5, -1.0], dtype=F64)
    y = rms(h, w, eps=1.0)  # rstd = 1/2
    assert torch.equal(y, torch.tensor([[0.5, 0.5, -1.0]], dtype=F64))
    y_gemma = rms(h, w, eps=1.0, offset=1.0)  # (1 + w) = [2, 1.5, 0]
    assert torch.equal(y_gemma, torch.tensor([[1.0, 1.5, 0.0]], dtype=F64))


def test_layernorm_hand_computed_three_elements():
    h = torch.tensor([[1.0, 2.0, 6.0]], dtype=F64)  # mean 3, var (4 + 1 + 9)/3 = 14/3
    y = ln(h, eps=0.0)
    s = math.sqrt(14 / 3)
    assert torch.allclose(y, torch.tensor([[-2 / s, -1 / s, 3 / s]], dtype=F64), rtol=0, atol=1e-15)


def test_constant_rows():
    c = torch.tensor([[3.0] * 5, [-0.25] * 5], dtype=F64)
    w, b = torch.linspace(-1, 1, 5, dtype=F64), torch.arange(5, dtype=F64)
    assert torch.equal(ln(c, w, b), b.expand(2, 5))  # zero variance: xhat = 0
    expected = c / torch.sqrt(c.square() + 1e-6) * w
    assert torch.allclose(rms(c, w), expected, rtol=1e-15, atol=0)


def test_one_hot_rows():
    n, a = 8, 2.5
    h = torch.zeros(1, n, dtype=F64)
    h[0, 3] = a
    y = rms(h, eps=0.0)
    assert y[0, 3].item() == pytest.approx(math.sqrt(n), rel=1e-15)
    assert y.sum().item() == pytest.approx(math.sqrt(n), rel=1e-15)
    y = ln(h, eps=0.0)  # mean a/n, var a^2 (n-1)/n^2
    assert y[0, 3].item() == pytest.approx(math.sqrt(n - 1), rel=1e-14)
    assert y[0, 0].item() == pytest.approx(-1 / math.sqrt(n - 1), rel=1e-14)


def test_n_equals_one():
    h = torch.tensor([[4.0], [-3.0], [0.0]], dtype=F64)
    assert torch.allclose(rms(h, eps=0.0)[:2], torch.tensor([[1.0], [-1.0]], dtype=F64))
    assert torch.equal(ln(h), torch.zeros(3, 1, dtype=F64))
    s = ref.rms_stats(h, 1e-6)
    dx, _ = ref.rmsnorm_backward(s, None, torch.ones(3, 1, dtype=F64), 0.0, magnitude=False)
    # y = h / sqrt(h^2 + eps): dy/dh = eps / (h^2 + eps)^1.5
    # (1 - xhat^2) cancels in float64 too; relative to the terms the error is ~1e-16
    assert torch.allclose(dx, 1e-6 / (h.square() + 1e-6) ** 1.5, rtol=1e-6, atol=0)


@pytest.mark.parametrize("offset", [0.0, 1.0])
def test_rmsnorm_closed_form_backward_matches_autograd_and_gradcheck(offset):
    g = torch.Generator().manual_seed(0)
    h = torch.randn(5, 7, generator=g, dtype=F64, requires_grad=True)
    w = torch.randn(7, generator=g, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: ref.RMSNormRef.apply(a, b, 1e-3, offset), (h, w))
    dy = torch.randn(5, 7, generator=g, dtype=F64)
    plain = h * torch.rsqrt(h.square().mean(-1, keepdim=True) + 1e-3) * (offset + w)
    ga = torch.autograd.grad(plain, (h, w), dy)
    gr = torch.autograd.grad(ref.RMSNormRef.apply(h, w, 1e-3, offset), (h, w), dy)
    for a, b in zip(ga, gr):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("affine", [(True, True), (True, False), (False, False)])
def test_layernorm_closed_form_backward_matches_autograd_and_gradcheck(affine):
    g = torch.Generator().manual_seed(1)
    h = torch.randn(4, 6, generator=g, dtype=F64, requires_grad=True)
    w = torch.randn(6, generator=g, dtype=F64, requires_grad=True) if affine[0] else None
    b = torch.randn(6, generator=g, dtype=F64, requires_grad=True) if affine[1] else None
    params = [t for t in (h, w, b) if t is not None]

    def f(*ts):
        it = iter(ts)
        hh = next(it)
        ww = next(it) if w is not None else None
        bb = next(it) if b is not None else None
        return ref.LayerNormRef.apply(hh, ww, bb, 1e-3)

    assert torch.autograd.gradcheck(f, tuple(params))
    dy = torch.randn(4, 6, generator=g, dtype=F64)
    plain = torch.nn.functional.layer_norm(h, (6,), w, b, 1e-3)
    for a, c in zip(torch.autograd.grad(plain, params, dy), torch.autograd.grad(f(*params), params, dy)):
        assert torch.allclose(a, c, rtol=1e-12, atol=1e-13)


def test_magnitude_bounds_the_value_and_survives_cancellation():
    g = torch.Generator().manual_seed(2)
    h = torch.randn(16, 32, generator=g, dtype=F64)
    w, dy = torch.randn(32, generator=g, dtype=F64), torch.randn(16, 32, generator=g, dtype=F64)
    s = ref.layer_stats(h, 1e-5)
    exact = ref.layernorm_backward(s, w, dy, True, magnitude=False)
    mag = ref.layernorm_backward(s, w, dy, True, magnitude=True)
    for e, m in zip(exact, mag):
        assert (m >= e.abs() - 1e-12).all()
    # dbias of zero-mean gradients cancels to ~0; its magnitude does not
    dy0 = dy - dy.mean(0)
    assert ref.layernorm_backward(s, w, dy0, True, False)[2].abs().max() < 1e-12
    assert ref.layernorm_backward(s, w, dy0, True, True)[2].min() > 0.1


def test_eps_none_is_float32_machine_epsilon_for_low_precision_inputs():
    f32 = torch.finfo(torch.float32).eps
    for dt in (torch.bfloat16, torch.float16, torch.float32):
        assert ref.resolve_eps(None, dt) == f32
    assert ref.resolve_eps(None, torch.float64) == torch.finfo(F64).eps
    assert ref.resolve_eps(1e-5, torch.bfloat16) == 1e-5
    # and that is what PyTorch computes (its docs say finfo(x.dtype).eps)
    x = torch.full((1, 4), 1e-3, dtype=torch.bfloat16)
    got = torch.nn.functional.rms_norm(x, (4,), None, None).double()
    h = x.double()
    want = h * torch.rsqrt(h.square().mean(-1, keepdim=True) + f32)
    assert torch.allclose(got, want, rtol=2**-8)
