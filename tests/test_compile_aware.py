"""Compile-aware cases: a task's few widths, work ordered by check, compile time counted apart."""

import json
import os
import subprocess
import sys
import textwrap

from normgate import compiletime
from normgate.checks import Context
from normgate.op import CPU_PROFILE, GPU_PROFILE
from normgate.properties import strategies as S
from normgate.runner import Task, run_task, width_seed
from normgate.scheduling import TaskQueue, schedule

CPU = Context(device="cpu")


def _widths(kernel: str, dtype: str, check: str, examples: int) -> set[int]:
    lines: list[dict] = []
    run_task(Task(kernel, dtype, check, examples), CPU, lines.append)
    return {ln["shape"][-1] for ln in lines if ln["type"] == "result" and ln.get("shape")}


def test_a_task_draws_few_widths_and_every_check_of_a_kernel_and_dtype_the_same_ones():
    # before: a new width almost every case (40 cases gave ~30 widths), so a kernel with
    # BLOCK = next_power_of_2(N) compiled a binary per case
    acc = _widths("torch_rms_norm", "fp32", "accuracy", 40)
    contract = _widths("torch_rms_norm", "fp32", "contract", 15)
    palette = {n for group in S.widths(CPU_PROFILE, width_seed(Task("torch_rms_norm", "fp32", "accuracy", 40)))
               for n in group}
    assert len(palette) <= 6
    # a few boundary widths of the kernel's declarations may be drawn beside the palette's
    assert len((acc | contract) - palette) <= 3, (acc, contract, palette)
    assert len(acc & palette) >= 4  # the search still spreads over the widths


def test_every_palette_covers_one_odd_non_power_of_two_and_past_a_block():
    for profile in (CPU_PROFILE, GPU_PROFILE):
        for seed in range(200):
            small, mid, big = S.widths(profile, seed)
            ns = small + mid + big
            assert 1 in small
            assert any(n % 2 and n > 1 for n in small) and any(n % 2 for n in mid)
            assert any(n & (n - 1) and n % 16 == 0 for n in mid)  # a multiple of 16, no power of two
            assert all(1 <= n <= profile.max_n for n in small + mid)
            assert big[0] > profile.max_n and big[0] in profile.big_n
            assert len(set(ns)) <= 6


def test_widths_depend_on_kernel_dtype_and_seed_not_on_the_check():
    base = Task("k", "bf16", "accuracy", 10, seed=3)
    assert width_seed(base) == width_seed(Task("k", "bf16", "repeat", 2, seed=3))
    assert width_seed(base) != width_seed(Task("k", "fp16", "accuracy", 10, seed=3))
    assert width_seed(base) != width_seed(Task("k", "bf16", "accuracy", 10, seed=4))


def test_work_is_scheduled_by_check_accuracy_first():
    checks = ("accuracy", "contract", "repeat", "poisoned", "batch_invariance")
    tasks = [Task(k, d, c, 1) for k in ("a", "b") for d in ("fp32", "bf16") for c in checks]
    order = schedule(tasks)
    assert sorted(order, key=tasks.index) == tasks  # the same tasks
    assert [t.check for t in order] == [c for c in checks for _ in range(4)]
    assert [(t.kernel, t.dtype) for t in order[:4]] == [("a", "fp32"), ("a", "bf16"), ("b", "fp32"), ("b", "bf16")]


def _tasks(kernels: str, dtypes=("fp32", "bf16"), checks=("accuracy", "repeat", "poisoned")) -> list[Task]:
    return [Task(k, d, c, 1) for k in kernels for d in dtypes for c in checks]


def test_a_worker_keeps_to_the_kernel_and_dtype_it_holds_warm():
    queue = TaskQueue(_tasks("ab"))
    mine = [queue.take([("a", "bf16")], {("a", "bf16"): 1}) for _ in range(3)]
    assert [(t.kernel, t.dtype, t.check) for t in mine] == [("a", "bf16", c)
                                                          for c in ("accuracy", "repeat", "poisoned")]
    # that pair done: a kernel nobody has started comes first (breadth), then another dtype of the
    # kernel it has warm, before a dtype of a kernel another worker started
    assert queue.take([("a", "bf16")], {("a", "bf16"): 1}).kernel == "b"
    assert queue.take([("a", "bf16")], {("a", "bf16"): 1, ("b", "fp32"): 1}).dtype == "fp32"


def test_every_kernel_is_started_before_any_kernel_gets_a_second_dtype():
    queue = TaskQueue(_tasks("abc", checks=("accuracy",)))
    first = queue.take([], {})
    held = {(first.kernel, first.dtype): 1}
    second = queue.take([], held)  # a second worker
    held[(second.kernel, second.dtype)] = 1
    third = queue.take([(first.kernel, first.dtype)], held)  # the first, done with its pair
    assert [(t.kernel, t.dtype) for t in (first, second, third)] == [("a", "fp32"), ("b", "fp32"), ("c", "fp32")]
    held[(third.kernel, third.dtype)] = 1
    # every kernel started: another dtype of one it has warm (the first such pair), before b's
    nxt = queue.take([(first.kernel, first.dtype), (third.kernel, third.dtype)], held)
    assert (nxt.kernel, nxt.dtype) == ("a", "bf16")


