"""Guard bands, compute-sanitizer on memory-smelling failures, M and N boundaries, the identities
check and the sampled reference of huge cases: each shown failing a kernel with the bug and passing
a correct one."""

import json
import os
import stat
import time

import pytest
import torch

from normgate import candidates, checks, guards, sanitizer
from normgate.case import Case
from normgate.checks import Context
from normgate.op import CPU_PROFILE, get_op
from normgate.properties import boundaries as NB
from normgate.properties.layernorm import LayerNormVariant
from normgate.properties.rmsnorm import RMSNormVariant

CTX = Context("cpu", interpreter=False)


def _rms(x, w, eps):
    h = x.float()
    return (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + (eps or 1.2e-7)) * w.float()).to(x.dtype)


def _cand(name, fn, op="rmsnorm", **kw):
    variant = RMSNormVariant(casting="gemma") if op == "rmsnorm" else LayerNormVariant()
    return candidates.Candidate(name=name, op=op, variant=variant, fn=fn, dtypes=("fp32",), **kw)


class _RMSFunction(torch.autograd.Function):
    """_rms forward; a subclass's backward is the one under test."""

    @staticmethod
    def forward(ctx, x, w, eps):
        ctx.save_for_backward(x, w)
        ctx.eps = eps
        return _rms(x, w, eps)


class _SpillDx(_RMSFunction):
    """dx written into dy's storage in place, plus one element past dy's last row."""

    @staticmethod
    def backward(ctx, dy):
        x, w = ctx.saved_tensors
        with torch.enable_grad():
            xx, ww = x.detach().requires_grad_(), w.detach().requires_grad_()
            dx, dw = torch.autograd.grad(_rms(xx, ww, ctx.eps), (xx, ww), dy)
        dy.copy_(dx)
        last = dy.reshape(-1, dy.shape[-1])[-1]
        torch.as_strided(last, (1,), (1,), last.storage_offset() + dy.shape[-1]).fill_(0.0)
        return dy, dw, None


def test_guard_names_tensor_side_and_offset():
    x = torch.randn(4, 7)
    v, g = guards.place("x", x)
    assert torch.equal(v, x) and v.stride() == x.stride() and not g.hits()
    assert (v.data_ptr() - g.bits.data_ptr()) % 512 == 0  # the band keeps an allocation's alignment
    torch.as_strided(v, (1,), (1,), v.storage_offset() + 28).fill_(1.0)
    assert g.hits() == ["x: written past its end, at element offset +1 after the last element "
                        "(1 elements of the back guard)"]
    padded = torch.full((4, 12), float("nan"))[:, :7]
    padded.copy_(x)
    v, g = guards.place("grad:y", padded)
    assert v.stride() == (12, 1)
    torch.as_strided(v, (1,), (1,), v.storage_offset() + 8).fill_(2.0)
    torch.as_strided(v, (1,), (1,), v.storage_offset() - 3).fill_(2.0)
    hits = g.hits()
    assert any("before its start, at element offset -3" in h for h in hits)
    assert any("between its rows, at element offset 8" in h for h in hits)
    for dt in (torch.float32, torch.bfloat16, torch.float16):  # a read of a guard gives NaN
        v, _ = guards.place("w", torch.randn(5).to(dt))
        assert torch.isnan(torch.as_strided(v, (1,), (1,), v.storage_offset() - 1)).all()


def test_a_write_past_dy_fails_every_check_and_a_correct_kernel_passes():
    op = get_op("rmsnorm")
    spill = _cand("t_spill", _SpillDx.apply, inplace=True)
    right = _cand("t_right", _rms)
    case = Case("rmsnorm", (3, 5), "fp32", seed=1)
    for check in ("accuracy", "contract", "repeat", "identities"):
        res = checks.ALL[check](spill, op, case, CTX)
        assert res.verdict == "fail" and "grad:y: written past its end, at element offset +1" in res.reason, res
        assert checks.ALL[check](right, op, case, CTX).verdict == "pass"


def test_guard_cost_per_case_is_small():
    """Placing and comparing the guards of one case's buffers (x, weight, dy of 64 x 1024 fp32,
    strided): measured here, written down in docs/detection.md."""
    op = get_op("rmsnorm")
    case = Case("rmsnorm", (64, 1024), "fp32", layout="strided", seed=3)
    inputs = op.make_inputs(case, RMSNormVariant(casting="gemma"), "cpu")
    t0 = time.perf_counter()
    for _ in range(20):
        fences = [guards.place(k, v)[1] for k, v in inputs.items()]
        guards.verify(fences)
    per_case = (time.perf_counter() - t0) / 20
    print(f"guards: {per_case * 1e3:.2f} ms per case")
    assert per_case < 0.05


