"""The command line as a user meets it: listing, exit codes, clear errors, replay, the README."""

import json
import re
from pathlib import Path

from conftest import normgate_cli

ROOT = Path(__file__).parent.parent
EXAMPLE = ROOT / "docs" / "examples" / "my_kernels.py"


def test_readme_example_is_the_tested_file_and_passes(tmp_path):
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"`docs/examples/my_kernels.py`, run by the test suite:\n\n```python\n(.*?)```", readme, re.S)
    assert block and block.group(1) == EXAMPLE.read_text()
    out = tmp_path / "r.jsonl"
    proc = normgate_cli("run", "--load", str(EXAMPLE), "--kernels", "my_rmsnorm", "--examples", "40",
                        "--device", "cpu", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [json.loads(ln) for ln in out.read_text().splitlines()]
    assert lines[0]["type"] == "env" and lines[-1]["type"] == "summary"
    assert {ln["kernel"] for ln in lines if ln["type"] == "result"} == {"my_rmsnorm"}


def test_list_shows_builtins_and_loaded():
    proc = normgate_cli("list", "--json", "--device", "cpu", "--load", str(EXAMPLE))
    rows = {r["kernel"]: r for r in json.loads(proc.stdout)}
    assert {"hf_llama_rmsnorm", "torch_rms_norm", "eager_layernorm", "my_rmsnorm"} <= set(rows)
    assert rows["hf_llama_rmsnorm"]["variant"] == "casting=llama,offset=0,residual=0,weight=1,out=promote"


def test_usage_errors_exit_2_with_a_message(tmp_path):
    proc = normgate_cli("run", "--kernels", "no_such_kernel", "--device", "cpu", "--out", str(tmp_path / "r"))
    assert proc.returncode == 2 and "unknown kernel 'no_such_kernel'" in proc.stderr
    assert "Traceback" not in proc.stderr
    bad = tmp_path / "bad.py"
    bad.write_text("import normgate\nraise RuntimeError('boom in user file')\n")
    proc = normgate_cli("run", "--load", str(bad), "--device", "cpu", "--out", str(tmp_path / "r"))
    assert proc.returncode == 2 and "boom in user file" in proc.stderr and "failed to import" in proc.stderr
    proc = normgate_cli("run", "--kernels", "compile_layernorm", "--device", "cpu", "--out", str(tmp_path / "r"))
    assert proc.returncode == 2 and "runs on cuda only" in proc.stderr
    proc = normgate_cli("run", "--dtypes", "fp8", "--device", "cpu", "--out", str(tmp_path / "r"))
    assert proc.returncode == 2 and "unknown dtype" in proc.stderr
    bad_dtype = tmp_path / "bad_dtype.py"
    bad_dtype.write_text("import normgate\nnormgate.register('x', lambda x, w, e: x, op='rmsnorm', "
                         "variant=normgate.RMSNormVariant(), dtypes=('bf8',))\n")
    proc = normgate_cli("list", "--load", str(bad_dtype), "--device", "cpu")
    assert proc.returncode == 2 and "declares dtype 'bf8'" in proc.stderr
    proc = normgate_cli("replay", "garbage", "--device", "cpu")
    assert proc.returncode == 2 and "malformed replay key" in proc.stderr


def test_replay_prints_both_tensors_worst_elements():
    key = "hf_gemma_rmsnorm@accuracy:rmsnorm,3x5,bf16,x=tiny,dy=huge,w=normal,eps=1e-05,contiguous,seed=7"
    proc = normgate_cli("replay", key, "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    assert "verdict: pass" in proc.stdout
    for name in ("y:", "dx:", "dweight:"):
        assert name in proc.stdout
    assert "expected" in proc.stdout and "got" in proc.stdout


def test_a_glob_takes_what_the_device_runs_a_name_must_run(tmp_path):
    out = tmp_path / "r.jsonl"
    # torch_layer_norm and torch_layer_norm_plain are CUDA-only; torch_layer_norm_fp32 runs on the CPU
    proc = normgate_cli("run", "--kernels", "torch_layer_norm*", "--checks", "contract", "--examples", "1",
                        "--device", "cpu", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    kernels = {json.loads(ln)["kernel"] for ln in out.read_text().splitlines() if '"type": "task"' in ln}
    assert kernels == {"torch_layer_norm_fp32"}
    proc = normgate_cli("run", "--kernels", "torch_layer_norm", "--device", "cpu", "--out", str(out))
    assert proc.returncode == 2 and "runs on cuda only" in proc.stderr
