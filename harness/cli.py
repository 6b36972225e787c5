"""The ``normgate`` command line.

Exit codes: 0 every check passed; 1 a check failed or errored; 2 a usage or input error (unknown
kernel, unreadable file), with a message saying what to do; 130 (143) a run stopped by SIGINT
(SIGTERM): its summary says interrupted. docs/failure-modes.md has every case.
"""

from __future__ import annotations

import argparse
import difflib
import fnmatch
import json
import os
import sys
import time
from collections import Counter

from .names import CHECKS, split_dtype_pair

USAGE_ERROR = 2


class UsageError(Exception):
    pass


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def prepare(args, setup: bool = True) -> None:
    """For a subcommand (the zoo's among them): device first (TRITON_INTERPRET must be set before
    any Triton kernel is imported), then the user's files. ``setup=False`` leaves the process
    setup (deterministic algorithms, which import TorchInductor: seconds) to the caller, after it
    has checked the selection."""
    args.device = args.device or _default_device()
    if args.device not in ("cpu", "cuda"):
        raise UsageError(f"--device {args.device}: use cpu or cuda")
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise UsageError("--device cuda, but torch sees no CUDA device; use --device cpu")
    from . import candidates
    from .runner import process_setup

    if args.device == "cpu":
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before a --load file defines a Triton kernel
    if setup:
        process_setup(args.device)
    for path in getattr(args, "load", None) or ():
        try:
            candidates.load_file(path)
        except candidates.LoadError as e:
            raise UsageError(_load_failure(path, e)) from None
        except ValueError as e:
            raise UsageError(f"--load {path}: {e}") from None
    try:
        candidates.registry()
    except ValueError as e:
        raise UsageError(str(e)) from None


def _load_failure(path: str, e: Exception) -> str:
    """Why a --load file failed, as its author needs it: the traceback of its own code (and of
    what it called), without normgate's and importlib's frames around the import."""
    import traceback

    cause = e.__cause__
    if cause is None:
        return str(e)
    ours = os.path.dirname(os.path.abspath(__file__)) + os.sep
    frames = [f for f in traceback.extract_tb(cause.__traceback__)
              if not f.filename.startswith((ours, "<"))]  # "<frozen ...>", a dataclass's "<string>"
    text = "".join(traceback.format_list(frames)) + "".join(traceback.format_exception_only(cause))
    return f"--load {path} failed to import (most recent call last):\n{text.rstrip()}"


def split_list(values) -> list[str]:
    """Values of a repeatable, comma-separated option (``--only a,b --only c``), in order."""
    return [v.strip() for item in values or () for v in item.split(",") if v.strip()]


# ---- list ---------------------------------------------------------------------------------------
def cmd_list(args) -> int:
    prepare(args)
    from .candidates import registry

    rows = [{"kernel": c.name, "op": c.op, "variant": c.variant.key(), "dtypes": list(c.dtypes),
             "devices": list(c.devices), "backward": c.backward, "source": c.source,
             "description": c.description} for c in sorted(registry().values(), key=lambda c: (c.op, c.name))]
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    width = max(len(r["kernel"]) for r in rows)
    for r in rows:
        here = "" if args.device in r["devices"] else f"  [{'/'.join(r['devices'])} only]"
        print(f"{r['kernel']:<{width}}  {r['op']:<9}  {r['variant']}\n{'':<{width}}  dtypes {' '.join(r['dtypes'])}"
              f"{'' if r['backward'] else '  (forward only)'}{here}  [{r['source']}]")
    return 0


