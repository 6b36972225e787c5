"""Switching off the memory and boundary checks, to measure what they add (docs/detection.md).

``NORMGATE_WITHOUT`` is a comma-separated list of: ``guards`` (guard bands around every buffer),
``grad_strides`` (upstream gradients with a row padding of their own in the strided layout),
``m_boundaries`` (batch invariance across the M dispatch boundaries), ``n_boundaries`` (widths at
the N boundaries). Unset, everything is on; the zoo's before/after figures come from runs with
and without it.
"""

from __future__ import annotations

import os

ENV = "NORMGATE_WITHOUT"
KNOWN = ("guards", "grad_strides", "m_boundaries", "n_boundaries")


def off(name: str) -> bool:
    if name not in KNOWN:
        raise ValueError(f"unknown feature {name!r}; known: {', '.join(KNOWN)}")
    return name in {p.strip() for p in os.environ.get(ENV, "").split(",")}
