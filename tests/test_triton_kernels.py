"""Unit tests of our Triton RMSNorm/LayerNorm against the fp64 references.

On a machine without a GPU they run under the Triton interpreter (TRITON_INTERPRET=1, set here
before the kernels are defined) on small shapes; with a GPU they run there. The bounds are simple
and deliberately a little loose (the harness derives the tight ones): the interpreter truncates
fp32 -> bf16 stores instead of rounding, so one final rounding is allowed 1 ULP here, not 0.5.
The roundings a variant mandates on the way (h, llama's xhat) are exact on every backend.
"""

from __future__ import annotations

import dataclasses
import os

import pytest
import torch
from conftest import compiled_for_hopper

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cpu":
    os.environ.setdefault("TRITON_INTERPRET", "1")
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"

from normgate import dtypes  # noqa: E402
from normgate.kernels import _launch as L  # noqa: E402
from normgate.kernels import references as ref  # noqa: E402
from normgate.kernels.layernorm import LayerNorm, layer_norm  # noqa: E402
from normgate.kernels.rmsnorm import GemmaRMSNorm, LlamaRMSNorm, RMSNorm, rms_norm  # noqa: E402

F64 = torch.float64
U32 = 2.0**-24
DT = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _gen(seed):
    return torch.Generator().manual_seed(seed)


def _randn(shape, dtype, seed, scale=1.0, shift=0.0):
    t = torch.randn(shape, generator=_gen(seed), dtype=F64) * scale + shift
    return t.to(dtype).to(DEVICE)


def _check(out, exact, mag, n, what, ulps=1.0, k=4.0):
    """|out - exact| <= ulps * ULP(exact) + k * n * u32 * mag, elementwise."""
    out64 = out.detach().to(F64).cpu()
    exact, mag = exact.cpu(), mag.cpu()
    bound = ulps * dtypes.ulp(exact, out.dtype) + k * n * U32 * mag
    err = (out64 - exact).abs()
    bad = ~(err <= bound)
    assert not bad.any(), f"{what}: {int(bad.sum())} elements out of bound, worst err {err.max():.3g}"


@pytest.fixture
def small_limits(monkeypatch):
    """Force the looped forward and the split backward (column blocks) at small N."""
    monkeypatch.setattr(L, "FWD_MAX_BLOCK", 64)
    monkeypatch.setattr(L, "FWD_LOOP_BLOCK", 32)
    monkeypatch.setattr(L, "BWD_MAX_BLOCK", {"rms": 64, "ln": 64})
    split = L.Config(32, 2, 4, programs_per_sm=1, prefetch=True, split=True, dot_rows=2)
    monkeypatch.setattr(L, "BWD_SPLIT", {"rms": split, "ln": split})


@pytest.fixture(params=["default", "flipped"])
def variant(request, monkeypatch):
    """The tables as they are, and with every backward switch (prefetch, reload_w) flipped: both
    code paths of each."""
    if request.param == "flipped":
        table = {op: [(b, r, w, 1, not f, not rw) for b, r, w, _, f, rw in rows]
                 for op, rows in L.BWD_TABLE.items()}
        monkeypatch.setattr(L, "BWD_TABLE", table)
    return request.param


# ----------------------------------------------------------------------------------------------
# RMSNorm
# ----------------------------------------------------------------------------------------------


def _rms_case(shape, xdt, pdt, casting, offset, seed=0, residual=False, weight=True, x_scale=1.0,
              backward=True):
    n = shape[-1]
    x = _randn(shape, xdt, seed, x_scale).requires_grad_(True)
    w = _randn((n,), pdt, seed + 1, 0.5, 0.5 - offset).requires_grad_(True) if weight else None
    r = _randn(shape, xdt, seed + 2, x_scale).requires_grad_(True) if residual else None
    dy = _randn(shape, xdt, seed + 3)
    out = rms_norm(x, w, 1e-6, r, casting=casting, offset=offset)
    y, h = out if residual else (out, None)
    if backward:
        y.backward(dy)
    return x, w, r, dy, y, h


def _check_h(h, x, r, xdt):
    """h = x + residual rounded once to nearest, on every backend (the kernels round on the bits)."""
    exact = x.detach().to(F64).cpu() + r.detach().to(F64).cpu()
    # same dtypes here: torch's fp64 -> x dtype conversion is then a single rounding
    assert torch.equal(h.detach().to(F64).cpu(), exact.to(xdt).to(F64))


def _rms_expected(x, w, r, dy, xdt, casting, offset, h=None):
    """The references on the kernel's own h (checked separately by _check_h)."""
    n = x.shape[-1]
    h = (x if h is None else h).detach().to(F64).cpu().reshape(-1, n)
    w64 = None if w is None else w.detach().to(F64).cpu()
    y, mag, s = ref.rmsnorm_forward(h, w64, 1e-6, offset)
    if casting == "llama":  # the variant's own double rounding: round xhat to x's dtype first
        xr = s.xhat.to(xdt).to(F64)
        y = xr if w64 is None else xr * (offset + w64)
    dy64 = dy.to(F64).cpu().reshape(-1, n)
    dx, dw = ref.rmsnorm_backward(s, w64, dy64, offset, magnitude=False)
    dxm, dwm = ref.rmsnorm_backward(s, w64, dy64, offset, magnitude=True)
    return y, mag, dx, dxm, dw, dwm


def _check_rms_y(y, ye, mag, n, xdt, casting):
    """y within its casting's bound: ``none`` rounds every step to x's dtype, llama rounds xhat."""
    if casting == "none":
        u = dtypes.unit_roundoff(xdt)
        _check(y, ye, (16 * u / U32 / n) * mag, n, "y")
    elif casting == "llama":
        _check(y, ye, mag * (2.0 ** -dtypes.precision(xdt) / U32 / n), n, "y", ulps=1.0)
    else:
        _check(y, ye, mag, n, "y")


@pytest.mark.parametrize("casting,offset", [("gemma", 0.0), ("gemma", 1.0), ("llama", 0.0), ("none", 0.0)])
@pytest.mark.parametrize("dt", ["fp32", "bf16", "fp16", "bf16/fp32"])
def test_rmsnorm_variants(casting, offset, dt, variant):
    xs, ps = dtypes.split_pair(dt)
    xdt, pdt = DT[xs], DT[ps]
    shape = (2, 20, 100)  # 3-D, N not a power of two, several programs in the backward
    x, w, r, dy, y, _ = _rms_case(shape, xdt, pdt, casting, offset)
    ye, mag, dx, dxm, dw, dwm = _rms_expected(x, w, r, dy, xdt, casting, offset)
    assert y.dtype == xdt and x.grad.dtype == xdt and w.grad.dtype == pdt
    n, m = shape[-1], 40
    _check_rms_y(y.reshape(-1, n), ye, mag, n, xdt, casting)
    _check(x.grad.reshape(-1, n), dx, dxm, n, "dx")
    _check(w.grad, dw, dwm, m + n, "dw")


