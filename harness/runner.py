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

from . import candidates, checks, compiletime, results, sanitizer
from .case import Case, ReplayKey
from .checks import CheckResult, Context
from .gpushare import GPU_MEMORY_SHARED, shares_a_gpu, workers_per_gpu
from .gpushare import WORKERS_PER_GPU_ENV as WORKERS_PER_GPU_ENV
from .gpushare import beyond_the_share as beyond_the_share
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


def width_seed(task: Task) -> int:
    """The seed of a task's row widths: the run's seed, the kernel and the dtype, not the check, so
    that every check of a kernel and dtype draws the same few widths and reuses the binaries a
    JIT-compiled kernel built for them (Profile.widths_seed)."""
    return int(hashlib.sha256(f"{task.seed}/{task.kernel}/{task.dtype}".encode()).hexdigest()[:12], 16)


def replay_command(kernel: str, check: str, case: Case, loads: tuple[str, ...], device: str) -> str:
    parts = ["normgate", "replay", str(ReplayKey(kernel, check, case))]
    for f in loads:
        parts += ["--load", f]
    if device != "cpu":
        parts += ["--device", device]
    return shlex.join(parts)


def result_line(task: Task, cand: candidates.Candidate, case: Case, res: CheckResult, seq: int,
                device: str, **extra) -> results.ResultLine:
    line = results.result_record(kernel=cand.name, op=cand.op, variant=cand.variant.key(), check=task.check,
                                 dtype=task.dtype, regime=case.regime, case=case.key(), shape=list(case.shape),
                                 verdict=res.verdict, reason=res.reason)
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


def task_line(task: Task, cases: int | None, status: str, elapsed_s: float, **extra) -> results.TaskLine:
    """A task's closing line (docs/results-format.md): how many cases it ran, and whether it ended
    ``done`` or in an ``error`` (its worker died or hung: ``cases`` is then unknown, None)."""
    return results.TaskLine(type="task", task=task.id, kernel=task.kernel, check=task.check, dtype=task.dtype,
                            cases=cases, status=status, elapsed_s=round(elapsed_s, 3), **extra)


def not_run_lines(task: Task, reason: str, device: str) -> list[dict]:
    """The lines of a task that could not run at all (a piece its kernel needs is missing): one
    ``error`` result, so that it is never mistaken for a pass, and its task line."""
    cand = candidates.get(task.kernel)
    line = result_line(task, cand, Case(cand.op, (1, 1), task.dtype), CheckResult("error", reason), 0, device)
    line.pop("replay", None)  # no case ran: there is nothing to replay
    line["not_run"] = True
    return [line, task_line(task, 0, "done", 0.0)]


class _Falsified(Exception):
    def __init__(self, case: Case, res: CheckResult):
        super().__init__(res.reason)
        self.case, self.res = case, res


#: what CUDA reports for errors that leave the context unusable: every later call in the process
#: fails with the same error, so the process (a worker) must be replaced
STICKY_ERRORS = ("illegal memory access", "illegal address", "device-side assert", "unspecified launch failure",
                 "misaligned address", "illegal instruction", "uncorrectable ecc", "launch timed out")


class DeviceLost(BaseException):
    """The candidate left the device unusable. A BaseException, so that hypothesis does not shrink
    on it (every later case in this process would fail the same way, whatever it is) and the
    error is recorded on the case that caused it."""

    def __init__(self, cases: int):
        super().__init__(cases)
        self.cases = cases


def device_lost(res: CheckResult, device: str) -> bool:
    """After an error: is the device still usable in this process?"""
    if res.verdict != "error":
        return False
    if any(s in res.reason.lower() for s in STICKY_ERRORS):
        return True
    if device.startswith("cuda"):
        import torch

        try:
            torch.cuda.synchronize()
            torch.ones(1, device=device).add_(1).item()
        except Exception:  # noqa: BLE001 - any failure here means the context is gone
            return True
    return False


