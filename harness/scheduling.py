"""Which task a free worker takes next: each kernel's work stays on the workers that hold it warm.

A kernel's first call in a process can cost far more than its cases: on an H200, about 60 s for a
torch.compile candidate (Dynamo traces and Inductor compiles a graph per rank, dtype, stride pattern
and size-1 dimension: 9 graphs in the first 18 cases of one dtype, counted on the CPU), 8.6 s for
Liger-Kernel's first call, and seconds per block size for any Triton kernel. Handing tasks out in
a fixed order made every worker pay that for every kernel (3.4 cases/s over 1,212 built-in tasks on
16 workers). It pays off only while a worker lives: in both H200 budget runs, workers replaced
after the tasks of Liger-Kernel and torch.compile undid it, until what a task leaves behind stopped
retiring its worker (worker.py).

The unit of work kept together is a kernel and a dtype (its checks share the binaries and graphs,
which are built per dtype): a worker keeps to the pairs it already ran; then it starts a kernel no
worker has started yet, so that every kernel is under way early (a run stopped by --time-limit or a
CI job's cancel has checked every kernel, not the first few in full: the H200 budget run before this
rule spent its 300 s on torch.compile's and Liger-Kernel's dtypes and never reached normgate's own
kernels); then another dtype of a kernel it has warm, then any pair nobody holds; only when nothing
else is left does it take a share of a pair another worker holds, and only where that pair has work
enough to split.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence

from .names import SPECS
from .runner import Task

#: the order checks are scheduled in within a kernel (names.SPECS says why accuracy is first)
SCHEDULE = tuple(s.name for s in sorted(SPECS, key=lambda s: s.schedule))

#: a worker takes a share of a (kernel, dtype) another worker holds only when each holder would
#: still have this many of its tasks left: below that, the newcomer's warm-up costs more than the wait
STEAL_AT = 2


def schedule(tasks: list[Task]) -> list[Task]:
    """Tasks by check (accuracy first), then as given. The results file is written in the given
    order whatever the schedule (results.canonicalize)."""
    rank = {c: i for i, c in enumerate(SCHEDULE)}
    return sorted(tasks, key=lambda t: rank.get(t.check, len(rank)))


Group = tuple[str, str]  # (kernel, dtype)


class TaskQueue:
    """The pending tasks of a run, grouped by kernel and dtype, each group in the order of
    :func:`schedule`, the groups in the order given."""

    def __init__(self, tasks: Iterable[Task]):
        tasks = list(tasks)
        self._groups: dict[Group, deque[Task]] = {}
        for task in tasks:
            self._groups.setdefault((task.kernel, task.dtype), deque())
        for task in schedule(tasks):
            self._groups[task.kernel, task.dtype].append(task)

    def __len__(self) -> int:
        return sum(len(q) for q in self._groups.values())

    def __bool__(self) -> bool:
        return any(self._groups.values())

    def take(self, warm: Sequence[Group], held: dict[Group, int]) -> Task | None:
        """The next task for a free worker.

        ``warm``: the (kernel, dtype) groups this worker has run, oldest first; ``held``: how many
        live workers have run each group. None: nothing is worth taking now (what is left belongs to
        groups other workers hold and will take next)."""
        for group in reversed(warm):  # the group it ran last first: its binaries are the freshest
            if self._groups.get(group):
                return self._groups[group].popleft()
        kernels = {k for k, _ in warm}
        started = {k for (k, _), holders in held.items() if holders} | kernels
        free = [g for g, q in self._groups.items() if q and not held.get(g)]
        for group in free:  # breadth first: a kernel nobody has started
            if group[0] not in started:
                return self._groups[group].popleft()
        for group in free:  # another dtype of a kernel it has loaded and warmed up
            if group[0] in kernels:
                return self._groups[group].popleft()
        if free:
            return self._groups[free[0]].popleft()
        shares = {g: len(q) / held.get(g, 1) for g, q in self._groups.items() if q}
        if shares:
            group = max(shares, key=shares.__getitem__)
            if shares[group] >= STEAL_AT:
                return self._groups[group].popleft()
        return None
