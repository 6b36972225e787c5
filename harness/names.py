"""The words of a run: checks, verdicts and dtype names.

Kept free of torch, so that the command line can check its arguments before it imports torch and
Triton (seconds, or a minute on a loaded machine) and answer a mistyped argument at once.
"""

from __future__ import annotations

DETERMINISM = ("repeat", "poisoned", "batch_invariance")
CHECKS = ("accuracy", "contract") + DETERMINISM + ("identities",)
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
