"""The conventional test of a kernel repo, for comparison: a fixed list of shapes, ``torch.randn``
inputs, default-initialised parameters, one ``torch.testing.assert_close`` per tensor with
per-dtype tolerances, against PyTorch eager computing the same variant, forward and backward.

Shapes, dtypes, tolerances, eps and parameter initialisation are Liger-Kernel's own
(test/transformers/test_rms_norm.py, test_fused_add_rms_norm.py and test_layer_norm.py):
RMSNorm (2, 128, 512) and (5, 123, 123), fp32 atol 1e-4 rtol 1e-6, bf16 atol 2e-1 rtol 2e-2;
LayerNorm (2, 8, 64), (4, 16, 128), (1, 1, 1023), (3, 7, 256), fp32 only, atol 1e-5 rtol 1e-5;
eps 1e-6; weights of ones (biases of zeros), as the modules initialise them; seed 42.
"""

from __future__ import annotations

import torch

from normgate.candidates import Candidate
from normgate.op import get_op
from normgate.properties.norm import max_n_for

RMS_SHAPES = ((2, 128, 512), (5, 123, 123))
LN_SHAPES = ((2, 8, 64), (4, 16, 128), (1, 1, 1023), (3, 7, 256))
RMS_TOLERANCES = (("fp32", torch.float32, 1e-4, 1e-6), ("bf16", torch.bfloat16, 2e-1, 2e-2))
LN_TOLERANCES = (("fp32", torch.float32, 1e-5, 1e-5),)
EPS = 1e-6
SEED = 42


def _run(fn, x, params, residual, dy, dh, grads=None):
    """Forward and backward; returns every output and gradient by name (of the parameters, those
    in ``grads`` when given: the ones the candidate declares)."""
    x = x.clone().requires_grad_(True)
    params = {k: (None if v is None else v.clone().requires_grad_(grads is None or "d" + k in grads))
              for k, v in params.items()}
    leaves = {"x": x, **{k: v for k, v in params.items() if v is not None and v.requires_grad}}
    args = [x] + list(params.values()) + [EPS]
    if residual is not None:
        residual = residual.clone().requires_grad_(True)
        leaves["residual"] = residual
        args.append(residual)
    out = fn(*args)
    outs = {"y": out} if residual is None else {"y": out[0], "h": out[1]}
    upstream = {"y": dy} if residual is None else {"y": dy, "h": dh}
    names = list(outs)
    torch.autograd.backward([outs[n] for n in names], [upstream[n].to(outs[n].dtype) for n in names])
    result = {k: v.detach() for k, v in outs.items()}
    result.update({"d" + k: v.grad for k, v in leaves.items()})
    return result


def check(cand: Candidate, device: str = "cpu") -> tuple[str, str]:
    """Run the conventional test on a candidate: ("pass", ""), ("fail", why) when an assertion
    failed, or ("error", why) when the test could not run (the kernel or its environment raised):
    an error is never counted as a catch."""
    op = get_op(cand.op)
    variant = cand.variant
    shapes, tolerances = (LN_SHAPES, LN_TOLERANCES) if cand.op == "layernorm" else (RMS_SHAPES, RMS_TOLERANCES)
    reference = op.eager(variant)
    fn = cand.resolve()
    for dname, dtype, atol, rtol in tolerances:
        if dname not in cand.dtypes:
            continue
        for shape in shapes:
            gen = torch.Generator().manual_seed(SEED)
            x = torch.randn(shape, generator=gen, dtype=dtype).to(device)
            # what the candidate declares shapes the test as it shapes a kernel repo's own: its
            # parameters, its residual stream's dtype, its widest row, the gradients it returns
            rdt = torch.float32 if getattr(variant, "residual_mode", "rounded") == "fp32" else dtype
            residual = torch.randn(shape, generator=gen, dtype=rdt).to(device) if variant.residual else None
            n = shape[-1]
            widest = max_n_for(cand, dname)
            if widest is not None and n > widest:
                continue
            has = op.params(variant)
            params = {"weight": torch.ones(n, dtype=dtype, device=device) if "weight" in has else None}
            if cand.op == "layernorm":
                params["bias"] = torch.zeros(n, dtype=dtype, device=device) if "bias" in has else None
            grads = {g for g in ("dweight", "dbias") if cand.provides(g)}
            dy = torch.randn(shape, generator=gen, dtype=dtype).to(device)
            dh = torch.randn(shape, generator=gen, dtype=dtype).to(device)
            try:
                want = _run(reference, x, params, residual, dy, dh, grads)
                got = _run(fn, x, params, residual, dy, dh, grads)
                for name, w in want.items():
                    torch.testing.assert_close(got[name], w, atol=atol, rtol=rtol,
                                               msg=lambda m, name=name: f"{name}: {m}")
            except Exception as e:  # noqa: BLE001 - recorded either way, a catch only if an assertion
                verdict = "fail" if isinstance(e, AssertionError) else "error"
                first = (str(e).splitlines() or [""])[0][:200]
                return verdict, f"{dname} {'x'.join(map(str, shape))}: {type(e).__name__}: {first}"
    return "pass", ""
