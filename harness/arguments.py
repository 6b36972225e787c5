"""The command line's arguments, checked and resolved: the device, the ``--load`` files, the
kernels, dtypes and checks of a run, and the number of workers.

The zoo's command resolves its arguments with the same functions (``prepare``, ``split_list``,
``worker_count``, through ``normgate.cli``), so a flag means the same thing in both commands.
"""

from __future__ import annotations

import difflib
import fnmatch
import os
import sys

from .names import CHECKS, split_dtype_pair

USAGE_ERROR = 2


class UsageError(Exception):
    pass


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def prepare(args, setup: bool = True) -> None:
    """For a subcommand (the zoo's among them): device first (TRITON_INTERPRET must be set before
    any Triton kernel is imported), then the user's files. ``setup=False`` leaves the process
    setup (deterministic algorithms, which import TorchInductor: seconds) to the caller, after it
    has checked the selection."""
    args.device = args.device or default_device()
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


def select(args):
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
    checks = checks_of(args)
    pairs = [(c, d) for c in sorted(chosen, key=lambda c: c.name) for d in c.dtypes
             if not want_dtypes or d in want_dtypes]
    if not pairs:
        raise UsageError("nothing to run: no selected kernel declares the selected dtypes on this device")
    return pairs, checks


def check_arguments(args) -> None:
    """What can be checked without torch, checked before importing it: a mistyped argument is
    answered at once, not after the seconds (a minute, on a loaded machine) torch and Triton take."""
    checks_of(args)
    for d in split_list(args.dtypes):
        try:
            split_dtype_pair(d)
        except ValueError as e:
            raise UsageError(f"--dtypes {d}: {e}") from None
    check_limits(args)
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


def checks_of(args) -> list[str]:
    checks = split_list(args.checks) or list(CHECKS)
    bad = [c for c in checks if c not in CHECKS]
    if bad:
        hint = difflib.get_close_matches(bad[0], CHECKS, n=1)
        raise UsageError(f"unknown check {bad[0]!r}" + (f" (did you mean {hint[0]!r}?)" if hint else "")
                         + f"; known: {', '.join(CHECKS)}")
    return checks


def check_limits(args) -> None:
    for flag, value in (("--examples", args.examples), ("--timeout", args.timeout),
                        ("--kernel-timeout", args.kernel_timeout),
                        ("--time-limit", getattr(args, "time_limit", None))):
        if value is not None and not value > 0:
            raise UsageError(f"{flag} {value:g}: must be greater than 0")



def gpu_count() -> int:
    import torch

    return torch.cuda.device_count()


#: At most this many workers share one GPU: more only contend for its memory and the host's cores
#: (a case also spends host time drawing inputs and compiling; one per core bounds it as well).
MAX_WORKERS_PER_GPU = 16


def worker_count(args, tasks: int | None = None) -> int:
    """``--workers`` as a number ("auto": one per GPU on cuda, one per core on cpu)."""
    if args.workers == "auto":
        return max(1, gpu_count()) if args.device == "cuda" else max(1, os.cpu_count() or 1)
    try:
        n = int(args.workers)
    except ValueError:
        raise UsageError(f"--workers {args.workers}: a number or 'auto'") from None
    if n < 0:
        raise UsageError("--workers must be >= 0 (0 runs in this process, without isolation)")
    cores = os.cpu_count() or 1
    cap = cores if args.device != "cuda" else min(max(1, gpu_count()) * MAX_WORKERS_PER_GPU, max(cores, 1))
    if tasks is not None:
        cap = min(cap, max(1, tasks))
    if n > cap:
        # each worker is a process with its own torch: more than there are cores (or tasks) only
        # thrash; the results are the same for any number of workers
        print(f"normgate: --workers {n}: using {cap} (at most one per core on cpu, {MAX_WORKERS_PER_GPU} per GPU "
              "and one per core on cuda, and no more than there are tasks)", file=sys.stderr)
        n = cap
    return n