# ---- run ----------------------------------------------------------------------------------------
def _select(args):
    from . import candidates

    reg = candidates.registry()
    names = split_list(args.kernels)
    if names:
        chosen = []
        for pattern in names:
            hits = [n for n in reg if fnmatch.fnmatchcase(n, pattern)]
            if not hits:
                hint = difflib.get_close_matches(pattern, list(reg), n=3, cutoff=0.6)
                raise UsageError(f"unknown kernel {pattern!r}"
                                 + (f" (did you mean {', '.join(map(repr, hint))}?)" if hint else "")
                                 + "; `normgate list` shows the registered ones (your own need --load FILE)")
            is_glob = any(ch in pattern for ch in "*?[")
            runnable = [n for n in hits if reg[n].supports(args.device)]
            if not runnable or not is_glob:
                # a name asked for by itself must run; a glob takes what this device can run
                for n in hits:
                    if not reg[n].supports(args.device):
                        raise UsageError(f"kernel {n!r} runs on {'/'.join(reg[n].devices)} only, not on "
                                         f"{args.device}; pick another --device or drop it")
            chosen += [reg[n] for n in runnable if reg[n] not in chosen]
    else:
        chosen = [c for c in reg.values() if c.supports(args.device)]
    ops = split_list(args.ops)
    if ops:
        from .op import all_ops

        unknown = [o for o in ops if o not in all_ops()]
        if unknown:
            raise UsageError(f"unknown op {unknown[0]!r}; known: {', '.join(sorted(all_ops()))}")
        chosen = [c for c in chosen if c.op in ops]
    want_dtypes = split_list(args.dtypes)
    for d in want_dtypes:
        try:
            split_dtype_pair(d)
        except ValueError as e:
            raise UsageError(f"--dtypes {d}: {e}") from None
    checks = _checks(args)
    pairs = [(c, d) for c in sorted(chosen, key=lambda c: c.name) for d in c.dtypes
             if not want_dtypes or d in want_dtypes]
    if not pairs:
        raise UsageError("nothing to run: no selected kernel declares the selected dtypes on this device")
    return pairs, checks


def _check_arguments(args) -> None:
    """What can be checked without torch, checked before importing it: a mistyped argument is
    answered at once, not after the seconds (a minute, on a loaded machine) torch and Triton take."""
    _checks(args)
    for d in split_list(args.dtypes):
        try:
            split_dtype_pair(d)
        except ValueError as e:
            raise UsageError(f"--dtypes {d}: {e}") from None
    _check_limits(args)
    if args.workers != "auto":
        try:
            int(args.workers)
        except ValueError:
            raise UsageError(f"--workers {args.workers}: a number or 'auto'") from None
    for path in args.load or ():
        if not os.path.isfile(path):
            raise UsageError(f"--load {path}: no such file")
    if args.resume and not os.path.isfile(args.resume):
        raise UsageError(f"--resume {args.resume}: no such file; start a new run with --out")


def _checks(args) -> list[str]:
    checks = split_list(args.checks) or list(CHECKS)
    bad = [c for c in checks if c not in CHECKS]
    if bad:
        hint = difflib.get_close_matches(bad[0], CHECKS, n=1)
        raise UsageError(f"unknown check {bad[0]!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
                         + f"; known: {', '.join(CHECKS)}")
    return checks


def cmd_run(args) -> int:
    import signal
    import threading

    _check_arguments(args)
    prepare(args, setup=False)
    from . import candidates, results
    from .checks import Context, budget
    from .pool import Options, Pool, WorkerSetupError
    from .runner import DeviceLost, Task, interpreter_on, not_run_lines, process_setup, run_task

    pairs, checks = _select(args)
    process_setup(args.device)
    _check_limits(args)
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
    stopped_by: list[int] = []
    previous_term = None

    def on_term(signum, frame) -> None:
        stopped_by.append(signum)
        signal.signal(signum, previous_term)  # a second SIGTERM ends the process at once
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        previous_term = signal.signal(signal.SIGTERM, on_term)
    interrupted = False
    try:
        if workers == 0:
            from .worker import pin_generation

            pin_generation()  # the same cases as in a worker process
            ctx = Context(device=args.device, interpreter=interpreter_on())
            for task in tasks_todo:
                progress.event("task_start", {"task": task})
                t1 = time.monotonic()
                try:
                    cases = run_task(task, ctx, emit=lambda ln: (writer.write(ln), progress.event("line", ln)),
                                     on_case=lambda case, task=task: progress.event("case", {"task": task}))
                except DeviceLost as lost:
                    # no worker to replace in this process: later tasks fail fast with the same error
                    cases = lost.cases
                writer.write({"type": "task", "task": task.id, "kernel": task.kernel, "check": task.check,
                              "dtype": task.dtype, "cases": cases, "status": "done",
                              "elapsed_s": round(time.monotonic() - t1, 3)})
                progress.event("task_done", {"task": task, "cases": cases})
        else:
            opts = Options(device=args.device, workers=workers, loads=tuple(args.load or ()),
                           case_timeout=args.timeout, task_timeout=args.kernel_timeout,
                           gpus=_gpu_count() if args.device == "cuda" else 0)
            Pool(opts, writer.write, progress.event).run(tasks_todo)
    except KeyboardInterrupt:
        interrupted = True
        name = signal.Signals(stopped_by[0]).name if stopped_by else "SIGINT"
        print(f"\nnormgate: interrupted ({name}); results so far are in {args.out}; to finish the run, "
              f"repeat the command with --resume {args.out} (same selection, seed and --examples)",
              file=sys.stderr)
    except WorkerSetupError as e:
        writer.close()
        raise UsageError(str(e)) from None
    except results.WriteError as e:
        raise UsageError(e.strerror or str(e)) from None
    finally:
        progress.close()
        if previous_term is not None and not stopped_by:
            signal.signal(signal.SIGTERM, previous_term)
    try:
        writer.write(results.summarize(writer.counts, writer.cases, interrupted=interrupted,
                                       elapsed_s=round(time.monotonic() - t0, 2)))
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
    if interrupted:
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


