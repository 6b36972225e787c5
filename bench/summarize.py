"""Markdown tables from a pytest-benchmark JSON written by bench/test_bench.py.

    python bench/summarize.py bench/results/<gpu>.json
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict

ORDER = ("normgate", "liger", "torch_compile", "torch", "copy")
NAMES = {"normgate": "normgate (ours)", "liger": "Liger-Kernel", "torch_compile": "torch.compile",
         "torch": "torch.nn.functional", "copy": "device copy"}


def load(path):
    with open(path) as f:
        data = json.load(f)
    return [b["extra_info"] for b in data["benchmarks"] if b.get("extra_info")]


def tables(rows, big_m=16384):
    out = []
    gpu = rows[0]["gpu"] if rows else "?"
    out.append(f"GPU: {gpu}. bf16, GB/s counted on the minimum bytes (forward 2MN, forward+backward 5MN "
               "elements, + parameters), with the fraction of a device copy of the same bytes in brackets.\n")
    big = [r for r in rows if r["M"] == big_m]
    ns = sorted({r["N"] for r in big})
    for op in ("rmsnorm", "layernorm"):
        for pass_ in ("forward", "forward_backward"):
            cell = {}
            for r in big:
                if r["op"] in (op, "copy") and r["pass"] == pass_:
                    cell[(r["kernel"], r["N"])] = r
            if not cell:
                continue
            out.append(f"\n**{op}, {pass_.replace('_', '+')}, M = {big_m}**\n")
            out.append("| kernel | " + " | ".join(f"N={n}" for n in ns) + " |")
            out.append("|---|" + "---|" * len(ns))
            for k in ORDER:
                vals = [cell.get((k, n)) for n in ns]
                if not any(vals):
                    continue
                txt = [f"{v['gbps']:.0f} ({v['fraction_of_copy']:.2f})" if v else "-" for v in vals]
                out.append(f"| {NAMES[k]} | " + " | ".join(txt) + " |")
    small = [r for r in rows if r["M"] != big_m and r["op"] != "copy"]
    if small:
        ms = sorted({r["M"] for r in small})
        n = small[0]["N"]
        out.append(f"\n**Small batches, N = {n}: microseconds, forward / forward+backward**\n")
        out.append("| op | kernel | " + " | ".join(f"M={m}" for m in ms) + " |")
        out.append("|---|---|" + "---|" * len(ms))
        t = defaultdict(dict)
        for r in small:
            t[(r["op"], r["kernel"])][(r["M"], r["pass"])] = r["time_us"]
        for op in ("rmsnorm", "layernorm"):
            for k in ORDER:
                if (op, k) not in t:
                    continue
                d = t[(op, k)]
                nan = float("nan")
                cells = [f"{d.get((m, 'forward'), nan):.1f} / {d.get((m, 'forward_backward'), nan):.1f}" for m in ms]
                out.append(f"| {op} | {NAMES[k]} | " + " | ".join(cells) + " |")
    return "\n".join(out)


if __name__ == "__main__":
    print(tables(load(sys.argv[1])))
