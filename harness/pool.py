"""Isolation and scale-out: tasks run in worker subprocesses, one per GPU (or CPU core).

A kernel that segfaults, calls ``os._exit``, corrupts its CUDA context or hangs takes its worker
down, not the run: the supervisor records an ``error`` result naming the case it was on, starts a
fresh worker and goes on with the next task. Events come back over a dedicated pipe, so whatever a
kernel prints cannot corrupt them; its output goes to the worker's log, whose tail is quoted when
the worker dies.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from .runner import WORKERS_PER_GPU_ENV, Task
from .worker import SUPERVISOR_ENV


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
    started: float = field(default_factory=time.monotonic)
    task: Task | None = None
    task_start: float = 0.0
    case: str | None = None
    case_start: float = 0.0


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
        wk = _Worker(index, proc, r, log)
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
        try:
            self.sel.unregister(wk.fd)
        except (KeyError, ValueError):
            pass
        os.close(wk.fd)
        if wk.proc.stdin:
            try:
                wk.proc.stdin.close()
            except OSError:
                pass

    def _log_tail(self, wk: _Worker, n: int = 600) -> str:
        try:
            with open(wk.log, "rb") as f:
                f.seek(max(0, os.path.getsize(wk.log) - n))
                return f.read().decode(errors="replace").strip()
        except OSError:
            return ""

    def _fail_task(self, wk: _Worker, reason: str) -> None:
        """Record why the worker's task ended early, as an error result and a task line."""
        task = wk.task
        if task is None:
            return
        from . import candidates
        from .case import Case
        from .runner import replay_command

        cand = candidates.registry().get(task.kernel)
        line = {"type": "result", "kernel": task.kernel, "op": cand.op if cand else None,
                "variant": cand.variant.key() if cand else None, "check": task.check,
                "dtype": task.dtype, "regime": None, "case": wk.case, "shape": None, "verdict": "error",
                "reason": reason, "worst": [], "seq": 10**9, "task": task.id,
                "duration_s": round(time.monotonic() - (wk.case_start or wk.task_start), 3)}
        if wk.case:
            case = Case.from_key(wk.case)
            line.update(op=case.op, regime=case.x, shape=list(case.shape),
                        replay=replay_command(task.kernel, task.check, case, self._loads_of(task.kernel),
                                              self.opts.device))
        self.emit(line)
        self.emit({"type": "task", "task": task.id, "kernel": task.kernel, "check": task.check,
                   "dtype": task.dtype, "cases": None, "status": "error",
                   "elapsed_s": round(time.monotonic() - wk.task_start, 3)})
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
        pending = deque(tasks)
        n = max(1, min(self.opts.workers, len(tasks))) if tasks else 0
        self.workers = [self._spawn(i) for i in range(n)]
        try:
            while pending or any(w.task for w in self.workers):
                for wk in self.workers:
                    if wk.ready and wk.task is None and pending:
                        self._assign(wk, pending.popleft())
                for key, _ in self.sel.select(timeout=0.5):
                    self._read(key.data)
                self._watch()
                if not pending and not any(w.task for w in self.workers):
                    break
        finally:
            for wk in self.workers:
                if wk.proc.poll() is None and wk.proc.stdin:
                    try:
                        wk.proc.stdin.close()
                    except OSError:
                        pass
                self._retire(wk, kill=True)
                try:
                    os.unlink(wk.log)
                except OSError:
                    pass

    def _assign(self, wk: _Worker, task: Task) -> None:
        wk.task, wk.task_start, wk.case, wk.case_start = task, time.monotonic(), None, 0.0
        try:
            assert wk.proc.stdin is not None
            wk.proc.stdin.write((json.dumps(task.to_json()) + "\n").encode())
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
            try:
                ev = json.loads(raw)
            except ValueError:
                # only the worker writes this pipe, but a kernel can write to any fd it finds; a
                # garbled event must cost that task, not the run
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
        kind = ev["event"]
        if kind == "ready":
            wk.ready = True
        elif kind == "case":
            wk.case, wk.case_start = ev["case"], time.monotonic()
            self.on_event("case", {"task": wk.task})
        elif kind == "line":
            self.emit(ev["line"])
            self.on_event("line", ev["line"])
        elif kind == "retire":
            wk.retiring = True
        elif kind == "done":
            self.emit({"type": "task", "task": ev["task"], "kernel": wk.task.kernel, "check": wk.task.check,
                       "dtype": wk.task.dtype, "cases": ev["cases"], "status": "done",
                       "elapsed_s": round(time.monotonic() - wk.task_start, 3)})
            self.on_event("task_done", {"task": wk.task, "cases": ev["cases"]})
            wk.task, wk.case = None, None
            if wk.retiring:
                self._replace(wk, kill=True)
        elif kind == "fatal":
            wk.ready = False
            self._fail_task(wk, ev["reason"])
            raise WorkerSetupError(ev["reason"])
        else:
            self._fail_task(wk, f"the worker sent a garbled event ({ev.get('raw', ev)!r}); it was replaced")
            self._replace(wk, kill=True)

    def _on_death(self, wk: _Worker) -> None:
        try:
            code = wk.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            code = None
        where = f" on case {wk.case}" if wk.case else ""
        tail = self._log_tail(wk)
        reason = f"worker died ({_signal_name(code) if code is not None else 'pipe closed'}){where}"
        if tail:
            reason += f"; its last output: {tail[-400:]}"
        if wk.task is None and not wk.ready:
            raise WorkerSetupError(f"a worker failed to start: {reason}")
        self._fail_task(wk, reason)
        self._replace(wk, kill=False)

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