@pytest.mark.parametrize("looped", [False, True])
@pytest.mark.parametrize("dt", ["bf16", "bf16/fp32", "fp32"])
def test_rmsnorm_residual(dt, looped, request, variant):
    if looped:
        request.getfixturevalue("small_limits")
    xs, ps = dtypes.split_pair(dt)
    xdt, pdt = DT[xs], DT[ps]
    shape = (37, 150)
    x, w, r, dy, y, h = _rms_case(shape, xdt, pdt, "gemma", 0.0, residual=True, backward=False)
    dh = _randn(shape, xdt, 9)
    torch.autograd.backward([y, h], [dy, dh])
    _check_h(h, x, r, xdt)
    ye, mag, dx, dxm, dw, dwm = _rms_expected(x, w, r, dy, xdt, "gemma", 0.0, h)
    _check(y, ye, mag, 150, "y")
    dx_tot = dx + dh.to(F64).cpu()
    mag_tot = dxm + dh.to(F64).cpu().abs()
    _check(x.grad, dx_tot, mag_tot, 150, "dx")
    _check(r.grad, dx_tot, mag_tot, 150, "dresidual")
    _check(w.grad, dw, dwm, 37 + 150, "dw")


@pytest.mark.parametrize("casting", ["gemma", "llama"])
def test_rmsnorm_looped(small_limits, casting):
    x, w, r, dy, y, _ = _rms_case((9, 200), torch.bfloat16, torch.bfloat16, casting, 0.0)
    ye, mag, dx, dxm, dw, dwm = _rms_expected(x, w, r, dy, torch.bfloat16, casting, 0.0)
    _check(y, ye, mag * (2.0**-8 / U32 / 200 if casting == "llama" else 1.0), 200, "y")
    _check(x.grad, dx, dxm, 200, "dx")
    _check(w.grad, dw, dwm, 9 + 200, "dw")


@pytest.mark.parametrize("shape", [(1, 1), (3, 1), (1, 7), (5, 33), (70, 16)])
def test_rmsnorm_shapes(shape):
    x, w, r, dy, y, _ = _rms_case(shape, torch.float32, torch.float32, "gemma", 0.0, seed=3)
    ye, mag, dx, dxm, dw, dwm = _rms_expected(x, w, r, dy, torch.float32, "gemma", 0.0)
    n = shape[-1]
    _check(y, ye, mag, n, "y")
    _check(x.grad, dx, dxm, n, "dx")
    _check(w.grad, dw, dwm, shape[0] + n, "dw")


def test_rmsnorm_no_weight_and_strided_rows():
    big = _randn((6, 80), torch.bfloat16, 4)
    x = big[:, :50]  # rows 80 apart: used as is, no copy
    assert x.stride(0) == 80
    y = rms_norm(x, None, None, casting="gemma")
    ye, mag, _ = ref.rmsnorm_forward(x.to(F64).cpu(), None, float(torch.finfo(torch.float32).eps), 0.0)
    _check(y, ye, mag, 50, "y")
    big3 = _randn((2, 3, 64), torch.float32, 5)
    x3 = big3[..., :40].requires_grad_(False)
    y3 = rms_norm(x3, None, 1e-6, casting="gemma")
    ye3, mag3, _ = ref.rmsnorm_forward(x3.to(F64).cpu().reshape(-1, 40), None, 1e-6, 0.0)
    _check(y3.reshape(-1, 40), ye3, mag3, 40, "y 3-D strided")


@pytest.mark.parametrize("scale", [1e-4, 300.0])
def test_rmsnorm_fp16_range(scale):
    """Squares in fp32: no underflow at 1e-4, no overflow at |x| >= 256 (the Minimind bug)."""
    x, w, r, dy, y, _ = _rms_case((4, 64), torch.float16, torch.float16, "llama", 0.0, x_scale=scale)
    ye, mag, dx, dxm, dw, dwm = _rms_expected(x, w, r, dy, torch.float16, "llama", 0.0)
    assert torch.isfinite(y).all() and torch.isfinite(x.grad).all()
    _check(y, ye, mag * (2.0**-11 / U32 / 64), 64, "y")
    _check(x.grad, dx, dxm, 64, "dx")


def test_rmsnorm_in_place():
    x = _randn((8, 32), torch.bfloat16, 6).requires_grad_(True)
    w = _randn((32,), torch.bfloat16, 7).requires_grad_(True)
    y = rms_norm(x, w, 1e-6, in_place=True)
    dy = _randn((8, 32), torch.bfloat16, 8)
    expected = rms_norm(x, w, 1e-6)
    (gx_ref,) = torch.autograd.grad(expected, x, dy.clone())
    (gx,) = torch.autograd.grad(y, x, dy)
    assert torch.equal(gx, gx_ref)
    assert gx.data_ptr() == dy.data_ptr()  # documented: dx lives in dy's storage


def test_rmsnorm_in_place_decided_by_row_stride_not_batch_size():
    """A strided dy is never overwritten, a row of it alone included: is_contiguous() calls any single
    row contiguous, which gave a sub-batch of one another binary (dx with dy's stride) than its batch."""
    x = _randn((4, 32), torch.float32, 6)
    w = _randn((32,), torch.float32, 7)
    wide = _randn((4, 40), torch.float32, 8)
    for rows in (4, 1):
        xr = x[:rows].clone().requires_grad_(True)
        dy = wide[:rows, :32]  # row stride 40
        before = dy.clone()
        (gx,) = torch.autograd.grad(rms_norm(xr, w, 1e-6, in_place=True), xr, dy)
        assert gx.data_ptr() != dy.data_ptr(), rows
        assert torch.equal(dy, before), rows


# ----------------------------------------------------------------------------------------------
# LayerNorm
# ----------------------------------------------------------------------------------------------


def _ln_run(shape, xdt, pdt, seed=0, weight=True, bias=True, residual=False, shift=0.0, spread=1.0):
    n = shape[-1]
    x = _randn(shape, xdt, seed, spread, shift).requires_grad_(True)
    w = _randn((n,), pdt, seed + 1, 0.5, 1.0).requires_grad_(True) if weight else None
    b = _randn((n,), pdt, seed + 2, 0.1).requires_grad_(True) if bias else None
    r = _randn(shape, xdt, seed + 3, spread).requires_grad_(True) if residual else None
    dy = _randn(shape, xdt, seed + 4)
    out = layer_norm(x, w, b, 1e-5, r)
    y, h = out if residual else (out, x)
    y.backward(dy)
    if residual:
        _check_h(h, x, r, xdt)
    h = h.detach().to(F64).cpu().reshape(-1, n)
    w64 = None if w is None else w.detach().to(F64).cpu()
    b64 = None if b is None else b.detach().to(F64).cpu()
    ye, mag, s = ref.layernorm_forward(h, w64, b64, 1e-5)
    dy64 = dy.to(F64).cpu().reshape(-1, n)
    dx, dw, db = ref.layernorm_backward(s, w64, dy64, b is not None, magnitude=False)
    dxm, dwm, dbm = ref.layernorm_backward(s, w64, dy64, b is not None, magnitude=True)
    m = h.shape[0]
    _check(y.reshape(-1, n), ye, mag, n, "y")
    _check(x.grad.reshape(-1, n), dx, dxm, n, "dx")
    if w is not None:
        assert w.grad.dtype == pdt
        _check(w.grad, dw, dwm, m + n, "dw")
    if b is not None:
        _check(b.grad, db, dbm, m + n, "db")
    if r is not None:
        assert torch.equal(r.grad, x.grad)
    return y


