"""Read results JSONL (docs/results-format.md) and pytest-benchmark JSON, and group them.

Everything here depends only on those two file formats, never on the rest of normgate, so a report
or a gate verdict can be made from any results file, whoever wrote it.

Reading is strict where a guess would hide a problem: a line that is not JSON (a corrupt file, or a
run killed in the middle of a write), a line that is not an object, an unknown verdict, or a result
without its identifying fields raises :class:`LoadError` naming the file and the line. Problems that
leave the file readable but incomplete (no ``env`` line, no ``summary`` line, an interrupted run,
a task that died) are collected in :attr:`Run.problems`: the report shows them and the gate fails on
them, so an incomplete run is never taken for a clean one.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from normgate.names import CHECKS as CHECKS  # re-exported for the report and the gate
from normgate.names import DETERMINISM as DETERMINISM_CHECKS  # noqa: F401 - re-exported
from normgate.names import VERDICTS
from normgate.results import FORMAT, ResultLine, TaskLine
from normgate.results import RESULT_REQUIRED as _RESULT_REQUIRED
from normgate.results import SUPERVISOR_SEQ as SUPERVISOR_SEQ  # the supervisor's error lines

OUTPUTS: tuple[str, ...] = ("y", "h", "dx", "dweight", "dbias", "dresidual")
#: Batch sizes whose benchmarks measure latency rather than bandwidth.
SMALL_M: frozenset[int] = frozenset({1, 32, 128})

#: The results format this reader judges (docs/results-format.md); version 1 had no "format" field.
RESULTS_FORMAT = FORMAT


class LoadError(Exception):
    """A file that cannot be read as what it claims to be. ``str()`` is one line for the user."""


@dataclass(frozen=True)
class Problem:
    """Something wrong with a run that still loaded: shown in the report, fatal to the gate."""

    code: str  # "no-env", "no-summary", "interrupted", "task-error", "summary-mismatch", ...
    message: str


@dataclass
class Run:
    """One results file."""

    path: str
    env: dict[str, Any] | None = None
    results: list[ResultLine] = field(default_factory=list)
    tasks: list[TaskLine] = field(default_factory=list)
    summary: dict[str, Any] | None = None
    problems: list[Problem] = field(default_factory=list)
    label: str = ""
    kind: str = ""  # the device kind it ran on (device_kind of its env line)
    origins: dict[str, str] = field(default_factory=dict)  # task id -> "file (shard K/N)", for merged shards
    env_lines: list[int] = field(default_factory=list)  # line numbers of every env line
    summary_lines: list[int] = field(default_factory=list)
    task_lines: dict[str, list[int]] = field(default_factory=dict)  # task id -> its task lines

    @property
    def interpreter(self) -> bool | None:
        return None if self.env is None else bool(self.env.get("interpreter", False))

    def verdict_counts(self) -> Counter[str]:
        return Counter(r["verdict"] for r in self.results)


_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def clean_text(text: Any) -> str:
    """Text from a results file for display: terminal colour codes dropped, other control characters as �."""
    return _CONTROL.sub("\ufffd", _ANSI.sub("", str(text)))


# ----------------------------------------------------------------------------- results JSONL


def _where(path: str, lineno: int) -> str:
    return f"{path}:{lineno}"


def _parse_line(path: str, lineno: int, text: str, last: bool) -> dict[str, Any]:
    try:
        obj = json.loads(text.rstrip("\r\n"))
    except RecursionError:
        raise LoadError(f"{_where(path, lineno)}: not valid results JSON (nested too deeply)") from None
    except json.JSONDecodeError as e:
        hint = (
            "the line is cut off: the run was killed mid-write; re-run it (normgate run --resume)"
            if last and not text.endswith("\n")
            else "the file is corrupt; re-run normgate run to regenerate it"
        )
        raise LoadError(
            f"{_where(path, lineno)}: not valid JSON ({e.msg} at column {e.pos + 1}); {hint}"
        ) from None
    if not isinstance(obj, dict):
        raise LoadError(f"{_where(path, lineno)}: expected a JSON object, got {type(obj).__name__}")
    if not isinstance(obj.get("type"), str):
        raise LoadError(f'{_where(path, lineno)}: line has no string "type" field (env/result/task/summary)')
    return obj


def _check_result(path: str, lineno: int, obj: dict[str, Any]) -> None:
    missing = [k for k in _RESULT_REQUIRED if not isinstance(obj.get(k), str) or not obj.get(k)]
    if missing:
        raise LoadError(
            f"{_where(path, lineno)}: result line lacks {', '.join(missing)} (see docs/results-format.md)"
        )
    if obj["verdict"] not in VERDICTS:
        raise LoadError(
            f"{_where(path, lineno)}: unknown verdict {obj['verdict']!r}; "
            f"expected one of {', '.join(VERDICTS)}"
        )
    errors = obj.get("errors")
    if errors is not None and not (
        isinstance(errors, dict) and all(isinstance(v, dict) for v in errors.values())
    ):
        raise LoadError(f'{_where(path, lineno)}: "errors" must map each output to an object of numbers')
    worst = obj.get("worst")
    if worst is not None and not (isinstance(worst, list) and all(isinstance(w, dict) for w in worst)):
        raise LoadError(f'{_where(path, lineno)}: "worst" must be a list of objects')


def parse_results(path: str, lines: Iterable[str]) -> Run:
    """Parse the lines of a results file (``path`` names it in messages)."""
    run = Run(path=path)
    seen_summary_at = 0
    last_type = ""
    line_list = list(lines)
    for lineno, text in enumerate(line_list, start=1):
        if not text.strip():
            continue
        obj = _parse_line(path, lineno, text, last=lineno == len(line_list))
        kind = obj["type"]
        last_type = kind
        if kind == "env":
            run.env_lines.append(lineno)
            if run.env is None:
                run.env = obj
                if run.results or run.tasks:
                    run.problems.append(Problem("env-late", f"{_where(path, lineno)}: env line is not first"))
            elif _env_identity(obj) != _env_identity(run.env):
                run.problems.append(
                    Problem(
                        "env-mixed",
                        f"{_where(path, lineno)}: a second env line names a different "
                        "machine or software: results from two environments are mixed in one file",
                    )
                )
        elif kind == "result":
            _check_result(path, lineno, obj)
            obj.setdefault("op", "")
            obj.setdefault("variant", "")
            obj["_line"] = lineno
            run.results.append(obj)
        elif kind == "task":
            obj["_line"] = lineno
            run.tasks.append(obj)
            run.task_lines.setdefault(str(obj.get("task")), []).append(lineno)
        elif kind == "summary":
            run.summary = obj
            run.summary_lines.append(lineno)
            seen_summary_at = lineno
        # Other types are ignored: newer writers may add lines this reader does not need.
    _flag_problems(run, seen_summary_at, last_type)
    return run


def _env_identity(env: Mapping[str, Any]) -> tuple[Any, ...]:
    return tuple(env.get(k) for k in ("gpu", "driver", "torch", "triton", "interpreter", "device"))


def _flag_problems(run: Run, summary_at: int, last_type: str) -> None:
    path = run.path
    if run.env is None:
        run.problems.append(Problem("no-env", f"{path}: no env line: the machine and software are unknown"))
    if run.summary is None:
        run.problems.append(
            Problem(
                "no-summary", f"{path}: no summary line: the run did not finish (killed or still running)"
            )
        )
    else:
        if last_type != "summary":
            run.problems.append(
                Problem("after-summary", f"{path}:{summary_at}: lines follow the summary line")
            )
        if run.summary.get("interrupted"):
            run.problems.append(Problem("interrupted", f"{path}: the summary says the run was interrupted"))
        _check_summary_counts(run)
    for t in run.tasks:
        if t.get("status") not in (None, "done"):
            run.problems.append(
                Problem(
                    "task-error", f"{path}: task {t.get('task', '?')} ended with status {t.get('status')!r}"
                )
            )


def _check_summary_counts(run: Run) -> None:
    """The summary must count exactly the lines the file holds: a file with lines deleted, or
    duplicated, does not match its own summary."""
    assert run.summary is not None
    counts = run.verdict_counts()
    said_cases = run.summary.get("cases")
    if isinstance(said_cases, int) and said_cases != len(run.results):
        run.problems.append(
            Problem(
                "summary-mismatch",
                f"{run.path}: summary counts {said_cases} cases but the file has {len(run.results)} result "
                "lines: result lines are missing or duplicated, or the file was edited",
            )
        )
    for v in VERDICTS:
        said = run.summary.get(v)
        if isinstance(said, int) and said != counts.get(v, 0):
            run.problems.append(
                Problem(
                    "summary-mismatch",
                    f"{run.path}: summary counts {said} {v} but the file has "
                    f"{counts.get(v, 0)} {v} lines: result lines are missing or the file was edited",
                )
            )


#: Problems that make a file unfit to judge at all (exit 2), not merely an unfinished run (exit 1).
MALFORMED_PROBLEMS = frozenset({"summary-mismatch", "env-mixed", "env-late", "after-summary"})


def validate_run(run: Run) -> None:
    """Raise :class:`LoadError` unless the file is one run, consistent with itself.

    What the gate and ``normgate baseline`` hold a file to: the current format; exactly one env
    line and one summary line (two runs concatenated have two of each); the summary's counts equal
    to the lines; no result line twice (the same task and sequence number); every result line of
    a finished run belonging to a task whose ``task`` line names the same kernel, dtype and check
    and counts its cases; and a declaration for every kernel. An unfinished run (no summary, or
    interrupted) is not malformed: the gate fails it (exit 1) for being unfinished."""
    path = run.path
    if run.env is not None and run.env.get("format") != RESULTS_FORMAT:
        got = run.env.get("format")
        raise LoadError(
            f"{path}:{run.env_lines[0]}: results format {got!r}, expected {RESULTS_FORMAT!r}"
            + (" (written by an older normgate)" if got is None else "")
            + "; re-run normgate run to regenerate it"
        )
    if len(run.env_lines) > 1:
        raise LoadError(
            f"{path}:{run.env_lines[1]}: a second env line (the first at line {run.env_lines[0]}): "
            "one results file holds one run"
        )
    if len(run.summary_lines) > 1:
        raise LoadError(
            f"{path}:{run.summary_lines[1]}: a second summary line (the first at line "
            f"{run.summary_lines[0]}): one results file holds one run"
        )
    bad = [p for p in run.problems if p.code in MALFORMED_PROBLEMS]
    if bad:
        raise LoadError(f"{bad[0].message}; the file is not one consistent run")
    seen: dict[tuple[str, Any], int] = {}
    per_task: dict[str, list[dict[str, Any]]] = {}
    for r in run.results:
        ident = (str(r.get("task")), r.get("seq"))
        if ident in seen:
            raise LoadError(
                f"{path}:{r['_line']}: the same result as line {seen[ident]} (task {ident[0]}, seq {ident[1]}): "
                "duplicated lines"
            )
        seen[ident] = r["_line"]
        per_task.setdefault(ident[0], []).append(r)
    for task, lines in run.task_lines.items():
        if len(lines) > 1:
            raise LoadError(f"{path}:{lines[1]}: a second task line for {task} (the first at line {lines[0]})")
    _validate_declarations(run)
    if run.summary is None or run.summary.get("interrupted"):
        return
    tasks = {str(t.get("task")): t for t in run.tasks}
    for r in run.results:
        t = tasks.get(str(r.get("task")))
        if t is None:
            raise LoadError(
                f"{path}:{r['_line']}: result of task {r.get('task')!r}, which has no task line in a finished run"
            )
        if (t.get("kernel"), t.get("dtype"), t.get("check")) != (r["kernel"], r["dtype"], r["check"]):
            raise LoadError(
                f"{path}:{r['_line']}: result of {r['kernel']} {r['dtype']} {r['check']} filed under task "
                f"{t.get('task')!r} of {t.get('kernel')} {t.get('dtype')} {t.get('check')}"
            )
    for task, t in tasks.items():
        _check_task_count(path, t, per_task.get(task, []))


def _check_task_count(path: str, task: Mapping[str, Any], lines: list[Mapping[str, Any]]) -> None:
    """A task's line says how many cases it ran; its result lines must be those cases.

    Allowed beyond them: one error line of the supervisor (a worker that died or hung), a skip
    line for a task that generated no case, an error line for a harness error."""
    where = f"{path}:{task['_line']}"
    if not lines:
        raise LoadError(f"{where}: task {task.get('task')} has no result lines")
    cases = task.get("cases")
    if cases is None:
        return  # a task whose worker died: it has no count to hold its lines to
    if not isinstance(cases, int) or isinstance(cases, bool) or cases < 0:
        raise LoadError(f"{where}: task {task.get('task')}: cases must be a count, got {cases!r}")
    mine = [r for r in lines if not (r.get("seq") == SUPERVISOR_SEQ and r["verdict"] == "error")]
    extra = len(mine) - cases
    last = mine[-1] if mine else None
    explained = extra == 1 and last is not None and (
        (last["verdict"] == "skip" and cases == 0)
        or (last["verdict"] == "error" and str(last.get("reason", "")).startswith("harness error"))
    )
    if extra and not explained:
        raise LoadError(
            f"{where}: task {task.get('task')} counts {cases} cases but the file has {len(mine)} of its result "
            "lines: lines are missing or duplicated, or the file was edited"
        )


def _validate_declarations(run: Run) -> None:
    kernels = sorted({r["kernel"] for r in run.results})
    if run.env is None or not kernels:
        return
    decl = run.env.get("declarations")
    if not isinstance(decl, dict) or not all(isinstance(v, dict) for v in decl.values()):
        raise LoadError(
            f'{run.path}:{run.env_lines[0]}: env line has no "declarations" object (kernel -> what it claims)'
        )
    missing = [k for k in kernels if k not in decl]
    if missing:
        raise LoadError(
            f"{run.path}:{run.env_lines[0]}: no declaration for kernel {missing[0]!r} in the env line "
            f"({len(missing)} kernel{'s' if len(missing) != 1 else ''} without one)"
        )


def declarations(run: Run) -> dict[str, dict[str, Any]]:
    """What each kernel of the run claimed (from the env line; see :func:`validate_run`)."""
    decl = (run.env or {}).get("declarations")
    if not isinstance(decl, dict):
        return {}
    kernels = {r["kernel"] for r in run.results}
    return {k: dict(v) for k, v in sorted(decl.items()) if k in kernels and isinstance(v, dict)}


def load_results(path: str) -> Run:
    """Read one results JSONL file. Raises :class:`LoadError` with a one-line message."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.readlines()
    except FileNotFoundError:
        raise LoadError(f"{path}: no such file") from None
    except UnicodeDecodeError as e:
        raise LoadError(f"{path}: not UTF-8 text (byte {e.start}): is this a results .jsonl file?") from None
    except OSError as e:
        raise LoadError(f"{path}: cannot read ({e.strerror or e})") from None
    run = parse_results(path, lines)
    if not run.results and not run.tasks and run.env is None and run.summary is None:
        raise LoadError(f"{path}: empty results file: no lines to read")
    return run