def _check_limits(args) -> None:
    for flag, value in (("--examples", args.examples), ("--timeout", args.timeout),
                        ("--kernel-timeout", args.kernel_timeout)):
        if value is not None and not value > 0:
            raise UsageError(f"{flag} {value:g}: must be greater than 0")


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


def _gpu_count() -> int:
    import torch

    return torch.cuda.device_count()


#: At most this many workers share one GPU: more only contend for its memory and the host's cores
#: (a case also spends host time drawing inputs and compiling; one per core bounds it as well).
MAX_WORKERS_PER_GPU = 16


def worker_count(args, tasks: int | None = None) -> int:
    """``--workers`` as a number ("auto": one per GPU on cuda, one per core on cpu)."""
    if args.workers == "auto":
        return max(1, _gpu_count()) if args.device == "cuda" else max(1, os.cpu_count() or 1)
    try:
        n = int(args.workers)
    except ValueError:
        raise UsageError(f"--workers {args.workers}: a number or 'auto'") from None
    if n < 0:
        raise UsageError("--workers must be >= 0 (0 runs in this process, without isolation)")
    cores = os.cpu_count() or 1
    cap = cores if args.device != "cuda" else min(max(1, _gpu_count()) * MAX_WORKERS_PER_GPU, max(cores, 1))
    if tasks is not None:
        cap = min(cap, max(1, tasks))
    if n > cap:
        # each worker is a process with its own torch: more than there are cores (or tasks) only
        # thrash; the results are the same for any number of workers
        print(f"normgate: --workers {n}: using {cap} (at most one per core on cpu, {MAX_WORKERS_PER_GPU} per GPU "
              "and one per core on cuda, and no more than there are tasks)", file=sys.stderr)
        n = cap
    return n


def _safe(text, limit: int) -> str:
    """Kernel-provided text for the terminal or a CI log, made safe the way the gate makes it:
    one line, no terminal codes, so none can start a line (a GitHub ``::error`` command)."""
    from normgate.reports.gate import one_line

    return one_line(text, limit)


