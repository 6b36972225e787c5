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


def test_no_case_is_recorded_twice(tmp_path):
    """Hypothesis can reach one case through different draws (most often a task's minimal first
    case); each case of a task is checked and recorded once."""
    out = tmp_path / "r.jsonl"
    proc = normgate_cli("run", "--kernels", "hf_llama_rmsnorm", "--checks", "accuracy", "--examples", "20",
                        "--device", "cpu", "--workers", "0", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    keys = [(ln["task"], ln["case"]) for ln in map(json.loads, out.read_text().splitlines())
            if ln["type"] == "result"]
    assert len(keys) > 20 and len(keys) == len(set(keys))


def test_argument_errors_are_answered_before_torch_is_imported(tmp_path):
    """A mistyped argument is answered at once: torch and Triton take seconds to import (a minute
    on a loaded machine), so nothing that can be checked without them waits for them. A torch
    that cannot be imported proves they were not."""
    import os
    import subprocess
    import sys

    (tmp_path / "torch.py").write_text("raise ImportError('torch was imported')\n")
    env = dict(os.environ, PYTHONPATH=str(tmp_path))

    def run(*args):
        return subprocess.run([sys.executable, "-m", "normgate.cli", *args], capture_output=True, text=True,
                              env=env, timeout=60)

    cases = {("run", "--checks", "acuracy"): "did you mean 'accuracy'",
             ("run", "--dtypes", "bf16/fp8"): "bf16/fp32",  # the mixed forms are named
             ("run", "--examples", "0"): "must be greater than 0",
             ("run", "--workers", "many"): "a number or 'auto'",
             ("run", "--load", str(tmp_path / "missing.py")): "no such file",
             ("run", "--bogus-flag"): "normgate run: error: unrecognized arguments: --bogus-flag"}
    for args, message in cases.items():
        proc = run(*args)
        assert proc.returncode == 2 and message in proc.stderr, (args, proc.stderr)
        assert "torch was imported" not in proc.stderr and "Traceback" not in proc.stderr


def test_a_misspelled_kernel_gets_a_suggestion(tmp_path):
    proc = normgate_cli("run", "--kernels", "hf_lama_rmsnorm", "--device", "cpu", "--out", str(tmp_path / "r"))
    assert proc.returncode == 2 and "did you mean 'hf_llama_rmsnorm'" in proc.stderr


def test_replaying_a_range_case_labels_it_a_range_limit():
    """Past the variant's domain an element over its bound is a range limit (exit 0), and the
    printout says so instead of FAIL."""
    key = "hf_llama_rmsnorm@accuracy:rmsnorm,1x127x1,fp32,x=beyond,dy=normal,w=large,eps=0.1,strided,seed=14548"
    proc = normgate_cli("replay", key, "--device", "cpu")
    assert proc.returncode == 0, proc.stderr
    assert "verdict: range" in proc.stdout and "(beyond the claimed domain)" in proc.stdout
    assert "FAIL" not in proc.stdout


def test_a_missing_piece_is_named_once_and_its_tasks_are_errors_without_running(tmp_path):
    """Triton's interpreter needs numpy: without it, the run says so once, with the fix, records
    each Triton task as one error (never a pass), runs the others, and the report says it at the
    top."""
    import os
    import subprocess
    import sys

    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "numpy.py").write_text("raise ModuleNotFoundError(\"No module named 'numpy'\", name='numpy')\n")
    out, report = tmp_path / "r.jsonl", tmp_path / "r.html"
    env = dict(os.environ, PYTHONPATH=str(hide), TRITON_INTERPRET="1")
    proc = subprocess.run([sys.executable, "-m", "normgate.cli", "run", "--device", "cpu", "--kernels",
                           "triton_rmsnorm_gemma,hf_llama_rmsnorm", "--dtypes", "fp32", "--checks", "accuracy,contract",
                           "--examples", "3", "--workers", "0", "--out", str(out), "--report", str(report)],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert proc.stderr.count("Triton's CPU interpreter (TRITON_INTERPRET=1) is unavailable: ") == 1, proc.stderr
    assert "pip install numpy" in proc.stderr
    lines = [json.loads(ln) for ln in out.read_text().splitlines()]
    env_line = lines[0]
    assert env_line["unavailable"][0]["kernels"] == ["triton_rmsnorm_gemma"]
    triton = [ln for ln in lines if ln["type"] == "result" and ln["kernel"] == "triton_rmsnorm_gemma"]
    assert len(triton) == 2 and all(ln["verdict"] == "error" and ln["reason"].startswith("not run") for ln in triton)
    others = [ln for ln in lines if ln["type"] == "result" and ln["kernel"] == "hf_llama_rmsnorm"]
    assert others and all(ln["verdict"] == "pass" for ln in others)
    assert "pip install numpy" in report.read_text()
