"""Launch heuristics and helpers shared by the RMSNorm and LayerNorm Triton kernels.

Forward: one program per tile of rows (several rows per tile for small N), the whole row in
registers up to FWD_MAX_BLOCK (a GPU model's ``fwd_max_block``), above it a loop over column chunks
(statistics, then y). Masks the launch rules out are constants (``row_mask``, ``col_mask``), and a
looped row of whole chunks with per-lane statistics has a compile-time trip count (``Config.chunks``).

Backward: a persistent grid of about ``programs_per_sm`` programs per SM. Program p owns the
contiguous rows [p*k, (p+1)*k), computes their dx and accumulates dW (and dB) over them in fp32
registers, then writes its row of a (P, N) fp32 partial buffer once; ``sum_partials`` adds the P
rows in a fixed order. Rows longer than BWD_MAX_BLOCK take the split path: a first kernel writes
each row's dot products per column chunk, then a (P, column blocks) grid does the same as above
per column block. A batch so small that every program would own one tile takes no partials:
programs added to the same launch sum dW (and dB) over all rows in narrow column blocks, the others
write dx alone (``dw_columns``).

Determinism and batch invariance are decided here, so the rules are written down once:

* Everything that changes the arithmetic of a row (block size, rows per tile, split or not,
  num_warps) is a function of N, the op and the GPU model only (``tables``), never of M. A row's y
  and dx are therefore the same bits whatever else is in the batch. So is the binary: Triton
  compiles a kernel anew for integer arguments equal to 1 or divisible by 16, and the compiler may
  then lay the row out differently over the threads, which changes the order of ``tl.sum`` (a GPU
  run caught rstd differing between a batch of 1 and of 2, and this fix cured it; the code was not
  compared). So the kernels never specialize on the arguments that depend on the batch (M, rows per
  program: ``do_not_specialize``). Those that remain (strides, pointer alignment) are the same for
  every sub-batch of a tensor, since a sub-batch keeps the row stride: a stride divisible by 16
  keeps every row start's alignment, any other gives none. And no multiply and add is contracted to
  an FMA, which differed between binaries too. Two launch choices are made by M, and neither
  changes an operation of a row: whether the forward loads the parameters before the row's sums
  (``fwd_launch``), and whether the backward's row programs also sum dW or leave it to programs
  of their own in the same launch (``dw_columns``). Their binaries reduce over the same layouts
  (a test compiles both for sm_90 and compares), and the batch-invariance check tries batches
  either side of where they switch.
* Every program owns at least one row and always writes its whole slice of the partial buffer (and
  the split path's dot buffer), so nothing ever reads memory that nobody wrote, even with fewer
  rows than SMs. No float atomics anywhere: dW is bitwise reproducible for a given (M, N, GPU),
  run after run and process after process. (It depends on P, i.e. on M and the SM count, as any
  reduction over the batch may; y and dx do not.)
* With a single program along the rows (small M) the backward writes dW directly and the
  reduction is skipped. (Its binary then differs from the many-program one in the dW pointer's
  dtype when the weight is not fp32; dx's layout follows the loads of h and dy, and no run has seen
  a difference, but it is the one binary difference left between batch sizes.)
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from triton.runtime.interpreter import InterpretedFunction

# No mul+add contraction into FMA (in LLVM or ptxas). Triton compiles a kernel anew for each
# specialization of its integer and pointer arguments, and whether a multiply and an add are
# contracted can differ between those binaries: on an H200 one row's dx then changed in the last
# bit between a batch of 1 and a batch of 2 (`normgate replay 'triton_rmsnorm_llama@batch_invariance:rmsnorm,2x13,
# fp32,x=normal,dy=normal,w=normal,eps=1e-06,strided,seed=0' --device cuda`). Every operation
# rounded on its own gives the same bits from every binary; the kernels are memory-bound.
FP_FUSION = False
# Longest row, in elements, that one forward program keeps in registers (above: the looped path).
FWD_MAX_BLOCK = 32768
# The looped path's chunk. Timed through the looped path at N = 32768, 16384-wide chunks beat
# 8192-wide ones on both GPUs (H100 2842 against 2042 GB/s, H200 3660 against 3037, RMSNorm;
# bench/results/profile-h100/tune.log, tune-h200.log); the longer rows that take it were not timed.
FWD_LOOP_BLOCK = 16384
FWD_LOOP_WARPS = 16
# Longest row the backward keeps in one program (above: the split path, in column blocks). LayerNorm
# holds dW and dB accumulators, so it spills (~250 GB/s) at 16384 where RMSNorm does not.
BWD_MAX_BLOCK = {"rms": 16384, "ln": 8192}
# A backward program takes at least this many rows. Measured at N = 4096, M = 32/128: more rows per
# program (fewer partials to reduce) lost to the lost parallelism: 1 is best (bench/results/tune-h100.log).
MIN_ROWS_PER_PROGRAM = 1


@dataclass(frozen=True)
class Config:
    block_n: int  # columns per tile (power of two)
    rows: int  # rows per tile (power of two)
    num_warps: int
    looped: bool = False  # forward: the row is longer than a tile, loop over column chunks
    programs_per_sm: int = 2  # backward: persistent grid of about this many programs per SM
    prefetch: bool = False  # backward: load the next row tile before reducing the current one
    reload_w: bool = False  # backward: re-read the weight (from L2) per row tile instead of holding it
    split: bool = False  # backward: column blocks, row dot products from a first kernel
    dot_rows: int = 1  # split path, first kernel: rows per program
    dot_warps: int = 8  # split path, first kernel: num_warps
    # forward: looped, the first pass keeps the row in L2 for the second, which drops it; in one tile
    # the row is dropped as it is read and the parameters are kept
    evict: bool = False
    # forward: the parameters, read by every row, load evict_last whatever the row's hints (in one
    # tile ``evict`` implies it)
    keep_params: bool = False
    lanes: bool = False  # forward, looped: the statistics kept per column lane, reduced once a row
    fold_tails: bool = True  # forward: the masks the launch rules out are constants (``tails``, ``chunks``)

    @property
    def policies(self) -> tuple[str, str]:
        """(first pass, second pass) L2 eviction policies of the looped forward's row loads; a row in
        one tile, read once, loads with the second (its parameters: ``param_policy``)."""
        return ("evict_last", "evict_first") if self.evict else ("", "")

    @property
    def param_policy(self) -> str:
        """The eviction policy of the forward's parameter loads."""
        return "evict_last" if self.keep_params or (self.evict and not self.looped) else ""

    def tails(self, n: int) -> tuple[bool, bool]:
        """(ROW_TAIL, COL_TAIL) of a forward launch over rows of ``n``: whether a tile may reach past
        the last row (more than one row a tile; the grid has cdiv(M, rows) programs) and past the
        row's end (n not a multiple of block_n). A function of n alone, like the rest of the config."""
        if not self.fold_tails:
            return True, True
        return self.rows > 1, n % self.block_n != 0

    def chunks(self, n: int) -> int:
        """The looped forward's chunks a row when its statistics are kept per lane and the row is a
        whole number of chunks (its loops then have a compile-time trip count: one binary per such
        N), else 0 (the trip count from N). Constant, the loops are unrolled: that made RMSNorm's
        one-merge-a-chunk form 7% slower at 32,768 (2 chunks of 16,384 over 8 warps: 530.6 -> 567.6
        us) and the per-lane forms the fastest at 8192-32768 (bench/results/h200-2026-12-03-lanes)."""
        if not (self.looped and self.lanes and self.fold_tails) or self.tails(n)[1]:
            return 0
        return n // self.block_n