class Progress:
    """A status line on a terminal; periodic lines and every failure elsewhere (CI logs)."""

    def __init__(self, total: int, done: int = 0):
        self.total, self.done = total, done
        self.cases = 0
        self.counts: Counter = Counter()
        self.tty = sys.stderr.isatty()
        self.last = 0.0
        self.current = ""

    def event(self, kind: str, info: dict) -> None:
        if kind == "task_start":
            t = info["task"]
            self.current = f"{t.kernel} {t.dtype} {t.check}"
        elif kind == "line":
            self.cases += 1
            self.counts[info["verdict"]] += 1
            if info["verdict"] in ("fail", "error") and not self.tty:
                print(f"normgate: {info['verdict'].upper()} {_safe(info['kernel'], 120)} {info['dtype']} "
                      f"{info['check']}: {_safe(info['reason'], 200)}", file=sys.stderr)
        elif kind in ("task_done", "task_error"):
            self.done += 1
            if kind == "task_error":
                # a worker that died or hung: its error line comes from the supervisor, not as a
                # "line" event, so it is counted and echoed here
                self.counts["error"] += 1
                self.cases += 1
                t = info["task"]
                if not self.tty:
                    print(f"normgate: ERROR {t.kernel} {t.dtype} {t.check}: {_safe(info['reason'], 200)}",
                          file=sys.stderr)
        self._draw()

    def _draw(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last < (0.2 if self.tty else 30.0):
            return
        self.last = now
        c = self.counts
        text = (f"[{self.done}/{self.total} tasks] {self.cases} cases: {c['pass']} pass, {c['fail']} fail, "
                f"{c['error']} error, {c['range']} range | {self.current}")
        if self.tty:
            cols = max(40, os.get_terminal_size(sys.stderr.fileno()).columns - 1)
            sys.stderr.write("\r" + text[:cols].ljust(cols))
            sys.stderr.flush()
        else:
            print("normgate: " + text, file=sys.stderr)

    def close(self) -> None:
        if self.tty:
            sys.stderr.write("\n")


# ---- replay -------------------------------------------------------------------------------------
def cmd_replay(args) -> int:
    prepare(args)
    from . import candidates, checks
    from .case import ReplayKey
    from .op import get_op
    from .runner import interpreter_on

    try:
        key = ReplayKey.parse(args.key)
        cand = candidates.get(key.kernel)
        op = get_op(key.case.op)
    except (ValueError, KeyError) as e:
        raise UsageError(str(e).strip('"')) from None
    if key.check not in checks.ALL:
        raise UsageError(f"unknown check {key.check!r} in the key; known: {', '.join(checks.ALL)}")
    ctx = checks.Context(device=args.device, interpreter=interpreter_on())
    res = checks.ALL[key.check](cand, op, key.case, ctx)
    print(f"{cand.name} [{cand.variant.key()}] {key.check} on {key.case.key()}")
    print(f"verdict: {res.verdict}" + (f": {res.reason}" if res.reason else ""))
    for note in res.notes:
        print(f"note: {note}")
    if key.check == "accuracy" and res.verdict != "error":
        _print_worst(cand, op, key.case, ctx, args.top, res.verdict)
    return 1 if res.failed else 0


def _print_worst(cand, op, case, ctx, top: int, verdict: str = "") -> None:
    """Every output's worst elements side by side: expected (fp64 reference) and got. Past the
    variant's domain (verdict ``range``) an element over its bound is the kernel's range limit,
    not a failure, and is labelled so."""
    from .checks import execute
    from .tolerance import compare, final_rounding

    inputs = op.make_inputs(case, cand.variant, ctx.device)
    got, _ = execute(cand, op, case, inputs)
    expected = op.reference(inputs, case, cand.variant, backward=cand.backward)
    truncating = ctx.interpreter and cand.triton
    for name, exp in expected.items():
        if name not in got:
            continue
        c = compare(name, got[name], exp, final_rounding(exp.dtype, truncating), worst_k=top)
        print(f"\n{name}: max {c.max_ulp:.4g} ULP, mean {c.mean_ulp:.3g} ULP, error/bound {c.ratio:.3g} "
              f"({'ok' if c.ok else 'beyond the claimed domain' if verdict == 'range' else 'FAIL'})")
        print(f"  {'index':<14} {'expected':>14} {'got':>14} {'ULP':>10} {'bound ULP':>10}")
        for w in c.worst:
            # worst elements keep NaN and inf as the strings "nan", "inf", "-inf" (JSON has no
            # such numbers); float() reads them back, and those are the elements that matter most
            print(f"  {str(tuple(w['index'])):<14} {float(w['expected']):>14.7g} {float(w['got']):>14.7g} "
                  f"{float(w['ulp']):>10.4g} {float(w['bound_ulp']):>10.4g}")


# ---- parser -------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="normgate", description="Numerical-correctness and determinism checks "
                                "for fused normalization kernels.")
    p.add_argument("--version", action="version", version=f"normgate {_version()}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(sp):
        sp.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when present, else cpu "
                        "(Triton kernels then run under TRITON_INTERPRET=1)")
        sp.add_argument("--load", action="append", metavar="FILE", help="a Python file that registers "
                        "candidates (repeatable)")

    sp = sub.add_parser("list", help="list the registered kernels, their ops, variants and dtypes")
    common(sp)
    sp.add_argument("--json", action="store_true")
    sp.set_defaults(func=cmd_list)

    sp = sub.add_parser("run", help="run the checks; write results (JSON lines)")
    common(sp)
    sp.add_argument("--kernels", action="append", help="names or glob patterns, comma-separated (default: all)")
    sp.add_argument("--ops", action="append", help="only these ops (`normgate list` shows them; default: all)")
    sp.add_argument("--dtypes", action="append", help="e.g. bf16,fp16,fp32,bf16/fp32 (default: all declared)")
    sp.add_argument("--checks", action="append", help="accuracy, contract, repeat, poisoned, batch_invariance")
    sp.add_argument("--examples", type=int, help="generated cases per kernel and dtype for accuracy; the other "
                    "checks get a share (default: 200 on cuda, 30 on cpu)")
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--out", default=None, help="results file to write (default: results.jsonl; with --resume, "
                    "the resumed file)")
    sp.add_argument("--resume", metavar="RESULTS", help="continue an interrupted run in this file")
    sp.add_argument("--shard", metavar="K/N", help="run only the K-th of N parts of the selection (a CI matrix "
                    "job); the N parts' results together are the unsharded run's")
    sp.add_argument("--workers", default="1", help="worker processes (isolation); 'auto' = one per GPU (per "
                    "core on cpu); 0 = run in this process, without isolation")
    sp.add_argument("--timeout", type=float, default=300.0, help="seconds one case may run (default 300)")
    sp.add_argument("--kernel-timeout", type=float, default=None, help="seconds one task may run")
    sp.add_argument("--report", metavar="HTML", help="also write the HTML report")
    sp.add_argument("--bench", action="append", metavar="JSON", help="pytest-benchmark JSON for the report")
    sp.set_defaults(func=cmd_run)

    sp = sub.add_parser("replay", help="rerun one case from its replay key; print the worst elements")
    common(sp)
    sp.add_argument("key", help="KERNEL@CHECK:CASE, as printed with every failure")
    sp.add_argument("--top", type=int, default=5, help="worst elements to print per tensor")
    sp.set_defaults(func=cmd_replay)

    try:
        from normgate.reports.commands import add_commands
    except ImportError:
        pass
    else:
        add_commands(sub)
    _add_zoo(sub)
    return p


