"""GroupNorm, the op added without touching the core: its float64 reference against PyTorch, our
Triton kernel (under the interpreter on the CPU) through every check, the built-in baselines, and
mutants that the checks must kill."""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F
from conftest import compiled_for_hopper

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
if DEVICE == "cpu":
    os.environ.setdefault("TRITON_INTERPRET", "1")

from normgate import checks, runner  # noqa: E402
from normgate.candidates import register, unregister  # noqa: E402
from normgate.case import Case  # noqa: E402
from normgate.kernels import groupnorm as GN  # noqa: E402
from normgate.kernels import references as ref  # noqa: E402
from normgate.properties.groupnorm import GroupNormVariant  # noqa: E402

F64 = torch.float64
FP32_EPS = float(torch.finfo(torch.float32).eps)  # what eps=None means (references.resolve_eps)
# (shape, groups): spatial sizes 1 and odd, no spatial dims, batch 1, one group, one channel per group
GEOMETRIES = [((2, 6, 3, 5), 3), ((1, 4), 2), ((3, 8, 1), 8), ((2, 4, 7), 1), ((1, 6, 1, 1), 2),
              ((2, 12, 3, 1, 5), 4)]


@pytest.mark.parametrize("shape,groups", GEOMETRIES)
def test_reference_matches_torch_in_float64(shape, groups):
    gen = torch.Generator().manual_seed(len(shape) * 7 + groups)
    c = shape[1]
    x = (torch.randn(shape, generator=gen, dtype=F64) * 3 + 5).requires_grad_(True)
    w = torch.randn(c, generator=gen, dtype=F64).requires_grad_(True)
    b = torch.randn(c, generator=gen, dtype=F64).requires_grad_(True)
    dy = torch.randn(shape, generator=gen, dtype=F64)
    mine = ref.GroupNormRef.apply(x, w, b, groups, 1e-5)
    theirs = F.group_norm(x, groups, w, b, 1e-5) if x[0].numel() // groups > 1 else None
    grads = torch.autograd.grad(mine, (x, w, b), dy)
    if theirs is not None:  # F.group_norm refuses a group of one element
        torch.testing.assert_close(mine, theirs, rtol=1e-12, atol=1e-12)
        for a, t in zip(grads, torch.autograd.grad(theirs, (x, w, b), dy), strict=True):
            torch.testing.assert_close(a, t, rtol=1e-10, atol=1e-10)
    assert torch.autograd.gradcheck(lambda x, w, b: ref.GroupNormRef.apply(x, w, b, groups, 1e-2), (x, w, b))


def test_case_key_round_trips():
    case = Case("groupnorm", (2, 8, 5, 3), "bf16/fp32", seed=7, x="outlier", eps=None, groups=4, layout="strided")
    assert case.key() == "groupnorm,2x8x5x3,bf16/fp32,x=outlier,dy=normal,w=normal,eps=None,groups=4,strided,seed=7"
    assert Case.from_key(case.key()) == case


# ---- our kernel, directly, on every code path ----------------------------------------------------


@pytest.fixture(params=["fused", "split"])
def path(request, monkeypatch):
    """A whole group per program (FUSED), and groups split over programs (STATS + NORM) with the
    spatial extent looped over in blocks."""
    if request.param == "split":
        monkeypatch.setattr(GN, "TILE", 8)
        monkeypatch.setattr(GN, "MAX_BLOCK_HW", 4)
    return request.param


