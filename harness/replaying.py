"""``normgate replay``: one case again from its replay key, and its worst elements printed."""

from __future__ import annotations

from .arguments import UsageError, prepare


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
        # exp.pick: a huge case's reference covers sampled rows only
        c = compare(name, exp.pick(got[name]), exp, final_rounding(exp.dtype, truncating), worst_k=top)
        print(f"\n{name}: max {c.max_ulp:.4g} ULP, mean {c.mean_ulp:.3g} ULP, error/bound {c.ratio:.3g} "
              f"({'ok' if c.ok else 'beyond the claimed domain' if verdict == 'range' else 'FAIL'})")
        print(f"  {'index':<14} {'expected':>14} {'got':>14} {'ULP':>10} {'bound ULP':>10}")
        for w in c.worst:
            # worst elements keep NaN and inf as the strings "nan", "inf", "-inf" (JSON has no
            # such numbers); float() reads them back, and those are the elements that matter most
            print(f"  {str(tuple(w['index'])):<14} {float(w['expected']):>14.7g} {float(w['got']):>14.7g} "
                  f"{float(w['ulp']):>10.4g} {float(w['bound_ulp']):>10.4g}")
