"""The field's function kernels through normgate.field's one-line adapters, on CPU stand-ins with the
real signatures (tests/fieldstandins), and the declarations they use: residual modes, gradients
provided, per-dtype row limits, a caller's output dtype, bias-only LayerNorm."""

import pytest
import torch
from fieldstandins import (
    flash_attn_layer_norm,
    flash_attn_layer_norm_early,
    liger_functions,
    quack_rmsnorm,
    unsloth_kernels,
)

import normgate
from normgate import candidates
from normgate.candidates import Candidate
from normgate.checks import Context
from normgate.properties.norm import max_n_for
from normgate.reports import declarations
from normgate.runner import Task, run_task

CPU = Context(device="cpu", eager_opinion=False)
ON_CPU = dict(devices=("cpu",))


def _verdicts(cand: Candidate, dtype: str, check: str = "accuracy", examples: int = 10) -> dict[str, list[str]]:
    candidates.add_candidate(cand, replace=True)
    try:
        lines = []
        run_task(Task(cand.name, dtype, check, examples), CPU, lines.append)
        out: dict[str, list[str]] = {}
        for r in lines:
            if r.get("type") == "result":
                out.setdefault(r["verdict"], []).append(r.get("reason", ""))
        return out
    finally:
        candidates.unregister(cand.name)


FA = flash_attn_layer_norm
ADAPTED = [
    ("flash_attn_rms_norm", lambda: normgate.field.flash_attn_rms_norm(fn=FA.rms_norm_fn, **ON_CPU)),
    ("flash_attn_rms_norm_residual", lambda: normgate.field.flash_attn_rms_norm(residual="unrounded", fn=FA.rms_norm_fn,
                                                                                **ON_CPU)),
    ("flash_attn_rms_norm_residual_fp32", lambda: normgate.field.flash_attn_rms_norm(residual="fp32",
                                                                                     fn=FA.rms_norm_fn, **ON_CPU)),
    ("flash_attn_rms_norm_zc_out_fp32", lambda: normgate.field.flash_attn_rms_norm(
        zero_centered_weight=True, out_dtype=torch.float32, fn=FA.rms_norm_fn, **ON_CPU)),
    ("flash_attn_layer_norm_residual", lambda: normgate.field.flash_attn_layer_norm(residual="unrounded",
                                                                                    fn=FA.layer_norm_fn, **ON_CPU)),
    ("flash_attn_layer_norm_nobias", lambda: normgate.field.flash_attn_layer_norm(bias=False, fn=FA.layer_norm_fn,
                                                                                  **ON_CPU)),
    ("unsloth_rms_layernorm", lambda: normgate.field.unsloth_rms_layernorm(fn=unsloth_kernels.fast_rms_layernorm,
                                                                           **ON_CPU)),
    ("unsloth_rms_layernorm_gemma", lambda: normgate.field.unsloth_rms_layernorm(
        gemma=True, fn=unsloth_kernels.fast_rms_layernorm, **ON_CPU)),
    ("unsloth_layernorm", lambda: normgate.field.unsloth_layernorm(fn=unsloth_kernels.fast_layernorm, **ON_CPU)),
    ("quack_rmsnorm", lambda: normgate.field.quack_rmsnorm(fn=quack_rmsnorm.rmsnorm, **ON_CPU)),
    ("liger_fn_rms_norm_gemma_offset1", lambda: normgate.field.liger_rms_norm(
        casting="gemma", offset=1.0, fn=liger_functions.LigerRMSNormFunction)),
    ("liger_fn_layer_norm", lambda: normgate.field.liger_layer_norm(fn=liger_functions.LigerLayerNormFunction)),
    ("liger_fn_fused_add_rms_norm_gemma", lambda: normgate.field.liger_fused_add_rms_norm(
        fn=liger_functions.LigerFusedAddRMSNormFunction)),
]


@pytest.mark.parametrize("name, make", ADAPTED, ids=[a[0] for a in ADAPTED])
def test_each_adapter_passes_its_stand_in(name, make):
    cand = make()
    assert cand.name == name
    dtype = "bf16" if "bf16" in cand.dtypes else cand.dtypes[0]
    for check in ("accuracy", "contract"):
        got = _verdicts(cand, dtype, check, examples=8)
        assert set(got) <= {"pass", "skip", "range"} and "pass" in got, (check, got)


def test_the_declarations_each_adapter_makes():
    fa = normgate.field.flash_attn_rms_norm(residual="fp32")
    assert fa.variant == normgate.RMSNormVariant(casting="gemma", residual=True, residual_mode="fp32")
    assert max_n_for(fa, "fp32") == 16384 and max_n_for(fa, "bf16/fp32") == 32768 and fa.devices == ("cuda",)
    un = normgate.field.unsloth_rms_layernorm()
    assert un.grads == ("dx",) and un.inplace and un.variant.casting == "llama" and "bf16/fp32" not in un.dtypes
    assert normgate.field.unsloth_rms_layernorm(gemma=True).variant.offset == 1.0
    assert normgate.field.liger_fused_add_rms_norm().variant.residual_mode == "rounded"
    with pytest.raises(ValueError, match="residual must be"):
        normgate.field.flash_attn_rms_norm(residual="rounded")


