"""The benchmark's own logic without a GPU: interleaving, the time budget, the ceiling and its
fractions, the summary tables, the sweep's checks and its choice of winners. Kernels run under the
Triton interpreter (TRITON_INTERPRET=1), timings are fakes.

    TRITON_INTERPRET=1 python -m pytest -q bench/test_offline.py
"""

from __future__ import annotations

import dataclasses
import os

import ceiling as CEIL
import graphtime as T
import h200
import pytest
import summarize
import sweep
import torch

from normgate.kernels import _launch as L
from normgate.kernels.rmsnorm import rms_norm

needs_kernels = pytest.mark.skipif(
    not (torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1"),
    reason="Triton kernels need a GPU or TRITON_INTERPRET=1")
DEV = "cuda" if torch.cuda.is_available() else "cpu"


def _fake_timing():
    """(capture, time_graph, order): a step named "bad" fails to capture; a timing is its place in
    ``order``, the list of what was timed."""
    order = []

    def capture(step):
        if step == "bad":
            raise RuntimeError("does not compile")
        return step

    def time_graph(g):
        order.append(g)
        return float(len(order))

    return capture, time_graph, order


def test_interleaved_times_round_by_round_and_drops_what_fails():
    capture, time_graph, order = _fake_timing()
    errors = []
    times = h200.interleaved({"a": "a", "b": "b", "x": "bad", "c": "c"}, time_graph, capture,
                             on_error=lambda name, e: errors.append(name))
    assert order == ["a", "b", "c", "a", "b", "c"]
    assert times == {"a": [1.0, 4.0], "b": [2.0, 5.0], "c": [3.0, 6.0]}
    assert errors == ["x"]


def test_allocation_rounds_allocate_anew_rotate_the_order_and_drop_what_fails():
    capture, time_graph, order = _fake_timing()
    errors, made = [], []

    def make_steps():
        made.append(len(made))
        return {"a": "a", "b": "b", "x": "bad", "c": "c"}

    times = h200.allocation_rounds(make_steps, time_graph, capture, rounds=3, device="cpu",
                                   on_error=lambda name, e: errors.append(name))
    assert made == [0, 1, 2]  # fresh tensors every round
    assert order == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert times == {"a": [1.0, 6.0, 8.0], "b": [2.0, 4.0, 9.0], "c": [3.0, 5.0, 7.0]}
    assert errors == ["x"]  # reported once, not tried again


def test_a_cells_figure_is_the_median_of_its_rounds():
    rec = h200.cell_record("normgate", "rmsnorm", "forward", 2, 64, [30.0, 10.0, 11.0, 12.0], 1000, None, "GPU X")
    assert rec["time_us"] == 11.5 and rec["rounds_us"] == [30.0, 10.0, 11.0, 12.0]


def test_budget_runs_out_on_its_clock():
    now = [100.0]
    b = h200.Budget(10, clock=lambda: now[0])
    assert not b.spent() and b.left() == 10
    now[0] = 110.0
    assert b.spent()


def test_fraction_above_one_comes_with_its_reason():
    f, why = CEIL.fraction(3000.0, 4000.0, "copy_")
    assert f == 0.75 and why == ""
    f, why = CEIL.fraction(4200.0, 4000.0, "triton b4096 w8")
    assert f == pytest.approx(1.05)
    assert "outran every copy" in why and "triton b4096 w8" in why


def test_ceiling_is_the_fastest_copy():
    c = CEIL.from_times(4_000_000, {"copy_": 2.0, "triton b4096 w8": 1.0, "triton b1024 w4": 4.0})
    assert c.how == "triton b4096 w8" and c.gbps == pytest.approx(4000.0) and c.copy_gbps == pytest.approx(2000.0)


@needs_kernels
def test_copy_kernel_copies_and_measure_refuses_a_copy_that_does_not():
    src = torch.randn(5000, device=DEV).to(torch.bfloat16)
    dst = torch.zeros_like(src)
    CEIL.triton_copy(src, dst, 1024, 4)
    assert torch.equal(src, dst)
    c = CEIL.measure(4 * 3000, lambda step: (step(), 1.0)[1], rounds=1, device=DEV)
    assert set(c.all_gbps) == {"copy_", *(f"triton b{b} w{w}" for b, w in CEIL.COPY_CONFIGS)}


def test_measure_catches_a_copy_that_copies_nothing(monkeypatch):
    monkeypatch.setattr(CEIL, "copy_steps", lambda src, dst: {"nothing": lambda: None})
    with pytest.raises(AssertionError, match="did not copy"):
        CEIL.measure(4 * 3000, lambda step: (step(), 1.0)[1], rounds=1, device="cpu")


def _row(kernel, gbps, n=1024, op="rmsnorm", pass_="forward", m=16384, ceiling=4000.0):
    rec = h200.cell_record(kernel, op, pass_, m, n, [1e6 / gbps], 1_000_000_000,
                           CEIL.Ceiling(0, ceiling, "triton b4096 w8", ceiling * 0.7, {}), "GPU X")
    return rec


def test_summary_marks_a_fraction_above_one_and_says_why():
    rows = [_row("normgate", 3000.0), _row("liger", 3500.0), _row("quack", 4200.0), _row("torch", 2000.0)]
    text = summarize.tables(rows)
    assert "4200 (1.05*1)" in text
    assert "*1: quack, rmsnorm forward N=1024: 4200 GB/s outran every copy tried" in text
    assert "3000 (0.75)" in text and "*" not in text.split("3000 (0.75)")[1].split("|")[0]
    assert "| ours / best peer | 0.71 (quack) |" in text
    assert "| ours / best memory-bound rate seen (4200) | 0.71 |" in text
    assert "| copy ceiling (fastest copy) | 4000 (triton b4096 w8) |" in text
    assert "| torch copy_ alone | 2800 |" in text


def test_summary_reads_jsonl_with_small_batches_and_left_out(tmp_path):
    p = tmp_path / "h200.jsonl"
    sink = h200.Sink(open(p, "w"))
    sink.write(_row("normgate", 3000.0))
    sink.write(_row("normgate", 100.0, n=4096, m=1))
    sink.write({"kind": "left_out", "phase": "table", "cells": [["layernorm", "forward", 1, 4096]]})
    sink.f.close()
    text = summarize.tables(summarize.load(str(p)))
    assert "Small batches, N = 4096" in text and "left out by the time budget (table)" in text


def test_table_records_every_importable_kernel_and_skips_with_reasons(capsys):
    rows = h200.Sink(None)
    todo = [("rmsnorm", "forward", 2, 64), ("layernorm", "forward_backward", 2, 64)]
    ceilings = {h200.ceiling_bytes(p, m, n): CEIL.Ceiling(0, 5.0, "copy_", 5.0, {}) for _, p, m, n in todo}
    written = []
    h200.run_table(rows, h200.Budget(60), ceilings, "cpu", lambda: written.append(1),
                   kernels=("torch", "quack"), todo=todo, device="cpu",
                   capture=lambda step: step, time_graph=lambda g: (g(), 10.0)[1])
    got = {(r["kernel"], r["op"], r["pass"]) for r in rows.rows}
    assert got == {("torch", "rmsnorm", "forward"), ("torch", "layernorm", "forward_backward")}
    r = rows.rows[0]
    assert r["gbps"] == pytest.approx(T.norm_bytes(2, 64, 2, 1, "forward") / 10.0 / 1e3)
    assert r["fraction_of_ceiling"] == pytest.approx(r["gbps"] / 5.0)
    assert "skip quack: quack is not importable" in capsys.readouterr().out
    assert len(written) == 2


def test_table_stops_at_the_budget_and_records_what_it_left_out():
    rows = h200.Sink(None)
    h200.run_table(rows, h200.Budget(-1), {}, "cpu", lambda: None, kernels=("torch",),
                   todo=[("rmsnorm", "forward", 2, 64)], device="cpu")
    assert rows.rows == [{"kind": "left_out", "phase": "table", "cells": [["rmsnorm", "forward", 2, 64]]}]


# ------------------------------------------------------------------------------------------------
# the sweep
# ------------------------------------------------------------------------------------------------


def _res(label, us, det=True, inv=True, ulp=0.5):
    return {"label": label, "us": us, "deterministic": det, "batch_invariant": inv, "max_ulp": ulp,
            "cfg": None, "min_rows": None, "desc": label}


def test_best_of_never_picks_a_config_that_failed_a_bit_check():
    res = [_res("current", [10.0]), _res("fast-but-variant", [5.0], inv=False),
           _res("fast-but-random", [6.0], det=False), _res("faster", [9.0]), _res("slower", [11.0])]
    cur, best = sweep.best_of(res)
    assert cur["label"] == "current" and best["label"] == "faster"
    assert sweep.best_of([_res("current", [10.0]), _res("slower", [11.0])])[1] is None
    assert sweep.best_of([_res("current", [10.0, 1.0]), _res("part", [9.0, None])])[1] is None
    # faster at one batch, slower on the mean over both: not a winner
    assert sweep.best_of([_res("current", [10.0, 10.0]), _res("lopsided", [9.0, 12.0])])[1] is None
    assert sweep.best_of([_res("current", [10.0, 10.0]), _res("even", [9.0, 10.5])])[1]["label"] == "even"


def test_apply_table_writes_the_entry_to_change():
    fwd = _res("tile", [9.0, 1.0], ulp=0.7)
    fwd["cfg"] = vars(L.Config(8192, 1, 8))
    split = _res("split", [90.0])
    split["cfg"] = vars(L.Config(4096, 1, 8, programs_per_sm=2, prefetch=True, split=True, dot_rows=2))
    rows = _res("min rows", [4.0])
    rows["min_rows"] = 4
    summary = [
        {"name": "rmsnorm forward N=8192", "op": "rmsnorm", "pass": "forward", "ms": [16384, 1],
         "current": _res("current", [10.0, 2.0]), "best": fwd},
        {"name": "rmsnorm forward+backward N=32768", "op": "rmsnorm", "pass": "forward_backward", "ms": [16384],
         "current": _res("current", [100.0]), "best": split},
        {"name": "layernorm forward+backward N=4096", "op": "layernorm", "pass": "forward_backward", "ms": [1],
         "current": _res("current", [5.0]), "best": rows},
        {"name": "layernorm forward N=8192", "op": "layernorm", "pass": "forward", "ms": [16384],
         "current": _res("current", [5.0]), "best": None},
    ]
    text = sweep.apply_table(summary)
    # mean time ratio over the batches: (9/10 + 1/2) / 2 = 0.7
    assert 'GPU_TABLES["H200"].fwd["rms"] entry (8192, 1, 8)' in text and "+42.9%" in text
    assert "(less accurate on the sample)" in text
    assert "M=16384: 10.0 -> 9.0 ; M=1: 2.0 -> 1.0" in text
    assert 'BWD_SPLIT["rms"] = Config(4096, 1, 8, programs_per_sm=2, prefetch=True, split=True, dot_rows=2' in text
    assert "MIN_ROWS_PER_PROGRAM = 4" in text
    assert "| layernorm forward N=8192 | current | (current is best) | - | M=16384: 5.0 | keep |" in text


def test_patched_launches_with_the_candidate_and_restores_on_error():
    before = L.fwd_config(4096), L.bwd_config(4096), L.MIN_ROWS_PER_PROGRAM
    c = sweep.Cand("x", fwd=L.Config(4096, 4, 2), bwd=L.Config(4096, 2, 2), min_rows=8)
    with pytest.raises(ZeroDivisionError), sweep.patched(c):
        assert L.fwd_config(4096, "rms", None) == c.fwd and L.bwd_config(4096) == c.bwd
        assert L.MIN_ROWS_PER_PROGRAM == 8
        1 / 0  # noqa: B018
    assert (L.fwd_config(4096), L.bwd_config(4096), L.MIN_ROWS_PER_PROGRAM) == before


def test_patched_switches_the_forwards_parameter_load_and_the_small_batch_dw():
    """A candidate's ``early`` forces fwd_launch's EARLY at every batch, its ``dw_columns`` the
    small batch's dW tile or (False) the partials, its ``dw_max_rows`` the cap on that batch; all
    restored after."""
    cpu, cfg = torch.device("cpu"), L.Config(64, 1, 4)
    launch, columns, cap = L.fwd_launch, L.DW_TILE, L.DW_MAX_ROWS
    with sweep.patched(sweep.Cand("late", early=False, dw_columns=False)):
        assert L.fwd_launch(1, cfg, cpu) == (1, False)
        assert L.dw_columns(2, cfg, cpu) is None
    other = (8, 16)
    with sweep.patched(sweep.Cand("early", early=True, dw_columns=other)):
        assert L.fwd_launch(10_000, cfg, cpu) == (10_000, True)
        assert L.dw_columns(2, cfg, cpu) == other
    tall = L.Config(64, cap, 4)  # a tile of rows as tall as the cap: cap + 1 rows take two programs
    assert L.dw_columns(cap + 1, tall, cpu) is None
    with sweep.patched(sweep.Cand("past the cap", dw_max_rows=10 * cap)):
        assert L.dw_columns(cap + 1, tall, cpu) == columns
    assert (L.fwd_launch, L.DW_TILE, L.DW_COLUMNS_ON, L.DW_MAX_ROWS) == (launch, columns, True, cap)
    assert L.dw_columns(2, cfg, cpu) == columns and L.fwd_launch(1, cfg, cpu) == (1, True)


def _xw(m=8, n=64, grad=False):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(m, n, generator=g).to(torch.bfloat16).requires_grad_(grad)
    dy = torch.randn(m, n, generator=g).to(torch.bfloat16)
    w = (1 + 0.1 * torch.randn(n, generator=g)).to(torch.bfloat16).requires_grad_(True)
    return x, dy, w


@needs_kernels
@pytest.mark.parametrize("pass_", ["forward", "forward_backward"])
def test_check_passes_our_kernel_and_catches_variant_and_random_ones(pass_):
    x, dy, w = _xw(grad=pass_ != "forward")
    x, dy = x.to(DEV), dy.to(DEV)
    w = w.detach().to(DEV).requires_grad_(True)

    def ours(xx):
        return rms_norm(xx, w, 1e-6)

    def batch_variant(xx):  # a row's result depends on the batch size
        return rms_norm(xx, w, 1e-6) * (1 + 2.0 ** -6 * (xx.shape[0] > 1))

    def random(xx):  # different bits run to run (a factor, so that the gradients differ too)
        noise = 1 + 1e-2 * torch.rand(xx.shape, device=xx.device)
        return (rms_norm(xx, w, 1e-6) * noise).to(xx.dtype)

    ok = sweep.check(ours, "rmsnorm", pass_, x, dy, [w])
    assert ok["deterministic"] and ok["batch_invariant"] and ok["max_ulp"] < 2
    assert not sweep.check(batch_variant, "rmsnorm", pass_, x, dy, [w])["batch_invariant"]
    assert not sweep.check(random, "rmsnorm", pass_, x, dy, [w])["deterministic"]


@needs_kernels
def test_sweep_picks_the_fastest_stable_config_and_writes_the_table(tmp_path):
    n = 64
    fwd = sweep.Target("rmsnorm forward N=64", "rmsnorm", "forward", n, (4, 1),
                       [sweep.Cand("warps=8", fwd=L.Config(n, 1, 8)), sweep.Cand("warps=2", fwd=L.Config(n, 1, 2)),
                        sweep.Cand("looped", fwd=L.Config(32, 1, 16, looped=True))])
    bwd = sweep.Target("layernorm forward+backward N=64", "layernorm", "forward_backward", n, (4,),
                       [sweep.Cand("min_rows=2", min_rows=2), sweep.Cand("warps=1", bwd=L.Config(n, 1, 1))])

    def capture(step):  # the fake graph is the config the step was captured under
        step()
        return L.fwd_config(n, "rms", None), L.bwd_config(n, "ln", None), L.MIN_ROWS_PER_PROGRAM

    def time_graph(g):  # faster with more warps; the looped path and min_rows=2 fastest of all
        f, b, min_rows = g
        return 1.0 if f.looped or min_rows == 2 else 100.0 / f.num_warps / b.num_warps

    before = L.fwd_config(n), L.bwd_config(n, "ln"), L.MIN_ROWS_PER_PROGRAM
    md = tmp_path / "sweep.md"
    summary = sweep.run(h200.Sink(None), h200.Budget(600), str(md), device=torch.device(DEV),
                        capture=capture, time_graph=time_graph, todo=[fwd, bwd])
    assert [s["best"]["label"] for s in summary] == ["looped", "min_rows=2"]
    text = md.read_text()
    assert 'fwd_loop["rms"] entry (N bound, Config(32, 1, 16, looped=True' in text
    assert "MIN_ROWS_PER_PROGRAM = 2" in text
    assert (L.fwd_config(n), L.bwd_config(n, "ln"), L.MIN_ROWS_PER_PROGRAM) == before


@needs_kernels
def test_a_tweak_candidate_is_the_current_launch_with_its_fields_replaced(tmp_path):
    """A code-generation switch (Cand.tweak) is timed on the launch the tables give, changed only in
    the fields it names."""
    n = 64
    t = sweep.Target("rmsnorm forward N=64", "rmsnorm", "forward", n, (4,), sweep.codegen_cands())
    seen = []

    def capture(step):
        step()
        seen.append(L.fwd_config(n, "rms", None))
        return seen[-1]

    sweep.run(h200.Sink(None), h200.Budget(600), str(tmp_path / "sweep.md"), device=torch.device(DEV),
              capture=capture, time_graph=lambda g: 1.0, todo=[t])
    current = L.fwd_config(n, "rms", None)
    assert seen == [current, dataclasses.replace(current, fold_tails=False)]


def test_the_table_can_time_the_small_batches_alone():
    assert h200.cells(("small",)) == [c for c in h200.cells() if c[2] != h200.M]
    assert h200.cells(("big",)) + h200.cells(("small",)) == h200.cells()
    assert {c[3] for c in h200.cells(("small",))} == {h200.SMALL_N}
