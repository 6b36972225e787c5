"""Running tasks: in this process, one after another, or in a pool of worker processes. The one loop
that ``normgate run``, the developer zoo and the pytest plugin share; each line goes to ``emit`` the
moment it is made, and ``on_event`` hears of every task and case (progress)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from .checks import Context
from .runner import DeviceLost, Task, run_task, task_line

Emit = Callable[[dict], None]
OnEvent = Callable[[str, dict], None]


def _quiet(kind: str, info: dict) -> None:
    pass


def run_in_process(tasks: Iterable[Task], ctx: Context, emit: Emit, on_event: OnEvent = _quiet) -> None:
    """Every task in this process with ``ctx``, each closed by its task line."""
    for task in tasks:
        on_event("task_start", {"task": task})
        t1 = time.monotonic()
        try:
            cases = run_task(task, ctx, emit=lambda ln: (emit(ln), on_event("line", ln)),
                             on_case=lambda case, task=task: on_event("case", {"task": task}))
        except DeviceLost as lost:
            # no worker to replace in this process: later tasks fail fast with the same error
            cases = lost.cases
        emit(task_line(task, cases, "done", time.monotonic() - t1))
        on_event("task_done", {"task": task, "cases": cases})


def run_tasks(tasks: list[Task], emit: Emit, on_event: OnEvent = _quiet, *, device: str, workers: int,
              pool_options=None) -> None:
    """``tasks`` in this process (``workers`` 0: the cases a worker would draw, without the isolation)
    or in ``workers`` worker processes (``pool_options``, a pool.Options, for the timeouts and the
    files to load; its device and worker count are these)."""
    if workers == 0:
        from .runner import interpreter_on
        from .worker import pin_generation

        pin_generation()  # the same cases as in a worker process
        run_in_process(tasks, Context(device=device, interpreter=interpreter_on()), emit, on_event)
        return
    import dataclasses

    from .pool import Options, Pool

    opts = dataclasses.replace(pool_options or Options(), device=device, workers=workers)
    Pool(opts, emit, on_event).run(tasks)
