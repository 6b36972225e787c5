"""normgate.adapt: reading a module's semantics, running it with the case's weight and eps.

The stand-ins copy the real classes' forward and attributes, and carry their module path, so these
tests hold without transformers, Liger-Kernel or Megatron installed (tests/test_thirdparty.py runs
the real ones).
"""

import pytest
import torch

import normgate
from normgate.case import Case
from normgate.checks import Context
from normgate.kernels.adapt import AdaptError
from normgate.runner import Task, run_task

CPU = Context(device="cpu", eager_opinion=False)


def standin(module_path: str):
    def wrap(cls):
        cls.__module__ = module_path
        return cls

    return wrap


@standin("transformers.models.llama.modeling_llama")
class LlamaRMSNorm(torch.nn.Module):
    def __init__(self, hidden_size, eps=1e-6):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon = eps

    def forward(self, hidden_states):
        input_dtype = hidden_states.dtype
        hidden_states = hidden_states.to(torch.float32)
        variance = hidden_states.pow(2).mean(-1, keepdim=True)
        hidden_states = hidden_states * torch.rsqrt(variance + self.variance_epsilon)
        return self.weight * hidden_states.to(input_dtype)


@standin("transformers.models.gemma.modeling_gemma")
class GemmaRMSNorm(torch.nn.Module):
    def __init__(self, dim, eps=1e-6):
        super().__init__()
        self.eps = eps
        self.weight = torch.nn.Parameter(torch.zeros(dim))

    def _norm(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)

    def forward(self, x):
        output = self._norm(x.float())
        return (output * (1.0 + self.weight.float())).type_as(x)


@standin("transformers.models.gemma3n.modeling_gemma3n")
class Gemma3nRMSNorm(torch.nn.Module):
    def __init__(self, dim, eps=1e-6, with_scale=True):
        super().__init__()
        self.eps, self.with_scale = eps, with_scale
        if with_scale:
            self.weight = torch.nn.Parameter(torch.ones(dim))


@standin("transformers.models.t5.modeling_t5")
class T5LayerNorm(LlamaRMSNorm):
    pass


@standin("megatron.legacy.model.rms_norm")
class RMSNorm(torch.nn.Module):
    """Megatron's legacy RMSNorm: eps in ``eps``, llama-style cast before ``* weight``."""

    def __init__(self, dim, eps=1e-6):
        super().__init__()
        self.eps = eps
        self.weight = torch.nn.Parameter(torch.ones(dim))

    def forward(self, x):
        h = x.float()
        return (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight


@standin("megatron.core.fusions.fused_layer_norm")
class FusedLayerNorm(torch.nn.Module):
    def __init__(self, dim, eps=1e-5, zero_centered_gamma=True):
        super().__init__()
        self.eps, self.zero_centered_gamma, self.normalization = eps, zero_centered_gamma, "RMSNorm"
        self.weight = torch.nn.Parameter(torch.zeros(dim))


@standin("liger_kernel.transformers.rms_norm")
class LigerRMSNorm(torch.nn.Module):
    def __init__(self, hidden_size, eps=1e-6, offset=0.0, casting_mode="llama", in_place=True):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(hidden_size))
        self.variance_epsilon, self.offset, self.casting_mode, self.in_place = eps, offset, casting_mode, in_place


@standin("liger_kernel.transformers.rms_norm")
class LigerRMSNormForGemma(LigerRMSNorm):
    def __init__(self, hidden_size, eps=1e-6):
        super().__init__(hidden_size, eps, offset=1.0, casting_mode="gemma", in_place=True)


@standin("liger_kernel.transformers.layer_norm")
class LigerLayerNorm(torch.nn.Module):
    def __init__(self, hidden_size, eps=1e-6):
        super().__init__()
        self.eps = eps
        self.variance_epsilon = eps
        self.weight = torch.nn.Parameter(torch.ones(hidden_size))
        self.bias = torch.nn.Parameter(torch.zeros(hidden_size))


def variant_of(module, **kw):
    return normgate.adapt(module, **kw).variant


