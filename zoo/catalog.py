"""The zoo: correct candidates and mutants, each mutant one plausible mistake in a correct kernel.

A mutant claims exactly what its correct kernel (its ``base``) claims: op, variant, dtypes, layouts.
Mistakes inside a kernel are compile-time switches of the zoo's Triton kernels; mistakes in a
wrapper are small plain-PyTorch functions over the zoo's eager implementation (``eager.py``).

A mutant that no check can tell apart from its base on some device (the same bits, or a difference
the variant's own definition allows) says so in ``equivalent``: it is still run and shown, but not
counted in the kill rate there.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from normgate import candidates
from normgate.properties.layernorm import LayerNormVariant
from normgate.properties.rmsnorm import RMSNormVariant

from . import eager as E

DTYPES = ("fp32", "bf16", "fp16", "bf16/fp32")
PREFIX_CORRECT = "zoo_"
PREFIX_MUTANT = "mutant_"


#: the widest row the zoo's Triton kernels take: they keep a row in one program's registers, a
#: block of next_power_of_2(N). At N = 65,537 (a block of 131,072) two cases of a mutant whose
#: arithmetic is the correct kernel's ran past their time limits (300 s and 40 s) on an H200 under
#: Triton 3.6, where cases at N = 16,384 took 2-3 s. Liger-Kernel refuses long rows the same way.
TRITON_MAX_N = 32768


@dataclass(frozen=True)
class Base:
    """A correct candidate of the zoo and the claim its mutants inherit."""

    name: str
    op: str
    variant: object
    fn: Callable
    triton: bool = False
    description: str = ""
    #: dtypes claimed under the Triton interpreter, where they differ (see ``dtypes``)
    interpreted: tuple[str, ...] | None = None
    inplace: bool = False  # declares that it may overwrite its inputs (dx into dy)
    #: further ``register`` declarations, as (name, value) pairs: grads, max_n (zoo/variants.py)
    declare: tuple[tuple[str, object], ...] = ()

    def claims(self) -> dict[str, object]:
        """What ``register`` is told beyond the variant: the declarations, and the Triton kernels' widest row."""
        return {**({"max_n": TRITON_MAX_N} if self.triton else {}), **dict(self.declare)}

    def dtypes(self) -> tuple[str, ...]:
        from normgate.runner import interpreter_on

        return self.interpreted if (self.interpreted is not None and interpreter_on()) else DTYPES


@dataclass(frozen=True)
class Mutant:
    name: str  # the candidate is PREFIX_MUTANT + name
    base: str
    bug: str  # one line: what is wrong
    fn: Callable
    where: str = "wrapper"  # "kernel" (a Triton switch), "Triton wrapper", or "wrapper" (plain PyTorch)
    equivalent: dict[str, str] = field(default_factory=dict)  # device -> why no check can see it there
    #: a miss the checks are known to have, and why: counted against the kill rate, shown in the
    #: matrix, and expected to stay missed (tests fail when a check starts catching it)
    known_miss: str = ""

    @property
    def candidate(self) -> str:
        return PREFIX_MUTANT + self.name


def _triton_rms(mutant: str = "", casting: str = "gemma", offset: float = 0.0, inplace: bool = False) -> Callable:
    def fn(x, weight, eps):
        from .triton_rmsnorm import rms_norm  # Triton kernels load after TRITON_INTERPRET is set

        return rms_norm(x, weight, eps, casting=casting, offset=offset, mutant=mutant, inplace=inplace)

    return fn


def _triton_ln(mutant: str = "") -> Callable:
    def fn(x, weight, bias, eps):
        from .triton_layernorm import layer_norm

        return layer_norm(x, weight, bias, eps, mutant=mutant)

    return fn


def _eager_residual(x, weight, eps, residual):
    return E.rms_norm(x, weight, eps, residual)


