"""``normgate run``: the run from the selection to the summary. Tasks are drawn up (and cut to a
shard), a ``--resume`` file is checked against this run and continued, the environment line is
written, the tasks run in worker processes (or in this one, ``--workers 0``), and the summary,
the failures and the optional HTML report end it.
"""

from __future__ import annotations

import os
import sys
import time

from .arguments import USAGE_ERROR, UsageError, check_arguments, check_limits, gpu_count, prepare, select, worker_count
from .progress import Progress


def cmd_run(args) -> int:
    import signal
    import threading

    check_arguments(args)
    prepare(args, setup=False)
    from . import candidates, results
    from .checks import budget
    from .pool import Options, WorkerSetupError
    from .runner import Task, interpreter_on, not_run_lines, process_setup
    from .session import run_tasks

    pairs, checks = select(args)
    process_setup(args.device)
    check_limits(args)
    examples = args.examples or (200 if args.device == "cuda" else 30)
    tasks = [Task(c.name, d, ck, budget(ck, examples), args.seed) for c, d in pairs for ck in checks]
    shard = None
    if args.shard:
        from . import shards

        spec = shards.Shard.parse(args.shard)
        shard = {"index": spec.index, "count": spec.count, "selection": shards.selection_digest([t.id for t in tasks]),
                 "order": [t.id for t in tasks]}  # the whole run's task order: merged shards keep it
        tasks = shards.select(tasks, spec)
        print(f"normgate: shard {spec}: {len(tasks)} of the selection's {len(shard['order'])} tasks", file=sys.stderr)
    workers = worker_count(args, len(tasks))
    from . import prerequisites

    unavailable = prerequisites.probe({c.name: c for c, _ in pairs}.values(), interpreter_on())
    not_runnable = {k for u in unavailable for k in u.kernels}
    left_out = [] if args.kernels else sorted(c.name for c in candidates.registry().values()
                                              if not c.supports(args.device))
    declared = {c.name: c.declaration() for c in sorted({c.name: c for c, _ in pairs}.values(), key=lambda c: c.name)}
    _check_run_outputs(args)
    if args.report:
        # checked now, not after a run of an hour: the report is written at the very end
        try:
            results.check_writable(args.report)
        except OSError as e:
            raise UsageError(f"cannot write the report to {args.report}: {e.strerror or e}") from None
    resume_lines = None
    if args.resume:
        try:
            resume_lines = results.read_lines(args.resume, allow_truncated_tail=True)
        except results.ResultsError as e:
            raise UsageError(f"{e}; --resume continues a file whose lines are intact (apart from a cut-off last "
                             "line): start a new run with --out") from None
        _check_resume_matches(args.resume, resume_lines, device=args.device, seed=args.seed, examples=examples,
                              shard=shard)
        _check_resume_declarations(args.resume, resume_lines, declared)
        done = {ln["task"] for ln in resume_lines if ln.get("type") == "task"}
        skipped = len([t for t in tasks if t.id in done])
        tasks_todo = [t for t in tasks if t.id not in done]
        print(f"normgate: resuming {args.resume}: {skipped} tasks already done, {len(tasks_todo)} to go",
              file=sys.stderr)
    else:
        tasks_todo = tasks
    try:
        writer = results.Writer(args.out, resume_lines)
        if resume_lines is None or not any(ln.get("type") == "env" for ln in resume_lines):
            writer.write(results.environment(args.device, interpreter_on(), seed=args.seed, examples=examples,
                                             workers=workers, argv=sys.argv, declarations=declared, shard=shard,
                                             unavailable=[u.to_json() for u in unavailable],
                                             left_out=left_out))
    except OSError as e:
        raise UsageError(f"cannot write results to {args.out}: {e.strerror or e}") from None
    if left_out:
        print(f"normgate: {len(left_out)} registered kernels run only on another device and are left out on "
              f"{args.device}: {', '.join(left_out)}", file=sys.stderr)
    if not_runnable:
        cut = [t for t in tasks_todo if t.kernel in not_runnable]
        print(prerequisites.notice(unavailable, len(cut)), file=sys.stderr)
        reasons = {k: u.reason() for u in unavailable for k in u.kernels}
        for t in cut:
            for line in not_run_lines(t, reasons[t.kernel], args.device):
                writer.write(line)
        tasks_todo = [t for t in tasks_todo if t.kernel not in not_runnable]
    progress = Progress(len(tasks), len(tasks) - len(tasks_todo))
    t0 = time.monotonic()
    # Ctrl-C (SIGINT) and a CI job's cancel (SIGTERM) end the run the same way: workers stopped,
    # a summary marked interrupted, exit 128 + the signal's number. Workers run in sessions of
    # their own, so only this process sees the signal and the stop is orderly.
    # --time-limit is the same stop, by a timer (SIGALRM), but the exit then follows the verdicts.
    time_limit = getattr(args, "time_limit", None)
    stopped_by: list[int] = []
    previous: dict[int, object] = {}

    def on_term(signum, frame) -> None:
        stopped_by.append(signum)
        signal.signal(signum, previous[signum])  # a second SIGTERM ends the process at once
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        previous[signal.SIGTERM] = signal.signal(signal.SIGTERM, on_term)
        if time_limit:
            previous[signal.SIGALRM] = signal.signal(signal.SIGALRM, on_term)
            signal.setitimer(signal.ITIMER_REAL, time_limit)
    elif time_limit:
        raise UsageError("--time-limit needs the run in the main thread (it uses a timer signal)")
    interrupted = False

    def timed_out() -> bool:
        return bool(stopped_by) and stopped_by[0] == signal.SIGALRM

    try:
        opts = Options(loads=tuple(args.load or ()), case_timeout=args.timeout, task_timeout=args.kernel_timeout,
                       gpus=gpu_count() if args.device == "cuda" and workers else 0)
        run_tasks(tasks_todo, writer.write, progress.event, device=args.device, workers=workers, pool_options=opts)
    except KeyboardInterrupt:
        interrupted = True
        if timed_out():
            why = f"stopped at the time limit of {time_limit:g} s"
        else:
            why = f"interrupted ({signal.Signals(stopped_by[0]).name if stopped_by else 'SIGINT'})"
        print(f"\nnormgate: {why}; results so far are in {args.out}; to finish the run, "
              f"repeat the command with --resume {args.out} (same selection, seed and --examples)",
              file=sys.stderr)
    except WorkerSetupError as e:
        writer.close()
        raise UsageError(str(e)) from None
    except results.WriteError as e:
        raise UsageError(e.strerror or str(e)) from None
    finally:
        progress.close()
        if signal.SIGALRM in previous:
            signal.setitimer(signal.ITIMER_REAL, 0)
        for signum, handler in previous.items():
            if signum not in stopped_by:
                signal.signal(signum, handler)
    try:
        limit = {"time_limit_s": time_limit} if timed_out() else {}
        writer.write(results.summarize(writer.counts, writer.cases, interrupted=interrupted,
                                       elapsed_s=round(time.monotonic() - t0, 2), **limit))
        writer.close()
        if not interrupted:
            results.canonicalize(args.out, [t.id for t in tasks])
        lines = results.read_lines(args.out)
    except (OSError, results.ResultsError) as e:
        raise UsageError(f"cannot finish the results file {args.out}: {e}") from None
    c = writer.counts
    finished = sum(1 for ln in lines if ln.get("type") == "task" and ln.get("task") in {t.id for t in tasks})
    print(f"normgate: {writer.cases} cases, {finished} of {len(tasks)} tasks in {time.monotonic() - t0:.1f}s: "
          f"{c['pass']} pass, {c['fail']} fail, {c['error']} error, {c['skip']} skip, {c['range']} range"
          f"{' (interrupted)' if interrupted else ''} -> {args.out}", file=sys.stderr)
    print_failures(lines)
    from . import compiletime

    spent = compiletime.describe(compiletime.split(lines))
    if spent:
        print(f"normgate: {spent}", file=sys.stderr)
    if args.report:
        code = _write_report(args.out, args.report, args.bench)
        if code:
            return code
    if interrupted and not timed_out():
        return 128 + (stopped_by[0] if stopped_by else signal.SIGINT)
    return 1 if (c["fail"] or c["error"]) else 0