# Measured on an H100, bf16, M = 16384 (bench/tune.py; bench/results/tune-h100.log and
# profile-h100/tune.log have the sweeps); the tables of every GPU model without its own (GPU_TABLES).
# Forward, one program per row tile: (block_n bound, rows, num_warps[, evict[, keep_params]]), as Config's.
FWD_TABLE: dict[str, list[tuple]] = {
    "rms": [(256, 16, 4), (512, 8, 4), (1024, 4, 4), (2048, 1, 8), (4096, 2, 8), (8192, 1, 16),
            (16384, 1, 16), (32768, 1, 16)],
    "ln": [(256, 16, 4), (512, 8, 4), (1024, 4, 4), (2048, 2, 8), (4096, 2, 8), (8192, 1, 8),
           (16384, 1, 8), (32768, 1, 32)],
}
# Backward, fused path: (block_n bound, rows, num_warps, programs per SM, prefetch, reload_w). Prefetching
# helps RMSNorm up to 8192 (+4-10%) but spills at 16384 (255 GB/s), and costs LayerNorm (whose
# tiles carry more state) everywhere except at 1024.
BWD_TABLE: dict[str, list[tuple]] = {
    "rms": [(256, 16, 4, 2, True, False), (512, 8, 4, 2, True, False), (1024, 4, 4, 2, True, False),
            (2048, 2, 8, 2, True, False), (4096, 1, 8, 2, True, False), (8192, 1, 16, 1, True, False),
            (16384, 1, 16, 1, False, True)],
    "ln": [(256, 16, 4, 2, True, False), (512, 8, 4, 2, True, False), (1024, 4, 4, 2, True, False),
           (2048, 2, 8, 2, False, False), (4096, 1, 8, 2, False, False), (8192, 1, 16, 1, False, False)],
}
# Backward, split path (moves 5MN instead of 3MN elements, but runs at copy speed: every config
# tried gave 1740-1800 GB/s on the 3MN basis).
BWD_SPLIT: dict[str, Config] = {
    "rms": Config(4096, 1, 8, programs_per_sm=2, split=True),
    "ln": Config(4096, 1, 8, programs_per_sm=2, split=True),
}


