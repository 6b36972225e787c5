"""What refusing FMA contraction costs our kernels (kernels/_launch.py, FP_FUSION).

Times our RMSNorm and LayerNorm, bf16, M = 16384, forward and forward+backward, compiled with and
without contraction, interleaved in one process (CUDA graph replay, median), beside a device copy
of the same bytes. Run on a GPU: ``python bench/fp_fusion.py [N ...]``.
"""

from __future__ import annotations

import sys

import graphtime as T
import peers
import torch

from normgate.kernels import _launch as L

M = 16384


def gbps(op: str, pass_: str, n: int) -> float:
    fn, params = peers.make("normgate", op, n, torch.bfloat16)
    x, dy = T.activations(M, n, pass_, seed=n)
    g = T.capture(T.step_for(fn, x, params, dy, pass_))
    try:
        return T.norm_bytes(M, n, 2, len(params), pass_) / T.median_us(g) / 1e3
    finally:
        del g, x, dy
        T.release()


def main(ns: list[int]) -> None:
    print(f"{torch.cuda.get_device_name()}: GB/s, bf16, M = {M}, with FMA contraction / without / copy")
    for op in ("rmsnorm", "layernorm"):
        for pass_ in T.PASSES:
            for n in ns:
                got = {}
                for fusion in (True, False, True, False):  # interleaved: drift hits both alike
                    L.FP_FUSION = fusion
                    got.setdefault(fusion, []).append(gbps(op, pass_, n))
                on, off = max(got[True]), max(got[False])
                _, copy = T.copy_gbps(T.norm_bytes(M, n, 2, 1, pass_))
                label = pass_.replace("_", "+")
                print(f"{op:9s} {label:16s} N={n:6d}  {on:7.0f} / {off:7.0f} ({off / on - 1:+.1%}) / {copy:7.0f}")
    L.FP_FUSION = False


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [1024, 4096, 16384, 32768])