BASES = {b.name: b for b in (
    Base("zoo_triton_rmsnorm", "rmsnorm", RMSNormVariant(casting="gemma"), _triton_rms(), True,
         "the zoo's Triton RMSNorm, gemma casting"),
    Base("zoo_triton_rmsnorm_offset1", "rmsnorm", RMSNormVariant(casting="gemma", offset=1.0),
         _triton_rms(offset=1.0), True, "the zoo's Triton RMSNorm, gemma casting, (1 + weight)"),
    Base("zoo_triton_rmsnorm_llama", "rmsnorm", RMSNormVariant(casting="llama"), _triton_rms(casting="llama"), True,
         "the zoo's Triton RMSNorm, llama casting"),
    Base("zoo_triton_rmsnorm_inplace", "rmsnorm", RMSNormVariant(casting="gemma"), _triton_rms(inplace=True), True,
         "the zoo's Triton RMSNorm, gemma casting, dx written into dy's storage (declared), x made contiguous",
         inplace=True),
    Base("zoo_triton_layernorm", "layernorm", LayerNormVariant(), _triton_ln(), True, "the zoo's Triton LayerNorm"),
    Base("zoo_eager_rmsnorm", "rmsnorm", RMSNormVariant(casting="gemma"), E.rms_norm,
         description="the zoo's eager RMSNorm"),
    Base("zoo_eager_rmsnorm_offset1", "rmsnorm", RMSNormVariant(casting="gemma", offset=1.0), E.rms_norm_offset1,
         description="the zoo's eager RMSNorm, (1 + weight)"),
    Base("zoo_eager_rmsnorm_residual", "rmsnorm", RMSNormVariant(casting="gemma", residual=True), _eager_residual,
         description="the zoo's eager fused residual add + RMSNorm"),
    Base("zoo_eager_layernorm", "layernorm", LayerNormVariant(), E.layer_norm, description="the zoo's eager LayerNorm"),
)}

_ON_CPU_ATOMICS = ("the Triton interpreter runs programs one after another, so float atomics add in one fixed "
                   "order: the same bits every run (on a GPU the repeat check sees the order change)")


def _k(name: str, bug: str, base: str = "zoo_triton_rmsnorm", **kw) -> Mutant:
    casting = BASES[base].variant.casting
    if BASES[base].op == "layernorm":
        fn = _triton_ln(name)
    else:
        fn = _triton_rms(name, casting=casting, offset=BASES[base].variant.offset, inplace=BASES[base].inplace)
    return Mutant(name, base, bug, fn, **{"where": "kernel", **kw})


