"""Triton LayerNorm, forward and backward, with an optional fused residual add.

y = (h - mean) * rstd * w + b, rstd = 1 / sqrt(var + eps), var the biased variance, h = x
(+ residual, rounded once to x's dtype). mean and var are computed in fp32 and stably, the variance
always about the mean: two passes over the row held in registers; or, for rows looped in chunks,
either three passes with the sums kept per column lane (the sum, then the squared deviations about
the mean, then y: ``Config.lanes``) or per-chunk mean and M2 (two-pass inside the chunk) merged with
Chan's formula. A row with a large mean and a tiny spread keeps its accuracy every way, which
E[h^2] - E[h]^2 would not. y is rounded once, to x's dtype.

Backward (references.py), in fp32 with the mean and rstd saved by the forward:
dx = rstd * (g - mean(g) - xhat * mean(g * xhat)), g = dy * w; dw = sum dy * xhat; db = sum dy.
See _launch.py for the grid, the dW/dB reduction and why it is deterministic and batch-invariant.

Dtypes: y and h have x's dtype; dx x's, dw/db the parameters', dresidual the residual's.
"""

from __future__ import annotations

import math
import numbers

import torch
import triton
import triton.language as tl
from torch import nn

from . import _launch as L
from ._launch import chunk_h, col_mask, div_rn, fetch_x, make_h, row_mask, rsqrt_rn, stored_h, tile


@triton.jit
def _params(W, B, cols, cmask, HAS_W: tl.constexpr, HAS_B: tl.constexpr, POLICY: tl.constexpr):
    w = 1.0
    b = 0.0
    if HAS_W:
        w = tl.load(W + cols, mask=cmask, other=0.0, eviction_policy=POLICY).to(tl.float32)
    if HAS_B:
        b = tl.load(B + cols, mask=cmask, other=0.0, eviction_policy=POLICY).to(tl.float32)
    return w, b


@triton.jit
def _affine(xhat, w, b, HAS_W: tl.constexpr, HAS_B: tl.constexpr):
    y = xhat
    if HAS_W:
        y = y * w[None, :]
    if HAS_B:
        y = y + b[None, :]
    return y


