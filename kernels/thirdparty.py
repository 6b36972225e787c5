"""Third-party kernels, built in when their package is installed: Liger-Kernel and transformers
modules here, and the function kernels of kernels/field.py (flash-attention, Unsloth, quack,
Liger's functional forms).

Each is the package's own module, run through :func:`normgate.adapt` with the case's weights and
eps. The variant each claims is declared here, so ``normgate list`` needs no import of the package
(transformers takes seconds to import); on first use the module is built and the semantics adapt
reads from it must equal the declaration, so a wrong declaration fails loudly instead of checking
the kernel against the wrong function.

Liger's Triton kernels under the Triton interpreter (CPU): the interpreter leaves float arguments
as Python floats and stubs out libdevice's ``rsqrt``; adapt passes the floats as the fp32 scalars
compiled Triton makes of them and uses the interpreter's ``tl.math.rsqrt``. The interpreter (Triton
3.9) also multiplies bf16 by bf16 on the raw bits (``bf16 * bf16`` of 0.34 and 0.34 gives -1e36),
and Liger's llama and none casting modes do that (llama in its dW, none throughout), so their bf16
dtypes are claimed on CUDA only, as separate ``*_bf16`` candidates.
"""

from __future__ import annotations

import functools
import importlib.util

from normgate.candidates import register
from normgate.properties.layernorm import LayerNormVariant
from normgate.properties.rmsnorm import RMSNormVariant

ALL = ("fp32", "bf16", "fp16", "bf16/fp32", "fp16/fp32")
NO_BF16 = ("fp32", "fp16", "fp16/fp32")
BF16 = ("bf16", "bf16/fp32")
HIDDEN = 8  # the module's own size; the harness feeds weights of the case's width


def installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


class Lazy:
    """Builds the module on first call and checks that adapt reads the declared variant from it."""

    def __init__(self, factory: str, variant, kwargs: dict, overrides: dict):
        self.factory, self.variant, self.kwargs, self.overrides = factory, variant, kwargs, overrides

    @functools.cached_property
    def kernel(self):
        from normgate.kernels.adapt import adapt

        module_name, _, attr = self.factory.partition(":")
        cls = getattr(importlib.import_module(module_name), attr)
        cand = adapt(cls(HIDDEN, **self.kwargs), name="probe", **self.overrides)
        if cand.variant != self.variant:
            raise TypeError(f"{self.factory}{self.kwargs} reads as {cand.variant.key()}, "
                            f"but is registered as {self.variant.key()}")
        return cand.fn

    def __call__(self, *args):
        return self.kernel(*args)


def _add(name: str, factory: str, variant, kwargs: dict | None = None, overrides: dict | None = None,
         **kw) -> None:
    register(name, Lazy(factory, variant, kwargs or {}, overrides or {}), op=variant_op(variant), variant=variant,
             **kw)


def variant_op(variant) -> str:
    return "rmsnorm" if isinstance(variant, RMSNormVariant) else "layernorm"


def _liger(name: str, factory: str, variant, kwargs: dict, bf16_arithmetic: bool, description: str,
           **kw) -> None:
    """A Liger candidate; one whose kernel does bf16 arithmetic claims bf16 as a CUDA-only ``*_bf16`` one."""
    # Liger refuses rows wider than Triton's largest block (a documented limit, not a bug)
    kw = dict(triton=True, eps_none=False, max_n=65536, description=description, **kw)
    if not bf16_arithmetic:
        _add(name, factory, variant, kwargs, dtypes=ALL, **kw)
        return
    _add(name, factory, variant, kwargs, dtypes=NO_BF16, **kw)
    kw["description"] = description + " (bf16: CUDA only, the Triton interpreter computes bf16 wrongly)"
    _add(name + "_bf16", factory, variant, kwargs, dtypes=BF16, devices=("cuda",), **kw)


