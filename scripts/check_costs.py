"""Per-case cost of the guard bands, the M boundaries and the identities check, on one device.

    python scripts/check_costs.py [cpu|cuda]

For an eager and a Triton candidate (the zoo's, under the interpreter on the CPU), the mean over a
few cases of the best of three timings: contract and accuracy with and without the guards, batch
invariance with and without the M boundaries, and identities. docs/detection.md has the figures.
"""

from __future__ import annotations

import importlib
import os
import statistics
import sys

DEVICE = sys.argv[1] if len(sys.argv) > 1 else "cpu"
if DEVICE == "cpu":
    os.environ.setdefault("TRITON_INTERPRET", "1")

import torch  # noqa: E402

from normgate import candidates, checkout, checks  # noqa: E402
from normgate.case import Case  # noqa: E402
from normgate.checks import Context  # noqa: E402
from normgate.memory import enable_uninitialized_fill  # noqa: E402
from normgate.op import get_op  # noqa: E402

catalog = importlib.import_module(checkout.zoo().__name__ + ".catalog")  # the checkout's zoo/

SHAPES = [((3, 100), "contiguous"), ((64, 1024), "strided"), ((1, 257), "contiguous"), ((17, 31), "strided")]
if DEVICE == "cuda":
    SHAPES += [((4096, 4096), "contiguous"), ((1024, 8192), "strided")]


def timed(cand, check: str, without: str, ctx: Context) -> float:
    os.environ["NORMGATE_WITHOUT"] = without
    op = get_op(cand.op)
    out = []
    for i, (shape, layout) in enumerate(SHAPES):
        case = Case("rmsnorm", shape, "fp32", seed=i, layout=layout)
        checks.ALL[check](cand, op, case, ctx)  # compiles
        out.append(min(checks.ALL[check](cand, op, case, ctx).duration_s for _ in range(3)))
    return statistics.mean(out) * 1e3


def main() -> None:
    enable_uninitialized_fill()
    if DEVICE == "cpu":
        torch.set_num_threads(1)
    catalog.register_all()
    ctx = Context(DEVICE, interpreter=DEVICE == "cpu")
    for name in ("torch_rms_norm", "zoo_triton_rmsnorm"):
        cand = candidates.get(name)
        for check, feature in (("contract", "guards"), ("accuracy", "guards"), ("batch_invariance", "m_boundaries")):
            print(f"{DEVICE} {name} {check}: {timed(cand, check, '', ctx):.1f} ms, without {feature} "
                  f"{timed(cand, check, feature, ctx):.1f} ms", flush=True)
        print(f"{DEVICE} {name} identities: {timed(cand, 'identities', '', ctx):.1f} ms", flush=True)


if __name__ == "__main__":
    main()
