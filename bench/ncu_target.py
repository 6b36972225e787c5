"""One kernel's step, run a few times, for Nsight Compute to profile (no timing here).

    ncu --clock-control none -k regex:rms --launch-skip 4 --launch-count 2 --section SpeedOfLight \\
        python3 bench/ncu_target.py normgate rmsnorm 16384 forward_backward

KERNEL is one of bench/peers.py's (normgate, liger, torch_compile, torch); bf16, M = 16384.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import graphtime as T  # noqa: E402
import peers  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("kernel")
    ap.add_argument("op", choices=("rmsnorm", "layernorm"))
    ap.add_argument("n", type=int)
    ap.add_argument("pass_", choices=T.PASSES)
    ap.add_argument("--m", type=int, default=16384)
    ap.add_argument("--repeat", type=int, default=4)
    ap.add_argument("--clear-l2", action="store_true",
                    help="write 256 MB before each step, as do_bench clears L2 before each timing (with ncu's "
                         "--cache-control none the kernel then starts as it does in the benchmark)")
    args = ap.parse_args()
    fn, params = peers.make(args.kernel, args.op, args.n, torch.bfloat16)
    x, dy = T.activations(args.m, args.n, args.pass_, seed=0)
    step = T.step_for(fn, x, params, dy, args.pass_)
    scratch = torch.empty(256 << 20, dtype=torch.int8, device="cuda") if args.clear_l2 else None
    for _ in range(args.repeat):
        if scratch is not None:
            scratch.zero_()
        step()
    torch.cuda.synchronize()


if __name__ == "__main__":
    main()