@dataclass(frozen=True)
class Tables:
    """One GPU model's launch tables: forward and backward as FWD_TABLE and BWD_TABLE, the longest
    row a forward program keeps in registers, and the looped forward's configs above it: per op,
    (block bound, Config) in rising bounds, the last one for every longer row (None: chunks of
    FWD_LOOP_BLOCK over FWD_LOOP_WARPS)."""

    fwd: dict[str, list[tuple]]
    bwd: dict[str, list[tuple]]
    fwd_max_block: int
    fwd_loop: dict[str, list[tuple[int, Config]]] | None = None


def _replacing(table: list[tuple], *entries: tuple) -> list[tuple]:
    """``table`` with the entries of the same bounds as ``entries`` replaced by them."""
    new = {e[0]: e for e in entries}
    missing = set(new) - {e[0] for e in table}
    if missing:
        raise ValueError(f"no entry of bound {sorted(missing)} to replace")
    return [new.get(e[0], e) for e in table]


def _looped_lanes(chunk: int, warps: int) -> Config:
    """The looped forward with the eviction hints and the statistics per column lane."""
    return Config(chunk, 1, warps, looped=True, evict=True, lanes=True)


# GPU models on which bench/tune.py's sweep picked other winners than on the H100, keyed by a word of
# the device name. H200 (bench/results/tune-h200.log): fewer warps forward at 2048-4096 (+7-14%), the
# looped path above 4096 (below), and LayerNorm's backward at 8192 with prefetch and reload_w (+22%).
# Everywhere else the H100's entries were within 1% of its best.
GPU_TABLES: dict[str, Tables] = {
    "H200": Tables(
        # N = 1024: two rows a tile (RMSNorm, 22.9 -> 22.2 us) and one row over 2 warps (LayerNorm,
        # 24.3 -> 23.4) (bench/results/h200-2026-12-03-lanes/sweep-lanes.md). 4096: one row a tile,
        # with the hardware's bf16 rounding (rnd) 4-6% faster at M = 1-128; at M = 16384 RMSNorm
        # level, LayerNorm 2.7% slower (72.4 -> 74.4 us) (bench/results/h200-2026-12-03/sweep-cast-rounds.md).
        # LayerNorm at 1024 and 4096 with the eviction hints (the row read once evict_first, the
        # parameters evict_last): 23.3 -> 22.6 us at 1024, M = 16384; at 4096 M = 1 / 32 / 128 /
        # 16384 6.1 / 6.2 / 6.8 / 72.9 -> 5.8 / 6.2 / 6.5 / 72.3. RMSNorm level at 1024 (21.7 both)
        # and slower at 4096, M = 16384 (70.0 -> 73.2) (bench/results/h200-2026-12-04/sweep-hints.log).
        # The parameters loaded evict_last with the row left to the default policy (keep_params),
        # against the entries before, the median over eight fresh allocations of the time ratio on the
        # same allocation (bench/results/h200-2026-12-04b/probe4.log): RMSNorm 0.982 at 1024 and, one
        # row over 4 warps, 0.977 at 2048; LayerNorm, one row over 4 warps, 0.965 at 2048 and 0.980 /
        # 0.989 / 0.992 / 0.990 at 4096, M = 16384 / 1 / 32 / 128. At RMSNorm's 4096 it lost at M =
        # 16384 (1.007 over 8 warps, 1.018 over 4), at LayerNorm's 1024 it gained nothing (1.002).
        # RMSNorm's 4096 took it once the forward a call autograd does not record stores no rstd
        # (records_grad): against Liger's time, 1.020 -> 1.014 at M = 16384 and 1.000 -> 0.956 at M = 1,
        # 1.024 -> 1.030 and 1.020 -> 1.025 at M = 32 and 128, within their spread (bench/results/
        # h200-2026-12-04c/probe9-w16.log; two rows over 16 warps, 1.003 at M = 16384, was 4-8%
        # slower at M = 1-128). docs/kernels.md has why that binary trails Liger's.
        fwd={"rms": _replacing(FWD_TABLE["rms"], (1024, 2, 4, False, True), (2048, 1, 4, False, True),
                               (4096, 1, 8, False, True)),
             "ln": _replacing(FWD_TABLE["ln"], (1024, 1, 2, True), (2048, 1, 4, False, True),
                              (4096, 1, 4, False, True))},
        bwd={"rms": BWD_TABLE["rms"], "ln": _replacing(BWD_TABLE["ln"], (8192, 1, 16, 1, True, True))},
        fwd_max_block=4096,
        # Above 4096 the row is looped with its statistics per column lane (for LayerNorm the three
        # passes of torch.compile's kernel: the sum, the squared deviations about the mean, y), the
        # masks folded and, over whole chunks, a constant trip count. Against the row in registers
        # (bf16, M = 16384, us): RMSNorm 134.5 -> 129.6 / 263.6 -> 255.2 at 8192 / 16384; LayerNorm
        # 135.0 -> 131.9 / 273.6 -> 261.3 (bench/results/h200-2026-12-03-lanes/sweep-lanes.md). At
        # 32768, 32 warps in chunks of 8192: RMSNorm 525.8 -> 504.8, LayerNorm 591.0 -> 537.2 against
        # the one-merge-a-chunk loop over 8 warps in chunks of 16384 (sweep-codegen.md,
        # sweep-lanes-32-warps.log).
        fwd_loop={"rms": [(8192, _looped_lanes(4096, 16)), (16384, _looped_lanes(8192, 16)),
                          (32768, _looped_lanes(8192, 32))],
                  "ln": [(8192, _looped_lanes(4096, 8)), (16384, _looped_lanes(4096, 16)),
                         (32768, _looped_lanes(8192, 32))]},
    ),
}