def device_kind(env: Mapping[str, Any] | None) -> str:
    """What a run's numbers belong to: the GPU model (``nvidia-h200``), or ``cpu`` /
    ``cpu-interpreter``. Known failures and budgets on one kind are not those of another."""
    env = env or {}
    if str(env.get("device", "")).startswith("cuda") and env.get("gpu"):
        return re.sub(r"[^a-z0-9]+", "-", str(env["gpu"]).lower()).strip("-")
    return "cpu-interpreter" if env.get("interpreter") else str(env.get("device") or "unknown")


def _raw_lines(path: str) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(t) for t in f if t.strip()]


def load_runs(paths: Iterable[str], validate: bool = False) -> list[Run]:
    """One run per results file, except that the shards of one run (``normgate run --shard K/N``,
    one file each) become one run, exactly as if it had not been split. Shards that are not the
    parts of one run (one missing, one twice, one of another run) are a :class:`LoadError`.
    ``validate`` holds each file to :func:`validate_run` first (the gate and baselines do)."""
    from normgate.shards import ShardError, merge

    singles: list[Run] = []
    groups: dict[tuple[str, Any], list[Run]] = {}
    for p in paths:
        run = load_results(p)
        if validate:
            validate_run(run)
        run.kind = device_kind(run.env)
        shard = (run.env or {}).get("shard")
        if isinstance(shard, dict):
            groups.setdefault((run.kind, shard.get("selection")), []).append(run)
        else:
            singles.append(run)
    out = list(singles)
    for (kind, _), parts in groups.items():
        parts.sort(key=lambda r: (r.env or {})["shard"].get("index") or 0)
        try:
            merged = merge([(r.path, _raw_lines(r.path)) for r in parts])
        except ShardError as e:
            raise LoadError(f"{e}; give every shard of a run, each once") from None
        except (OSError, ValueError) as e:
            raise LoadError(f"cannot merge shards: {e}") from None
        count = (parts[0].env or {})["shard"].get("count")
        run = parse_results(f"{parts[0].path} (+{len(parts) - 1} shards)",
                            [json.dumps(ln) for ln in merged])
        run.kind = kind
        for r in parts:
            idx = (r.env or {})["shard"].get("index")
            for t in r.tasks:
                run.origins[str(t.get("task"))] = f"{r.path} (shard {idx}/{count})"
            run.problems += r.problems  # a shard's own problems stay its own, named by its file
        out.append(run)
    return out