@pytest.mark.parametrize("dtype,affine", [("fp32", True), ("fp32", False), ("bf16", True), ("bf16/fp32", True)])
def test_kernel_matches_reference(path, dtype, affine):
    xdt, pdt = {"fp32": (torch.float32,) * 2, "bf16": (torch.bfloat16,) * 2,
                "bf16/fp32": (torch.bfloat16, torch.float32)}[dtype]
    for shape, groups in GEOMETRIES:
        gen = torch.Generator().manual_seed(sum(shape))
        c = shape[1]
        x = (torch.randn(shape, generator=gen, dtype=F64) + 2).to(xdt).to(DEVICE).requires_grad_(True)
        w = torch.randn(c, generator=gen, dtype=F64).to(pdt).to(DEVICE).requires_grad_(True) if affine else None
        b = torch.randn(c, generator=gen, dtype=F64).to(pdt).to(DEVICE).requires_grad_(True) if affine else None
        dy = torch.randn(shape, generator=gen, dtype=F64).to(xdt).to(DEVICE)
        y = GN.group_norm(x, groups, w, b, 1e-5)
        leaves = [t for t in (x, w, b) if t is not None]
        got = torch.autograd.grad(y, leaves, dy)
        assert y.dtype == xdt and y.shape == x.shape
        x64, w64, b64 = (None if t is None else t.detach().to(F64).cpu().requires_grad_(True) for t in (x, w, b))
        y64 = ref.GroupNormRef.apply(x64, w64, b64, groups, 1e-5)
        want = torch.autograd.grad(y64, [t for t in (x64, w64, b64) if t is not None], dy.to(F64).cpu())
        # loose on purpose (the harness's bounds are the tight ones): a few bf16 ULPs, or fp32 ones
        tol = 2.0**-6 if xdt == torch.bfloat16 else 1e-5
        torch.testing.assert_close(y.detach().to(F64).cpu(), y64.detach(), rtol=tol, atol=tol)
        for g, e in zip(got, want, strict=True):
            assert g.dtype == (xdt if g.shape == x.shape else pdt)
            scale = 1.0 + e.abs().max().item()
            torch.testing.assert_close(g.to(F64).cpu(), e, rtol=tol * 4, atol=tol * 4 * scale)


def test_kernel_is_bitwise_deterministic_and_batch_invariant(path):
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(5, 8, 3, 3, generator=gen).to(DEVICE)
    w, b = torch.randn(8, generator=gen).to(DEVICE), torch.randn(8, generator=gen).to(DEVICE)
    dy = torch.randn(5, 8, 3, 3, generator=gen).to(DEVICE)

    def run(xs, dys):
        xs = xs.clone().requires_grad_(True)
        ws, bs = w.clone().requires_grad_(True), b.clone().requires_grad_(True)
        y = GN.group_norm(xs, 4, ws, bs, 1e-5)
        return (y.detach(), *torch.autograd.grad(y, (xs, ws, bs), dys))

    first, again = run(x, dy), run(x, dy)
    for a, c in zip(first, again, strict=True):
        assert torch.equal(a.view(torch.int32), c.view(torch.int32))
    part = run(x[1:3], dy[1:3])
    for a, c in zip(first[:2], part[:2], strict=True):  # y and dx of samples 1..2
        assert torch.equal(a[1:3].view(torch.int32), c.view(torch.int32))


def test_strided_samples_and_bad_arguments():
    buf = torch.randn(3, 6 * 5 + 3)
    x = buf[:, :30].view(3, 6, 5)  # samples in a padded buffer
    assert x.stride(0) == 33
    torch.testing.assert_close(GN.group_norm(x, 3), F.group_norm(x.contiguous(), 3), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError):
        GN.group_norm(x, 4)
    with pytest.raises(ValueError):
        GN.group_norm(x, 3, torch.ones(5))


# ---- through the harness: every check, the baselines, and mutants -----------------------------------


def _run(kernel: str, dtype: str, check: str, examples: int) -> list[dict]:
    lines: list[dict] = []
    ctx = checks.Context(device=DEVICE, interpreter=DEVICE == "cpu")
    runner.run_task(runner.Task(kernel, dtype, check, examples), ctx, lines.append)
    return lines


#: few cases per check: the interpreter costs ~0.1-1.5 s a case (batch invariance builds batches of
#: up to 513 samples either side of its boundaries)
BUDGET = {"accuracy": 8, "contract": 6, "repeat": 4, "poisoned": 4, "batch_invariance": 2, "identities": 4}


@pytest.mark.parametrize("check", list(checks.ALL))
@pytest.mark.parametrize("kernel,dtype", [("triton_groupnorm", "bf16"), ("triton_groupnorm_noaffine", "fp32"),
                                          ("triton_groupnorm", "bf16/fp32")])
def test_triton_groupnorm_passes_every_check(kernel, dtype, check):
    if dtype == "bf16/fp32" and check == "batch_invariance":
        pytest.skip("the batch logic is bf16's (run above); its boundary batches cost ~40 s here")
    lines = _run(kernel, dtype, check, BUDGET[check])
    bad = [ln for ln in lines if ln["verdict"] in ("fail", "error")]
    assert not bad, "\n".join(f"{b['reason']} {b.get('replay')}" for b in bad)
    assert any(ln["verdict"] == "pass" for ln in lines), [ln["reason"] for ln in lines]


