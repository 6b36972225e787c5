"""Regenerate the hand-made results and benchmark files in this folder: python tests/data/make_data.py

The files are small, readable and committed; this script only saves typing them. Each one exercises
one thing the report and gate must handle (see tests/test_report.py and tests/test_gate.py).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

HERE = Path(__file__).parent
RMS = "casting=llama,offset=0,residual=0,out=promote"
GEMMA = "casting=gemma,offset=1,residual=0,out=promote"
LN = "bias=1,residual=0"
KERNELS = [
    ("triton_rmsnorm", "rmsnorm", GEMMA),
    ("torch_rmsnorm", "rmsnorm", RMS),
    ("triton_layernorm", "layernorm", LN),
]
DTYPES = ["bf16", "fp32"]
REGIMES = ["normal", "zeros", "tiny", "huge", "outlier"]
OUTPUTS = {"rmsnorm": ["y", "dx", "dweight"], "layernorm": ["y", "dx", "dweight", "dbias"]}
DET = ["repeat", "poisoned", "batch_invariance"]



def declaration(op: str, variant: str, dtypes: list[str] = DTYPES, triton: bool = False) -> dict:
    """What Candidate.declaration() writes for a kernel registered with the defaults."""
    return {
        "op": op,
        "variant": variant,
        "dtypes": list(dtypes),
        "devices": ["cpu", "cuda"],
        "backward": True,
        "inplace": False,
        "strided": True,
        "eps_none": True,
        "full_range": False,
        "eps_values": None,
        "max_n": None,
        "batch_invariant": True,
        "triton": triton,
    }


ENV = {
    "type": "env",
    "format": "normgate-results/2",
    "normgate": "0.1.0",
    "torch": "2.11.0+cu130",
    "triton": "3.6.0",
    "python": "3.12.3",
    "device": "cuda",
    "gpu": "NVIDIA H100 80GB HBM3",
    "gpu_count": 1,
    "driver": "580.159.04",
    "cuda": "13.0",
    "interpreter": False,
    "platform": "Linux-6.8.0-x86_64-with-glibc2.39",
    "date": "2026-11-25T04:40:00+00:00",
    "seed": 0,
    "examples": 5,
    "argv": ["normgate", "run", "--out", "results.jsonl"],
    "declarations": {k: declaration(op, v, triton=k.startswith("triton")) for k, op, v in KERNELS},
}


def case_key(op: str, dtype: str, regime: str, seed: int, shape: tuple[int, int] = (4, 1000)) -> str:
    return f"{op},{shape[0]}x{shape[1]},{dtype},x={regime},dy=normal,w=ones,eps=1e-06,contiguous,seed={seed}"


def errors_for(op: str, dtype: str, regime: str) -> dict:
    out = {}
    for i, o in enumerate(OUTPUTS[op]):
        if dtype == "bf16":
            max_ulp, bound, eager = (
                (0.5, 0.53, 0.5) if o == "y" else (0.5 + 0.25 * i, 2.0 + i, 0.75 + 0.25 * i)
            )
        else:
            max_ulp, bound, eager = (3.4, 210.0, 3.4) if o == "y" else (5.0 + i, 400.0, 6.0 + i)
        if regime == "zeros":
            max_ulp, eager = 0.0, 0.0
        out[o] = {
            "max_ulp": max_ulp,
            "mean_ulp": round(max_ulp / 2, 3),
            "max_abs": 0.0039 * max_ulp,
            "bound_ulp": bound,
            "ratio": round(max_ulp / bound, 4),
            "eager_max_ulp": eager,
        }
    return out


def clean_run() -> list[dict]:
    lines = [dict(ENV)]
    seq = 0
    for kernel, op, variant in KERNELS:
        for dtype in DTYPES:
            for check in ["accuracy", "contract", *DET]:
                task = f"{kernel}/{dtype}/{check}"
                n = 0
                for seed, regime in enumerate(REGIMES):
                    r = {
                        "type": "result",
                        "kernel": kernel,
                        "op": op,
                        "variant": variant,
                        "check": check,
                        "dtype": dtype,
                        "regime": regime,
                        "case": case_key(op, dtype, regime, seed),
                        "shape": [4, 1000],
                        "verdict": "pass",
                        "reason": "",
                        "worst": [],
                        "replay": f"normgate replay '{kernel}@{check}:{case_key(op, dtype, regime, seed)}'",
                        "seq": seq,
                        "task": task,
                        "duration_s": 0.004,
                        "notes": [],
                    }
                    if check == "accuracy":
                        r["errors"] = errors_for(op, dtype, regime)
                    if check == "contract" and regime == "huge" and kernel == "torch_rmsnorm":
                        r["verdict"], r["reason"] = "skip", "candidate does not claim strided inputs"
                    lines.append(r)
                    seq += 1
                    n += 1
                if check == "accuracy" and kernel == "torch_rmsnorm" and dtype == "bf16":
                    lines.append(range_line(kernel, op, variant, dtype, seq))
                    seq += 1
                    n += 1
                lines.append(
                    {
                        "type": "task",
                        "task": task,
                        "kernel": kernel,
                        "check": check,
                        "dtype": dtype,
                        "cases": n,
                        "status": "done",
                        "elapsed_s": 0.02,
                    }
                )
    return with_summary(lines)


def range_line(kernel: str, op: str, variant: str, dtype: str, seq: int) -> dict:
    key = case_key(op, dtype, "huge", 77, (1, 8))
    return {
        "type": "result",
        "kernel": kernel,
        "op": op,
        "variant": variant,
        "check": "accuracy",
        "dtype": dtype,
        "regime": "huge",
        "case": key,
        "shape": [1, 8],
        "verdict": "range",
        "reason": "output is 0 for |x| >= 1.9e19: x*x overflows the fp32 accumulator "
        "(beyond the claimed domain)",
        "errors": {
            "y": {
                "max_ulp": 1.1e9,
                "mean_ulp": 1.1e9,
                "max_abs": 1.0,
                "bound_ulp": 0.53,
                "ratio": 2.1e9,
                "eager_max_ulp": 1.1e9,
            }
        },
        "worst": [
            {"output": "y", "index": [0, 3], "expected": 0.98, "got": 0.0, "ulp": 1.1e9, "bound_ulp": 0.53}
        ],
        "replay": f"normgate replay '{kernel}@accuracy:{key}'",
        "seq": seq,
        "task": f"{kernel}/{dtype}/accuracy",
        "duration_s": 0.01,
        "notes": [],
    }


def with_summary(lines: list[dict], interrupted: bool = False) -> list[dict]:
    lines = [ln for ln in lines if ln["type"] != "summary"]
    results = [ln for ln in lines if ln["type"] == "result"]
    counts = {
        v: sum(1 for r in results if r["verdict"] == v) for v in ("pass", "fail", "error", "skip", "range")
    }
    lines.append(
        {
            "type": "summary",
            "cases": len(results),
            **counts,
            "kernels": len({r["kernel"] for r in results}),
            "elapsed_s": 1.5,
            "interrupted": interrupted,
        }
    )
    return lines


def find(lines: list[dict], kernel: str, dtype: str, check: str, regime: str) -> dict:
    return next(
        ln
        for ln in lines
        if ln["type"] == "result"
        and ln["kernel"] == kernel
        and ln["dtype"] == dtype
        and ln["check"] == check
        and ln.get("regime") == regime
    )


def failing_run() -> list[dict]:
    """triton_rmsnorm: a bf16 accuracy failure (one extra rounding) and an fp32 poisoned-memory error."""
    lines = clean_run()
    r = find(lines, "triton_rmsnorm", "bf16", "accuracy", "tiny")
    r.update(
        verdict="fail",
        case=case_key("rmsnorm", "bf16", "tiny", 3, (2, 5)),
        shape=[2, 5],
        examples=4,
        shrinks=11,
        reason="y: 1.5 ULP > bound 0.53 ULP at [1, 2] (weight rounded to bf16 before the multiply?)",
        replay="normgate replay 'triton_rmsnorm@accuracy:"
        + case_key("rmsnorm", "bf16", "tiny", 3, (2, 5))
        + "'",
    )
    r["errors"]["y"].update(max_ulp=1.5, ratio=2.83)
    r["worst"] = [
        {
            "output": "y",
            "index": [1, 2],
            "expected": 0.0001234,
            "got": 0.0001235,
            "ulp": 1.5,
            "bound_ulp": 0.53,
        },
        {
            "output": "y",
            "index": [0, 4],
            "expected": -0.000211,
            "got": -0.0002112,
            "ulp": 1.0,
            "bound_ulp": 0.53,
        },
    ]
    e = find(lines, "triton_rmsnorm", "fp32", "poisoned", "zeros")
    e.update(
        verdict="error",
        case=case_key("rmsnorm", "fp32", "zeros", 1, (1, 4)),
        shape=[1, 4],
        reason="RuntimeError: \x1b[31mCUDA error: an illegal memory access was encountered\x1b[0m\n"
        "  at triton_rmsnorm_bwd (grid=(132,))",
        replay="normgate replay 'triton_rmsnorm@poisoned:"
        + case_key("rmsnorm", "fp32", "zeros", 1, (1, 4))
        + "'",
    )
    return with_summary(lines)


def worse_run() -> list[dict]:
    """All pass, but torch_rmsnorm fp32 dx got 3x less accurate: within the bound, beyond the budget."""
    lines = clean_run()
    for regime in REGIMES:
        r = find(lines, "torch_rmsnorm", "fp32", "accuracy", regime)
        if regime == "outlier":
            r["errors"]["dx"].update(max_ulp=19.0, ratio=19.0 / 400)
    return lines


def xss_run() -> list[dict]:
    """Strings that must be escaped everywhere: HTML, Markdown, XML."""
    bad = "<script>alert(1)</script>"
    lines = [
        dict(
            ENV,
            gpu="<b>GPU</b>",
            argv=["normgate", "run", "--load", "<img src=x onerror=alert(3)>"],
            declarations={bad: declaration("rmsnorm", "a|b`c`", ["bf16"])},
        )
    ]
    key = "rmsnorm,2x3,bf16,x=normal,dy=normal,w=ones,eps=1e-06,contiguous,seed=1"
    lines.append(
        {
            "type": "result",
            "kernel": bad,
            "op": "rmsnorm",
            "variant": "a|b`c`",
            "check": "accuracy",
            "dtype": "bf16",
            "regime": "<i>normal</i>",
            "case": key,
            "shape": [2, 3],
            "verdict": "fail",
            "reason": "<img src=x onerror=alert(2)> & \"quotes\" 'single' ```fence``` | pipe "
            "[link](javascript:x) @everyone",
            "errors": {
                "y": {
                    "max_ulp": 2.0,
                    "mean_ulp": 1.0,
                    "max_abs": 0.01,
                    "bound_ulp": 0.53,
                    "ratio": 3.8,
                    "eager_max_ulp": 0.5,
                }
            },
            "worst": [
                {
                    "output": "y",
                    "index": [0, 1],
                    "expected": 1.0,
                    "got": 1.0156,
                    "ulp": 2.0,
                    "bound_ulp": 0.53,
                }
            ],
            "replay": f"normgate replay '{bad}@accuracy:{key}' ``` </code><script>alert(4)</script>",
            "seq": 0,
            "task": f"{bad}/bf16/accuracy",
            "duration_s": 0.01,
            "notes": ["<u>note</u>"],
        }
    )
    lines.append(
        {
            "type": "result",
            "kernel": bad,
            "op": "rmsnorm",
            "variant": "a|b`c`",
            "check": "repeat",
            "dtype": "bf16",
            "regime": "zeros",
            "case": key,
            "shape": [2, 3],
            "verdict": "error",
            "reason": "</pre><script>alert(5)</script>\x00\x07",
            "worst": [],
            "replay": "",
            "seq": 1,
            "task": f"{bad}/bf16/repeat",
            "duration_s": 0.01,
            "notes": [],
        }
    )
    for check in ("accuracy", "repeat"):
        lines.append(
            {
                "type": "task",
                "task": f"{bad}/bf16/{check}",
                "kernel": bad,
                "check": check,
                "dtype": "bf16",
                "cases": 1,
                "status": "done",
                "elapsed_s": 0.01,
            }
        )
    return with_summary(lines)


BENCH_GBPS = {  # (kernel, op, pass) -> GB/s at N = 1024 ... 32768, M = 16384
    ("triton_rmsnorm", "rmsnorm", "forward"): [2400, 2700, 2850, 2950, 2990, 3010],
    ("liger_rmsnorm", "rmsnorm", "forward"): [2317, 2641, 2806, 2929, 2980, 3014],
    ("torch_rmsnorm", "rmsnorm", "forward"): [2106, 2406, 2257, 1936, 1893, 1903],
    ("triton_rmsnorm", "rmsnorm", "forward_backward"): [2100, 2350, 2500, 2560, 2480, 2300],
    ("liger_rmsnorm", "rmsnorm", "forward_backward"): [1051, 1512, 1951, 2255, 2375, 747],
    ("torch_rmsnorm", "rmsnorm", "forward_backward"): [1235, 1645, 1463, 1410, 1372, 1354],
    ("triton_layernorm", "layernorm", "forward"): [2341, 2500, 2700, 2930, 3000, 2980],
    ("torch_layernorm", "layernorm", "forward"): [1502, 1978, 2206, 1864, 1842, 1860],
}
COPY = [2650, 2850, 2960, 3010, 3020, 3025]
LATENCY = {
    ("triton_rmsnorm", "forward"): 5.8,
    ("liger_rmsnorm", "forward"): 6.1,
    ("torch_rmsnorm", "forward"): 11.8,
    ("triton_rmsnorm", "forward_backward"): 9.1,
    ("liger_rmsnorm", "forward_backward"): 17.2,
    ("torch_rmsnorm", "forward_backward"): 20.1,
}


def bench_entry(kernel: str, op: str, pass_: str, m: int, n: int, time_us: float, copy_gbps: float) -> dict:
    nbytes = (2 if pass_ == "forward" else 5) * m * n * 2
    gbps = nbytes / time_us / 1e3
    extra = {
        "kernel": kernel,
        "op": op,
        "pass": pass_,
        "dtype": "bf16",
        "M": m,
        "N": n,
        "time_us": round(time_us, 3),
        "bytes": nbytes,
        "gbps": round(gbps, 1),
        "copy_gbps": copy_gbps,
        "fraction_of_copy": round(gbps / copy_gbps, 4),
        "gpu": "NVIDIA H100 80GB HBM3",
    }
    t = time_us / 1e6
    stats = {
        "min": t * 0.98,
        "max": t * 1.05,
        "mean": t * 1.01,
        "stddev": t * 0.01,
        "rounds": 50,
        "median": t,
        "iqr": t * 0.01,
        "q1": t * 0.995,
        "q3": t * 1.005,
        "iqr_outliers": 1,
        "stddev_outliers": 2,
        "outliers": "2;1",
        "ld15iqr": t * 0.98,
        "hd15iqr": t * 1.02,
        "ops": 1 / t,
        "total": t * 50,
        "iterations": 1,
    }
    name = f"test_bandwidth[{kernel}-{op}-{pass_}-bf16-{m}x{n}]"
    return {
        "group": f"{op}-{pass_}",
        "name": name,
        "fullname": f"tests/bench/test_bench.py::{name}",
        "params": {"kernel": kernel, "shape": f"{m}x{n}"},
        "param": f"{kernel}-{m}x{n}",
        "extra_info": extra,
        "options": {
            "disable_gc": False,
            "timer": "perf_counter",
            "min_rounds": 5,
            "max_time": 1.0,
            "min_time": 5e-06,
            "warmup": False,
        },
        "stats": stats,
    }


def bench_file(slow: float = 1.0) -> dict:
    benches = []
    for (kernel, op, pass_), gbps in BENCH_GBPS.items():
        for i, n in enumerate([1024, 2048, 4096, 8192, 16384, 32768]):
            nbytes = (2 if pass_ == "forward" else 5) * 16384 * n * 2
            factor = slow if (kernel, n) == ("triton_rmsnorm", 4096) else 1.0
            benches.append(bench_entry(kernel, op, pass_, 16384, n, nbytes / gbps[i] / 1e3 * factor, COPY[i]))
    for (kernel, pass_), us in LATENCY.items():
        for m in (1, 32, 128):
            benches.append(bench_entry(kernel, "rmsnorm", pass_, m, 4096, us * (1 + m / 2000), 3000.0))
    benches.append(
        {
            "group": None,
            "name": "test_unrelated",
            "fullname": "tests/test_other.py::test_unrelated",
            "params": None,
            "param": None,
            "extra_info": {},
            "options": {},
            "stats": {"median": 1e-3},
        }
    )
    return {
        "machine_info": {
            "node": "gpu-1",
            "processor": "x86_64",
            "machine": "x86_64",
            "python_implementation": "CPython",
            "python_version": "3.12.3",
            "system": "Linux",
            "release": "6.8.0",
            "cpu": {"brand_raw": "AMD EPYC"},
        },
        "commit_info": {
            "id": "0" * 40,
            "time": "2026-11-25T04:00:00+00:00",
            "dirty": False,
            "project": "normgate",
            "branch": "main",
        },
        "benchmarks": benches,
        "datetime": "2026-11-25T05:00:00.000000+00:00",
        "version": "5.2.3",
    }


def write_jsonl(name: str, lines: list[dict]) -> None:
    with open(HERE / name, "w", encoding="utf-8") as f:
        for ln in lines:
            f.write(json.dumps(ln, ensure_ascii=False) + "\n")


def main() -> None:
    clean = clean_run()
    write_jsonl("pass.jsonl", clean)
    write_jsonl("fail.jsonl", failing_run())
    write_jsonl("worse.jsonl", worse_run())
    write_jsonl("xss.jsonl", xss_run())
    write_jsonl(
        "missing_kernel.jsonl",
        with_summary([ln for ln in copy.deepcopy(clean) if ln.get("kernel") != "triton_layernorm"]),
    )
    write_jsonl("truncated.jsonl", [ln for ln in clean if ln["type"] != "summary"][:-7])
    write_jsonl("interrupted.jsonl", with_summary(clean[: len(clean) // 2], interrupted=True))
    with open(HERE / "malformed.jsonl", "w", encoding="utf-8") as f:
        for i, ln in enumerate(clean[:6]):
            f.write(
                ('{"type": "result", "kernel": "triton_rmsnorm", "verdict": ' if i == 3 else json.dumps(ln))
                + "\n"
            )
    for name, slow in (("bench.json", 1.0), ("bench_slow.json", 1.2)):
        with open(HERE / name, "w", encoding="utf-8") as f:
            json.dump(bench_file(slow), f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    main()
