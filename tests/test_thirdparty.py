"""The real Liger-Kernel and transformers modules: what adapt reads from them, and short runs.

Skipped where the package is not installed (``nox -s integrations`` installs both).
"""

import pytest
import torch

import normgate
from normgate import candidates
from normgate.checks import Context
from normgate.runner import Task, run_task

CPU = Context(device="cpu", interpreter=True, eager_opinion=False)


def hf(path: str):
    pytest.importorskip("transformers")
    module, _, name = path.rpartition(".")
    return getattr(pytest.importorskip(f"transformers.models.{module}"), name)


def liger(path: str):
    module, _, name = path.rpartition(".")
    return getattr(pytest.importorskip(f"liger_kernel.transformers.{module}"), name)


@pytest.mark.parametrize("factory, kwargs, expected", [
    ("llama.modeling_llama.LlamaRMSNorm", {}, normgate.RMSNormVariant(casting="llama", out="promote")),
    ("gemma.modeling_gemma.GemmaRMSNorm", {}, normgate.RMSNormVariant(casting="gemma", offset=1.0)),
    ("gemma3.modeling_gemma3.Gemma3RMSNorm", {}, normgate.RMSNormVariant(casting="gemma", offset=1.0)),
    ("gemma3n.modeling_gemma3n.Gemma3nRMSNorm", {"with_scale": False},
     normgate.RMSNormVariant(casting="gemma", weight=False)),
    ("t5.modeling_t5.T5LayerNorm", {}, normgate.RMSNormVariant(casting="llama")),
])
def test_transformers_modules_read(factory, kwargs, expected):
    assert normgate.adapt(hf(factory)(8, **kwargs)).variant == expected


@pytest.mark.parametrize("factory, kwargs, expected, inplace", [
    ("rms_norm.LigerRMSNorm", {}, normgate.RMSNormVariant(casting="llama"), True),
    ("rms_norm.LigerRMSNormForGemma", {}, normgate.RMSNormVariant(casting="gemma", offset=1.0), True),
    ("rms_norm.LigerRMSNormForGemma3", {}, normgate.RMSNormVariant(casting="gemma", offset=1.0), False),
    ("rms_norm.LigerRMSNorm", {"casting_mode": "none", "elementwise_affine": False},
     normgate.RMSNormVariant(casting="none", weight=False), True),
    ("layer_norm.LigerLayerNorm", {"eps": 1e-5}, normgate.LayerNormVariant(), False),
    ("fused_add_rms_norm.LigerFusedAddRMSNorm", {}, normgate.RMSNormVariant(casting="llama", residual=True), False),
])
def test_liger_modules_read(factory, kwargs, expected, inplace):
    cand = normgate.adapt(liger(factory)(8, **kwargs))
    assert cand.variant == expected and cand.inplace == inplace and cand.triton


def test_liger_layernorm_eps_is_the_one_forward_reads():
    """LigerLayerNorm keeps eps twice; forward passes ``variance_epsilon``. Setting ``eps`` (what
    most adapters would read) would change nothing the kernel computes."""
    module = liger("layer_norm.LigerLayerNorm")(8)
    assert normgate.adapt(module).fn.sem.eps_attr == "variance_epsilon"


def _verdicts(name: str, dtype: str, examples: int, check: str = "accuracy") -> set[str]:
    lines: list[dict] = []
    run_task(Task(name, dtype, check, examples), CPU, lines.append)
    return {r["verdict"] for r in lines}


@pytest.mark.parametrize("name, dtype", [("liger_rmsnorm_gemma_offset1", "bf16"), ("liger_rmsnorm_llama", "fp16"),
                                         ("liger_layernorm", "fp32"), ("transformers_llama_rmsnorm", "bf16/fp32"),
                                         ("transformers_gemma3_rmsnorm", "bf16")])
def test_builtin_thirdparty_candidates_pass(name, dtype):
    pytest.importorskip("liger_kernel" if name.startswith("liger") else "transformers")
    assert _verdicts(name, dtype, examples=6) == {"pass"}


def test_declared_variants_match_what_adapt_reads():
    """Every third-party candidate builds its module and checks its declaration against adapt."""
    for name, cand in sorted(candidates.registry().items()):
        if name.startswith(("liger_", "transformers_")):
            assert cand.fn.kernel is not None, name


def test_a_wrong_liger_declaration_fails():
    """Liger's Gemma module checked as if it had no offset: the accuracy check fails at once."""
    module = liger("rms_norm.LigerRMSNormForGemma")(8)
    cand = normgate.adapt(module, name="liger_gemma_wrong", offset=0.0, dtypes=("fp32",))
    candidates.add_candidate(cand, replace=True)
    try:
        assert "fail" in _verdicts(cand.name, "fp32", examples=6)
    finally:
        candidates.unregister(cand.name)


def test_interpreter_bf16_arithmetic_is_why_bf16_is_cuda_only():
    """The reason the llama/none/fused-add Liger candidates claim bf16 on CUDA only: the Triton
    interpreter multiplies bf16 values on their raw bits. If this starts passing, the split can go."""
    triton = pytest.importorskip("triton")
    tl = pytest.importorskip("triton.language")
    import os

    if os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("needs the Triton interpreter")

    @triton.jit
    def mul(a_ptr, b_ptr, out_ptr, n: tl.constexpr):
        i = tl.arange(0, n)
        tl.store(out_ptr + i, (tl.load(a_ptr + i) * tl.load(b_ptr + i)).to(tl.float32))

    a = torch.tensor([0.5, 1.5, -2.0, 3.0], dtype=torch.bfloat16)
    out = torch.empty(4)
    mul[(1,)](a, a, out, 4)
    assert not torch.equal(out, (a.float() * a.float()))


def test_t5_mixed_backward_rounds_each_branch():
    """A finding: T5LayerNorm with bf16 activations and fp32 weights computes its forward in float32
    (y within 3 ULP), but x enters the graph twice in bf16, so autograd rounds each branch's
    gradient to bf16 before summing them: dx is ~19 ULP off at 4x1024 (error/bound 3.5), where
    LlamaRMSNorm (one cast to float32) stays within its bound."""
    pytest.importorskip("transformers")
    from normgate.case import Case
    from normgate.checks import accuracy
    from normgate.op import get_op

    case = Case.from_key("rmsnorm,4x1024,bf16/fp32,x=normal,dy=normal,w=normal,eps=1e-06,contiguous,seed=1")
    t5 = accuracy(candidates.get("transformers_t5_rmsnorm_mixed"), get_op("rmsnorm"), case, CPU)
    assert t5.verdict == "fail" and t5.reason.startswith("dx:") and "y:" not in t5.reason
    llama = accuracy(candidates.get("transformers_llama_rmsnorm"), get_op("rmsnorm"), case, CPU)
    assert llama.verdict == "pass"
