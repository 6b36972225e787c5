"""A small Triton RMSNorm, forward and backward, with one compile-time switch for a mistake.

``MUTANT == 0`` is a correct kernel (a candidate of its own); each other value turns on one
plausible bug, chosen at compile time, so every mutant is this kernel plus one change. The
backward is deterministic by construction: each of a fixed number of programs owns rows
``pid, pid + PROGRAMS, ...`` and writes its partial dW row in full, and the partials are summed in
a fixed order.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from normgate.kernels.references import resolve_eps

#: programs of the backward: a stand-in for the SM count, small so that M < PROGRAMS is common
PROGRAMS = 4

MUTANTS = (
    "eps_outside_sqrt", "eps_in_sum", "squares_low_precision", "mean_over_block", "mask_off_by_one",
    "offset_doubled", "llama_cast_in_gemma", "gemma_cast_in_llama", "weight_cast_to_input", "batch_split",
    "stride_ignored", "rstd_low_precision", "rstd_row0", "rstd_no_eps_bwd", "offset_missing_bwd",
    "dw_partial_unwritten", "dw_atomic", "dx_into_dy",
    # found by the guard bands, the M boundaries and the identities
    "store_past_row", "dx_x_stride", "launch_switch_256", "offsets_int32", "weight_twice_bwd",
)
# Triton reads globals only as constexprs
EPS_OUTSIDE_SQRT = tl.constexpr(1)
EPS_IN_SUM = tl.constexpr(2)
SQUARES_LOW_PRECISION = tl.constexpr(3)
MEAN_OVER_BLOCK = tl.constexpr(4)
MASK_OFF_BY_ONE = tl.constexpr(5)
OFFSET_DOUBLED = tl.constexpr(6)
LLAMA_CAST_IN_GEMMA = tl.constexpr(7)
GEMMA_CAST_IN_LLAMA = tl.constexpr(8)
WEIGHT_CAST_TO_INPUT = tl.constexpr(9)
STRIDE_IGNORED = tl.constexpr(11)
RSTD_ROW0 = tl.constexpr(13)
RSTD_NO_EPS_BWD = tl.constexpr(14)
OFFSET_MISSING_BWD = tl.constexpr(15)
DW_PARTIAL_UNWRITTEN = tl.constexpr(16)
DW_ATOMIC = tl.constexpr(17)
STORE_PAST_ROW = tl.constexpr(19)
OFFSETS_INT32 = tl.constexpr(22)
WEIGHT_TWICE_BWD = tl.constexpr(23)



def mutant_id(name: str) -> int:
    return 0 if name == "" else MUTANTS.index(name) + 1


def tile_rows(block: int) -> int:
    """Rows per program: many short rows at once, as kernels for small N do (and the interpreter's
    cost is per operation, not per element)."""
    return max(1, min(128, 16384 // block))


def launch_switch_256(rows: int) -> int:
    """The "launch_switch_256" mutant's launch config: from 256 rows on, the row reduction runs in
    16-column chunks (another summation order), as a block size that switches at 256 tokens does
    (vllm #48271)."""
    return 16 if rows >= 256 else 0


def batch_split(rows: int) -> int:
    """The "batch_split" mutant's launch config, as an autotuner keyed on the batch size picks it:
    the column chunk of the row reduction changes with M's power-of-two bucket (0: one pass). Each
    chunk is another summation order, so a row's bits depend on how many rows came with it."""
    return (8, 16, 32, 0)[(rows - 1).bit_length() % 4]


@triton.jit
def _forward(X, W, Y, RSTD, x_stride, y_stride, M, N, eps, offset,
             BLOCK: tl.constexpr, TILE: tl.constexpr, LLAMA: tl.constexpr, SPLIT: tl.constexpr,
             MUTANT: tl.constexpr):
    rows = tl.program_id(0) * TILE + tl.arange(0, TILE)
    cols = tl.arange(0, BLOCK)
    row_ok = rows < M
    mask = row_ok[:, None] & (cols < N)[None, :]
    # element offsets in 64 bits: rows * stride passes 2**31 on large inputs (the mutant keeps 32)
    if MUTANT != OFFSETS_INT32:
        rows = rows.to(tl.int64)
    if MUTANT == STRIDE_IGNORED:
        x_rows = X + rows[:, None] * N
    else:
        x_rows = X + rows[:, None] * x_stride
    raw = tl.load(x_rows + cols[None, :], mask=mask, other=0.0)
    x = raw.to(tl.float32)
    if MUTANT == SQUARES_LOW_PRECISION:
        ss = tl.sum(raw * raw, axis=1).to(tl.float32)
    elif MUTANT == MASK_OFF_BY_ONE:
        ss = tl.sum(tl.where((cols < N - 1)[None, :], x * x, 0.0), axis=1)
    elif SPLIT > 0:
        # the reduction in column chunks, in an order that depends on SPLIT
        acc = tl.zeros((TILE, SPLIT), dtype=tl.float32)
        for start in range(0, N, SPLIT):
            c = start + tl.arange(0, SPLIT)
            v = tl.load(x_rows + c[None, :], mask=row_ok[:, None] & (c < N)[None, :], other=0.0).to(tl.float32)
            acc += v * v
        ss = tl.sum(acc, axis=1)
    else:
        ss = tl.sum(x * x, axis=1)
    if MUTANT == MEAN_OVER_BLOCK:
        ms = ss / BLOCK
    else:
        ms = ss / N
    if MUTANT == EPS_OUTSIDE_SQRT:
        rstd = 1.0 / (tl.sqrt(ms) + eps)
    elif MUTANT == EPS_IN_SUM:
        rstd = 1.0 / tl.sqrt((ss + eps) / N)
    else:
        rstd = 1.0 / tl.sqrt(ms + eps)
    xhat = x * rstd[:, None]
    if LLAMA:
        if MUTANT != GEMMA_CAST_IN_LLAMA:
            xhat = xhat.to(X.dtype.element_ty).to(tl.float32)
    elif MUTANT == LLAMA_CAST_IN_GEMMA:
        xhat = xhat.to(X.dtype.element_ty).to(tl.float32)
    w = tl.load(W + cols, mask=cols < N, other=0.0)
    if MUTANT == WEIGHT_CAST_TO_INPUT:
        w = w.to(X.dtype.element_ty)
    w = w.to(tl.float32)
    if MUTANT == OFFSET_DOUBLED:
        scale = offset + offset + w
    else:
        scale = offset + w
    y = xhat * scale[None, :]
    tl.store(Y + rows[:, None] * y_stride + cols[None, :], y.to(Y.dtype.element_ty), mask=mask)
    tl.store(RSTD + rows, rstd.to(RSTD.dtype.element_ty), mask=row_ok)


@triton.jit
def _backward(X, W, DY, DX, RSTD, DW_PARTIAL, x_stride, dy_stride, dx_stride, M, N, offset,
              BLOCK: tl.constexpr, TILE: tl.constexpr, PROGRAMS: tl.constexpr, MUTANT: tl.constexpr):
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    col_ok = cols < N
    w = tl.load(W + cols, mask=col_ok, other=0.0).to(tl.float32)
    if MUTANT == OFFSET_MISSING_BWD:
        scale = w
    else:
        scale = offset + w
    dw = tl.zeros((BLOCK,), dtype=tl.float32)
    for first in range(pid * TILE, M, PROGRAMS * TILE):
        rows = first + tl.arange(0, TILE)
        row_ok = rows < M
        mask = row_ok[:, None] & col_ok[None, :]
        if MUTANT != OFFSETS_INT32:
            rows = rows.to(tl.int64)
        if MUTANT == STRIDE_IGNORED:
            x = tl.load(X + rows[:, None] * N + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        else:
            x = tl.load(X + rows[:, None] * x_stride + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(DY + rows[:, None] * dy_stride + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        if MUTANT == RSTD_ROW0:
            rstd = tl.load(RSTD + rows * 0, mask=row_ok, other=0.0).to(tl.float32)
        elif MUTANT == RSTD_NO_EPS_BWD:
            rstd = 1.0 / tl.sqrt(tl.sum(x * x, axis=1) / N)
        else:
            rstd = tl.load(RSTD + rows, mask=row_ok, other=0.0).to(tl.float32)
        xhat = x * rstd[:, None]
        if MUTANT == WEIGHT_TWICE_BWD:
            g = dy * scale[None, :] * scale[None, :]  # the weight applied twice (Megatron-LM #6859)
        else:
            g = dy * scale[None, :]
        dx = rstd[:, None] * (g - xhat * (tl.sum(g * xhat, axis=1) / N)[:, None])
        if MUTANT == STORE_PAST_ROW:
            store = row_ok[:, None] & (cols < N + 1)[None, :]  # one element past the end of each row
        else:
            store = mask
        tl.store(DX + rows[:, None] * dx_stride + cols[None, :], dx.to(DX.dtype.element_ty), mask=store)
        dw += tl.sum(tl.where(mask, dy * xhat, 0.0), axis=0)
        if MUTANT == DW_PARTIAL_UNWRITTEN:
            tl.store(DW_PARTIAL + pid * N + cols, dw, mask=col_ok)
    if MUTANT == DW_ATOMIC:
        tl.atomic_add(DW_PARTIAL + cols, dw, mask=col_ok)
    elif MUTANT != DW_PARTIAL_UNWRITTEN:
        tl.store(DW_PARTIAL + pid * N + cols, dw, mask=col_ok)


class _RMSNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, eps, offset, llama, mutant, inplace):
        n = x.shape[-1]
        x2 = x.reshape(-1, n)
        if inplace:
            x2 = x2.contiguous()  # as many wrappers do; dy keeps the layout it arrives with
        m = x2.shape[0]
        y = torch.empty((m, n), dtype=x.dtype, device=x.device)
        rstd_dtype = x.dtype if mutant == "rstd_low_precision" else torch.float32
        rstd = torch.empty(m, dtype=rstd_dtype, device=x.device)
        block = triton.next_power_of_2(n)
        tile = tile_rows(block)
        split = (batch_split(m) if mutant == "batch_split" else launch_switch_256(m) if mutant == "launch_switch_256"
                 else 0)
        _forward[(triton.cdiv(m, tile),)](x2, weight, y, rstd, x2.stride(0), y.stride(0), m, n, eps, offset,
                                          BLOCK=block, TILE=tile, LLAMA=llama, SPLIT=split, MUTANT=mutant_id(mutant))
        ctx.save_for_backward(x2, weight, rstd)
        ctx.shape, ctx.offset, ctx.mutant, ctx.inplace = x.shape, offset, mutant, inplace
        return y.view(x.shape)

    @staticmethod
    def backward(ctx, dy):
        x2, weight, rstd = ctx.saved_tensors
        m, n = x2.shape
        dy2 = dy.reshape(m, n)
        if dy2.stride(-1) != 1:
            dy2 = dy2.contiguous()
        if ctx.mutant == "dx_into_dy" or ctx.inplace:
            dx = dy2  # dx overwrites the incoming gradient (declared by the in-place kernel only)
        else:
            dx = torch.empty((m, n), dtype=x2.dtype, device=x2.device)
        if ctx.mutant == "dw_atomic":
            partial = torch.zeros((1, n), dtype=torch.float32, device=x2.device)
        else:
            partial = torch.empty((PROGRAMS, n), dtype=torch.float32, device=x2.device)
        block = triton.next_power_of_2(n)
        # the "dx_x_stride" mutant addresses dx with x's row stride: right while dy's equals it
        dx_stride = x2.stride(0) if ctx.mutant == "dx_x_stride" else dx.stride(0)
        _backward[(PROGRAMS,)](x2, weight, dy2, dx, rstd, partial, x2.stride(0), dy2.stride(0), dx_stride,
                               m, n, ctx.offset, BLOCK=block, TILE=tile_rows(block), PROGRAMS=PROGRAMS,
                               MUTANT=mutant_id(ctx.mutant))
        return dx.view(ctx.shape), partial.sum(0).to(weight.dtype), None, None, None, None, None


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float | None, *, casting: str = "gemma",
             offset: float = 0.0, mutant: str = "", inplace: bool = False) -> torch.Tensor:
    """RMSNorm with ``casting`` gemma or llama; ``mutant`` names the bug to switch on ("" for none);
    ``inplace``: the backward writes dx into the incoming gradient's storage (declared)."""
    if mutant and mutant not in MUTANTS:
        raise ValueError(f"unknown RMSNorm mutant {mutant!r}")
    return _RMSNorm.apply(x, weight, resolve_eps(eps, x.dtype), float(offset), casting == "llama", mutant, inplace)