@pytest.mark.parametrize("dt", ["fp32", "bf16", "fp16", "bf16/fp32"])
@pytest.mark.parametrize("affine", [(True, True), (True, False), (False, False)])
def test_layernorm_variants(dt, affine, variant):
    xs, ps = dtypes.split_pair(dt)
    y = _ln_run((2, 20, 100), DT[xs], DT[ps], weight=affine[0], bias=affine[1])
    assert y.dtype == DT[xs]


@pytest.mark.parametrize("looped", [False, True])
def test_layernorm_large_mean_residual(looped, request, variant):
    """A large mean and a small spread (ill-conditioned for E[x^2] - E[x]^2) stays accurate."""
    if looped:
        request.getfixturevalue("small_limits")
    _ln_run((13, 150), torch.float32, torch.float32, shift=1000.0, spread=1e-2)
    _ln_run((13, 150), torch.bfloat16, torch.float32, residual=True)


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (70, 16)])
def test_layernorm_shapes(shape):
    _ln_run(shape, torch.float32, torch.float32, seed=5)


# ----------------------------------------------------------------------------------------------
# Determinism, batch invariance, fully written buffers, round-once residual, modules
# ----------------------------------------------------------------------------------------------


def _grads(fn, x, params, dy):
    for p in [x, *params]:
        p.grad = None
    fn().backward(dy)
    return [t.grad.clone() for t in [x, *params]]


@pytest.mark.parametrize("op", ["rms", "ln"])
def test_deterministic_and_poisoned(op, variant):
    """Bitwise repeatable; dW exactly 0 on all-zero input, with uninitialized memory poisoned."""
    n = 24
    w = _randn((n,), torch.float32, 1).requires_grad_(True)
    b = _randn((n,), torch.float32, 2).requires_grad_(True)
    params = [w] if op == "rms" else [w, b]
    old = torch.are_deterministic_algorithms_enabled(), torch.utils.deterministic.fill_uninitialized_memory
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = True
    try:
        for m in (1, 3, 70):
            for zero in (False, True):
                x = torch.zeros((m, n), device=DEVICE) if zero else _randn((m, n), torch.float32, m)
                x.requires_grad_(True)
                dy = _randn((m, n), torch.float32, 7)

                def fn(x=x):
                    return rms_norm(x, w, 1e-6) if op == "rms" else layer_norm(x, w, b, 1e-5)

                first = _grads(fn, x, params, dy)
                again = _grads(fn, x, params, dy)
                for a, c in zip(first, again, strict=True):
                    assert torch.equal(a.view(torch.int32), c.view(torch.int32))
                if zero:
                    assert torch.equal(first[1], torch.zeros_like(first[1]))  # dW
    finally:
        torch.use_deterministic_algorithms(old[0])
        torch.utils.deterministic.fill_uninitialized_memory = old[1]


@pytest.mark.parametrize("n", [40, 100])  # 100: the split backward
@pytest.mark.parametrize("op", ["rms", "ln"])
def test_batch_invariance(op, n, variant, small_limits):
    """A row's y and dx do not depend on the other rows of the batch (nor on M)."""
    w = _randn((n,), torch.bfloat16, 1).requires_grad_(True)
    b = _randn((n,), torch.bfloat16, 2)
    xb = _randn((37, n), torch.bfloat16, 3)
    dyb = _randn((37, n), torch.bfloat16, 4)

    def run(rows):
        x = xb[rows].clone().requires_grad_(True)
        y = rms_norm(x, w, 1e-6) if op == "rms" else layer_norm(x, w, b, 1e-5)
        y.backward(dyb[rows])
        return y.detach(), x.grad

    y_all, dx_all = run(slice(0, 37))
    for rows in (slice(5, 6), slice(10, 13), slice(20, 37)):
        y, dx = run(rows)
        assert torch.equal(y.view(torch.int16), y_all[rows].view(torch.int16))
        assert torch.equal(dx.view(torch.int16), dx_all[rows].view(torch.int16))


def test_residual_rounds_once():
    """fp16 x plus an fp32 residual on an fp16 midpoint: h must round the exact sum, not the fp32 one."""
    mid = 1.0 + 2.0**-11  # halfway between fp16 1.0 and 1 + 2^-10
    x = torch.full((1, 4), 2.0**-24, dtype=torch.float16, device=DEVICE)  # tiny, fp16 subnormal
    x[0, 2:] *= -1
    r = torch.tensor([[mid, -mid, mid, -mid]], dtype=torch.float32, device=DEVICE)
    _, h = rms_norm(x, None, 1e-6, r, casting="gemma")
    # by hand: torch's fp64 -> fp16 conversion itself rounds twice (through fp32)
    up = 1.0 + 2.0**-10
    exact = torch.tensor([[up, -1.0, 1.0, -up]], dtype=torch.float16, device=DEVICE)
    assert torch.equal(h, exact)
    _, h2 = layer_norm(x, None, None, 1e-5, r)
    assert torch.equal(h2, exact)


@pytest.mark.parametrize("op", ["rms", "ln", "gn"])
def test_a_forward_autograd_does_not_record_stores_no_statistics(op, monkeypatch):
    """Under no_grad or inference_mode, or with nothing requiring grad, the forward is asked for no
    statistics (inside Function.forward ctx.needs_input_grad still follows requires_grad); a
    recorded call is, and its backward runs. y is the same bits every way."""
    from normgate.kernels import groupnorm, layernorm, rmsnorm

    module, call = {"rms": (rmsnorm, lambda x, w: rms_norm(x, w, 1e-6)),
                    "ln": (layernorm, lambda x, w: layer_norm(x, w, w, 1e-5)),
                    "gn": (groupnorm, lambda x, w: groupnorm.group_norm(x, 2, w, w, 1e-5))}[op]
    asked = []
    real = module._forward

    def spy(*args):
        asked.append(args[-1])
        return real(*args)

    monkeypatch.setattr(module, "_forward", spy)
    x = _randn((4, 8), torch.float32, 0).to(DEVICE)
    w = _randn((8,), torch.float32, 1).to(DEVICE).requires_grad_(True)
    recorded = call(x, w)
    with torch.no_grad():
        no_grad = call(x, w)
    with torch.inference_mode():
        inference = call(x, w)
    detached = call(x, w.detach())
    assert asked == [True, False, False, False]
    assert all(y.grad_fn is None for y in (no_grad, inference, detached))
    assert all(torch.equal(y, recorded) for y in (no_grad, inference, detached))
    recorded.sum().backward()
    assert w.grad is not None and torch.isfinite(w.grad).all()


