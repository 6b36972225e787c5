"""Incident 3 (flash-attention's Triton RMSNorm): garbage, non-deterministic dW on all-zero input.

A real Triton kernel. The backward runs a fixed grid of programs, each accumulating dW over the
rows it owns into its own row of a partial-sum buffer made with ``torch.empty``. A program that
owns no row (fewer rows than programs) never writes its row, and the final ``sum(0)`` adds
whatever was in that memory. The forward and dX are right.
"""

import torch
import triton
import triton.language as tl

import normgate

PROGRAMS = 8  # a stand-in for the SM count


@triton.jit
def _fwd(X, W, Y, RSTD, stride, N, eps, BLOCK: tl.constexpr):
    row = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    mask = cols < N
    x = tl.load(X + row * stride + cols, mask=mask, other=0.0).to(tl.float32)
    rstd = 1.0 / tl.sqrt(tl.sum(x * x, axis=0) / N + eps)
    w = tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)
    tl.store(Y + row * N + cols, (x * rstd * w).to(Y.dtype.element_ty), mask=mask)
    tl.store(RSTD + row, rstd)


@triton.jit
def _bwd(X, W, DY, DX, RSTD, DW_PARTIAL, stride, M, N, BLOCK: tl.constexpr, PROGRAMS: tl.constexpr):
    pid = tl.program_id(0)
    cols = tl.arange(0, BLOCK)
    mask = cols < N
    w = tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)
    dw = tl.zeros((BLOCK,), dtype=tl.float32)
    for row in range(pid, M, PROGRAMS):
        x = tl.load(X + row * stride + cols, mask=mask, other=0.0).to(tl.float32)
        dy = tl.load(DY + row * N + cols, mask=mask, other=0.0).to(tl.float32)
        rstd = tl.load(RSTD + row)
        xhat = x * rstd
        g = dy * w
        dx = rstd * (g - xhat * tl.sum(g * xhat, axis=0) / N)
        tl.store(DX + row * N + cols, dx.to(DX.dtype.element_ty), mask=mask)
        dw += dy * xhat
        # BUG: the partial is stored only by programs that own at least one row
        tl.store(DW_PARTIAL + pid * N + cols, dw, mask=mask)


class _RMSNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, eps):
        shape = x.shape
        x2 = x.reshape(-1, shape[-1])
        m, n = x2.shape
        y = torch.empty((m, n), dtype=x.dtype, device=x.device)
        rstd = torch.empty(m, dtype=torch.float32, device=x.device)
        block = triton.next_power_of_2(n)
        _fwd[(m,)](x2, w, y, rstd, x2.stride(0), n, eps, BLOCK=block)
        ctx.save_for_backward(x2, w, rstd)
        ctx.shape = shape
        return y.reshape(shape)

    @staticmethod
    def backward(ctx, dy):
        x2, w, rstd = ctx.saved_tensors
        m, n = x2.shape
        dy = dy.reshape(m, n).contiguous()
        dx = torch.empty_like(dy, dtype=x2.dtype)
        partial = torch.empty((PROGRAMS, n), dtype=torch.float32, device=x2.device)
        _bwd[(PROGRAMS,)](x2, w, dy, dx, rstd, partial, x2.stride(0), m, n,
                          BLOCK=triton.next_power_of_2(n), PROGRAMS=PROGRAMS)
        return dx.reshape(ctx.shape), partial.sum(0).to(w.dtype), None


def triton_rmsnorm(x, weight, eps):
    return _RMSNorm.apply(x, weight, eps)


normgate.register("incident_zero_input_dw", triton_rmsnorm, op="rmsnorm",
                  variant=normgate.RMSNormVariant(casting="gemma"), dtypes=("fp32", "bf16"),
                  eps_none=False, triton=True)
