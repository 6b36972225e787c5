"""The HTML report: one self-contained file (inline CSS, SVG and a little JS), readable offline.

This module turns loaded runs (:mod:`normgate.reports.load`) into plain view models and renders
them with ``templates/report.html.j2``; the charts' geometry is ``charts.py``. Jinja2 autoescaping is
on, so every string that comes from a results file is escaped; on top of that the page carries a
Content-Security-Policy that allows only its own inline script (by hash) and no network fetch at
all, so even a missed escape cannot run.
"""

from __future__ import annotations

import base64
import datetime as _dt
import errno
import hashlib
import math
import os
import tempfile
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2

from normgate.reports.charts import RATIO_BINS, Chart, bandwidth_chart, ratio_histogram
from normgate.reports.load import (
    CHECKS,
    DETERMINISM_CHECKS,
    SEVERITY,
    SMALL_M,
    Bench,
    BenchFile,
    CheckKey,
    CheckStats,
    OutputStats,
    Run,
    clean_text,
    group_checks,
    label_runs,
    load_bench,
    load_results,
    output_order,
    worst_verdict,
)
from normgate.reports.text import fmt_n, fmt_num

TEMPLATE = "report.html.j2"
#: Shown at most per report; a run that fails thousands of cases says so and links the count.
MAX_FAILURES = 300
#: Relative change of a worst-case ULP error that the run comparison calls "moved".
ACCURACY_MOVE = 0.10
INTERPRETER_NOTE = (
    "Triton kernels ran under TRITON_INTERPRET=1 on the CPU. The interpreter truncates fp32 to bf16 "
    "stores instead of rounding them, so Triton candidates writing bf16 are allowed 1 ULP of final "
    "rounding instead of 0.5 (their lines say so in notes). Timings from such a run mean nothing."
)
ENV_FIELDS = (
    "gpu",
    "gpu_count",
    "driver",
    "cuda",
    "device",
    "torch",
    "triton",
    "python",
    "normgate",
    "platform",
    "date",
    "seed",
    "examples",
    "interpreter",
    "argv",
)
SYMBOL = {"pass": "✓", "fail": "✗", "error": "!", "skip": "–", "range": "↔", "none": "·"}


# ----------------------------------------------------------------------------- formatting


def sort_value(v: Any) -> str:
    """A ``data-sort`` value: numbers as plain floats (sortable in JS), anything else as text."""
    if isinstance(v, bool) or v is None:
        return ""
    if isinstance(v, int | float):
        return "Infinity" if v == math.inf else repr(float(v))
    return str(v)


def cell_status(counts: Mapping[str, int]) -> dict[str, Any]:
    """A matrix cell: the verdict that speaks for the group, its count and the full breakdown."""
    status = worst_verdict(counts)
    total = sum(counts.values())
    detail = ", ".join(
        f"{n} {v}" for v, n in sorted(counts.items(), key=lambda kv: -SEVERITY.get(kv[0], 0)) if n
    )
    # the rest of the group by name ("+1 skip"), so that 7 passes and a one-row skip do not read
    # as "7/8", a partial pass
    others = ", ".join(f"{n} {v}" for v, n in sorted(counts.items(), key=lambda kv: -SEVERITY.get(kv[0], 0))
                       if n and v != status)
    return {
        "status": status,
        "symbol": SYMBOL.get(status, "?"),
        "count": counts.get(status, 0),
        "others": others,
        "total": total,
        "title": detail or "not run",
        "rank": SEVERITY.get(status, -1),
    }


# ----------------------------------------------------------------------------- view models


@dataclass
class RunView:
    label: str
    path: str
    env: dict[str, Any] | None
    counts: Counter[str]
    summary: dict[str, Any] | None
    interpreter: bool | None
    problems: list[str]
    kernels: int
    groups: dict[CheckKey, CheckStats]


def run_view(run: Run) -> RunView:
    groups = group_checks(run.results)
    return RunView(
        label=run.label,
        path=run.path,
        env=run.env,
        counts=run.verdict_counts(),
        summary=run.summary,
        interpreter=run.interpreter,
        problems=[p.message for p in run.problems],
        kernels=len({k.kernel for k in groups}),
        groups=groups,
    )


