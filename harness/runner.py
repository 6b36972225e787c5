"""Running one task (a kernel, a dtype, a check) as a hypothesis property, in this process.

Hypothesis draws cases until one fails, then shrinks it to the smallest case that still fails and
replays it. Every passing case of the search becomes a result line as it runs; of the failing
ones only the minimal case does, with how many cases ran before the first failure and how many
shrink steps led to the minimal one.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hseed
from hypothesis.errors import Flaky

from . import candidates, checks
from .case import Case, ReplayKey
from .checks import CheckResult, Context
from .op import Profile, get_op


@dataclass(frozen=True)
class Task:
    kernel: str
    dtype: str
    check: str
    examples: int
    seed: int = 0

    @property
    def id(self) -> str:
        return f"{self.kernel}/{self.dtype}/{self.check}"

    def to_json(self) -> dict:
        return asdict(self)


def task_seed(task: Task) -> int:
    """Stable across processes and machines (unlike ``hash``)."""
    return int(hashlib.sha256(f"{task.seed}/{task.id}".encode()).hexdigest()[:12], 16)


def replay_command(kernel: str, check: str, case: Case, loads: tuple[str, ...], device: str) -> str:
    parts = ["normgate", "replay", str(ReplayKey(kernel, check, case))]
    for f in loads:
        parts += ["--load", f]
    if device != "cpu":
        parts += ["--device", device]
    return shlex.join(parts)


def result_line(task: Task, cand: candidates.Candidate, case: Case, res: CheckResult, seq: int,
                device: str, **extra) -> dict:
    line = {"type": "result", "kernel": cand.name, "op": cand.op, "variant": cand.variant.key(),
            "check": task.check, "dtype": task.dtype, "regime": case.x, "case": case.key(),
            "shape": list(case.shape), "verdict": res.verdict, "reason": res.reason}
    if res.errors:
        line["errors"] = res.errors
    if res.verdict != "pass":
        line["worst"] = res.worst
        line["replay"] = replay_command(cand.name, task.check, case, cand.loads, device)
    if res.notes:
        line["notes"] = res.notes
    if res.digest:
        line["digest"] = res.digest
    line.update(extra)
    line.update({"seq": seq, "task": task.id, "duration_s": round(res.duration_s, 5)})
    return line


class _Falsified(Exception):
    def __init__(self, case: Case, res: CheckResult):
        super().__init__(res.reason)
        self.case, self.res = case, res


def run_task(task: Task, ctx: Context, emit: Callable[[dict], None],
             on_case: Callable[[Case], None] | None = None) -> int:
    """Run one task; ``emit`` gets each result line. Returns the number of cases run."""
    cand = candidates.get(task.kernel)
    op = get_op(cand.op)
    check = checks.ALL[task.check]
    strategy = op.cases(cand, task.dtype, Profile.for_device(ctx.device))
    state = {"cases": 0, "seq": 0, "first": None, "shrinks": 0, "last": None}

    def prop(case: Case) -> None:
        if on_case is not None:
            on_case(case)
        res = check(cand, op, case, ctx)
        if state["first"] is None:
            state["cases"] += 1
        if res.failed:
            if state["first"] is None:
                state["first"] = state["cases"]
            else:
                state["shrinks"] += 1
            state["last"] = (case, res)
            raise _Falsified(case, res)
        if state["first"] is None:
            emit(result_line(task, cand, case, res, state["seq"], ctx.device))
            state["seq"] += 1

    test = settings(max_examples=task.examples, database=None, deadline=None, print_blob=False,
                    suppress_health_check=list(HealthCheck), report_multiple_bugs=False,
                    phases=(Phase.generate, Phase.shrink))(hseed(task_seed(task))(given(strategy)(prop)))

    def fail_line(case: Case, res: CheckResult, flaky: bool = False) -> dict:
        if flaky:
            res.reason = ("flaky: this case failed, then passed when replayed (non-deterministic); "
                          "first failure: " + res.reason)
        return result_line(task, cand, case, res, state["seq"], ctx.device,
                           examples=state["first"], shrinks=state["shrinks"])

    t0 = time.perf_counter()
    try:
        test()
    except _Falsified as f:
        emit(fail_line(f.case, f.res))
    except Flaky:
        if state["last"] is not None:
            emit(fail_line(*state["last"], flaky=True))
    except Exception as e:  # noqa: BLE001 - a harness-side error is still a result, never a lost run
        dummy = Case(cand.op, (1, 1), task.dtype)
        emit(result_line(task, cand, dummy, CheckResult("error", f"harness error: {e!r}",
                                                         duration_s=time.perf_counter() - t0),
                         state["seq"], ctx.device))
    return state["cases"]


def process_setup(device: str, threads: int | None = None) -> None:
    """Once per process that runs checks.

    On the CPU, one thread: PyTorch's CPU reductions split work by thread count, so bits (and the
    repeat check's digests) would otherwise depend on the machine and the number of workers."""
    if threads is None and device == "cpu":
        threads = 1
    if device == "cpu":
        # Triton kernels run on the CPU only under the interpreter; it must be on before they load.
        os.environ.setdefault("TRITON_INTERPRET", "1")
    import torch

    from . import memory

    memory.enable_uninitialized_fill()
    if threads:
        torch.set_num_threads(threads)


def interpreter_on() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
