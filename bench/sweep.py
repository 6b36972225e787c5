"""Launch-configuration sweep of our kernels where the H200 table has them behind a peer.

Run by bench/h200.py (phase ``sweep``). Targets, in order of what they are worth:

* the forward at N = 8192 / 16384 / 32768, both ops: warps, rows per program, the whole row in
  registers against the looped path in chunks of 1024..16384, one merge a chunk or the statistics
  per column lane; at N = 1024, rows per tile and warps;
* at each forward target, the current launch with the tail masks kept (``Config.fold_tails`` off:
  a code-generation switch, timed against the launch it changes);
* RMSNorm forward+backward at N = 32768: the split backward's column block, warps, programs per
  SM, prefetch and the first (dot product) kernel's rows and warps;
* small batches (N = 4096, M = 1 / 32 / 128), forward and forward+backward: warps and rows per
  program, the backward's programs per SM, prefetch and the minimum rows per backward program,
  timed at M = 16384 too, since the same entry serves every batch; and the two switches the
  launch makes by M (the forward's parameters before or after the sums, ``fwd_launch``; dW in
  column blocks or through partials, ``dw_columns``), each forced one way at every batch.

A table candidate only changes launch parameters, and only as a function of N (never of M); the
two switches change no operation of a row (``fwd_launch``). Each candidate is still checked on the
GPU: the same bits from two
runs (determinism) and a row's bits the same alone, in a small sub-batch and in the full batch
(batch invariance), and its error against float64 (in ULPs of the terms' magnitude, bench/sweep's
``max_ulp``) set beside the current config's. A candidate that fails a bit check is never
recommended; one less accurate than the current config on the sample is marked.

Timing: every candidate of a target captured in a CUDA graph, then two interleaved rounds of
do_bench medians (A, B, C, A, B, C); a candidate's figure is its faster round.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch

from normgate.kernels import _launch as L

C = L.Config
M = 16384
SMALL_MS = (1, 32, 128)
RMS_EPS, LN_EPS = 1e-6, 1e-5


@dataclass(frozen=True)
class Cand:
    """A launch configuration to try: the forward's, the backward's, or the minimum rows per
    backward program (None: as in the tables)."""

    label: str
    fwd: L.Config | None = None
    bwd: L.Config | None = None
    min_rows: int | None = None
    # the current forward config with these fields replaced (a code-generation switch timed against
    # the launch it changes, whatever the GPU's tables give)
    tweak: dict | None = None
    # the forward's parameters loaded before the row's sums (True) or after them (False) at every
    # batch, instead of as ``fwd_launch`` chooses by M
    early: bool | None = None
    # the small batch's dW programs (``dw_columns``): their (rows, columns) tile, or False for the
    # partials at every batch
    dw_columns: tuple[int, int] | bool | None = None
    # the batch up to which the small batch's dW programs may run (``DW_MAX_ROWS``)
    dw_max_rows: int | None = None


def codegen_cands() -> list[Cand]:
    """The forward's code-generation switches, each against the current launch: the tail masks (and
    the looped path's trip count from N) kept, ``Config.fold_tails`` off."""
    return [Cand("current with tail masks", tweak={"fold_tails": False})]


@dataclass
class Target:
    name: str
    op: str  # rmsnorm | layernorm
    pass_: str  # forward | forward_backward
    n: int
    ms: tuple[int, ...]  # batches timed; a winner is faster on the mean over them
    cands: list[Cand] = field(default_factory=list)


def _key(op: str) -> str:
    return "rms" if op == "rmsnorm" else "ln"


