"""A candidate's declaration (what ``normgate.register`` claims) and whether a change loosens it.

A declaration decides which cases a kernel is checked on: ``max_n=16`` keeps wide rows away from
it, ``inplace=True`` lets it overwrite the caller's input, ``batch_invariant=False`` turns a
difference into a skip. So the gate holds results to the base branch's declaration (recorded in
the baseline), and a pull request that loosens one fails unless the base branch made it.

Declarations are JSON objects written by ``Candidate.declaration()``; this module knows only that
format. A field it does not know, or one added or removed, counts as loosened: the gate cannot
tell, and fails closed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: True claims more (more is checked); False -> True is a tightening, True -> False a loosening.
_CLAIMS = {
    "backward": "gradients are checked",
    "strided": "strided rows are checked",
    "eps_none": "eps=None is checked",
    "full_range": "every finite input is in its domain",
    "batch_invariant": "batch invariance is judged",
}
#: True allows more (less is checked).
_ALLOWANCES = {
    "inplace": "it may overwrite its inputs",
    "triton": "Triton's bf16 stores get the interpreter's 1-ULP allowance",
}
#: Sets of what it is checked on: a member removed loosens.
_SETS = ("dtypes", "devices")
#: Any change is a different contract.
_IDENTITY = ("op", "variant")


@dataclass(frozen=True)
class DeclarationChange:
    kernel: str
    field: str
    loosened: bool
    message: str


def _show(v: Any) -> str:
    if v is None:
        return "any"
    if isinstance(v, list):
        return "(" + ", ".join("None" if x is None else str(x) for x in v) + ")"
    return str(v)


def compare(kernel: str, base: Mapping[str, Any], now: Mapping[str, Any]) -> list[DeclarationChange]:
    """Every field of ``now`` that differs from ``base``, each marked loosened or not."""
    out = []
    for f in sorted(set(base) | set(now)):
        if f in base and f in now and base[f] == now[f]:
            continue
        b, n = base.get(f), now.get(f)
        loosened, why = _judge(f, b, n, f in base, f in now)
        msg = f"{kernel}: declares {f} {_show(b) if f in base else '(absent)'} → {_show(n) if f in now else '(absent)'}"
        out.append(DeclarationChange(kernel, f, loosened, f"{msg} ({why})" if why else msg))
    return out


def _judge(f: str, b: Any, n: Any, in_base: bool, in_now: bool) -> tuple[bool, str]:
    if not (in_base and in_now):
        return True, "a field the other side lacks: cannot tell whether it loosens"
    if f in _IDENTITY:
        return True, "checked against another contract"
    if f in _CLAIMS:
        if b is True and n is not True:
            return True, f"no longer claimed: {_CLAIMS[f]} no more"
        return n is not True, ""
    if f in _ALLOWANCES:
        if n is True and b is not True:
            return True, _ALLOWANCES[f]
        return False, ""
    if f in _SETS:
        if not isinstance(b, list) or not isinstance(n, list):
            return True, "not a list"
        dropped = [x for x in b if x not in n]
        return (True, f"no longer checked on {', '.join(map(str, dropped))}") if dropped else (False, "")
    if f == "eps_values":  # None: every eps
        if n is None:
            return False, ""
        if b is None:
            return True, "only these eps are checked now"
        if not isinstance(b, list) or not isinstance(n, list):
            return True, "not a list"
        dropped = [x for x in b if x not in n]
        return (True, "fewer eps checked") if dropped else (False, "")
    if f == "max_n":  # None: any width; a mapping: per dtype
        if isinstance(b, dict) or isinstance(n, dict):
            keys = sorted(set(b) if isinstance(b, dict) else set()) or sorted(n if isinstance(n, dict) else ())
            narrower = [k for k in keys if not _wide_enough(_limit(b, k), _limit(n, k))]
            return (True, f"narrower rows in {', '.join(narrower)}") if narrower else (False, "")
        if _wide_enough(b, n):
            return False, ""
        return True, f"rows wider than {n} are no longer checked"
    if f == "grads":  # absent: every gradient
        if not isinstance(b, list) or not isinstance(n, list):
            return True, "not a list"
        dropped = [g for g in b if g not in n]
        return (True, f"{', '.join(dropped)} no longer checked") if dropped else (False, "")
    return True, "a field the gate does not know: cannot tell whether it loosens"


def _limit(v: Any, dtype: str) -> Any:
    """A max_n declaration's limit for one dtype (a mapping names it, or its activation part)."""
    if not isinstance(v, dict):
        return v
    return v.get(dtype, v.get(dtype.split("/")[0]))


def _wide_enough(b: Any, n: Any) -> bool:
    """Whether limit ``n`` checks every width limit ``b`` did (None: any width)."""
    if n is None:
        return True
    if b is None:
        return False
    return isinstance(b, int | float) and isinstance(n, int | float) and n >= b
