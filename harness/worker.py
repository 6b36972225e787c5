"""A worker process: ``python -m normgate.worker FD DEVICE LOADS``.

Reads a key, then tasks (JSON lines, each with a key of its own) on stdin, runs each in this
process, and writes events (JSON lines) to the file descriptor FD: ``ready``, ``case`` (before each
case, so the supervisor knows where a crash or hang happened), ``line`` (a result line), ``done``,
``fatal``, or ``retire`` (sent before the ``done`` of a task that left the device unusable or left
something running; the worker then exits and is replaced).

Each event is signed: ``MAC JSON``, the MAC an HMAC-SHA256 over the event's number in this stream
and its JSON, keyed with the current task's key (the worker's key outside a task). The keys come
over stdin, never argv or the environment, so kernel code that finds FD and writes well-formed
events to it does not get them accepted; see "Trust boundary" in README.

Before a task counts as done the worker checks what the task left behind: the device is
synchronized (an asynchronous device error surfaces on this task, not the next), threads the task
started get a moment to end, exit handlers it registered are run; anything still running makes the
worker retire, so that none of it reaches another task.
"""

from __future__ import annotations

import atexit
import hashlib
import hmac
import json
import os
import signal
import sys
import threading
import time

#: set by the supervisor (pool.py): the pid whose death must end this worker
SUPERVISOR_ENV = "NORMGATE_SUPERVISOR_PID"


def die_with_supervisor() -> None:
    """End this worker when the supervisor dies, even by SIGKILL.

    Workers run in their own session (so a Ctrl-C reaches only the supervisor, which then ends
    them in order); the price is that a supervisor killed outright would leave them running, a
    hung kernel for ever. On Linux the kernel sends us SIGKILL when our parent dies; elsewhere a
    thread polls the parent's pid. Either way, if the parent is already gone (it died between the
    fork and this call), we exit now."""
    expected = int(os.environ.get(SUPERVISOR_ENV, "0") or 0)
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            pr_set_pdeathsig = 1
            ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):
            _poll_parent(expected)
    else:
        _poll_parent(expected)
    if expected and os.getppid() != expected:
        os._exit(1)


def _poll_parent(expected: int) -> None:
    parent = expected or os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="normgate-supervisor-watch", daemon=True).start()


def pin_generation() -> None:
    """Make the generated cases a function of the seed alone.

    Hypothesis (6.131 and later) also draws integers and floats it collects from the source of
    every "local" module imported in the process (anything outside site-packages and the standard
    library). Which modules those are differs between a worker and the CLI process running
    ``--workers 0``, with each --load file, and between an editable and a regular install, so one
    seed gave different cases in each. There is no public switch: hypothesis's private module-level
    hook ``providers._get_local_constants`` is replaced with one that finds no local constants.
    pyproject pins hypothesis to the releases that hook is known in (``HYPOTHESIS_RANGE``), and
    tests/test_hypothesis_pin.py checks the pin, the hook and this replacement; a release that has
    local constants without the hook is refused here rather than giving seed-dependent cases."""
    try:
        from hypothesis.internal.conjecture import providers
        from hypothesis.internal.constants_ast import Constants
    except ImportError:  # a hypothesis without local constants: nothing to pin
        return
    if not hasattr(providers, "_get_local_constants"):
        import hypothesis

        raise RuntimeError(f"hypothesis {hypothesis.__version__} collects local constants without the hook "
                           f"normgate replaces to keep cases a function of the seed; install hypothesis"
                           f"{HYPOTHESIS_RANGE}")
    empty = Constants()
    providers._get_local_constants = lambda: empty
    cache = getattr(providers, "CONSTANTS_CACHE", None)
    if cache is not None and hasattr(cache, "cache"):
        cache.cache.clear()  # choices computed with local constants before we got here


#: the hypothesis releases ``pin_generation`` is known to work with (pyproject's dependency says
#: the same; tests/test_hypothesis_pin.py holds the two together)
HYPOTHESIS_RANGE = ">=6.100,<6.171"


def sign(key: bytes, n: int, body: bytes) -> str:
    """The MAC of event number ``n`` (the supervisor checks it: pool.py)."""
    return hmac.new(key, b"%d:" % n + body, hashlib.sha256).hexdigest()


#: How long threads a task started may run on after it before the worker gives up on them.
LEFTOVER_GRACE_S = 1.0