def fwd_cands(n: int, op: str = "rmsnorm") -> list[Cand]:
    """Forward at large N: the whole row in one tile (rows, warps), and the looped path."""
    out = codegen_cands()
    for rows, warps in ((1, 4), (1, 8), (1, 16), (1, 32), (2, 8), (2, 16)):
        # up to 64 elements a thread (more spills) and 32,768 a tile
        if rows * n <= 32768 and rows * n <= 64 * 32 * warps:
            out.append(Cand(f"tile rows={rows} warps={warps}", fwd=C(n, rows, warps)))
    for chunk in (1024, 2048, 4096, 8192, 16384):
        if chunk < n:
            for warps in (4, 8, 16, 32):
                if not 2 <= chunk // (32 * warps) <= 64:  # two to 64 elements a thread
                    continue
                if warps == 32 and n < 16384:
                    continue
                if chunk >= 2048 and warps >= 8:
                    out.append(Cand(f"looped chunk={chunk} warps={warps}", fwd=C(chunk, 1, warps, looped=True)))
                    # L2 eviction hints: the first pass keeps the row in L2, the second drops it
                    out.append(Cand(f"looped evict chunk={chunk} warps={warps}",
                                    fwd=C(chunk, 1, warps, looped=True, evict=True)))
                # and the statistics per column lane, reduced once a row
                out.append(Cand(f"looped evict lanes chunk={chunk} warps={warps}",
                                fwd=C(chunk, 1, warps, looped=True, evict=True, lanes=True)))
    return out


def split_cands(n: int) -> list[Cand]:
    """RMSNorm's split backward (rows too long for one program)."""
    out = []
    for block, warps, pps, prefetch, dot_rows, dot_warps in (
        (4096, 8, 2, True, 1, 8), (4096, 8, 2, False, 1, 8), (2048, 4, 4, True, 1, 8), (2048, 8, 2, True, 1, 8),
        (8192, 16, 1, True, 1, 8), (8192, 8, 2, False, 1, 8), (4096, 8, 2, True, 1, 4), (4096, 8, 2, True, 1, 16),
        (4096, 8, 2, True, 2, 8), (4096, 4, 4, True, 1, 8), (4096, 16, 1, True, 1, 8), (4096, 8, 1, True, 1, 8),
    ):
        cfg = C(block, 1, warps, programs_per_sm=pps, prefetch=prefetch, split=True, dot_rows=dot_rows,
                dot_warps=dot_warps)
        out.append(Cand(f"split block={block} warps={warps} pps={pps} prefetch={int(prefetch)} "
                        f"dot_rows={dot_rows} dot_warps={dot_warps}", bwd=cfg))
    return out


def small_fwd_cands(n: int) -> list[Cand]:
    """The parameters' load before the sums or after at every batch (``fwd_launch`` chooses by M),
    and rows per tile and warps."""
    return codegen_cands() + evict_cands(n) + [
        Cand("current, parameters after the sums", early=False),
        Cand("current, parameters before the sums", early=True),
    ] + [Cand(f"tile rows={r} warps={w}", fwd=C(n, r, w))
         for r, w in ((1, 4), (1, 8), (1, 16), (2, 4), (2, 8), (2, 16), (4, 8))]


def evict_cands(n: int, tiles: tuple[tuple[int, int], ...] = ()) -> list[Cand]:
    """A row in one tile loaded with evict_first and its parameters with evict_last
    (``Config.policies``), or the parameters alone evict_last (``Config.keep_params``), in the current
    launch and in tiles of (rows, warps)."""
    return [Cand("current, evict hints", tweak={"evict": True}),
            Cand("current, parameters evict_last", tweak={"keep_params": True})] + [
        Cand(f"tile rows={r} warps={w}{hints}", fwd=C(n, r, w, evict=e, keep_params=k))
        for r, w in tiles for hints, e, k in ((", evict hints", True, False), (", parameters evict_last", False, True))]


def narrow_fwd_cands(n: int) -> list[Cand]:
    """Forward at N = 1024, several rows a tile, the parameters loaded after the row's sums (as
    ``fwd_launch`` has them at a large batch) or before, with and without the eviction hints."""
    tiles = ((1, 4), (2, 4), (4, 4), (8, 4), (4, 8), (8, 8), (2, 2), (1, 2), (4, 2), (1, 1), (2, 1))
    return codegen_cands() + evict_cands(n, ((1, 1), (2, 1), (1, 2), (2, 2), (2, 4), (4, 4), (1, 4))) + [
        Cand("current, parameters before the sums", early=True)] + [
        Cand(f"tile rows={r} warps={w}{early}", fwd=C(n, r, w), early=bool(early))
        for r, w in tiles for early in ("", ", parameters before the sums")]


