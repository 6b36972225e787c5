"""A worker process: ``python -m normgate.worker FD DEVICE LOADS``.

Reads tasks (JSON lines) on stdin, runs each in this process, and writes events (JSON lines) to
the file descriptor FD: ``ready``, ``case`` (before each case, so the supervisor knows where a
crash or hang happened), ``line`` (a result line), ``done``, or ``fatal``.
"""

from __future__ import annotations

import json
import os
import sys


def main() -> None:
    fd, device, loads = int(sys.argv[1]), sys.argv[2], json.loads(sys.argv[3])
    out = os.fdopen(fd, "w", buffering=1)

    def send(event: dict) -> None:
        out.write(json.dumps(event, allow_nan=False, default=str) + "\n")
        out.flush()

    from . import candidates
    from .checks import Context
    from .runner import Task, interpreter_on, process_setup, run_task

    process_setup(device, threads=1 if device == "cpu" else None)
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
        cases = run_task(task, ctx, emit=lambda line: send({"event": "line", "line": line}),
                         on_case=lambda case: send({"event": "case", "case": case.key()}))
        send({"event": "done", "task": task.id, "cases": cases})


if __name__ == "__main__":
    main()
