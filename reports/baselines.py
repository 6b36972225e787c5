"""Baselines: what a kernel repo commits to hold its results to.

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
results give the same bytes and a change to it reads well in a diff. A file may hold one section per
device kind (``SET_FORMAT``). Two baselines compare (:func:`compare_baselines`) into the list of
changes a reviewer confirms, loosenings first; the gate itself is ``gate.py``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from normgate.reports import declarations as decl_mod
from normgate.reports.load import (
    BenchFile,
    CheckKey,
    CheckStats,
    LoadError,
    Run,
    best_times,
    declarations,
    group_checks,
    output_order,
)
from normgate.reports.text import plural

FORMAT = "normgate-baseline/2"
DEFAULT_BUDGET: dict[str, float] = {"max_ulp_growth": 0.25, "min_cases_fraction": 0.5}
#: The range each budget must lie in (inclusive); anything else, NaN included, is malformed.
BUDGET_RANGE: dict[str, tuple[float, float]] = {"max_ulp_growth": (0.0, 1e6), "min_cases_fraction": (0.0, 1.0)}
#: A worst-case error of up to one correct rounding is never a regression.
ULP_FLOOR = 0.5
SOURCE_FIELDS = ("device", "examples", "gpu", "interpreter", "normgate", "seed", "torch", "triton")

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
            out.append(BaselineChange(True, f"dropped kernel {kernel} ({plural(len(mine), 'check')})"))
            continue
        for dtype in sorted({k.dtype for k in mine}):
            of_dtype = [k for k in mine if k.dtype == dtype]
            if len(of_dtype) == sum(1 for k in base.entries if k.kernel == kernel and k.dtype == dtype):
                out.append(
                    BaselineChange(True, f"dropped {kernel} {dtype} ({plural(len(of_dtype), 'check')})")
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
        out.append(BaselineChange(True, f"{name}: now accepts failures ({verdict_counts(n.verdicts)})"))
    elif not b.clean and n.clean:
        out.append(BaselineChange(False, f"{name}: known failures removed"))
    elif not b.clean:
        kinds = [v for v in ("fail", "error") if n.verdicts.get(v) and not b.verdicts.get(v)]
        if kinds:
            out.append(
                BaselineChange(True, f"{name}: now accepts {' and '.join(kinds)} ({verdict_counts(n.verdicts)})")
            )
        for k in n.known:
            was = match_known(k, b.known)
            if was is None:
                out.append(BaselineChange(True, f"{name}: accepts a new failing case ({k.verdict}) {k.case}"))
            elif worse_than_known(k, was, 0.0):
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


def verdict_counts(v: Mapping[str, int]) -> str:
    return ", ".join(f"{n} {k}" for k, n in sorted(v.items()) if n) or "no cases"


def match_known(k: KnownCase, known: Sequence[KnownCase]) -> KnownCase | None:
    """The baseline's record of the same failing case (same case key and verdict), if any."""
    return next((b for b in known if b.case == k.case and b.verdict == k.verdict), None)


def worse_than_known(now: KnownCase, was: KnownCase, growth: float) -> list[str]:
    """The outputs on which a known failing case now fails worse than the baseline allows."""
    before, after = dict(was.max_ulp), dict(now.max_ulp)
    worse = []
    for o, b in sorted(before.items(), key=lambda x: output_order(x[0])):
        a = after.get(o, math.nan)
        allowed = max(b, ULP_FLOOR) * (1 + growth)
        if not a <= allowed and not (math.isinf(a) and math.isinf(b)) and not (math.isnan(a) and math.isnan(b)):
            worse.append(f"{o} {a:.4g} ULP, known {b:.4g}")
    return worse


def bench_name(k: BenchKey) -> str:
    return f"{k[0]} {k[1]} {k[2]} {k[3]} M={k[4]} N={k[5]}"


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
