"""Each check fails on a kernel that has the bug it is for, and passes a correct one."""

import contextlib

import pytest
import torch

from normgate import checks, gpushare
from normgate.candidates import Candidate
from normgate.case import Case
from normgate.kernels import baselines as B
from normgate.op import get_op
from normgate.properties.layernorm import LayerNormVariant
from normgate.properties.rmsnorm import RMSNormVariant
from normgate.runner import Task, run_task

CTX = checks.Context(device="cpu")
GEMMA0 = RMSNormVariant(casting="gemma")
RMS = get_op("rmsnorm")


def cand(fn, variant=GEMMA0, op="rmsnorm", **kw):
    return Candidate(name="t", op=op, variant=variant, fn=fn, dtypes=("fp32", "bf16", "fp16"), **kw)


CORRECT = cand(B.torch_rms_norm)


def case(**kw):
    base = dict(op="rmsnorm", shape=(64, 32), dtype="fp32", seed=3)
    base.update(kw)
    return Case(**base)


class _RowOrderDW(torch.autograd.Function):
    """dW summed over rows in a random order each call: what float atomics do."""

    @staticmethod
    def forward(ctx, x, w, eps):
        ctx.save_for_backward(x, w)
        ctx.eps = eps
        return B.rms_norm_eager(x, w, eps, casting="gemma")

    @staticmethod
    def backward(ctx, dy):
        x, w = ctx.saved_tensors
        with torch.enable_grad():
            xx, ww = x.detach().requires_grad_(), w.detach().requires_grad_()
            y = B.rms_norm_eager(xx, ww, ctx.eps, casting="gemma")
            dx, _ = torch.autograd.grad(y, (xx, ww), dy)
        h = x.float()
        xhat = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + ctx.eps)
        terms = (dy.float() * xhat).reshape(-1, x.shape[-1])
        dw = torch.zeros(x.shape[-1])
        for i in torch.randperm(terms.shape[0]).tolist():
            dw += terms[i]
        return dx, dw.to(w.dtype), None


def test_repeat_catches_order_dependent_reduction():
    buggy = cand(lambda x, w, eps: _RowOrderDW.apply(x, w, eps))
    assert checks.repeat(buggy, RMS, case(), CTX).verdict == "fail"
    assert checks.repeat(CORRECT, RMS, case(), CTX).verdict == "pass"


class _UnwrittenPartials(torch.autograd.Function):
    """Per-program partial dW rows in torch.empty; programs without rows leave theirs unwritten."""

    @staticmethod
    def forward(ctx, x, w, eps):
        ctx.save_for_backward(x, w)
        ctx.eps = eps
        return B.rms_norm_eager(x, w, eps, casting="gemma")

    @staticmethod
    def backward(ctx, dy):
        x, w = ctx.saved_tensors
        with torch.enable_grad():
            xx, ww = x.detach().requires_grad_(), w.detach().requires_grad_()
            y = B.rms_norm_eager(xx, ww, ctx.eps, casting="gemma")
            dx, dw_true = torch.autograd.grad(y, (xx, ww), dy)
        rows = x.reshape(-1, x.shape[-1]).shape[0]
        partial = torch.empty(8, x.shape[-1], dtype=torch.float32)
        partial[: min(rows, 8)] = 0
        partial[0] = dw_true.float()
        return dx, partial.sum(0).to(w.dtype), None


def test_poisoned_catches_reads_of_unwritten_memory():
    buggy = cand(lambda x, w, eps: _UnwrittenPartials.apply(x, w, eps))
    small = case(shape=(3, 16))
    assert checks.poisoned(buggy, RMS, small, CTX).verdict == "fail"
    # with torch.empty filled with NaN, accuracy sees it too
    assert checks.accuracy(buggy, RMS, small, CTX).verdict == "fail"
    assert checks.poisoned(CORRECT, RMS, small, CTX).verdict == "pass"
    # enough rows to write every partial: the bug is invisible, and so it should be
    assert checks.poisoned(buggy, RMS, case(shape=(8, 16)), CTX).verdict == "pass"