def test_a_cold_worker_takes_a_pair_nobody_holds_before_sharing_one():
    queue = TaskQueue(_tasks("ab", dtypes=("fp32",)))
    assert queue.take([], {("a", "fp32"): 1}).kernel == "b"
    # all held: a share of the pair with the most work per holder, while it has enough to split
    assert queue.take([], {("a", "fp32"): 1, ("b", "fp32"): 1}).kernel == "a"
    rest = TaskQueue(_tasks("a", dtypes=("fp32",), checks=("accuracy", "repeat")))  # two tasks, one holder
    assert rest.take([], {("a", "fp32"): 1}).kernel == "a"
    assert rest.take([], {("a", "fp32"): 1}) is None  # one left: its holder takes it next
    assert rest.take([("a", "fp32")], {("a", "fp32"): 1}).kernel == "a" and not rest


def _python(code: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, TRITON_INTERPRET="0")
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env,
                          timeout=600)


def test_the_compile_clock_reads_tritons_jit_hooks_and_keeps_hooks_already_there():
    proc = _python("""
        import time, triton
        seen = []
        def theirs(**kw):
            seen.append(kw["key"])
            return None
        triton.knobs.runtime.jit_post_compile_hook = theirs
        from normgate import compiletime
        print(compiletime.install())
        rt = triton.knobs.runtime
        for key in (1, 2):
            assert rt.jit_cache_hook(key=key) is None  # None: Triton goes on and compiles
            time.sleep(0.05)
            rt.jit_post_compile_hook(key=key)
        r = compiletime.reading()
        print(r.compiles, round(r.seconds, 1), seen)
    """)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split("\n")[:2] == ["triton.knobs", "2 0.1 [1, 2]"]


def test_without_hooks_the_clock_is_unknown_not_zero():
    proc = _python("""
        import sys, types
        sys.modules["triton"] = types.ModuleType("triton")  # a Triton with neither kind of hook
        sys.modules["triton.runtime"] = types.ModuleType("triton.runtime")
        jit = types.ModuleType("triton.runtime.jit")
        jit.JITFunction = type("JITFunction", (), {})
        sys.modules["triton.runtime.jit"] = jit
        from normgate import compiletime
        print(compiletime.install(), compiletime.known())
    """)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "unknown False"
    s = compiletime.split([{"type": "env", "compile_clock": "unknown", "interpreter": False},
                           {"type": "task", "task": "t", "elapsed_s": 4.0}])
    assert s.compile_s is None and "unknown" in compiletime.describe(s)


COMPILING_KERNEL = """
import time

import torch
import triton

import normgate


@normgate.register("slow_to_compile", op="rmsnorm", variant=normgate.RMSNormVariant(casting="gemma"),
                   dtypes=("fp32",), devices=("cpu",))
def slow_to_compile(x, weight, eps):
    # what a JIT kernel does on a binary it has not built: Triton's hooks around a compile
    key = (x.shape[-1], x.stride(0) % 16 == 0)
    if key not in BUILT:
        BUILT.add(key)
        triton.knobs.runtime.jit_cache_hook(key=key)
        time.sleep(0.2)
        triton.knobs.runtime.jit_post_compile_hook(key=key)
    return torch.nn.functional.rms_norm(x, (x.shape[-1],), weight, eps)


BUILT = set()
"""


def test_results_carry_compile_time_and_the_run_says_where_the_time_went(tmp_path):
    kernel = tmp_path / "slow.py"
    kernel.write_text(COMPILING_KERNEL)
    out = tmp_path / "r.jsonl"
    env = dict(os.environ, TRITON_INTERPRET="0")
    proc = subprocess.run([sys.executable, "-m", "normgate.cli", "run", "--load", str(kernel), "--kernels",
                           "slow_to_compile", "--checks", "accuracy,contract", "--examples", "12", "--device", "cpu",
                           "--out", str(out)], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [json.loads(ln) for ln in out.read_text().splitlines()]
    assert lines[0]["compile_clock"] == "triton.knobs" and lines[0]["triton_cache_dir"]
    results = [ln for ln in lines if ln["type"] == "result"]
    built = sum(ln.get("compiles", 0) for ln in results)
    # one worker: each (width, stride class) is compiled once: at most 6 widths x 2 layouts for 15
    # cases, mostly by accuracy, which runs first; contract reuses what it built
    assert 1 <= built <= 12
    by_check = {c: sum(ln.get("compiles", 0) for ln in results if ln["check"] == c) for c in ("accuracy", "contract")}
    assert by_check["accuracy"] > by_check["contract"]
    s = compiletime.split(lines)
    assert abs(s.compile_s - 0.2 * built) < 0.05 * built + 0.05
    assert "was Triton compiling" in proc.stderr and f"{built} binaries" in proc.stderr