def test_an_argument_the_release_lacks_is_an_error_not_a_wrong_variant():
    cand = normgate.field.flash_attn_rms_norm(zero_centered_weight=True, fn=flash_attn_layer_norm_early.rms_norm_fn,
                                              **ON_CPU)
    got = _verdicts(cand, "fp32", examples=2)
    assert "error" in got and "no zero_centered_weight argument" in got["error"][0]


def test_the_early_releases_partial_dw_is_caught():
    """flash-attention before its fix: programs that own no row leave their dW partial unwritten
    (the stand-in's 8 programs; the GPU's are 8 per SM), so dW is garbage with fewer rows."""
    cand = normgate.field.flash_attn_rms_norm(fn=flash_attn_layer_norm_early.rms_norm_fn, **ON_CPU)
    got = _verdicts(cand, "fp32", examples=20)
    assert "fail" in got and any("dweight" in r for r in got["fail"]), got


# ---- each declaration against a kernel that claims it and does another ---------------------------
def test_claiming_the_unrounded_sum_catches_a_rounded_one():
    claims = normgate.field.flash_attn_rms_norm(residual="unrounded", fn=liger_like_rounded_add, name="fa_rounded",
                                                **ON_CPU)
    assert "fail" in _verdicts(claims, "bf16", examples=20)


def liger_like_rounded_add(x, weight, bias, residual=None, eps=1e-6, prenorm=False, residual_in_fp32=False, **_):
    # the sum rounded to x's dtype before it is normalized: the rounded mode, claimed as unrounded
    h = x + residual
    s = h.float()
    return (s * torch.rsqrt(s.square().mean(-1, keepdim=True) + eps) * weight.float()).to(x.dtype), h


def test_a_dx_only_backward_is_checked_when_declared_and_fails_the_contract_when_not():
    fn = unsloth_kernels.fast_rms_layernorm
    assert set(_verdicts(normgate.field.unsloth_rms_layernorm(fn=fn, gemma=True, **ON_CPU), "bf16")) == {"pass"}
    undeclared = normgate.field.unsloth_rms_layernorm(fn=fn, gemma=True, grads=("dx", "dweight"), name="claims_dw",
                                                      **ON_CPU)
    got = _verdicts(undeclared, "bf16", "contract", examples=4)
    assert "fail" in got and "no gradient reached input 'weight'" in got["fail"][0]
    assert set(_verdicts(undeclared, "bf16", "accuracy", examples=2)) == {"error"}  # an error, never a pass


def test_a_per_dtype_row_limit_draws_each_dtypes_own_widths():
    def capped(x, weight, eps):
        # refuses past 256 bytes per row, as flash-attention refuses past 64 KB
        if x.shape[-1] * x.element_size() > 256:
            raise RuntimeError("row too wide")
        s = x.float()
        return (s * torch.rsqrt(s.square().mean(-1, keepdim=True) + eps) * weight.float()).to(x.dtype)

    cand = Candidate("capped", "rmsnorm", normgate.RMSNormVariant(casting="gemma"), capped, dtypes=("fp32", "bf16"),
                     max_n={"fp32": 64, "bf16": 128}, eps_none=False)
    for dtype in ("fp32", "bf16"):
        assert set(_verdicts(cand, dtype, examples=30)) <= {"pass", "range"}
    from normgate.op import CPU_PROFILE, get_op

    widths = {get_op("rmsnorm").cases(cand, "bf16", CPU_PROFILE.for_widths(s)).example().shape[-1] for s in range(40)}
    assert max(widths) > 64  # half-precision rows past the fp32 limit are drawn


def test_declarations_record_and_compare_the_new_fields():
    c = Candidate("c", "rmsnorm", normgate.RMSNormVariant(), lambda *a: None, max_n={"fp32": 16, "bf16": 32},
                  grads=("dx", "dw"))
    d = c.declaration()
    assert d["max_n"] == {"bf16": 32, "fp32": 16} and d["grads"] == ["dx", "dweight"]
    assert "grads" not in Candidate("c", "rmsnorm", normgate.RMSNormVariant(), lambda *a: None).declaration()
    narrower = declarations.compare("c", d, {**d, "max_n": {"bf16": 16, "fp32": 16}})
    assert narrower and narrower[0].loosened
    fewer = declarations.compare("c", d, {**d, "grads": ["dx"]})
    assert fewer and fewer[0].loosened and "dweight" in fewer[0].message
    assert not declarations.compare("c", d, {**d, "max_n": {"bf16": 64, "fp32": 16}})[0].loosened
    with pytest.raises(ValueError, match="grads"):
        Candidate("c", "rmsnorm", normgate.RMSNormVariant(), lambda *a: None, grads=("dweight",))


def test_variant_keys_of_old_variants_are_unchanged_and_new_ones_round_trip():
    assert normgate.RMSNormVariant(residual=True).key() == "casting=llama,offset=0,residual=1,weight=1,out=input"
    v = normgate.LayerNormVariant(residual=True, residual_mode="fp32", out="fp32")
    assert "residual_mode=fp32" in v.key() and normgate.LayerNormVariant.from_key(v.key()) == v
    with pytest.raises(ValueError, match="needs residual=True"):
        normgate.RMSNormVariant(residual_mode="unrounded")
    with pytest.raises(ValueError, match="out must be"):
        normgate.RMSNormVariant(out="fp64")
