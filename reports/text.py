"""How the report, the gate and the CLI write data for people: numbers short and readable, text
from a results file on one line with no terminal codes in it."""

from __future__ import annotations

import math
from typing import Any

from normgate.reports.load import clean_text


def one_line(text: Any, limit: int = 200) -> str:
    """One line of at most ``limit`` characters, without terminal codes or control characters."""
    text = " ".join(clean_text(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def fmt_num(v: Any, digits: int = 3) -> str:
    """Short, readable numbers: 0.5, 3.42, 212, 1.2e+09, inf."""
    if v is None:
        return "–"
    if isinstance(v, bool) or not isinstance(v, int | float):
        return str(v)
    if isinstance(v, int):
        return f"{v:,}" if abs(v) >= 10_000 else str(v)
    if math.isnan(v) or math.isinf(v):
        return str(v)
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1e6:
        return f"{v:.{digits}g}"
    if a >= 100 and digits <= 4:
        return f"{v:,.0f}"
    return f"{v:.{digits}g}"


def fmt_n(n: int) -> str:
    if n >= 1024 and n % 1024 == 0:
        return f"{n // 1024}k"
    return str(n)