def summary_rows(runs: Sequence[RunView]) -> list[dict[str, Any]]:
    """Kernel x dtype rows with one cell per check; failing rows first."""
    rows = []
    for rv in runs:
        by_row: dict[tuple[str, str, str, str], dict[str, Counter[str]]] = {}
        for k, g in rv.groups.items():
            by_row.setdefault((k.kernel, k.op, k.variant, k.dtype), {})[k.check] = g.verdicts
        for (kernel, op, variant, dtype), checks in by_row.items():
            total: Counter[str] = Counter()
            for c in checks.values():
                total.update(c)
            cells = [cell_status(checks.get(c, Counter())) for c in _check_columns(runs)]
            rows.append(
                {
                    "run": rv.label,
                    "kernel": kernel,
                    "op": op,
                    "variant": variant,
                    "dtype": dtype,
                    "cells": cells,
                    "total": cell_status(total),
                }
            )
    rows.sort(key=lambda r: (-r["total"]["rank"], r["kernel"], r["dtype"], r["run"]))
    return rows


def _check_columns(runs: Sequence[RunView]) -> list[str]:
    seen = {k.check for rv in runs for k in rv.groups}
    return [c for c in CHECKS if c in seen] + sorted(seen - set(CHECKS))


def regime_matrix(
    runs: Sequence[RunView], results: Mapping[str, Sequence[Mapping[str, Any]]]
) -> dict[str, Any]:
    """Kernel x dtype rows, one column per value regime, all checks together; failing rows first."""
    regimes: list[str] = []
    cells: dict[tuple[str, str, str, str], dict[str, Counter[str]]] = {}
    for rv in runs:
        for r in results[rv.label]:
            regime = str(r.get("regime") or "-")
            if regime not in regimes:
                regimes.append(regime)
            row = cells.setdefault((rv.label, r["kernel"], r.get("op", ""), r["dtype"]), {})
            row.setdefault(regime, Counter())[r["verdict"]] += 1
    rows = []
    for (run, kernel, op, dtype), by_regime in cells.items():
        row_cells = [cell_status(by_regime.get(reg, Counter())) for reg in regimes]
        rank = max((c["rank"] for c in row_cells), default=-1)
        rows.append(
            {"run": run, "kernel": kernel, "op": op, "dtype": dtype, "cells": row_cells, "rank": rank}
        )
    rows.sort(key=lambda r: (-r["rank"], r["kernel"], r["dtype"], r["run"]))
    return {"regimes": regimes, "rows": rows}


def accuracy_rows(runs: Sequence[RunView]) -> list[dict[str, Any]]:
    rows = []
    for rv in runs:
        for k, g in rv.groups.items():
            if k.check != "accuracy":
                continue
            for out in sorted(g.outputs, key=output_order):
                s = g.outputs[out]
                rows.append(
                    {
                        "run": rv.label,
                        "kernel": k.kernel,
                        "op": k.op,
                        "variant": k.variant,
                        "dtype": k.dtype,
                        "output": out,
                        "s": s,
                        "eager": eager_verdict(s),
                        "hist": ratio_histogram(s.ratios),
                        "status": "pass" if s.max_ratio <= 1 else "fail",
                    }
                )
    rows.sort(
        key=lambda r: (r["status"] != "fail", r["kernel"], r["dtype"], output_order(r["output"]), r["run"])
    )
    return rows


def eager_verdict(s: OutputStats) -> dict[str, str]:
    """ "No worse than eager": every case's max ULP at most PyTorch eager's on the same case."""
    if s.eager_cases == 0:
        return {"cls": "na", "text": "n/a", "title": "no eager measurement in the results"}
    if s.worse_than_eager == 0:
        return {"cls": "good", "text": "yes", "title": f"no worse than eager on all {s.eager_cases} cases"}
    return {
        "cls": "warn",
        "text": f"no: {s.worse_than_eager}/{s.eager_cases}",
        "title": f"worse than eager on {s.worse_than_eager} of {s.eager_cases} cases, "
        f"by up to {fmt_num(s.max_excess_over_eager)} ULP",
    }


