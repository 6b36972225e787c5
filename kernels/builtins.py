"""The built-in candidates: PyTorch baselines, their torch.compile versions, and our Triton kernels.

Each declares the exact variant it computes. Triton kernels are imported on first use, so that
``TRITON_INTERPRET`` can be set first on machines without a GPU.
"""

from __future__ import annotations

import functools

from normgate.candidates import ALL_DTYPES, register
from normgate.properties.layernorm import LayerNormVariant
from normgate.properties.rmsnorm import RMSNormVariant

from . import baselines as B

ALL = ALL_DTYPES
# PyTorch's CUDA reductions (eager and Inductor's) choose how to split a row by the shape of the
# whole tensor, so a row's bits can change with the batch size: on an H200, `normgate replay
# 'eager_layernorm@batch_invariance:layernorm,2x16384,fp32,x=normal,dy=normal,w=normal,eps=1e-06,contiguous,seed=0'
# --device cuda` shows 232 elements of y differing between a batch of 1 and of 2. They do not claim
# batch invariance: the check still runs on them and reports what it sees, as a skip.
PYTORCH = dict(batch_invariant=False)

# ---- PyTorch eager ----------------------------------------------------------------------------
register("hf_llama_rmsnorm", B.hf_llama_rmsnorm, op="rmsnorm",
         variant=RMSNormVariant(casting="llama", offset=0.0, out="promote"), dtypes=ALL, eps_none=False,
         **PYTORCH, description="Hugging Face LlamaRMSNorm, eager")
register("hf_gemma_rmsnorm", B.hf_gemma_rmsnorm, op="rmsnorm",
         variant=RMSNormVariant(casting="gemma", offset=1.0), dtypes=ALL, eps_none=False,
         **PYTORCH, description="Hugging Face GemmaRMSNorm, eager: (1 + weight), all float32")
register("torch_rms_norm", B.torch_rms_norm, op="rmsnorm",
         variant=RMSNormVariant(casting="gemma", offset=0.0), dtypes=ALL,
         **PYTORCH, description="torch.nn.functional.rms_norm")
# In fp16, autograd rounds the norm's gradient of h to fp16 on its own before it adds the residual
# branch's: near fp16's limit that overflows where dx is finite (README, Findings), so the eager
# fused add claims the dtypes whose gradients have bf16's or fp32's range.
register("eager_add_rmsnorm", functools.partial(B.rms_norm_eager, casting="gemma"), op="rmsnorm",
         variant=RMSNormVariant(casting="gemma", residual=True), dtypes=("fp32", "bf16", "bf16/fp32"),
         **PYTORCH, description="eager fused residual add + RMSNorm, float32 internals")
register("eager_layernorm", B.layer_norm_eager, op="layernorm", variant=LayerNormVariant(), dtypes=ALL,
         **PYTORCH, description="eager LayerNorm in float32, two-pass variance, one cast at the end")
# PyTorch's CPU layer_norm backward for bf16/fp16 is not computed in float32 (dx is off by ~u_bf16
# of the terms' magnitude: `normgate replay 'torch_layer_norm@accuracy:layernorm,1x2,bf16,...'`
# shows it), so on the CPU it claims float32 only; on CUDA the three plain dtypes (torch 2.11's
# layer_norm refuses fp32 weights under bf16/fp16 input: "expected scalar type BFloat16 but found
# Float").
register("torch_layer_norm", B.torch_layer_norm, op="layernorm", variant=LayerNormVariant(),
         dtypes=("fp32", "bf16", "fp16"),
         eps_none=False, devices=("cuda",), **PYTORCH, description="torch.nn.functional.layer_norm")
register("torch_layer_norm_fp32", B.torch_layer_norm, op="layernorm", variant=LayerNormVariant(),
         dtypes=("fp32",), eps_none=False, **PYTORCH, description="torch.nn.functional.layer_norm, float32")
register("torch_layer_norm_plain", B.torch_layer_norm, op="layernorm",
         variant=LayerNormVariant(weight=False, bias=False), dtypes=("fp32", "bf16", "fp16"), eps_none=False,
         devices=("cuda",), **PYTORCH, description="torch.nn.functional.layer_norm without affine parameters")


# ---- torch.compile (GPU) ----------------------------------------------------------------------
register("compile_hf_llama_rmsnorm", B.compiled(B.hf_llama_rmsnorm), op="rmsnorm",
         variant=RMSNormVariant(casting="llama", offset=0.0, out="promote"), dtypes=ALL, eps_none=False,
         devices=("cuda",), **PYTORCH, description="torch.compile of the HF Llama eager module")
register("compile_layernorm", B.compiled(B.layer_norm_eager), op="layernorm", variant=LayerNormVariant(),
         dtypes=ALL, eps_none=False, devices=("cuda",), **PYTORCH, description="torch.compile of eager LayerNorm")


# ---- our Triton kernels -----------------------------------------------------------------------
def _triton_rms(**kw):
    def fn(x, weight, eps, residual=None):
        from normgate.kernels.rmsnorm import rms_norm

        return rms_norm(x, weight, eps, residual, **kw)

    return fn


def _triton_ln(x, weight, bias, eps, residual=None):
    from normgate.kernels.layernorm import layer_norm

    return layer_norm(x, weight, bias, eps, residual)


# The forward loads its parameters before a row's sums in a grid of one wave and after them in a
# longer one (kernels/_launch.py, fwd_launch): at most the SM count of rows on a GPU (where the check
# tries either side of it anyway) and CPU_PROGRAMS (4) on the CPU, declared here so that the check
# compares a row's bits across it there too.
TRITON = dict(dtypes=ALL, triton=True, boundaries={"m": [4]})
# (casting, offset, weight, residual, in place): every casting mode; Gemma's offset; no weight
# (torch.nn.RMSNorm(elementwise_affine=False)); the fused residual add in the two fp32 modes; dx
# written into dy's storage as Liger-Kernel does.
RMS_VARIANTS = (("llama", 0.0, True, False, False), ("gemma", 0.0, True, False, False),
                ("gemma", 1.0, True, False, False), ("none", 0.0, True, False, False),
                ("gemma", 0.0, False, False, False), ("gemma", 0.0, True, True, False),
                ("llama", 0.0, True, True, False), ("llama", 0.0, True, False, True))
for casting, offset, weight, residual, in_place in RMS_VARIANTS:
    suffix = (casting + ("_offset1" if offset else "") + ("" if weight else "_noweight")
              + ("_residual" if residual else "") + ("_inplace" if in_place else ""))
    register(f"triton_rmsnorm_{suffix}", _triton_rms(casting=casting, offset=offset, in_place=in_place),
             op="rmsnorm", variant=RMSNormVariant(casting=casting, offset=offset, weight=weight, residual=residual),
             inplace=in_place, **TRITON,
             description=f"normgate's Triton RMSNorm, {casting} casting, offset {offset:g}"
                         + ("" if weight else ", no weight") + (", fused residual add" if residual else "")
                         + (", dx written into dy" if in_place else ""))
for weight, bias, residual in ((True, True, False), (True, False, False), (False, False, False),
                               (True, True, True)):
    suffix = ("" if weight and bias else "_noaffine" if not weight else "_nobias") + ("_residual" if residual else "")
    register(f"triton_layernorm{suffix}", _triton_ln, op="layernorm",
             variant=LayerNormVariant(weight=weight, bias=bias, residual=residual), **TRITON,
             description="normgate's Triton LayerNorm" + (", fused residual add" if residual else ""))
