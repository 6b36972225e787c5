"""Measured detection power: a zoo of buggy kernels (mutants) and correct ones, run through the
normal checks by ``normgate zoo``, which prints and saves the kill matrix. docs/detection.md has
the numbers and what each mutant is.

The zoo is part of normgate's repository, not of its wheel (harness/checkout.py says why and how
the CLI finds it); it is imported as ``normgate_zoo`` and uses the CLI's public helpers only."""

from __future__ import annotations

import sys


def add_commands(sub) -> None:
    """Add ``normgate zoo`` to the CLI's subparsers."""
    sp = sub.add_parser("zoo", help="run every mutant and correct candidate of the zoo; print and save the kill matrix")
    sp.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when present, else cpu")
    sp.add_argument("--examples", type=int, default=30, help="generated cases per kernel and dtype for accuracy; "
                    "the other checks get a share (default 30)")
    sp.add_argument("--seed", type=int, default=0)
    sp.add_argument("--workers", default="auto", help="worker processes; 'auto' = one per core on cpu (default)")
    sp.add_argument("--only", action="append", help="candidate or mutant names or globs, comma-separated")
    sp.add_argument("--dtypes", action="append", help="only these dtypes, e.g. bf16,fp32")
    sp.add_argument("--checks", action="append", help="only these checks (default: all)")
    sp.add_argument("--results", default="zoo-results.jsonl", help="the results lines of the run")
    sp.add_argument("--out", default="zoo.json", help="the kill matrix, JSON")
    sp.add_argument("--no-conventional", action="store_true",
                    help="skip the comparison with a conventional fixed-shape assert_close test")
    sp.add_argument("--timeout", type=float, default=300.0, help="seconds one case may run")
    sp.set_defaults(func=cmd_zoo, load=None)


def cmd_zoo(args) -> int:
    """Exit 0 when every counted mutant is killed (or is a documented known miss), no correct
    candidate has a false alarm or an error, no mutant only errored, 1 otherwise, 2 on a usage error."""
    from normgate import cli

    from . import matrix

    args.load = [matrix.LOAD_FILE]
    cli.prepare(args)
    correct, mutants = matrix.select(args.device, cli.split_list(args.only))
    want = set(cli.split_list(args.dtypes))
    if want:
        from normgate import candidates

        reg = candidates.registry()
        correct = [c for c in correct if want & set(reg[c].dtypes)]
        mutants = [m for m in mutants if want & set(reg[m.candidate].dtypes)]
    if not correct and not mutants:
        raise cli.UsageError(f"--only {','.join(cli.split_list(args.only))}: no zoo candidate or mutant matches")
    from normgate.checks import CHECKS

    checks = cli.split_list(args.checks) or list(CHECKS)
    bad = [c for c in checks if c not in CHECKS]
    if bad:
        raise cli.UsageError(f"unknown check {bad[0]!r}; known: {', '.join(CHECKS)}")
    workers = cli.worker_count(args)
    names = correct + [m.candidate for m in mutants]
    progress = cli.Progress(0)
    try:
        lines = matrix.run_checks(names, device=args.device, examples=args.examples, seed=args.seed,
                                  workers=workers, out=args.results, dtypes=cli.split_list(args.dtypes), checks=checks,
                                  timeout=args.timeout, progress=progress)
    finally:
        progress.close()
    conventional = None if args.no_conventional else matrix.run_conventional(names, args.device)
    result = matrix.build(lines, correct, mutants, args.device, conventional)
    print(matrix.render(result))
    try:
        matrix.write_json(result, args.out)
    except OSError as e:
        raise cli.UsageError(f"cannot write the kill matrix to {args.out}: {e.strerror or e}") from None
    print(f"normgate: kill matrix -> {args.out}, results -> {args.results}", file=sys.stderr)
    s = result["summary"]
    clean = not (s["unexplained_misses"] or s["false_alarms"] or s["correct_errors"] or s["errored_mutants"])
    return 0 if clean else 1
