"""Isolation and scale-out: tasks run in worker subprocesses, one per GPU (or CPU core).

A kernel that segfaults, calls ``os._exit``, corrupts its CUDA context or hangs takes its worker
down, not the run: the supervisor records an ``error`` result naming the case it was on, starts a
fresh worker and goes on with the next task. Events come back over a dedicated pipe, so whatever a
kernel prints cannot corrupt them; its output goes to the worker's log, whose tail is quoted when
the worker dies. Events are signed with a key per task (worker.py), so a kernel writing to that
pipe gets its task an error, not its events accepted.

A death is blamed on the task that caused it. The worker checks what a task left behind before
reporting it done (worker.py); beyond that, a worker that dies while idle is blamed on the last
task it reported done, and one that dies during a task after having run another is ambiguous: the
task runs again in a fresh worker, and if it passes there, the death is blamed on the task before
it. When a worker ends, its whole process group ends with it: processes a kernel started too.
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from . import sanitizer
from .results import SUPERVISOR_SEQ as SUPERVISOR_SEQ
from .runner import WORKERS_PER_GPU_ENV, Task, task_line
from .scheduling import TaskQueue
from .worker import SUPERVISOR_ENV, sign


@dataclass
class Options:
    device: str = "cpu"
    workers: int = 1
    loads: tuple[str, ...] = ()
    case_timeout: float = 300.0
    task_timeout: float | None = None
    startup_timeout: float = 600.0
    gpus: int = 0


@dataclass
class _Worker:
    index: int
    proc: subprocess.Popen
    fd: int
    log: str
    buf: bytes = b""
    ready: bool = False
    retiring: bool = False  # it left its device unusable: replace it once its task is done
    retire_reason: str = ""  # why it must be replaced after its task, when the worker said
    left_by: list = field(default_factory=list)  # (task, what it left) of tasks that left something behind
    started: float = field(default_factory=time.monotonic)
    task: Task | None = None
    task_start: float = 0.0
    case: str | None = None
    case_start: float = 0.0
    key: bytes = b""  # signs its events outside a task
    task_key: bytes | None = None  # signs the current task's events
    n: int = 0  # the number of the next event
    last_task: Task | None = None  # the last task it reported done
    warm: list[tuple[str, str]] = field(default_factory=list)  # the (kernel, dtype) it has run, oldest first


def _signal_name(code: int) -> str:
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def gpu_for(index: int, gpus: int, visible: str | None) -> str:
    """The CUDA_VISIBLE_DEVICES of worker ``index``: one of the GPUs this process sees, in turn.
    Entries of an inherited CUDA_VISIBLE_DEVICES (ids or UUIDs) are kept: ``2,3`` gives the
    workers GPU 2 and GPU 3, not 0 and 1."""
    seen = [v.strip() for v in visible.split(",") if v.strip()] if visible else []
    if len(seen) >= gpus:
        return seen[index % gpus]
    return str(index % gpus)


class Pool:
    def __init__(self, opts: Options, emit: Callable[[dict], None],
                 on_event: Callable[[str, dict], None] | None = None):
        self.opts = opts
        self.emit = emit
        self.on_event = on_event or (lambda kind, info: None)
        self.sel = selectors.DefaultSelector()
        self.workers: list[_Worker] = []

    # ---- worker life cycle -------------------------------------------------------------------
    def _spawn(self, index: int) -> _Worker:
        r, w = os.pipe()
        env = dict(os.environ)
        env[SUPERVISOR_ENV] = str(os.getpid())  # the worker ends itself if this process dies
        env[sanitizer.CASE_TIMEOUT_ENV] = str(self.opts.case_timeout)
        if self.opts.device.startswith("cuda") and self.opts.gpus > 1:
            env["CUDA_VISIBLE_DEVICES"] = gpu_for(index, self.opts.gpus, os.environ.get("CUDA_VISIBLE_DEVICES"))
        if self.opts.device == "cpu":
            env.setdefault("TRITON_INTERPRET", "1")
        elif self.opts.workers > 1:
            # Several workers share the host's cores: by default each would start an intra-op thread
            # per core and Inductor a compile process per core, and concurrent torch.compile
            # candidates then spend their time contending rather than compiling.
            env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // self.opts.workers)))
            env.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")
            # and a GPU's memory: each worker's caching allocator keeps what it freed, so without a
            # share per worker one worker's cache starves the others into out-of-memory errors
            env[WORKERS_PER_GPU_ENV] = str(-(-self.opts.workers // max(1, self.opts.gpus)))
        fd_log, log = tempfile.mkstemp(prefix=f"normgate-worker{index}-", suffix=".log")
        cmd = [sys.executable, "-m", "normgate.worker", str(w), self.opts.device, json.dumps(list(self.opts.loads))]
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=fd_log, stderr=fd_log, pass_fds=(w,), env=env,
                                start_new_session=True)
        os.close(w)
        os.close(fd_log)
        os.set_blocking(r, False)
        wk = _Worker(index, proc, r, log, key=secrets.token_bytes(32))
        try:
            assert proc.stdin is not None
            proc.stdin.write((json.dumps({"key": wk.key.hex()}) + "\n").encode())
            proc.stdin.flush()
        except OSError:
            pass  # it died at once: noticed as a worker that failed to start
        self.sel.register(r, selectors.EVENT_READ, wk)
        return wk

    def _retire(self, wk: _Worker, kill: bool) -> None:
        if kill and wk.proc.poll() is None:
            try:
                os.killpg(wk.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                wk.proc.kill()
        try:
            wk.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        # whatever the worker's kernels started (a subprocess, a server) is in its process group
        # (its session): it ends with the worker, even when the worker ended by itself
        try:
            os.killpg(wk.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.sel.unregister(wk.fd)
        except (KeyError, ValueError):
            pass
        os.close(wk.fd)
        _close_stdin(wk)

    def _log_tail(self, wk: _Worker, n: int = 600) -> str:
        try:
            with open(wk.log, "rb") as f:
                f.seek(max(0, os.path.getsize(wk.log) - n))
                return f.read().decode(errors="replace").strip()
        except OSError:
            return ""

    def _error_line(self, task: Task, case_key: str | None, reason: str, duration: float) -> dict:
        """The supervisor's error result for a task (its worker died, hung or misbehaved)."""
        from . import candidates, results
        from .case import Case
        from .runner import replay_command

        cand = candidates.registry().get(task.kernel)
        line = results.result_record(kernel=task.kernel, op=cand.op if cand else None,
                                     variant=cand.variant.key() if cand else None, check=task.check,
                                     dtype=task.dtype, regime=None, case=case_key, shape=None, verdict="error",
                                     reason=reason, worst=[], seq=SUPERVISOR_SEQ, task=task.id,
                                     duration_s=round(duration, 3))
        if case_key:
            case = Case.from_key(case_key)
            line.update(op=case.op, regime=case.regime, shape=list(case.shape),
                        replay=replay_command(task.kernel, task.check, case, self._loads_of(task.kernel),
                                              self.opts.device))
        return line

    @staticmethod
    def _culprit(wk: _Worker) -> tuple[Task | None, str]:
        """Whom a death outside a task (or one a rerun clears) is blamed on: the last task that left
        something behind in that worker (a thread, a timer, exit handlers), else the last task."""
        if wk.left_by:
            task, what = wk.left_by[-1]
            others = [t.id for t, _ in wk.left_by[:-1]]
            return task, (f"; this task left {what} in that worker" +
                          (f" (so did {', '.join(others[-3:])})" if others else ""))
        return wk.last_task, ""

    def _blame_done(self, task: Task, reason: str) -> None:
        """An error for a task already reported done: its worker died after it (a thread it left,
        an asynchronous device error). At most one such line per task."""
        if task.id in self.blamed:
            return
        self.blamed.add(task.id)
        line = self._error_line(task, None, reason, 0.0)
        self.emit(line)
        self.on_event("line", line)

    def _fail_task(self, wk: _Worker, reason: str) -> None:
        """Record why the worker's task ended early, as an error result and a task line."""
        task = wk.task
        if task is None:
            return
        self.suspects.pop(task.id, None)  # it failed again in a fresh worker: its own fault
        line = self._error_line(task, wk.case, reason, time.monotonic() - (wk.case_start or wk.task_start))
        self.emit(line)
        self.emit(task_line(task, None, "error", time.monotonic() - wk.task_start))
        self.on_event("task_error", {"task": task, "reason": reason})
        wk.task = None

    def _loads_of(self, kernel: str) -> tuple[str, ...]:
        """The --load files the replay of this kernel needs: its own file, as the result lines
        written in the worker say, not every file of the run."""
        from . import candidates

        cand = candidates.registry().get(kernel)
        return cand.loads if cand is not None else self.opts.loads

    # ---- the loop ----------------------------------------------------------------------------
    def run(self, tasks: list[Task]) -> None:
        pending = TaskQueue(tasks)
        #: tasks to run again in a fresh worker: their worker died after having run another task
        self.reruns: deque[Task] = deque()
        #: task id -> (the task that ran before it in the dead worker, why that worker died)
        self.suspects: dict[str, tuple[Task, str]] = {}
        self.blamed: set[str] = set()
        self.seen: dict[str, set] = {}  # task id -> seqs of its lines already written
        self.replaced: dict[str, int] = {}  # why a worker was replaced after a task -> how often
        n = max(1, min(self.opts.workers, len(tasks))) if tasks else 0
        self.workers = [self._spawn(i) for i in range(n)]
        finished = False
        try:
            while pending or self.reruns or any(w.task for w in self.workers):
                for wk in self.workers:
                    if wk.ready and wk.task is None:
                        if self.reruns and wk.last_task is None:
                            self._assign(wk, self.reruns.popleft())
                        elif pending:
                            task = pending.take(wk.warm, self._held())
                            if task is not None:
                                self._assign(wk, task)
                for key, _ in self.sel.select(timeout=0.5):
                    self._read(key.data)
                self._watch()
                if not pending and not self.reruns and not any(w.task for w in self.workers):
                    break
            finished = True
        finally:
            for why, count in sorted(self.replaced.items(), key=lambda kv: -kv[1])[:3]:
                print(f"normgate: a worker was replaced after {count} task(s), each time because: {why}",
                      file=sys.stderr)
            if finished:
                self._finish_workers()
            for wk in self.workers:
                if wk.proc.poll() is None:
                    _close_stdin(wk)
                self._retire(wk, kill=True)
                try:
                    os.unlink(wk.log)
                except OSError:
                    pass

    def _held(self) -> dict[tuple[str, str], int]:
        """How many live workers have run each kernel and dtype (a replaced worker starts cold)."""
        held: dict[tuple[str, str], int] = {}
        for wk in self.workers:
            for group in wk.warm:
                held[group] = held.get(group, 0) + 1
        return held

    def _finish_workers(self, wait_s: float = 5.0) -> None:
        """End idle workers in order (stdin closed) and see how they end: one that dies on the way
        out (an exit handler, a thread) is blamed on the last task it ran."""
        for wk in self.workers:
            if wk.proc.poll() is None:
                _close_stdin(wk)
        deadline = time.monotonic() + wait_s
        for wk in self.workers:
            try:
                code = wk.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                continue  # killed below, as before
            self._drain(wk)
            culprit, why = self._culprit(wk)
            if code != 0 and culprit is not None and wk in self.workers:
                self._blame_done(culprit, self._death_reason(wk, code) + " (as it ended, after the task "
                                 "reported done" + (why or "; the task ran last in that worker") + ")")

    def _assign(self, wk: _Worker, task: Task) -> None:
        wk.task, wk.task_start, wk.case, wk.case_start = task, time.monotonic(), None, 0.0
        group = (task.kernel, task.dtype)
        if group in wk.warm:
            wk.warm.remove(group)
        wk.warm.append(group)
        wk.task_key = secrets.token_bytes(32)
        try:
            assert wk.proc.stdin is not None
            wk.proc.stdin.write((json.dumps({**task.to_json(), "key": wk.task_key.hex()}) + "\n").encode())
            wk.proc.stdin.flush()
        except OSError:
            pass  # a dead worker is noticed by _watch
        self.on_event("task_start", {"task": task, "worker": wk.index})

    def _read(self, wk: _Worker) -> None:
        try:
            chunk = os.read(wk.fd, 1 << 20)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._on_death(wk)
            return
        self._take(wk, chunk)

    def _take(self, wk: _Worker, chunk: bytes) -> None:
        wk.buf += chunk
        *lines, wk.buf = wk.buf.split(b"\n")
        for raw in lines:
            if not raw.strip():
                continue
            if wk not in self.workers:
                return  # replaced while reading: the rest is a dead worker's
            mac, _, body = raw.partition(b" ")
            key = wk.task_key if wk.task_key is not None else wk.key
            if not hmac.compare_digest(mac, sign(key, wk.n, body).encode()):
                # only the worker writes this pipe with its key, but a kernel can write to any fd it
                # finds: such an event must cost that task, not be taken for a result
                self._handle(wk, {"event": "garbled", "raw": raw[:200].decode(errors="replace")})
                return
            wk.n += 1
            try:
                ev = json.loads(body)
                if not isinstance(ev, dict):
                    raise ValueError("not an object")
            except ValueError:
                ev = {"event": "garbled", "raw": raw[:200].decode(errors="replace")}
            self._handle(wk, ev)

    def _drain(self, wk: _Worker) -> None:
        """Take every event the worker wrote before we kill it (result lines of the cases that
        passed before a hang, or a ``done`` that raced the timeout)."""
        while True:
            try:
                chunk = os.read(wk.fd, 1 << 20)
            except (BlockingIOError, OSError):
                return
            if not chunk:
                return
            self._take(wk, chunk)

    def _handle(self, wk: _Worker, ev: dict) -> None:
        kind = ev.get("event")
        if kind == "ready":
            wk.ready = True
        elif kind == "case" and wk.task is not None:
            wk.case, wk.case_start = ev["case"], time.monotonic()
            self.on_event("case", {"task": wk.task})
        elif kind == "sanitizer" and wk.task is not None:  # replaying a failure under memcheck:
            wk.case_start = time.monotonic()  # a fresh case window, which sanitizer.timeout_s keeps within
        elif kind == "line" and wk.task is not None and isinstance(ev.get("line"), dict):
            line = ev["line"]
            seen = self.seen.setdefault(wk.task.id, set())
            if line.get("seq") in seen:
                return  # a rerun repeating a line its first worker wrote before it died
            seen.add(line.get("seq"))
            self.emit(line)
            self.on_event("line", line)
        elif kind == "retire":
            wk.retiring = True
            wk.retire_reason = str(ev.get("reason") or "")
        elif kind == "after" and wk.task is not None:
            line = self._error_line(wk.task, None, str(ev.get("reason")), time.monotonic() - wk.task_start)
            self.emit(line)
            self.on_event("line", line)
        elif kind == "done" and wk.task is not None and ev.get("task") == wk.task.id:
            task = wk.task
            line = task_line(task, ev["cases"], "done", time.monotonic() - wk.task_start)
            if ev.get("left"):
                line["left_behind"] = str(ev["left"])
                wk.left_by.append((task, line["left_behind"]))
            if wk.retiring:
                # a fresh worker for the next task costs its start-up and every kernel's warm-up
                # again: say why, so a run that is slow for this reason shows it
                line["worker_replaced"] = wk.retire_reason or "the device was unusable after this task"
                self.replaced[line["worker_replaced"]] = self.replaced.get(line["worker_replaced"], 0) + 1
            self.emit(line)
            self.on_event("task_done", {"task": task, "cases": ev["cases"]})
            suspect = self.suspects.pop(task.id, None)
            if suspect is not None:
                before, why = suspect
                self._blame_done(before, f"{why} (after this task reported done: the task that ran next in "
                                         f"that worker, {task.id}, passed when run again in a fresh worker)")
            wk.task, wk.case, wk.task_key, wk.last_task = None, None, None, task
            if wk.retiring:
                self._replace(wk, kill=True)
        elif kind == "fatal":
            wk.ready = False
            self._fail_task(wk, str(ev.get("reason")))
            raise WorkerSetupError(str(ev.get("reason")))
        else:
            self._lost(wk, f"the worker sent an event normgate did not sign or expect ({ev.get('raw', ev)!r}): "
                           "something in the worker wrote to its event pipe; it was replaced", kill=True)

    def _death_reason(self, wk: _Worker, code: int | None) -> str:
        where = f" on case {wk.case}" if wk.case else ""
        tail = self._log_tail(wk)
        reason = f"worker died ({_signal_name(code) if code is not None else 'pipe closed'}){where}"
        if tail:
            reason += f"; its last output: {tail[-400:]}"
        return reason

    def _on_death(self, wk: _Worker) -> None:
        try:
            code = wk.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            code = None
        reason = self._death_reason(wk, code)
        if wk.task is None and not wk.ready:
            raise WorkerSetupError(f"a worker failed to start: {reason}")
        self._lost(wk, reason, kill=False)

    def _lost(self, wk: _Worker, reason: str, kill: bool) -> None:
        """The worker died or misbehaved: blame the task that caused it, then replace the worker."""
        task = wk.task
        culprit, why = self._culprit(wk)
        if task is None:
            if culprit is not None:
                self._blame_done(culprit, f"{reason} (while idle, after this task reported done{why})")
        elif culprit is not None and task.id not in self.suspects:
            # it may be this task, or what one before it left running: run this one again in a fresh
            # worker, which decides
            self.suspects[task.id] = (culprit, reason + why)
            self.reruns.append(task)
            wk.task = None
        else:
            self._fail_task(wk, reason)
        self._replace(wk, kill=kill)

    def _replace(self, wk: _Worker, kill: bool) -> None:
        self._retire(wk, kill=kill)
        try:
            os.unlink(wk.log)
        except OSError:
            pass
        self.workers[self.workers.index(wk)] = self._spawn(wk.index)

    def _watch(self) -> None:
        now = time.monotonic()
        for wk in list(self.workers):
            if not wk.ready and now - wk.started > self.opts.startup_timeout:
                raise WorkerSetupError(f"a worker did not start within {self.opts.startup_timeout:.0f}s")
            if wk.task is None:
                continue
            late = (wk.case and now - wk.case_start > self.opts.case_timeout) or (
                self.opts.task_timeout and now - wk.task_start > self.opts.task_timeout)
            if late:
                self._drain(wk)
                if wk.task is None or wk not in self.workers:
                    continue  # it finished (or died) just in time
            if wk.task is None:
                continue
            if wk.case and now - wk.case_start > self.opts.case_timeout:
                self._fail_task(wk, f"timed out: one case ran longer than {self.opts.case_timeout:g}s "
                                    f"(case {wk.case}); the worker was killed")
                self._replace(wk, kill=True)
            elif self.opts.task_timeout and now - wk.task_start > self.opts.task_timeout:
                self._fail_task(wk, f"timed out: the task ran longer than {self.opts.task_timeout:g}s "
                                    f"(last case {wk.case}); the worker was killed")
                self._replace(wk, kill=True)


class WorkerSetupError(Exception):
    """A worker could not start (e.g. a --load file that imports in the parent fails in a child)."""


def _close_stdin(wk) -> None:
    """Close a worker's stdin: its end of input, which tells an idle worker to finish."""
    if wk.proc.stdin:
        try:
            wk.proc.stdin.close()
        except OSError:
            pass