def run_task(task: Task, ctx: Context, emit: Callable[[dict], None],
             on_case: Callable[[Case], None] | None = None,
             on_sanitizer: Callable[[], None] | None = None) -> int:
    """Run one task; ``emit`` gets each result line. Returns the number of cases run.
    ``on_case`` is called as each case starts, ``on_sanitizer`` as a failing case's replay under
    compute-sanitizer starts (harness/sanitizer.py).

    Raises :class:`DeviceLost` (after emitting the case's error line) when a case left the
    device unusable: the caller must not run anything else in this process on that device."""
    cand = candidates.get(task.kernel)
    op = get_op(cand.op)
    check = checks.ALL[task.check]
    strategy = op.cases(cand, task.dtype, Profile.for_device(ctx.device).for_widths(width_seed(task)))
    state = {"cases": 0, "seq": 0, "first": None, "shrinks": 0, "last": None, "lines": 0}
    timed = compiletime.known()
    clock = {"at": compiletime.reading()}

    def out(line: dict) -> None:
        state["lines"] += 1
        if timed:
            # compile time since the previous line: a failing line also carries what the failing
            # cases and shrink steps before it compiled, so a task's lines add up to its total
            now = compiletime.reading()
            spent, built = now.seconds - clock["at"].seconds, now.compiles - clock["at"].compiles
            clock["at"] = now
            if built:
                line["compile_s"], line["compiles"] = round(spent, 5), built
        emit(line)

    seen: set[str] = set()

    def prop(case: Case) -> None:
        if state["first"] is None:
            # hypothesis can reach one case through different draws (the minimal case most often:
            # 89 of 4,988 lines of a CPU run were a task's first case again); it ran and passed
            key = case.key()
            if key in seen:
                return
            seen.add(key)
        if on_case is not None:
            on_case(case)
        res = check(cand, op, case, ctx)
        if state["first"] is None:
            state["cases"] += 1
        if device_lost(res, ctx.device):
            if state["first"] is None:  # its line says after how many generated cases (never shrunk)
                state["first"] = state["cases"]
            state["last"] = (case, res)
            raise DeviceLost(state["cases"])
        if res.failed:
            if state["first"] is None:
                state["first"] = state["cases"]
            else:
                state["shrinks"] += 1
            state["last"] = (case, res)
            raise _Falsified(case, res)
        if state["first"] is None:
            out(result_line(task, cand, case, res, state["seq"], ctx.device))
            state["seq"] += 1

    test = settings(max_examples=task.examples, database=None, deadline=None, print_blob=False,
                    suppress_health_check=list(HealthCheck), report_multiple_bugs=False,
                    phases=(Phase.generate, Phase.shrink))(hseed(task_seed(task))(given(strategy)(prop)))

    def fail_line(case: Case, res: CheckResult, flaky: bool = False) -> dict:
        if flaky and res.reason.startswith(checks.OUT_OF_MEMORY):
            res.reason = ("out of memory at first, then passed when replayed: memory was short, not the "
                          "kernel wrong (fewer --workers per GPU leaves each more); first: " + res.reason)
        elif flaky:
            res.reason = ("flaky: this case failed, then passed when replayed (non-deterministic); "
                          "first failure: " + res.reason)
        return result_line(task, cand, case, res, state["seq"], ctx.device,
                           examples=state["first"], shrinks=state["shrinks"])

    t0 = time.perf_counter()
    try:
        test()
    except _Falsified as f:
        out(sanitizer.explain(fail_line(f.case, f.res), ctx.device, before=on_sanitizer))
    except Flaky:
        if state["last"] is not None:
            out(fail_line(*state["last"], flaky=True))
    except DeviceLost:
        case, res = state["last"]
        res.reason += ("; the device was unusable after this case (a sticky device error), so the rest of this "
                       "task did not run")
        out(sanitizer.attribute(fail_line(case, res), ctx.device, before=on_sanitizer))
        raise
    except Exception as e:  # noqa: BLE001 - a harness-side error is still a result, never a lost run
        out(result_line(task, cand, Case(cand.op, (1, 1), task.dtype),
                        CheckResult("error", f"harness error: {e!r}", duration_s=time.perf_counter() - t0),
                        state["seq"], ctx.device))
    if not state["lines"]:
        # fail closed: a task that checked nothing says so, rather than leaving no trace
        out(result_line(task, cand, Case(cand.op, (1, 1), task.dtype),
                        CheckResult("skip", "no case could be generated for this kernel, dtype and check"),
                        state["seq"], ctx.device))
    return state["cases"]


def process_setup(device: str, threads: int | None = None) -> None:
    """Once per process that runs checks.

    On the CPU, one thread: PyTorch's CPU reductions split work by thread count, so bits (and the
    repeat check's digests) would otherwise depend on the machine and the number of workers.
    On a GPU shared by several workers, an even share of its memory each: a worker's caching
    allocator keeps what it freed, and would otherwise starve the others into random
    out-of-memory errors; with a share, it returns its cache when it reaches the share. A case too
    big for one share gets a last try beyond it (beyond_the_share)."""
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
    if shares_a_gpu(device):
        torch.cuda.set_per_process_memory_fraction(GPU_MEMORY_SHARED / workers_per_gpu())


def interpreter_on() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