def determinism_rows(runs: Sequence[RunView]) -> list[dict[str, Any]]:
    rows = []
    for rv in runs:
        by_row: dict[tuple[str, str, str, str], dict[str, Counter[str]]] = {}
        for k, g in rv.groups.items():
            if k.check in DETERMINISM_CHECKS:
                by_row.setdefault((k.kernel, k.op, k.variant, k.dtype), {})[k.check] = g.verdicts
        for (kernel, op, variant, dtype), checks in by_row.items():
            cells = [cell_status(checks.get(c, Counter())) for c in DETERMINISM_CHECKS]
            rows.append(
                {
                    "run": rv.label,
                    "kernel": kernel,
                    "op": op,
                    "variant": variant,
                    "dtype": dtype,
                    "cells": cells,
                    "rank": max(c["rank"] for c in cells),
                }
            )
    rows.sort(key=lambda r: (-r["rank"], r["kernel"], r["dtype"], r["run"]))
    return rows


def failure_view(run: str, r: Mapping[str, Any]) -> dict[str, Any]:
    worst = [w for w in r.get("worst") or [] if isinstance(w, dict)]
    shape = r.get("shape")
    return {
        "run": run,
        "kernel": r["kernel"],
        "op": r.get("op", ""),
        "variant": r.get("variant", ""),
        "check": r["check"],
        "dtype": r["dtype"],
        "regime": r.get("regime") or "",
        "verdict": r["verdict"],
        "case": r.get("case") or "",
        "reason": clean_text(r.get("reason") or ""),
        "replay": clean_text(r.get("replay") or ""),
        "shape": "×".join(str(d) for d in shape) if isinstance(shape, list) else str(shape or ""),
        "examples": r.get("examples"),
        "shrinks": r.get("shrinks"),
        "notes": [str(n) for n in r.get("notes") or []],
        "worst": worst,
        "errors": _error_rows(r.get("errors")),
        "line": r.get("_line"),
        "anchor": f"f-{run}-{r.get('_line', 0)}",
    }


def _error_rows(errors: Any) -> list[dict[str, Any]]:
    if not isinstance(errors, dict):
        return []
    return [
        {"output": k, **v}
        for k, v in sorted(errors.items(), key=lambda kv: output_order(kv[0]))
        if isinstance(v, dict)
    ]


def failures(runs: Sequence[Run]) -> list[dict[str, Any]]:
    out = [
        failure_view(run.label, r) for run in runs for r in run.results if r["verdict"] in ("fail", "error")
    ]
    out.sort(
        key=lambda f: (0 if f["verdict"] == "error" else 1, f["kernel"], f["dtype"], f["check"], f["run"])
    )
    return out


def range_limits(runs: Sequence[Run]) -> list[dict[str, Any]]:
    out = [failure_view(run.label, r) for run in runs for r in run.results if r["verdict"] == "range"]
    out.sort(key=lambda f: (f["kernel"], f["dtype"], f["regime"], f["run"]))
    return out


def time_split(runs: Sequence[Run], top: int = 10) -> list[dict[str, Any]]:
    """Per run: how much of its worker time was Triton compiling, and the tasks that compiled longest."""
    from normgate import compiletime

    out = []
    for r in runs:
        s = compiletime.split(([r.env] if r.env else []) + r.results + r.tasks)
        line = compiletime.describe(s)
        if line is None:
            continue
        worst = sorted(s.tasks.items(), key=lambda kv: -kv[1][1])[:top]
        out.append({"run": r.label, "line": line[0].upper() + line[1:],
                    "tasks": [{"task": t, "elapsed_s": e, "compile_s": c} for t, (e, c) in worst if c > 0]})
    return out


def env_table(runs: Sequence[RunView]) -> list[dict[str, Any]]:
    """Environment rows (field -> value per run); rows with no value in any run are left out."""
    rows = []
    extra: list[str] = []
    for rv in runs:
        for k in rv.env or {}:
            if k not in ENV_FIELDS and k != "type" and k not in extra:
                extra.append(k)
    for f in (*ENV_FIELDS, *extra):
        values = [_env_value((rv.env or {}).get(f)) for rv in runs]
        if any(v != "" for v in values):
            rows.append({"field": f, "values": values, "differs": len(set(values)) > 1})
    return rows


