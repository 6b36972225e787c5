"""The same case in a fresh process gives the same bits: two runs' repeat digests match, and a
kernel whose bits depend on the process (here through its pid, as a kernel choosing its
configuration by object address or hash order would) is told apart."""

import json

from conftest import normgate_cli

PROCESS_DEPENDENT = """
import os
import normgate
from normgate.kernels.baselines import torch_rms_norm

# per process, like a config picked by address: deterministic within a process, not across
_nudge = 1.0 + (os.getpid() % 4096 + 1) * 2.0**-22

normgate.register("process_dependent", lambda x, w, eps: torch_rms_norm(x * _nudge, w, eps), op="rmsnorm",
                  variant=normgate.RMSNormVariant(casting="gemma"), dtypes=("fp32",), eps_none=False)
"""


def _digests(path):
    return {ln["case"]: ln["digest"] for ln in map(json.loads, path.read_text().splitlines())
            if ln.get("check") == "repeat" and ln.get("verdict") == "pass"}


def _run(tmp_path, tag, *args):
    out = tmp_path / f"{tag}.jsonl"
    proc = normgate_cli("run", "--checks", "repeat", "--device", "cpu", "--seed", "5", "--out", str(out), *args)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return _digests(out)


def test_repeat_digests_match_across_processes(tmp_path):
    kernels = ("--kernels", "hf_llama_rmsnorm,eager_layernorm", "--examples", "80")
    a, b = _run(tmp_path, "a", *kernels), _run(tmp_path, "b", *kernels)
    assert len(a) >= 100 and len(set(a.values())) > 50
    assert a == b


def test_a_process_dependent_kernel_is_told_apart(tmp_path):
    f = tmp_path / "k.py"
    f.write_text(PROCESS_DEPENDENT)
    runs = [_run(tmp_path, f"p{i}", "--load", str(f), "--kernels", "process_dependent", "--examples", "40")
            for i in range(2)]
    # within each process every repeat agreed; across processes the bits differ
    assert runs[0] != runs[1]
