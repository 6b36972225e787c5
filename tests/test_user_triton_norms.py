"""The user-style Triton fixtures (tests/fieldkernels) are correct: normgate's checks pass them."""

import json
from pathlib import Path

from conftest import normgate_cli

FIXTURES = Path(__file__).parent / "fieldkernels" / "user_triton_norms.py"


def test_user_style_triton_rmsnorm_and_layernorm_pass_every_check_under_the_interpreter(tmp_path):
    out = tmp_path / "r.jsonl"
    proc = normgate_cli("run", "--load", str(FIXTURES), "--kernels", "user_triton_*", "--examples", "6",
                        "--device", "cpu", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(ln) for ln in out.read_text().splitlines()]
    results = [ln for ln in lines if ln["type"] == "result"]
    assert {ln["kernel"] for ln in results} == {"user_triton_rmsnorm", "user_triton_layernorm"}
    assert {ln["check"] for ln in results} == {"accuracy", "contract", "repeat", "poisoned", "batch_invariance",
                                              "identities"}
    assert {ln["dtype"] for ln in results} == {"fp32", "bf16", "fp16", "bf16/fp32"}
    assert sum(ln["verdict"] == "pass" for ln in results) >= 60
