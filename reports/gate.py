"""The gate (``normgate gate``): did a kernel pull request make anything worse?

It holds a run (and benchmarks) to a baseline (``baselines.py``, which describes the budget) and
returns a :class:`GateResult`: findings, each a regression or a note, and a status per check. It
fails closed: a check or benchmark in the baseline and absent from the results, a run without a
``summary`` line, an interrupted run, or any other incompleteness is a regression, never a pass.
What the verdict looks like to people is ``summary.py`` (the PR comment, the lines on stdout) and
``junit.py`` (JUnit XML for CI).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from normgate.reports import declarations as decl_mod
from normgate.reports.baselines import (
    ULP_FLOOR,
    Baseline,
    BaselineChange,
    BenchKey,
    Entry,
    bench_name,
    known_case_of,
    match_known,
    verdict_counts,
    worse_than_known,
)
from normgate.reports.load import (
    Bench,
    BenchFile,
    CheckKey,
    CheckStats,
    Run,
    best_times,
    declarations,
    group_checks,
    output_order,
)
from normgate.reports.text import one_line

#: What a PR comment shows at most; the rest is in the report and the JUnit file.
MAX_LISTED = 40


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
    counts = verdict_counts(now.verdicts)
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
                    f"{counts}; baseline: {verdict_counts(base.verdicts)}. {_first_reason(now)}",
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


def _known_case_findings(key: CheckKey, base: Entry, now: CheckStats, growth: float) -> list[Finding]:
    """Known failures are per case: each failing case now must be one the baseline records, failing
    the same way and no worse; the number of failing cases must not grow."""
    out = []
    unmatched = list(base.known)
    for f in now.failures:
        k = known_case_of(f)
        replay = [str(f["replay"])] if f.get("replay") else []
        was = match_known(k, unmatched)
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
        worse = worse_than_known(k, was, growth)
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
    counts = verdict_counts(now.verdicts)
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


# ----------------------------------------------------------------------------- device kinds


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
