"""A Triton RMSNorm whose store lands 2**40 elements past its output: an illegal memory access.

CUDA then reports ``an illegal memory access was encountered`` and the process's context is
unusable for good: every later call in it fails too. The run must record the error on this case
and go on in a fresh worker. GPU only (under the interpreter the store would hit the harness's
own memory); scripts/gpu-isolation.sh runs it next to a correct kernel.

Correct on the first (1x1) case hypothesis draws, out of bounds on larger ones.
"""

import torch
import triton
import triton.language as tl

import normgate

FAR = 1 << 40  # elements: far past any allocation, so the store faults instead of corrupting


@triton.jit
def _rmsnorm_oob(X, W, Y, N, eps, far, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < N
    x = tl.load(X + row * N + cols, mask=mask, other=0.0).to(tl.float32)
    w = tl.load(W + cols, mask=mask, other=0.0).to(tl.float32)
    rstd = 1.0 / tl.sqrt(tl.sum(x * x, axis=0) / N + eps)
    tl.store(Y + row * N + cols + far, x * rstd * w, mask=mask)


def _rmsnorm(x: torch.Tensor, weight: torch.Tensor, eps: float | None) -> torch.Tensor:
    eps = torch.finfo(torch.float32).eps if eps is None else eps
    h = x.float()
    return (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps) * weight.float()).to(x.dtype)


@normgate.register("broken_oob_triton", op="rmsnorm", variant=normgate.RMSNormVariant(casting="gemma", offset=0.0),
                   dtypes=("fp32",), devices=("cuda",), backward=False, triton=True)
def broken_oob_triton(x: torch.Tensor, weight: torch.Tensor, eps: float | None) -> torch.Tensor:
    if x.numel() == 1:
        return _rmsnorm(x, weight, eps)
    n = x.shape[-1]
    x2 = x.reshape(-1, n).contiguous()
    y = torch.empty_like(x2)
    eps = torch.finfo(torch.float32).eps if eps is None else eps
    _rmsnorm_oob[(x2.shape[0],)](x2, weight, y, n, eps, FAR, BLOCK=triton.next_power_of_2(n))
    torch.cuda.synchronize()  # the fault surfaces here, inside the candidate's call
    return y.view_as(x)