@pytest.mark.parametrize("module, expected, eps_attr", [
    (LlamaRMSNorm(4), normgate.RMSNormVariant(casting="llama", out="promote"), "variance_epsilon"),
    (GemmaRMSNorm(4), normgate.RMSNormVariant(casting="gemma", offset=1.0), "eps"),
    (Gemma3nRMSNorm(4), normgate.RMSNormVariant(casting="gemma"), "eps"),
    (Gemma3nRMSNorm(4, with_scale=False), normgate.RMSNormVariant(casting="gemma", weight=False), "eps"),
    (T5LayerNorm(4), normgate.RMSNormVariant(casting="llama"), "variance_epsilon"),
    (RMSNorm(4), normgate.RMSNormVariant(casting="llama", out="promote"), "eps"),
    (LigerRMSNorm(4, casting_mode="none"), normgate.RMSNormVariant(casting="none"), "variance_epsilon"),
    (LigerRMSNormForGemma(4), normgate.RMSNormVariant(casting="gemma", offset=1.0), "variance_epsilon"),
    (LigerLayerNorm(4), normgate.LayerNormVariant(), "variance_epsilon"),
    (torch.nn.RMSNorm(4), normgate.RMSNormVariant(casting="gemma"), "eps"),
    (torch.nn.RMSNorm(4, elementwise_affine=False), normgate.RMSNormVariant(casting="gemma", weight=False), "eps"),
    (torch.nn.LayerNorm(4, bias=False), normgate.LayerNormVariant(bias=False), "eps"),
])
def test_known_classes_read(module, expected, eps_attr):
    cand = normgate.adapt(module)
    assert cand.variant == expected
    assert cand.fn.sem.eps_attr == eps_attr


def test_flags_read_from_the_module():
    liger = normgate.adapt(LigerRMSNorm(4, in_place=True))
    assert liger.inplace and liger.triton and not liger.eps_none
    assert not normgate.adapt(LigerRMSNorm(4, in_place=False)).inplace
    assert normgate.adapt(torch.nn.RMSNorm(4)).eps_none  # F.rms_norm takes eps=None
    assert not normgate.adapt(LlamaRMSNorm(4)).eps_none  # variance + None fails
    assert normgate.adapt(LigerRMSNorm(4, casting_mode=1)).variant.casting == "gemma"  # Liger's int modes
    assert normgate.adapt(T5LayerNorm(4)).dtypes == ("fp32", "bf16", "fp16")
    assert normgate.adapt(LlamaRMSNorm(4), name="mine").name == "mine"
    assert normgate.adapt(LlamaRMSNorm(4)).name == "llama_rmsnorm"


def test_a_copied_class_elsewhere_is_unknown_and_says_what_to_pass():
    class LlamaRMSNorm(torch.nn.Module):  # same name, but not transformers': nothing is assumed
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.ones(4))
            self.variance_epsilon = 1e-6

    with pytest.raises(AdaptError) as e:
        normgate.adapt(LlamaRMSNorm())
    msg = str(e.value)
    assert "op='rmsnorm'" in msg and "casting='llama'" in msg and "offset=1.0" in msg
    assert "eps its forward reads" not in msg  # one eps attribute: that one is read
    cand = normgate.adapt(LlamaRMSNorm(), op="rmsnorm", casting="llama", offset=0.0, out="promote")
    assert cand.variant == normgate.RMSNormVariant(casting="llama", out="promote")


def test_ambiguous_or_missing_eps_is_an_error_naming_the_override():
    class Norm(torch.nn.Module):
        def __init__(self, **eps):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.ones(4))
            self.__dict__.update(eps)

    kw = dict(op="rmsnorm", casting="gemma", offset=0.0)
    with pytest.raises(AdaptError, match="eps_attr='name'.*disagree"):
        normgate.adapt(Norm(eps=1e-5, variance_epsilon=1e-6), **kw)
    with pytest.raises(AdaptError, match="eps_attr='name', or eps=value"):
        normgate.adapt(Norm(), **kw)
    assert normgate.adapt(Norm(eps=1e-5, variance_epsilon=1e-6), eps_attr="eps", **kw).fn.sem.eps_attr == "eps"
    with pytest.raises(AdaptError, match="no attribute 'epsilon'"):
        normgate.adapt(Norm(eps=1e-5), eps_attr="epsilon", **kw)
    with pytest.raises(AdaptError, match="casting"):
        normgate.adapt(FusedLayerNorm(4))  # Megatron's fused kernels: the casting is not readable
    assert variant_of(FusedLayerNorm(4), casting="gemma", out="input").offset == 1.0  # zero_centered_gamma
    with pytest.raises(TypeError, match="unknown overrides"):
        normgate.adapt(LlamaRMSNorm(4), castng="llama")


def test_the_module_runs_with_the_case_weight_and_eps():
    module = LlamaRMSNorm(5, eps=1e-6)
    cand = normgate.adapt(module)
    x = torch.randn(3, 5) * 1e-3  # eps matters at this scale
    w = torch.randn(5, requires_grad=True)
    y = cand.fn(x, w, 0.1)
    h = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 0.1)
    torch.testing.assert_close(y, w * h, rtol=0, atol=0)
    y.sum().backward()  # the gradient reaches the harness's weight, not the module's
    assert w.grad is not None and module.weight.grad is None
    assert module.variance_epsilon == 1e-6 and torch.equal(module.weight, torch.ones(5))