def test_modules():
    tl_ = LayerNorm(16, bias=False)
    assert set(tl_.state_dict()) == set(torch.nn.LayerNorm(16, bias=False).state_dict())
    assert set(LayerNorm(16).state_dict()) == {"weight", "bias"}
    assert set(RMSNorm(16).state_dict()) == set(torch.nn.RMSNorm(16).state_dict())
    assert RMSNorm(16, elementwise_affine=False).weight is None
    llama = LlamaRMSNorm(16, eps=1e-5)
    assert llama.variance_epsilon == 1e-5 and torch.equal(llama.weight, torch.ones(16))
    gemma = GemmaRMSNorm(16)
    assert gemma.eps == 1e-6 and torch.equal(gemma.weight, torch.zeros(16))
    x = _randn((3, 4, 16), torch.float32, 0)
    pairs = ((RMSNorm((4, 16)), torch.nn.RMSNorm((4, 16))), (LayerNorm(16), torch.nn.LayerNorm(16)))
    for mod, refmod in pairs:
        mod, refmod = mod.to(DEVICE), refmod.to(DEVICE)
        torch.testing.assert_close(mod(x), refmod(x), rtol=1e-5, atol=1e-5)
    g = gemma.to(DEVICE)
    expected = (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)) * (1.0 + g.weight)
    torch.testing.assert_close(g(x), expected, rtol=1e-5, atol=1e-5)


def test_round_to_nearest_even():
    """The kernels' own rounding to bf16/fp16 (h, llama's xhat, every step of ``none``) is
    round-to-nearest-even, ties, subnormals, NaN, inf and overflow included, also under the
    interpreter, whose fp32 -> bf16 cast truncates."""
    import triton
    import triton.language as tl

    @triton.jit
    def kernel(X, B, H, N: tl.constexpr):
        cols = tl.arange(0, N)
        v = tl.load(X + cols)
        tl.store(B + cols, L.narrow(v, tl.bfloat16))
        tl.store(H + cols, L.narrow(v, tl.float16))

    g = _gen(11)
    bits = torch.randint(-(2**31), 2**31 - 1, (1024,), generator=g, dtype=torch.int64).to(torch.int32)
    special = torch.tensor([0.0, -0.0, 1.0 + 2.0**-8, 1.0 + 3 * 2.0**-8, -(1.0 + 2.0**-8), 3.3895e38,
                            float("inf"), float("-inf"), float("nan"), 1e-40, 1.0 + 2.0**-11, 65519.0, 65520.0])
    x = torch.cat([bits.view(torch.float32)[: 1024 - special.numel()], special]).to(DEVICE)
    b = torch.empty(1024, dtype=torch.bfloat16, device=DEVICE)
    h = torch.empty(1024, dtype=torch.float16, device=DEVICE)
    kernel[(1,)](x, b, h, N=1024)
    for got, dt in ((b, torch.bfloat16), (h, torch.float16)):
        want = x.to(dt)
        same = (got.view(torch.int16) == want.view(torch.int16)) | (got.isnan() & want.isnan())
        assert same.all(), f"{dt}: {int((~same).sum())} elements differ"


def test_eps_none_is_float32_epsilon():
    x = _randn((5, 40), torch.bfloat16, 12, 1e-3)
    w = _randn((40,), torch.float32, 13)
    b = _randn((40,), torch.float32, 14)
    e = float(torch.finfo(torch.float32).eps)
    assert torch.equal(layer_norm(x, w, b, None), layer_norm(x, w, b, e))
    assert torch.equal(rms_norm(x, w, None, casting="gemma"), rms_norm(x, w, e, casting="gemma"))
    assert torch.equal(RMSNorm(40, eps=None).to(DEVICE)(x), rms_norm(x, torch.ones(40, device=DEVICE), e,
                                                                        casting="gemma"))


def _round_trip(ours, original, x):
    """Parameters move both ways through state_dict, and the two modules then agree."""
    assert ours.state_dict().keys() == original.state_dict().keys()
    for src, dst, seed in ((original, ours, 0), (ours, original, 1)):
        with torch.no_grad():
            for i, p in enumerate(src.parameters()):
                p.copy_(torch.randn(p.shape, generator=_gen(seed * 10 + i), dtype=p.dtype).to(p.device))
        dst.load_state_dict(src.state_dict())
        for k, v in src.state_dict().items():
            assert torch.equal(dst.state_dict()[k], v)
        torch.testing.assert_close(ours(x), original(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["rms", "rms_plain", "ln", "ln_nobias", "ln_plain"])
def test_state_dict_round_trip_torch(kind):
    x = _randn((3, 4, 16), torch.float32, 0)
    ours, original = {
        "rms": (RMSNorm((4, 16), eps=1e-5), torch.nn.RMSNorm((4, 16), eps=1e-5)),
        "rms_plain": (RMSNorm(16, elementwise_affine=False), torch.nn.RMSNorm(16, elementwise_affine=False)),
        "ln": (LayerNorm(16), torch.nn.LayerNorm(16)),
        "ln_nobias": (LayerNorm(16, bias=False), torch.nn.LayerNorm(16, bias=False)),
        "ln_plain": (LayerNorm(16, elementwise_affine=False), torch.nn.LayerNorm(16, elementwise_affine=False)),
    }[kind]
    for attr in ("normalized_shape", "eps", "elementwise_affine"):
        assert getattr(ours, attr) == getattr(original, attr)
    _round_trip(ours.to(DEVICE), original.to(DEVICE), x)


def test_state_dict_round_trip_transformers():
    hf = pytest.importorskip("transformers")
    from transformers.models.gemma.modeling_gemma import GemmaRMSNorm as HFGemma
    from transformers.models.llama.modeling_llama import LlamaRMSNorm as HFLlama

    assert hf is not None
    x = _randn((2, 3, 16), torch.float32, 1)
    llama, hf_llama = LlamaRMSNorm(16, eps=1e-5), HFLlama(16, eps=1e-5)
    assert llama.variance_epsilon == hf_llama.variance_epsilon
    assert torch.equal(llama.weight, hf_llama.weight)
    _round_trip(llama.to(DEVICE), hf_llama.to(DEVICE), x)
    gemma, hf_gemma = GemmaRMSNorm(16, eps=1e-5), HFGemma(16, eps=1e-5)
    assert gemma.eps == hf_gemma.eps and torch.equal(gemma.weight, hf_gemma.weight)  # zero init, used as 1 + w
    _round_trip(gemma.to(DEVICE), hf_gemma.to(DEVICE), x)


def test_every_launch_refuses_fma_contraction():
    """Batch invariance on the GPU rests on it (kernels/_launch.py, FP_FUSION): Triton compiles one
    kernel into several binaries (M == 1, alignments), and contraction could differ between them.
    The interpreter never contracts, so this is checked on the source: every launch passes it."""
    import ast
    import inspect

    from normgate.kernels import layernorm, rmsnorm

    assert L.FP_FUSION is False
    launches = 0
    for module in (L, rmsnorm, layernorm):
        for node in ast.walk(ast.parse(inspect.getsource(module))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Subscript):  # kernel[grid](...)
                launches += 1
                kwargs = {k.arg: ast.unparse(k.value) for k in node.keywords}
                assert kwargs.get("enable_fp_fusion", "").endswith("FP_FUSION"), ast.unparse(node.func)
    assert launches == 7


def test_no_kernel_specializes_on_the_batch():
    """Batch invariance on the GPU rests on it too (kernels/_launch.py): a kernel compiled anew for
    M == 1 (or rows per program == 1) may sum a row in another order. Checked on the source, like
    the FMA rule: every kernel taking M or rows_per_prog lists them in do_not_specialize."""
    import ast
    import inspect

    from normgate.kernels import layernorm, rmsnorm

    batch_args = {"M", "rows_per_prog"}
    checked = 0
    for module in (rmsnorm, layernorm):
        tree = ast.parse(inspect.getsource(module))
        # kernels are what the module launches (kernel[grid](...)); the other jitted functions are
        # helpers, inlined into their kernel
        launched = {n.func.value.id for n in ast.walk(tree) if isinstance(n, ast.Call)
                    and isinstance(n.func, ast.Subscript) and isinstance(n.func.value, ast.Name)}
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef):
                continue
            takes = batch_args & {a.arg for a in node.args.args}
            jit = [d for d in node.decorator_list if "triton.jit" in ast.unparse(d)]
            if not takes or not jit or node.name not in launched:
                continue
            checked += 1
            kwargs = {k.arg: k.value for k in getattr(jit[0], "keywords", [])}
            listed = set(ast.literal_eval(kwargs["do_not_specialize"])) if "do_not_specialize" in kwargs else set()
            assert takes <= listed, f"{node.name} specializes on {sorted(takes - listed)}"
    assert checked == 6