def label_runs(runs: list[Run]) -> None:
    """Give each run a short unique label: the file name without extension, else more of the path."""
    # merged shards are named by their device kind: their files are many
    stems = [r.kind if r.origins else os.path.splitext(os.path.basename(r.path))[0] for r in runs]
    for i, (run, stem) in enumerate(zip(runs, stems, strict=True)):
        if stems.count(stem) == 1:
            run.label = stem
        else:
            parent = os.path.basename(os.path.dirname(os.path.abspath(run.path)))
            run.label = f"{parent}/{stem}" if parent else f"{stem}#{i + 1}"
    labels = [r.label for r in runs]
    for i, run in enumerate(runs):
        if labels.count(run.label) > 1:
            run.label = f"{run.label}#{i + 1}"


# ----------------------------------------------------------------------------- grouping


@dataclass(frozen=True, order=True)
class CheckKey:
    """What the gate and the report compare: one check of one kernel variant in one dtype."""

    kernel: str
    op: str
    variant: str
    dtype: str
    check: str

    def as_dict(self) -> dict[str, str]:
        return {
            "kernel": self.kernel,
            "op": self.op,
            "variant": self.variant,
            "dtype": self.dtype,
            "check": self.check,
        }

    def short(self) -> str:
        return f"{self.kernel} {self.dtype} {self.check}"


