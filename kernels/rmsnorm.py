"""Triton RMSNorm, forward and backward, with an optional fused residual add.

y = h * rstd * (offset + w), rstd = 1 / sqrt(mean(h^2) + eps), h = x (+ residual, rounded once to
x's dtype). The casting modes follow Liger-Kernel and are specified exactly in references.py's
terms:

* ``gemma``: everything in fp32, one rounding of y at the end (also torch.nn.RMSNorm/F.rms_norm
  with offset 0, and HF Gemma with offset 1).
* ``llama``: rstd in fp32 from fp32 squares; xhat = h * rstd is rounded to x's dtype, then
  y = xhat * (offset + w) is computed in fp32 and rounded again (HF Llama's double rounding).
* ``none``: x's dtype throughout: every square, the mean, rstd, xhat, offset + w and y are rounded
  to x's dtype; only the sum of the squares accumulates in fp32. In fp16 the squares overflow for
  |x| >= 256 and underflow near 1e-4: that is this variant's domain, not a bug.

The backward is the closed form of references.py in fp32 for every mode (the derivative of the
exact function), using the rstd saved by the forward:
dx = rstd * (g - xhat * mean(g * xhat)), g = dy * (offset + w), xhat = h * rstd; dw = sum dy * xhat.
See _launch.py for the grid, the dW reduction and why it is deterministic and batch-invariant.

Dtypes: y and h have x's dtype; dx x's, dw the weight's, dresidual the residual's.
"""

from __future__ import annotations

import math
import numbers

import torch
import triton
import triton.language as tl
from torch import nn

from . import _launch as L
from ._launch import chunk_h, col_mask, div_rn, fetch_x, make_h, rnd, row_mask, rsqrt_rn, stored_h, tile

_CASTING = {"llama": 0, "gemma": 1, "none": 2}
LLAMA: tl.constexpr = tl.constexpr(0)
GEMMA: tl.constexpr = tl.constexpr(1)
NONE: tl.constexpr = tl.constexpr(2)


@triton.jit
def _sums(h, CASTING: tl.constexpr, XDT: tl.constexpr):
    """Row sums of the squares: fp32 squares, and for ``none`` also squares rounded to x's dtype."""
    sq = h * h
    if CASTING == NONE:
        return tl.sum(sq, axis=1), tl.sum(rnd(sq, XDT), axis=1)
    return tl.sum(sq, axis=1), tl.sum(sq, axis=1)


@triton.jit
def _rstd(sumsq, sumsq_x, N, eps, CASTING: tl.constexpr, XDT: tl.constexpr):
    """(rstd that y uses, rstd in fp32 that the backward uses)."""
    rstd = rsqrt_rn(div_rn(sumsq, N) + eps)
    if CASTING == NONE:
        # x's dtype throughout: the mean, eps, their sum and rstd are each rounded to it
        eps_x = rnd(tl.zeros_like(sumsq) + eps, XDT)
        v = rnd(rnd(div_rn(sumsq_x, N), XDT) + eps_x, XDT)
        return rnd(rsqrt_rn(v), XDT), rstd
    return rstd, rstd


@triton.jit
def _weight(W, cols, cmask, offset, CASTING: tl.constexpr, XDT: tl.constexpr, POLICY: tl.constexpr):
    w = offset + tl.load(W + cols, mask=cmask, other=0.0, eviction_policy=POLICY).to(tl.float32)
    if CASTING == NONE:
        w = rnd(w, XDT)
    return w


@triton.jit
def _apply(h, rstd, w, CASTING: tl.constexpr, HAS_W: tl.constexpr, XDT: tl.constexpr):
    xhat = h * rstd[:, None]
    if CASTING != GEMMA:
        xhat = rnd(xhat, XDT)  # llama and none round xhat to x's dtype
    if HAS_W:
        return xhat * w[None, :]
    return xhat