def mid_fwd_cands(n: int) -> list[Cand]:
    """Forward at N = 2048 and 4096: the eviction hints, the parameters loaded before the row's sums."""
    return evict_cands(n, ((1, 4), (2, 4), (1, 8), (2, 8))) + [
        Cand("current, parameters before the sums", early=True)]


def dw_cap_cands() -> list[Cand]:
    """The small batch's dW programs (``dw_columns``) beyond the cap of ``DW_MAX_ROWS`` rows."""
    return [Cand("dW programs up to 4224 rows", dw_max_rows=4224)]


def small_bwd_cands(n: int) -> list[Cand]:
    out = [Cand("current, forward parameters after the sums", early=False),
           Cand("current, dW from partials at every batch", dw_columns=False)]
    for rows, cols in ((64, 32), (32, 64), (128, 16), (32, 32), (64, 64), (16, 128)):
        out.append(Cand(f"dW tile rows={rows} columns={cols}", dw_columns=(rows, cols)))
    for rows, warps, pps, prefetch in ((1, 8, 2, True), (1, 8, 2, False), (1, 4, 2, True), (1, 16, 1, True),
                                       (1, 8, 1, True), (1, 8, 4, True), (2, 8, 2, True), (1, 4, 4, False)):
        out.append(Cand(f"rows={rows} warps={warps} pps={pps} prefetch={int(prefetch)}",
                        bwd=C(n, rows, warps, programs_per_sm=pps, prefetch=prefetch)))
    for min_rows in (2, 4, 8):
        out.append(Cand(f"min_rows_per_program={min_rows}", min_rows=min_rows))
    return out


def targets() -> list[Target]:
    out = []
    for op in ("rmsnorm", "layernorm"):
        out.append(Target(f"{op} forward N=1024", op, "forward", 1024, (M,), narrow_fwd_cands(1024)))
        for n in (2048, 4096):
            out.append(Target(f"{op} forward N={n} hints", op, "forward", n, (M,), mid_fwd_cands(n)))
        for n in (256, 1024):
            out.append(Target(f"{op} forward+backward N={n} dW cap", op, "forward_backward", n,
                              (256, 512, 1024, 2048, 4096), dw_cap_cands()))
    for n in (8192, 16384, 32768):
        for op in ("rmsnorm", "layernorm"):
            out.append(Target(f"{op} forward N={n}", op, "forward", n, (M,), fwd_cands(n, op)))
    out.append(Target("rmsnorm forward+backward N=32768", "rmsnorm", "forward_backward", 32768, (M,),
                      split_cands(32768)))
    for op in ("rmsnorm", "layernorm"):
        out.append(Target(f"{op} forward N=4096 small batch", op, "forward", 4096, (*SMALL_MS, M),
                          small_fwd_cands(4096)))
        out.append(Target(f"{op} forward+backward N=4096 small batch", op, "forward_backward", 4096,
                          (*SMALL_MS, M), small_bwd_cands(4096)))
    return out


def current(t: Target, device: torch.device | None = None) -> Cand:
    """What the tables give today (the baseline every candidate is timed beside)."""
    if t.pass_ == "forward":
        return Cand("current", fwd=L.fwd_config(t.n, _key(t.op), device))
    return Cand("current", bwd=L.bwd_config(t.n, _key(t.op), device))


