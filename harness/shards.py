"""Splitting a run's tasks over the jobs of a CI matrix (``normgate run --shard K/N``).

A task (kernel, dtype, check) draws its cases from a seed of its own (``runner.task_seed``), so
its result lines do not depend on which other tasks run beside it: the N shards' lines, taken
together, are the lines of the unsharded run with the same seed and selection. The partition is
deterministic (the same selection gives every job the same split, with no coordination between
jobs) and balanced by expected cost.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from .results import summarize

# Seconds per case by check, from a 12,759-case run of every built-in kernel on one H200
# (reports/examples/runs/h200-all-kernels-12759.jsonl.gz: accuracy 0.40, contract 0.58, repeat
# 0.50, poisoned 0.52, batch invariance 0.55). The checks cost about the same per case; what
# differs is how many cases each gets (checks.budget), which the estimate multiplies in.
SECONDS_PER_CASE = {"accuracy": 0.40, "contract": 0.58, "repeat": 0.50, "poisoned": 0.52, "batch_invariance": 0.55}


@dataclass(frozen=True)
class Shard:
    index: int  # 1-based, as CI matrices count
    count: int

    @classmethod
    def parse(cls, spec: str) -> Shard:
        m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", spec or "")
        if not m:
            raise ValueError(f"--shard {spec}: expected K/N, e.g. 1/4 (the first of four shards)")
        k, n = int(m.group(1)), int(m.group(2))
        if n < 1 or not 1 <= k <= n:
            raise ValueError(f"--shard {spec}: K must be between 1 and N, and N at least 1")
        return cls(k, n)

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def expected_cost(task) -> float:
    return task.examples * SECONDS_PER_CASE.get(task.check, 0.5)


def partition(tasks: Sequence, count: int) -> list[list]:
    """``count`` lists of tasks, each in the run's task order, covering every task once.

    Longest expected cost first, each to the shard with the least so far (ties: the lower shard,
    then the task id), so the split depends only on the tasks."""
    load = [0.0] * count
    owner: dict[str, int] = {}
    for t in sorted(tasks, key=lambda t: (-expected_cost(t), t.id)):
        i = min(range(count), key=lambda j: (load[j], j))
        owner[t.id] = i
        load[i] += expected_cost(t)
    return [[t for t in tasks if owner[t.id] == i] for i in range(count)]


def select(tasks: Sequence, shard: Shard) -> list:
    return partition(tasks, shard.count)[shard.index - 1]


def selection_digest(task_ids: Sequence[str]) -> str:
    """Names the whole selection (every task of every shard): shards of one run share it."""
    return hashlib.sha256("\n".join(task_ids).encode()).hexdigest()[:16]


class ShardError(ValueError):
    """Shards that are not the parts of one run (the message says which file and why)."""


# What the shards of one run share: their env lines must agree on each.
SAME_RUN = ("format", "normgate", "seed", "examples", "device", "interpreter", "gpu", "torch", "triton", "declarations")


def merge(files: Sequence[tuple[str, list[dict]]]) -> list[dict]:
    """The lines of one run from the lines of its shards: the env line without its shard part,
    each task's lines in the run's task order, and a summary counted from the lines.

    Refused (ShardError) unless the files are exactly the N shards of one run: one env line each,
    the same settings and selection, every index from 1 to N once, no task in two files, and
    every task of the selection present."""
    envs = []
    for path, lines in files:
        env = [ln for ln in lines if ln.get("type") == "env"]
        if len(env) != 1:
            raise ShardError(f"{path}: {len(env)} env lines; a shard is the results file of one run")
        if not isinstance(env[0].get("shard"), dict):
            raise ShardError(f"{path}: not a shard (no --shard in its run); give the shards of one run, or one "
                             "unsharded results file")
        envs.append(env[0])
    first_path, first = files[0][0], envs[0]
    count = first["shard"].get("count")
    for (path, _), env in zip(files, envs):
        diff = [k for k in SAME_RUN if env.get(k) != first.get(k)]
        if env["shard"].get("selection") != first["shard"].get("selection") or env["shard"].get("count") != count:
            diff.append("selection")
        if diff:
            raise ShardError(f"{path} and {first_path} are not shards of one run: they differ in {', '.join(diff)}")
    indices = sorted(env["shard"].get("index") for env in envs)
    if indices != list(range(1, (count or 0) + 1)):
        missing = sorted(set(range(1, (count or 0) + 1)) - set(indices))
        twice = sorted({i for i in indices if indices.count(i) > 1})
        raise ShardError(f"shards of {count}: " + "; ".join(
            ([f"missing {', '.join(map(str, missing))}"] if missing else [])
            + ([f"given twice {', '.join(map(str, twice))}"] if twice else [])
            + ([f"unexpected {i}" for i in indices if not 1 <= i <= (count or 0)])))
    order = first["shard"].get("order") or []
    owner: dict[str, str] = {}
    body: dict[str, list[dict]] = {}
    for path, lines in files:
        tasks_here = {ln.get("task") for ln in lines if ln.get("type") in ("result", "task")}
        for t in sorted(tasks_here):
            if t in owner:
                raise ShardError(f"task {t} is in both {owner[t]} and {path}: the shards overlap")
            owner[t] = path
        for ln in lines:
            if ln.get("type") in ("result", "task"):
                body.setdefault(ln.get("task"), []).append(ln)
    absent = [t for t in order if t not in body]
    foreign = [t for t in body if t not in set(order)]
    if foreign:
        raise ShardError(f"task {foreign[0]} ({owner[foreign[0]]}) is not in the run's selection")
    env = {k: v for k, v in first.items() if k != "shard"}
    merged = [env]
    for t in order:
        merged += body.get(t, [])
    results = [ln for ln in merged if ln.get("type") == "result"]
    summaries = [ln for _, lines in files for ln in lines if ln.get("type") == "summary"]
    interrupted = len(summaries) < len(files) or any(s.get("interrupted") for s in summaries) or bool(absent)
    elapsed = round(max((s.get("elapsed_s") or 0) for s in summaries), 2) if summaries else 0
    merged.append(summarize(Counter(ln.get("verdict") for ln in results), len(results), interrupted=interrupted,
                            elapsed_s=elapsed))
    if absent:
        merged[-1]["missing_tasks"] = len(absent)
    return merged
