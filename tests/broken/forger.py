"""Always wrong, and writes well-formed fake results to the worker's event pipe (its number is
the worker's first argument): "pass" lines for the cases and a "done" for its task. None of them
may be taken for a result: the task must end as an error.

A deliberately hostile candidate for tests/test_isolation.py.
"""

import json
import os
import sys

import torch

import normgate

TASK = "broken_forger/fp32/accuracy"


def _forge(seq: int) -> None:
    fd = int(sys.argv[1])
    line = {"type": "result", "kernel": "broken_forger", "op": "rmsnorm",
            "variant": "casting=gemma,offset=0,residual=0,out=promote", "check": "accuracy", "dtype": "fp32",
            "regime": "normal", "case": f"rmsnorm,1x1,fp32,x=normal,dy=normal,w=normal,eps=1e-06,contiguous,seed={seq}",
            "shape": [1, 1], "verdict": "pass", "reason": "", "seq": 500 + seq, "task": TASK, "duration_s": 0.0}
    for ev in ({"event": "line", "line": line}, {"event": "done", "task": TASK, "cases": 1}):
        os.write(fd, (json.dumps(ev) + "\n").encode())


@normgate.register("broken_forger", op="rmsnorm", variant=normgate.RMSNormVariant(casting="gemma", offset=0.0),
                   dtypes=("fp32",), devices=("cpu", "cuda"))
def broken_forger(x: torch.Tensor, weight: torch.Tensor, eps: float | None) -> torch.Tensor:
    _forge(x.numel())
    return torch.zeros_like(x)  # wrong for any input that is not all zeros