def key_of(result: Mapping[str, Any]) -> CheckKey:
    return CheckKey(
        result["kernel"], result.get("op", ""), result.get("variant", ""), result["dtype"], result["check"]
    )


@dataclass
class OutputStats:
    """Accuracy of one output over the cases of one check (pass and fail lines only)."""

    cases: int = 0
    max_ulp: float = 0.0
    mean_ulp_sum: float = 0.0
    max_abs: float = 0.0
    max_ratio: float = 0.0
    bound_at_worst: float | None = None
    max_bound: float = 0.0
    eager_max_ulp: float | None = None
    worse_than_eager: int = 0
    eager_cases: int = 0
    max_excess_over_eager: float = 0.0
    ratios: list[float] = field(default_factory=list)

    @property
    def mean_ulp(self) -> float:
        return self.mean_ulp_sum / self.cases if self.cases else 0.0

    def add(self, e: Mapping[str, Any]) -> None:
        # A missing or unreadable error or ratio is NaN, never 0: unknown accuracy must not look perfect.
        max_ulp = _num(e.get("max_ulp"))
        ratio = _num(e.get("ratio"))
        bound = _num(e.get("bound_ulp"))
        self.cases += 1
        self.max_ulp = _worst(self.max_ulp, max_ulp)
        self.mean_ulp_sum += _num(e.get("mean_ulp"), 0.0)
        self.max_abs = _worst(self.max_abs, _num(e.get("max_abs"), 0.0))
        self.max_bound = _worst(self.max_bound, bound)
        self.ratios.append(ratio)
        if self.bound_at_worst is None or _worst(self.max_ratio, ratio) != self.max_ratio:
            self.max_ratio = _worst(self.max_ratio, ratio)
            self.bound_at_worst = bound
        if e.get("eager_max_ulp") is not None:
            eager = _num(e.get("eager_max_ulp"))
            self.eager_cases += 1
            self.eager_max_ulp = eager if self.eager_max_ulp is None else _worst(self.eager_max_ulp, eager)
            if max_ulp > eager or math.isnan(max_ulp):
                self.worse_than_eager += 1
                self.max_excess_over_eager = max(self.max_excess_over_eager, max_ulp - eager)


