"""Baselines and the gate: did a kernel pull request make anything worse?

A baseline (``normgate baseline``) is a small JSON file committed in the kernel repo. Per check
(kernel, op, variant, dtype, check) it records how many cases ran, the verdict counts, and for
accuracy the largest error in ULPs and the worst error/bound ratio per output; optionally the time
of each benchmark. It also holds the budget the gate allows:

``max_ulp_growth`` (default 0.25)
    how much larger a worst-case ULP error may get before it is a regression: 0.25 allows 25% more.
    Growth up to 0.5 ULP (one correct rounding) is always allowed, so a check that was exact does
    not fail for a correctly rounded result.
``min_cases_fraction`` (default 0.5)
    a check that now runs fewer than this fraction of the baseline's cases has lost coverage:
    a regression, because cases that did not run prove nothing.

Both must be finite and in range (0 to 1e6, and 0 to 1): a NaN would compare false everywhere
and switch the rule off. A check with known failures records each failing case with its figures:
a case failing that the baseline does not know, a known one failing worse, or one failing in
another way (an ``error`` where a ``fail`` was known) is a regression, and the accuracy and
coverage rules hold for it as for a clean check. Each kernel's declaration (what it claims in
``normgate.register``) is recorded too: results are judged against the baseline's declaration, and
one the results loosen is a regression (see ``declarations.py``).

The file is written with sorted keys, one check or benchmark per line and no timestamps, so the same
results give the same bytes and a change to it reads well in a diff.

The gate (``normgate gate``) fails closed: a check or benchmark in the baseline and absent from the
results, a run without a ``summary`` line, an interrupted run, or any other incompleteness is a
regression, never a pass.
"""

from __future__ import annotations

import json
import math
import re
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from normgate.reports import declarations as decl_mod
from normgate.reports.load import (
    Bench,
    BenchFile,
    CheckKey,
    CheckStats,
    LoadError,
    Run,
    best_times,
    clean_text,
    declarations,
    group_checks,
    output_order,
)

FORMAT = "normgate-baseline/2"
DEFAULT_BUDGET: dict[str, float] = {"max_ulp_growth": 0.25, "min_cases_fraction": 0.5}
#: The range each budget must lie in (inclusive); anything else, NaN included, is malformed.
BUDGET_RANGE: dict[str, tuple[float, float]] = {"max_ulp_growth": (0.0, 1e6), "min_cases_fraction": (0.0, 1.0)}
#: A worst-case error of up to one correct rounding is never a regression.
ULP_FLOOR = 0.5
SOURCE_FIELDS = ("device", "examples", "gpu", "interpreter", "normgate", "seed", "torch", "triton")
#: What a PR comment shows at most; the rest is in the report and the JUnit file.
MAX_LISTED = 40

BenchKey = tuple[str, str, str, str, int, int]


# ----------------------------------------------------------------------------- the baseline


@dataclass(frozen=True)
class KnownCase:
    """One failing case a baseline accepts: its case key, verdict, and worst ULP error per output."""

    case: str
    verdict: str
    max_ulp: tuple[tuple[str, float], ...] = ()

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"case": self.case, "verdict": self.verdict}
        if self.max_ulp:
            out["max_ulp"] = {o: _stable(v) for o, v in self.max_ulp}
        return out


def known_case_of(r: Mapping[str, Any]) -> KnownCase:
    from normgate.reports.load import _num

    errors = r.get("errors") if isinstance(r.get("errors"), dict) else {}
    return KnownCase(
        str(r.get("case") or ""),
        str(r["verdict"]),
        tuple(sorted((str(o), _num(e.get("max_ulp"))) for o, e in errors.items() if isinstance(e, dict))),
    )


@dataclass
class Entry:
    """What the baseline records for one check."""

    cases: int
    verdicts: dict[str, int]
    max_ulp: dict[str, float] = field(default_factory=dict)
    worst_ratio: dict[str, float] = field(default_factory=dict)
    known: list[KnownCase] = field(default_factory=list)  # the failing cases it accepts

    @property
    def clean(self) -> bool:
        return not (self.verdicts.get("fail") or self.verdicts.get("error"))

    @property
    def ran(self) -> int:
        return self.cases - self.verdicts.get("skip", 0)


@dataclass
class Baseline:
    budget: dict[str, float]
    entries: dict[CheckKey, Entry]
    bench: dict[BenchKey, float] = field(default_factory=dict)  # time in microseconds
    bench_gpu: str = ""
    source: dict[str, Any] = field(default_factory=dict)
    declarations: dict[str, dict[str, Any]] = field(default_factory=dict)  # kernel -> what it claims


def entry_of(g: CheckStats) -> Entry:
    return Entry(
        cases=g.cases,
        verdicts={v: n for v, n in sorted(g.verdicts.items()) if n},
        max_ulp={o: s.max_ulp for o, s in g.outputs.items()},
        worst_ratio={o: s.max_ratio for o, s in g.outputs.items()},
        known=sorted((known_case_of(f) for f in g.failures), key=lambda k: (k.case, k.verdict)),
    )


def make_baseline(
    run: Run, bench: Sequence[BenchFile] = (), budget: Mapping[str, float] | None = None
) -> Baseline:
    """A baseline from a finished run (and optionally benchmark files)."""
    groups = group_checks(run.results)
    times = best_times(bench)
    gpus = sorted({b.gpu for b in times.values() if b.gpu})
    env = run.env or {}
    return Baseline(
        budget={**DEFAULT_BUDGET, **(budget or {})},
        entries={k: entry_of(g) for k, g in groups.items()},
        bench={k: b.time_us for k, b in times.items()},
        bench_gpu=", ".join(gpus),
        source={f: env[f] for f in SOURCE_FIELDS if f in env},
        declarations=declarations(run),
    )


def _stable(x: float) -> float | str:
    """Six significant digits (stable across platforms' float printing); inf/nan as strings."""
    if math.isnan(x) or math.isinf(x):
        return str(x)
    return float(f"{x:.6g}")


def _line(obj: Mapping[str, Any]) -> str:
    return json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(", ", ": "))