FAKE = """#!/bin/sh
echo "$@" > "{log}"
echo "========= COMPUTE-SANITIZER"
echo "========= Invalid __global__ write of size 4 bytes"
echo "=========     at 0x1a0 in _backward"
echo "=========     by thread (5,0,0) in block (0,0,0)"
echo "=========     Address 0x7f00 is out of bounds"
echo "========= ERROR SUMMARY: 1 error"
exit 1
"""


def test_sanitizer_reruns_a_memory_failure_once(tmp_path, monkeypatch):
    log = tmp_path / "argv"
    exe = tmp_path / "compute-sanitizer"
    exe.write_text(FAKE.format(log=log))
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    line = {"verdict": "fail", "reason": "out-of-bounds write: grad:y: written past its end",
            "replay": "normgate replay 'k@contract:rmsnorm,1x1,fp32,x=normal,dy=normal,w=normal,eps=1e-06,"
                      "contiguous,seed=0' --load f.py"}
    assert sanitizer.explain(dict(line), "cpu") == line  # only on a CUDA device
    out = sanitizer.explain(dict(line), "cuda")
    assert out["sanitizer"]["finding"].startswith("Invalid __global__ write of size 4 bytes; at 0x1a0 in _backward")
    assert "compute-sanitizer: Invalid __global__ write" in out["reason"]
    argv = log.read_text().split()
    assert argv[:2] == ["--tool", "memcheck"] and "replay" in argv and argv[-2:] == ["--device", "cuda"]
    # a failure that does not smell of memory is not rerun
    plain = dict(line, reason="y: 3 ULP max, bound 0.5 ULP")
    assert "sanitizer" not in sanitizer.explain(plain, "cuda")
    json.dumps(out)


def _fake_sanitizer(tmp_path, finding_lines: str):
    exe = tmp_path / "compute-sanitizer"
    exe.write_text("#!/bin/sh\necho '========= COMPUTE-SANITIZER'\n" + "".join(
        f"echo '========= {ln}'\n" for ln in finding_lines.splitlines()) + "exit 1\n")
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    return str(exe)


STICKY = "CUDA error: an illegal memory access was encountered"


def test_a_crash_is_a_memory_fault_only_when_memcheck_pins_it_on_the_kernel(tmp_path):
    line = {"verdict": "error", "reason": f"AcceleratorError: {STICKY}; the device was unusable after this case",
            "replay": "normgate replay 'k@accuracy:rmsnorm,524289x4096,bf16,x=normal,dy=normal,w=normal,"
                      "eps=1e-06,contiguous,seed=0' --load f.py"}
    faults = {
        "candidate": ("Invalid __global__ read of size 2 bytes\n    at _rms_fwd+0x3a0\n"
                      "    by thread (0,0,0) in block (524288,0,0)\n    Address 0x7efd00000000 is out of bounds",
                      "fail"),
        "torch": ("Invalid __global__ write of size 4 bytes\n"
                  "    at void at::native::vectorized_elementwise_kernel+0x80", "error"),
        "none": ("ERROR SUMMARY: 0 errors", "error"),
        "ecc": ("Program hit cudaErrorECCUncorrectable (error 214) due to uncorrectable ECC error", "error"),
    }
    for name, (text, verdict) in faults.items():
        (tmp_path / name).mkdir()
        exe = _fake_sanitizer(tmp_path / name, text)
        out = sanitizer.attribute(dict(line), "cuda", exe)
        assert out["verdict"] == verdict, (name, out)
        assert out["reason"].startswith("memory fault: ") == (verdict == "fail"), out["reason"]
        assert "compute-sanitizer: " in out["reason"] and out["sanitizer"]["exit"] == 1
    assert sanitizer.attribute(dict(line), "cpu") == line  # no sanitizer on the CPU: stays an error
    passed = dict(line, verdict="fail")
    assert "sanitizer" not in sanitizer.attribute(passed, "cuda", exe)  # only errors are attributed


def test_a_sticky_crash_goes_through_memcheck_in_the_runner(tmp_path, monkeypatch):
    """The runner hands the line of a case that left the device unusable to sanitizer.attribute:
    with memcheck naming the candidate's kernel, the task ends in a fail, not an error."""
    from normgate import runner

    def crashes(x, w, eps):
        if x.shape[-1] > 1:
            raise RuntimeError(STICKY)
        return _rms(x, w, eps)

    exe = _fake_sanitizer(tmp_path, "Invalid __global__ read of size 4 bytes\n    at crash_kernel+0x10")
    monkeypatch.setattr(sanitizer, "available", lambda device: exe)
    cand = _cand("t_sticky", crashes)
    candidates.add_candidate(cand, replace=True)
    held = []
    try:
        lines = []
        with pytest.raises(runner.DeviceLost):
            runner.run_task(runner.Task(cand.name, "fp32", "accuracy", 20), CTX, lines.append,
                            on_sanitizer=lambda: held.append(len(lines)))
    finally:
        candidates.unregister(cand.name)
    last = lines[-1]
    assert held == [len(lines) - 1]  # the case clock restarted once, before the line was written
    assert last["verdict"] == "fail" and last["reason"].startswith("memory fault: RuntimeError: " + STICKY), last
    assert "compute-sanitizer: Invalid __global__ read of size 4 bytes; at crash_kernel+0x10" in last["reason"]
    assert last["examples"] == sum(ln["verdict"] == "pass" for ln in lines) + 1  # the cases it took, unshrunk


