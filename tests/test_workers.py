"""Scale-out: the same seed gives the same results whatever the number of workers, in-process
included; on CUDA, ``--workers auto`` is one worker per GPU, each pinned to its own GPU."""

import argparse
import io
import os

import pytest
from conftest import normgate_cli

from normgate import arguments, pool, results
from normgate.names import CHECKS


def test_results_do_not_depend_on_the_number_of_workers(tmp_path):
    common = ("run", "--kernels", "torch_rms_norm,eager_layernorm", "--dtypes", "fp32,bf16", "--examples", "4",
              "--seed", "11", "--device", "cpu")
    contents = {}
    for workers in ("0", "1", "2"):  # 2: at most one worker per core, and CI has two
        out = tmp_path / f"w{workers}.jsonl"
        proc = normgate_cli(*common, "--workers", workers, "--out", str(out))
        assert proc.returncode == 0, proc.stderr[-2000:]
        lines = results.read_lines(out)
        assert lines[0]["workers"] == int(workers)
        contents[workers] = results.content(lines)
    tasks = [ln for ln in contents["1"] if ln["type"] == "task"]
    assert len(tasks) == 2 * 2 * len(CHECKS)  # kernels x dtypes x checks: every check ran
    assert sum(ln["type"] == "result" for ln in contents["1"]) > len(tasks)
    assert contents["0"] == contents["1"] == contents["2"]


@pytest.mark.parametrize(("visible", "expected"), [
    (None, ["0", "1", "2", "0"]),  # all GPUs visible: 0..n-1 in turn
    ("2,3,5", ["2", "3", "5", "2"]),  # a subset given to the run: only those, never GPU 0
    ("GPU-aa,GPU-bb,GPU-cc", ["GPU-aa", "GPU-bb", "GPU-cc", "GPU-aa"]),
])
def test_each_worker_gets_one_of_the_visible_gpus(visible, expected):
    assert [pool.gpu_for(i, 3, visible) for i in range(4)] == expected


def test_spawned_workers_are_pinned_to_gpus_in_turn(monkeypatch):
    seen = []

    class FakePopen:
        def __init__(self, cmd, env, **kwargs):
            seen.append(env.get("CUDA_VISIBLE_DEVICES"))
            self.pid = -1
            self.stdin = io.BytesIO()  # the worker's key is written to its stdin

    monkeypatch.setattr(pool.subprocess, "Popen", FakePopen)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6")
    p = pool.Pool(pool.Options(device="cuda", workers=3, gpus=2), emit=lambda line: None)
    for i in range(3):
        wk = p._spawn(i)
        p.sel.unregister(wk.fd)
        os.close(wk.fd)
        os.unlink(wk.log)
    assert seen == ["4", "6", "4"]


@pytest.mark.parametrize(("device", "gpus", "expected"), [("cuda", 4, 4), ("cuda", 1, 1), ("cpu", 4, None)])
def test_auto_is_one_worker_per_gpu(monkeypatch, device, gpus, expected):
    monkeypatch.setattr(arguments, "gpu_count", lambda: gpus)
    n = arguments.worker_count(argparse.Namespace(workers="auto", device=device))
    assert n == (expected or max(1, os.cpu_count() or 1))
