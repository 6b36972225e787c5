"""Which task a free worker takes next: each kernel's tasks stay on the workers that hold it warm.

A kernel's first call in a process can cost far more than its cases: on an H200, about 60 s for a
torch.compile candidate (Dynamo traces and Inductor compiles a graph per rank, dtype, stride pattern
and size-1 dimension: 9 graphs in the first 18 cases of one dtype), 8.6 s for Liger-Kernel's first
call, and seconds per block size for any Triton kernel. Handing tasks out in a fixed order made
every worker pay that for every kernel (3.4 cases/s over 1,212 built-in tasks on 16 workers).
Here a worker keeps to the kernels it already ran; a kernel no worker holds goes to a free worker;
only when nothing else is left does a worker take a share of a kernel another holds, and only where
that kernel has work enough to split.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence

from .runner import Task

#: the order checks are scheduled in within a kernel: accuracy (the full budget) first, so that when
#: a kernel's tasks are spread over several workers, its binaries are mostly built (and in the Triton
#: cache the workers share) by the time the other checks run
SCHEDULE = ("accuracy", "contract", "repeat", "poisoned", "batch_invariance")

#: a worker takes a share of a kernel another worker holds only when each holder would still have
#: this many of its tasks left: below that, the newcomer's warm-up costs more than the wait
STEAL_AT = 2


def schedule(tasks: list[Task]) -> list[Task]:
    """Tasks by check (accuracy first), then as given. The results file is written in the given
    order whatever the schedule (results.canonicalize)."""
    rank = {c: i for i, c in enumerate(SCHEDULE)}
    return sorted(tasks, key=lambda t: rank.get(t.check, len(rank)))


class TaskQueue:
    """The pending tasks of a run, grouped by kernel, in the order of :func:`schedule`."""

    def __init__(self, tasks: Iterable[Task]):
        self._by_kernel: dict[str, deque[Task]] = {}
        for task in schedule(list(tasks)):
            self._by_kernel.setdefault(task.kernel, deque()).append(task)

    def __len__(self) -> int:
        return sum(len(q) for q in self._by_kernel.values())

    def __bool__(self) -> bool:
        return any(self._by_kernel.values())

    def take(self, warm: Sequence[str], held: dict[str, int]) -> Task | None:
        """The next task for a free worker.

        ``warm``: the kernels this worker has run, oldest first; ``held``: how many live workers
        have run each kernel. None: nothing is worth taking now (what is left belongs to kernels
        other workers hold and will take next)."""
        for kernel in reversed(warm):  # the kernel it ran last first: its binaries are the freshest
            if self._by_kernel.get(kernel):
                return self._pop(kernel)
        for kernel, queue in self._by_kernel.items():
            if queue and not held.get(kernel):
                return self._pop(kernel)
        shares = {k: len(q) / held.get(k, 1) for k, q in self._by_kernel.items() if q}
        if shares:
            kernel = max(shares, key=shares.__getitem__)
            if shares[kernel] >= STEAL_AT:
                return self._pop(kernel)
        return None

    def _pop(self, kernel: str) -> Task:
        return self._by_kernel[kernel].popleft()