@triton.jit(do_not_specialize=["M"])  # _launch.py: batch invariance
def _rms_fwd(
    X, R, Y, H, W, RSTD,
    stride_x, stride_r, stride_y, stride_h,
    M, N, eps, offset,
    CASTING: tl.constexpr, HAS_W: tl.constexpr, HAS_RES: tl.constexpr, ODD: tl.constexpr,
    STORE_RSTD: tl.constexpr, LOOPED: tl.constexpr, ROWS: tl.constexpr, BLOCK_N: tl.constexpr,
    KEEP: tl.constexpr, DROP: tl.constexpr, PARAMS: tl.constexpr, LANES: tl.constexpr, ROW_TAIL: tl.constexpr,
    COL_TAIL: tl.constexpr, CHUNKS: tl.constexpr, EARLY: tl.constexpr,
):
    """One program per tile of ROWS rows. KEEP, DROP: the row's eviction policies (``Config.policies``:
    the looped path's first and second pass; a row in one tile loads with DROP); PARAMS: the weight's
    (``Config.param_policy``); LANES: the looped path's sums kept per column lane (``Config.lanes``);
    ROW_TAIL, COL_TAIL: ``Config.tails``; CHUNKS: ``Config.chunks``; EARLY: the weight loaded before
    the sums (``fwd_launch``)."""
    XDT = X.dtype.element_ty
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK_N)
    if LOOPED:  # one tile of rows per program, the row in chunks: sums first, then y
        rows = pid * ROWS + tl.arange(0, ROWS)
        rmask = row_mask(rows, M, ROW_TAIL)
        cols_end = N
        if CHUNKS > 0:  # a constant trip count
            cols_end = CHUNKS * BLOCK_N
        if LANES:  # the squares summed per column lane over the chunks, reduced once a row
            lane = tl.zeros([ROWS, BLOCK_N], dtype=tl.float32)
            lane_x = tl.zeros([ROWS, BLOCK_N], dtype=tl.float32)
            for c0 in range(0, cols_end, BLOCK_N):
                cmask = col_mask(c0 + cols, N, COL_TAIL)
                mask = rmask[:, None] & cmask[None, :]
                h = chunk_h(X, R, H, rows, c0 + cols, mask, stride_x, stride_r, stride_h, HAS_RES, ODD, KEEP)
                lane += h * h
                if CASTING == NONE:
                    lane_x += rnd(h * h, XDT)
            sumsq = tl.sum(lane, axis=1)
            sumsq_x = sumsq
            if CASTING == NONE:
                sumsq_x = tl.sum(lane_x, axis=1)
        else:  # one reduction a chunk
            sumsq = tl.zeros([ROWS], dtype=tl.float32)
            sumsq_x = tl.zeros([ROWS], dtype=tl.float32)
            for c0 in range(0, cols_end, BLOCK_N):
                cmask = col_mask(c0 + cols, N, COL_TAIL)
                mask = rmask[:, None] & cmask[None, :]
                h = chunk_h(X, R, H, rows, c0 + cols, mask, stride_x, stride_r, stride_h, HAS_RES, ODD, KEEP)
                s, s_x = _sums(h, CASTING, XDT)
                sumsq += s
                sumsq_x += s_x
        rstd, rstd_bwd = _rstd(sumsq, sumsq_x, N, eps, CASTING, XDT)
        r64 = rows.to(tl.int64)
        for c0 in range(0, cols_end, BLOCK_N):
            c = c0 + cols
            cmask = col_mask(c, N, COL_TAIL)
            mask = rmask[:, None] & cmask[None, :]
            h = stored_h(X, H, r64, c, mask, stride_x, stride_h, HAS_RES, DROP)
            w = offset
            if HAS_W:
                w = _weight(W, c, cmask, offset, CASTING, XDT, PARAMS)
            y = _apply(h.to(tl.float32), rstd, w, CASTING, HAS_W, XDT)
            tl.store(tile(Y, r64, c, stride_y), y.to(Y.dtype.element_ty), mask=mask)
        if STORE_RSTD:
            tl.store(RSTD + r64, rstd_bwd, mask=rmask)
    else:  # the row fits one tile
        rows = pid * ROWS + tl.arange(0, ROWS)
        rmask, cmask = row_mask(rows, M, ROW_TAIL), col_mask(cols, N, COL_TAIL)
        mask = rmask[:, None] & cmask[None, :]
        w = offset
        if HAS_W and EARLY:  # with the row: a grid of one wave (``fwd_launch``)
            w = _weight(W, cols, cmask, offset, CASTING, XDT, PARAMS)
        x, r = fetch_x(X, R, rows, cols, mask, stride_x, stride_r, HAS_RES, DROP)
        r64 = rows.to(tl.int64)
        h = make_h(x, r, H, r64, cols, mask, stride_h, HAS_RES, ODD)
        s, s_x = _sums(h, CASTING, XDT)
        rstd, rstd_bwd = _rstd(s, s_x, N, eps, CASTING, XDT)
        if HAS_W and not EARLY:
            # after the sums: held across them the weight costs registers (measured: 10% slower at
            # N >= 8192 on an H100; on an H200 35% at 16384 and spills at 32768, bench/results/
            # tune-h200-early-weight.log; 3% at N = 4096, M = 16,384, h200-2026-12-02/sweep-early-weight.md)
            w = _weight(W, cols, cmask, offset, CASTING, XDT, PARAMS)
        y = _apply(h, rstd, w, CASTING, HAS_W, XDT)
        tl.store(tile(Y, r64, cols, stride_y), y.to(Y.dtype.element_ty), mask=mask)
        if STORE_RSTD:
            tl.store(RSTD + r64, rstd_bwd, mask=rmask)