def _leftovers(threads_before: set[int], exit_handlers_before: int, device: str) -> str:
    """What the task left behind, after giving it a chance to surface here rather than later:
    the device synchronized (raises on an asynchronous device error), threads joined for a
    moment, a timer due soon waited for. Returns what is still there ("" if nothing).

    The worker goes on with the next task all the same (the supervisor remembers who left what, and
    blames a later death on it): libraries leave such things once per process (Liger-Kernel and
    torch.compile register exit handlers, Inductor starts tqdm's monitor thread), and a fresh worker
    after each such task paid its start-up and every warm-up again on the next (43 of 208 tasks of
    an H200 run, 8.6 cases/s)."""
    if device.startswith("cuda"):
        import torch

        if torch.cuda.is_initialized():
            torch.cuda.synchronize()
    left = []
    deadline = time.monotonic() + LEFTOVER_GRACE_S
    new = [t for t in threading.enumerate() if t.ident not in threads_before and t.is_alive() and not _foreign(t)]
    for t in new:
        t.join(max(0.0, deadline - time.monotonic()))
    alive = [t.name for t in new if t.is_alive()]
    if alive:
        left.append(f"{len(alive)} thread(s) still running ({', '.join(alive[:3])})")
    # a timer the task armed (normgate arms none) fires into whatever runs next: one due within
    # the grace is waited for here, so a death it causes lands on this task; a later one retires
    # the worker like a thread still running
    for which, name in _TIMERS:
        due = signal.getitimer(which)[0]
        if 0 < due <= LEFTOVER_GRACE_S + 0.5:
            time.sleep(due + 0.2)
            due = signal.getitimer(which)[0]
        if due > 0:
            left.append(f"a timer ({name}) still armed")
    if _exit_handlers() > exit_handlers_before:
        left.append("exit handlers registered")
    return "; ".join(left)


def _foreign(t: threading.Thread) -> bool:
    """A thread Python did not start that called into Python (``threading._DummyThread``). On CUDA,
    autograd runs every backward on an engine thread of its own per device, for the life of the
    process; a Python backward (any custom autograd.Function: Liger-Kernel's, torch.compile's, ours)
    makes that thread show here. Counted as left running, it retired the worker after every such
    task: on an H200, 8-10 s of a fresh worker's start-up and warm-up on each task's first case."""
    return isinstance(t, threading._DummyThread)


_TIMERS = ((signal.ITIMER_REAL, "SIGALRM"), (signal.ITIMER_VIRTUAL, "SIGVTALRM"), (signal.ITIMER_PROF, "SIGPROF"))


def _exit_handlers() -> int:
    count = getattr(atexit, "_ncallbacks", None)
    return count() if count is not None else 0


def main() -> None:
    fd, device, loads = int(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
    die_with_supervisor()
    out = os.fdopen(fd, "w", buffering=1)
    # the first line of stdin is this worker's key, read before any user code is imported
    keys = {"key": bytes.fromhex(json.loads(sys.stdin.readline())["key"]), "n": 0}

    def send(event: dict) -> None:
        body = json.dumps(event, allow_nan=False, default=str).encode()
        mac = sign(keys["key"], keys["n"], body)
        keys["n"] += 1
        out.write(mac + " " + body.decode() + "\n")
        out.flush()

    from . import candidates
    from .checks import Context
    from .runner import DeviceLost, Task, interpreter_on, process_setup, run_task

    process_setup(device, threads=1 if device == "cpu" else None)
    pin_generation()
    try:
        for path in loads:
            candidates.load_file(path)
        candidates.registry()
    except Exception as e:  # noqa: BLE001
        send({"event": "fatal", "reason": str(e)})
        return
    ctx = Context(device=device, interpreter=interpreter_on())
    send({"event": "ready"})
    for raw in sys.stdin:
        if not raw.strip():
            continue
        msg = json.loads(raw)
        keys["key"] = bytes.fromhex(msg.pop("key"))
        task = Task(**msg)
        threads_before = {t.ident for t in threading.enumerate()}
        handlers_before = _exit_handlers()
        cases = 0
        try:
            cases = run_task(task, ctx, emit=lambda line: send({"event": "line", "line": line}),
                             on_case=lambda case: send({"event": "case", "case": case.key()}),
                             on_sanitizer=lambda: send({"event": "sanitizer"}))
            left = _leftovers(threads_before, handlers_before, device)
        except DeviceLost as lost:
            send({"event": "retire"})
            send({"event": "done", "task": task.id, "cases": lost.cases})
            out.close()
            os._exit(0)  # no teardown: a poisoned CUDA context can hang or crash in it
        except Exception as e:  # noqa: BLE001 - the synchronization after the last case failed
            send({"event": "after", "reason": f"after the task's last case: {type(e).__name__}: {e}"})
            send({"event": "retire"})
            send({"event": "done", "task": task.id, "cases": cases})
            out.close()
            os._exit(0)
        send({"event": "done", "task": task.id, "cases": cases, **({"left": left} if left else {})})
    out.close()
    # the exit handlers kernels registered run now, so that one that crashes ends this worker with
    # its code and the supervisor blames the task that registered it; then no interpreter teardown
    atexit._run_exitfuncs()
    os._exit(0)


if __name__ == "__main__":
    main()