def test_memcheck_stays_within_the_case_time_limit(tmp_path, monkeypatch):
    """Under a supervisor (NORMGATE_CASE_TIMEOUT) memcheck gets 90% of a case's time limit, so a slow
    replay ends as "no result" in the line instead of the supervisor killing the worker as hung
    and losing the failure."""
    exe = tmp_path / "compute-sanitizer"
    pid_file = tmp_path / "replay.pid"  # memcheck starts the replay as a child of its own
    exe.write_text(f"#!/bin/sh\nsleep 30 &\necho $! > {pid_file}\nsleep 30\n")
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv(sanitizer.TIMEOUT_ENV, "600")
    monkeypatch.setenv(sanitizer.CASE_TIMEOUT_ENV, "1")
    assert sanitizer.timeout_s() == pytest.approx(0.9)
    line = {"verdict": "fail", "reason": "out-of-bounds write: y: written past its end",
            "replay": "normgate replay 'k@contract:rmsnorm,1x1,fp32,x=normal,dy=normal,w=normal,eps=1e-06,"
                      "contiguous,seed=0'"}
    t0 = time.perf_counter()
    out = sanitizer.explain(line, "cuda", str(exe))
    assert time.perf_counter() - t0 < 4 and out["sanitizer"]["finding"] == "no result: memcheck ran past 0.9 s"
    time.sleep(0.2)
    replay = int(pid_file.read_text())
    assert not os.path.exists(f"/proc/{replay}") or "Z" in open(f"/proc/{replay}/stat").read().split()[2], \
        "the replay memcheck started outlived the time limit"
    monkeypatch.delenv(sanitizer.CASE_TIMEOUT_ENV)
    assert sanitizer.timeout_s() == 600


def test_m_boundaries_catch_a_switch_at_256_and_pass_a_correct_kernel(monkeypatch):
    def switch(x, w, eps):
        h = x.float()
        if x.numel() // x.shape[-1] >= 256:  # another summation order from 256 rows on
            ms = h.pow(2).flip(-1).cumsum(-1)[..., -1:] / x.shape[-1]
        else:
            ms = h.pow(2).mean(-1, keepdim=True)
        return (h * torch.rsqrt(ms + (eps or 1.2e-7)) * w.float()).to(x.dtype)

    op = get_op("rmsnorm")
    case = Case("rmsnorm", (3, 100), "fp32", seed=2)
    res = checks.batch_invariance(_cand("t_switch", switch), op, case, CTX)
    assert res.verdict == "fail" and "boundary M = 256" in res.reason, res
    assert checks.batch_invariance(_cand("t_right", _rms), op, case, CTX).verdict == "pass"
    one = Case("rmsnorm", (1, 100), "fp32", seed=2)  # a one-row case is now compared across batches too
    assert checks.batch_invariance(_cand("t_switch", switch), op, one, CTX).verdict == "fail"
    declared = _cand("t_decl", _rms, boundaries={"m": [40]})
    from normgate import boundaries as MB

    assert 40 in MB.m_boundaries(declared, "cpu", 100, 0) and 256 in MB.m_boundaries(declared, "cpu", 100, 0)
    monkeypatch.setenv("NORMGATE_WITHOUT", "m_boundaries")
    assert checks.batch_invariance(_cand("t_switch", switch), op, case, CTX).verdict == "pass"


def test_n_boundaries_are_reachable():
    every = NB.widths_at_boundaries(CPU_PROFILE, declared=(96,))
    assert {127, 128, 129, 1023, 1024, 1025, 95, 96, 97} <= set(every)
    seen = set()
    for seed in range(200):
        seen |= set(NB.task_boundary_widths(CPU_PROFILE.for_widths(seed), declared=(96,)))
    assert seen == set(every)
    picked = NB.task_boundary_widths(CPU_PROFILE.for_widths(7), declared=(96,))
    assert len(picked) == NB.PER_TASK and any(abs(w - 96) <= 1 for w in picked)
    assert not NB.huge_allowed(CPU_PROFILE)  # huge shapes are for a GPU with the memory free


