"""Markdown tables from the benchmark's records.

    python bench/summarize.py bench/results/<gpu>.json     # pytest-benchmark JSON (nox -s bench)
    python bench/summarize.py OUT/h200.jsonl               # bench/h200.py's records

Per op and pass at M = 16384: GB/s of every kernel with its fraction of the copy ceiling (the
fastest copy of the same bytes, bench/ceiling.py) in brackets, the ceiling and torch's ``copy_``
as rows of their own, ours against the best peer, and ours against the best memory-bound rate seen
in the run. A fraction of the ceiling above 1 is marked and its reason given under the table.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict

ORDER = ("normgate", "normgate_gemma", "quack", "liger", "torch_compile", "torch", "copy")
NAMES = {"normgate": "normgate (ours)", "normgate_gemma": "normgate, gemma casting (ours)",
         "quack": "quack", "liger": "Liger-Kernel", "torch_compile": "torch.compile",
         "torch": "torch.nn.functional", "copy": "device copy (copy_)"}
OURS = ("normgate", "normgate_gemma")
PEERS = ("quack", "liger", "torch_compile", "torch")


def load(path: str) -> list[dict]:
    """Records of a pytest-benchmark JSON (its extra_info) or of a JSON-lines file."""
    with open(path) as f:
        text = f.read()
    if path.endswith(".jsonl"):
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    return [b["extra_info"] for b in json.loads(text)["benchmarks"] if b.get("extra_info")]


def _ceiling(r: dict) -> tuple[float, str] | None:
    if "ceiling_gbps" in r:
        return r["ceiling_gbps"], r.get("ceiling_how", "?")
    return None


def _cell_text(r: dict, notes: list[str]) -> str:
    frac = r.get("fraction_of_ceiling", r.get("fraction_of_copy"))
    if frac is None:
        return f"{r['gbps']:.0f}"
    if frac > 1.0:
        why = r.get("above_ceiling_why") or "above the copy measured for these bytes (no ceiling was measured)"
        notes.append(f"{NAMES.get(r['kernel'], r['kernel'])}, {r['op']} {r['pass']} N={r['N']}: {why}")
        return f"{r['gbps']:.0f} ({frac:.2f}*{len(notes)})"
    return f"{r['gbps']:.0f} ({frac:.2f})"


def tables(rows: list[dict], big_m: int = 16384) -> str:
    cells = [r for r in rows if "kernel" in r and r.get("kind") in (None, "cell")]
    out = []
    gpu = cells[0]["gpu"] if cells else "?"
    out.append(f"GPU: {gpu}. bf16, GB/s counted on the minimum bytes (forward 2MN, forward+backward 5MN "
               "elements, + parameters), with the fraction of the copy ceiling (the fastest copy of the "
               "same bytes found: torch's copy_ or a Triton copy at several block sizes and warps) in "
               "brackets.\n")
    big = [r for r in cells if r["M"] == big_m]
    best_seen = max([r["gbps"] for r in big] + [c[0] for r in big if (c := _ceiling(r))], default=0.0)
    notes: list[str] = []
    ns = sorted({r["N"] for r in big})
    for op in ("rmsnorm", "layernorm"):
        for pass_ in ("forward", "forward_backward"):
            cell = {(r["kernel"], r["N"]): r for r in big if r["op"] in (op, "copy") and r["pass"] == pass_}
            if not any(k not in ("copy",) for k, _ in cell):
                continue
            out.append(f"\n**{op}, {pass_.replace('_', '+')}, M = {big_m}**\n")
            out.append("| kernel | " + " | ".join(f"N={n}" for n in ns) + " |")
            out.append("|---|" + "---|" * len(ns))
            for k in ORDER:
                vals = [cell.get((k, n)) for n in ns]
                if any(vals):
                    txt = [_cell_text(v, notes) if v else "-" for v in vals]
                    out.append(f"| {NAMES[k]} | " + " | ".join(txt) + " |")
            ceil = []
            for n in ns:
                c = next((_ceiling(r) for (k, nn), r in cell.items() if nn == n and _ceiling(r)), None)
                ceil.append(f"{c[0]:.0f} ({c[1]})" if c else "-")
            if any(c != "-" for c in ceil):
                out.append("| copy ceiling (fastest copy) | " + " | ".join(ceil) + " |")
                if not any(k == "copy" for k, _ in cell):  # copy_ alone, as the ceiling measured it
                    cp = [next((f"{r['copy_gbps']:.0f}" for (k, nn), r in cell.items() if nn == n
                                and "copy_gbps" in r), "-") for n in ns]
                    out.append("| torch copy_ alone | " + " | ".join(cp) + " |")
            ratio, seen = [], []
            for n in ns:
                ours = cell.get(("normgate", n))
                peer = [cell[(k, n)] for k in PEERS if (k, n) in cell]
                if ours and peer:
                    top = max(peer, key=lambda r: r["gbps"])
                    ratio.append(f"{ours['gbps'] / top['gbps']:.2f} ({NAMES[top['kernel']]})")
                else:
                    ratio.append("-")
                seen.append(f"{ours['gbps'] / best_seen:.2f}" if ours and best_seen else "-")
            out.append("| ours / best peer | " + " | ".join(ratio) + " |")
            out.append(f"| ours / best memory-bound rate seen ({best_seen:.0f}) | " + " | ".join(seen) + " |")
    if notes:
        out.append("")
        out.extend(f"*{i}: {note}" for i, note in enumerate(notes, 1))
    small = [r for r in cells if r["M"] != big_m and r["op"] != "copy"]
    if small:
        ms = sorted({r["M"] for r in small})
        n = small[0]["N"]
        out.append(f"\n**Small batches, N = {n}: microseconds, forward / forward+backward**\n")
        out.append("| op | kernel | " + " | ".join(f"M={m}" for m in ms) + " |")
        out.append("|---|---|" + "---|" * len(ms))
        t = defaultdict(dict)
        for r in small:
            t[(r["op"], r["kernel"])][(r["M"], r["pass"])] = r["time_us"]
        nan = float("nan")
        for op in ("rmsnorm", "layernorm"):
            for k in ORDER:
                if (op, k) not in t:
                    continue
                d = t[(op, k)]
                txt = [f"{d.get((m, 'forward'), nan):.1f} / {d.get((m, 'forward_backward'), nan):.1f}" for m in ms]
                out.append(f"| {op} | {NAMES[k]} | " + " | ".join(txt) + " |")
    left = [r for r in rows if r.get("kind") == "left_out"]
    errors = [r for r in rows if r.get("kind") == "error"]
    for r in errors:
        out.append(f"\nerror: {r['kernel']} {r['op']} {r['pass']} M={r['M']} N={r['N']}: {r['error']}")
    for r in left:
        out.append(f"\nleft out by the time budget ({r['phase']}): {r.get('cells') or r.get('targets')}")
    return "\n".join(out)


if __name__ == "__main__":
    print(tables(load(sys.argv[1])))
