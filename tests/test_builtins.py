"""Every built-in correct candidate that runs on the CPU passes every check, with zero failures,
over at least 2,000 generated cases each."""

import json
from collections import Counter

from conftest import normgate_cli

# Every budget is per kernel and dtype: the kernels declaring five dtypes reach 2,000 cases with about a
# fifth of the examples that the fp32-only one needs (one --examples for all would run those five
# at 11,000+ cases each, most of this test's time, and prove nothing more).
FIVE_DTYPES = "hf_llama_rmsnorm,hf_gemma_rmsnorm,torch_rms_norm,eager_layernorm"
THREE_DTYPES = "eager_add_rmsnorm"
ONE_DTYPE = "torch_layer_norm_fp32"
BASELINES = f"{FIVE_DTYPES},{THREE_DTYPES},{ONE_DTYPE}"


def test_pytorch_baselines_pass_2000_cases_each(tmp_path):
    results = []
    # accuracy gets --examples per dtype, the other checks a share: >= 2,000 cases per kernel
    for kernels, examples in ((FIVE_DTYPES, "250"), (THREE_DTYPES, "420"), (ONE_DTYPE, "1300")):
        out = tmp_path / f"{examples}.jsonl"
        proc = normgate_cli("run", "--kernels", kernels, "--examples", examples, "--device", "cpu", "--workers",
                            "2", "--out", str(out))
        lines = [json.loads(ln) for ln in out.read_text().splitlines()]
        mine = [ln for ln in lines if ln["type"] == "result"]
        bad = [ln for ln in mine if ln["verdict"] in ("fail", "error")]
        assert not bad, "\n".join(f"{b['kernel']} {b['check']}: {b['reason']} {b.get('replay')}" for b in bad[:5])
        assert proc.returncode == 0, proc.stderr[-3000:]
        results += mine
    per_kernel = Counter(ln["kernel"] for ln in results)
    assert set(per_kernel) == set(BASELINES.split(","))
    assert min(per_kernel.values()) >= 2000, per_kernel