@triton.jit(do_not_specialize=["M"])  # _launch.py: batch invariance
def _ln_fwd(
    X, R, Y, H, W, B, MEAN, RSTD,
    stride_x, stride_r, stride_y, stride_h,
    M, N, eps,
    HAS_W: tl.constexpr, HAS_B: tl.constexpr, HAS_RES: tl.constexpr, ODD: tl.constexpr,
    STORE_STATS: tl.constexpr, LOOPED: tl.constexpr, ROWS: tl.constexpr, BLOCK_N: tl.constexpr,
    KEEP: tl.constexpr, DROP: tl.constexpr, PARAMS: tl.constexpr, LANES: tl.constexpr, ROW_TAIL: tl.constexpr,
    COL_TAIL: tl.constexpr, CHUNKS: tl.constexpr, EARLY: tl.constexpr,
):
    """One program per tile of ROWS rows. KEEP, DROP: the row's eviction policies (``Config.policies``:
    the looped path's first and second pass; a row in one tile loads with DROP); PARAMS: the
    parameters' (``Config.param_policy``); LANES: the looped path's statistics in three passes, per
    column lane (``Config.lanes``); ROW_TAIL, COL_TAIL: ``Config.tails``; CHUNKS: ``Config.chunks``;
    EARLY: the parameters loaded before the sums (``fwd_launch``)."""
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK_N)
    if LOOPED:  # one tile of rows per program, the row in chunks: statistics first, then y
        rows = pid * ROWS + tl.arange(0, ROWS)
        rmask = row_mask(rows, M, ROW_TAIL)
        r64 = rows.to(tl.int64)
        cols_end = N
        if CHUNKS > 0:  # a constant trip count
            cols_end = CHUNKS * BLOCK_N
        if LANES:  # the sum per column lane, then the squared deviations about the mean per lane
            lane = tl.zeros([ROWS, BLOCK_N], dtype=tl.float32)
            for c0 in range(0, cols_end, BLOCK_N):
                c = c0 + cols
                cmask = col_mask(c, N, COL_TAIL)
                mask = rmask[:, None] & cmask[None, :]
                lane += chunk_h(X, R, H, rows, c, mask, stride_x, stride_r, stride_h, HAS_RES, ODD, KEEP)
            mean = div_rn(tl.sum(lane, axis=1), N)
            lane = tl.zeros([ROWS, BLOCK_N], dtype=tl.float32)
            for c0 in range(0, cols_end, BLOCK_N):
                c = c0 + cols
                cmask = col_mask(c, N, COL_TAIL)
                mask = rmask[:, None] & cmask[None, :]
                h = stored_h(X, H, r64, c, mask, stride_x, stride_h, HAS_RES, KEEP).to(tl.float32)
                d = tl.where(mask, h - mean[:, None], 0.0)
                lane += d * d
            m2 = tl.sum(lane, axis=1)
        else:  # one merge a chunk
            mean = tl.zeros([ROWS], dtype=tl.float32)
            m2 = tl.zeros([ROWS], dtype=tl.float32)
            for c0 in range(0, cols_end, BLOCK_N):
                c = c0 + cols
                cmask = col_mask(c, N, COL_TAIL)
                mask = rmask[:, None] & cmask[None, :]
                h = chunk_h(X, R, H, rows, c, mask, stride_x, stride_r, stride_h, HAS_RES, ODD, KEEP)
                # Chan et al.: merge (c0 elements, mean, m2) with this chunk's (nb, mb, m2b), each
                # chunk's m2b two-pass about its own mean: stable for any offset of the row
                na = c0 * 1.0
                nb = tl.minimum(N - c0, BLOCK_N) * 1.0
                mb = tl.sum(h, axis=1) / nb
                d = tl.where(mask, h - mb[:, None], 0.0)
                delta = mb - mean
                mean += delta * (nb / (na + nb))
                m2 += tl.sum(d * d, axis=1) + delta * delta * (na * nb / (na + nb))
        rstd = rsqrt_rn(div_rn(m2, N) + eps)
        for c0 in range(0, cols_end, BLOCK_N):
            c = c0 + cols
            cmask = col_mask(c, N, COL_TAIL)
            mask = rmask[:, None] & cmask[None, :]
            h = stored_h(X, H, r64, c, mask, stride_x, stride_h, HAS_RES, DROP).to(tl.float32)
            w, b = _params(W, B, c, cmask, HAS_W, HAS_B, PARAMS)
            y = _affine((h - mean[:, None]) * rstd[:, None], w, b, HAS_W, HAS_B)
            tl.store(tile(Y, r64, c, stride_y), y.to(Y.dtype.element_ty), mask=mask)
        if STORE_STATS:
            tl.store(MEAN + r64, mean, mask=rmask)
            tl.store(RSTD + r64, rstd, mask=rmask)
    else:  # the row fits one tile
        rows = pid * ROWS + tl.arange(0, ROWS)
        rmask, cmask = row_mask(rows, M, ROW_TAIL), col_mask(cols, N, COL_TAIL)
        mask = rmask[:, None] & cmask[None, :]
        w, b = 1.0, 0.0
        if EARLY:  # with the row: a grid of one wave (``fwd_launch``)
            w, b = _params(W, B, cols, cmask, HAS_W, HAS_B, PARAMS)
        x, r = fetch_x(X, R, rows, cols, mask, stride_x, stride_r, HAS_RES, DROP)
        r64 = rows.to(tl.int64)
        h = make_h(x, r, H, r64, cols, mask, stride_h, HAS_RES, ODD)
        # two passes over the row in registers: the mean, then the variance about it
        mean = div_rn(tl.sum(h, axis=1), N)
        d = tl.where(mask, h - mean[:, None], 0.0)
        rstd = rsqrt_rn(div_rn(tl.sum(d * d, axis=1), N) + eps)
        if not EARLY:  # after the sums, as _rms_fwd (18% slower at N = 4096, M = 16,384 held across them)
            w, b = _params(W, B, cols, cmask, HAS_W, HAS_B, PARAMS)
        y = _affine(d * rstd[:, None], w, b, HAS_W, HAS_B)
        tl.store(tile(Y, r64, cols, stride_y), y.to(Y.dtype.element_ty), mask=mask)
        if STORE_STATS:
            tl.store(MEAN + r64, mean, mask=rmask)
            tl.store(RSTD + r64, rstd, mask=rmask)