@triton.jit(do_not_specialize=["M"])  # _launch.py: batch invariance
def _rms_bwd_dots(
    DY, H, W, RSTD, D, stride_dy, stride_h, M, N, offset,
    HAS_W: tl.constexpr, ROWS: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """Split path, step 1: D[k, row] = sum over column chunk k of dy * (offset + w) * xhat."""
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    k = tl.program_id(1)
    cols = k * BLOCK_N + tl.arange(0, BLOCK_N)
    cmask = cols < N
    rmask = rows < M
    mask = rmask[:, None] & cmask[None, :]
    r64 = rows.to(tl.int64)
    h = tl.load(tile(H, r64, cols, stride_h), mask=mask, other=0.0).to(tl.float32)
    g = tl.load(tile(DY, r64, cols, stride_dy), mask=mask, other=0.0).to(tl.float32)
    rstd = tl.load(RSTD + r64, mask=rmask, other=0.0)
    if HAS_W:
        g = g * (offset + tl.load(W + cols, mask=cmask, other=0.0).to(tl.float32))[None, :]
    tl.store(D + k * M + r64, tl.sum(g * (h * rstd[:, None]), axis=1), mask=rmask)


@triton.jit
def _fetch_dy(DY, H, RSTD, D, rows, row_end, cols, cmask, stride_dy, stride_h, M, n_chunks,
              SPLIT: tl.constexpr):
    """Raw h and dy tiles of ``rows`` with their rstd and (split path) row dot product."""
    rmask = rows < row_end
    mask = rmask[:, None] & cmask[None, :]
    r64 = rows.to(tl.int64)
    h = tl.load(tile(H, r64, cols, stride_h), mask=mask, other=0.0)
    dy = tl.load(tile(DY, r64, cols, stride_dy), mask=mask, other=0.0)
    rstd = tl.load(RSTD + r64, mask=rmask, other=0.0)
    dot = tl.zeros_like(rstd)
    if SPLIT:  # the chunks' partial dot products, summed in chunk order
        for k in range(0, n_chunks):
            dot += tl.load(D + k * M + r64, mask=rmask, other=0.0)
    return h, dy, rstd, dot


@triton.jit(do_not_specialize=["M", "rows_per_prog", "dx_programs"])  # _launch.py: batch invariance
def _rms_bwd(
    DY, H, W, RSTD, D, DH, DX, DR, DWP,
    stride_dy, stride_h, stride_dh, stride_dx, stride_dr,
    M, N, rows_per_prog, n_chunks, offset, dx_programs,
    HAS_W: tl.constexpr, HAS_DW: tl.constexpr, HAS_DH: tl.constexpr, HAS_DR: tl.constexpr,
    SPLIT: tl.constexpr, PREFETCH: tl.constexpr, RELOAD_W: tl.constexpr, ROWS: tl.constexpr,
    BLOCK_N: tl.constexpr, DW_ROWS: tl.constexpr, DW_BLOCK: tl.constexpr,
):
    """Program (p, j): rows [p*k, (p+1)*k) x column block j. dx, and dw summed over its rows in
    fp32 registers, written once to row p of the partials. Fused path: one block holds the whole
    row and the row's dot product is computed here; split path: it comes from _rms_bwd_dots.
    With DW_BLOCK (``L.dw_columns``) the grid has two roles: programs below dx_programs write dx
    alone, the others dw, each over every row in a block of DW_BLOCK columns (DW_ROWS a tile)."""
    pid = tl.program_id(0)
    if DW_BLOCK == 0:
        _rms_bwd_rows(pid, tl.program_id(1), DY, H, W, RSTD, D, DH, DX, DR, DWP, stride_dy, stride_h, stride_dh,
                      stride_dx, stride_dr, M, N, rows_per_prog, n_chunks, offset, HAS_W, HAS_DW, HAS_DH, HAS_DR,
                      SPLIT, PREFETCH, RELOAD_W, ROWS, BLOCK_N, True)
    elif pid < dx_programs:
        _rms_bwd_rows(pid, tl.program_id(1), DY, H, W, RSTD, D, DH, DX, DR, DWP, stride_dy, stride_h, stride_dh,
                      stride_dx, stride_dr, M, N, rows_per_prog, n_chunks, offset, HAS_W, False, HAS_DH, HAS_DR,
                      SPLIT, PREFETCH, RELOAD_W, ROWS, BLOCK_N, True)
    else:  # one program along the rows (program_id(1) is 0: the grid is one column wide)
        _rms_bwd_rows(tl.program_id(1), pid - dx_programs, DY, H, W, RSTD, D, DH, DX, DR, DWP, stride_dy, stride_h,
                      stride_dh, stride_dx, stride_dr, M, N, M, n_chunks, offset, HAS_W, True, HAS_DH, HAS_DR,
                      SPLIT, True, RELOAD_W, DW_ROWS, DW_BLOCK, False)


@triton.jit
def _rms_bwd_rows(
    pid, block, DY, H, W, RSTD, D, DH, DX, DR, DWP,
    stride_dy, stride_h, stride_dh, stride_dx, stride_dr,
    M, N, rows_per_prog, n_chunks, offset,
    HAS_W: tl.constexpr, HAS_DW: tl.constexpr, HAS_DH: tl.constexpr, HAS_DR: tl.constexpr,
    SPLIT: tl.constexpr, PREFETCH: tl.constexpr, RELOAD_W: tl.constexpr, ROWS: tl.constexpr,
    BLOCK_N: tl.constexpr, WANT_DX: tl.constexpr,
):
    """_rms_bwd's program ``pid`` along the rows over column block ``block``; without WANT_DX dw only."""
    row_start = pid * rows_per_prog
    row_end = tl.minimum(row_start + rows_per_prog, M)
    cols = block * BLOCK_N + tl.arange(0, BLOCK_N)
    cmask = cols < N
    w = offset
    if HAS_W and not RELOAD_W and WANT_DX:
        w = offset + tl.load(W + cols, mask=cmask, other=0.0).to(tl.float32)
    dw = tl.zeros([ROWS, BLOCK_N], dtype=tl.float32)
    if PREFETCH:
        h_n, dy_n, rstd_n, dot_n = _fetch_dy(DY, H, RSTD, D, row_start + tl.arange(0, ROWS), row_end, cols,
                                             cmask, stride_dy, stride_h, M, n_chunks, SPLIT)
    for r0 in range(row_start, row_end, ROWS):
        rows = r0 + tl.arange(0, ROWS)
        if PREFETCH:  # the next tile's loads are in flight during this tile's reductions
            h, dy, rstd, dot = h_n, dy_n, rstd_n, dot_n
            h_n, dy_n, rstd_n, dot_n = _fetch_dy(DY, H, RSTD, D, rows + ROWS, row_end, cols, cmask,
                                                 stride_dy, stride_h, M, n_chunks, SPLIT)
        else:
            h, dy, rstd, dot = _fetch_dy(DY, H, RSTD, D, rows, row_end, cols, cmask, stride_dy, stride_h,
                                         M, n_chunks, SPLIT)
        mask = (rows < row_end)[:, None] & cmask[None, :]
        r64 = rows.to(tl.int64)
        dy = dy.to(tl.float32)
        xhat = h.to(tl.float32) * rstd[:, None]
        if WANT_DX:
            g = dy
            if HAS_W:
                if RELOAD_W:  # an L2 hit per tile, and the registers that held w stay free
                    g = dy * (offset + tl.load(W + cols, mask=cmask, other=0.0).to(tl.float32))[None, :]
                else:
                    g = dy * w[None, :]
            if not SPLIT:
                dot = tl.sum(g * xhat, axis=1)
            dx = (g - xhat * div_rn(dot, N)[:, None]) * rstd[:, None]
            if HAS_DH:
                dx += tl.load(tile(DH, r64, cols, stride_dh), mask=mask, other=0.0).to(tl.float32)
            tl.store(tile(DX, r64, cols, stride_dx), dx.to(DX.dtype.element_ty), mask=mask)
            if HAS_DR:
                tl.store(tile(DR, r64, cols, stride_dr), dx.to(DR.dtype.element_ty), mask=mask)
        if HAS_DW:
            dw += dy * xhat
    if HAS_DW:
        tl.store(DWP + pid.to(tl.int64) * N + cols, tl.sum(dw, axis=0).to(DWP.dtype.element_ty), mask=cmask)


# ----------------------------------------------------------------------------------------------
# Host side
# ----------------------------------------------------------------------------------------------


def _forward(x2, weight, r2, eps, casting, offset, want_rstd):
    m, n = x2.shape
    dev = x2.device
    y = torch.empty((m, n), dtype=x2.dtype, device=dev)
    h = torch.empty((m, n), dtype=x2.dtype, device=dev) if r2 is not None else None
    rstd = torch.empty(m, dtype=torch.float32, device=dev) if want_rstd else None
    if m == 0:
        return y, h, rstd
    cfg = L.fwd_config(n, "rms", dev)
    programs, early = L.fwd_launch(m, cfg, dev)
    _rms_fwd[(programs,)](
        x2, r2 if r2 is not None else x2, y, h if h is not None else y,
        weight if weight is not None else x2, rstd if rstd is not None else y,
        x2.stride(0), r2.stride(0) if r2 is not None else 0, y.stride(0), h.stride(0) if h is not None else 0,
        m, n, eps, offset,
        CASTING=_CASTING[casting], HAS_W=weight is not None, HAS_RES=r2 is not None,
        ODD=r2 is not None and r2.dtype != x2.dtype and x2.dtype != torch.float32,
        STORE_RSTD=want_rstd, **L.fwd_consts(n, cfg, early), enable_fp_fusion=L.FP_FUSION,
    )
    return y, h, rstd


def _backward(dy2, h2, weight, rstd, dh2, offset, want_dw, res_dtype, in_place):
    m, n = h2.shape
    dev = h2.device
    # In place only where dy's rows are packed: by its row stride, not is_contiguous(), which calls
    # any single row contiguous whatever its stride. A strided batch's sub-batch of one then took the
    # in-place binary (dx with dy's stride) and the batch did not, and on an H200 the two gave that
    # row's dx other bits (`normgate replay 'triton_rmsnorm_llama_inplace@batch_invariance:rmsnorm,
    # 1x1200,fp32,x=normal,dy=normal,w=normal,eps=1e-06,strided,seed=0' --device cuda`).
    if in_place and dy2.dtype == h2.dtype and dy2.stride(0) == n:  # (rows_2d: unit column stride)
        dx = dy2  # documented: dx overwrites dy (a tile's dy is read before its dx is written)
    else:
        dx = torch.empty((m, n), dtype=h2.dtype, device=dev)
    dr = None
    if res_dtype is not None and res_dtype != h2.dtype:
        dr = torch.empty((m, n), dtype=res_dtype, device=dev)
    if m == 0:
        dw = torch.zeros(n, dtype=weight.dtype, device=dev) if want_dw else None
        return dx, dr, dw
    cfg = L.bwd_config(n, "rms", dev)
    n_chunks = triton.cdiv(n, cfg.block_n)
    w_arg = weight if weight is not None else h2
    dots = dy2
    if cfg.split:
        dots = torch.empty((n_chunks, m), dtype=torch.float32, device=dev)
        _rms_bwd_dots[(triton.cdiv(m, cfg.dot_rows), n_chunks)](
            dy2, h2, w_arg, rstd, dots, dy2.stride(0), h2.stride(0), m, n, offset,
            HAS_W=weight is not None, **L.dots_consts(cfg), enable_fp_fusion=L.FP_FUSION,
        )
    # with dx written over dy, dW programs would read what the dx programs overwrite: partials then
    launch = L.backward_launch(m, n, [weight if want_dw else None], cfg, dev, dw_programs=dx is not dy2)
    _rms_bwd[launch.grid](
        dy2, h2, w_arg, rstd, dots, dh2 if dh2 is not None else dy2, dx,
        dr if dr is not None else dx, launch.parts[0] if want_dw else dx,
        dy2.stride(0), h2.stride(0), dh2.stride(0) if dh2 is not None else 0, dx.stride(0),
        dr.stride(0) if dr is not None else 0,
        m, n, launch.rows_per_prog, n_chunks, offset, launch.dx_programs,
        HAS_W=weight is not None, HAS_DW=want_dw, HAS_DH=dh2 is not None, HAS_DR=dr is not None,
        **L.bwd_consts(cfg), **launch.dw_consts, enable_fp_fusion=L.FP_FUSION,
    )
    launch.finish()
    return dx, dr, launch.finals[0]


class RMSNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, residual, eps, casting, offset, in_place, record):
        ctx.set_materialize_grads(False)  # an unused h costs no zero-filled dh
        n = x.shape[-1]
        x2 = L.rows_2d(x, n)
        r2 = L.rows_2d(residual, n) if residual is not None else None
        y, h, rstd = _forward(x2, weight, r2, eps, casting, offset, record)  # record: L.records_grad
        if record:
            ctx.save_for_backward(h if h is not None else x2, weight, rstd)
        ctx.offset, ctx.in_place, ctx.shape = offset, in_place, x.shape
        ctx.res_dtype = residual.dtype if residual is not None else None
        if h is None:
            return y.view(x.shape)
        return y.view(x.shape), h.view(x.shape)

    @staticmethod
    def backward(ctx, dy, dh=None):
        h2, weight, rstd = ctx.saved_tensors
        n = h2.shape[1]
        if dy is None:  # only h was used downstream
            dy = torch.zeros(ctx.shape, dtype=h2.dtype, device=h2.device)
        dy2 = L.rows_2d(dy, n)
        dh2 = L.rows_2d(dh, n) if dh is not None else None
        want_dw = weight is not None and ctx.needs_input_grad[1]
        dx, dr, dw = _backward(dy2, h2, weight, rstd, dh2, ctx.offset, want_dw, ctx.res_dtype, ctx.in_place)
        dx = dx.view(ctx.shape)
        dres = None
        if ctx.res_dtype is not None and ctx.needs_input_grad[2]:
            dres = dr.view(ctx.shape) if dr is not None else dx
        return dx, dw, dres, None, None, None, None, None


