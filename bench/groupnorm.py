"""GroupNorm at diffusion-model shapes: our Triton kernel against torch.compile of the eager
float32 version and torch.nn.functional.group_norm, bf16, forward and forward+backward.

    python bench/groupnorm.py --out bench/results/groupnorm-h200.json

G = 32, C in {320, 640, 1280}, H = W in {32, 64}, N in {2, 8} (``--batches 2,4,8`` for more), weight
and bias bf16 like the activations. Each step is timed as the norms' are (bench/graphtime.py):
captured in a CUDA graph and replayed under triton.testing.do_bench, L2 flushed before each replay,
the median taken. Bytes are the minimum an op must move (forward: x read, y written; forward and
backward: x twice, dy once, y and dx written; the parameters and their gradients), against a
device-to-device copy of as many bytes. Before timing, each shape's outputs and gradients are
compared with F.group_norm's (``max_abs`` in the JSON): a wrong kernel is not a fast one.

torch.compile compiles once per shape and pass (dynamic=False: the compiler sees the shapes it is
timed on, its best case); the 24 compiles are most of the run's ~2 minutes on an H200.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
import graphtime as T  # noqa: E402

GROUPS = 32
CHANNELS = (320, 640, 1280)
SIDES = (32, 64)
BATCHES = (2, 8)
EPS = 1e-5
KERNELS = ("normgate", "torch_compile", "torch")
DTYPE = torch.bfloat16


def _dynamo_limits() -> None:
    import torch._dynamo

    # many shapes: without a raised limit dynamo silently falls back to eager
    for knob in ("recompile_limit", "cache_size_limit", "accumulated_recompile_limit",
                 "accumulated_cache_size_limit"):
        if hasattr(torch._dynamo.config, knob):
            setattr(torch._dynamo.config, knob, 4096)


def make(kernel: str, c: int, device: str = "cuda", dtype: torch.dtype = DTYPE):
    """(fn(x) -> y, [weight, bias]) for ``kernel``."""
    g = torch.Generator(device="cpu").manual_seed(c)
    w = (1.0 + 0.1 * torch.randn(c, generator=g)).to(device=device, dtype=dtype).requires_grad_(True)
    b = (0.1 * torch.randn(c, generator=g)).to(device=device, dtype=dtype).requires_grad_(True)
    if kernel == "normgate":
        from normgate.kernels.groupnorm import group_norm

        return (lambda x: group_norm(x, GROUPS, w, b, EPS)), [w, b]
    if kernel == "torch":
        return (lambda x: F.group_norm(x, GROUPS, w, b, EPS)), [w, b]
    if kernel == "torch_compile":
        from normgate.kernels.baselines import group_norm_eager

        _dynamo_limits()
        compiled = torch.compile(group_norm_eager, dynamic=False)
        return (lambda x: compiled(x, GROUPS, w, b, EPS)), [w, b]
    raise ValueError(kernel)


def min_bytes(n: int, c: int, hw: int, pass_: str) -> int:
    e, p = n * c * hw * 2, c * 2
    return 2 * e + 2 * p if pass_ == "forward" else 5 * e + 6 * p


def _outputs(fn, params, x, dy):
    x = x.detach().clone().requires_grad_(True)
    y = fn(x)
    return [y.detach(), *torch.autograd.grad(y, [x, *params], dy)]


def smoke() -> int:
    device = "cuda" if torch.cuda.is_available() else "cpu"
    gen = torch.Generator(device="cpu").manual_seed(0)
    x = (torch.randn((2, 64, 5, 3), generator=gen) * 2 + 0.5).to(device=device, dtype=torch.float32)
    dy = torch.randn((2, 64, 5, 3), generator=gen).to(device=device, dtype=torch.float32)
    # float32: on the CPU, F.group_norm's backward is computed in float32 only for float32 parameters
    made = {k: make(k, 64, device, torch.float32) for k in ("normgate", "torch")}
    got, ref = _outputs(*made["normgate"], x, dy), _outputs(*made["torch"], x, dy)
    worst = {name: float((a - r).abs().max()) for name, a, r in zip(("y", "dx", "dweight", "dbias"), got, ref,
                                                                     strict=True)}
    print(f"smoke ({device}): max |ours - F.group_norm| {worst}")
    return 0 if max(worst.values()) < 1e-4 else 1


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("bench/results/groupnorm.json"))
    ap.add_argument("--batches", default=",".join(map(str, BATCHES)))
    ap.add_argument("--channels", default=",".join(map(str, CHANNELS)))
    ap.add_argument("--sides", default=",".join(map(str, SIDES)))
    ap.add_argument("--kernels", default=",".join(KERNELS))
    ap.add_argument("--rep-ms", type=int, default=60, help="do_bench's timing window per measurement")
    ap.add_argument("--limit-s", type=float, default=170.0,
                    help="start no new shape after this many seconds (the JSON then says truncated)")
    ap.add_argument("--smoke", action="store_true",
                    help="no timing: our kernel against F.group_norm on one small shape, on the CPU under "
                         "Triton's interpreter when there is no GPU (checks the script, not the speed)")
    args = ap.parse_args(argv)
    if args.smoke:
        return smoke()
    if not torch.cuda.is_available():
        print("bench/groupnorm.py needs a CUDA device (--smoke runs without one)", file=sys.stderr)
        return 2
    kernels = args.kernels.split(",")
    start = time.time()
    rows: list[dict] = []
    skipped: list[dict] = []
    env = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__,
           "triton": __import__("triton").__version__, "groups": GROUPS, "dtype": "bf16", "eps": EPS}
    for c in map(int, args.channels.split(",")):
        made = {k: make(k, c) for k in kernels}
        for side in map(int, args.sides.split(",")):
            for n in map(int, args.batches.split(",")):
                if time.time() - start > args.limit_s:
                    skipped.append({"N": n, "C": c, "H": side})
                    continue
                gen = torch.Generator(device="cuda").manual_seed(n * 100003 + c * 7 + side)
                x0 = torch.randn((n, c, side, side), device="cuda", dtype=DTYPE, generator=gen) * 2 + 0.5
                dy = torch.randn((n, c, side, side), device="cuda", dtype=DTYPE, generator=gen)
                ref = _outputs(*made["torch"], x0, dy) if "torch" in made else None
                for kernel in kernels:
                    fn, params = made[kernel]
                    t0 = time.time()
                    diffs = None
                    if ref is not None:
                        got = _outputs(fn, params, x0, dy)
                        diffs = {name: float((a.float() - r.float()).abs().max())
                                 for name, a, r in zip(("y", "dx", "dweight", "dbias"), got, ref, strict=True)}
                    for pass_ in T.PASSES:
                        x = x0.detach().clone().requires_grad_(pass_ != "forward")
                        g = T.capture(T.step_for(fn, x, params, dy, pass_))
                        us = T.median_us(g, rep_ms=args.rep_ms)
                        del g
                        nbytes = min_bytes(n, c, side * side, pass_)
                        _, copy_gbps = T.copy_gbps(nbytes)
                        gbps = nbytes / us / 1e3
                        row = {"kernel": kernel, "pass": pass_, "N": n, "C": c, "H": side, "W": side, "G": GROUPS,
                               "time_us": round(us, 3), "bytes": nbytes, "gbps": round(gbps, 1),
                               "copy_gbps": round(copy_gbps, 1), "fraction_of_copy": round(gbps / copy_gbps, 3),
                               "max_abs_vs_torch": diffs, "wall_s": round(time.time() - t0, 2)}
                        rows.append(row)
                        print(f"{kernel:>13} {pass_:>16} N={n} C={c:4d} {side}x{side}: {us:8.1f} us "
                              f"{gbps:7.0f} GB/s ({gbps / copy_gbps:.0%} of copy)"
                              + (f"  max|d| y {diffs['y']:.3g} dx {diffs['dx']:.3g}" if diffs else ""), flush=True)
                    T.release()
        del made
        T.release()
    summary = []
    for r in rows:
        if r["kernel"] != "normgate":
            continue
        same = {o["kernel"]: o["time_us"] for o in rows
                if (o["pass"], o["N"], o["C"], o["H"]) == (r["pass"], r["N"], r["C"], r["H"])}
        summary.append({"pass": r["pass"], "N": r["N"], "C": r["C"], "H": r["H"],
                        **{f"speedup_vs_{k}": round(t / r["time_us"], 3) for k, t in same.items() if k != "normgate"}})
    out = {"env": env, "wall_s": round(time.time() - start, 1), "truncated": bool(skipped), "skipped": skipped,
           "results": rows, "summary": summary}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    for key in ("speedup_vs_torch_compile", "speedup_vs_torch"):
        vals = [s[key] for s in summary if key in s]
        if vals:
            geo = 1.0
            for v in vals:
                geo *= v
            print(f"{key}: geometric mean {geo ** (1 / len(vals)):.3f}, min {min(vals):.3f} over {len(vals)} shapes")
    if skipped:
        print(f"--limit-s {args.limit_s:g} reached: {len(skipped)} shapes not run", file=sys.stderr)
    print(f"wrote {args.out} ({out['wall_s']} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
