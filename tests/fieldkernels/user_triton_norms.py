"""A Triton RMSNorm and LayerNorm written the way most kernel repositories write them.

Forward: one program per row, the whole row in one block, ``BLOCK = triton.next_power_of_2(N)`` as a
constexpr (so every new power-of-two bucket of N is a new binary, and Triton also specializes the
integer arguments N and the row stride on divisibility by 16). Backward: a fixed grid of programs
(the SM count on a GPU), each looping over its rows and writing one partial dW (and dB) row, then a
torch sum over the partials. Correct: every partial row is written, also by a program that owns no
row, and the sum runs in a fixed order.

These are the fixtures for measuring what a user's JIT-compiled kernel costs normgate (compile
time against check time); they are not normgate's kernels. Load them as a user would::

    normgate run --load tests/fieldkernels/user_triton_norms.py --kernels 'user_triton_*'
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

import normgate

#: one row in one block, of at most 64 KB (the Triton tutorial's limit): 16,384 fp32 elements
MAX_FUSED_BYTES = 65536
DTYPES = ("fp32", "bf16", "fp16", "bf16/fp32")


def _programs(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 4  # the interpreter runs programs one after another: a few stand in for the SMs


def _config(x: torch.Tensor) -> tuple[int, int]:
    n = x.shape[-1]
    if n * x.element_size() > MAX_FUSED_BYTES:
        raise RuntimeError(f"this kernel does not support rows over {MAX_FUSED_BYTES} bytes (N = {n})")
    block = triton.next_power_of_2(n)
    return block, min(max(block // 256, 1), 8)


def _rows(t: torch.Tensor) -> torch.Tensor:
    t = t.reshape(-1, t.shape[-1])
    return t if t.stride(-1) == 1 else t.contiguous()


# ---- RMSNorm -----------------------------------------------------------------------------------
@triton.jit
def _rms_fwd(X, Y, W, RSTD, stride_x, stride_y, N, eps, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    mask = cols < N
    x = tl.load(X + row * stride_x + cols, mask=mask, other=0.0).to(tl.float32)
    rstd = 1.0 / tl.sqrt(tl.sum(x * x, axis=0) / N + eps)
    w = tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)
    tl.store(Y + row * stride_y + cols, (x * rstd * w).to(Y.dtype.element_ty), mask=mask)
    tl.store(RSTD + row, rstd)


@triton.jit
def _rms_bwd(X, DY, DX, W, RSTD, DW, stride_x, stride_dy, stride_dx, M, N, rows_per_program,
             BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    mask = cols < N
    w = tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)
    dw = tl.zeros((BLOCK,), dtype=tl.float32)
    start = pid * rows_per_program
    for row in range(start, tl.minimum(start + rows_per_program, M)):
        x = tl.load(X + row * stride_x + cols, mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(DY + row * stride_dy + cols, mask=mask, other=0.0).to(tl.float32)
        rstd = tl.load(RSTD + row)
        xhat = x * rstd
        g = dy * w
        dx = rstd * (g - xhat * (tl.sum(g * xhat, axis=0) / N))
        tl.store(DX + row * stride_dx + cols, dx.to(DX.dtype.element_ty), mask=mask)
        dw += dy * xhat
    tl.store(DW + pid * N + cols, dw, mask=mask)  # written by every program, rows or none


class _RMSNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, eps):
        x2 = _rows(x)
        m, n = x2.shape
        block, warps = _config(x2)
        y = torch.empty((m, n), dtype=x.dtype, device=x.device)
        rstd = torch.empty(m, dtype=torch.float32, device=x.device)
        _rms_fwd[(m,)](x2, y, weight, rstd, x2.stride(0), y.stride(0), n, eps, BLOCK=block, num_warps=warps)
        ctx.save_for_backward(x2, weight, rstd)
        ctx.shape, ctx.block, ctx.warps = x.shape, block, warps
        return y.view(x.shape)

    @staticmethod
    def backward(ctx, dy):
        x2, weight, rstd = ctx.saved_tensors
        m, n = x2.shape
        dy2 = _rows(dy)
        dx = torch.empty((m, n), dtype=x2.dtype, device=x2.device)
        programs = _programs(x2.device)
        partial = torch.empty((programs, n), dtype=torch.float32, device=x2.device)
        _rms_bwd[(programs,)](x2, dy2, dx, weight, rstd, partial, x2.stride(0), dy2.stride(0), dx.stride(0),
                              m, n, triton.cdiv(m, programs), BLOCK=ctx.block, num_warps=ctx.warps)
        return dx.view(ctx.shape), partial.sum(0).to(weight.dtype), None


@normgate.register("user_triton_rmsnorm", op="rmsnorm", variant=normgate.RMSNormVariant(casting="gemma"),
                   dtypes=DTYPES, eps_none=False, max_n=MAX_FUSED_BYTES // 4, triton=True,
                   description="a user's Triton RMSNorm, BLOCK = next_power_of_2(N), partial-dW backward")
def user_triton_rmsnorm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    return _RMSNorm.apply(x, weight, eps)


# ---- LayerNorm ---------------------------------------------------------------------------------
@triton.jit
def _ln_fwd(X, Y, W, B, MEAN, RSTD, stride_x, stride_y, N, eps, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    mask = cols < N
    x = tl.load(X + row * stride_x + cols, mask=mask, other=0.0).to(tl.float32)
    mean = tl.sum(x, axis=0) / N
    xc = tl.where(mask, x - mean, 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(xc * xc, axis=0) / N + eps)
    w = tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)
    b = tl.load(B + cols, mask=mask, other=0.0).to(tl.float32)
    tl.store(Y + row * stride_y + cols, (xc * rstd * w + b).to(Y.dtype.element_ty), mask=mask)
    tl.store(MEAN + row, mean)
    tl.store(RSTD + row, rstd)


@triton.jit
def _ln_bwd(X, DY, DX, W, MEAN, RSTD, DW, DB, stride_x, stride_dy, stride_dx, M, N, rows_per_program,
            BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    mask = cols < N
    w = tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)
    dw = tl.zeros((BLOCK,), dtype=tl.float32)
    db = tl.zeros((BLOCK,), dtype=tl.float32)
    start = pid * rows_per_program
    for row in range(start, tl.minimum(start + rows_per_program, M)):
        x = tl.load(X + row * stride_x + cols, mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(DY + row * stride_dy + cols, mask=mask, other=0.0).to(tl.float32)
        mean = tl.load(MEAN + row)
        rstd = tl.load(RSTD + row)
        xhat = tl.where(mask, (x - mean) * rstd, 0.0)
        g = dy * w
        c1 = tl.sum(xhat * g, axis=0) / N
        c2 = tl.sum(g, axis=0) / N
        dx = (g - (xhat * c1 + c2)) * rstd
        tl.store(DX + row * stride_dx + cols, dx.to(DX.dtype.element_ty), mask=mask)
        dw += dy * xhat
        db += dy
    tl.store(DW + pid * N + cols, dw, mask=mask)
    tl.store(DB + pid * N + cols, db, mask=mask)


class _LayerNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, eps):
        x2 = _rows(x)
        m, n = x2.shape
        block, warps = _config(x2)
        y = torch.empty((m, n), dtype=x.dtype, device=x.device)
        mean = torch.empty(m, dtype=torch.float32, device=x.device)
        rstd = torch.empty(m, dtype=torch.float32, device=x.device)
        _ln_fwd[(m,)](x2, y, weight, bias, mean, rstd, x2.stride(0), y.stride(0), n, eps, BLOCK=block,
                      num_warps=warps)
        ctx.save_for_backward(x2, weight, mean, rstd)
        ctx.shape, ctx.block, ctx.warps, ctx.bias_dtype = x.shape, block, warps, bias.dtype
        return y.view(x.shape)

    @staticmethod
    def backward(ctx, dy):
        x2, weight, mean, rstd = ctx.saved_tensors
        m, n = x2.shape
        dy2 = _rows(dy)
        dx = torch.empty((m, n), dtype=x2.dtype, device=x2.device)
        programs = _programs(x2.device)
        dw = torch.empty((programs, n), dtype=torch.float32, device=x2.device)
        db = torch.empty((programs, n), dtype=torch.float32, device=x2.device)
        _ln_bwd[(programs,)](x2, dy2, dx, weight, mean, rstd, dw, db, x2.stride(0), dy2.stride(0), dx.stride(0),
                             m, n, triton.cdiv(m, programs), BLOCK=ctx.block, num_warps=ctx.warps)
        return dx.view(ctx.shape), dw.sum(0).to(weight.dtype), db.sum(0).to(ctx.bias_dtype), None


@normgate.register("user_triton_layernorm", op="layernorm", variant=normgate.LayerNormVariant(),
                   dtypes=DTYPES, eps_none=False, max_n=MAX_FUSED_BYTES // 4, triton=True,
                   description="a user's Triton LayerNorm, BLOCK = next_power_of_2(N), partial-dW/dB backward")
def user_triton_layernorm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float) -> torch.Tensor:
    return _LayerNorm.apply(x, weight, bias, eps)