def _env_value(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, list):
        return " ".join(str(x) for x in v)
    if isinstance(v, bool):
        return "yes" if v else "no"
    return str(v)


# ----------------------------------------------------------------------------- run comparison


CHANGE_ORDER = (
    "new failure",
    "missing",
    "still failing",
    "accuracy worse",
    "fixed",
    "added",
    "accuracy better",
    "unchanged",
)


@dataclass
class Change:
    key: CheckKey
    kind: str
    base: dict[str, Any] | None
    now: dict[str, Any] | None
    moves: list[dict[str, Any]] = field(default_factory=list)


def compare_groups(base: Mapping[CheckKey, CheckStats], now: Mapping[CheckKey, CheckStats]) -> list[Change]:
    """What changed from one run to another, per check; the most alarming first."""
    changes = []
    for key in sorted(set(base) | set(now)):
        b, n = base.get(key), now.get(key)
        moves = _accuracy_moves(b, n) if b and n else []
        changes.append(
            Change(
                key,
                _change_kind(b, n, moves),
                cell_status(b.verdicts) if b else None,
                cell_status(n.verdicts) if n else None,
                moves,
            )
        )
    changes.sort(key=lambda c: (CHANGE_ORDER.index(c.kind), c.key))
    return changes


def _change_kind(b: CheckStats | None, n: CheckStats | None, moves: list[dict[str, Any]]) -> str:
    if n is None:
        return "missing"
    if b is None:
        return "added" if n.clean else "new failure"
    if b.clean and not n.clean:
        return "new failure"
    if not b.clean:
        return "fixed" if n.clean else "still failing"
    if any(m["dir"] == "worse" for m in moves):
        return "accuracy worse"
    if any(m["dir"] == "better" for m in moves):
        return "accuracy better"
    return "unchanged"


def _accuracy_moves(b: CheckStats, n: CheckStats) -> list[dict[str, Any]]:
    moves = []
    for out in sorted(set(b.outputs) | set(n.outputs), key=output_order):
        bo, no = b.outputs.get(out), n.outputs.get(out)
        if bo is None or no is None:
            continue
        before, after = bo.max_ulp, no.max_ulp
        if after > before * (1 + ACCURACY_MOVE) and after - before > 1e-9:
            direction = "worse"
        elif after < before * (1 - ACCURACY_MOVE):
            direction = "better"
        else:
            continue
        moves.append(
            {
                "output": out,
                "before": before,
                "after": after,
                "dir": direction,
                "ratio_before": bo.max_ratio,
                "ratio_after": no.max_ratio,
            }
        )
    return moves


def comparisons(runs: Sequence[RunView]) -> list[dict[str, Any]]:
    """Each later run against the first one given."""
    if len(runs) < 2:
        return []
    base = runs[0]
    out = []
    for rv in runs[1:]:
        changes = compare_groups(base.groups, rv.groups)
        shown = [c for c in changes if c.kind != "unchanged"]
        counts = Counter(c.kind for c in changes)
        out.append(
            {
                "base": base.label,
                "run": rv.label,
                "changes": shown,
                "counts": [(k, counts[k]) for k in CHANGE_ORDER if counts.get(k)],
            }
        )
    return out


# ----------------------------------------------------------------------------- performance


def _fraction(b: Bench) -> float | None:
    if b.fraction_of_copy is not None:
        return b.fraction_of_copy
    if b.gbps and b.copy_gbps:
        return b.gbps / b.copy_gbps
    return None


def _pivot(
    rows: Sequence[dict[str, Any]],
    group: Callable[[Bench], tuple[Any, ...]],
    column: Callable[[Bench], tuple[int, int]],
) -> list[dict[str, Any]]:
    """Comparison tables: one per group, a row per kernel (and file), a column per size."""
    tables: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in rows:
        b: Bench = r["b"]
        t = tables.setdefault(group(b), {"cols": set(), "rows": {}})
        t["cols"].add(column(b))
        t["rows"].setdefault((b.kernel, r["file"]), {})[column(b)] = r
    out = []
    for g, t in sorted(tables.items()):
        cols = sorted(t["cols"])
        body = [
            {"kernel": k, "file": f, "cells": [cells.get(c) for c in cols]}
            for (k, f), cells in sorted(t["rows"].items())
        ]
        out.append({"group": g, "cols": cols, "rows": body})
    return out


