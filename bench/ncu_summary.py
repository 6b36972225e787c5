"""One line per profiled kernel of bench/profile.sh's Nsight Compute CSVs (plain or .gz).

    python bench/ncu_summary.py bench/results/profile-h100/ncu-*.csv.gz
"""

from __future__ import annotations

import csv
import gzip
import io
import sys

SHOWN = {  # metric -> column
    "gpu__time_duration.sum": "time",
    "dram__bytes_read.sum": "DRAM read",
    "dram__bytes_write.sum": "DRAM written",
    "dram__throughput.avg.pct_of_peak_sustained_elapsed": "DRAM %peak",
    "launch__block_size": "threads",
    "launch__registers_per_thread": "regs",
    "sm__warps_active.avg.pct_of_peak_sustained_active": "warps active %",
    "l1tex__t_bytes_pipe_lsu_mem_local_op_ld.sum": "spill loads",
    "l1tex__t_bytes_pipe_lsu_mem_local_op_st.sum": "spill stores",
    "lts__t_sector_hit_rate.pct": "L2 hit %",
    "smsp__average_warps_issue_stalled_long_scoreboard_per_issue_active.ratio": "long-scoreboard stalls",
    "smsp__average_warps_issue_stalled_barrier_per_issue_active.ratio": "barrier stalls",
    "launch__grid_size": "grid",
}
SKIPPED = ("distribution_", "elementwise_kernel", "vectorized_elementwise")  # the inputs' randn


def kernels(path: str) -> list[tuple[str, dict[str, str]]]:
    raw = gzip.open(path, "rt") if path.endswith(".gz") else open(path)
    with raw:
        rows = list(csv.reader(io.StringIO(raw.read())))
    head = next(i for i, r in enumerate(rows) if r and r[0] == "ID")
    cols = {name: i for i, name in enumerate(rows[head])}
    out: dict[str, tuple[str, dict[str, str]]] = {}
    for r in rows[head + 1:]:
        if len(r) < len(cols):
            continue
        name = r[cols["Kernel Name"]]
        if any(s in name for s in SKIPPED):
            continue
        entry = out.setdefault(r[cols["ID"]], (name.split("(")[0][:40], {}))
        entry[1][r[cols["Metric Name"]]] = f"{r[cols['Metric Value']]} {r[cols['Metric Unit']]}".strip()
    return list(out.values())


def main(paths: list[str]) -> None:
    for path in paths:
        print(f"== {path}")
        for name, m in kernels(path):
            print(f"  {name:40s} " + "  ".join(f"{col} {m.get(key, '?')}" for key, col in SHOWN.items()))


if __name__ == "__main__":
    main(sys.argv[1:])
