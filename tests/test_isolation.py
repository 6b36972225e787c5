"""Deliberately broken candidates (tests/broken/) in one run with correct ones: each breakage is an
``error`` result with its reason and replay command, the correct kernels still pass, and the
results file is complete."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import normgate_cli

from normgate import results

BROKEN = Path(__file__).parent / "broken"

#: kernel -> (its file, what its error line must say)
EXPECTED = {
    "broken_exit": ("exit.py", "worker died (exit code 3) on case"),
    "broken_hang": ("hang.py", "timed out: one case ran longer than 5s"),
    "broken_memory_error": ("memory_error.py", "out of memory: MemoryError"),
    "broken_oom": ("oom.py", "out of memory: RuntimeError"),
    "broken_hoard": ("hoard.py", "can't allocate memory"),
    "broken_raises": ("raises.py", "ValueError: broken_raises: cannot handle shape"),
    "broken_segfault": ("segfault.py", "worker died (killed by SIGSEGV) on case"),
    "broken_wrong_shape": ("wrong_shape.py", "shape"),
    "broken_sticky": ("sticky_error.py", "the device was unusable after this case"),
}
CORRECT = ("eager_layernorm", "torch_rms_norm")


def test_each_breakage_is_an_error_and_the_rest_of_the_run_goes_on(tmp_path):
    out = tmp_path / "r.jsonl"
    loads = [arg for f, _ in EXPECTED.values() for arg in ("--load", str(BROKEN / f))]
    # one worker: the correct kernels (sorted after broken_*) run in the slot every crash emptied,
    # after broken_sticky broke its whole process, so they pass only if the worker was replaced
    proc = normgate_cli("run", *loads, "--kernels", ",".join([*EXPECTED, *CORRECT]), "--dtypes", "fp32",
                        "--checks", "accuracy", "--examples", "4", "--timeout", "5", "--workers", "1",
                        "--device", "cpu", "--out", str(out), timeout=300)
    assert proc.returncode == 1, proc.stderr[-3000:]  # a kernel errored: never green
    assert "Traceback" not in proc.stderr
    lines = results.read_lines(out)  # complete: every line parses, nothing truncated
    assert lines[0]["type"] == "env" and lines[-1]["type"] == "summary"
    assert lines[-1]["interrupted"] is False
    res = [ln for ln in lines if ln["type"] == "result"]
    tasks = [ln["task"] for ln in lines if ln["type"] == "task"]
    assert sorted(tasks) == sorted(f"{k}/fp32/accuracy" for k in [*EXPECTED, *CORRECT])
    for kernel, (fname, reason) in EXPECTED.items():
        mine = [ln for ln in res if ln["kernel"] == kernel]
        errors = [ln for ln in mine if ln["verdict"] == "error"]
        assert len(errors) == 1, (kernel, mine)
        assert reason in errors[0]["reason"], (kernel, errors[0]["reason"])
        assert errors[0]["replay"].startswith(f"normgate replay {kernel}@accuracy:rmsnorm,")
        assert errors[0]["replay"].endswith(f"--load {BROKEN / fname}")
        assert errors[0]["case"] and errors[0]["variant"]
        # the first case (1x1) is one each of them gets right: lines before the crash are kept
        assert [ln["verdict"] for ln in mine].count("pass") >= 1, kernel
    for kernel in CORRECT:
        verdicts = [ln["verdict"] for ln in res if ln["kernel"] == kernel]
        assert verdicts and set(verdicts) == {"pass"}, (kernel, verdicts)
    summary = lines[-1]
    assert summary["error"] == len(EXPECTED) and summary["cases"] == len(res)
    assert summary["pass"] == sum(ln["verdict"] == "pass" for ln in res)


def _children(pid: int) -> list[int]:
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_hung_worker_dies_with_its_supervisor(tmp_path):
    """SIGKILL of the supervisor (an OOM killer, a cancelled CI job) must not leave a hung kernel
    running for ever: its worker runs in a session of its own, so it must end itself."""
    out = tmp_path / "r.jsonl"
    env = dict(os.environ, TRITON_INTERPRET="1")
    proc = subprocess.Popen([sys.executable, "-m", "normgate.cli", "run", "--load", str(BROKEN / "hang.py"),
                             "--kernels", "broken_hang", "--dtypes", "fp32", "--checks", "accuracy",
                             "--examples", "4", "--device", "cpu", "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (out.exists() and '"verdict": "pass"' in out.read_text()):
            time.sleep(0.1)  # the first case passed: the worker is now in the hanging one
        workers = _children(proc.pid)
        assert workers, "no worker process found"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(map(_alive, workers)):
            time.sleep(0.1)
        assert not any(map(_alive, workers)), "a worker outlived its supervisor"
    finally:
        if proc.poll() is None:
            proc.kill()
    # what was flushed before the kill is a valid (unfinished) results file
    lines = results.read_lines(out, allow_truncated_tail=True)
    assert lines[0]["type"] == "env" and not any(ln["type"] == "summary" for ln in lines)
    assert json.loads(out.read_text().splitlines()[1])["verdict"] == "pass"