def rms_norm(
    x: torch.Tensor,
    weight: torch.Tensor | None,
    eps: float | None = None,
    residual: torch.Tensor | None = None,
    *,
    casting: str = "llama",
    offset: float = 0.0,
    in_place: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """RMSNorm over the last dim of ``x``; returns y, or (y, h) when ``residual`` is given.

    eps=None is float32's machine epsilon (what PyTorch computes for fp32/bf16/fp16 inputs).
    casting: "llama", "gemma" or "none" (module docstring); offset is added to the weight
    (1.0 for Gemma). With in_place=True the backward writes dx into the storage of the incoming
    gradient dy (as Liger-Kernel does) when dy's rows are packed (row stride = the last dim) and it
    has x's dtype: that saves an allocation, and dy must not be used after the backward.
    """
    if casting not in _CASTING:
        raise ValueError(f"casting must be one of {sorted(_CASTING)}, got {casting!r}")
    L.check_dtype(x, "x")
    n = x.shape[-1]
    if weight is not None:
        L.check_dtype(weight, "weight")
        if weight.shape != (n,):
            raise ValueError(f"weight must have shape ({n},), got {tuple(weight.shape)}")
    if residual is not None:
        L.check_dtype(residual, "residual")
        if residual.shape != x.shape:
            raise ValueError(f"residual shape {tuple(residual.shape)} != x shape {tuple(x.shape)}")
    if eps is None:
        eps = float(torch.finfo(torch.float32).eps)
    record = L.records_grad(x, weight, residual)
    return RMSNormFunction.apply(x, weight, residual, float(eps), casting, float(offset), bool(in_place), record)


# ----------------------------------------------------------------------------------------------
# Modules
# ----------------------------------------------------------------------------------------------


class LlamaRMSNorm(nn.Module):
    """Drop-in for transformers' LlamaRMSNorm (weight of ones, ``variance_epsilon``, llama casting)."""

    def __init__(self, hidden_size: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    def forward(self, hidden_states: torch.Tensor, residual: torch.Tensor | None = None):
        return rms_norm(hidden_states, self.weight, self.variance_epsilon, residual, casting="llama")

    def extra_repr(self) -> str:
        return f"{tuple(self.weight.shape)}, eps={self.variance_epsilon}"


class GemmaRMSNorm(nn.Module):
    """Drop-in for transformers' GemmaRMSNorm: weight of zeros, y = x_hat * (1 + w) all in fp32."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None):
        return rms_norm(x, self.weight, self.eps, residual, casting="gemma", offset=1.0)

    def extra_repr(self) -> str:
        return f"{tuple(self.weight.shape)}, eps={self.eps}"


class RMSNorm(nn.Module):
    """Drop-in for torch.nn.RMSNorm: fp32 compute, one rounding (gemma casting, offset 0)."""

    def __init__(
        self,
        normalized_shape: int | list[int] | tuple[int, ...] | torch.Size,
        eps: float | None = None,
        elementwise_affine: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if isinstance(normalized_shape, numbers.Integral):
            normalized_shape = (normalized_shape,)
        self.normalized_shape = tuple(normalized_shape)
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        if elementwise_affine:
            self.weight = nn.Parameter(torch.empty(self.normalized_shape, device=device, dtype=dtype))
        else:
            self.register_parameter("weight", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.weight is not None:
            nn.init.ones_(self.weight)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None):
        k = len(self.normalized_shape)
        if tuple(x.shape[x.dim() - k:]) != self.normalized_shape:
            raise ValueError(f"expected trailing shape {self.normalized_shape}, got {tuple(x.shape)}")
        n = math.prod(self.normalized_shape)
        lead = x.shape[: x.dim() - k]
        w = self.weight.reshape(n) if self.weight is not None else None
        r = residual.reshape(*lead, n) if residual is not None else None
        out = rms_norm(x.reshape(*lead, n), w, self.eps, r, casting="gemma", offset=0.0)
        if residual is None:
            return out.view(x.shape)
        return out[0].view(x.shape), out[1].view(x.shape)

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"