@pytest.mark.parametrize("kernel,dtype", [("eager_groupnorm", "bf16"), ("eager_groupnorm", "fp16/fp32"),
                                          ("torch_group_norm_cpu", "fp32"), ("torch_group_norm_cpu", "bf16/fp32")])
def test_baselines_pass(kernel, dtype):
    if DEVICE != "cpu" and kernel.endswith("_cpu"):
        pytest.skip("a CPU candidate")
    for check in ("accuracy", "contract", "identities"):
        bad = [ln for ln in _run(kernel, dtype, check, 30) if ln["verdict"] in ("fail", "error")]
        assert not bad, f"{check}: " + "\n".join(f"{b['reason']} {b.get('replay')}" for b in bad)


def _eager(x, groups, weight, bias, eps, *, stats_of=None, var_about_zero=False, eps_outside=False,
           round_xhat=False):
    """Eager float32 GroupNorm with one bug switched on."""
    n, c = x.shape[0], x.shape[1]
    h = x.float().reshape(n, c, -1)
    src = stats_of(h) if stats_of else h
    grouped = src.reshape(n, groups, -1)
    mean = grouped.mean(-1, keepdim=True)
    var = grouped.square().mean(-1, keepdim=True) if var_about_zero else (grouped - mean).square().mean(-1, True)
    rstd = 1 / (var.sqrt() + eps) if eps_outside else torch.rsqrt(var + eps)
    y = ((h.reshape(n, groups, -1) - mean) * rstd).reshape(n, c, -1)
    if round_xhat:
        y = y.to(x.dtype).float()
    y = y * weight.float().reshape(1, c, 1) + bias.float().reshape(1, c, 1)
    return y.reshape(x.shape).to(x.dtype)


MUTANTS = {
    # the statistics of each group taken over its channels shifted by one: a group boundary off by one
    "boundary_off_by_one": dict(stats_of=lambda h: h.roll(-1, dims=1)),
    "variance_without_mean": dict(var_about_zero=True),
    "eps_outside_sqrt": dict(eps_outside=True),
    # one rounding more than the variant allows: xhat rounded to the activation dtype before the affine
    "double_rounding": dict(round_xhat=True),
}


@pytest.mark.parametrize("mutant", ["none", *MUTANTS])
def test_accuracy_kills_mutants(mutant):
    """Each bug fails the accuracy check; the same eager code without one ("none") passes it."""
    name = f"mutant_groupnorm_{mutant}"
    kw = MUTANTS.get(mutant, {})
    register(name, lambda x, g, w, b, eps: _eager(x, g, w, b, FP32_EPS if eps is None else eps, **kw),
             variant=GroupNormVariant(), dtypes=("bf16",), batch_invariant=False, replace=True)
    try:
        lines = _run(name, "bf16", "accuracy", 60)
    finally:
        unregister(name)
    failed = [ln for ln in lines if ln["verdict"] == "fail"]
    if mutant == "none":
        assert not failed, [ln["replay"] for ln in failed]
        return
    assert failed, f"{mutant} survived {len(lines)} cases"
    assert failed[0]["replay"]


def test_batch_invariance_kills_a_batch_dependent_order():
    """A sample's statistics summed in another order when the batch has more than one sample: right
    to the last bits that the accuracy bound allows, wrong for the batch-invariance check."""
    name = "mutant_groupnorm_batch_order"

    def fn(x, groups, weight, bias, eps):
        flip = (lambda h: h.flip(-1)) if x.shape[0] > 1 else None
        return _eager(x, groups, weight, bias, FP32_EPS if eps is None else eps, stats_of=flip)

    register(name, fn, variant=GroupNormVariant(), dtypes=("fp32",), replace=True)
    try:
        lines = _run(name, "fp32", "batch_invariance", 20)
        accuracy = _run(name, "fp32", "accuracy", 20)
    finally:
        unregister(name)
    assert any(ln["verdict"] == "fail" for ln in lines), [ln["reason"] for ln in lines]
    assert not [ln["replay"] for ln in accuracy if ln["verdict"] == "fail"]


# ---- compiled, not interpreted: the interpreter runs code the compiler refuses ----------------------