def test_sampled_reference_matches_the_full_one(monkeypatch, capsys):
    op = get_op("layernorm")
    variant = LayerNormVariant()
    case = Case("layernorm", (40, 9), "fp32", seed=5)
    inputs = op.make_inputs(case, variant, "cpu")
    full = op.reference(inputs, case, variant, True)
    monkeypatch.setattr(NB, "SAMPLE_ABOVE", 100)
    monkeypatch.setattr(NB, "SAMPLED", 6)
    rows = NB.sample_rows(40, 9, 5)
    assert len(rows) == 6 and rows[:2] == [0, 1] and rows[-2:] == [38, 39]
    sampled = op.reference(inputs, case, variant, True)
    for name, e in full.items():
        s = sampled[name]
        if s.rows is not None:
            assert s.rows.tolist() == rows and torch.equal(e.value[s.rows], s.value)
        else:  # parameter gradients: every row, summed in chunks
            assert torch.allclose(e.value, s.value, rtol=1e-12, atol=1e-12) and s.steps == e.steps
    right = _cand("t_ln", lambda x, w, b, eps: torch.nn.functional.layer_norm(x, (x.shape[-1],), w, b, eps or 1e-5),
                  op="layernorm", eps_none=False)
    for check in ("accuracy", "contract", "identities"):
        assert checks.ALL[check](right, op, case, CTX).verdict == "pass"
    from normgate import replaying

    capsys.readouterr()
    replaying._print_worst(right, op, case, CTX, 3)  # replay's table: the sampled rows of the output
    assert "\ny: max " in capsys.readouterr().out
    assert NB.sample_rows(3 << 20, 1024, 0, 16)[:2] == [0, 1] and (1 << 31) // 1024 in NB.sample_rows(3 << 20, 1024, 0)


class _WeightTwice(_RMSFunction):
    @staticmethod
    def backward(ctx, dy):
        x, w = ctx.saved_tensors
        with torch.enable_grad():
            xx, ww = x.detach().requires_grad_(), w.detach().requires_grad_()
            dx, dw = torch.autograd.grad(_rms(xx, ww, ctx.eps), (xx, ww), dy * w)  # w applied twice in dx
        return dx, dw, None


@pytest.mark.parametrize("seed", [0, 1, 4])
def test_identities_catch_the_weight_applied_twice(seed):
    op = get_op("rmsnorm")
    case = Case("rmsnorm", (3, 33), "fp32", seed=seed)
    res = checks.identities(_cand("t_twice", _WeightTwice.apply), op, case, CTX)
    assert res.verdict == "fail" and "weight scaled by 2**" in res.reason and "dx:" in res.reason, res
    assert checks.identities(_cand("t_right", _rms), op, case, CTX).verdict == "pass"


def test_identities_catch_a_dx_that_does_not_sum_to_zero():
    def no_mean_term(x, w, b, eps):
        h = x.float()
        mu = h.mean(-1, keepdim=True).detach()  # the gradient through the mean is lost
        d = h - mu
        y = d * torch.rsqrt(d.pow(2).mean(-1, keepdim=True) + eps)
        return (y * w + b).to(x.dtype)

    op = get_op("layernorm")
    case = Case("layernorm", (2, 16), "fp32", seed=3, eps=1e-5)
    res = checks.identities(_cand("t_nomean", no_mean_term, op="layernorm"), op, case, CTX)
    assert res.verdict == "fail" and "sum(dx)" in res.reason, res


class _LayoutOrdered(_RMSFunction):
    """A correct RMSNorm whose backward sums a row in an order chosen by dy's row stride, as a
    Triton kernel does when each stride specialization gets its own binary."""

    @staticmethod
    def backward(ctx, dy):
        x, w = ctx.saved_tensors
        h = x.float()
        rstd = torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + ctx.eps)
        xhat = h * rstd
        g = dy.float() * w.float()
        terms = g * xhat
        compact = dy.stride(0) == dy.shape[-1]
        dot = terms.sum(-1, keepdim=True) if compact else terms.flip(-1).cumsum(-1)[..., -1:]
        dx = rstd * (g - xhat * dot / x.shape[-1])
        return dx.to(x.dtype), (dy.float() * xhat).sum(0).to(w.dtype), None


def test_the_gradient_scaling_keeps_the_layout_of_a_strided_case():
    op = get_op("rmsnorm")
    case = Case("rmsnorm", (3, 101), "fp32", seed=0, eps=1e-6, layout="strided")
    res = checks.identities(_cand("t_layout", _LayoutOrdered.apply), op, case, CTX)
    assert res.verdict == "pass", res
