"""Every built-in correct candidate that runs on the CPU passes every check, with zero failures,
over at least 2,000 generated cases each."""

import json
from collections import Counter

from conftest import normgate_cli

BASELINES = "hf_llama_rmsnorm,hf_gemma_rmsnorm,torch_rms_norm,eager_add_rmsnorm,eager_layernorm,torch_layer_norm_fp32"


def test_pytorch_baselines_pass_2000_cases_each(tmp_path):
    out = tmp_path / "r.jsonl"
    # accuracy gets --examples per dtype, the other checks a share: >= 2,000 cases per kernel
    proc = normgate_cli("run", "--kernels", BASELINES, "--examples", "1100", "--device", "cpu", "--workers", "2",
                        "--out", str(out))
    lines = [json.loads(ln) for ln in out.read_text().splitlines()]
    results = [ln for ln in lines if ln["type"] == "result"]
    bad = [ln for ln in results if ln["verdict"] in ("fail", "error")]
    assert not bad, "\n".join(f"{b['kernel']} {b['check']}: {b['reason']} {b.get('replay')}" for b in bad[:5])
    assert proc.returncode == 0, proc.stderr[-3000:]
    per_kernel = Counter(ln["kernel"] for ln in results)
    assert set(per_kernel) == set(BASELINES.split(","))
    assert min(per_kernel.values()) >= 2000, per_kernel