def _worst(a: float, b: float) -> float:
    """The larger of two errors, with NaN (unknown) winning over any number."""
    if math.isnan(a) or math.isnan(b):
        return math.nan
    return max(a, b)


def _num(v: Any, missing: float = math.nan) -> float:
    """A number from a results field; inf and nan are kept (they are real measurements)."""
    if isinstance(v, bool) or v is None:
        return missing
    if isinstance(v, int | float):
        return float(v)
    if isinstance(v, str):  # JSON cannot hold inf/nan; writers may spell them as strings
        try:
            return float(v)
        except ValueError:
            return math.nan
    return math.nan


@dataclass
class CheckStats:
    """All result lines of one :class:`CheckKey` in one run."""

    key: CheckKey
    verdicts: Counter[str] = field(default_factory=Counter)
    outputs: dict[str, OutputStats] = field(default_factory=dict)
    failures: list[dict[str, Any]] = field(default_factory=list)  # fail and error lines
    regimes: Counter[str] = field(default_factory=Counter)

    @property
    def cases(self) -> int:
        return sum(self.verdicts.values())

    @property
    def ran(self) -> int:
        """Cases that ran (everything but skips)."""
        return self.cases - self.verdicts.get("skip", 0)

    @property
    def status(self) -> str:
        return worst_verdict(self.verdicts)

    @property
    def clean(self) -> bool:
        return not (self.verdicts.get("fail") or self.verdicts.get("error"))


