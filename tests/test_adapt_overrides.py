"""adapt refuses to read a subclass that replaces its known parent's forward, unless told how."""

import pytest
import torch
from test_adapt import LlamaRMSNorm, standin

import normgate
from normgate.kernels.adapt import AdaptError


@standin("unsloth.kernels.rms_layernorm")
class UnslothLlamaRMSNorm(LlamaRMSNorm):
    """Unsloth's drop-in: the parent's class and state, its own (here: gemma-style) forward."""

    def forward(self, x):
        h = x.float()
        return (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.variance_epsilon) * self.weight).to(x.dtype)


@standin("my_models.norms")
class RenamedLlamaRMSNorm(LlamaRMSNorm):
    """A subclass that keeps the parent's forward: still read as the parent."""


def test_subclass_with_its_own_forward_is_refused_and_the_error_names_the_override():
    with pytest.raises(AdaptError) as e:
        normgate.adapt(UnslothLlamaRMSNorm(8))
    msg = str(e.value)
    assert "UnslothLlamaRMSNorm" in msg and "defines its own forward" in msg
    assert "as_parent=True" in msg and "as_parent=False" in msg


def test_subclass_keeping_the_parents_forward_is_read_as_the_parent():
    assert normgate.adapt(RenamedLlamaRMSNorm(8)).variant == normgate.RMSNormVariant(casting="llama", out="promote")


def test_as_parent_true_reads_it_as_the_parent():
    cand = normgate.adapt(UnslothLlamaRMSNorm(8), as_parent=True)
    assert cand.variant == normgate.RMSNormVariant(casting="llama", out="promote")


def test_as_parent_false_reads_it_as_an_unknown_class_described_by_overrides():
    with pytest.raises(AdaptError, match="casting mode"):
        normgate.adapt(UnslothLlamaRMSNorm(8), as_parent=False)
    cand = normgate.adapt(UnslothLlamaRMSNorm(8), as_parent=False, op="rmsnorm", casting="gemma", offset=0.0,
                          out="input")
    assert cand.variant == normgate.RMSNormVariant(casting="gemma")
    # and its own forward is what runs, and passes as what it is
    from normgate.runner import Task, run_task

    normgate.candidates.add_candidate(cand, replace=True)
    lines = []
    run_task(Task(cand.name, "bf16", "accuracy", 12), normgate.checks.Context(), lines.append)
    assert {ln["verdict"] for ln in lines} <= {"pass", "range"}, [ln["reason"] for ln in lines]