def perf_view(files: Sequence[BenchFile]) -> dict[str, Any] | None:
    if not files:
        return None
    multi = len(files) > 1
    labels = _bench_labels(files)
    rows, latency = [], []
    charts_in: dict[tuple[str, str], list[tuple[str, Bench]]] = {}
    for f in files:
        for b in f.benches:
            row = {"file": labels[f.path], "b": b, "fraction": _fraction(b)}
            (latency if b.M in SMALL_M else rows).append(row)
            if b.op != "copy" and b.M not in SMALL_M and b.gbps is not None:
                charts_in.setdefault((b.op, b.pass_), []).append((labels[f.path], b))
    key = lambda r: (r["b"].op, r["b"].pass_, r["b"].kernel, r["b"].dtype, r["b"].M, r["b"].N, r["file"])
    rows.sort(key=key)
    latency.sort(key=key)
    charts = [_chart_for(op, pass_, items, multi) for (op, pass_), items in sorted(charts_in.items())]
    gpus = sorted({b.gpu for f in files for b in f.benches if b.gpu})
    bandwidth = _pivot(
        [r for r in rows if r["b"].op != "copy"],
        lambda b: (b.op, b.pass_, b.dtype, b.M),
        lambda b: (b.N, b.M),
    )
    small = _pivot(latency, lambda b: (b.op, b.pass_, b.dtype), lambda b: (b.M, b.N))
    return {
        "rows": rows,
        "latency": latency,
        "charts": charts,
        "gpus": gpus,
        "multi": multi,
        "bandwidth": bandwidth,
        "small": small,
        "files": [
            {
                "label": labels[f.path],
                "path": f.path,
                "count": len(f.benches),
                "skipped": f.skipped,
                "datetime": f.datetime,
            }
            for f in files
        ],
    }


def _bench_labels(files: Sequence[BenchFile]) -> dict[str, str]:
    stems = [os.path.splitext(os.path.basename(f.path))[0] for f in files]
    return {
        f.path: (s if stems.count(s) == 1 else f"{s}#{i + 1}")
        for i, (f, s) in enumerate(zip(files, stems, strict=True))
    }


def _chart_for(op: str, pass_: str, items: list[tuple[str, Bench]], multi: bool) -> Chart:
    """One chart per op and pass; one line per kernel (and dtype, and file, where there are several)."""
    dtypes = {b.dtype for _, b in items}
    largest: dict[tuple[str, str, str, int], Bench] = {}
    for label, b in items:  # at each N, the largest M measured: bandwidth, not launch latency
        k = (label, b.kernel, b.dtype, b.N)
        if k not in largest or b.M > largest[k].M:
            largest[k] = b
    lines: dict[str, dict[int, float]] = {}
    copies: dict[str, dict[int, float]] = {}
    for (label, kernel, dtype, n), b in sorted(largest.items()):
        name = kernel + (f" ({dtype})" if len(dtypes) > 1 else "") + (f" · {label}" if multi else "")
        lines.setdefault(name, {})[n] = b.gbps or 0.0
        if b.copy_gbps:
            copy = copies.setdefault("copy limit" + (f" · {label}" if multi else ""), {})
            copy[n] = max(copy.get(n, 0.0), b.copy_gbps)
    pretty = {"forward": "forward", "forward_backward": "forward + backward"}.get(pass_, pass_)
    chart = bandwidth_chart(f"{op} · {pretty}", lines, copies)
    ms = sorted({b.M for b in largest.values()})
    chart.note = f"M = {', '.join(str(m) for m in ms)} (largest measured at each N)"
    return chart


# ----------------------------------------------------------------------------- rendering


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(Path(__file__).parent / "templates")),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = fmt_num
    env.filters["sortv"] = sort_value
    env.filters["fmt_n"] = fmt_n
    return env