def dump_baseline(b: Baseline) -> str:
    """Diff-friendly JSON: sorted keys, one check or benchmark per line."""
    checks = []
    for key in sorted(b.entries):
        e = b.entries[key]
        item: dict[str, Any] = {**key.as_dict(), "cases": e.cases, "verdicts": e.verdicts}
        if e.max_ulp:
            item["max_ulp"] = {o: _stable(v) for o, v in e.max_ulp.items()}
            item["worst_ratio"] = {o: _stable(v) for o, v in e.worst_ratio.items()}
        if e.known:
            item["known"] = [k.as_dict() for k in e.known]
        checks.append(_line(item))
    decls = [_line({"kernel": k, **d}) for k, d in sorted(b.declarations.items())]
    bench = [
        _line(
            {
                "kernel": k[0],
                "op": k[1],
                "pass": k[2],
                "dtype": k[3],
                "M": k[4],
                "N": k[5],
                "time_us": _stable(t),
            }
        )
        for k, t in sorted(b.bench.items())
    ]

    def block(items: list[str]) -> str:
        return "[\n    " + ",\n    ".join(items) + "\n  ]" if items else "[]"

    parts = [
        f'  "bench": {block(bench)}',
        f'  "bench_gpu": {json.dumps(b.bench_gpu, ensure_ascii=False)}',
        f'  "budget": {_line({k: _stable(v) for k, v in b.budget.items()})}',
        f'  "checks": {block(checks)}',
        f'  "declarations": {block(decls)}',
        f'  "format": {json.dumps(FORMAT)}',
        f'  "source": {_line(b.source)}',
    ]
    return "{\n" + ",\n".join(parts) + "\n}\n"


def _float(v: Any, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float | str):
        raise ValueError(f"{what} must be a number")
    return float(v)


def _budget(k: Any, v: Any) -> float:
    if k not in BUDGET_RANGE:
        raise ValueError(f"unknown budget {k!r}; known: {', '.join(BUDGET_RANGE)}")
    x = _float(v, f"budget.{k}")
    lo, hi = BUDGET_RANGE[k]
    if not lo <= x <= hi:  # also refuses nan
        raise ValueError(f"budget.{k} is {x:g}: it must be a finite number from {lo:g} to {hi:g}")
    return x


def _known(c: Mapping[str, Any]) -> list[KnownCase]:
    out = []
    for k in c.get("known") or []:
        out.append(
            KnownCase(
                str(k["case"]),
                str(k["verdict"]),
                tuple(sorted((str(o), _float(v, "known max_ulp")) for o, v in dict(k.get("max_ulp") or {}).items())),
            )
        )
    return out