def test_fixed_eps_is_declared_and_other_eps_refused():
    cand = normgate.adapt(GemmaRMSNorm(4), eps=1e-6)
    x, w = torch.randn(2, 4), torch.zeros(4)
    cand.fn(x, w, 1e-6)
    with pytest.raises(ValueError, match="eps=1e-06 only"):
        cand.fn(x, w, 0.1)


def test_functions_are_called_by_parameter_name():
    def rms(x, gamma, epsilon, scale_offset=0.0):
        h = x.float()
        return (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + epsilon) * (scale_offset + gamma)).to(x.dtype)

    with pytest.raises(AdaptError, match="op="):
        normgate.adapt(rms)
    cand = normgate.adapt(rms, op="rmsnorm", casting="gemma", offset=1.0, weight=True,
                          call_kwargs={"scale_offset": 1.0}, dtypes=("fp32",))
    assert cand.name == "rms" and cand.fn(torch.ones(1, 2), torch.zeros(2), 0.0).allclose(torch.ones(1, 2))
    report = _run(cand, "fp32", examples=6)
    assert report == {"pass"}


def _run(cand, dtype, examples, check="accuracy"):
    from normgate import candidates

    candidates.add_candidate(cand, replace=True)
    try:
        lines = []
        run_task(Task(cand.name, dtype, check, examples), CPU, lines.append)
        return {r["verdict"] for r in lines}
    finally:
        candidates.unregister(cand.name)


@pytest.mark.parametrize("module, dtype", [(LlamaRMSNorm(4), "bf16/fp32"), (GemmaRMSNorm(4), "bf16"),
                                           (RMSNorm(4), "fp16"), (torch.nn.RMSNorm(4), "bf16")])
def test_adapted_modules_pass_their_own_checks(module, dtype):
    assert _run(normgate.adapt(module, name="adapted"), dtype, examples=12) == {"pass"}


def test_a_wrong_declaration_fails():
    """What the adapter reads is what gets checked: Gemma read without its offset fails at once."""
    assert "fail" in _run(normgate.adapt(GemmaRMSNorm(4), name="no_offset", offset=0.0), "bf16", examples=12)


def test_eps_from_the_wrong_attribute_is_caught():
    """The Unsloth + Megatron incident: a module whose forward ignores the eps normgate sets (here it
    reads a hard-coded default) fails accuracy on cases where eps matters."""

    @standin("megatron.legacy.model.rms_norm")
    class RMSNorm(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.eps, self.weight = 1e-6, torch.nn.Parameter(torch.ones(4))

        def forward(self, x):
            h = x.float()
            return (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-6)).type_as(x) * self.weight

    assert "fail" in _run(normgate.adapt(RMSNorm(), name="eps_ignored"), "fp32", examples=30)


def test_a_backward_that_rounds_each_branch_is_caught():
    """Casting x to float32 twice (instead of once, as GemmaRMSNorm does) gives autograd two
    branches whose gradients are each rounded to bf16 before they are summed: they cancel to ~0, so
    dx loses every bit. Found by normgate on a first draft of the stand-in above."""

    @standin("transformers.models.gemma.modeling_gemma")
    class GemmaRMSNorm(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.eps, self.weight = 1e-6, torch.nn.Parameter(torch.zeros(4))

        def forward(self, x):
            output = x.float() * torch.rsqrt(x.float().pow(2).mean(-1, keepdim=True) + self.eps)
            return (output * (1.0 + self.weight.float())).type_as(x)

    assert "fail" in _run(normgate.adapt(GemmaRMSNorm(), name="two_casts"), "bf16", examples=12)


def test_eps_none_reaches_torch_rmsnorm():
    cand = normgate.adapt(torch.nn.RMSNorm(3, eps=1e-5))
    x = torch.full((1, 3), 1e-4)
    y = cand.fn(x, torch.ones(3), None)
    eps = torch.finfo(torch.float32).eps
    torch.testing.assert_close(y, x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps))
    assert Case("rmsnorm", (1, 3), "fp32", eps=None).eps is None


def test_docs_example_runs(capsys):
    import runpy
    from pathlib import Path

    from normgate import candidates

    try:
        runpy.run_path(str(Path(__file__).parent.parent / "docs" / "examples" / "adapt_module.py"))
        assert candidates.get("fast_norm").variant == normgate.RMSNormVariant(casting="gemma", offset=1.0)
    finally:
        candidates.unregister("fast_norm")
    assert "pass casting='llama', 'gemma' or 'none'" in capsys.readouterr().out
