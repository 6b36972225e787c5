"""A run killed halfway (SIGKILL), resumed, interrupted again (Ctrl-C) and resumed to the end gives
the same results as a run that was never interrupted, and no finished task is run twice."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import normgate_cli

from normgate import cli, results

# A correct kernel that, while the file named by $GATE exists, stops on its second case (the
# first one is flushed): the run is then reliably halfway, with one task finished before it
# (workers take the accuracy tasks first, and eager_layernorm sorts first) and one unfinished,
# whose lines a resume must drop and redo.
GATED = """
import os
import time

import normgate
from normgate.kernels.baselines import torch_rms_norm

calls = 0


def gated(x, w, eps):
    global calls
    calls += 1
    while calls >= 2 and os.path.exists(os.environ["GATE"]):
        time.sleep(0.05)
    return torch_rms_norm(x, w, eps)


normgate.register("gated_rmsnorm", gated, op="rmsnorm", variant=normgate.RMSNormVariant(casting="gemma"),
                  dtypes=("fp32",))
"""


def _lines(path: Path) -> list[dict]:
    return results.read_lines(path, allow_truncated_tail=True)


def _start(args: list[str], gate: Path) -> subprocess.Popen:
    env = dict(os.environ, TRITON_INTERPRET="1", GATE=str(gate))
    # SIGINT back to its default: a shell's background job (a CI runner's, say) inherits it
    # ignored, and Python then never turns it into KeyboardInterrupt
    return subprocess.Popen([sys.executable, "-m", "normgate.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _inode(path: Path) -> int | None:
    return path.stat().st_ino if path.exists() else None


def _wait_blocked(out: Path, proc: subprocess.Popen, old_inode: int | None = None) -> None:
    """Until the gated kernel's first case is in the file (its second one is then waiting). A
    resumed run first rewrites the file (a new inode) without the unfinished task's lines."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if _inode(out) != old_inode and any(ln.get("kernel") == "gated_rmsnorm" for ln in _lines(out)):
            return
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        time.sleep(0.05)
    raise AssertionError("the run never reached the gated kernel")


def test_killed_interrupted_and_resumed_run_equals_an_uninterrupted_one(tmp_path, monkeypatch):
    kernel_file = tmp_path / "gated.py"
    kernel_file.write_text(GATED)
    gate = tmp_path / "gate"
    monkeypatch.setenv("GATE", str(gate))
    args = ["run", "--load", str(kernel_file), "--kernels", "eager_layernorm,gated_rmsnorm,torch_rms_norm",
            "--dtypes", "fp32", "--checks", "accuracy,repeat", "--examples", "6", "--seed", "3",
            "--device", "cpu", "--workers", "1"]
    whole = tmp_path / "whole.jsonl"
    proc = normgate_cli(*args[:-2], "--workers", "0", "--out", str(whole))  # in-process: the same cases
    assert proc.returncode == 0, proc.stderr[-2000:]

    # 1. SIGKILL halfway: what was flushed stays a valid, resumable file
    out = tmp_path / "r.jsonl"
    gate.touch()
    proc = _start([*args, "--out", str(out)], gate)
    _wait_blocked(out, proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    killed = _lines(out)
    done = {ln["task"] for ln in killed if ln["type"] == "task"}
    # a worker keeps to a kernel and dtype (scheduling.py): both of eager_layernorm's tasks ran
    # before the gated kernel's first
    assert done == {"eager_layernorm/fp32/accuracy", "eager_layernorm/fp32/repeat"}
    assert not any(ln["type"] == "summary" for ln in killed)
    finished_before = [ln for ln in killed if ln.get("task") in done]

    # 2. resumed, then Ctrl-C while the gated task runs again: a clean stop with a summary
    inode = _inode(out)
    proc = _start([*args, "--resume", str(out)], gate)
    _wait_blocked(out, proc, inode)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert "resuming" in err and "2 tasks already done, 4 to go" in err
    assert "interrupted (SIGINT)" in err and f"--resume {out}" in err and "Traceback" not in err
    stopped = _lines(out)
    assert stopped[-1]["type"] == "summary" and stopped[-1]["interrupted"] is True
    # finished work was kept as it was, not run again (its timings would differ)
    assert [ln for ln in stopped if ln.get("task") in done] == finished_before

    # an interrupted run never passes a gate, even against its own kernels' baseline
    baseline = tmp_path / "baseline.json"
    assert cli.main(["baseline", str(whole), "-o", str(baseline)]) == 0
    assert cli.main(["gate", str(out), "--baseline", str(baseline)]) == 1

    # 3. resumed to the end: the same content as the uninterrupted run, line for line
    gate.unlink()
    proc = normgate_cli(*args, "--resume", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "2 tasks already done, 4 to go" in proc.stderr
    final = results.read_lines(out)
    assert results.content(final) == results.content(results.read_lines(whole))
    assert [ln for ln in final if ln.get("task") in done] == finished_before
    assert json.loads(out.read_text().splitlines()[-1])["interrupted"] is False


def test_a_run_stopped_at_its_time_limit_keeps_its_results_and_exits_by_the_verdicts(tmp_path):
    kernel_file = tmp_path / "gated.py"
    kernel_file.write_text(GATED)
    gate = tmp_path / "gate"
    gate.touch()  # the gated kernel never finishes its task: only the time limit ends the run
    out = tmp_path / "r.jsonl"
    proc = _start(["run", "--load", str(kernel_file), "--kernels", "eager_layernorm,gated_rmsnorm",
                   "--dtypes", "fp32", "--checks", "accuracy", "--examples", "6", "--device", "cpu",
                   "--workers", "1", "--time-limit", "15", "--out", str(out)], gate)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]  # nothing failed: a budget spent is not an error
    assert "stopped at the time limit of 15 s" in err and f"--resume {out}" in err and "Traceback" not in err
    summary = _lines(out)[-1]
    assert summary["type"] == "summary" and summary["interrupted"] is True and summary["time_limit_s"] == 15