def _check_run_outputs(args) -> None:
    """Before anything runs: where the run writes must not be one of its inputs, nor a special
    file; and ``--resume A --out B`` is refused (a resumed run continues A in place)."""
    from normgate.reports.outputs import OutputError, check_outputs

    if args.resume:
        if args.out and not _same_path(args.out, args.resume):
            raise UsageError(f"--resume {args.resume} continues that file in place; --out {args.out} names "
                             "another: drop --out (or copy the file first and resume the copy)")
        args.out = args.resume
    args.out = args.out or "results.jsonl"
    try:
        check_outputs([("--out" if not args.resume else "--resume", args.out), ("--report", args.report)],
                      [*(("a --bench input", b) for b in args.bench or ()),
                       *(("a --load file", f) for f in args.load or ())])
    except OutputError as e:
        raise UsageError(str(e)) from None
    try:
        from . import results

        if os.path.isdir(os.path.dirname(os.path.abspath(args.out))):  # else the writer makes the folder
            results.check_writable(args.out)
    except OSError as e:
        raise UsageError(f"cannot write results to {args.out}: {e.strerror or e}") from None


def _same_path(a: str, b: str) -> bool:
    from normgate.reports.outputs import same_file

    return same_file(a, b)


def _check_resume_declarations(path: str, lines: list[dict], declared: dict) -> None:
    """A resumed run must judge each kernel by what the first part claimed: else its finished
    tasks and the new ones were checked under different rules."""
    from .results import FORMAT

    env = next((ln for ln in lines if ln.get("type") == "env"), None)
    if env is None:
        return
    if env.get("format") != FORMAT:
        raise UsageError(f"--resume {path}: results format {env.get('format')!r} there, {FORMAT!r} now (written by "
                         "another normgate version); start a new results file with --out")
    there = env.get("declarations") or {}
    changed = sorted(k for k in declared if k in there and there[k] != declared[k])
    missing = sorted(k for k in declared if k not in there)
    if changed or missing:
        which = changed[0] if changed else missing[0]
        raise UsageError(f"--resume {path}: kernel {which!r} {'declares other things' if changed else 'is not'} "
                         "in that run; resume with the same kernels and declarations, or start a new file with --out")


