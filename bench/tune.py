"""Sweep launch configurations of our kernels on the GPU and check accuracy at real sizes.

    python bench/tune.py [--out DIR] [--ns 16384,32768] [--sweep-only] [--dirs fwd]

For each op and N (bf16, M = 16384) it times the forward kernel and the backward kernels (with the
dW/dB reduction) alone, each captured in a CUDA graph (do_bench median), for every candidate
config, and prints the best; one JSON line per measurement goes to DIR/tune.jsonl. The winners are
then written into kernels/_launch.py's tables by hand (bench/results/tune-h100.log has the last sweep).
Before that: accuracy of the forward in ULPs at N = 4096 on the GPU (where bf16 stores round),
and bitwise repeatability of the backward at full size.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import graphtime as T  # noqa: E402

from normgate import dtypes  # noqa: E402
from normgate.kernels import _launch as L  # noqa: E402
from normgate.kernels import layernorm as LN  # noqa: E402
from normgate.kernels import references as ref  # noqa: E402
from normgate.kernels import rmsnorm as RMS  # noqa: E402

M = 16384
NS = (1024, 2048, 4096, 8192, 16384, 32768)
C = L.Config

def _f(n, specs):
    return [C(n, r, w) for r, w in specs]


def _b(n, specs):
    """(block or 0 for the whole row, rows, warps, programs per SM, prefetch[, reload_w])."""
    return [C(blk or n, r, w, programs_per_sm=p, prefetch=bool(f), split=bool(blk),
              reload_w=bool(rest and rest[0]))
            for blk, r, w, p, f, *rest in specs]


def _looped(specs):
    """Forward through the looped path: (chunk width, warps)."""
    return [C(blk, 1, w, looped=True) for blk, w in specs]


FWD = {
    1024: _f(1024, [(4, 4), (2, 4), (8, 4)]),
    2048: _f(2048, [(1, 8), (2, 8), (2, 4)]),
    4096: _f(4096, [(2, 8), (1, 8), (2, 16)]),
    8192: _f(8192, [(1, 8), (1, 16)]),
    16384: _f(16384, [(1, 8), (1, 16)]),
    32768: _f(32768, [(1, 16), (1, 32)]) + _looped([(8192, 16), (16384, 16), (4096, 8), (8192, 8)]),
}
_SPLIT = [(4096, 1, 8, 2, 1), (4096, 2, 8, 2, 1), (2048, 2, 4, 4, 1), (8192, 1, 16, 1, 1), (4096, 1, 8, 2, 0),
          (8192, 1, 8, 2, 1)]
BWD = {
    1024: _b(1024, [(0, 4, 4, 2, 1), (0, 4, 4, 2, 0), (0, 2, 4, 4, 1)]),
    2048: _b(2048, [(0, 2, 8, 2, 1), (0, 2, 8, 2, 0)]),
    4096: _b(4096, [(0, 1, 8, 2, 1), (0, 1, 8, 2, 0)]),
    8192: _b(8192, [(0, 1, 16, 1, 1), (0, 1, 16, 1, 0), (0, 1, 16, 1, 1, 1), (0, 1, 8, 2, 1, 1),
                    (0, 1, 8, 2, 0, 1)]),
    16384: _b(16384, [(0, 1, 16, 1, 0), (4096, 1, 8, 2, 0), (0, 1, 16, 1, 0, 1), (0, 1, 16, 1, 1, 1),
                      (0, 1, 32, 1, 0, 1), (0, 1, 32, 1, 0)]),
    32768: _b(32768, [(4096, 1, 8, 2, 0), (4096, 1, 8, 2, 1), (0, 1, 32, 1, 0, 1)]),
}


class _Recorder:
    """Stands in for a @triton.jit kernel and keeps the compiled kernel of its last launch, for
    its register count and spills."""

    def __init__(self, fn):
        self.fn, self.last = fn, None

    def __getitem__(self, grid):
        launch = self.fn[grid]

        def run(*args, **kwargs):
            self.last = launch(*args, **kwargs)
            return self.last

        return run

    def usage(self) -> dict:
        k = self.last
        return {"regs": getattr(k, "n_regs", None), "spills": getattr(k, "n_spills", None)}


KERNELS = {("rmsnorm", "fwd"): (RMS, "_rms_fwd"), ("rmsnorm", "bwd"): (RMS, "_rms_bwd"),
           ("layernorm", "fwd"): (LN, "_ln_fwd"), ("layernorm", "bwd"): (LN, "_ln_bwd")}


def _inputs(n, m=M, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    x = torch.randn((m, n), device="cuda", dtype=torch.bfloat16, generator=g)
    dy = torch.randn((m, n), device="cuda", dtype=torch.bfloat16, generator=g)
    w = (1 + 0.1 * torch.randn(n, device="cuda", generator=g)).to(torch.bfloat16)
    b = (0.1 * torch.randn(n, device="cuda", generator=g)).to(torch.bfloat16)
    return x, dy, w, b


def _fwd_step(op, x, w, b):
    if op == "rmsnorm":
        return lambda: RMS._forward(x, w, None, 1e-6, "llama", 0.0, True)
    return lambda: LN._forward(x, w, b, None, 1e-5, True)


def _bwd_step(op, x, dy, w, b):
    if op == "rmsnorm":
        _, _, rstd = RMS._forward(x, w, None, 1e-6, "llama", 0.0, True)
        return lambda: RMS._backward(dy, x, w, rstd, None, 0.0, True, None, False)
    _, _, mean, rstd = LN._forward(x, w, b, None, 1e-5, True)
    return lambda: LN._backward(dy, x, w, b, mean, rstd, None, True, True, None)


def sweep(out, ns, dirs=("fwd", "bwd")):
    best = {}
    orig_f, orig_b = L.fwd_config, L.bwd_config
    for op in ("rmsnorm", "layernorm"):
        for n in ns:
            x, dy, w, b = _inputs(n)
            for direction, cands in (("fwd", FWD[n]), ("bwd", BWD[n])):
                if direction not in dirs:
                    continue
                nbytes = (2 if direction == "fwd" else 3) * M * n * 2
                for cfg in cands:
                    L.fwd_config = (lambda *_, c=cfg: c) if direction == "fwd" else orig_f
                    L.bwd_config = (lambda *_, c=cfg: c) if direction == "bwd" else orig_b
                    module, name = KERNELS[(op, direction)]
                    real = getattr(module, name)
                    rec_k = _Recorder(real)
                    setattr(module, name, rec_k)
                    try:
                        step = _fwd_step(op, x, w, b) if direction == "fwd" else _bwd_step(op, x, dy, w, b)
                        g = T.capture(step)
                        us = T.median_us(g)
                        del g
                    except Exception as e:  # a config that does not compile or launch
                        print(f"  {op} {direction} {n} {cfg}: {type(e).__name__}: {str(e)[:120]}")
                        continue
                    finally:
                        L.fwd_config, L.bwd_config = orig_f, orig_b
                        setattr(module, name, real)
                    rec = {"op": op, "dir": direction, "N": n, "cfg": cfg.__dict__, "us": us,
                           "gbps": nbytes / us / 1e3, **rec_k.usage()}
                    print(f"  {op:9s} {direction} N={n:5d} {rec['gbps']:6.0f} GB/s regs={rec['regs']} "
                          f"spills={rec['spills']} {_describe(cfg)}", flush=True)
                    out.write(json.dumps(rec) + "\n")
                    key = (op, direction, n)
                    if key not in best or us < best[key]["us"]:
                        best[key] = rec
            del x, dy, w, b
            T.release()
    print("\nbest configs (bf16, M=16384; fwd GB/s on 2MN, bwd on 3MN bytes):")
    for (op, d, n), rec in sorted(best.items()):
        c = rec["cfg"]
        print(f"  {op:9s} {d} N={n:5d}: {rec['gbps']:6.0f} GB/s {rec['us']:8.1f} us  {_describe(L.Config(**c))}")
    return best


def _describe(c: L.Config) -> str:
    return (f"block={c.block_n} rows={c.rows} warps={c.num_warps} pps={c.programs_per_sm} "
            f"prefetch={int(c.prefetch)} reload_w={int(c.reload_w)} split={int(c.split)} looped={int(c.looped)}")


def accuracy():
    """Max forward error in ULPs on the GPU (bf16 stores round there), N = 4096."""
    n, m = 4096, 2048
    x, dy, w, b = _inputs(n, m, seed=1)
    x64, w64, b64 = x.double().cpu(), w.double().cpu(), b.double().cpu()
    lines = []
    for casting in ("gemma", "llama"):
        y = RMS.rms_norm(x, w, 1e-6, casting=casting).double().cpu()
        ye, _, s = ref.rmsnorm_forward(x64, w64, 1e-6, 0.0)
        err = ((y - ye).abs() / dtypes.ulp(ye, torch.bfloat16)).max().item()
        lines.append(f"rmsnorm {casting} bf16 N={n}: max {err:.3f} ULP vs exact")
    y = LN.layer_norm(x, w, b, 1e-5).double().cpu()
    ye, mag, _ = ref.layernorm_forward(x64, w64, b64, 1e-5)
    e = (y - ye).abs()
    lines.append(f"layernorm bf16 N={n}: max {(e / dtypes.ulp(ye, torch.bfloat16)).max().item():.3f} ULP "
                 f"of y; max {(e / dtypes.ulp(mag, torch.bfloat16)).max().item():.3f} ULP of |w xhat|+|b|")
    for line in lines:
        print(line)
    return lines


def _flat(outs):
    flat = []
    for o in outs:
        flat.extend(o if isinstance(o, list) else [o])
    return [t for t in flat if t is not None]


def determinism(ns):
    """Backward bits identical over 3 runs at full size, for both ops."""
    bad = []
    for op in ("rmsnorm", "layernorm"):
        for n in ns:
            x, dy, w, b = _inputs(n, seed=2)
            step = _bwd_step(op, x, dy, w, b)
            first = [t.clone() for t in _flat(step())]
            for _ in range(2):
                for a, c in zip(first, _flat(step()), strict=True):
                    if not torch.equal(a.view(torch.uint8), c.view(torch.uint8)):
                        bad.append((op, n))
            del x, dy, w, b, first
            T.release()
    print("backward bitwise repeatable at M=16384:", "yes" if not bad else f"NO {bad}")
    return bad


def small_batch():
    """Our fwd and fwd+bwd latency (us) through autograd at N = 4096, M in {1, 32, 128}, for
    several minimum numbers of rows per backward program."""
    import peers

    orig = L.MIN_ROWS_PER_PROGRAM
    for op in ("rmsnorm", "layernorm"):
        for min_rows in (1, 4):
            L.MIN_ROWS_PER_PROGRAM = min_rows
            row = []
            for m in (1, 32, 128):
                fn, params = peers.make("normgate", op, 4096, torch.bfloat16)
                x, dy, _, _ = _inputs(4096, m)
                x.requires_grad_(True)
                for pass_ in T.PASSES:
                    if pass_ == "forward" and min_rows != orig:
                        continue
                    g = T.capture(T.step_for(fn, x, params, dy, pass_))
                    row.append(f"M={m} {pass_[:3]}{'+bwd' if pass_ != 'forward' else ''} {T.median_us(g):5.1f}")
                    del g
            print(f"small batch {op} min_rows={min_rows}: " + ", ".join(row))
    L.MIN_ROWS_PER_PROGRAM = orig


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--ns", default=",".join(map(str, NS)))
    ap.add_argument("--skip-sweep", action="store_true")
    ap.add_argument("--sweep-only", action="store_true")
    ap.add_argument("--dirs", default="fwd,bwd", help="which kernels the sweep times: fwd, bwd or both")
    args = ap.parse_args()
    ns = [int(v) for v in args.ns.split(",")]
    t0 = time.time()
    print(torch.cuda.get_device_name(), torch.__version__, "triton", __import__("triton").__version__)
    if not args.sweep_only:
        accuracy()
        determinism(ns)
        _, cg = T.copy_gbps(2 * M * 4096 * 2)
        print(f"copy: {cg:.0f} GB/s at {2 * M * 4096 * 2 / 1e6:.0f} MB")
        small_batch()
    if not args.skip_sweep:
        with open(os.path.join(args.out, "tune.jsonl"), "w") as out:
            sweep(out, ns, tuple(args.dirs.split(",")))
    print(f"tune.py done in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