@contextlib.contextmanager
def patched(c: Cand) -> Iterator[None]:
    """Our kernels launched with ``c`` for as long as the block runs (the launch helpers are looked
    up on the module at every call)."""
    saved = (L.fwd_config, L.bwd_config, L.MIN_ROWS_PER_PROGRAM, L.fwd_launch, L.DW_TILE, L.DW_COLUMNS_ON,
             L.DW_MAX_ROWS)
    if c.dw_max_rows is not None:
        L.DW_MAX_ROWS = c.dw_max_rows
    if c.dw_columns is False:
        L.DW_COLUMNS_ON = False
    elif c.dw_columns is not None:
        L.DW_TILE = c.dw_columns
    if c.early is not None:
        L.fwd_launch = lambda m, cfg, dev, _e=c.early, _f=L.fwd_launch: (_f(m, cfg, dev)[0], _e)
    if c.fwd is not None:
        L.fwd_config = lambda *_a, _c=c.fwd, **_k: _c
    if c.bwd is not None:
        L.bwd_config = lambda *_a, _c=c.bwd, **_k: _c
    if c.min_rows is not None:
        L.MIN_ROWS_PER_PROGRAM = c.min_rows
    try:
        yield
    finally:
        (L.fwd_config, L.bwd_config, L.MIN_ROWS_PER_PROGRAM, L.fwd_launch, L.DW_TILE,
         L.DW_COLUMNS_ON, L.DW_MAX_ROWS) = saved


# ------------------------------------------------------------------------------------------------
# checks
# ------------------------------------------------------------------------------------------------