@triton.jit(do_not_specialize=["M"])  # _launch.py: batch invariance
def _ln_bwd_dots(
    DY, H, W, MEAN, RSTD, D, stride_dy, stride_h, M, N,
    HAS_W: tl.constexpr, ROWS: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """Split path, step 1: D[k, 0, row], D[k, 1, row] = sums over column chunk k of g and g * xhat."""
    rows = tl.program_id(0) * ROWS + tl.arange(0, ROWS)
    k = tl.program_id(1)
    cols = k * BLOCK_N + tl.arange(0, BLOCK_N)
    cmask = cols < N
    rmask = rows < M
    mask = rmask[:, None] & cmask[None, :]
    r64 = rows.to(tl.int64)
    h = tl.load(tile(H, r64, cols, stride_h), mask=mask, other=0.0).to(tl.float32)
    g = tl.load(tile(DY, r64, cols, stride_dy), mask=mask, other=0.0).to(tl.float32)
    mean = tl.load(MEAN + r64, mask=rmask, other=0.0)
    rstd = tl.load(RSTD + r64, mask=rmask, other=0.0)
    if HAS_W:
        g = g * tl.load(W + cols, mask=cmask, other=0.0).to(tl.float32)[None, :]
    # padding has g = 0 (dy loaded as 0), so it adds nothing whatever xhat is there
    sg = tl.sum(g, axis=1)
    sgx = tl.sum(g * ((h - mean[:, None]) * rstd[:, None]), axis=1)
    tl.store(D + (2 * k) * M + r64, sg, mask=rmask)
    tl.store(D + (2 * k + 1) * M + r64, sgx, mask=rmask)


@triton.jit
def _fetch_dy(DY, H, MEAN, RSTD, D, rows, row_end, cols, cmask, stride_dy, stride_h, M, n_chunks,
              SPLIT: tl.constexpr):
    """Raw h and dy tiles of ``rows``, their mean and rstd and (split path) row sums."""
    rmask = rows < row_end
    mask = rmask[:, None] & cmask[None, :]
    r64 = rows.to(tl.int64)
    h = tl.load(tile(H, r64, cols, stride_h), mask=mask, other=0.0)
    dy = tl.load(tile(DY, r64, cols, stride_dy), mask=mask, other=0.0)
    mean = tl.load(MEAN + r64, mask=rmask, other=0.0)
    rstd = tl.load(RSTD + r64, mask=rmask, other=0.0)
    sg = tl.zeros_like(rstd)
    sgx = tl.zeros_like(rstd)
    if SPLIT:  # the chunks' partial sums, added in chunk order
        for k in range(0, n_chunks):
            sg += tl.load(D + (2 * k) * M + r64, mask=rmask, other=0.0)
            sgx += tl.load(D + (2 * k + 1) * M + r64, mask=rmask, other=0.0)
    return h, dy, mean, rstd, sg, sgx


@triton.jit(do_not_specialize=["M", "rows_per_prog", "dx_programs"])  # _launch.py: batch invariance
def _ln_bwd(
    DY, H, W, MEAN, RSTD, D, DH, DX, DR, DWP, DBP,
    stride_dy, stride_h, stride_dh, stride_dx, stride_dr,
    M, N, rows_per_prog, n_chunks, dx_programs,
    HAS_W: tl.constexpr, HAS_DW: tl.constexpr, HAS_DB: tl.constexpr, HAS_DH: tl.constexpr,
    HAS_DR: tl.constexpr, SPLIT: tl.constexpr, PREFETCH: tl.constexpr, RELOAD_W: tl.constexpr,
    ROWS: tl.constexpr, BLOCK_N: tl.constexpr, DW_ROWS: tl.constexpr, DW_BLOCK: tl.constexpr,
):
    """Program (p, j): rows [p*k, (p+1)*k) x column block j; see _rms_bwd (and DW_BLOCK there)."""
    pid = tl.program_id(0)
    if DW_BLOCK == 0:
        _ln_bwd_rows(pid, tl.program_id(1), DY, H, W, MEAN, RSTD, D, DH, DX, DR, DWP, DBP, stride_dy, stride_h,
                     stride_dh, stride_dx, stride_dr, M, N, rows_per_prog, n_chunks, HAS_W, HAS_DW, HAS_DB, HAS_DH,
                     HAS_DR, SPLIT, PREFETCH, RELOAD_W, ROWS, BLOCK_N, True)
    elif pid < dx_programs:
        _ln_bwd_rows(pid, tl.program_id(1), DY, H, W, MEAN, RSTD, D, DH, DX, DR, DWP, DBP, stride_dy, stride_h,
                     stride_dh, stride_dx, stride_dr, M, N, rows_per_prog, n_chunks, HAS_W, False, False, HAS_DH,
                     HAS_DR, SPLIT, PREFETCH, RELOAD_W, ROWS, BLOCK_N, True)
    else:  # one program along the rows (program_id(1) is 0: the grid is one column wide)
        _ln_bwd_rows(tl.program_id(1), pid - dx_programs, DY, H, W, MEAN, RSTD, D, DH, DX, DR, DWP, DBP, stride_dy,
                     stride_h, stride_dh, stride_dx, stride_dr, M, N, M, n_chunks, HAS_W, HAS_DW, HAS_DB, HAS_DH,
                     HAS_DR, SPLIT, True, RELOAD_W, DW_ROWS, DW_BLOCK, False)


@triton.jit
def _ln_bwd_rows(
    pid, block, DY, H, W, MEAN, RSTD, D, DH, DX, DR, DWP, DBP,
    stride_dy, stride_h, stride_dh, stride_dx, stride_dr,
    M, N, rows_per_prog, n_chunks,
    HAS_W: tl.constexpr, HAS_DW: tl.constexpr, HAS_DB: tl.constexpr, HAS_DH: tl.constexpr,
    HAS_DR: tl.constexpr, SPLIT: tl.constexpr, PREFETCH: tl.constexpr, RELOAD_W: tl.constexpr,
    ROWS: tl.constexpr, BLOCK_N: tl.constexpr, WANT_DX: tl.constexpr,
):
    """_ln_bwd's program ``pid`` along the rows over column block ``block``; without WANT_DX dW and
    dB only."""
    row_start = pid * rows_per_prog
    row_end = tl.minimum(row_start + rows_per_prog, M)
    cols = block * BLOCK_N + tl.arange(0, BLOCK_N)
    cmask = cols < N
    w = 1.0
    if HAS_W and not RELOAD_W and WANT_DX:
        w = tl.load(W + cols, mask=cmask, other=0.0).to(tl.float32)
    dw = tl.zeros([ROWS, BLOCK_N], dtype=tl.float32)
    db = tl.zeros([ROWS, BLOCK_N], dtype=tl.float32)
    if PREFETCH:
        h_n, dy_n, mean_n, rstd_n, sg_n, sgx_n = _fetch_dy(
            DY, H, MEAN, RSTD, D, row_start + tl.arange(0, ROWS), row_end, cols, cmask, stride_dy, stride_h,
            M, n_chunks, SPLIT)
    for r0 in range(row_start, row_end, ROWS):
        rows = r0 + tl.arange(0, ROWS)
        if PREFETCH:  # the next tile's loads are in flight during this tile's reductions
            h, dy, mean, rstd, sg, sgx = h_n, dy_n, mean_n, rstd_n, sg_n, sgx_n
            h_n, dy_n, mean_n, rstd_n, sg_n, sgx_n = _fetch_dy(
                DY, H, MEAN, RSTD, D, rows + ROWS, row_end, cols, cmask, stride_dy, stride_h, M, n_chunks,
                SPLIT)
        else:
            h, dy, mean, rstd, sg, sgx = _fetch_dy(DY, H, MEAN, RSTD, D, rows, row_end, cols, cmask,
                                                   stride_dy, stride_h, M, n_chunks, SPLIT)
        mask = (rows < row_end)[:, None] & cmask[None, :]
        r64 = rows.to(tl.int64)
        dy = dy.to(tl.float32)
        xhat = (h.to(tl.float32) - mean[:, None]) * rstd[:, None]
        if WANT_DX:
            g = dy
            if HAS_W:
                if RELOAD_W:  # an L2 hit per tile, and the registers that held w stay free
                    g = dy * tl.load(W + cols, mask=cmask, other=0.0).to(tl.float32)[None, :]
                else:
                    g = dy * w[None, :]
            if not SPLIT:  # padding has g = 0, so it adds nothing to either sum
                sg = tl.sum(g, axis=1)
                sgx = tl.sum(g * xhat, axis=1)
            dx = (g - div_rn(sg, N)[:, None] - xhat * div_rn(sgx, N)[:, None]) * rstd[:, None]
            if HAS_DH:
                dx += tl.load(tile(DH, r64, cols, stride_dh), mask=mask, other=0.0).to(tl.float32)
            tl.store(tile(DX, r64, cols, stride_dx), dx.to(DX.dtype.element_ty), mask=mask)
            if HAS_DR:
                tl.store(tile(DR, r64, cols, stride_dr), dx.to(DR.dtype.element_ty), mask=mask)
        if HAS_DW:
            dw += dy * xhat
        if HAS_DB:
            db += dy
    if HAS_DW:
        tl.store(DWP + pid.to(tl.int64) * N + cols, tl.sum(dw, axis=0).to(DWP.dtype.element_ty), mask=cmask)
    if HAS_DB:
        tl.store(DBP + pid.to(tl.int64) * N + cols, tl.sum(db, axis=0).to(DBP.dtype.element_ty), mask=cmask)


# ----------------------------------------------------------------------------------------------
# Host side
# ----------------------------------------------------------------------------------------------


def _forward(x2, weight, bias, r2, eps, want_stats):
    m, n = x2.shape
    dev = x2.device
    y = torch.empty((m, n), dtype=x2.dtype, device=dev)
    h = torch.empty((m, n), dtype=x2.dtype, device=dev) if r2 is not None else None
    mean = torch.empty(m, dtype=torch.float32, device=dev) if want_stats else None
    rstd = torch.empty(m, dtype=torch.float32, device=dev) if want_stats else None
    if m == 0:
        return y, h, mean, rstd
    cfg = L.fwd_config(n, "ln", dev)
    programs, early = L.fwd_launch(m, cfg, dev)
    _ln_fwd[(programs,)](
        x2, r2 if r2 is not None else x2, y, h if h is not None else y,
        weight if weight is not None else x2, bias if bias is not None else x2,
        mean if want_stats else y, rstd if want_stats else y,
        x2.stride(0), r2.stride(0) if r2 is not None else 0, y.stride(0), h.stride(0) if h is not None else 0,
        m, n, eps,
        HAS_W=weight is not None, HAS_B=bias is not None, HAS_RES=r2 is not None,
        ODD=r2 is not None and r2.dtype != x2.dtype and x2.dtype != torch.float32,
        STORE_STATS=want_stats, **L.fwd_consts(n, cfg, early), enable_fp_fusion=L.FP_FUSION,
    )
    return y, h, mean, rstd


def _backward(dy2, h2, weight, bias, mean, rstd, dh2, want_dw, want_db, res_dtype):
    m, n = h2.shape
    dev = h2.device
    dx = torch.empty((m, n), dtype=h2.dtype, device=dev)
    dr = None
    if res_dtype is not None and res_dtype != h2.dtype:
        dr = torch.empty((m, n), dtype=res_dtype, device=dev)
    params = [weight if want_dw else None, bias if want_db else None]
    if m == 0:
        return dx, dr, [None if p is None else torch.zeros(n, dtype=p.dtype, device=dev) for p in params]
    cfg = L.bwd_config(n, "ln", dev)
    n_chunks = triton.cdiv(n, cfg.block_n)
    w_arg = weight if weight is not None else h2
    dots = dy2
    if cfg.split:
        dots = torch.empty((n_chunks, 2, m), dtype=torch.float32, device=dev)
        _ln_bwd_dots[(triton.cdiv(m, cfg.dot_rows), n_chunks)](
            dy2, h2, w_arg, mean, rstd, dots, dy2.stride(0), h2.stride(0), m, n,
            HAS_W=weight is not None, **L.dots_consts(cfg), enable_fp_fusion=L.FP_FUSION,
        )
    launch = L.backward_launch(m, n, params, cfg, dev)
    _ln_bwd[launch.grid](
        dy2, h2, w_arg, mean, rstd, dots, dh2 if dh2 is not None else dy2,
        dx, dr if dr is not None else dx,
        launch.parts[0] if want_dw else dx, launch.parts[1] if want_db else dx,
        dy2.stride(0), h2.stride(0), dh2.stride(0) if dh2 is not None else 0, dx.stride(0),
        dr.stride(0) if dr is not None else 0,
        m, n, launch.rows_per_prog, n_chunks, launch.dx_programs,
        HAS_W=weight is not None, HAS_DW=want_dw, HAS_DB=want_db, HAS_DH=dh2 is not None,
        HAS_DR=dr is not None, **L.bwd_consts(cfg), **launch.dw_consts, enable_fp_fusion=L.FP_FUSION,
    )
    launch.finish()
    return dx, dr, launch.finals


class LayerNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, residual, eps, record):
        ctx.set_materialize_grads(False)
        n = x.shape[-1]
        x2 = L.rows_2d(x, n)
        r2 = L.rows_2d(residual, n) if residual is not None else None
        y, h, mean, rstd = _forward(x2, weight, bias, r2, eps, record)  # record: L.records_grad
        if record:
            ctx.save_for_backward(h if h is not None else x2, weight, bias, mean, rstd)
        ctx.shape = x.shape
        ctx.res_dtype = residual.dtype if residual is not None else None
        if h is None:
            return y.view(x.shape)
        return y.view(x.shape), h.view(x.shape)

    @staticmethod
    def backward(ctx, dy, dh=None):
        h2, weight, bias, mean, rstd = ctx.saved_tensors
        n = h2.shape[1]
        if dy is None:
            dy = torch.zeros(ctx.shape, dtype=h2.dtype, device=h2.device)
        dy2 = L.rows_2d(dy, n)
        dh2 = L.rows_2d(dh, n) if dh is not None else None
        want_dw = weight is not None and ctx.needs_input_grad[1]
        want_db = bias is not None and ctx.needs_input_grad[2]
        dx, dr, (dw, db) = _backward(dy2, h2, weight, bias, mean, rstd, dh2, want_dw, want_db, ctx.res_dtype)
        dx = dx.view(ctx.shape)
        dres = None
        if ctx.res_dtype is not None and ctx.needs_input_grad[3]:
            dres = dr.view(ctx.shape) if dr is not None else dx
        return dx, dw, db, dres, None, None


