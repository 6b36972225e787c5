"""The words of a run: checks, verdicts and dtype names.

Kept free of torch, so that the command line can check its arguments before it imports torch and
Triton (seconds, or a minute on a loaded machine) and answer a mistyped argument at once.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CheckSpec:
    """What the rest of normgate knows about a check, declared once: its name (the function in
    ``checks.py`` and the word in results, reports and ``--checks``), its share of ``--examples``,
    where the scheduler puts it within a kernel, and a one-line description."""

    name: str
    share: float
    schedule: int
    determinism: bool
    description: str


#: In report column order. Accuracy gets the full budget; the costlier or narrower checks less.
#: Accuracy is scheduled first so that when a kernel's tasks are spread over several workers, its
#: binaries are mostly built (and in the Triton cache the workers share) by the time the others run.
SPECS: tuple[CheckSpec, ...] = (
    CheckSpec("accuracy", 1.0, 0, False, "error in ULP against the float64 reference, within the op's bound"),
    CheckSpec("contract", 0.25, 1, False, "output shapes, dtypes, devices and finiteness, and inputs left unmodified"),
    CheckSpec("repeat", 0.25, 2, True, "the same inputs give the same bits run after run"),
    CheckSpec("poisoned", 0.125, 3, True, "the same bits with free memory filled with garbage before each run"),
    CheckSpec("batch_invariance", 0.25, 4, True, "an item's outputs do not depend on the rest of the batch"),
    CheckSpec("identities", 0.25, 5, False, "reference-free identities of the op and exact power-of-two scalings"),
)
SPEC = {s.name: s for s in SPECS}
CHECKS = tuple(s.name for s in SPECS)
DETERMINISM = tuple(s.name for s in SPECS if s.determinism)
VERDICTS = ("pass", "fail", "error", "skip", "range")
DTYPES = ("fp64", "fp32", "bf16", "fp16")
DTYPE_FORMS = "one of fp64, fp32, bf16, fp16, or activations/parameters such as bf16/fp32 or fp16/fp32"


def split_dtype_pair(spec: str) -> tuple[str, str]:
    """``"bf16/fp32"`` -> ``("bf16", "fp32")``; ``"bf16"`` -> ``("bf16", "bf16")``."""
    x, _, p = spec.partition("/")
    for name in (x, p) if p else (x,):
        if name not in DTYPES:
            raise ValueError(f"unknown dtype {name!r}; expected {DTYPE_FORMS}")
    return x, p or x