def _add_zoo(sub) -> None:
    """``normgate zoo`` from a checkout (the zoo is not in the wheel: harness/checkout.py); from a
    wheel, a command that says where to find it."""
    from . import checkout

    if checkout.zoo_folder() is not None:
        checkout.zoo().add_commands(sub)
        return

    def refuse(args) -> int:
        raise UsageError(str(checkout.NoCheckout(
            "normgate zoo runs from a checkout of normgate's repository (pip install -e .): the zoo of "
            "mutants that measures the checks is not in the wheel")))

    sp = sub.add_parser("zoo", help="(from a checkout only) the mutant zoo's kill matrix")
    sp.set_defaults(func=refuse, load=None)


def _version() -> str:
    from . import __version__

    return __version__


def print_failures(lines: list[dict], stream=sys.stderr, limit: int = 20) -> None:
    # reasons are a kernel's exception text: one line each, without terminal codes, so that none
    # can start a line of a CI log (a GitHub "::error" command) or repaint a terminal
    from normgate.reports.gate import one_line

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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        # the subcommand's own usage, not the top level's: that is where the flag was given
        commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        commands.choices[args.command].error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        return args.func(args)
    except UsageError as e:
        print(f"normgate: error: {e}", file=sys.stderr)
        return USAGE_ERROR
    except KeyboardInterrupt:
        print("\nnormgate: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