#: How bad a verdict is, for picking the one that speaks for a group (range is information only).
SEVERITY: dict[str, int] = {"error": 5, "fail": 4, "range": 2, "pass": 1, "skip": 0}


def worst_verdict(counts: Mapping[str, int]) -> str:
    present = [v for v, n in counts.items() if n]
    return max(present, key=lambda v: SEVERITY.get(v, 6)) if present else "none"


def group_checks(results: Iterable[Mapping[str, Any]]) -> dict[CheckKey, CheckStats]:
    """Group result lines by check; accuracy stats count pass and fail lines, not range/skip/error."""
    groups: dict[CheckKey, CheckStats] = {}
    for r in results:
        k = key_of(r)
        g = groups.get(k)
        if g is None:
            g = groups[k] = CheckStats(k)
        verdict = r["verdict"]
        g.verdicts[verdict] += 1
        g.regimes[str(r.get("regime") or "-")] += 1
        if verdict in ("fail", "error"):
            g.failures.append(dict(r))
        if verdict in ("pass", "fail") and isinstance(r.get("errors"), dict):
            for out, e in r["errors"].items():
                g.outputs.setdefault(out, OutputStats()).add(e)
    return dict(sorted(groups.items()))


def output_order(name: str) -> tuple[int, str]:
    return (OUTPUTS.index(name) if name in OUTPUTS else len(OUTPUTS), name)


# ----------------------------------------------------------------------------- pytest-benchmark JSON

_BENCH_REQUIRED = ("kernel", "op", "pass", "dtype", "M", "N")


