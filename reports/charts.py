"""The report's charts as inline SVG geometry: a line chart of bandwidth against row length and the
small histogram of error/bound per case. Plain data the template draws; no SVG library, so the
report stays one file that opens offline.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from normgate.reports.text import fmt_n, fmt_num

PALETTE = (
    "#2563eb",
    "#d97706",
    "#059669",
    "#db2777",
    "#7c3aed",
    "#0891b2",
    "#65a30d",
    "#dc2626",
    "#4b5563",
    "#9333ea",
)
#: Histogram bins of error/bound per case; the last two are beyond the bound.
RATIO_BINS: tuple[tuple[float, float, str], ...] = (
    (0.0, 0.25, "0–0.25"),
    (0.25, 0.5, "0.25–0.5"),
    (0.5, 0.75, "0.5–0.75"),
    (0.75, 1.0, "0.75–1"),
    (1.0, 2.0, "1–2 (fail)"),
    (2.0, math.inf, "> 2 (fail)"),
)


def ratio_histogram(ratios: Iterable[float]) -> list[dict[str, Any]]:
    """Bars for an inline SVG: how many cases landed at each fraction of the bound."""
    counts = [0] * len(RATIO_BINS)
    for r in ratios:
        for i, (lo, hi, _) in enumerate(RATIO_BINS):
            if lo <= r < hi or (i == 3 and r == 1.0) or (i == len(RATIO_BINS) - 1 and r != r):
                counts[i] += 1
                break
    peak = max(counts) or 1
    bar_w, height = 12, 22
    return [
        {
            "x": i * (bar_w + 2),
            "w": bar_w,
            "h": 0 if n == 0 else max(2, round(height * n / peak)),
            "y": height - (0 if n == 0 else max(2, round(height * n / peak))),
            "n": n,
            "label": label,
            "over": lo >= 1.0,
        }
        for i, ((lo, _, label), n) in enumerate(zip(RATIO_BINS, counts, strict=True))
    ]


@dataclass
class Series:
    label: str
    color: str
    points: str
    dots: list[dict[str, Any]]
    dashed: bool = False


@dataclass
class Chart:
    title: str
    width: int
    height: int
    box: dict[str, float]
    x_ticks: list[dict[str, Any]]
    y_ticks: list[dict[str, Any]]
    series: list[Series]
    x_label: str = "N (row length, log scale)"
    y_label: str = "GB/s"
    note: str = ""


def nice_step(span: float, target: int = 7) -> float:
    if span <= 0:
        return 1.0
    raw = span / target
    mag = 10 ** math.floor(math.log10(raw))
    return next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)


def bandwidth_chart(
    title: str,
    lines: Mapping[str, Mapping[int, float]],
    copies: Mapping[str, Mapping[int, float]],
    width: int = 640,
    height: int = 300,
) -> Chart:
    """An SVG line chart of GB/s against N (log2 axis) with each copy limit dashed (one per
    benchmark file: files from different GPUs have different limits)."""
    box = {"left": 64.0, "right": width - 16.0, "top": 16.0, "bottom": height - 44.0}
    every_line = [*lines.values(), *copies.values()]
    ns = sorted({n for pts in every_line for n in pts})
    top = max([v for pts in every_line for v in pts.values()] + [1.0])
    step = nice_step(top * 1.05)
    y_max = step * math.ceil(top * 1.05 / step)
    lo, hi = math.log2(ns[0]), math.log2(ns[-1])

    def x_of(n: int) -> float:
        if hi == lo:
            return (box["left"] + box["right"]) / 2
        return box["left"] + (math.log2(n) - lo) / (hi - lo) * (box["right"] - box["left"])

    def y_of(v: float) -> float:
        return box["bottom"] - v / y_max * (box["bottom"] - box["top"])

    every = max(1, math.ceil(len(ns) / 9))
    x_ticks = [{"x": round(x_of(n), 1), "label": fmt_n(n)} for n in ns[::every]]
    y_ticks = [
        {"y": round(y_of(i * step), 1), "label": fmt_num(i * step)}
        for i in range(int(round(y_max / step)) + 1)
    ]

    def series(label: str, color: str, pts: Mapping[int, float], dashed: bool = False) -> Series:
        coords = [(round(x_of(n), 1), round(y_of(v), 1), n, v) for n, v in sorted(pts.items())]
        return Series(
            label,
            color,
            " ".join(f"{x},{y}" for x, y, _, _ in coords),
            [{"x": x, "y": y, "title": f"{label}: N={n}, {fmt_num(v)} GB/s"} for x, y, n, v in coords],
            dashed,
        )

    out = [series(label, PALETTE[i % len(PALETTE)], pts) for i, (label, pts) in enumerate(lines.items())]
    out += [series(label, "#6b7280", pts, dashed=True) for label, pts in copies.items() if pts]
    return Chart(title, width, height, box, x_ticks, y_ticks, out)