def _check_resume_matches(path: str, lines: list[dict], **now) -> None:
    """Refuse to mix two runs in one file: a resumed run must draw the cases the first one drew."""
    env = next((ln for ln in lines if ln.get("type") == "env"), None)
    if env is None:
        return
    diff = [f"{k} {env.get(k)!r} there, {v!r} now" for k, v in now.items() if k in env and env[k] != v]
    if diff:
        raise UsageError(f"--resume {path}: that run used other settings ({'; '.join(diff)}); resume it with "
                         "the same --seed, --examples and --device, or start a new results file with --out")


def _write_report(results_path: str, out: str, bench) -> int:
    try:
        from normgate.reports import html
    except ImportError:
        print("normgate: the HTML report is not available in this installation", file=sys.stderr)
        return USAGE_ERROR
    from normgate.reports.load import LoadError

    try:
        html.write_report([results_path], out, bench=bench or [])
    except OSError as e:
        print(f"normgate: cannot write the report to {out}: {e.strerror or e}", file=sys.stderr)
        return USAGE_ERROR
    except LoadError as e:
        print(f"normgate: {e}", file=sys.stderr)
        return USAGE_ERROR
    print(f"normgate: report -> {out}", file=sys.stderr)
    return 0


def print_failures(lines: list[dict], stream=sys.stderr, limit: int = 20) -> None:
    # reasons are a kernel's exception text: one line each, without terminal codes, so that none
    # can start a line of a CI log (a GitHub "::error" command) or repaint a terminal
    from normgate.reports.text import one_line

    bad = [ln for ln in lines if ln.get("type") == "result" and ln.get("verdict") in ("fail", "error")]
    # tasks that could not run were named once at the top of the run, with the fix: one line here
    not_run = [ln for ln in bad if ln.get("not_run")]
    if not_run:
        print(f"  ERROR {len(not_run)} tasks not run ({', '.join(sorted({ln['kernel'] for ln in not_run}))[:300]}): "
              f"{one_line(not_run[0]['reason'], 300)}", file=stream)
    bad = [ln for ln in bad if not ln.get("not_run")]
    for ln in bad[:limit]:
        print(f"  {ln['verdict'].upper():5} {one_line(ln['kernel'], 120)} {ln['dtype']} {ln['check']}: "
              f"{one_line(ln['reason'], 300)}", file=stream)
        if ln.get("replay"):
            print(f"        replay: {one_line(ln['replay'], 2000)}", file=stream)
    if len(bad) > limit:
        print(f"  ... and {len(bad) - limit} more (see the results file)", file=stream)