def parse_baseline(path: str, text: str) -> Baseline:
    """Read a baseline; anything unexpected is a :class:`LoadError` naming the file."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise LoadError(
            f"{path}:{e.lineno}: not valid JSON ({e.msg}); regenerate it with normgate baseline"
        ) from None
    if isinstance(data, dict) and data.get("format") == "normgate-baseline/1":
        raise LoadError(
            f"{path}: an older baseline (normgate-baseline/1, without declarations and known cases); "
            "regenerate it with normgate baseline results.jsonl -o baseline.json"
        )
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise LoadError(
            f'{path}: not a normgate baseline (expected "format": "{FORMAT}"); '
            "make one with normgate baseline results.jsonl -o baseline.json"
        )
    try:
        budget = {**DEFAULT_BUDGET, **{k: _budget(k, v) for k, v in dict(data.get("budget") or {}).items()}}
        entries: dict[CheckKey, Entry] = {}
        for i, c in enumerate(data.get("checks") or []):
            key = CheckKey(*(str(c[f]) for f in ("kernel", "op", "variant", "dtype", "check")))
            if key in entries:
                raise ValueError(f"check #{i + 1} ({key.short()}) appears twice")
            entries[key] = Entry(
                cases=int(c["cases"]),
                verdicts={str(v): int(n) for v, n in dict(c.get("verdicts") or {}).items()},
                max_ulp={str(o): _float(v, "max_ulp") for o, v in dict(c.get("max_ulp") or {}).items()},
                worst_ratio={
                    str(o): _float(v, "worst_ratio") for o, v in dict(c.get("worst_ratio") or {}).items()
                },
                known=_known(c),
            )
        bench: dict[BenchKey, float] = {}
        for b in data.get("bench") or []:
            bench[
                (str(b["kernel"]), str(b["op"]), str(b["pass"]), str(b["dtype"]), int(b["M"]), int(b["N"]))
            ] = _float(b["time_us"], "time_us")
        decls: dict[str, dict[str, Any]] = {}
        for d in data.get("declarations") or []:
            d = dict(d)
            kernel = str(d.pop("kernel"))
            if kernel in decls:
                raise ValueError(f"two declarations of kernel {kernel!r}")
            decls[kernel] = d
        undeclared = sorted({k.kernel for k in entries} - set(decls))
        if undeclared:
            raise ValueError(f"no declaration of kernel {undeclared[0]!r}")
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        what = f"missing field {e}" if isinstance(e, KeyError) else str(e)
        raise LoadError(
            f"{path}: malformed baseline ({what}); regenerate it with normgate baseline"
        ) from None
    return Baseline(
        budget=budget,
        entries=entries,
        bench=bench,
        bench_gpu=str(data.get("bench_gpu") or ""),
        source=dict(data.get("source") or {}),
        declarations=decls,
    )


def _read_baseline(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        raise LoadError(f"{path}: no such file (make a baseline with normgate baseline)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise LoadError(f"{path}: cannot read ({e})") from None


def load_baseline(path: str) -> Baseline:
    return parse_baseline(path, _read_baseline(path))


# ----------------------------------------------------------------------------- baseline vs baseline


@dataclass(frozen=True)
class BaselineChange:
    loosened: bool
    message: str


def compare_baselines(base: Baseline, new: Baseline) -> list[BaselineChange]:
    """How ``new`` (the one the gate uses) differs from ``base`` (the base branch's); loosenings first."""
    out: list[BaselineChange] = []
    for k in sorted(set(base.budget) | set(new.budget)):
        b, n = base.budget.get(k), new.budget.get(k)
        if b == n or b is None or n is None:
            continue
        looser = n > b if k != "min_cases_fraction" else n < b
        out.append(BaselineChange(looser or n != n, f"budget {k}: {b:g} → {n:g}"))
    for kernel in sorted(set(base.declarations) | set(new.declarations)):
        if kernel not in new.declarations:
            continue  # its checks are listed as dropped
        if kernel not in base.declarations:
            out.append(BaselineChange(False, f"added declaration of {kernel}"))
            continue
        out.extend(
            BaselineChange(c.loosened, c.message)
            for c in decl_mod.compare(kernel, base.declarations[kernel], new.declarations[kernel])
        )
    out.extend(_dropped_checks(base, new))
    for key in sorted(new.entries):
        out.extend(_entry_changes(key, base.entries.get(key), new.entries.get(key)))
    out.extend(_dropped_benchmarks(base, new))
    for bk in sorted(set(new.bench)):
        b_t, n_t = base.bench.get(bk), new.bench[bk]
        name = f"benchmark {bench_name(bk)}"
        if b_t is None:
            out.append(BaselineChange(False, f"added {name}"))
        elif n_t != b_t:
            out.append(BaselineChange(n_t > b_t, f"{name}: {b_t:g} → {n_t:g} µs"))
    if base.source.get("interpreter") != new.source.get("interpreter"):
        out.append(
            BaselineChange(
                False,
                f"source interpreter: {base.source.get('interpreter')} → {new.source.get('interpreter')}",
            )
        )
    out.sort(key=lambda c: not c.loosened)
    return out


def _dropped_checks(base: Baseline, new: Baseline) -> list[BaselineChange]:
    """Checks the new baseline no longer holds: one line per kernel or dtype when all of it went."""
    dropped = sorted(set(base.entries) - set(new.entries))
    out = []
    for kernel in sorted({k.kernel for k in dropped}):
        mine = [k for k in dropped if k.kernel == kernel]
        if len(mine) == sum(1 for k in base.entries if k.kernel == kernel):
            out.append(BaselineChange(True, f"dropped kernel {kernel} ({_plural(len(mine), 'check')})"))
            continue
        for dtype in sorted({k.dtype for k in mine}):
            of_dtype = [k for k in mine if k.dtype == dtype]
            if len(of_dtype) == sum(1 for k in base.entries if k.kernel == kernel and k.dtype == dtype):
                out.append(
                    BaselineChange(True, f"dropped {kernel} {dtype} ({_plural(len(of_dtype), 'check')})")
                )
            else:
                out.extend(BaselineChange(True, f"dropped check {_check_name(k)}") for k in of_dtype)
    return out


def _dropped_benchmarks(base: Baseline, new: Baseline) -> list[BaselineChange]:
    dropped = sorted(set(base.bench) - set(new.bench))
    if dropped and len(dropped) == len(base.bench):
        return [BaselineChange(True, f"dropped all {len(dropped)} benchmark times")]
    out = []
    for kernel in sorted({k[0] for k in dropped}):
        mine = [k for k in dropped if k[0] == kernel]
        if len(mine) == sum(1 for k in base.bench if k[0] == kernel):
            out.append(BaselineChange(True, f"dropped {len(mine)} benchmark times of {kernel}"))
        else:
            out.extend(BaselineChange(True, f"dropped benchmark {bench_name(k)}") for k in mine)
    return out


def _check_name(key: CheckKey) -> str:
    return f"{key.kernel} {key.dtype} {key.check} ({key.op} {key.variant})".replace(" ()", "")


def _entry_changes(key: CheckKey, b: Entry | None, n: Entry | None) -> list[BaselineChange]:
    name = _check_name(key)
    assert n is not None  # dropped checks are listed by _dropped_checks
    if b is None:
        known = "" if n.clean else " with known failures"
        return [BaselineChange(not n.clean, f"added check {name}{known}")]
    out = []
    if b.clean and not n.clean:
        out.append(BaselineChange(True, f"{name}: now accepts failures ({_verdicts(n.verdicts)})"))
    elif not b.clean and n.clean:
        out.append(BaselineChange(False, f"{name}: known failures removed"))
    elif not b.clean:
        kinds = [v for v in ("fail", "error") if n.verdicts.get(v) and not b.verdicts.get(v)]
        if kinds:
            out.append(BaselineChange(True, f"{name}: now accepts {' and '.join(kinds)} ({_verdicts(n.verdicts)})"))
        for k in n.known:
            was = _match_known(k, b.known)
            if was is None:
                out.append(BaselineChange(True, f"{name}: accepts a new failing case ({k.verdict}) {k.case}"))
            elif _worse_than_known(k, was, 0.0):
                out.append(BaselineChange(True, f"{name}: accepts worse errors on known case {k.case}"))
    if n.ran < b.ran:
        out.append(BaselineChange(True, f"{name}: cases {b.ran} → {n.ran}"))
    for o in sorted(set(b.max_ulp) | set(n.max_ulp), key=output_order):
        bu, nu = b.max_ulp.get(o), n.max_ulp.get(o)
        if nu is None:
            out.append(BaselineChange(True, f"{name}: output {o} no longer checked"))
        elif bu is not None and nu > bu:
            out.append(BaselineChange(True, f"{name}: {o} max ULP {bu:g} → {nu:g}"))
    return out


def _verdicts(v: Mapping[str, int]) -> str:
    return ", ".join(f"{n} {k}" for k, n in sorted(v.items()) if n) or "no cases"


# ----------------------------------------------------------------------------- the gate


@dataclass
class Finding:
    """One thing the gate found. ``regression`` findings fail it; the others are notes."""

    kind: str
    message: str
    regression: bool
    key: CheckKey | None = None
    bench: BenchKey | None = None
    replays: list[str] = field(default_factory=list)


@dataclass
class GateResult:
    results_path: str
    baseline_path: str
    findings: list[Finding]
    keys: list[CheckKey]  # every check the gate looked at (baseline and results)
    bench_keys: list[BenchKey]
    statuses: dict[CheckKey, str]  # "ok", "regressed", "known-failure", "skipped", "new"
    cases: int
    baseline_changes: list[BaselineChange] = field(default_factory=list)
    base_baseline_path: str = ""
    #: how the changed pair is named in the summary, when not "baseline vs base branch's"
    changes_label: str = ""
    report_url: str = ""
    env: dict[str, Any] = field(default_factory=dict)

    @property
    def regressions(self) -> list[Finding]:
        return [f for f in self.findings if f.regression]

    @property
    def notes(self) -> list[Finding]:
        return [f for f in self.findings if not f.regression]

    @property
    def passed(self) -> bool:
        return not self.regressions

    @property
    def exit_code(self) -> int:
        return 0 if self.passed else 1


class GateInputError(Exception):
    """Inputs that cannot be compared (a usage error: exit 2)."""


def check_comparable(run: Run, baseline: Baseline, bench: Sequence[BenchFile]) -> None:
    """Refuse comparisons that would mislead rather than report them as regressions or passes."""
    if not baseline.entries:
        raise GateInputError(
            "the baseline has no checks: nothing to hold the results to; "
            "regenerate it with normgate baseline from a complete run"
        )
    want, have = baseline.source.get("interpreter"), run.interpreter
    if want is not None and have is not None and bool(want) != have:
        raise GateInputError(
            f"{run.path} ran with interpreter={have} but the baseline was made with "
            f"interpreter={bool(want)}: "
            "interpreter runs round bf16 differently and cannot be compared with GPU runs; use a baseline "
            "made from the same kind of run"
        )
    if bench:
        if not baseline.bench:
            raise GateInputError(
                "--bench given but the baseline has no benchmark times; add them with "
                "normgate baseline results.jsonl --bench bench.json -o baseline.json"
            )
        gpus = sorted({b.gpu for f in bench for b in f.benches if b.gpu})
        if baseline.bench_gpu and gpus and ", ".join(gpus) != baseline.bench_gpu:
            raise GateInputError(
                f"benchmarks ran on {', '.join(gpus)} but the baseline's on {baseline.bench_gpu}: "
                "timings from different GPUs cannot be compared"
            )


def evaluate(
    run: Run,
    baseline: Baseline,
    bench: Sequence[BenchFile] = (),
    max_slowdown: float = 0.05,
    baseline_path: str = "baseline.json",
) -> GateResult:
    """Compare a run (and benchmarks) with a baseline. Call :func:`check_comparable` first."""
    findings = [Finding("incomplete run", p.message, True) for p in run.problems]
    findings.extend(_declaration_findings(run, baseline))
    groups = group_checks(run.results)
    statuses: dict[CheckKey, str] = {}
    for key in sorted(set(baseline.entries) | set(groups)):
        fs, status = _check_findings(key, baseline.entries.get(key), groups.get(key), baseline.budget)
        findings.extend(fs)
        statuses[key] = status
    bench_keys: list[BenchKey] = []
    if bench:
        bf, bench_keys = _bench_findings(baseline.bench, best_times(bench), max_slowdown)
        findings.extend(bf)
    elif baseline.bench:
        findings.append(
            Finding(
                "not compared",
                f"{len(baseline.bench)} benchmark times in the baseline were not "
                "compared: no --bench file given",
                False,
            )
        )
    findings.extend(_source_notes(run, baseline))
    return GateResult(
        results_path=run.path,
        baseline_path=baseline_path,
        findings=findings,
        keys=sorted(statuses),
        bench_keys=bench_keys,
        statuses=statuses,
        cases=len(run.results),
        env=dict(run.env or {}),
    )


def _declaration_findings(run: Run, baseline: Baseline) -> list[Finding]:
    """What the run's kernels claim against what the baseline recorded for them: a loosened claim
    is a regression (the pull request moved its own goalposts), any other change a note; both are
    listed first in the summary."""
    out = []
    for kernel, now in declarations(run).items():
        base = baseline.declarations.get(kernel)
        if base is None:
            continue  # a new kernel: its checks are new checks
        for c in decl_mod.compare(kernel, base, now):
            out.append(
                Finding(
                    "declaration",
                    c.message + ("; the baseline's declaration is what counts" if c.loosened else ""),
                    c.loosened,
            )
            )
    return out


def _replays(g: CheckStats, limit: int = 3) -> list[str]:
    return [str(f["replay"]) for f in g.failures if f.get("replay")][:limit]


def _first_reason(g: CheckStats) -> str:
    for f in g.failures:
        if f.get("reason"):
            return one_line(str(f["reason"]), 160)
    return ""


def _check_findings(
    key: CheckKey, base: Entry | None, now: CheckStats | None, budget: Mapping[str, float]
) -> tuple[list[Finding], str]:
    if now is None:
        assert base is not None
        return [
            Finding("missing", f"in the baseline ({base.cases} cases) but absent from the results", True, key)
        ], "regressed"
    counts = _verdicts(now.verdicts)
    if base is None:
        if now.clean:
            return [
                Finding(
                    "new check", f"not in the baseline ({counts}); add it with normgate baseline", False, key
                )
            ], "new"
        return [
            Finding(
                "new failure",
                f"{counts} (check not in the baseline): {_first_reason(now)}",
                True,
                key,
                replays=_replays(now),
            )
        ], "regressed"
    growth = budget.get("max_ulp_growth", 0.0)
    out: list[Finding] = []
    if not now.clean:
        if base.clean:  # that alone fails it; its figures add nothing
            return [
                Finding(
                    "new failure",
                    f"{counts}; baseline: {_verdicts(base.verdicts)}. {_first_reason(now)}",
                    True,
                    key,
                    replays=_replays(now),
                )
            ], "regressed"
        else:
            out.extend(_known_case_findings(key, base, now, growth))
    out.extend(_coverage_findings(key, base, now, budget.get("min_cases_fraction", 0.0)))
    out.extend(_accuracy_findings(key, base, now, growth))
    if any(f.regression for f in out):
        return out, "regressed"
    if not now.clean:
        out.append(
            Finding(
                "known failure",
                f"still failing as in the baseline ({counts}), no case worse",
                False,
                key,
                replays=_replays(now),
            )
        )
        return out, "known-failure"
    if not base.clean:
        out.append(
            Finding(
                "fixed",
                f"known failures in the baseline now pass ({counts}); update the baseline",
                False,
                key,
            )
        )
    return out, ("skipped" if now.ran == 0 else "ok")


def _match_known(k: KnownCase, known: Sequence[KnownCase]) -> KnownCase | None:
    """The baseline's record of the same failing case (same case key and verdict), if any."""
    return next((b for b in known if b.case == k.case and b.verdict == k.verdict), None)


def _worse_than_known(now: KnownCase, was: KnownCase, growth: float) -> list[str]:
    """The outputs on which a known failing case now fails worse than the baseline allows."""
    before, after = dict(was.max_ulp), dict(now.max_ulp)
    worse = []
    for o, b in sorted(before.items(), key=lambda x: output_order(x[0])):
        a = after.get(o, math.nan)
        allowed = max(b, ULP_FLOOR) * (1 + growth)
        if not a <= allowed and not (math.isinf(a) and math.isinf(b)) and not (math.isnan(a) and math.isnan(b)):
            worse.append(f"{o} {a:.4g} ULP, known {b:.4g}")
    return worse


def _known_case_findings(key: CheckKey, base: Entry, now: CheckStats, growth: float) -> list[Finding]:
    """Known failures are per case: each failing case now must be one the baseline records, failing
    the same way and no worse; the number of failing cases must not grow."""
    out = []
    unmatched = list(base.known)
    for f in now.failures:
        k = known_case_of(f)
        replay = [str(f["replay"])] if f.get("replay") else []
        was = _match_known(k, unmatched)
        if was is None:
            other = next((b.verdict for b in base.known if b.case == k.case), None)
            how = f"known as {other}, now {k.verdict}" if other else f"{k.verdict}, not a known failing case"
            out.append(
                Finding(
                    "new failure",
                    f"case {k.case}: {how}. {one_line(str(f.get('reason') or ''), 160)}",
                    True,
                    key,
                    replays=replay,
                )
            )
            continue
        unmatched.remove(was)
        worse = _worse_than_known(k, was, growth)
        if worse:
            out.append(
                Finding(
                    "worse failure",
                    f"known failing case {k.case} fails worse: {'; '.join(worse)} "
                    f"(allowed growth {growth:g})",
                    True,
                    key,
                    replays=replay,
                )
            )
    failing = now.verdicts.get("fail", 0) + now.verdicts.get("error", 0)
    known_n = base.verdicts.get("fail", 0) + base.verdicts.get("error", 0)
    if failing > known_n and not out:
        out.append(Finding("new failure", f"{failing} failing cases, the baseline knows {known_n}", True, key))
    return out[:MAX_LISTED]


def _coverage_findings(key: CheckKey, base: Entry, now: CheckStats, fraction: float) -> list[Finding]:
    counts = _verdicts(now.verdicts)
    if base.ran and now.ran == 0:
        return [
            Finding("no longer runs", f"every case skipped ({counts}); the baseline ran {base.ran}", True, key)
        ]
    if now.ran < fraction * base.ran:
        return [
            Finding(
                "coverage dropped",
                f"ran {now.ran} cases, the baseline {base.ran} (budget: at least {fraction:g} of them)",
                True,
                key,
            )
        ]
    return []


def _accuracy_findings(key: CheckKey, base: Entry, now: CheckStats, growth: float) -> list[Finding]:
    out = []
    for o in sorted(base.max_ulp, key=output_order):
        before = base.max_ulp[o]
        stats = now.outputs.get(o)
        if stats is None:
            out.append(
                Finding(
                    "accuracy", f"output {o} has no accuracy data (baseline max {before:g} ULP)", True, key
                )
            )
            continue
        allowed = max(before, ULP_FLOOR) * (1 + growth)
        after = stats.max_ulp
        if not after <= allowed:  # also catches nan
            out.append(
                Finding(
                    "accuracy",
                    f"{o}: max error {after:.4g} ULP, baseline {before:.4g} "
                    f"(allowed {allowed:.4g} with max_ulp_growth {growth:g})",
                    True,
                    key,
                )
            )
    return out


def _bench_findings(
    base: Mapping[BenchKey, float], now: Mapping[BenchKey, Bench], max_slowdown: float
) -> tuple[list[Finding], list[BenchKey]]:
    out = []
    for k in sorted(set(base) | set(now)):
        name = bench_name(k)
        if k not in now:
            out.append(
                Finding("missing benchmark", f"{name}: in the baseline but not measured", True, bench=k)
            )
        elif k not in base:
            out.append(
                Finding(
                    "new benchmark", f"{name}: {now[k].time_us:.4g} µs, not in the baseline", False, bench=k
                )
            )
        else:
            slow = now[k].time_us / base[k] - 1 if base[k] > 0 else math.inf
            if not slow <= max_slowdown:
                out.append(
                    Finding(
                        "slowdown",
                        f"{name}: {now[k].time_us:.4g} µs vs {base[k]:.4g} µs "
                        f"(+{slow:.1%}, allowed +{max_slowdown:.1%})",
                        True,
                        bench=k,
                    )
                )
    return out, sorted(set(base) | set(now))


def bench_name(k: BenchKey) -> str:
    return f"{k[0]} {k[1]} {k[2]} {k[3]} M={k[4]} N={k[5]}"


def _source_notes(run: Run, baseline: Baseline) -> list[Finding]:
    env = run.env or {}
    diffs = [
        f"{f} {baseline.source[f]} → {env[f]}"
        for f in ("torch", "triton", "gpu", "normgate", "seed", "examples")
        if f in baseline.source and f in env and baseline.source[f] != env[f]
    ]
    return (
        [Finding("environment", "results differ from the baseline's run in " + "; ".join(diffs), False)]
        if diffs
        else []
    )


# ----------------------------------------------------------------------------- Markdown summary

_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|~])")


