"""A small Triton LayerNorm (weight and bias), forward and backward, with one compile-time switch
for a mistake: ``MUTANT == 0`` is correct, each other value turns on one plausible bug. The
backward has the same fixed-order, fully written partial-sum buffers as the RMSNorm one."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from normgate.kernels.references import resolve_eps

from .triton_rmsnorm import PROGRAMS, tile_rows

MUTANTS = ("variance_one_pass", "padding_not_masked", "dx_without_mean_term", "dbias_missing")
VARIANCE_ONE_PASS = tl.constexpr(1)
PADDING_NOT_MASKED = tl.constexpr(2)
DX_WITHOUT_MEAN_TERM = tl.constexpr(3)
DBIAS_MISSING = tl.constexpr(4)


@triton.jit
def _forward(X, W, B, Y, MEAN, RSTD, x_stride, y_stride, M, N, eps,
             BLOCK: tl.constexpr, TILE: tl.constexpr, MUTANT: tl.constexpr):
    rows = tl.program_id(0) * TILE + tl.arange(0, TILE)
    cols = tl.arange(0, BLOCK)
    row_ok = rows < M
    col_ok = cols < N
    mask = row_ok[:, None] & col_ok[None, :]
    x = tl.load(X + rows[:, None] * x_stride + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    mean = tl.sum(x, axis=1) / N
    if MUTANT == VARIANCE_ONE_PASS:
        # E[x^2] - E[x]^2: one pass over the row, catastrophic cancellation
        var = tl.sum(x * x, axis=1) / N - mean * mean
        xc = tl.where(mask, x - mean[:, None], 0.0)
    else:
        if MUTANT == PADDING_NOT_MASKED:
            xc = x - mean[:, None]  # the padded lanes hold -mean and enter the variance
        else:
            xc = tl.where(mask, x - mean[:, None], 0.0)
        var = tl.sum(xc * xc, axis=1) / N
    rstd = 1.0 / tl.sqrt(var + eps)
    w = tl.load(W + cols, mask=col_ok, other=0.0).to(tl.float32)
    b = tl.load(B + cols, mask=col_ok, other=0.0).to(tl.float32)
    y = xc * rstd[:, None] * w[None, :] + b[None, :]
    tl.store(Y + rows[:, None] * y_stride + cols[None, :], y.to(Y.dtype.element_ty), mask=mask)
    tl.store(MEAN + rows, mean, mask=row_ok)
    tl.store(RSTD + rows, rstd, mask=row_ok)


@triton.jit
def _backward(X, W, DY, DX, MEAN, RSTD, DW_PARTIAL, DB_PARTIAL, x_stride, dy_stride, dx_stride, M, N,
              BLOCK: tl.constexpr, TILE: tl.constexpr, PROGRAMS: tl.constexpr, MUTANT: tl.constexpr):
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    col_ok = cols < N
    w = tl.load(W + cols, mask=col_ok, other=0.0).to(tl.float32)
    dw = tl.zeros((BLOCK,), dtype=tl.float32)
    db = tl.zeros((BLOCK,), dtype=tl.float32)
    for first in range(pid * TILE, M, PROGRAMS * TILE):
        rows = first + tl.arange(0, TILE)
        row_ok = rows < M
        mask = row_ok[:, None] & col_ok[None, :]
        x = tl.load(X + rows[:, None] * x_stride + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(DY + rows[:, None] * dy_stride + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        mean = tl.load(MEAN + rows, mask=row_ok, other=0.0)
        rstd = tl.load(RSTD + rows, mask=row_ok, other=0.0)
        xhat = tl.where(mask, (x - mean[:, None]) * rstd[:, None], 0.0)
        g = dy * w[None, :]
        c1 = tl.sum(g * xhat, axis=1) / N
        if MUTANT == DX_WITHOUT_MEAN_TERM:
            dx = (g - xhat * c1[:, None]) * rstd[:, None]
        else:
            dx = (g - xhat * c1[:, None] - (tl.sum(g, axis=1) / N)[:, None]) * rstd[:, None]
        tl.store(DX + rows[:, None] * dx_stride + cols[None, :], dx.to(DX.dtype.element_ty), mask=mask)
        dw += tl.sum(dy * xhat, axis=0)
        if MUTANT != DBIAS_MISSING:
            db += tl.sum(dy, axis=0)
    tl.store(DW_PARTIAL + pid * N + cols, dw, mask=col_ok)
    tl.store(DB_PARTIAL + pid * N + cols, db, mask=col_ok)


class _LayerNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, eps, mutant):
        n = x.shape[-1]
        x2 = x.reshape(-1, n)
        m = x2.shape[0]
        y = torch.empty((m, n), dtype=x.dtype, device=x.device)
        mean = torch.empty(m, dtype=torch.float32, device=x.device)
        rstd = torch.empty(m, dtype=torch.float32, device=x.device)
        block = triton.next_power_of_2(n)
        tile = tile_rows(block)
        _forward[(triton.cdiv(m, tile),)](x2, weight, bias, y, mean, rstd, x2.stride(0), y.stride(0), m, n, eps,
                                          BLOCK=block, TILE=tile, MUTANT=mutant_id(mutant))
        ctx.save_for_backward(x2, weight, mean, rstd)
        ctx.shape, ctx.mutant, ctx.bias_dtype = x.shape, mutant, bias.dtype
        return y.view(x.shape)

    @staticmethod
    def backward(ctx, dy):
        x2, weight, mean, rstd = ctx.saved_tensors
        m, n = x2.shape
        dy2 = dy.reshape(m, n)
        if dy2.stride(-1) != 1:
            dy2 = dy2.contiguous()
        dx = torch.empty((m, n), dtype=x2.dtype, device=x2.device)
        dw = torch.empty((PROGRAMS, n), dtype=torch.float32, device=x2.device)
        db = torch.empty((PROGRAMS, n), dtype=torch.float32, device=x2.device)
        block = triton.next_power_of_2(n)
        _backward[(PROGRAMS,)](x2, weight, dy2, dx, mean, rstd, dw, db, x2.stride(0), dy2.stride(0), dx.stride(0),
                               m, n, BLOCK=block, TILE=tile_rows(block), PROGRAMS=PROGRAMS,
                               MUTANT=mutant_id(ctx.mutant))
        return dx.view(ctx.shape), dw.sum(0).to(weight.dtype), db.sum(0).to(ctx.bias_dtype), None, None


def mutant_id(mutant: str) -> int:
    return 0 if mutant == "" else MUTANTS.index(mutant) + 1


def layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float | None, *,
               mutant: str = "") -> torch.Tensor:
    """LayerNorm in float32 with one rounding; ``mutant`` names the bug to switch on ("" for none)."""
    if mutant and mutant not in MUTANTS:
        raise ValueError(f"unknown LayerNorm mutant {mutant!r}")
    return _LayerNorm.apply(x, weight, bias, resolve_eps(eps, x.dtype), mutant)
