"""The ``normgate`` command line.

Exit codes: 0 every check passed; 1 a check failed or errored; 2 a usage or input error (unknown
kernel, unreadable file), with a message saying what to do; 130 (143) a run stopped by SIGINT
(SIGTERM): its summary says interrupted. docs/failure-modes.md has every case.
"""

from __future__ import annotations

import argparse
import json
import sys

# the zoo's command resolves its arguments with these, as ``normgate.cli.*``
from .arguments import USAGE_ERROR as USAGE_ERROR
from .arguments import UsageError as UsageError
from .arguments import prepare as prepare
from .arguments import split_list as split_list
from .arguments import worker_count as worker_count
from .names import SPECS
from .progress import Progress as Progress
from .replaying import cmd_replay
from .run import cmd_run
from .run import print_failures as print_failures


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
    sp.add_argument("--checks", action="append", help="comma-separated (default: all): "
                    + "; ".join(f"{c.name}: {c.description}" for c in SPECS))
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
    sp.add_argument("--time-limit", type=float, default=None, metavar="SECONDS",
                    help="stop the run after this many seconds, as an interrupt does (results so far kept, "
                    "summary marked interrupted, --resume finishes it), but exit by the verdicts: a CI "
                    "job's budget")
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