@functools.cache
def _gpu_name(device_index: int) -> str:
    return torch.cuda.get_device_name(device_index)


def tables(device: torch.device | None = None) -> Tables:
    """The launch tables for ``device``: its GPU model's if GPU_TABLES has them, else the H100's (and
    on CPU). A property of the device, never of the batch."""
    if device is not None and device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        words = _gpu_name(index).split()
        for model, t in GPU_TABLES.items():
            if model in words:
                return t
    return Tables(FWD_TABLE, BWD_TABLE, FWD_MAX_BLOCK)


def _lookup(table, block):
    for entry in table:
        if block <= entry[0]:
            return entry[1:]
    return table[-1][1:]


def fwd_config(n: int, op: str = "rms", device: torch.device | None = None) -> Config:
    t = tables(device)
    block = max(16, triton.next_power_of_2(n))
    if block > t.fwd_max_block:
        if t.fwd_loop and op in t.fwd_loop:
            return next((c for bound, c in t.fwd_loop[op] if block <= bound), t.fwd_loop[op][-1][1])
        return Config(FWD_LOOP_BLOCK, 1, FWD_LOOP_WARPS, looped=True)
    rows, warps, *hints = _lookup(t.fwd[op], block)
    evict, keep_params = (*hints, False, False)[:2]
    return Config(block, rows, warps, evict=evict, keep_params=keep_params)


def bwd_config(n: int, op: str = "rms", device: torch.device | None = None) -> Config:
    block = max(16, triton.next_power_of_2(n))
    if block > BWD_MAX_BLOCK[op]:
        return BWD_SPLIT[op]
    rows, warps, pps, prefetch, reload_w = _lookup(tables(device).bwd[op], block)
    return Config(block, rows, warps, programs_per_sm=pps, prefetch=prefetch, reload_w=reload_w)


@functools.cache
def _sm_count(device_index: int) -> int:
    return torch.cuda.get_device_properties(device_index).multi_processor_count


CPU_PROGRAMS = 4  # the interpreter has no SMs; a small fixed grid still exercises multi-row programs


def _slots(device: torch.device) -> int:
    """SMs of ``device`` (CPU_PROGRAMS on the CPU)."""
    if device.type == "cuda":
        return _sm_count(device.index if device.index is not None else torch.cuda.current_device())
    return CPU_PROGRAMS


def fwd_launch(m: int, cfg: Config, device: torch.device) -> tuple[int, bool]:
    """(programs, EARLY) of a forward launch over ``m`` rows: one program a tile of rows, and whether
    a row in one tile loads the parameters with the row, before its sums, or after them.

    Held across the sums the parameters cost registers, and so occupancy when the grid is many waves
    (LayerNorm at N = 4096, M = 16,384: 18% slower); where it is one wave (m at most the SM count)
    nothing waits for the registers and the second round trip is what a row waits for (LayerNorm
    at M = 1: 6.7 -> 6.0 us, bench/results/h200-2026-12-03-early/sweep.log). The looped path loads
    them with each chunk of its last pass anyway.

    Chosen by M, but it changes no operation: no sum reads a parameter and no multiply and add is
    contracted (FP_FUSION), so every element of y is the same operations on the same values either
    way, and the sums reduce over the same layouts (tests/test_triton_kernels.py compiles both for
    sm_90). The batch-invariance check compares rows either side of the SM count
    (harness/boundaries.py) and of CPU_PROGRAMS (the built-ins' declared boundary).
    """
    return triton.cdiv(m, cfg.rows), not cfg.looped and m <= _slots(device)