def test_a_single_row_keeps_its_row_stride():
    """The row stride is part of what a kernel is compiled for: a row of a strided batch, alone,
    must reach the kernel with the batch's stride, not the N that reshape gives a single row."""
    big = torch.zeros(2, 192)[:, :189]
    assert L.rows_2d(big[0:1], 189).stride() == L.rows_2d(big, 189).stride() == (192, 1)
    assert L.rows_2d(torch.zeros(2, 3, 200)[0:1, 0:1, :189], 189).stride() == (200, 1)


def test_launch_tables_follow_the_gpu_model(monkeypatch):
    """A GPU model with its own tables gets them, matched on a whole word of the device name; any
    other GPU, and the CPU, gets the H100's."""
    names = {0: "NVIDIA H200", 1: "NVIDIA H100 80GB HBM3", 2: "NVIDIA H200 NVL", 3: "NVIDIA GH200 480GB"}
    monkeypatch.setattr(L, "_gpu_name", names.__getitem__)
    h200 = L.GPU_TABLES["H200"]
    assert L.tables(torch.device("cuda", 0)) is h200
    assert L.tables(torch.device("cuda", 2)) is h200
    for dev in (torch.device("cuda", 1), torch.device("cuda", 3), torch.device("cpu"), None):
        t = L.tables(dev)
        assert (t.fwd, t.bwd, t.fwd_max_block) == (L.FWD_TABLE, L.BWD_TABLE, L.FWD_MAX_BLOCK)
    assert L.fwd_config(32768, "rms", torch.device("cuda", 0)).looped
    assert not L.fwd_config(32768, "rms", torch.device("cuda", 1)).looped
    assert L.bwd_config(8192, "ln", torch.device("cuda", 0)).reload_w
    assert not L.bwd_config(8192, "ln", torch.device("cuda", 1)).reload_w


@pytest.mark.parametrize("model", sorted(L.GPU_TABLES))
def test_every_launch_table_is_well_formed(model):
    """Bounds rising powers of two up to the longest row each path keeps whole; rows and warps
    powers of two; the forward's eviction hints (evict, keep_params) and the backward's switches
    booleans; the looped forward's entries above the longest row kept in registers, looped, one row
    a tile."""
    pow2 = lambda v: v > 0 and v & (v - 1) == 0  # noqa: E731
    for t in (L.tables(None), L.GPU_TABLES[model]):
        for op in ("rms", "ln"):
            for table, widths, flags, top in ((t.fwd[op], (3, 4, 5), 3, t.fwd_max_block),
                                              (t.bwd[op], (6,), 4, L.BWD_MAX_BLOCK[op])):
                bounds = [e[0] for e in table]
                assert bounds == sorted(set(bounds)) and all(map(pow2, bounds)) and bounds[-1] >= top, table
                for entry in table:
                    assert len(entry) in widths and pow2(entry[1]) and pow2(entry[2]), entry
                    assert all(isinstance(v, bool) for v in entry[flags:]), entry
            loop = (t.fwd_loop or {}).get(op, [])
            bounds = [b for b, _ in loop]
            assert bounds == sorted(set(bounds)) and all(map(pow2, bounds)), loop
            assert all(b > t.fwd_max_block for b in bounds), loop  # below it the row stays in registers
            assert all(c.looped and pow2(c.block_n) and pow2(c.num_warps) and c.rows == 1 for _, c in loop), loop


def test_the_forwards_parameters_take_their_eviction_hint_alone_or_with_the_rows(monkeypatch):
    """keep_params: the parameters load evict_last and the row keeps the default policy; evict: in one
    tile the row loads evict_first and the parameters evict_last, looped the row's two passes carry
    the hints and the parameters none."""
    alone = L.Config(1024, 1, 4, keep_params=True)
    assert alone.policies == ("", "") and alone.param_policy == "evict_last"
    assert {k: L.fwd_consts(1024, alone, False)[k] for k in ("KEEP", "DROP", "PARAMS")} == \
        {"KEEP": "", "DROP": "", "PARAMS": "evict_last"}
    tile = L.fwd_consts(1024, L.Config(1024, 1, 4, evict=True), False)
    assert (tile["DROP"], tile["PARAMS"]) == ("evict_first", "evict_last")
    looped = L.fwd_consts(20000, L.Config(4096, 1, 16, looped=True, evict=True), False)
    assert (looped["KEEP"], looped["DROP"], looped["PARAMS"]) == ("evict_last", "evict_first", "")
    assert L.Config(1024, 1, 4).param_policy == ""
    monkeypatch.setattr(L, "tables", lambda device=None: L.GPU_TABLES["H200"])  # an entry's fifth field
    assert L.fwd_config(2048, "ln") == L.Config(2048, 1, 4, keep_params=True)