@dataclass(frozen=True)
class Bench:
    """One benchmark of a pytest-benchmark JSON file, from its ``extra_info``."""

    name: str
    kernel: str
    op: str
    pass_: str
    dtype: str
    M: int
    N: int
    time_us: float
    bytes: float | None
    gbps: float | None
    copy_gbps: float | None
    fraction_of_copy: float | None
    gpu: str
    source: str

    def key(self) -> tuple[str, str, str, str, int, int]:
        return (self.kernel, self.op, self.pass_, self.dtype, self.M, self.N)


@dataclass
class BenchFile:
    path: str
    benches: list[Bench]
    skipped: int  # benchmarks without normgate's extra_info (other suites in the same file)
    datetime: str = ""


def _opt_float(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def _bench_from(path: str, i: int, b: Mapping[str, Any]) -> Bench | None:
    name = str(b.get("fullname") or b.get("name") or f"#{i}")
    extra = b.get("extra_info")
    if not isinstance(extra, dict) or "kernel" not in extra:
        return None
    missing = [k for k in _BENCH_REQUIRED if k not in extra]
    if missing:
        raise LoadError(f"{path}: benchmark {name}: extra_info lacks {', '.join(missing)}")
    time_us = _opt_float(extra.get("time_us"))
    if time_us is None:  # fall back on pytest-benchmark's own median, in seconds
        stats = b.get("stats") if isinstance(b.get("stats"), dict) else {}
        median = _opt_float(stats.get("median"))
        if median is None:
            raise LoadError(f"{path}: benchmark {name}: no time (extra_info.time_us or stats.median)")
        time_us = median * 1e6
    try:
        m, n = int(extra["M"]), int(extra["N"])
    except (TypeError, ValueError):
        raise LoadError(f"{path}: benchmark {name}: M and N must be integers") from None
    return Bench(
        name=name,
        kernel=str(extra["kernel"]),
        op=str(extra["op"]),
        pass_=str(extra["pass"]),
        dtype=str(extra["dtype"]),
        M=m,
        N=n,
        time_us=time_us,
        bytes=_opt_float(extra.get("bytes")),
        gbps=_opt_float(extra.get("gbps")),
        copy_gbps=_opt_float(extra.get("copy_gbps")),
        fraction_of_copy=_opt_float(extra.get("fraction_of_copy")),
        gpu=str(extra.get("gpu") or ""),
        source=path,
    )


def load_bench(path: str) -> BenchFile:
    """Read a pytest-benchmark ``--benchmark-json`` file; keep benchmarks with normgate extra_info."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise LoadError(f"{path}: no such file") from None
    except json.JSONDecodeError as e:
        raise LoadError(
            f"{path}:{e.lineno}: not valid JSON ({e.msg}); expected pytest-benchmark --benchmark-json output"
        ) from None
    except (OSError, UnicodeDecodeError) as e:
        raise LoadError(f"{path}: cannot read ({e})") from None
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
        raise LoadError(f'{path}: no "benchmarks" list: not a pytest-benchmark JSON file')
    benches: list[Bench] = []
    skipped = 0
    for i, b in enumerate(data["benchmarks"]):
        if not isinstance(b, dict):
            raise LoadError(f"{path}: benchmark #{i} is not an object")
        bench = _bench_from(path, i, b)
        if bench is None:
            skipped += 1
        else:
            benches.append(bench)
    if not benches:
        raise LoadError(f"{path}: no benchmark carries normgate extra_info (kernel, op, pass, dtype, M, N)")
    return BenchFile(path=path, benches=benches, skipped=skipped, datetime=str(data.get("datetime") or ""))


def best_times(files: Iterable[BenchFile]) -> dict[tuple[str, str, str, str, int, int], Bench]:
    """One benchmark per key: the fastest, when several files or rounds measured the same thing."""
    best: dict[tuple[str, str, str, str, int, int], Bench] = {}
    for f in files:
        for b in f.benches:
            cur = best.get(b.key())
            if cur is None or b.time_us < cur.time_us:
                best[b.key()] = b
    return dict(sorted(best.items()))