if installed("liger_kernel"):
    RMS = "liger_kernel.transformers.rms_norm:LigerRMSNorm"
    for casting, offset in (("llama", 0.0), ("gemma", 0.0), ("gemma", 1.0), ("none", 0.0)):
        # llama rounds dY * xhat in bf16 for dW; none computes everything in the input dtype
        _liger(f"liger_rmsnorm_{casting}{'_offset1' if offset else ''}", RMS,
               RMSNormVariant(casting=casting, offset=offset),
               dict(casting_mode=casting, offset=offset, in_place=False),
               casting != "gemma", f"Liger-Kernel LigerRMSNorm, casting_mode={casting!r}, offset={offset:g}")
    # LigerRMSNorm's defaults: llama casting with dX written into dY's storage
    _liger("liger_rmsnorm_inplace", RMS, RMSNormVariant(casting="llama"), dict(in_place=True), True,
           "Liger-Kernel LigerRMSNorm with its defaults (llama, in_place=True)", inplace=True)
    _liger("liger_rmsnorm_gemma_noweight", RMS, RMSNormVariant(casting="gemma", weight=False),
           dict(casting_mode="gemma", in_place=False, elementwise_affine=False), False,
           "Liger-Kernel LigerRMSNorm, gemma casting, elementwise_affine=False")
    # the residual add X + R is computed in the input dtype
    _liger("liger_fused_add_rmsnorm_gemma", "liger_kernel.transformers.fused_add_rms_norm:LigerFusedAddRMSNorm",
           RMSNormVariant(casting="gemma", residual=True), dict(casting_mode="gemma"), True,
           "Liger-Kernel LigerFusedAddRMSNorm, gemma casting: (y, x + residual)")
    _liger("liger_layernorm", "liger_kernel.transformers.layer_norm:LigerLayerNorm", LayerNormVariant(),
           dict(bias=True), False, "Liger-Kernel LigerLayerNorm")

if installed("transformers"):
    HF = "transformers.models"
    for name, factory, variant, dtypes in (
        ("llama", "llama.modeling_llama:LlamaRMSNorm", RMSNormVariant(casting="llama", out="promote"), ALL),
        ("qwen2", "qwen2.modeling_qwen2:Qwen2RMSNorm", RMSNormVariant(casting="llama", out="promote"), ALL),
        ("gemma", "gemma.modeling_gemma:GemmaRMSNorm", RMSNormVariant(casting="gemma", offset=1.0), ALL),
        ("gemma3", "gemma3.modeling_gemma3:Gemma3RMSNorm", RMSNormVariant(casting="gemma", offset=1.0), ALL),
        ("gemma3n", "gemma3n.modeling_gemma3n:Gemma3nRMSNorm", RMSNormVariant(casting="gemma"), ALL),
        ("t5", "t5.modeling_t5:T5LayerNorm", RMSNormVariant(casting="llama"), ("fp32", "bf16", "fp16")),
    ):
        # eager PyTorch: its CUDA reductions are not batch-invariant (see kernels/builtins.py)
        _add(f"transformers_{name}_rmsnorm", f"{HF}.{factory}", variant, dtypes=dtypes, eps_none=False,
             batch_invariant=False, description=f"transformers {factory.split(':')[1]}, eager")
    # T5LayerNorm casts xhat to the weight's dtype only when that is half precision: with fp32
    # weights under bf16/fp16 activations nothing is rounded until the promoted fp32 output
    _add("transformers_t5_rmsnorm_mixed", f"{HF}.t5.modeling_t5:T5LayerNorm",
         RMSNormVariant(casting="gemma", out="promote"), overrides=dict(casting="gemma", out="promote"),
         dtypes=("bf16/fp32", "fp16/fp32"), eps_none=False, batch_invariant=False,
         description="transformers T5LayerNorm with fp32 weights under half-precision activations")

# the function kernels of the field (flash-attention, Unsloth, quack, Liger's functional forms):
# kernels/field.py, registered when their packages are installed
from normgate.kernels import field as _field  # noqa: E402

_field.register_installed()