def chunked_by_batch(x, w, eps):
    """Batches of more than 4 rows accumulate the squares sequentially, smaller ones with the
    vectorized reduction: a kernel whose reduction strategy depends on the batch size."""
    h = x.float()
    n = h.shape[-1]
    rows = h.reshape(-1, n).shape[0]
    sq = h.pow(2)
    ms = sq.cumsum(-1)[..., -1:] / n if rows > 4 else sq.mean(-1, keepdim=True)
    return (h * torch.rsqrt(ms + eps) * w.float()).to(x.dtype)


def test_batch_invariance_catches_batch_dependent_reduction():
    from normgate import candidates

    candidates.register("t_batch_variant", chunked_by_batch, op="rmsnorm", variant=GEMMA0, backward=False,
                        eps_none=False, replace=True)
    lines = []
    run_task(Task("t_batch_variant", "fp32", "batch_invariance", 100), CTX, lines.append)
    candidates.unregister("t_batch_variant")
    assert [ln["verdict"] for ln in lines].count("fail") == 1
    c = case(shape=(32, 97), seed=1)
    assert checks.batch_invariance(CORRECT, RMS, c, CTX).verdict == "pass"


def test_batch_invariance_not_claimed_is_reported_not_judged():
    c = case(shape=(8, 4096), seed=0)  # rows 0..0 alone take the other reduction, and its bits differ here
    variant_claimed = cand(chunked_by_batch, backward=False)
    not_claimed = cand(chunked_by_batch, backward=False, batch_invariant=False)
    assert checks.batch_invariance(variant_claimed, RMS, c, CTX).verdict == "fail"
    res = checks.batch_invariance(not_claimed, RMS, c, CTX)
    assert res.verdict == "skip" and res.reason.startswith("not claimed") and "differs bitwise" in res.reason
    assert checks.batch_invariance(cand(B.torch_rms_norm, batch_invariant=False), RMS, c, CTX).verdict == "pass"


def test_contract_catches_in_place_input_writes_and_wrong_shapes():
    def clobbers_x(x, w, eps):
        y = B.torch_rms_norm(x, w, eps)
        x.detach().zero_()
        return y

    r = checks.contract(cand(clobbers_x, backward=False), RMS, case(), CTX)
    assert r.verdict == "fail" and "input 'x' was modified" in r.reason
    r = checks.contract(cand(lambda x, w, eps: B.torch_rms_norm(x, w, eps).reshape(-1), backward=False),
                        RMS, case(), CTX)
    assert r.verdict == "fail" and "shape" in r.reason
    ok = checks.contract(cand(clobbers_x, backward=False, inplace=True), RMS, case(), CTX)
    assert ok.verdict == "pass"


def test_contract_states_the_mixed_dtype_rule():
    ln = get_op("layernorm")
    promote = cand(lambda x, w, b, eps: torch.nn.functional.layer_norm(x.float(), (x.shape[-1],), w, b, eps),
                   variant=LayerNormVariant(out="promote"), op="layernorm", backward=False)
    c = Case("layernorm", (4, 8), "bf16/fp32")
    assert checks.contract(promote, ln, c, CTX).verdict == "pass"
    promote.variant = LayerNormVariant(out="input")
    r = checks.contract(promote, ln, c, CTX)
    assert r.verdict == "fail" and "dtype float32, expected bfloat16" in r.reason


def test_exceptions_are_errors_with_the_message():
    def raises(x, w, eps):
        raise RuntimeError("kernel launch failed: too many resources")

    r = checks.accuracy(cand(raises), RMS, case(), CTX)
    assert r.verdict == "error" and "too many resources" in r.reason