@pytest.mark.parametrize("model", sorted(L.GPU_TABLES))
@pytest.mark.parametrize("n", [1024, 2048, 8192, 20000])
def test_each_gpu_models_tables_compute_the_same_function(model, n, monkeypatch):
    """Another GPU model's entries (its rows per tile, warps, the forward's eviction hints on the row
    and the parameters or on the parameters alone, LayerNorm's 8192 backward with prefetch and
    reload_w, the looped forward with per-lane statistics above 4096 on an H200) run the same kernels
    to the same bounds, here at the N where they differ from the H100's (8192 over whole chunks, a
    constant trip count; 20000 with a partial last chunk)."""
    def configs():
        return [f(n, op) for f in (L.fwd_config, L.bwd_config) for op in ("rms", "ln")]

    h100 = configs()
    monkeypatch.setattr(L, "tables", lambda device=None: L.GPU_TABLES[model])
    assert configs() != h100
    x, w, r, dy, y, _ = _rms_case((3, n), torch.bfloat16, torch.float32, "gemma", 0.0, seed=7)
    ye, mag, dx, dxm, dw, dwm = _rms_expected(x, w, r, dy, torch.bfloat16, "gemma", 0.0)
    _check(y, ye, mag, n, "y")
    _check(x.grad, dx, dxm, n, "dx")
    _check(w.grad, dw, dwm, 3 + n, "dw")
    _ln_run((3, n), torch.bfloat16, torch.float32, seed=7)


@pytest.mark.parametrize("n", [200, 256])  # a partial last chunk; whole chunks (a constant trip count)
@pytest.mark.parametrize("casting", ["llama", "gemma", "none"])
def test_looped_forward_with_sums_per_lane_keeps_the_bounds(casting, n, monkeypatch):
    """RMSNorm's looped forward with the squares summed per column lane (Config.lanes, with the
    eviction hints): the same bounds as every other config, a residual included."""
    monkeypatch.setattr(L, "fwd_config", lambda *a, **k: L.Config(64, 1, 4, looped=True, evict=True, lanes=True))
    x, w, r, dy, y, _ = _rms_case((3, n), torch.bfloat16, torch.float32, casting, 0.0, seed=11)
    ye, mag, *_ = _rms_expected(x, w, r, dy, torch.bfloat16, casting, 0.0)
    _check_rms_y(y, ye, mag, n, torch.bfloat16, casting)


@pytest.mark.parametrize("n", [150, 256])  # a partial last chunk; whole chunks (a constant trip count)
def test_layernorm_looped_forward_in_three_passes_keeps_the_bounds(n, monkeypatch):
    """LayerNorm's looped forward with its statistics per column lane (Config.lanes: the sum, then
    the squared deviations about the mean, then y): accurate for a large mean and a small spread,
    and with a residual of another dtype."""
    monkeypatch.setattr(L, "fwd_config", lambda *a, **k: L.Config(64, 1, 4, looped=True, evict=True, lanes=True))
    _ln_run((5, n), torch.float32, torch.float32, shift=1000.0, spread=1e-2)
    _ln_run((5, n), torch.bfloat16, torch.float32, residual=True, seed=3)


def test_tails_and_chunks_are_functions_of_n_alone():
    """A forward launch drops the row mask only with one row a tile (the grid then has one program a
    row) and the column mask only for rows of whole tiles; a looped launch with per-lane statistics
    over whole chunks gets their number (its loops' constant trip count). None depends on the batch."""
    assert L.Config(1024, 4, 4).tails(1024) == (True, False)
    assert L.Config(1024, 1, 4).tails(1000) == (False, True)
    assert L.Config(1024, 1, 4, fold_tails=False).tails(1024) == (True, True)
    assert L.Config(1024, 1, 4).chunks(1024) == 0  # not looped
    assert L.Config(4096, 1, 8, looped=True, lanes=True).chunks(32768) == 8
    assert L.Config(4096, 1, 8, looped=True).chunks(32768) == 0  # one merge a chunk: N's trip count
    assert L.Config(4096, 1, 8, looped=True, lanes=True).chunks(20000) == 0
    assert L.Config(4096, 1, 8, looped=True, lanes=True, fold_tails=False).chunks(32768) == 0


@pytest.mark.parametrize("cfg", [
    L.Config(64, 1, 4), L.Config(64, 4, 4),
    L.Config(32, 1, 4, looped=True), L.Config(32, 1, 4, looped=True, evict=True, lanes=True),
    L.Config(32, 2, 4, looped=True, lanes=True),
], ids=["tile", "tile-rows", "looped", "looped-lanes", "looped-lanes-rows"])
@pytest.mark.parametrize("n", [64, 50, 96])
def test_folded_tails_give_the_same_bits(cfg, n, monkeypatch):
    """Folding the masks the launch rules out (Config.fold_tails) and the looped path's constant trip
    count change which code is generated, never the arithmetic: y, h and the statistics are the same
    bits as with every mask kept, for both ops, whole tiles and partial ones."""
    if not cfg.looped and n > cfg.block_n:
        pytest.skip("the row does not fit the tile")
    g = torch.Generator().manual_seed(n)
    x = torch.randn(7, n, generator=g).to(torch.bfloat16).requires_grad_(True)
    r = torch.randn(7, n, generator=g).requires_grad_(True)
    w = torch.randn(n, generator=g).requires_grad_(True)
    b = torch.randn(n, generator=g).requires_grad_(True)

    def outputs(fold):
        monkeypatch.setattr(L, "fwd_config", lambda *a, **k: dataclasses.replace(cfg, fold_tails=fold))
        rms = rms_norm(x, w, 1e-6, residual=r)
        ln = layer_norm(x, w, b, 1e-5, r)
        grads = torch.autograd.grad([rms[0].float().sum() + ln[0].float().sum()], [x, w, b])
        return [*rms, *ln, *grads]

    for a, c in zip(outputs(True), outputs(False), strict=True):
        assert torch.equal(a.view(torch.uint8), c.view(torch.uint8))


@pytest.mark.parametrize("rows", [1, 4])
@pytest.mark.parametrize("n", [64, 50])
def test_early_parameters_give_the_same_bits(rows, n, monkeypatch):
    """The parameters loaded with the row instead of after its sums (``fwd_launch``'s EARLY, chosen
    by M) move two loads, never an operation: y, h and the statistics are the same bits, for both
    ops, whole tiles and partial ones, a tail tile of rows included."""
    g = torch.Generator().manual_seed(n + rows)
    x = torch.randn(7, n, generator=g).to(torch.bfloat16)
    r = torch.randn(7, n, generator=g)
    w, b = torch.randn(n, generator=g), torch.randn(n, generator=g)
    monkeypatch.setattr(L, "fwd_config", lambda *a, **k: L.Config(64, rows, 4))
    launch = L.fwd_launch

    def outputs(early):
        monkeypatch.setattr(L, "fwd_launch", lambda m, cfg, dev: (launch(m, cfg, dev)[0], early))
        with torch.no_grad():
            return [*rms_norm(x, w, 1e-6, residual=r), *layer_norm(x, w, b, 1e-5, r)]

    for a, c in zip(outputs(False), outputs(True), strict=True):
        assert torch.equal(a.view(torch.uint8), c.view(torch.uint8))


