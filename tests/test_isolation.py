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

import pytest
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


# ----------------------------------------------------------------------------- blame

INNOCENT = "torch_rms_norm"


def _run_with_innocent(tmp_path, broken_file: str, broken: str, checks: str = "accuracy,contract,repeat",
                       examples: str = "60", env: dict | None = None):
    out = tmp_path / "r.jsonl"
    argv = [sys.executable, "-m", "normgate.cli", "run", "--load", str(BROKEN / broken_file), "--kernels",
            f"{broken},{INNOCENT}", "--dtypes", "fp32", "--checks", checks, "--examples", examples,
            "--timeout", "60", "--workers", "1", "--device", "cpu", "--out", str(out)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, TRITON_INTERPRET="1", **(env or {})))
    lines = results.read_lines(out)
    res = [ln for ln in lines if ln["type"] == "result"]
    return proc, lines, res


@pytest.mark.parametrize(("broken_file", "broken", "reason"), [
    ("late_alarm.py", "broken_late_alarm", "SIGALRM"),
    ("thread_exit.py", "broken_thread_exit", "exit code 7"),
    ("atexit_crash.py", "broken_atexit", "exit code 9"),
])
def test_a_death_after_the_task_reported_done_is_blamed_on_that_task(tmp_path, broken_file, broken, reason):
    """The broken kernel's task runs first in the one worker; its worker dies after the task
    reported done (a timer, a thread, an exit handler). The next tasks are another candidate's:
    they must pass, and the death must be this kernel's error."""
    proc, lines, res = _run_with_innocent(tmp_path, broken_file, broken)
    assert proc.returncode == 1, proc.stderr[-3000:]
    innocent = [ln for ln in res if ln["kernel"] == INNOCENT]
    assert innocent and {ln["verdict"] for ln in innocent} == {"pass"}, [
        ln["reason"] for ln in innocent if ln["verdict"] != "pass"]
    errors = [ln for ln in res if ln["verdict"] == "error"]
    # one error per task of the broken kernel at most (each of its tasks may kill a worker)
    assert errors and {e["kernel"] for e in errors} == {broken}, errors
    assert len({e["task"] for e in errors}) == len(errors)
    assert all(reason in e["reason"] for e in errors), [e["reason"] for e in errors]
    # one consistent run: the gate can judge it (a rerun task left no duplicate line)
    from normgate.reports.load import load_results, validate_run

    validate_run(load_results(str(tmp_path / "r.jsonl")))


def test_processes_a_kernel_starts_end_with_its_worker(tmp_path):
    pids = tmp_path / "pids"
    proc, lines, res = _run_with_innocent(tmp_path, "orphan.py", "broken_orphan", checks="accuracy",
                                          examples="4", env={"NORMGATE_ORPHAN_PID": str(pids)})
    assert proc.returncode == 1, proc.stderr[-3000:]
    started = [int(p) for p in pids.read_text().split()]
    assert started
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and any(map(_alive, started)):
        time.sleep(0.1)
    assert not any(map(_alive, started)), "a process the kernel started outlived its worker"


def test_forged_events_are_not_taken_for_results(tmp_path):
    """An always-wrong kernel writes well-formed "pass" lines and a "done" to the event pipe."""
    proc, lines, res = _run_with_innocent(tmp_path, "forger.py", "broken_forger", checks="accuracy",
                                          examples="4")
    assert proc.returncode == 1, proc.stderr[-3000:]
    mine = [ln for ln in res if ln["kernel"] == "broken_forger"]
    assert [ln["verdict"] for ln in mine] == ["error"], mine
    assert "did not sign" in mine[0]["reason"]
    assert {ln["verdict"] for ln in res if ln["kernel"] == INNOCENT} == {"pass"}


def test_a_thread_the_task_left_running_counts_but_a_foreign_one_does_not():
    """On CUDA, autograd's engine thread calls a Python backward from C++ and stays for the life of
    the process: it must not retire the worker after every task. A thread the kernel started must."""
    import _thread
    import threading

    from normgate import worker

    before = {t.ident for t in threading.enumerate()}
    handlers = worker._exit_handlers()
    started, release = threading.Event(), threading.Event()

    def foreign() -> None:
        threading.current_thread()  # registers it as a _DummyThread, as a C++ thread calling Python is
        started.set()
        release.wait()

    _thread.start_new_thread(foreign, ())
    assert started.wait(10)
    try:
        assert worker._leftovers(before, handlers, "cpu") == ""
        kernels_own = threading.Thread(target=release.wait, name="kernels-own", daemon=True)
        kernels_own.start()
        assert "1 thread(s) still running (kernels-own)" in worker._leftovers(before, handlers, "cpu")
    finally:
        release.set()


def test_what_a_task_leaves_behind_is_in_its_task_line_and_the_worker_goes_on(tmp_path):
    """Libraries leave a thread or exit handlers once per process: replacing the worker after each
    such task made every next task pay the start-up and warm-up again."""
    proc, lines, res = _run_with_innocent(tmp_path, "thread_lingers.py", "broken_thread_lingers",
                                          checks="accuracy,contract", examples="4")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert {ln["verdict"] for ln in res} == {"pass"}
    tasks = [ln for ln in lines if ln["type"] == "task"]
    left = [t for t in tasks if "left_behind" in t]
    # the thread starts once per process: one task left it, in the one worker of the run
    assert len(left) == 1 and left[0]["kernel"] == "broken_thread_lingers", tasks
    assert "1 thread(s) still running (lingering)" in left[0]["left_behind"]
    assert not any("worker_replaced" in t for t in tasks) and "was replaced" not in proc.stderr