MUTANTS: tuple[Mutant, ...] = (
    # epsilon
    _k("eps_outside_sqrt", "eps added to the rms, not the mean square: 1 / (sqrt(ms) + eps)"),
    _k("eps_in_sum", "eps added to the sum of squares before dividing by N: eps / N in effect"),
    Mutant("eps_default", "zoo_eager_rmsnorm", "the eps passed in ignored, a default of 1e-6 used instead",
           E.eps_default),
    Mutant("eps_none_input_dtype", "zoo_eager_rmsnorm", "eps=None read as finfo(x.dtype).eps (bf16's is 65,536x "
           "float32's), not what PyTorch computes", E.eps_none_input_dtype),
    Mutant("norm_without_eps", "zoo_eager_rmsnorm", "computed as x / ||x|| * sqrt(N): no eps, 0/0 on a zero row",
           E.norm_without_eps),
    # weight offset and casting points
    Mutant("offset_missing", "zoo_eager_rmsnorm_offset1", "Gemma's (1 + weight) computed as * weight",
           E.offset_missing),
    _k("offset_doubled", "the offset added in the kernel as well as by the caller: (2 + weight)",
       "zoo_triton_rmsnorm_offset1"),
    _k("offset_missing_bwd", "the backward uses weight, not (1 + weight), for dx", "zoo_triton_rmsnorm_offset1"),
    _k("llama_cast_in_gemma", "claims gemma casting, rounds the normalized value to the input dtype before "
       "the weight (llama)", "zoo_triton_rmsnorm_offset1"),
    _k("gemma_cast_in_llama", "claims llama casting, keeps the normalized value in float32 (gemma)",
       "zoo_triton_rmsnorm_llama",
       known_miss="llama's error model compares with the exact value and allows the intermediate rounding as "
                  "slack, so the more accurate gemma result is inside the bound (docs/detection.md)"),
    _k("weight_cast_to_input", "float32 weights rounded to the activation dtype before the multiply"),
    # low-precision arithmetic and reductions
    _k("squares_low_precision", "squares and their sum computed in the input dtype (fp16/bf16)"),
    _k("mean_over_block", "the mean square divided by the padded block size instead of N"),
    _k("mask_off_by_one", "the sum of squares masks cols < N - 1: the last column left out"),
    _k("rstd_low_precision", "rstd saved for the backward in the input dtype", where="Triton wrapper"),
    _k("rstd_row0", "the backward loads row 0's rstd for every row"),
    _k("rstd_no_eps_bwd", "the backward recomputes rstd without eps"),
    _k("dw_partial_unwritten", "programs that own no row leave their partial-dW row (torch.empty) unwritten"),
    _k("dw_atomic", "dW accumulated with float atomics: the order depends on scheduling",
       equivalent={"cpu": _ON_CPU_ATOMICS}),
    _k("batch_split", "a launch config keyed on the batch size splits the row reduction differently: a row's "
       "bits depend on how many rows came with it"),
    # layout and contract
    _k("stride_ignored", "rows addressed as row * N, ignoring the row stride of non-contiguous inputs"),
    _k("dx_into_dy", "the backward writes dx into the incoming gradient's storage (undeclared in-place)",
       where="Triton wrapper"),
    Mutant("output_promoted", "zoo_eager_rmsnorm", "mixed dtypes: the output left in the promoted dtype (fp32) "
           "while the variant says the activation dtype", E.output_promoted),
    Mutant("squeeze_size_one", "zoo_eager_rmsnorm", "squeeze() in the wrapper: wrong shape for one row, "
           "the mean taken over rows for N = 1", E.squeeze_size_one),
    Mutant("one_row_fast_path", "zoo_eager_rmsnorm", "a single-row (decode) fast path that forgets eps",
           E.one_row_fast_path),
    # out-of-bounds writes, dispatch boundaries, wrong backward formulas
    _k("store_past_row", "the dx store masks cols < N + 1: one element past the end of every row, into the "
       "incoming gradient it overwrites", "zoo_triton_rmsnorm_inplace"),
    _k("dx_x_stride", "dx, written into dy's storage, is addressed with x's row stride: right while dy's stride "
       "equals x's (unsloth #10617)", "zoo_triton_rmsnorm_inplace"),
    _k("launch_switch_256", "from 256 rows on the row reduction runs in 16-column chunks: a row's bits change "
       "with the batch size at M = 256 (vllm #48271)"),
    _k("offsets_int32", "element offsets computed in 32 bits: wrong addresses once rows * stride passes 2**31",
       equivalent={"cpu": "needs more than 2**31 elements, which only the GPU's huge cases draw"}),
    _k("weight_twice_bwd", "dx computed with the weight applied twice (Megatron-LM #6859)"),
    # fused residual add
    Mutant("residual_h_is_x", "zoo_eager_rmsnorm_residual", "returns x instead of h = x + residual",
           E.residual_h_is_x),
    Mutant("residual_unrounded", "zoo_eager_rmsnorm_residual", "normalizes x + residual in float32 before "
           "it is rounded to the input dtype", E.residual_unrounded),
    Mutant("residual_in_place", "zoo_eager_rmsnorm_residual", "writes h into x's storage (undeclared in-place)",
           E.residual_in_place),
    # LayerNorm
    _k("variance_one_pass", "variance as E[x^2] - E[x]^2 in float32 (cancellation)", "zoo_triton_layernorm"),
    _k("padding_not_masked", "x - mean not re-masked: the padded lanes add (BLOCK - N) * mean^2 to the variance",
       "zoo_triton_layernorm"),
    _k("dx_without_mean_term", "dx misses the - mean(dy * w) term", "zoo_triton_layernorm"),
    _k("dbias_missing", "dB never accumulated (left zero)", "zoo_triton_layernorm"),
    Mutant("unbiased_variance", "zoo_eager_layernorm", "torch.var's default unbiased (N - 1) variance",
           E.unbiased_variance),
    Mutant("bias_before_weight", "zoo_eager_layernorm", "(xhat + b) * w instead of xhat * w + b",
           E.bias_before_weight),
    Mutant("ln_output_promoted", "zoo_eager_layernorm", "fp32 parameters with bf16 activations give an fp32 "
           "output (xFormers)", E.ln_output_promoted),
)

# the declarations beyond a casting mode (zoo/variants.py: it builds on the classes above)
from . import variants as _variants  # noqa: E402

_VARIANT_BASES, _VARIANT_MUTANTS = _variants.entries(Base, Mutant)
BASES.update({b.name: b for b in _VARIANT_BASES})
MUTANTS = MUTANTS + _VARIANT_MUTANTS

#: the built-in candidates that are correct on the CPU, run alongside the zoo's own for false alarms
BUILTIN_CORRECT = ("hf_llama_rmsnorm", "hf_gemma_rmsnorm", "torch_rms_norm", "eager_add_rmsnorm", "eager_layernorm",
                   "torch_layer_norm_fp32")


def register_all() -> None:
    """Register every base and mutant as a candidate (again in a process that already has them:
    a no-op)."""
    reg = candidates._REGISTRY
    for b in BASES.values():
        if b.name not in reg:
            candidates.register(b.name, b.fn, op=b.op, variant=b.variant, dtypes=b.dtypes(), triton=b.triton,
                                inplace=b.inplace, description=b.description, **b.claims())
    for m in MUTANTS:
        if m.candidate not in reg:
            b = BASES[m.base]
            candidates.register(m.candidate, m.fn, op=b.op, variant=b.variant, dtypes=b.dtypes(), triton=b.triton,
                                inplace=b.inplace, description=m.bug, **b.claims())


def correct_names(device: str) -> list[str]:
    reg = candidates.registry()
    builtin = [n for n in BUILTIN_CORRECT if n in reg and reg[n].supports(device)]
    return list(BASES) + builtin