def layer_norm(
    x: torch.Tensor,
    weight: torch.Tensor | None,
    bias: torch.Tensor | None,
    eps: float | None = 1e-5,
    residual: torch.Tensor | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """LayerNorm over the last dim of ``x``; returns y, or (y, h) when ``residual`` is given.

    weight and/or bias may be None. y (and h) have x's dtype whatever the parameters' dtype.
    eps=None is float32's machine epsilon, as for RMSNorm (the statistics are float32).
    """
    L.check_dtype(x, "x")
    n = x.shape[-1]
    for t, what in ((weight, "weight"), (bias, "bias")):
        if t is not None:
            L.check_dtype(t, what)
            if t.shape != (n,):
                raise ValueError(f"{what} must have shape ({n},), got {tuple(t.shape)}")
    if residual is not None:
        L.check_dtype(residual, "residual")
        if residual.shape != x.shape:
            raise ValueError(f"residual shape {tuple(residual.shape)} != x shape {tuple(x.shape)}")
    if eps is None:
        eps = float(torch.finfo(torch.float32).eps)
    record = L.records_grad(x, weight, bias, residual)
    return LayerNormFunction.apply(x, weight, bias, residual, float(eps), record)


class LayerNorm(nn.Module):
    """Drop-in for torch.nn.LayerNorm (same arguments, attributes and state_dict keys)."""

    def __init__(
        self,
        normalized_shape: int | list[int] | tuple[int, ...] | torch.Size,
        eps: float = 1e-5,
        elementwise_affine: bool = True,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if isinstance(normalized_shape, numbers.Integral):
            normalized_shape = (normalized_shape,)
        self.normalized_shape = tuple(normalized_shape)
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        kw = {"device": device, "dtype": dtype}
        if elementwise_affine:
            self.weight = nn.Parameter(torch.empty(self.normalized_shape, **kw))
            if bias:
                self.bias = nn.Parameter(torch.empty(self.normalized_shape, **kw))
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.weight is not None:
            nn.init.ones_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None):
        k = len(self.normalized_shape)
        if tuple(x.shape[x.dim() - k:]) != self.normalized_shape:
            raise ValueError(f"expected trailing shape {self.normalized_shape}, got {tuple(x.shape)}")
        n = math.prod(self.normalized_shape)
        lead = x.shape[: x.dim() - k]
        w = self.weight.reshape(n) if self.weight is not None else None
        b = self.bias.reshape(n) if self.bias is not None else None
        r = residual.reshape(*lead, n) if residual is not None else None
        out = layer_norm(x.reshape(*lead, n), w, b, self.eps, r)
        if residual is None:
            return out.view(x.shape)
        return out[0].view(x.shape), out[1].view(x.shape)

    def extra_repr(self) -> str:
        return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"