def _bits_equal(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return all(torch.equal(p.contiguous().view(torch.uint8), q.contiguous().view(torch.uint8))
               for p, q in zip(a, b, strict=True))


def max_ulp(op: str, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, y: torch.Tensor) -> float:
    """Largest error of y (a few rows) against float64, in ULPs (of y's dtype) of the magnitude of
    the terms (|w xhat| + |b|), the scale on which a rounding error shows (README, accuracy)."""
    from normgate import dtypes
    from normgate.kernels import references as ref

    x64, w64 = x.double().cpu(), w.double().cpu()
    if op == "rmsnorm":
        ye, mag, _ = ref.rmsnorm_forward(x64, w64, RMS_EPS, 0.0)
    else:
        ye, mag, _ = ref.layernorm_forward(x64, w64, b.double().cpu(), LN_EPS)
    return ((y.double().cpu() - ye).abs() / dtypes.ulp(mag, y.dtype)).max().item()


def check(fn: Callable, op: str, pass_: str, x: torch.Tensor, dy: torch.Tensor, params: list[torch.Tensor],
          sample_rows: int = 64) -> dict:
    """Bitwise determinism (two runs), batch invariance (rows 0 and 1..4 alone against the full
    batch) and the forward's error on the first rows; outputs are y, or dx and the gradients."""
    def outs(xx: torch.Tensor, dd: torch.Tensor) -> list[torch.Tensor]:
        if pass_ == "forward":
            with torch.no_grad():
                return [fn(xx)]
        leaf = xx.detach().requires_grad_(True)
        return [g.detach() for g in torch.autograd.grad(fn(leaf), [leaf, *params], dd)]

    full = outs(x, dy)
    deterministic = _bits_equal(full, outs(x, dy))
    invariant = True
    for lo, hi in ((0, 1), (1, 5)):
        if hi <= x.shape[0]:
            part = outs(x[lo:hi], dy[lo:hi])
            invariant &= _bits_equal([full[0][lo:hi]], [part[0]])  # y or dx: a row's own output
    k = min(sample_rows, x.shape[0])
    with torch.no_grad():
        y = fn(x[:k].detach())
    b = params[1] if len(params) > 1 else None
    return {"deterministic": deterministic, "batch_invariant": invariant,
            "max_ulp": max_ulp(op, x[:k].detach(), params[0].detach(), None if b is None else b.detach(), y)}


# ------------------------------------------------------------------------------------------------
# choosing and printing
# ------------------------------------------------------------------------------------------------


def ratio(r: dict, cur: dict) -> float:
    """A candidate's time relative to the current config's, averaged over the target's batches
    (the small-batch targets time M = 16384 too: one entry serves every batch)."""
    return sum(u / c for u, c in zip(r["us"], cur["us"], strict=True)) / len(cur["us"])


def best_of(results: list[dict]) -> tuple[dict, dict | None]:
    """(the current config's result, the fastest eligible candidate's or None). Eligible: passed
    both bit checks and was timed at every batch of the target. Fastest: lowest mean time ratio
    to the current config over the batches; it must be below 1."""
    cur = next(r for r in results if r["label"] == "current")
    ok = [r for r in results if r["label"] != "current" and r["deterministic"] and r["batch_invariant"]
          and all(us is not None for us in r["us"])]
    if not ok:
        return cur, None
    best = min(ok, key=lambda r: ratio(r, cur))
    return cur, (best if ratio(best, cur) < 1.0 else None)


def _entry(op: str, pass_: str, cfg: dict | None, min_rows: int | None) -> str:
    """How a winner is written into kernels/_launch.py."""
    if min_rows is not None:
        return f"MIN_ROWS_PER_PROGRAM = {min_rows}"
    if cfg is None:  # a launch switch (early, dw_columns): its label says which
        return "the switch in the label"
    c = L.Config(**cfg)
    k = _key(op)
    if pass_ == "forward":
        switches = {k: v for k, v in (("fold_tails", c.fold_tails),) if v != getattr(L.Config, k)}
        if switches:
            return "Config " + ", ".join(f"{k}={v}" for k, v in switches.items()) + " for this launch"
        if c.looped:
            return (f'GPU_TABLES["H200"].fwd_loop["{k}"] entry (N bound, Config({c.block_n}, 1, {c.num_warps}, '
                    f"looped=True, evict={c.evict}, lanes={c.lanes})), fwd_max_block below N")
        hints = f", {c.evict}, True" if c.keep_params else ", True" if c.evict else ""
        return f'GPU_TABLES["H200"].fwd["{k}"] entry ({c.block_n}, {c.rows}, {c.num_warps}{hints})'
    if c.split:
        return (f'BWD_SPLIT["{k}"] = Config({c.block_n}, 1, {c.num_warps}, programs_per_sm={c.programs_per_sm}, '
                f"prefetch={c.prefetch}, split=True, dot_rows={c.dot_rows}, dot_warps={c.dot_warps})")
    return (f'GPU_TABLES["H200"].bwd["{k}"] entry ({c.block_n}, {c.rows}, {c.num_warps}, {c.programs_per_sm}, '
            f"{c.prefetch}, {c.reload_w})")


def apply_table(summary: list[dict]) -> str:
    """The ready-to-apply table: per target, the current config, the winner, the gain and the entry."""
    lines = ["| target | current | best eligible | gain (mean over batches) | at every batch (us, current -> best) "
             "| entry |",
             "|---|---|---|---|---|---|"]
    for s in summary:
        cur, best = s["current"], s["best"]
        times = " ; ".join(f"M={m}: {c:.1f}" + (f" -> {b:.1f}" if best else "")
                           for m, c, b in zip(s["ms"], cur["us"], (best or cur)["us"], strict=True))
        if best is None:
            lines.append(f"| {s['name']} | {cur['desc']} | (current is best) | - | {times} | keep |")
            continue
        gain = 1 / ratio(best, cur) - 1
        note = " (less accurate on the sample)" if best["max_ulp"] > cur["max_ulp"] else ""
        lines.append(f"| {s['name']} | {cur['desc']} | {best['label']}{note} | {gain:+.1%} | {times} | "
                     f"{_entry(s['op'], s['pass'], best['cfg'], best['min_rows'])} |")
    return "\n".join(lines)


def _desc(c: Cand) -> str:
    cfg = c.fwd or c.bwd
    return c.label if cfg is None else f"{c.label}: " + ", ".join(
        f"{k}={v}" for k, v in dataclasses.asdict(cfg).items())


def run(sink, budget, md_path: str, rounds: int = 2, device: torch.device | None = None,
        capture: Callable | None = None, time_graph: Callable | None = None,
        todo: list[Target] | None = None) -> list[dict]:
    """Every target until the budget is spent; the apply table goes to md_path after each target.
    capture(step) -> graph and time_graph(graph) -> us default to CUDA graphs and do_bench."""
    import graphtime as T
    import peers

    capture = capture or T.capture
    time_graph = time_graph or T.median_us
    dev = device or torch.device("cuda")
    summary: list[dict] = []
    todo = targets() if todo is None else todo
    # SWEEP_ONLY / SWEEP_CANDS: comma-separated words a target's name / a candidate's label must
    # contain (a follow-up call that times only what an earlier one left open)
    only = [w for w in os.environ.get("SWEEP_ONLY", "").split(",") if w]
    words = [w for w in os.environ.get("SWEEP_CANDS", "").split(",") if w]
    todo = [t for t in todo if not only or any(w in t.name for w in only)]
    if words:
        todo = [dataclasses.replace(t, cands=[c for c in t.cands if any(w in c.label for w in words)]) for t in todo]
    for i, t in enumerate(todo):
        if budget.spent():
            print(f"sweep: budget spent, left out: {[x.name for x in todo[i:]]}", flush=True)
            sink.write({"kind": "left_out", "phase": "sweep", "targets": [x.name for x in todo[i:]]})
            break
        base = current(t, dev)
        cands = [base, *(dataclasses.replace(c, fwd=dataclasses.replace(base.fwd, **c.tweak)) if c.tweak else c
                         for c in t.cands)]
        results = []
        per_m: dict[int, tuple] = {}
        for m in t.ms:
            x, dy = T.activations(m, t.n, t.pass_, seed=m * 7 + t.n, device=dev.type)
            per_m[m] = (x, dy)
        graphs: dict[tuple[int, int], object] = {}
        for ci, c in enumerate(cands):
            with patched(c):
                fn, params = peers.make("normgate", t.op, t.n, torch.bfloat16, dev.type)
                try:
                    for m, (x, dy) in per_m.items():
                        graphs[(ci, m)] = capture(T.step_for(fn, x, params, dy, t.pass_))
                    big = per_m[max(t.ms)]
                    chk = check(fn, t.op, t.pass_, big[0], big[1], params)
                except Exception as e:  # a config that does not compile, launch or fit
                    print(f"  {t.name} {c.label}: {type(e).__name__}: {str(e)[:160]}", flush=True)
                    for m in t.ms:
                        graphs.pop((ci, m), None)
                    chk = None
            results.append({"label": c.label, "desc": _desc(c), "check": chk})
        times: dict[tuple[int, int], list[float]] = {k: [] for k in graphs}
        for _ in range(rounds):
            for k, g in graphs.items():
                times[k].append(time_graph(g))
        for ci, (c, r) in enumerate(zip(cands, results, strict=True)):
            chk = r.pop("check")
            us = [min(times[(ci, m)]) if (ci, m) in times else None for m in t.ms]
            cfg = c.fwd or c.bwd
            r.update({"kind": "sweep", "target": t.name, "op": t.op, "pass": t.pass_, "N": t.n, "ms": list(t.ms),
                      "us": us, "rounds_us": [times.get((ci, m)) for m in t.ms],
                      "cfg": None if cfg is None else dataclasses.asdict(cfg), "min_rows": c.min_rows,
                      "deterministic": bool(chk and chk["deterministic"]),
                      "batch_invariant": bool(chk and chk["batch_invariant"]),
                      "max_ulp": chk["max_ulp"] if chk else float("nan")})
            sink.write(r)
            shown = " ".join("-" if u is None else f"{u:.1f}" for u in us)
            flags = "" if r["deterministic"] and r["batch_invariant"] else " NOT BITWISE-STABLE"
            print(f"  {t.name:42s} us[{','.join(map(str, t.ms))}]={shown} ulp={r['max_ulp']:.2f}{flags} {c.label}",
                  flush=True)
        del graphs, per_m
        T.release()
        if results[0]["us"][0] is None:
            print(f"  {t.name}: the current config itself failed; no winner", flush=True)
            continue
        cur, best = best_of(results)
        summary.append({"name": t.name, "op": t.op, "pass": t.pass_, "ms": list(t.ms), "current": cur, "best": best})
        table = apply_table(summary)
        with open(md_path, "w") as f:
            f.write("Best launch configs (bf16; us per step through CUDA graph replay, faster of two "
                    "interleaved rounds; chosen on the mean time ratio to the current config over the "
                    "batches listed)\n\n" + table + "\n")
    print("\nbest configs, ready to apply:\n" + apply_table(summary), flush=True)
    return summary