#: run without TRITON_INTERPRET (under it, @triton.jit makes interpreted functions, which do not compile)
COMPILE_FOR_HOPPER = """
import inspect, triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from normgate.kernels import groupnorm as GN

params = list(inspect.signature(GN._gn.fn).parameters)
ints = ("sxn", "sxc", "sxs", "sdn", "sdc", "sds", "NG", "N", "C", "HW", "Cg", "K", "G")
shared_stores = {}
for cg, hw, ones in ((10, 1024, ()), (40, 4096, ()), (1, 1, ("HW", "Cg", "K", "sxs", "sds", "N", "C"))):
    cfg = GN.config(cg, hw)
    for stage in (GN.STATS, GN.NORM, GN.FUSED, GN.DOTS, GN.DX, GN.PARAMS):
        consts = dict(STAGE=stage.value, HAS_W=True, HAS_B=True, HAS_DW=True, HAS_DB=True, STORE_STATS=True,
                      RB=cfg.group_rows, ROWS=cfg.rows,
                      BLOCK_HW=GN.PARAMS_BLOCK if stage == GN.PARAMS else cfg.block_hw,
                      BLOCK_K=triton.next_power_of_2(cfg.chunks), BLOCK_CG=triton.next_power_of_2(cg),
                      **dict.fromkeys(ones, 1))
        sig = {p: ("*bf16" if p in ("X", "DY", "OUT", "W", "B", "DW", "DB") else "*fp32") for p in params[:11]}
        sig.update({p: "i32" for p in ints}, eps="fp32")
        sig.update(dict.fromkeys(consts, "constexpr"))
        src = ASTSource(fn=GN._gn, signature=sig, constexprs={(params.index(k),): v for k, v in consts.items()})
        kernel = triton.compile(src, target=GPUTarget("cuda", 90, 32),
                                options={"num_warps": cfg.num_warps, "enable_fp_fusion": False})
        assert kernel.asm["cubin"], (cg, hw, stage)
        shared_stores[(cg, hw, stage.value)] = kernel.asm["ptx"].count("st.shared")
# a tile converted through shared memory is thousands of stores a thread (2,048 for the chunked
# forward on Triton 3.6 before its statistics were scalars); a reduction's exchange is a few
over = {k: v for k, v in shared_stores.items() if v > 64}
assert not over, f"(Cg, HW, stage): shared-memory stores in the PTX {over}"
print("compiled")
"""


@pytest.mark.hopper
def test_every_stage_compiles_for_hopper():
    """Each stage at two diffusion shapes' launch configs (C = 320, 32 x 32 and C = 1280, 64 x 64:
    chunks of a group) and at the tiny one the CPU checks use, with the integers the compiler
    specializes to 1, built to an sm_90 binary by Triton's own compiler: no GPU needed, and the
    interpreter accepts code (a non-constexpr global, an early return) that compiled Triton refuses.
    No stage may convert a tile through shared memory (on Triton 3.6 the forward's did, at 60 GB/s
    on an H200, until its statistics were scalars; this check then fails there with 2,049 and 2,068
    shared stores)."""
    proc = compiled_for_hopper(COMPILE_FOR_HOPPER)
    assert proc.returncode == 0 and "compiled" in proc.stdout, proc.stderr[-3000:]


def test_gpu_tasks_draw_few_geometries():
    """On a GPU every new group geometry is new binaries (seconds each); a task's cases come from a
    few geometries chosen by its seed, edge cases among them (spatial 1, an odd size, one group)."""
    import math

    from hypothesis import HealthCheck, given, settings

    from normgate.candidates import get
    from normgate.op import GPU_PROFILE, get_op

    op, cand = get_op("groupnorm"), get("triton_groupnorm")

    def drawn(profile) -> tuple[set, set]:
        binaries, spatial = set(), set()

        @settings(max_examples=200, database=None, deadline=None, suppress_health_check=list(HealthCheck))
        @given(op.cases(cand, "bf16", profile))
        def draw(case):
            c, g, hw = case.shape[1], case.groups, math.prod(case.shape[2:])
            binaries.add((GN.config(c // g, hw), c, hw, g))
            spatial.add(case.shape[2:])

        draw()
        return binaries, spatial

    binaries, spatial = drawn(GPU_PROFILE.for_widths(3))
    assert len(binaries) <= 45 and (1,) in spatial and any(len(s) == 1 and s[0] % 2 for s in spatial)
    assert len(drawn(GPU_PROFILE)[0]) > 100  # without a task's seed: free