def one_line(text: Any, limit: int = 200) -> str:
    """One line of at most ``limit`` characters, without terminal codes or control characters."""
    text = " ".join(clean_text(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def md(text: Any) -> str:
    """Escape text for Markdown (GitHub): no HTML, links, emphasis or table breaks from data."""
    escaped = _MD_SPECIAL.sub(r"\\\1", one_line(text, 300).replace("&", "&amp;"))
    return escaped.replace("@", "&#64;")  # no @-mentions from data


def md_code_block(lines: Iterable[str], lang: str = "sh") -> str:
    body = "\n".join(lines)
    longest = max((len(m) for m in re.findall(r"`+", body)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{lang}\n{body}\n{fence}"


def _key_label(key: CheckKey | None) -> tuple[str, str, str]:
    if key is None:
        return ("", "", "")
    return (key.kernel, key.dtype, key.check)


def _collapse_missing(findings: list[Finding], all_keys: Iterable[CheckKey]) -> list[Finding]:
    """A kernel missing from the results gives one line, not one per check."""
    per_kernel = Counter(k.kernel for k in all_keys)
    missing = Counter(f.key.kernel for f in findings if f.kind == "missing" and f.key)
    whole = {k for k, n in missing.items() if n == per_kernel[k] and n > 1}
    out, done = [], set()
    for f in findings:
        if f.kind == "missing" and f.key and f.key.kernel in whole:
            if f.key.kernel not in done:
                done.add(f.key.kernel)
                out.append(
                    Finding(
                        "missing kernel",
                        f"all {missing[f.key.kernel]} of its checks in the baseline are "
                        "absent from the results",
                        True,
                        CheckKey(f.key.kernel, "", "", "", ""),
                    )
                )
            continue
        out.append(f)
    return out


def render_summary(g: GateResult) -> str:
    """The Markdown summary for a pull request comment: baseline changes, verdict, regressions, notes."""
    parts: list[str] = []
    decl = [f for f in g.findings if f.kind == "declaration"]
    if decl:
        parts.append(_declaration_md(decl))
    if g.baseline_changes:
        parts.append(_baseline_change_md(g))
    regs = _collapse_missing(g.regressions, g.keys)
    n_checks = len(g.keys)
    if g.passed:
        parts.append("## ✅ normgate gate: PASS")
    else:
        parts.append(f"## ❌ normgate gate: FAIL ({_plural(len(regs), 'regression')})")
    parts.append(_context_line(g, n_checks))
    if regs:
        parts.append(_findings_table("Regressions", regs))
        replays = [(f, r) for f in regs for r in f.replays]
        if replays:
            lines = []
            for f, r in replays[:MAX_LISTED]:
                kernel, dtype, check = _key_label(f.key)
                lines += [f"# {one_line(f'{kernel} {dtype} {check}', 120)}", one_line(r, 2000)]
            parts.append("Replay the failing cases:\n\n" + md_code_block(lines))
    notes = g.notes
    if notes:
        parts.append(
            f"<details><summary>Notes ({len(notes)})</summary>\n\n{_findings_table('', notes)}\n\n</details>"
        )
    return "\n\n".join(p for p in parts if p) + "\n"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _context_line(g: GateResult, n_checks: int) -> str:
    env = g.env
    bits = [
        f"Results {md(g.results_path)} against baseline {md(g.baseline_path)}: {n_checks} checks, "
        f"{g.cases} result lines"
    ]
    if g.bench_keys:
        bits.append(f"{len(g.bench_keys)} benchmarks")
    where = ", ".join(md(env[k]) for k in ("gpu", "torch", "triton") if env.get(k))
    if where:
        bits.append(where)
    if env.get("interpreter"):
        bits.append("Triton interpreter (CPU)")
    line = "; ".join(bits) + "."
    if g.report_url:
        line += f"\n\n[Full HTML report]({g.report_url})"
    return line


def _findings_table(title: str, findings: Sequence[Finding]) -> str:
    rows = ["| what | kernel | dtype | check | detail |", "|---|---|---|---|---|"]
    for f in findings[:MAX_LISTED]:
        kernel, dtype, check = _key_label(f.key)
        if f.bench:
            kernel, dtype, check = (
                f.bench[0],
                f.bench[3],
                f"{f.bench[1]} {f.bench[2]} M={f.bench[4]} N={f.bench[5]}",
            )
        rows.append(f"| {md(f.kind)} | {md(kernel)} | {md(dtype)} | {md(check)} | {md(f.message)} |")
    if len(findings) > MAX_LISTED:
        rows.append(f"| … | {len(findings) - MAX_LISTED} more | | | see the JUnit file or the report |")
    head = f"### {title}\n\n" if title else ""
    return head + "\n".join(rows)


def _declaration_md(findings: Sequence[Finding]) -> str:
    loosened = [f for f in findings if f.regression]
    lines = [
        f"### ⚠️ Declarations changed: {len(loosened)} loosened, {len(findings) - len(loosened)} other "
        "(what the kernels claim in normgate.register, against the baseline)",
        "",
    ]
    for f in (loosened + [f for f in findings if not f.regression])[:MAX_LISTED]:
        lines.append(f"- {'**loosened**: ' if f.regression else ''}{md(f.message)}")
    if len(findings) > MAX_LISTED:
        lines.append(f"- … and {len(findings) - MAX_LISTED} more")
    return "\n".join(lines)


def _baseline_change_md(g: GateResult) -> str:
    loosened = [c for c in g.baseline_changes if c.loosened]
    other = [c for c in g.baseline_changes if not c.loosened]
    head = (
        f"### ⚠️ The baseline changed: {len(loosened)} loosened, {len(other)} other "
        f"({md(g.changes_label or f'{g.baseline_path} vs {g.base_baseline_path} from the base branch')})"
    )
    lines = [head, "", "A reviewer should confirm these changes are intended:" if loosened else ""]
    for c in (loosened + other)[:MAX_LISTED]:
        lines.append(f"- {'**loosened**: ' if c.loosened else ''}{md(c.message)}")
    if len(g.baseline_changes) > MAX_LISTED:
        lines.append(f"- … and {len(g.baseline_changes) - MAX_LISTED} more")
    return "\n".join(line for line in lines if line is not None)


def plain_lines(g: GateResult) -> list[str]:
    """What the gate prints on stdout: verdict first, then each regression on one line."""
    regs = _collapse_missing(g.regressions, g.keys)
    head = "normgate gate: PASS" if g.passed else f"normgate gate: FAIL ({_plural(len(regs), 'regression')})"
    lines = [head]
    decl = [f for f in g.findings if f.kind == "declaration"]
    if decl:
        lines.append(f"  declarations changed: {len(decl)} ({sum(f.regression for f in decl)} loosened)")
    loosened = [c for c in g.baseline_changes if c.loosened]
    if loosened:
        lines.append(
            f"  baseline loosened vs {g.base_baseline_path}: {len(loosened)} change(s), "
            f"e.g. {loosened[0].message}"
        )
    for f in regs:
        kernel, dtype, check = _key_label(f.key)
        if f.bench:
            kernel, dtype, check = "benchmark", "", ""
        what = " ".join(x for x in (kernel, dtype, check) if x)
        lines.append(f"  {f.kind}: {one_line(what, 120)}: {one_line(f.message, 240)}")
        lines.extend(f"    replay: {one_line(r, 400)}" for r in f.replays[:1])
    return lines


# ----------------------------------------------------------------------------- JUnit XML

_XML_BAD = re.compile("[^\t\n\r\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def xml_text(text: Any) -> str:
    """Text XML 1.0 can hold: control characters (ANSI colours, NULs in exception text) removed."""
    return _XML_BAD.sub("\ufffd", str(text))


def render_junit(g: GateResult) -> str:
    """JUnit XML: one testcase per check (and benchmark, and one for the run's integrity)."""
    by_key: dict[CheckKey, list[Finding]] = {}
    by_bench: dict[BenchKey, list[Finding]] = {}
    run_level: list[Finding] = []
    for f in g.findings:
        if f.key is not None:
            by_key.setdefault(f.key, []).append(f)
        elif f.bench is not None:
            by_bench.setdefault(f.bench, []).append(f)
        else:
            run_level.append(f)
    suite = ET.Element("testsuite", name="normgate.gate")
    props = ET.SubElement(suite, "properties")
    for name, value in (("results", g.results_path), ("baseline", g.baseline_path), ("report", g.report_url)):
        if value:
            ET.SubElement(props, "property", name=name, value=xml_text(value))
    _testcase(suite, "normgate.run", "run integrity", run_level, "")
    for key in g.keys:
        name = f"{key.dtype} {key.check}" + (f" [{key.op} {key.variant}]" if key.op or key.variant else "")
        _testcase(suite, f"normgate.{key.kernel}", name, by_key.get(key, []), g.statuses.get(key, ""))
    for bk in g.bench_keys:
        _testcase(
            suite,
            f"normgate.bench.{bk[0]}",
            f"{bk[1]} {bk[2]} {bk[3]} M={bk[4]} N={bk[5]}",
            by_bench.get(bk, []),
            "",
        )
    cases = suite.findall("testcase")
    suite.set("tests", str(len(cases)))
    suite.set("failures", str(sum(1 for c in cases if c.find("failure") is not None)))
    suite.set("errors", "0")
    suite.set("skipped", str(sum(1 for c in cases if c.find("skipped") is not None)))
    root = ET.Element(
        "testsuites",
        name="normgate gate",
        tests=suite.get("tests", "0"),
        failures=suite.get("failures", "0"),
        errors="0",
        skipped=suite.get("skipped", "0"),
    )
    root.append(suite)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def _testcase(suite: ET.Element, classname: str, name: str, findings: list[Finding], status: str) -> None:
    tc = ET.SubElement(suite, "testcase", classname=xml_text(classname), name=xml_text(name), time="0")
    regs = [f for f in findings if f.regression]
    if regs:
        failure = ET.SubElement(
            tc,
            "failure",
            message=xml_text(one_line("; ".join(f"{f.kind}: {f.message}" for f in regs), 500)),
            type=xml_text(regs[0].kind),
        )
        body = [f"{f.kind}: {f.message}" + "".join(f"\nreplay: {r}" for r in f.replays) for f in regs]
        failure.text = xml_text("\n".join(body))
    elif status in ("known-failure", "skipped"):
        msg = "known failure recorded in the baseline" if status == "known-failure" else "every case skipped"
        ET.SubElement(tc, "skipped", message=msg)
    notes = [f for f in findings if not f.regression]
    if notes:
        ET.SubElement(tc, "system-out").text = xml_text("\n".join(f"{f.kind}: {f.message}" for f in notes))


# ----------------------------------------------------------------------------- device kinds

#: A baseline file with a section per device kind (a CI matrix of GPUs); one kind alone is
#: written as a plain baseline, so a single-machine repository's file does not change shape.
SET_FORMAT = "normgate-baselines/1"


def baseline_kind(b: Baseline) -> str:
    from normgate.reports.load import device_kind

    return device_kind(b.source)


def parse_baselines(path: str, text: str) -> dict[str, Baseline]:
    """Every section of a baseline file, by device kind."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        data = None
    if not (isinstance(data, dict) and data.get("format") == SET_FORMAT):
        b = parse_baseline(path, text)
        return {baseline_kind(b): b}
    kinds = data.get("kinds")
    if not isinstance(kinds, dict) or not kinds:
        raise LoadError(f'{path}: malformed baseline ("kinds" must map device kinds to baselines)')
    out: dict[str, Baseline] = {}
    for kind, section in kinds.items():
        b = parse_baseline(f"{path} [{kind}]", json.dumps(section))
        if baseline_kind(b) != kind:
            raise LoadError(f"{path}: the section {kind!r} holds a baseline of device kind {baseline_kind(b)!r}")
        out[str(kind)] = b
    return out


def load_baselines(path: str) -> dict[str, Baseline]:
    return parse_baselines(path, _read_baseline(path))


def dump_baselines(by_kind: Mapping[str, Baseline]) -> str:
    if len(by_kind) == 1:
        return dump_baseline(next(iter(by_kind.values())))
    sections = []
    for kind in sorted(by_kind):
        body = dump_baseline(by_kind[kind]).rstrip("\n").replace("\n", "\n    ")
        sections.append(f"    {json.dumps(kind)}: {body}")
    return '{\n  "format": ' + json.dumps(SET_FORMAT) + ',\n  "kinds": {\n' + ",\n".join(sections) + "\n  }\n}\n"


def compare_baseline_sets(base: Mapping[str, Baseline], new: Mapping[str, Baseline]) -> list[BaselineChange]:
    """Per device kind, as :func:`compare_baselines`; a kind dropped is a loosening (its results
    would no longer be judged), a kind added is listed."""
    out: list[BaselineChange] = []
    multi = len(set(base) | set(new)) > 1
    for kind in sorted(set(base) | set(new)):
        if kind not in new:
            out.append(BaselineChange(True, f"device kind {kind}: its section is dropped from the baseline"))
        elif kind not in base:
            out.append(BaselineChange(False, f"device kind {kind}: a section is added"))
        else:
            out.extend(BaselineChange(c.loosened, f"[{kind}] {c.message}" if multi else c.message)
                       for c in compare_baselines(base[kind], new[kind]))
    out.sort(key=lambda c: not c.loosened)
    return out


def _task_of(key: CheckKey) -> str:
    return f"{key.kernel}/{key.dtype}/{key.check}"


def _attributed(g: GateResult, run: Run, kind: str, multi: bool) -> GateResult:
    """Each finding named with where it came from: the device kind (several kinds in one gate:
    the kernel column carries it) and, for merged shards, the shard and file of its task."""

    def relabel(key: CheckKey | None) -> CheckKey | None:
        if key is None or not multi:
            return key
        return CheckKey(f"{key.kernel} [{kind}]", key.op, key.variant, key.dtype, key.check)

    findings = []
    for f in g.findings:
        where = run.origins.get(_task_of(f.key)) if f.key is not None else None
        message = f.message
        if where:
            message = f"{message} (in {where})"
        if multi and f.key is None:
            message = f"[{kind}] {message}"
        findings.append(Finding(f.kind, message, f.regression, relabel(f.key), f.bench, f.replays))
    g.findings = findings
    g.keys = [relabel(k) for k in g.keys]
    g.statuses = {relabel(k): s for k, s in g.statuses.items()}
    return g


def evaluate_kinds(
    runs: Sequence[Run],
    baselines: Mapping[str, Baseline],
    bench: Sequence[BenchFile] = (),
    max_slowdown: float = 0.05,
    baseline_path: str = "baseline.json",
    accept_new: Iterable[str] = (),
    expect: Iterable[str] = (),
) -> GateResult:
    """Judge the runs of every device kind against the baseline's section for that kind, in one
    verdict. A kind the baseline has no section for fails closed unless ``accept_new`` names it;
    a kind of the baseline with no results is a note, or a regression when ``expect`` names it
    (a matrix job that produced nothing). Runs must already be merged (``load_runs``)."""
    by_kind: dict[str, Run] = {}
    for run in runs:
        if run.kind in by_kind:
            raise GateInputError(
                f"two runs of device kind {run.kind} ({by_kind[run.kind].path} and {run.path}) that are not "
                "shards of one run: the gate judges one run per kind"
            )
        by_kind[run.kind] = run
    accept_new, expect = set(accept_new), set(expect)
    multi = len(by_kind) > 1 or len(baselines) > 1  # then each finding names its kind
    extra: list[Finding] = []
    parts: list[GateResult] = []
    judged: set[str] = set()
    for kind, run in sorted(by_kind.items()):
        base = baselines.get(kind)
        if base is None and len(baselines) == 1 and len(by_kind) == 1:
            # one run, one section, of different kinds: judged against that section all the same
            # (every finding is shown), and the kind itself fails the gate unless accepted
            only_kind, only = next(iter(baselines.items()))
            check_comparable(run, only, bench)  # interpreter vs GPU: exit 2
            if run.env is not None:
                gpu = (run.env or {}).get("gpu") or kind
                extra.append(Finding(
                    "new kind" if kind in accept_new else "unknown kind",
                    f"results from {gpu} (device kind {kind}), the baseline's from {only_kind}"
                    + (": accepted by --accept-new-kind, judged against it" if kind in accept_new else
                       f": its figures are not this kind's; make a baseline on {kind}, or pass "
                       f"--accept-new-kind {kind} to judge it against this one"), kind not in accept_new))
            base, kind = only, only_kind
        if base is None:
            if kind in accept_new:
                extra.append(Finding("new kind", f"device kind {kind} ({run.path}) has no baseline section; "
                                     "accepted by --accept-new-kind, its results are not judged", False))
            else:
                extra.append(Finding("unknown kind", f"results of device kind {kind} ({run.path}), for which the "
                                     f"baseline has no section (it has: {', '.join(sorted(baselines))}): make one "
                                     f"with normgate baseline, or pass --accept-new-kind {kind}", True))
            continue
        check_comparable(run, base, bench if len(by_kind) == 1 else ())
        g = evaluate(run, base, bench if len(by_kind) == 1 else (), max_slowdown, baseline_path=baseline_path)
        parts.append(_attributed(g, run, kind, multi))
        judged.add(kind)
    for kind in sorted(set(baselines) - judged):
        extra.append(Finding("missing kind" if kind in expect else "not judged",
                             f"device kind {kind} is in the baseline but no results of it were given"
                             + (" (--expect-kind)" if kind in expect else ""), kind in expect))
    if len(parts) == 1 and not extra:
        return parts[0]
    keys = [k for g in parts for k in g.keys]
    return GateResult(
        results_path=", ".join(r.path for _, r in sorted(by_kind.items())),
        baseline_path=baseline_path,
        findings=extra + [f for g in parts for f in g.findings],
        keys=keys,
        bench_keys=[k for g in parts for k in g.bench_keys],
        statuses={k: s for g in parts for k, s in g.statuses.items()},
        cases=sum(g.cases for g in parts),
        env=dict(parts[0].env) if parts else {},
    )
