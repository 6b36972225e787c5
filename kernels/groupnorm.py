"""Triton GroupNorm, forward and backward, deterministic and batch-invariant.

x is (N, C, *spatial), C split into G groups of Cg = C / G adjacent channels; each (sample, group)
is normalized over its L = Cg * HW elements (HW = prod(spatial)) with a biased variance, then
y = xhat * w[c] + b[c] with a per-channel affine. Statistics and every product in fp32; y rounded
once, to x's dtype; dx to x's, dW and dB to the parameters' dtypes.

One kernel body, ``_gn_body``, with a compile-time ``STAGE`` (jitted twice, ``_kernel_for``). A
program owns a tile of RB (sample, group) rows x ROWS adjacent channels of each x BLOCK_HW
positions, looped over the spatial extent:
a chunk of one group when the group is large (RB = 1, K = ceil(Cg / ROWS) programs per group), or
several whole groups when they are small (RB > 1: a program moves about TILE elements either way,
which also keeps the CPU interpreter's per-program cost down). RB, ROWS and BLOCK_HW are functions
of (Cg, HW) only (``config``), never of N, so a sample's arithmetic is the same whatever the batch
(batch invariance); the batch-sized integers never specialize the binary (``do_not_specialize``).

Forward:
- ``FUSED`` (whole groups in a tile, K = 1): statistics over the group, then y; the second read of
  the group comes from cache.
- otherwise ``STATS`` then ``NORM``: each chunk's (mean, M2), two-pass inside every tile and merged
  across tiles with Chan's formula, into a (N * G, K) buffer; then every program of a group
  combines the same K partials in the same order (so all of them hold the same bits of mean and
  rstd) and normalizes its chunk. K programs per group keep the GPU busy at N = 2 (one program per
  (sample, group) would be 64 programs for an H200's 132 SMs at G = 32).
Backward, ``DOTS``, ``DX``, ``PARAMS``: per (sample, channel) A = sum_hw dy * xhat and B = sum_hw dy
into a (N, C) buffer; then dx = rstd * (g - sum(g) / L - xhat * sum(g xhat) / L), g = dy * w[c],
where the group sums are sum_c w[c] B[n, c] and sum_c w[c] A[n, c], taken in channel order by every
program of the group; then dW[c] = sum_n A[n, c] and dB[c] = sum_n B[n, c], added in sample order.
Every buffer is fully written before it is read; no atomics, so every output is bitwise
reproducible, and y and dx do not depend on the batch.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import torch
import triton
import triton.language as tl
from torch import nn

from . import _launch as L

# the stages (constexpr: a jitted function may read a global only if it is one)
STATS, NORM, FUSED, DOTS, DX, PARAMS = (tl.constexpr(i) for i in range(6))

#: elements of one tile (RB groups x ROWS channels x BLOCK_HW positions). Swept on an H200 (bf16,
#: G = 32, C = 320-1280, 32x32 and 64x64, N = 2 and 8): 4096 over 4 warps beat 8 warps at all 12
#: shapes, forward and backward (the forward at C = 1280, 64x64: N = 2 24.7 against 29.5 us, N = 8 77.2
#: against 90.1); 8192- or 16384-element tiles (up to 8 or 16 warps) or a narrower BLOCK_HW won only
#: at the smallest shape (C = 320, 32x32, N = 2: 8.5 against 9.6 us) and lost at most others
#: (bench/results/h200-2026-12-02/groupnorm/sweep.json)
TILE = 4096
MAX_BLOCK_HW = 4096


@dataclass(frozen=True)
class Config:
    group_rows: int  # RB: (sample, group) rows per tile (power of two; more than one only for K = 1)
    rows: int  # channels per tile (power of two)
    block_hw: int  # spatial positions per tile (power of two)
    chunks: int  # K: programs per (sample, group)
    num_warps: int


#: channels per program of the parameter-gradient stage (which adds the samples' A and B)
PARAMS_BLOCK = 1024


def config(cg: int, hw: int) -> Config:
    """The launch shape, from the group's geometry alone (batch invariance: never from N). Small
    groups share a tile (RB of them), so that a program moves about TILE elements either way."""
    block_hw = min(triton.next_power_of_2(max(hw, 1)), MAX_BLOCK_HW)
    rows = max(1, min(triton.next_power_of_2(cg), TILE // block_hw))
    group_rows = max(1, TILE // (rows * block_hw)) if rows >= cg else 1
    size = group_rows * rows * block_hw
    if group_rows == 1:  # a chunk of one group: TILE's sweep
        warps = 4 if size >= 2048 else 2
    else:
        # several small groups a tile: never timed, and over 4 warps DOTS spills (255 registers and a
        # 120-byte stack at 2 channels of 8x8, compiled for sm_90 by Triton 3.6), over 8 it does not
        warps = 8 if size >= 4096 else 4 if size >= 1024 else 2
    return Config(group_rows, rows, block_hw, triton.cdiv(cg, rows), warps)


# Triton's interpreter (every CPU run) re-patches triton.language on each call of a jitted
# function, ~2.5 ms a call: a helper per tile made one program cost 60-120 ms. So the body below
# calls no jitted helper: sums go through tl.reduce with the combine function tl.sum uses (the
# interpreter then sums with numpy; compiled, it is tl.sum's reduction), zeros are tl.full, and
# the IEEE-rounded divisions (kernels/_launch.py div_rn) are written out.
_ADD = tl.standard._sum_combine


# A sub-batch starts where its first sample does, so x's and dy's base pointers lose the 16-byte
# alignment of the whole batch when a sample's stride is not a multiple of 16 bytes; Triton compiles
# another binary for an unaligned pointer, and on an H200 that one gave a sample's dx other bits
# than the batch's binary did (`normgate replay 'triton_groupnorm@batch_invariance:groupnorm,1x1x32x32,
# fp32,x=normal,dy=normal,w=normal,eps=1e-06,groups=1,strided,seed=0' --device cuda`). Such tensors
# take a binary that never specializes on their alignment (``_gn_any_alignment``, where this Triton
# can say so); the others keep the vectorized loads that alignment buys (the forward at C = 1280,
# 64x64, N = 8 bf16 on an H200: 90 us aligned, 119 us without). Which binary is chosen depends on the
# sample stride, which every sub-batch keeps.
_ALIGNMENT_FREE = ({"do_not_specialize_on_alignment": ["X", "DY"]}
                   if "do_not_specialize_on_alignment" in inspect.signature(triton.jit).parameters else {})


# _TILE_SCALARS: with one (sample, group) a tile (RB = 1, every chunked group), its statistics are
# broadcast over the tile as scalars. As (1,)-shaped tensors, Triton 3.6 (the GPU stack) broadcast
# them to the whole tile in a layout that gives every thread all of it, then converted that through
# shared memory: 2,048 shared stores a thread and up to 255 registers (compiled for sm_90), and the
# forward ran at 60 GB/s on an H200 at C = 320-1280, 32x32 to 64x64 (Nsight: L1 98% busy, DRAM 0.4%).
def _gn_body(
    X, DY, OUT, W, B, PART, MEAN, RSTD, SUMS, DW, DB,
    sxn, sxc, sxs, sdn, sdc, sds,
    NG, N, C, HW, Cg, K, G, eps,
    STAGE: tl.constexpr, HAS_W: tl.constexpr, HAS_B: tl.constexpr, HAS_DW: tl.constexpr, HAS_DB: tl.constexpr,
    STORE_STATS: tl.constexpr, RB: tl.constexpr, ROWS: tl.constexpr, BLOCK_HW: tl.constexpr,
    BLOCK_K: tl.constexpr, BLOCK_CG: tl.constexpr,
):
    if STAGE == PARAMS:
        # dW[c] = sum_n A[n, c], dB[c] = sum_n B[n, c], added in sample order
        c = tl.program_id(0) * BLOCK_HW + tl.arange(0, BLOCK_HW)
        cm = c < C
        dw = tl.full([BLOCK_HW], 0.0, tl.float32)
        db = tl.full([BLOCK_HW], 0.0, tl.float32)
        for m in range(0, N):
            at = (m * C + c.to(tl.int64)) * 2
            dw += tl.load(SUMS + at, mask=cm, other=0.0)
            db += tl.load(SUMS + at + 1, mask=cm, other=0.0)
        if HAS_DW:
            tl.store(DW + c, dw.to(DW.dtype.element_ty), mask=cm)
        if HAS_DB:
            tl.store(DB + c, db.to(DB.dtype.element_ty), mask=cm)
    # (no early return above: Triton's code generator does not end a function inside an if)
    # a tile is RB (sample, group) rows x ROWS channels of each x BLOCK_HW positions
    r = tl.program_id(0) * RB + tl.arange(0, RB)  # sample * G + group
    k = tl.program_id(1)  # chunk of the group
    live = r < NG
    n64 = (r // G).to(tl.int64)
    g = r % G
    j = k * ROWS + tl.arange(0, ROWS)  # channel within the group
    cmask = live[:, None] & (j < Cg)[None, :]  # (RB, ROWS)
    ch64 = (g[:, None] * Cg + j[None, :]).to(tl.int64)
    nrows = tl.minimum(Cg - k * ROWS, ROWS)
    zero_r = tl.full([RB], 0.0, tl.float32)
    # Cg and HW may both be specialized to the constant 1: add them to a tensor, not .to() them
    group_len = zero_r + Cg * HW
    x_at = X + n64[:, None, None] * sxn + ch64[:, :, None] * sxc  # + positions * sxs
    dy_at = DY + n64[:, None, None] * sdn + ch64[:, :, None] * sdc
    out_at = OUT + n64[:, None, None] * C * HW + ch64[:, :, None] * HW  # OUT (y or dx): contiguous (N, C, HW)

    if STAGE == STATS or STAGE == FUSED:
        # the chunk's (mean, M2): each tile two-pass about its own mean, tiles merged with Chan et
        # al.'s formula, so a group with a large offset and a small spread keeps its accuracy
        mean = zero_r
        m2 = zero_r
        cnt = zero_r
        for s0 in range(0, HW, BLOCK_HW):
            s = s0 + tl.arange(0, BLOCK_HW)
            mask = cmask[:, :, None] & (s < HW)[None, None, :]
            x = tl.load(x_at + s.to(tl.int64)[None, None, :] * sxs, mask=mask, other=0.0).to(tl.float32)
            nb = (nrows * tl.minimum(HW - s0, BLOCK_HW)).to(tl.float32) + zero_r
            mb = tl.div_rn(tl.reduce(tl.reduce(x, 2, _ADD), 1, _ADD), nb)
            d = tl.where(mask, x - mb[:, None, None], 0.0)
            tot = cnt + nb
            delta = mb - mean
            mean += delta * tl.div_rn(nb, tot)
            m2 += tl.reduce(tl.reduce(d * d, 2, _ADD), 1, _ADD) + delta * delta * tl.div_rn(cnt * nb, tot)
            cnt = tot
        if STAGE == STATS:
            base = (r.to(tl.int64) * K + k) * 2
            tl.store(PART + base, mean, mask=live)
            tl.store(PART + base + 1, m2, mask=live)

    if STAGE == NORM or STAGE == FUSED:
        if STAGE == NORM:
            # every program of the group combines the same K partials in the same order
            kk = tl.arange(0, BLOCK_K)
            kmask = live[:, None] & (kk < K)[None, :]
            base = (r.to(tl.int64)[:, None] * K + kk[None, :]) * 2
            pm = tl.load(PART + base, mask=kmask, other=0.0)
            pm2 = tl.load(PART + base + 1, mask=kmask, other=0.0)
            cnt = tl.where(kmask, (tl.minimum(Cg - kk * ROWS, ROWS) * HW).to(tl.float32)[None, :], 0.0)
            mean = tl.div_rn(tl.reduce(cnt * pm, 1, _ADD), group_len)
            dm = tl.where(kmask, pm - mean[:, None], 0.0)
            m2 = tl.reduce(pm2 + cnt * dm * dm, 1, _ADD)
        # rsqrt from IEEE sqrt and division: rstd within ~1 ulp (rsqrt.approx is a few)
        rstd = tl.div_rn(zero_r + 1.0, tl.sqrt_rn(tl.div_rn(m2, group_len) + eps))
        mean_t, rstd_t = mean[:, None, None], rstd[:, None, None]
        if RB == 1:  # scalars: see _TILE_SCALARS
            mean_t, rstd_t = tl.reduce(mean, 0, _ADD), tl.reduce(rstd, 0, _ADD)
        if STORE_STATS:
            if k == 0:
                tl.store(MEAN + r, mean, mask=live)
                tl.store(RSTD + r, rstd, mask=live)
        w = tl.full([RB, ROWS], 1.0, tl.float32)
        b = tl.full([RB, ROWS], 0.0, tl.float32)
        if HAS_W:
            w = tl.load(W + ch64, mask=cmask, other=0.0).to(tl.float32)
        if HAS_B:
            b = tl.load(B + ch64, mask=cmask, other=0.0).to(tl.float32)
        for s0 in range(0, HW, BLOCK_HW):
            s = s0 + tl.arange(0, BLOCK_HW)
            mask = cmask[:, :, None] & (s < HW)[None, None, :]
            x = tl.load(x_at + s.to(tl.int64)[None, None, :] * sxs, mask=mask, other=0.0).to(tl.float32)
            y = (x - mean_t) * rstd_t
            if HAS_W:
                y = y * w[:, :, None]
            if HAS_B:
                y = y + b[:, :, None]
            tl.store(out_at + s[None, None, :], y.to(OUT.dtype.element_ty), mask=mask)

    if STAGE == DOTS or STAGE == DX:
        mean = tl.load(MEAN + r, mask=live, other=0.0)
        rstd = tl.load(RSTD + r, mask=live, other=0.0)
        mean_t, rstd_t = mean[:, None, None], rstd[:, None, None]
        if RB == 1:  # scalars: see _TILE_SCALARS
            mean_t, rstd_t = tl.reduce(mean, 0, _ADD), tl.reduce(rstd, 0, _ADD)
        if STAGE == DOTS:
            a = tl.full([RB, ROWS], 0.0, tl.float32)
            bsum = tl.full([RB, ROWS], 0.0, tl.float32)
            for s0 in range(0, HW, BLOCK_HW):
                s = s0 + tl.arange(0, BLOCK_HW)
                mask = cmask[:, :, None] & (s < HW)[None, None, :]
                x = tl.load(x_at + s.to(tl.int64)[None, None, :] * sxs, mask=mask, other=0.0).to(tl.float32)
                dy = tl.load(dy_at + s.to(tl.int64)[None, None, :] * sds, mask=mask, other=0.0).to(tl.float32)
                # padding has dy = 0: it adds nothing whatever xhat is there
                a += tl.reduce(dy * ((x - mean_t) * rstd_t), 2, _ADD)
                bsum += tl.reduce(dy, 2, _ADD)
            at = (n64[:, None] * C + ch64) * 2
            tl.store(SUMS + at, a, mask=cmask)
            tl.store(SUMS + at + 1, bsum, mask=cmask)
        else:
            # the group's sums, in channel order, the same in every program of the group
            jj = tl.arange(0, BLOCK_CG)
            jmask = live[:, None] & (jj < Cg)[None, :]
            cg64 = (g[:, None] * Cg + jj[None, :]).to(tl.int64)
            at = (n64[:, None] * C + cg64) * 2
            av = tl.load(SUMS + at, mask=jmask, other=0.0)
            bv = tl.load(SUMS + at + 1, mask=jmask, other=0.0)
            w = tl.full([RB, ROWS], 1.0, tl.float32)
            if HAS_W:
                wv = tl.load(W + cg64, mask=jmask, other=0.0).to(tl.float32)
                av = av * wv
                bv = bv * wv
                w = tl.load(W + ch64, mask=cmask, other=0.0).to(tl.float32)
            mg = tl.div_rn(tl.reduce(bv, 1, _ADD), group_len)
            mgx = tl.div_rn(tl.reduce(av, 1, _ADD), group_len)
            mg_t, mgx_t = mg[:, None, None], mgx[:, None, None]
            if RB == 1:  # scalars: see _TILE_SCALARS
                mg_t, mgx_t = tl.reduce(mg, 0, _ADD), tl.reduce(mgx, 0, _ADD)
            for s0 in range(0, HW, BLOCK_HW):
                s = s0 + tl.arange(0, BLOCK_HW)
                mask = cmask[:, :, None] & (s < HW)[None, None, :]
                x = tl.load(x_at + s.to(tl.int64)[None, None, :] * sxs, mask=mask, other=0.0).to(tl.float32)
                dy = tl.load(dy_at + s.to(tl.int64)[None, None, :] * sds, mask=mask, other=0.0).to(tl.float32)
                xhat = (x - mean_t) * rstd_t
                gg = dy
                if HAS_W:
                    gg = dy * w[:, :, None]
                dx = (gg - mg_t - xhat * mgx_t) * rstd_t
                tl.store(out_at + s[None, None, :], dx.to(OUT.dtype.element_ty), mask=mask)


# batch invariance: the batch-sized integers never specialize the binary (the module docstring)
_gn = triton.jit(do_not_specialize=["NG", "N"])(_gn_body)
_gn_any_alignment = triton.jit(do_not_specialize=["NG", "N"], **_ALIGNMENT_FREE)(_gn_body)


def _kernel_for(*samples: torch.Tensor | None):
    """The binary for these (N, C, HW) tensors: one whose sample stride keeps every sub-batch's
    16-byte alignment may specialize on it."""
    keeps = all(t is None or (t.stride(0) * t.element_size()) % 16 == 0 for t in samples)
    return _gn if keeps else _gn_any_alignment


# ----------------------------------------------------------------------------------------------
# Host side
# ----------------------------------------------------------------------------------------------


def _launch(stage, grid, cfg, x3, dy3, out, weight=None, bias=None, part=None, mean=None, rstd=None, sums=None,
            dw=None, db=None, groups=1, eps=0.0, store_stats=False, block=None):
    n, c, hw = x3.shape
    cg = c // groups
    dummy = out
    _kernel_for(x3, dy3)[grid](
        x3, dy3 if dy3 is not None else x3, out,
        weight if weight is not None else dummy, bias if bias is not None else dummy,
        part if part is not None else dummy, mean if mean is not None else dummy,
        rstd if rstd is not None else dummy, sums if sums is not None else dummy,
        dw if dw is not None else dummy, db if db is not None else dummy,
        *x3.stride(), *(dy3.stride() if dy3 is not None else (0, 0, 0)),
        n * groups, n, c, hw, cg, cfg.chunks, groups, eps,
        STAGE=stage.value, HAS_W=weight is not None, HAS_B=bias is not None, HAS_DW=dw is not None,
        HAS_DB=db is not None, STORE_STATS=store_stats, RB=cfg.group_rows, ROWS=cfg.rows,
        BLOCK_HW=block or cfg.block_hw, BLOCK_K=triton.next_power_of_2(cfg.chunks),
        BLOCK_CG=triton.next_power_of_2(cg), num_warps=cfg.num_warps, enable_fp_fusion=L.FP_FUSION,
    )


def _grid(n, groups, cfg):
    return (triton.cdiv(n * groups, cfg.group_rows), cfg.chunks)


def _forward(x3, weight, bias, groups, eps, want_stats):
    n, c, hw = x3.shape
    dev = x3.device
    y = torch.empty((n, c, hw), dtype=x3.dtype, device=dev)
    mean = torch.empty(n * groups, dtype=torch.float32, device=dev) if want_stats else None
    rstd = torch.empty(n * groups, dtype=torch.float32, device=dev) if want_stats else None
    if y.numel() == 0:
        return y, mean, rstd
    cfg = config(c // groups, hw)
    grid = _grid(n, groups, cfg)
    kw = dict(weight=weight, bias=bias, mean=mean, rstd=rstd, groups=groups, eps=eps, store_stats=want_stats)
    if cfg.chunks == 1:
        _launch(FUSED, grid, cfg, x3, None, y, **kw)
    else:
        part = torch.empty((n * groups, cfg.chunks, 2), dtype=torch.float32, device=dev)
        _launch(STATS, grid, cfg, x3, None, y, part=part, groups=groups)
        _launch(NORM, grid, cfg, x3, None, y, part=part, **kw)
    return y, mean, rstd


def _backward(dy3, x3, weight, mean, rstd, groups, want_dw, want_db, param_dtype):
    n, c, hw = x3.shape
    dev = x3.device
    dx = torch.empty((n, c, hw), dtype=x3.dtype, device=dev)
    dw = torch.empty(c, dtype=param_dtype, device=dev) if want_dw else None
    db = torch.empty(c, dtype=param_dtype, device=dev) if want_db else None
    if dx.numel() == 0:
        for t in (dw, db):
            if t is not None:
                t.zero_()
        return dx, dw, db
    cfg = config(c // groups, hw)
    grid = _grid(n, groups, cfg)
    sums = torch.empty((n, c, 2), dtype=torch.float32, device=dev)
    kw = dict(weight=weight, mean=mean, rstd=rstd, sums=sums, groups=groups)
    _launch(DOTS, grid, cfg, x3, dy3, dx, **kw)
    _launch(DX, grid, cfg, x3, dy3, dx, **kw)
    if want_dw or want_db:
        _launch(PARAMS, (triton.cdiv(c, PARAMS_BLOCK),), cfg, x3, dy3, dx, sums=sums, dw=dw, db=db, groups=groups,
                block=PARAMS_BLOCK)
    return dx, dw, db


def _as3(t: torch.Tensor) -> torch.Tensor:
    """(N, C, *spatial) as (N, C, HW), a view wherever the spatial dims can be merged."""
    t3 = t.reshape(t.shape[0], t.shape[1], -1)
    if t.shape[0] == 1 and t3.data_ptr() == t.data_ptr() and t3.stride(0) != t.stride(0):
        # One sample: reshape renumbers its stride, but it is a sample of its batch, and the binary
        # is compiled for (and chosen by, _kernel_for) the stride it gets: keep the batch's, so that
        # the sample is computed alone by the same binary as in its batch.
        t3 = t3.as_strided(t3.shape, (t.stride(0), *t3.stride()[1:]))
    return t3


class GroupNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, groups, eps, record):
        ctx.set_materialize_grads(False)
        x3 = _as3(x)
        y, mean, rstd = _forward(x3, weight, bias, groups, eps, record)  # record: L.records_grad
        if record:
            ctx.save_for_backward(x3, weight, mean, rstd)
        ctx.shape, ctx.groups = x.shape, groups
        ctx.param_dtype = (weight if weight is not None else bias if bias is not None else x).dtype
        ctx.has_bias = bias is not None
        return y.view(x.shape)

    @staticmethod
    def backward(ctx, dy):
        x3, weight, mean, rstd = ctx.saved_tensors
        if dy is None:
            dy = torch.zeros(ctx.shape, dtype=x3.dtype, device=x3.device)
        want_dw = weight is not None and ctx.needs_input_grad[1]
        want_db = ctx.has_bias and ctx.needs_input_grad[2]
        dx, dw, db = _backward(_as3(dy), x3, weight, mean, rstd, ctx.groups, want_dw, want_db, ctx.param_dtype)
        return dx.view(ctx.shape), dw, db, None, None, None


def group_norm(
    x: torch.Tensor,
    num_groups: int,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    eps: float | None = 1e-5,
) -> torch.Tensor:
    """GroupNorm of ``x`` (N, C, *spatial) over ``num_groups`` groups of adjacent channels, with
    torch.nn.functional.group_norm's arguments. y has x's dtype whatever the parameters' dtype;
    eps=None is float32's machine epsilon (the statistics are float32)."""
    L.check_dtype(x, "x")
    if x.dim() < 2:
        raise ValueError(f"expected an input of shape (N, C, *spatial), got {tuple(x.shape)}")
    c = x.shape[1]
    if num_groups < 1 or c % num_groups:
        raise ValueError(f"{c} channels cannot be split into {num_groups} groups")
    for t, what in ((weight, "weight"), (bias, "bias")):
        if t is not None:
            L.check_dtype(t, what)
            if t.shape != (c,):
                raise ValueError(f"{what} must have shape ({c},), got {tuple(t.shape)}")
    if eps is None:
        eps = float(torch.finfo(torch.float32).eps)
    record = L.records_grad(x, weight, bias)
    return GroupNormFunction.apply(x, weight, bias, int(num_groups), float(eps), record)


class GroupNorm(nn.Module):
    """Drop-in for torch.nn.GroupNorm (same arguments, attributes and state_dict keys)."""

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5, affine: bool = True,
                 device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        if num_channels % num_groups:
            raise ValueError("num_channels must be divisible by num_groups")
        self.num_groups, self.num_channels, self.eps, self.affine = num_groups, num_channels, eps, affine
        kw = {"device": device, "dtype": dtype}
        if affine:
            self.weight = nn.Parameter(torch.ones(num_channels, **kw))
            self.bias = nn.Parameter(torch.zeros(num_channels, **kw))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return group_norm(x, self.num_groups, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}"
