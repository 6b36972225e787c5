"""The ``report``, ``baseline`` and ``gate`` subcommands of the ``normgate`` CLI.

``normgate.cli`` calls :func:`add_commands` on its subparsers and then ``sys.exit(args.func(args))``.
Every handler returns an exit code and reports input problems (unreadable or malformed files,
unwritable outputs) as one line on stderr, exit code 2, never a traceback.

Exit codes:
  report    0 written (even when the results hold failures; the report shows them), 2 input error
  baseline  0 written, 1 refused: the results hold failures (pass --accept-failures to record
            them as known), 2 input error or incomplete run
  gate      0 nothing regressed, 1 regression (or incomplete data), 2 usage or input error
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Callable
from urllib.parse import quote, urlsplit

from normgate.reports import baselines as baselines_mod
from normgate.reports import gate as gate_mod
from normgate.reports.html import render_report, write_text_atomic
from normgate.reports.junit import render_junit
from normgate.reports.load import (
    BenchFile,
    LoadError,
    Run,
    group_checks,
    label_runs,
    load_bench,
    load_runs,
    validate_run,
)
from normgate.reports.outputs import OutputError, check_outputs
from normgate.reports.summary import plain_lines, render_summary

Handler = Callable[[argparse.Namespace], int]


class UsageError(Exception):
    """A problem with the command line or an input: exit 2 with this message."""


def _err(cmd: str, msg: str) -> None:
    print(f"normgate {cmd}: error: {msg}", file=sys.stderr)


def _warn(cmd: str, msg: str) -> None:
    print(f"normgate {cmd}: warning: {msg}", file=sys.stderr)


def _guard(cmd: str, body: Handler) -> Handler:
    """Turn input problems into one stderr line and exit 2; never let an exception mean "pass"."""

    def handler(args: argparse.Namespace) -> int:
        try:
            return body(args)
        except (LoadError, UsageError, gate_mod.GateInputError) as e:
            _err(cmd, str(e))
            return 2
        except KeyboardInterrupt:
            _err(cmd, "interrupted")
            return 2
        except Exception as e:  # noqa: BLE001 - a bug must not look like a regression (1) or a pass (0)
            if os.environ.get("NORMGATE_TRACEBACK"):
                traceback.print_exc()
            _err(
                cmd,
                f"internal error: {type(e).__name__}: {e} (set NORMGATE_TRACEBACK=1 for the traceback; "
                "please report it)",
            )
            return 2

    return handler


def write_text(path: str, text: str) -> None:
    """Write an output file atomically; a failure is a one-line usage error."""
    try:
        write_text_atomic(path, text)
    except OSError as e:
        raise UsageError(f"cannot write {path}: {e.strerror or e}") from None


def _check_output_path(path: str, flag: str) -> None:
    """Fail before any work when an output cannot be written (a folder, a missing directory)."""
    if os.path.isdir(path):
        raise UsageError(f"{flag} {path} is a folder; give a file name")
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise UsageError(f"{flag} {path}: folder {directory} does not exist")
    if not os.access(directory, os.W_OK):
        raise UsageError(f"{flag} {path}: folder {directory} is not writable")


def _check_outputs(outputs: list[tuple[str, str | None]], inputs: list[tuple[str, str | None]]) -> None:
    try:
        check_outputs(outputs, inputs)
    except OutputError as e:
        raise UsageError(str(e)) from None


def _load_benches(paths: list[str] | None) -> list[BenchFile]:
    return [load_bench(p) for p in paths or []]


def _fraction(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 <= v < 1e6 or v != v:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text}")
    return v


# ----------------------------------------------------------------------------- report


def _report(args: argparse.Namespace) -> int:
    _check_outputs([("-o", args.output)], [*(("an input", p) for p in args.results),
                                           *(("a --bench input", p) for p in args.bench or ())])
    _check_output_path(args.output, "-o")
    runs = load_runs(args.results)  # the shards of one run become that run
    label_runs(runs)
    bench = _load_benches(args.bench)
    for run in runs:
        for p in run.problems:
            _warn("report", p.message)
    write_text(args.output, render_report(runs, bench, title=args.title))
    fails = sum(run.verdict_counts().get("fail", 0) + run.verdict_counts().get("error", 0) for run in runs)
    print(
        f"wrote {args.output} ({len(runs)} run{'s' if len(runs) != 1 else ''}, {fails} failures and errors)"
    )
    return 0


# ----------------------------------------------------------------------------- baseline


def _require_complete(run: Run, what: str) -> None:
    if run.problems:
        raise UsageError(
            f"{run.problems[0].message}; {what} must come from a complete run "
            f"({len(run.problems)} problem{'s' if len(run.problems) != 1 else ''})"
        )
    if not run.results:
        raise UsageError(f"{run.path}: no result lines; {what} would hold the results to nothing")


def _baseline(args: argparse.Namespace) -> int:
    _check_outputs([("-o", args.output)], [*(("the results input", p) for p in args.results),
                                           *(("a --bench input", p) for p in args.bench or ())])
    _check_output_path(args.output, "-o")
    runs = load_runs(args.results, validate=True)  # shards merged; one run per device kind
    kinds = [r.kind for r in runs]
    twice = sorted({k for k in kinds if kinds.count(k) > 1})
    if twice:
        raise UsageError(f"two runs of device kind {twice[0]} that are not shards of one run: a baseline holds "
                         "one run per kind")
    for run in runs:
        validate_run(run)
        _require_complete(run, "a baseline")
    bench = _load_benches(args.bench)
    failing = [(run, k) for run in runs for k, g in group_checks(run.results).items() if not g.clean]
    if failing and not args.accept_failures:
        shown = ", ".join(k.short() for _, k in failing[:5]) + (" …" if len(failing) > 5 else "")
        _err(
            "baseline",
            f"{', '.join(sorted({r.path for r, _ in failing}))} has failures in {len(failing)} checks ({shown}); "
            "fix them, or pass --accept-failures to record them in the baseline as known failures",
        )
        return 1
    budget = {"max_ulp_growth": args.max_ulp_growth, "min_cases_fraction": args.min_cases_fraction}
    # benchmark times belong to the GPU they were measured on: with several kinds, to none
    sections = {run.kind: baselines_mod.make_baseline(run, bench if len(runs) == 1 else (), budget) for run in runs}
    write_text(args.output, baselines_mod.dump_baselines(sections))
    known = f", {len(failing)} with known failures" if failing else ""
    checks = sum(len(b.entries) for b in sections.values())
    benches = sum(len(b.bench) for b in sections.values())
    print(f"wrote {args.output} ({checks} checks{known}, {benches} benchmarks"
          + (f", {len(sections)} device kinds: {', '.join(sorted(sections))}" if len(sections) > 1 else "") + ")")
    return 0


# ----------------------------------------------------------------------------- gate


def _report_url(url: str | None) -> str:
    if not url:
        return ""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or any(c.isspace() for c in url):
        raise UsageError(f"--report-url {url!r} is not an http(s) URL")
    return quote(url, safe=":/?#[]@!$&'*+,;=%~")  # parentheses and <> encoded: safe inside a Markdown link


def _gate(args: argparse.Namespace) -> int:
    _check_outputs(
        [("--summary", args.summary), ("--junit", args.junit)],
        [
            *(("the results input", p) for p in args.results),
            ("--baseline", args.baseline),
            ("--base-baseline", args.base_baseline),
            ("--proposed-baseline", args.proposed_baseline),
            *(("a --bench input", p) for p in args.bench or ()),
        ],
    )
    for path, flag in ((args.summary, "--summary"), (args.junit, "--junit")):
        if path:
            _check_output_path(path, flag)
    report_url = _report_url(args.report_url)
    baseline = baselines_mod.load_baselines(args.baseline)
    base_baseline = baselines_mod.load_baselines(args.base_baseline) if args.base_baseline else None
    runs = load_runs(args.results, validate=True)  # shards merged, each file checked first
    for run in runs:
        validate_run(run)
    bench = _load_benches(args.bench)
    result = gate_mod.evaluate_kinds(runs, baseline, bench, args.max_slowdown, baseline_path=args.baseline,
                                     accept_new=args.accept_new_kind or (), expect=args.expect_kind or ())
    result.report_url = report_url
    if base_baseline is not None:
        result.baseline_changes = baselines_mod.compare_baseline_sets(base_baseline, baseline)
        result.base_baseline_path = args.base_baseline
    if args.proposed_baseline:
        # The verdict stays against --baseline (the base branch's); what the pull request would
        # change in it is listed at the top, for a reviewer.
        proposed = baselines_mod.load_baselines(args.proposed_baseline)
        result.baseline_changes = baselines_mod.compare_baseline_sets(baseline, proposed)
        result.base_baseline_path = args.baseline
        result.changes_label = (f"{args.proposed_baseline}, proposed by this pull request, vs {args.baseline}; "
                                "the verdict uses the latter")
    if args.summary:
        write_text(args.summary, render_summary(result))
    if args.junit:
        write_text(args.junit, render_junit(result))
    print("\n".join(plain_lines(result)))
    return result.exit_code


# ----------------------------------------------------------------------------- argparse


def add_commands(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``report``, ``baseline`` and ``gate`` to the normgate CLI; each sets ``func``."""
    rep = subparsers.add_parser(
        "report",
        help="render results (and benchmarks) as one self-contained HTML file",
        description="Render one or more results files as a self-contained HTML report. With several "
        "files, later runs are compared with the first. Exit 0 written, 2 input error.",
    )
    rep.add_argument("results", nargs="+", help="results .jsonl files from normgate run")
    rep.add_argument(
        "--bench",
        action="append",
        metavar="BENCH.json",
        help="pytest-benchmark --benchmark-json file (repeatable)",
    )
    rep.add_argument(
        "-o", "--output", default="report.html", help="HTML file to write (default: report.html)"
    )
    rep.add_argument("--title", help="page title")
    rep.set_defaults(func=_guard("report", _report))

    base = subparsers.add_parser(
        "baseline",
        help="write a baseline for the gate from a finished run",
        description="Write a small, diff-friendly baseline JSON from a complete results file. "
        "Exit 0 written, 1 refused (the results have failures; see --accept-failures), 2 input error.",
    )
    base.add_argument("results", nargs="+", help="results .jsonl of a finished normgate run: one file, its "
                      "shards (--shard), or one run per device kind (a section each)")
    base.add_argument("-o", "--output", required=True, help="baseline JSON to write")
    base.add_argument(
        "--bench",
        action="append",
        metavar="BENCH.json",
        help="pytest-benchmark JSON whose times to record (repeatable)",
    )
    base.add_argument(
        "--max-ulp-growth",
        type=_fraction,
        default=baselines_mod.DEFAULT_BUDGET["max_ulp_growth"],
        help="accuracy budget: allowed growth of a worst-case ULP error, 0.25 = 25%% (default %(default)s)",
    )
    base.add_argument(
        "--min-cases-fraction",
        type=_fraction,
        default=baselines_mod.DEFAULT_BUDGET["min_cases_fraction"],
        help="a check running fewer than this fraction of the baseline's cases is a "
        "regression (default %(default)s)",
    )
    base.add_argument(
        "--accept-failures",
        action="store_true",
        help="record failing checks as known failures instead of refusing",
    )
    base.set_defaults(func=_guard("baseline", _baseline))

    g = subparsers.add_parser(
        "gate",
        help="compare a run with a baseline: exit 0 pass, 1 regression, 2 usage/input error",
        description="Compare results (and benchmarks) with a committed baseline. Fails closed: missing or "
        "unreadable data is never a pass. Exit 0 pass, 1 regression, 2 usage or input error.",
    )
    g.add_argument("results", nargs="+", help="results .jsonl from this CI run: one file, the shards of a run, "
                   "or one run per device kind (each judged against its own section of the baseline)")
    g.add_argument("--accept-new-kind", action="append", metavar="KIND",
                   help="a device kind the baseline has no section for, accepted without judging its results "
                   "(else such results fail the gate)")
    g.add_argument("--expect-kind", action="append", metavar="KIND",
                   help="a device kind that must have results (a matrix job that produced none fails the gate)")
    g.add_argument("--baseline", required=True, help="baseline JSON to hold the results to")
    g.add_argument(
        "--base-baseline",
        metavar="BASE.json",
        help="the base branch's baseline: changes from it are listed at the top of the summary",
    )
    g.add_argument(
        "--proposed-baseline",
        metavar="PR.json",
        help="the pull request's own baseline file: the verdict ignores it, its changes from --baseline "
        "are listed at the top of the summary",
    )
    g.add_argument("--summary", metavar="SUMMARY.md", help="write a Markdown summary (for a PR comment)")
    g.add_argument("--junit", metavar="JUNIT.xml", help="write JUnit XML, one testcase per check")
    g.add_argument(
        "--bench",
        action="append",
        metavar="BENCH.json",
        help="pytest-benchmark JSON to compare with the baseline's times (repeatable)",
    )
    g.add_argument(
        "--max-slowdown",
        type=_fraction,
        default=0.05,
        help="allowed benchmark slowdown, 0.05 = 5%% (default %(default)s)",
    )
    g.add_argument("--report-url", help="link to the HTML report, shown in the summary")
    g.set_defaults(func=_guard("gate", _gate))