def fwd_consts(n: int, cfg: Config, early: bool) -> dict:
    """The compile-time switches of a forward launch over rows of ``n`` with ``cfg`` (``EARLY`` from
    ``fwd_launch``), the same for both ops' kernels; with ``num_warps``."""
    row_tail, col_tail = cfg.tails(n)
    keep, drop = cfg.policies
    return dict(LOOPED=cfg.looped, ROWS=cfg.rows, BLOCK_N=cfg.block_n, KEEP=keep, DROP=drop,
                PARAMS=cfg.param_policy, LANES=cfg.lanes,
                ROW_TAIL=row_tail, COL_TAIL=col_tail, CHUNKS=cfg.chunks(n), EARLY=early, num_warps=cfg.num_warps)


def bwd_consts(cfg: Config) -> dict:
    """The compile-time switches of a backward launch with ``cfg`` that both ops' kernels share (the
    dW programs' tile is ``BackwardLaunch.dw_consts``); with ``num_warps``."""
    return dict(SPLIT=cfg.split, PREFETCH=cfg.prefetch, RELOAD_W=cfg.reload_w, ROWS=cfg.rows, BLOCK_N=cfg.block_n,
                num_warps=cfg.num_warps)


def dots_consts(cfg: Config) -> dict:
    """The compile-time switches of the split backward's first launch (its row dot products), both
    ops' kernels alike, but for HAS_W; with ``num_warps``."""
    return dict(ROWS=cfg.dot_rows, BLOCK_N=cfg.block_n, num_warps=cfg.dot_warps)