def test_out_of_memory_is_retried_and_a_lasting_one_says_so(monkeypatch):
    calls = []

    def short_of_memory_once(x, w, eps):
        calls.append(1)
        if len(calls) == 1:  # what another worker's cached memory does to a correct kernel
            raise RuntimeError("CUDA out of memory. Tried to allocate 256.00 MiB")
        return B.torch_rms_norm(x, w, eps)

    assert checks.accuracy(cand(short_of_memory_once), RMS, case(), CTX).verdict == "pass"
    assert len(calls) == 2

    def always_short(x, w, eps):
        calls.append(1)
        raise RuntimeError("CUDA out of memory. Tried to allocate 256.00 MiB")

    calls.clear()
    tries_beyond_the_share = []

    @contextlib.contextmanager
    def recording(device):
        tries_beyond_the_share.append(len(calls))
        yield

    monkeypatch.setattr(checks, "beyond_the_share", recording)
    r = checks.accuracy(cand(always_short), RMS, case(), CTX)
    assert r.verdict == "error" and r.reason.startswith(checks.OUT_OF_MEMORY)
    assert len(calls) == 1 + checks.OOM_RETRIES
    assert tries_beyond_the_share == [checks.OOM_RETRIES]  # the last try only
    monkeypatch.setenv("NORMGATE_WORKERS_PER_GPU", "16")  # on a GPU that 16 workers share
    note = checks._memory_note("cuda")
    assert "16 workers share this GPU" in note and "fewer --workers" in note

    def wrong_once(x, w, eps):  # not memory: never retried, so a flaky kernel is not hidden
        calls.append(1)
        raise RuntimeError("kernel launch failed")

    calls.clear()
    assert checks.accuracy(cand(wrong_once), RMS, case(), CTX).verdict == "error" and len(calls) == 1


def test_the_last_try_goes_beyond_the_share_and_returns_to_it(monkeypatch):
    """On a GPU that workers share, a case too big for one share gets whatever the GPU has free,
    once; then the share is set again and the cache returned, even when that try fails too."""
    fractions, emptied = [], []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction", lambda f, *a: fractions.append(f))
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append(1))
    monkeypatch.setenv("NORMGATE_WORKERS_PER_GPU", "12")
    with pytest.raises(RuntimeError), gpushare.beyond_the_share("cuda"):
        assert fractions == [1.0]
        raise RuntimeError("CUDA out of memory")
    assert fractions == [1.0, gpushare.GPU_MEMORY_SHARED / 12] and emptied
    monkeypatch.setenv("NORMGATE_WORKERS_PER_GPU", "1")  # a GPU of its own: no share to lift
    with gpushare.beyond_the_share("cuda"):
        pass
    with gpushare.beyond_the_share("cpu"):
        pass
    assert len(fractions) == 2


def test_beyond_the_domain_is_a_range_limit_not_a_failure():
    def squares_in_fp16(x, w, eps):
        return (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w).to(x.dtype)

    buggy = cand(squares_in_fp16, backward=False)
    huge_fp16 = case(dtype="fp16", x="huge", shape=(2, 16))
    assert checks.accuracy(buggy, RMS, huge_fp16, CTX).verdict == "fail"
    bf = case(dtype="fp32", x="beyond", shape=(2, 16))
    r = checks.accuracy(cand(B.hf_gemma_rmsnorm, variant=RMSNormVariant(casting="gemma", offset=1.0)),
                        RMS, bf, CTX)
    assert r.verdict in ("range", "pass")


def test_a_search_finds_and_shrinks_a_failure():
    from normgate import candidates

    candidates.register("t_offset_bug", lambda x, w, eps: B.hf_gemma_rmsnorm(x, w - 1, eps), op="rmsnorm",
                        variant=RMSNormVariant(casting="gemma", offset=1.0), replace=True)
    lines = []
    run_task(Task("t_offset_bug", "fp32", "accuracy", 200), CTX, lines.append)
    fail = [ln for ln in lines if ln["verdict"] == "fail"]
    assert len(fail) == 1
    f = fail[0]
    assert f["examples"] <= 50 and "replay" in f
    assert f["shape"][-1] * (len(f["shape"]) and eval("*".join(map(str, f["shape"][:-1])) or "1")) <= 64
    candidates.unregister("t_offset_bug")