def test_parameters_load_early_only_in_one_wave():
    """EARLY where the grid is one wave (at most CPU_PROGRAMS rows on the CPU, the built-in kernels'
    declared M boundary); never on the looped path, whose chunks load their own parameters."""
    cpu = torch.device("cpu")
    assert L.fwd_launch(L.CPU_PROGRAMS, L.Config(64, 1, 4), cpu) == (L.CPU_PROGRAMS, True)
    assert L.fwd_launch(L.CPU_PROGRAMS + 1, L.Config(64, 1, 4), cpu) == (L.CPU_PROGRAMS + 1, False)
    assert L.fwd_launch(3, L.Config(64, 2, 4), cpu) == (2, True)
    assert L.fwd_launch(3, L.Config(32, 1, 4, looped=True), cpu) == (3, False)
    from normgate.candidates import get

    assert L.CPU_PROGRAMS in get("triton_rmsnorm_llama").boundaries["m"]


@pytest.mark.parametrize("in_place", [False, True])
@pytest.mark.parametrize("m", [2, 4])
def test_small_batch_weight_gradients_from_column_blocks(m, in_place, monkeypatch):
    """Where each backward program would own one tile of rows (``dw_columns``: at most CPU_PROGRAMS
    rows here), programs of the same launch sum dW and dB over the rows in column blocks from h and
    dy, beside those writing dx (RMSNorm with dx written over dy keeps the partials: those programs
    would read what the others overwrite). dx is the same bits as with the partials, dW and dB agree
    with them to float32 rounding and with float64."""
    assert L.dw_columns(m, L.bwd_config(4000, "rms"), torch.device("cpu")) == L.DW_TILE
    assert L.dw_columns(L.CPU_PROGRAMS + 1, L.bwd_config(4000, "rms"), torch.device("cpu")) is None
    assert L.dw_columns(1, L.bwd_config(4000, "rms"), torch.device("cpu")) is None  # one program writes dW
    with monkeypatch.context() as sms:  # 132 SMs: narrow rows (16 a tile) qualify up to the cap only
        sms.setattr(L, "_slots", lambda device: 132)
        narrow = L.Config(256, 16, 4)
        assert L.dw_columns(L.DW_MAX_ROWS, narrow, torch.device("cpu")) == L.DW_TILE
        assert L.dw_columns(L.DW_MAX_ROWS + 1, narrow, torch.device("cpu")) is None
    g = torch.Generator().manual_seed(m)
    x = torch.randn(m, 4000, generator=g, dtype=torch.float64)
    dy = torch.randn(m, 4000, generator=g, dtype=torch.float64)
    w = torch.randn(4000, generator=g, dtype=torch.float64)
    b = torch.randn(4000, generator=g, dtype=torch.float64)

    def grads(on):
        monkeypatch.setattr(L, "DW_COLUMNS_ON", on)
        out = []
        xx, ww, bb = (t.float().requires_grad_(True) for t in (x, w, b))
        out += torch.autograd.grad(rms_norm(xx, ww, 1e-6, in_place=in_place), [xx, ww], dy.float().clone())
        out += torch.autograd.grad(layer_norm(xx, ww, bb, 1e-5), [xx, ww, bb], dy.float())
        return out

    cols, parts = grads(True), grads(False)
    for k in (0, 2):  # dx of each op
        assert torch.equal(cols[k], parts[k])
    xhat_rms = x * torch.rsqrt(x.pow(2).mean(1, keepdim=True) + 1e-6)
    xhat_ln = (x - x.mean(1, keepdim=True)) * torch.rsqrt(x.var(1, unbiased=False, keepdim=True) + 1e-5)
    for k, want in ((1, (dy * xhat_rms).sum(0)), (3, (dy * xhat_ln).sum(0)), (4, dy.sum(0))):
        torch.testing.assert_close(cols[k], parts[k], rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(cols[k].double(), want, rtol=1e-5, atol=1e-5)


# Both launch switches chosen by M (the forward's EARLY; the backward's dW programs, ``dw_columns``),
# compiled for sm_90: the type signature of every reduction, its input layout spelled out (a
# reduction's order is a function of that layout), with each switch and without.
# compile_for_hopper(kernel, constexprs, warps): a kernel of ours built for sm_90 by Triton's own
# compiler, bf16 tensors (fp32 statistics and partials)
HOPPER = r"""
import inspect, re, triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from normgate.kernels import _launch as L, layernorm as LN, rmsnorm as R

def compile_for_hopper(fn, consts, warps):
    params = list(inspect.signature(fn.fn).parameters)
    floats = ("eps", "offset")
    ints = ("M", "N", "rows_per_prog", "n_chunks", "dx_programs")
    sig = {p: ("constexpr" if p in consts else "fp32" if p in floats else "i32" if p in ints or p.startswith("stride")
               else "*fp32" if p in ("RSTD", "MEAN", "D", "DWP", "DBP") else "*bf16") for p in params}
    src = ASTSource(fn=fn, signature=sig, constexprs={(params.index(k),): v for k, v in consts.items()})
    return triton.compile(src, target=GPUTarget("cuda", 90, 32),
                          options={"num_warps": warps, "enable_fp_fusion": L.FP_FUSION})
"""

TABLE_LAUNCHES = HOPPER + r"""
FWD = {"rms": (R._rms_fwd, dict(CASTING=0, HAS_W=True, HAS_RES=False, ODD=False, STORE_RSTD=True)),
       "ln": (LN._ln_fwd, dict(HAS_W=True, HAS_B=True, HAS_RES=False, ODD=False, STORE_STATS=True))}
BWD = {"rms": (R._rms_bwd, R._rms_bwd_dots, dict(HAS_W=True, HAS_DW=True, HAS_DH=False, HAS_DR=False)),
       "ln": (LN._ln_bwd, LN._ln_bwd_dots, dict(HAS_W=True, HAS_DW=True, HAS_DB=True, HAS_DH=False, HAS_DR=False))}
built = set()

def build(fn, consts):
    key = (fn.fn.__name__, tuple(sorted(consts.items())))
    if key not in built:
        built.add(key)
        consts = dict(consts)
        warps = consts.pop("num_warps")
        compile_for_hopper(fn, consts, warps)

for t in (L.tables(None), *L.GPU_TABLES.values()):
    L.tables = lambda device=None, _t=t: _t
    for op in ("rms", "ln"):
        bounds = [e[0] for e in t.fwd[op]] + [b for b, _ in (t.fwd_loop or {}).get(op, [])]
        bounds += [e[0] for e in t.bwd[op]]
        for n in sorted(set(bounds)) + [20000, 40000]:  # and rows ending in a partial chunk
            cfg = L.fwd_config(n, op)
            fn, fixed = FWD[op]
            for early in {False, not cfg.looped}:
                build(fn, dict(fixed, **L.fwd_consts(n, cfg, early)))
            cfg = L.bwd_config(n, op)
            fn, dots, fixed = BWD[op]
            # the dW programs' tile: none (partials or one program), or the small batch's
            for rows, block in {(1, 0), (1, 0) if cfg.split else L.DW_TILE}:
                build(fn, dict(fixed, **L.bwd_consts(cfg), DW_ROWS=rows, DW_BLOCK=block))
            if cfg.split:
                build(dots, dict(HAS_W=True, **L.dots_consts(cfg)))
# the variants' switches (residual, its other dtype, no weight or bias, the other castings; the
# backward's dh, dr and no dW), over one launch in a tile and one looped, of the last tables
for n in (4096, 20000):
    for op in ("rms", "ln"):
        cfg = L.fwd_config(n, op)
        fn, fixed = FWD[op]
        variants = [dict(HAS_RES=True), dict(HAS_RES=True, ODD=True), dict(HAS_W=False)]
        variants += [dict(CASTING=1), dict(CASTING=2), dict(CASTING=2, HAS_RES=True, ODD=True)] if op == "rms" \
            else [dict(HAS_B=False)]
        variants.append(dict(STORE_RSTD=False) if op == "rms" else dict(STORE_STATS=False))  # not recorded
        for v in variants:
            build(fn, dict(fixed, **v, **L.fwd_consts(n, cfg, False)))
        cfg = L.bwd_config(n, op)
        fn, dots, fixed = BWD[op]
        for v in (dict(HAS_DH=True), dict(HAS_DR=True), dict(HAS_W=False, HAS_DW=False)):
            build(fn, dict(fixed, **v, **L.bwd_consts(cfg), DW_ROWS=1, DW_BLOCK=0))
print(f"built {len(built)}")
"""


@pytest.mark.hopper
def test_every_launch_of_the_tables_compiles_for_hopper():
    """Each forward and backward binary a GPU model's tables can launch (tile and looped, the
    parameters before or after the sums, eviction hints or not, whole and partial chunks; the fused
    backward with the partials or the small batch's dW programs, the split one with its dot
    products), and each variant's switches over a tile and a looped launch, builds for sm_90 with
    Triton's own compiler: the interpreter that runs everything else
    on the CPU accepts code the compiler rejects (a constexpr argument left to its default in a
    nested call did, on Triton 3.6)."""
    proc = compiled_for_hopper(TABLE_LAUNCHES)
    assert proc.returncode == 0 and "built" in proc.stdout, proc.stderr[-3000:]


REDUCTION_LAYOUTS = HOPPER + r"""
def reductions(fn, consts, warps):
    ttgir = compile_for_hopper(fn, consts, warps).asm["ttgir"]
    layouts = dict(re.findall(r"^(#\w+) = (.*)$", ttgir, re.M))
    ends = [l.strip() for l in ttgir.splitlines() if l.strip().startswith("})") and "tensor" in l]
    sigs = [re.sub(r"loc\(.*?\)$", "", l) for l in ends]
    return [re.sub(r"#\w+", lambda m: layouts.get(m.group(0), m.group(0)), s).strip() for s in sigs]

FWD = dict(HAS_W=True, HAS_RES=False, ODD=False, LOOPED=False, LANES=False, COL_TAIL=False, CHUNKS=0)
for n, rows, warps in ((4096, 1, 8), (1024, 2, 4), (256, 16, 4)):
    tile = dict(FWD, ROWS=rows, BLOCK_N=n, ROW_TAIL=rows > 1)
    for fn, extra, count, store in ((R._rms_fwd, dict(CASTING=0, STORE_RSTD=True), 1, "STORE_RSTD"),
                                    (LN._ln_fwd, dict(HAS_B=True, STORE_STATS=True), 2, "STORE_STATS")):
        # with and without the eviction hints on the row and the parameters (Config.evict) or on the
        # parameters alone (Config.keep_params): none changes a layout; nor does a forward that
        # autograd does not record storing no statistics (L.records_grad)
        late, *others = (
            reductions(fn, dict(tile, **dict(extra, **{store: st}), EARLY=e, KEEP=keep, DROP=drop, PARAMS=params),
                       warps)
            for keep, drop, params in (("", "", ""), ("evict_last", "evict_first", "evict_last"),
                                       ("", "", "evict_last")) for e in (False, True) for st in (True, False))
        assert len(late) == count and all(o == late for o in others), (fn, n, late, others)
    other = reductions(R._rms_fwd, dict(tile, CASTING=0, STORE_RSTD=True, EARLY=False, KEEP="", DROP="",
                                        PARAMS=""), warps * 2)
    assert other != late, "a layout change must show"
    # the parameters' hint reaches the binary, alone (the row's loads keep the default policy)
    for fn, extra in ((R._rms_fwd, dict(CASTING=0, STORE_RSTD=True)), (LN._ln_fwd, dict(HAS_B=True, STORE_STATS=True))):
        plain, kept = (compile_for_hopper(fn, dict(tile, **extra, EARLY=False, KEEP="", DROP="", PARAMS=p), warps)
                       .asm["ptx"] for p in ("", "evict_last"))
        assert "evict_" not in plain and "evict_last" in kept and "evict_first" not in kept, fn
BWD = dict(HAS_W=True, HAS_DH=False, HAS_DR=False, SPLIT=False, RELOAD_W=False)
for n, rows, warps, prefetch in ((4096, 1, 8, True), (1024, 4, 4, False)):
    tile = dict(BWD, ROWS=rows, BLOCK_N=n, PREFETCH=prefetch)
    for fn, sums, dw in ((R._rms_bwd, 1, ("HAS_DW",)), (LN._ln_bwd, 2, ("HAS_DW", "HAS_DB"))):
        on = dict.fromkeys(dw, True)
        partials = reductions(fn, dict(tile, **on, DW_ROWS=1, DW_BLOCK=0), warps)
        roles = reductions(fn, dict(tile, **on, DW_ROWS=64, DW_BLOCK=32), warps)
        assert len(partials) == len(roles) == sums + len(dw), (fn, partials, roles)
        # in program order, the row sums first in both
        assert roles[:sums] == partials[:sums], (fn, n, partials, roles)
print("same layouts")
"""


@pytest.mark.hopper
def test_launch_switches_chosen_by_m_keep_the_reduction_layouts():
    """What batch invariance rests on where a launch differs by M: the forward's parameters loaded
    before or after the sums (with the eviction hints or without; with its statistics stored or
    not, as autograd records the call or not), and the backward's row programs
    with dW or beside programs summing it, compile (for sm_90, by Triton's own compiler: no GPU
    needed) to reductions over the same layouts, so every row sum is taken in the same order; a warp
    count that does change the layout shows as a change."""
    proc = compiled_for_hopper(REDUCTION_LAYOUTS)
    assert proc.returncode == 0 and "same layouts" in proc.stdout, proc.stderr[-3000:]