def _script_hash(template: jinja2.Template) -> str:
    """CSP hash of the page's one inline script (the ``script`` block, which uses no variables)."""
    text = "".join(template.blocks["script"](template.new_context({})))
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii")


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("normgate")
    except Exception:  # noqa: BLE001 - not installed: the report still renders
        return "unknown"


def setup_notes(views: Sequence[RunView]) -> list[dict[str, Any]]:
    """What a run could not use, as its environment record names it: pieces that could not be
    loaded (their kernels' tasks are errors that never ran) and kernels left out on this device."""
    notes = []
    for v in views:
        env = v.env or {}
        for u in env.get("unavailable") or ():
            notes.append({"run": v.label, "kind": "unavailable", "piece": u.get("piece", "?"),
                          "error": u.get("error", ""), "fix": u.get("fix", ""), "kernels": u.get("kernels", [])})
        if env.get("left_out"):
            notes.append({"run": v.label, "kind": "left_out", "device": env.get("device", "?"),
                          "kernels": env["left_out"]})
    return notes


def build_context(
    runs: Sequence[Run],
    bench: Sequence[BenchFile] = (),
    title: str | None = None,
    now: _dt.datetime | None = None,
) -> dict[str, Any]:
    """Everything the template shows, as plain data."""
    views = [run_view(r) for r in runs]
    totals: Counter[str] = Counter()
    for v in views:
        totals.update(v.counts)
    fails = failures(runs)
    ranges = range_limits(runs)
    return {
        "title": title or ("normgate report: " + " vs ".join(v.label for v in views)),
        "generated": (now or _dt.datetime.now(_dt.timezone.utc)).strftime("%Y-%m-%d %H:%M UTC"),
        "reporter_version": _version(),
        "runs": views,
        "multi": len(views) > 1,
        "totals": totals,
        "verdict_order": ("fail", "error", "range", "skip", "pass"),
        "problems": [(v.label, p) for v in views for p in v.problems],
        "setup_notes": setup_notes(views),
        "checks": _check_columns(views),
        "summary": summary_rows(views),
        "regimes": regime_matrix(views, {r.label: r.results for r in runs}),
        "accuracy": accuracy_rows(views),
        "ratio_bins": RATIO_BINS,
        "determinism": determinism_rows(views),
        "det_checks": DETERMINISM_CHECKS,
        "ranges": ranges[:MAX_FAILURES],
        "ranges_total": len(ranges),
        "failures": fails[:MAX_FAILURES],
        "failures_total": len(fails),
        "env": env_table(views),
        "time_split": time_split(runs),
        "interpreter_note": INTERPRETER_NOTE,
        "any_interpreter": any(v.interpreter for v in views),
        "comparisons": comparisons(views),
        "perf": perf_view(bench),
        "symbol": SYMBOL,
    }


def render_report(
    runs: Sequence[Run],
    bench: Sequence[BenchFile] = (),
    title: str | None = None,
    now: _dt.datetime | None = None,
) -> str:
    """The report as one HTML string."""
    template = _environment().get_template(TEMPLATE)
    context = build_context(runs, bench, title, now)
    context["script_hash"] = _script_hash(template)
    return template.render(context)


def write_text_atomic(path: str, text: str) -> None:
    """Write through a temporary file in the same folder, so a failed write leaves no half file.

    Raises :class:`OSError` when the folder is missing or not writable.
    """
    from normgate.reports.outputs import special_kind

    kind = special_kind(path)
    if kind:  # the rename would replace the link or node itself
        raise OSError(errno.EINVAL, f"it is {kind}; normgate writes outputs as regular files only", path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".normgate-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # what open() would have given, not mkstemp's 0600
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_report(
    results: Sequence[str], out: str, bench: Sequence[str] = (), title: str | None = None
) -> None:
    """Load results (and benchmark) files and write the report to ``out``.

    For ``normgate run --report``. Raises :class:`~normgate.reports.load.LoadError` (an unreadable or
    malformed input; ``str()`` is a one-line message) or :class:`OSError` (``out`` cannot be written).
    """
    runs = [load_results(p) for p in results]
    label_runs(runs)
    benches = [load_bench(p) for p in bench]
    write_text_atomic(out, render_report(runs, benches, title=title))