def num_programs(m: int, cfg: Config, device: torch.device, n_blocks: int = 1) -> tuple[int, int]:
    """(programs along the rows, rows per program) of the backward grid (times n_blocks columns).

    About programs_per_sm programs per SM in all; rows per program is a multiple of the tile
    height, and programs = ceil(M / rows per program), so every program owns at least one row.
    """
    target = _slots(device) * (max(1, cfg.programs_per_sm) if device.type == "cuda" else 1)
    target = max(1, target // n_blocks)
    per_prog = max(triton.cdiv(m, target), MIN_ROWS_PER_PROGRAM)
    per_prog = triton.cdiv(per_prog, cfg.rows) * cfg.rows
    return triton.cdiv(m, per_prog), per_prog


# dW (and dB) of a batch too small for the partials to pay: tiles of 64 rows by 32 columns (64 bytes
# of a bf16 row), the next tile's loads in flight; of five other tiles none was faster for both ops
# beyond the spread (bench/results/h200-2026-12-03-early/sweep-dw-one-launch.log).
DW_TILE = (64, 32)
DW_COLUMNS_ON = True
# Each column block's program loops over every row, so the batch is capped: narrow rows qualify in
# far larger batches (N = 256 takes 16 rows a tile, so on an H200 up to 4,224 rows would), which a
# few programs then walk alone. Forward+backward on an H200 against the partials (bf16, us at M =
# 256 / 512 / 1024 / 2048 / 4096; bench/results/h200-2026-12-04/sweep-early-dw-cap.log): RMSNorm at N = 256
# 9.3 / 12.0 / 12.4 / 13.6 / 17.1 -> 9.5 / 10.9 / 13.2 / 17.5 / 26.9, at 1024 9.5 / 12.4 / 14.9 /
# 17.5 / 23.3 -> 9.6 / 11.1 / 15.1 / 17.4 / 23.3; LayerNorm at 256 10.1 / 15.1 / 15.0 / 16.3 / 20.4
# -> 10.3 / 11.8 / 14.5 / 19.0 / 30.2, at 1024 10.7 / 13.4 / 15.8 / 18.4 / 25.0 -> 10.0 / 12.1 /
# 16.1 / 18.7 / 25.3: faster up to 512 rows, mixed at 1024, slower beyond.
DW_MAX_ROWS = 512


def dw_columns(m: int, cfg: Config, device: torch.device) -> tuple[int, int] | None:
    """(rows, columns) of the dW tile where the backward sums dW (and dB) over every row of h and dy
    in narrow column blocks: where the fused backward would give each of several programs a single
    tile of rows, whose partials would be the batch again in fp32, written and read back by a second
    launch (``sum_partials``). The column blocks are programs of the same launch, after those that
    write dx alone, so a small batch's backward is one launch. None: the partials. dx is the same
    operations either way (its programs reduce over the same layouts, as ``fwd_launch`` says), dW a
    fixed order (over rows in tiles, then the tile's rows) for a given M, as with the partials.
    Forward+backward at N = 4096, M = 1 / 32 / 128 on an H200, us: RMSNorm 8.6 / 11.4 / 12.7 with the
    partials, 8.4 / 9.1 / 9.7 so; LayerNorm 9.1 / 12.0 / 14.3 and 9.2 / 10.5 / 11.4
    (sweep-dw-one-launch.log; as a launch of its own before them, LayerNorm's M = 128 took 13.1).
    Where dx is written over dy the partials stay: these programs would read what the others
    overwrite (RMSNorm's ``in_place``)."""
    return _dw_tile(m, cfg, *num_programs(m, cfg, device))


def _dw_tile(m: int, cfg: Config, progs: int, per_prog: int) -> tuple[int, int] | None:
    if not DW_COLUMNS_ON or cfg.split or m > DW_MAX_ROWS:
        return None
    return DW_TILE if progs > 1 and per_prog == cfg.rows else None


def rows_2d(t: torch.Tensor, n: int) -> torch.Tensor:
    """(M, N) view of ``t`` whose last dim is contiguous; copies only when no such view exists.

    A row stride other than N (``big[:, :N]``, or (B, T, W)[..., :N]) is kept as is.
    """
    t2 = t.reshape(-1, n)
    if n > 1 and t2.stride(1) != 1:
        t2 = t2.contiguous()
    elif t2.shape[0] == 1 and t.dim() >= 2 and t2.data_ptr() == t.data_ptr():
        # One row: reshape makes its stride N, but it is a row of its batch, and the kernel is
        # compiled for the stride it gets (divisible by 16 or not): keep the batch's, so that the
        # row is computed by the same binary alone as in its batch.
        t2 = t2.as_strided((1, n), (t.stride(-2), 1))
    return t2


def check_dtype(t: torch.Tensor, what: str) -> None:
    if t.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise TypeError(f"{what} must be float32, bfloat16 or float16, got {t.dtype}")


# ----------------------------------------------------------------------------------------------
# Device helpers shared by both ops
# ----------------------------------------------------------------------------------------------


def records_grad(*tensors: torch.Tensor | None) -> bool:
    """Whether autograd records a call on ``tensors``: grad mode on and one of them requiring grad.

    The wrappers ask before ``Function.apply`` and pass the answer in: inside ``forward`` grad mode
    is always off and ``ctx.needs_input_grad`` follows ``requires_grad`` alone, so under
    ``torch.no_grad`` or ``inference_mode`` it still says a backward may come, and a forward that
    trusted it stored statistics nothing would read (LayerNorm at N = 1024, M = 16,384 on an H200:
    2.5% of its time; bench/results/h200-2026-12-04c/probe9.log).
    """
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


@triton.jit
def tile(BASE, rows, cols, stride):
    """Pointers to the (rows x cols) tile of a row-major matrix whose rows are ``stride`` apart."""
    return BASE + rows[:, None] * stride + cols[None, :]


@triton.jit
def div_rn(a, b):
    """IEEE-rounded a / b, b broadcast to a's fp32 shape (tl.div_rn takes neither scalars nor
    mixed shapes in compiled Triton)."""
    return tl.div_rn(a, tl.zeros_like(a) + b)


@triton.jit
def rsqrt_rn(v):
    """1 / sqrt(v) from IEEE sqrt and division: one rstd per row, so their cost is nothing, and
    rstd stays within ~1 ulp (the fast rsqrt.approx is a few)."""
    return tl.div_rn(tl.zeros_like(v) + 1.0, tl.sqrt_rn(v))


@triton.jit
def rnd(v, DT: tl.constexpr):
    """fp32 ``v`` rounded to nearest even in ``DT``, returned as fp32.

    For the roundings a variant mandates on the way (h, llama's xhat, every step of ``none``): y
    must be computed from exactly the h that is returned, correctly rounded on every backend.
    Compiled, the cast is the hardware's round-to-nearest-even conversion. The Triton interpreter
    truncates fp32 -> bf16 casts, so there bf16 is rounded on the bits (the cast that follows is
    exact). Both give the same bits for every fp32 input, NaN aside (a NaN stays a NaN); the bit
    form costs six integer ops an element, which on an H200 made the llama forward 7% slower at
    N = 16384 and 20% slower at 32768, whole row in registers (bench/results/h200-2026-12-03/
    fwdexp.log).
    """
    if DT == tl.bfloat16:
        if CAST_ROUNDS:
            return v.to(tl.bfloat16).to(tl.float32)
        bits = v.to(tl.int32, bitcast=True)
        bits = (bits + (0x7FFF + ((bits >> 16) & 1))) & -65536
        return tl.where(v != v, v, bits.to(tl.float32, bitcast=True))
    elif DT == tl.float16:
        return v.to(tl.float16).to(tl.float32)
    else:
        return v


@triton.jit
def narrow(v, DT: tl.constexpr):
    """``rnd(v, DT)`` as a ``DT`` tensor. Interpreted, bf16 is made from the bits: the
    interpreter's cast is wrong on subnormals even where the value is exact."""
    if DT == tl.bfloat16:
        if CAST_ROUNDS:
            return v.to(tl.bfloat16)
        bits = rnd(v, DT).to(tl.int32, bitcast=True)
        return (bits >> 16).to(tl.int16).to(tl.bfloat16, bitcast=True)
    else:
        return v.to(DT)


# Whether casts round correctly: true for compiled kernels, false under the interpreter (which
# triton.jit chose when these functions were defined: TRITON_INTERPRET=1 at import).
CAST_ROUNDS: tl.constexpr = tl.constexpr(not isinstance(rnd, InterpretedFunction))


@triton.jit
def row_mask(rows, M, ROW_TAIL: tl.constexpr):
    """rows < M, or, where the launch rules the tail out (ROW_TAIL false: one row a program, M
    programs), a constant true, which Triton's canonicalization folds out of every load, store and
    select (``Config.tails``)."""
    if ROW_TAIL:
        return rows < M
    return tl.full(rows.shape, True, tl.int1)


@triton.jit
def col_mask(cols, N, COL_TAIL: tl.constexpr):
    """cols < N, or a constant true where N is a multiple of the tile (COL_TAIL false), as
    ``row_mask``."""
    if COL_TAIL:
        return cols < N
    return tl.full(cols.shape, True, tl.int1)


@triton.jit
def fetch_x(X, R, rows, cols, mask, stride_x, stride_r, HAS_RES: tl.constexpr, POLICY: tl.constexpr):
    """Raw (x, residual) tiles of ``rows``; masked elements cause no memory traffic. POLICY: the
    loads' L2 eviction policy ("" for the default)."""
    rows = rows.to(tl.int64)  # M * stride may pass 2^31
    x = tl.load(tile(X, rows, cols, stride_x), mask=mask, other=0.0, eviction_policy=POLICY)
    if HAS_RES:
        return x, tl.load(tile(R, rows, cols, stride_r), mask=mask, other=0.0, eviction_policy=POLICY)
    return x, x


@triton.jit
def make_h(x, r, H, rows, cols, mask, stride_h, HAS_RES: tl.constexpr, ODD: tl.constexpr):
    """h in fp32, already rounded to x's dtype; with a residual, h is also stored."""
    if HAS_RES:
        h = rnd(add_round_once(x.to(tl.float32), r.to(tl.float32), ODD), x.dtype)
        tl.store(tile(H, rows, cols, stride_h), narrow(h, x.dtype), mask=mask)
        return h
    return x.to(tl.float32)


@triton.jit
def chunk_h(X, R, H, rows, c, mask, stride_x, stride_r, stride_h, HAS_RES: tl.constexpr, ODD: tl.constexpr,
            POLICY: tl.constexpr):
    """A looped forward's first pass: h of columns ``c`` of ``rows`` (stored when there is a residual)."""
    x, r = fetch_x(X, R, rows, c, mask, stride_x, stride_r, HAS_RES, POLICY)
    return make_h(x, r, H, rows.to(tl.int64), c, mask, stride_h, HAS_RES, ODD)


@triton.jit
def stored_h(X, H, rows, c, mask, stride_x, stride_h, HAS_RES: tl.constexpr, POLICY: tl.constexpr):
    """A looped forward's later passes: h of columns ``c`` again, in x's dtype. With a residual it is
    this program's own store of the first pass (same tile shape, so the same thread wrote each
    element: visible)."""
    if HAS_RES:
        return tl.load(tile(H, rows, c, stride_h), mask=mask, other=0.0, eviction_policy=POLICY)
    return tl.load(tile(X, rows, c, stride_x), mask=mask, other=0.0, eviction_policy=POLICY)


@triton.jit
def add_round_once(x, r, ODD: tl.constexpr):
    """x + r in fp32, ready to be rounded once to the input dtype.

    With ODD (x is bf16/fp16 and the residual has another dtype) the fp32 sum is rounded to odd:
    an exact TwoSum gives the rounding error, and an inexact even result is moved one ULP towards
    the exact value. Rounding a round-to-odd value with >= 2 spare bits to the narrower dtype is
    the same as rounding the exact sum once (fp32 has 24 bits, bf16/fp16 8/11), so h is correctly
    rounded even when, e.g., an fp32 residual sits exactly on a bf16 midpoint.
    """
    s = x + r
    if ODD:
        bb = s - x
        err = (x - (s - bb)) + (r - bb)
        bits = s.to(tl.int32, bitcast=True)
        fix = (err != 0.0) & ((bits & 1) == 0)
        # sign-magnitude: +1 on the bits moves away from zero, -1 towards it
        step = tl.where((err > 0.0) == (s > 0.0), 1, -1)
        s = tl.where(fix, bits + step, bits).to(tl.float32, bitcast=True)
    return s


@triton.jit
def _colsum(PART, OUT, P, N, cols, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    # Fixed order: slot i of the accumulator takes partials i, i+BLOCK_P, ... in sequence, then
    # one tree over the slots. It depends on P only, never on timing.
    acc = tl.zeros([BLOCK_P, BLOCK_C], dtype=tl.float32)
    cmask = cols < N
    for p0 in range(0, P, BLOCK_P):
        p = p0 + tl.arange(0, BLOCK_P)
        ptr = PART + p.to(tl.int64)[:, None] * N + cols[None, :]
        acc += tl.load(ptr, mask=(p < P)[:, None] & cmask[None, :], other=0.0)
    tl.store(OUT + cols, tl.sum(acc, axis=0).to(OUT.dtype.element_ty), mask=cmask)


@triton.jit
def _sum_partials(PART0, PART1, OUT0, OUT1, P, N, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    cols = tl.program_id(0) * BLOCK_C + tl.arange(0, BLOCK_C)
    if tl.program_id(1) == 0:
        _colsum(PART0, OUT0, P, N, cols, BLOCK_P, BLOCK_C)
    else:
        _colsum(PART1, OUT1, P, N, cols, BLOCK_P, BLOCK_C)


def sum_partials(parts: list[torch.Tensor], outs: list[torch.Tensor]) -> None:
    """outs[k] = sum over programs of parts[k] (each (P, N) fp32), cast to outs[k]'s dtype."""
    p, n = parts[0].shape
    block_c = 32
    block_p = 128 if p > 64 else max(16, triton.next_power_of_2(p))
    grid = (triton.cdiv(n, block_c), len(parts))
    p1 = parts[-1]
    o1 = outs[-1]
    _sum_partials[grid](parts[0], p1, outs[0], o1, p, n, BLOCK_P=block_p, BLOCK_C=block_c, num_warps=4,
                        enable_fp_fusion=FP_FUSION)


@dataclass(frozen=True)
class BackwardLaunch:
    """Grid and dW/dB buffers of a backward launch (``backward_launch``)."""

    grid: tuple[int, int]
    rows_per_prog: int
    dx_programs: int  # programs along the rows; the dW programs, if any, come after them
    dw_tile: tuple[int, int] | None  # (rows, columns) of the dW programs' tiles (``dw_columns``)
    parts: list[torch.Tensor | None]  # what the kernel writes
    finals: list[torch.Tensor | None]  # the gradients

    @property
    def dw_consts(self) -> dict[str, int]:
        """The kernel's DW_ROWS and DW_BLOCK (0: no dW programs)."""
        rows, block = self.dw_tile or (1, 0)
        return {"DW_ROWS": rows, "DW_BLOCK": block}

    def finish(self) -> None:
        """The partials summed into the gradients, where the kernel wrote partials."""
        pairs = [(p, f) for p, f in zip(self.parts, self.finals, strict=True) if f is not None and p is not f]
        if pairs:
            sum_partials([p for p, _ in pairs], [f for _, f in pairs])


def backward_launch(m: int, n: int, params: list[torch.Tensor | None], cfg: Config, device: torch.device,
                    dw_programs: bool = True) -> BackwardLaunch:
    """Grid and dW/dB buffers of a backward launch over ``m`` rows of ``n``.

    The kernel writes the final gradients (in the parameter's dtype) directly where one program
    along the rows owns every row (each column block once) or where ``dw_columns`` gives dW programs
    of their own (unless ``dw_programs`` is false: RMSNorm's dx written over dy); otherwise fp32
    partials that ``sum_partials`` reduces (``finish``). Buffers come from ``torch.empty``: the
    kernel writes every element of them.
    """
    n_blocks = triton.cdiv(n, cfg.block_n)
    progs, per_prog = num_programs(m, cfg, device, n_blocks)
    tile = _dw_tile(m, cfg, progs, per_prog) if dw_programs and any(p is not None for p in params) else None
    finals = [None if p is None else torch.empty(n, dtype=p.dtype, device=device) for p in params]
    if tile is not None:
        return BackwardLaunch((progs + triton.cdiv(n, tile[1]), 1), per_prog, progs, tile, list(finals), finals)
    if progs == 1:
        return BackwardLaunch((progs, n_blocks), per_prog, progs, None, list(finals), finals)
    parts = [None if p is None else torch.empty((progs, n), dtype=torch.float32, device=device)
             for p in params]
    return BackwardLaunch((progs, n_blocks), per_prog, progs, None, parts, finals)
