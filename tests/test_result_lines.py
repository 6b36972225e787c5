"""Every writer of result and task lines builds them from one definition, and the loader reads what
each one writes: a line the report or the gate could not place would lose a failure."""

from __future__ import annotations

import json

from normgate import results
from normgate.pool import Options, Pool
from normgate.reports.load import parse_results
from normgate.runner import Task, not_run_lines, task_line


def _file(lines: list[dict]) -> list[str]:
    env = {"type": "env", "format": results.FORMAT, "device": "cpu"}
    return [json.dumps(ln) for ln in (env, *lines)]


def test_the_supervisor_and_the_runner_write_lines_the_loader_reads():
    task = Task("torch_rms_norm", "fp32", "accuracy", 4)
    pool = Pool(Options(), emit=lambda line: None)
    died = pool._error_line(task, None, "worker died (signal 9)", 1.5)
    not_run = not_run_lines(Task("torch_layer_norm", "bf16", "repeat", 2), "needs a GPU", "cpu")
    lines = [died, task_line(task, None, "error", 1.5), *not_run]
    for line in (died, not_run[0]):
        assert all(line.get(k) for k in results.RESULT_REQUIRED), line
    run = parse_results("lines.jsonl", _file(lines))
    verdicts = sorted((r["kernel"], r["verdict"]) for r in run.results)
    assert verdicts == [("torch_layer_norm", "error"), ("torch_rms_norm", "error")]


def test_a_task_line_says_how_the_task_ended():
    task = Task("k", "bf16", "repeat", 3)
    assert task_line(task, 7, "done", 0.12345) == {
        "type": "task", "task": "k/bf16/repeat", "kernel": "k", "check": "repeat", "dtype": "bf16",
        "cases": 7, "status": "done", "elapsed_s": 0.123}
    assert task_line(task, None, "error", 2.0, left_behind="a thread")["left_behind"] == "a thread"
