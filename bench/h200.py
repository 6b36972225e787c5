"""The whole H200 benchmark in one process, within a time budget, writing as it goes.

    python bench/h200.py --out DIR [--phases ceiling,table,sweep] [--total-s 500]

Phases, in this order (each record is appended to DIR/h200.jsonl the moment it is measured, and
DIR/h200.md is rewritten after every cell, so a run cut short still leaves its results):

* ceiling: for every byte count the table uses, the fastest copy of those bytes (bench/ceiling.py).
* table: ours, ours in the gemma casting, Liger-Kernel, torch.compile, torch.nn.functional and quack
  (the last two only when importable; a skipped peer is one line saying why), RMSNorm and LayerNorm,
  forward and forward+backward, bf16, M = 16384 at N = 1024..32768 and N = 4096 at M = 1/32/128.
  Each cell is timed in ROUNDS rounds, each on fresh tensors placed elsewhere in memory, every
  kernel's step captured anew in a CUDA graph and timed by a do_bench median, the kernels' order
  rotated from round to round (A, B, C, then B, C, A, ...: drift hits every kernel alike); a kernel's
  figure is the median of its rounds.
* sweep: launch configurations of our kernels where they trailed (bench/sweep.py), each checked
  for bitwise determinism and batch invariance, ending in a table of the best configs to apply.

Every phase stops starting new work when the budget is spent and says what it left out.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from typing import IO

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ceiling as CEIL  # noqa: E402
import graphtime as T  # noqa: E402
import peers  # noqa: E402
import summarize  # noqa: E402

M = 16384
NS = (1024, 2048, 4096, 8192, 16384, 32768)
SMALL_N = 4096
SMALL_MS = (1, 32, 128)
KERNELS = ("normgate", "normgate_gemma", "liger", "torch_compile", "torch", "quack")
OPS = ("rmsnorm", "layernorm")
DTYPE = torch.bfloat16


class Budget:
    """Seconds left of the run; ``clock`` is injectable for tests."""

    def __init__(self, total_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock, self.end = clock, clock() + total_s

    def left(self) -> float:
        return self.end - self.clock()

    def spent(self) -> bool:
        return self.left() <= 0


class Sink:
    """Appends JSON records to a file, flushed at once, and keeps them for the summaries."""

    def __init__(self, f: IO[str] | None) -> None:
        self.f, self.rows = f, []

    def write(self, rec: dict) -> None:
        self.rows.append(rec)
        if self.f is not None:
            self.f.write(json.dumps(rec) + "\n")
            self.f.flush()


def cells(groups: tuple[str, ...] = ("big", "small")) -> list[tuple[str, str, int, int]]:
    """(op, pass, M, N) in the order the table measures them: large batches, then small (``groups``:
    which of the two; a follow-up call can time the small batches alone beside every peer)."""
    big = [(op, p, M, n) for op in OPS for p in T.PASSES for n in NS]
    small = [(op, p, m, SMALL_N) for op in OPS for p in T.PASSES for m in SMALL_MS]
    return (big if "big" in groups else []) + (small if "small" in groups else [])


def ceiling_bytes(pass_: str, m: int, n: int) -> int:
    """The bytes a cell's ceiling copies: RMSNorm's count (LayerNorm's bias adds N elements, a
    fraction of a per mille at M = 16384)."""
    return T.norm_bytes(m, n, 2, 1, pass_)


# Rounds a cell is timed in, each on a fresh allocation. On an H200 one kernel's time moved by up to
# 3.7% from one allocation to the next (RMSNorm forward, N = 1024: 22.21-23.04 us over six) while two
# timings of one graph agreed within 0.3%, and the ratio of two kernels timed on the same allocation
# moved by about 1% (bench/results/h200-2026-12-04b/alloc.log): a figure from one allocation can
# be a few per cent off for reasons that are not the kernel's.
ROUNDS = 4
PAD_MIB = 37  # round r first holds r * PAD_MIB + 5 MiB, so that its tensors land elsewhere


def allocation_rounds(make_steps: Callable[[], dict[str, Callable[[], object]]],
                      time_graph: Callable[[object], float], capture: Callable[[Callable[[], object]], object],
                      rounds: int = ROUNDS, device: str = "cuda",
                      on_error: Callable[[str, Exception], None] | None = None) -> dict[str, list[float]]:
    """Time the steps ``make_steps()`` builds (on tensors it allocates) in ``rounds`` rounds, each on a
    new allocation after a pad of another size, their order rotated by one a round; a step that fails
    is reported once through on_error and left out of the later rounds."""
    times: dict[str, list[float]] = {}
    failed: set[str] = set()

    def note(name, e):
        failed.add(name)
        if on_error is not None:
            on_error(name, e)

    for r in range(rounds):
        T.release()
        pad = torch.empty((r * PAD_MIB + 5) << 20, dtype=torch.uint8, device=device)
        steps = {k: v for k, v in make_steps().items() if k not in failed}
        names = list(steps)
        if not names:
            break
        turn = r % len(names)
        for k, us in interleaved({k: steps[k] for k in names[turn:] + names[:turn]}, time_graph, capture,
                                 rounds=1, on_error=note).items():
            times.setdefault(k, []).extend(us)
        del steps, pad
    return {k: v for k, v in times.items() if k not in failed}


def interleaved(steps: dict[str, Callable[[], object]], time_graph: Callable[[object], float],
                capture: Callable[[Callable[[], object]], object], rounds: int = 2,
                on_error: Callable[[str, Exception], None] | None = None) -> dict[str, list[float]]:
    """Capture every step, then time them round by round (A, B, C, A, B, C); a step that fails to
    capture is reported through on_error and left out."""
    graphs = {}
    for name, step in steps.items():
        try:
            graphs[name] = capture(step)
        except Exception as e:  # a peer that does not compile or launch at this shape
            if on_error is not None:
                on_error(name, e)
    times: dict[str, list[float]] = {name: [] for name in graphs}
    for _ in range(rounds):
        for name, g in graphs.items():
            times[name].append(time_graph(g))
    return times


def cell_record(kernel: str, op: str, pass_: str, m: int, n: int, rounds_us: list[float], nbytes: int,
                ceil: CEIL.Ceiling | None, gpu: str) -> dict:
    us = statistics.median(rounds_us)
    gbps = nbytes / us / 1e3
    rec = {"kernel": kernel, "op": op, "pass": pass_, "dtype": "bf16", "M": m, "N": n, "time_us": us,
           "rounds_us": rounds_us, "bytes": nbytes, "gbps": gbps, "gpu": gpu}
    if ceil is not None:
        frac, why = CEIL.fraction(gbps, ceil.gbps, ceil.how)
        rec.update({"ceiling_gbps": ceil.gbps, "ceiling_how": ceil.how, "copy_gbps": ceil.copy_gbps,
                    "fraction_of_ceiling": frac, "fraction_of_copy": gbps / ceil.copy_gbps})
        if why:
            rec["above_ceiling_why"] = why
    return rec


def run_ceilings(sink: Sink, budget: Budget, time_us: Callable, gpu: str) -> dict[int, CEIL.Ceiling]:
    out: dict[int, CEIL.Ceiling] = {}
    sizes = sorted({ceiling_bytes(p, m, n) for _, p, m, n in cells()})
    for nbytes in sizes:
        if budget.spent():
            print(f"ceiling: budget spent, {len(sizes) - len(out)} sizes left out", flush=True)
            break
        c = CEIL.measure(nbytes, time_us)
        out[nbytes] = c
        sink.write({"kind": "ceiling", "bytes": nbytes, "gbps": c.gbps, "how": c.how, "copy_gbps": c.copy_gbps,
                    "all_gbps": c.all_gbps, "gpu": gpu})
        print(f"ceiling {nbytes / 1e6:10.3f} MB: {c.gbps:6.0f} GB/s ({c.how}); copy_ {c.copy_gbps:6.0f}", flush=True)
        T.release()
    return out


def run_table(sink: Sink, budget: Budget, ceilings: dict[int, CEIL.Ceiling], gpu: str,
              write_md: Callable[[], None], kernels: tuple[str, ...] = KERNELS,
              todo: list[tuple[str, str, int, int]] | None = None, device: str = "cuda",
              capture: Callable | None = None, time_graph: Callable | None = None, rounds: int = ROUNDS) -> None:
    """The peer table, cell by cell, each in ``rounds`` rounds (``allocation_rounds``); capture(step) ->
    graph and time_graph(graph) -> us default to CUDA graphs and do_bench."""
    said: set[str] = set()
    todo = cells() if todo is None else todo
    capture = capture or T.capture
    time_graph = time_graph or T.median_us
    for i, (op, pass_, m, n) in enumerate(todo):
        if budget.spent():
            print(f"table: budget spent, {len(todo) - i} cells left out", flush=True)
            sink.write({"kind": "left_out", "phase": "table", "cells": [list(c) for c in todo[i:]]})
            break
        fns, nbytes = {}, {}
        for k in kernels:
            why = peers.skip_reason(k, op, pass_)
            if why is not None:
                if why not in said:
                    said.add(why)
                    print(f"skip {k}: {why}", flush=True)
                continue
            fns[k] = peers.make(k, op, n, DTYPE, device)
            nbytes[k] = T.norm_bytes(m, n, 2, len(fns[k][1]), pass_, peers.param_bytes(k, op, DTYPE))

        def make_steps(op=op, pass_=pass_, m=m, n=n, fns=fns):
            x, dy = T.activations(m, n, pass_, seed=m * 7 + n, dtype=DTYPE, device=device)
            return {k: T.step_for(fn, x, params, dy, pass_) for k, (fn, params) in fns.items()}

        def failed(name, e, op=op, pass_=pass_, m=m, n=n):
            print(f"  {name} {op} {pass_} M={m} N={n}: {type(e).__name__}: {str(e)[:160]}", flush=True)
            sink.write({"kind": "error", "kernel": name, "op": op, "pass": pass_, "M": m, "N": n,
                        "error": f"{type(e).__name__}: {str(e)[:300]}"})

        times = allocation_rounds(make_steps, time_graph, capture, rounds, device, on_error=failed)
        ceil = ceilings.get(ceiling_bytes(pass_, m, n))
        line = []
        for k, us in times.items():
            rec = cell_record(k, op, pass_, m, n, us, nbytes[k], ceil, gpu)
            sink.write(rec)
            line.append(f"{k} {rec['gbps']:.0f}" if m == M else f"{k} {rec['time_us']:.1f}us")
        print(f"{op} {pass_} M={m} N={n}: " + ", ".join(line), flush=True)
        del fns, times
        T.release()
        write_md()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--phases", default="ceiling,table,sweep")
    ap.add_argument("--total-s", type=float, default=float(os.environ.get("TOTAL_S", 500)))
    ap.add_argument("--sweep-s", type=float, default=float(os.environ.get("SWEEP_S", 170)),
                    help="seconds kept for the sweep: the table stops early enough to leave them")
    ap.add_argument("--kernels", default=",".join(KERNELS),
                    help="the table's kernels, comma-separated (a later call can add a peer beside the same "
                         "yardsticks: quack with ours and torch.compile)")
    ap.add_argument("--cells", default="big,small",
                    help="the table's cells: big (M = 16384 at every N), small (N = 4096, M = 1 / 32 / 128) or both")
    ap.add_argument("--rep-ms", type=int, default=int(os.environ.get("REP_MS", 60)),
                    help="do_bench measuring time per timing in the table (the ceiling and sweep take half, "
                         "at least 20)")
    ap.add_argument("--rounds", type=int, default=ROUNDS,
                    help="rounds of the table's cells, each on a fresh allocation (the median is the figure)")
    args = ap.parse_args()
    T.WARMUP_MS = 10
    phases = args.phases.split(",")
    budget = Budget(args.total_s)
    gpu = torch.cuda.get_device_name()
    print(gpu, "torch", torch.__version__, "triton", __import__("triton").__version__,
          "liger", peers.liger_available(), "quack", peers.quack_available(), flush=True)
    if not peers.quack_available():  # say why, so that a missing package is named in the log
        try:
            import quack.rmsnorm  # noqa: F401
        except Exception as e:
            print(f"quack import: {type(e).__name__}: {str(e)[:300]}", flush=True)
    os.makedirs(args.out, exist_ok=True)
    jsonl = os.path.join(args.out, "h200.jsonl")
    with open(jsonl, "w") as f:
        sink = Sink(f)

        def write_md() -> None:
            with open(os.path.join(args.out, "h200.md"), "w") as md:
                md.write(summarize.tables(sink.rows) + "\n")

        T.REP_MS = max(20, args.rep_ms // 2)
        ceilings = run_ceilings(sink, budget, T.step_us, gpu) if "ceiling" in phases else {}
        if "table" in phases:
            T.REP_MS = args.rep_ms
            keep = args.sweep_s if "sweep" in phases else 0.0
            run_table(sink, Budget(budget.left() - keep), ceilings, gpu, write_md,
                      kernels=tuple(k for k in args.kernels.split(",") if k),
                      todo=cells(tuple(args.cells.split(","))), rounds=args.rounds)
        write_md()
        if "sweep" in phases:
            import sweep

            T.REP_MS = max(20, args.rep_ms // 2)
            sweep.run(sink, budget, os.path.join(args.out, "sweep.md"))
        write_md()
    print(f"h200.py done, {args.total_s - budget.left():.0f} s", flush=True)


if __name__ == "__main__":
    main()
