"""A worker process: ``python -m normgate.worker FD DEVICE LOADS``.

Reads tasks (JSON lines) on stdin, runs each in this process, and writes events (JSON lines) to
the file descriptor FD: ``ready``, ``case`` (before each case, so the supervisor knows where a
crash or hang happened), ``line`` (a result line), ``done``, ``fatal``, or ``retire`` (sent before
the ``done`` of a task that left the device unusable; the worker then exits and is replaced).
"""

from __future__ import annotations

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
    seed gave different cases in each. There is no public switch; hypothesis's module-level hook
    is replaced with one that finds no local constants. If a later hypothesis renames it, this
    does nothing and tests/test_workers.py (``--workers 0`` against 1 and 3) fails."""
    try:
        from hypothesis.internal.conjecture import providers
        from hypothesis.internal.constants_ast import Constants
    except ImportError:  # a hypothesis without local constants: nothing to pin
        return
    if not hasattr(providers, "_get_local_constants"):
        return
    empty = Constants()
    providers._get_local_constants = lambda: empty
    cache = getattr(providers, "CONSTANTS_CACHE", None)
    if cache is not None and hasattr(cache, "cache"):
        cache.cache.clear()  # choices computed with local constants before we got here


def main() -> None:
    fd, device, loads = int(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
    die_with_supervisor()
    out = os.fdopen(fd, "w", buffering=1)

    def send(event: dict) -> None:
        out.write(json.dumps(event, allow_nan=False, default=str) + "\n")
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
        task = Task(**json.loads(raw))
        try:
            cases = run_task(task, ctx, emit=lambda line: send({"event": "line", "line": line}),
                             on_case=lambda case: send({"event": "case", "case": case.key()}))
        except DeviceLost as lost:
            send({"event": "retire"})
            send({"event": "done", "task": task.id, "cases": lost.cases})
            out.close()
            os._exit(0)  # no teardown: a poisoned CUDA context can hang or crash in it
        send({"event": "done", "task": task.id, "cases": cases})


if __name__ == "__main__":
    main()
