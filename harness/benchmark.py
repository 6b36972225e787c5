"""pytest-benchmark for a kernel repo's own benchmarks, in the form ``normgate report --bench`` reads.

The report keys a benchmark by ``extra_info`` (kernel, op, pass, dtype, M, N) and plots bandwidth
from ``time_us`` and ``bytes``; see ``normgate.reports.load``. With the ``normgate_bench`` fixture::

    def test_speed(normgate_bench):
        x = torch.randn(4096, 4096, device="cuda", dtype=torch.bfloat16)
        w = torch.ones(4096, device="cuda", dtype=torch.bfloat16)
        normgate_bench(lambda: my_rmsnorm(x, w, 1e-6), kernel="my_rmsnorm", op="rmsnorm", x=x, params=(w,))

then ``pytest --benchmark-json bench.json`` and ``normgate report results.jsonl --bench bench.json``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

PASSES = ("forward", "backward", "forward+backward")


def norm_bytes(x, params: Sequence, pass_: str, residual: bool = False) -> int:
    """Bytes a norm kernel must move at least: every input read once, every output written once.

    forward reads x (and the residual) and the parameters, writes y (and h); backward reads x, dy
    and the parameters, writes dx and one gradient per parameter; forward+backward is both.
    """
    rows_bytes = x.numel() * x.element_size()
    param_bytes = sum(p.numel() * p.element_size() for p in params if p is not None)
    fwd = 2 * rows_bytes + param_bytes + (2 * rows_bytes if residual else 0)
    bwd = 3 * rows_bytes + 2 * param_bytes + (rows_bytes if residual else 0)
    return {"forward": fwd, "backward": bwd, "forward+backward": fwd + bwd}[pass_]


def _dtype_name(x, params: Sequence) -> str:
    from normgate.dtypes import name_of

    p = next((q for q in params if q is not None), None)
    xd = name_of(x.dtype)
    return xd if p is None or p.dtype == x.dtype else f"{xd}/{name_of(p.dtype)}"


class NormBench:
    """Wraps pytest-benchmark's ``benchmark`` fixture; one call benchmarks one kernel on one shape."""

    def __init__(self, benchmark: Any):
        self.benchmark = benchmark

    def __call__(self, fn: Callable[[], Any], *, kernel: str, op: str, x, params: Sequence = (),
                 pass_: str = "forward", residual: bool = False, copy_gbps: float | None = None,
                 rounds: int | None = None) -> dict:
        """Benchmark ``fn()`` (CUDA synchronized after each call); return the ``extra_info`` recorded."""
        if pass_ not in PASSES:
            raise ValueError(f"pass_ must be one of {PASSES}, got {pass_!r}")
        if x.dim() < 2:
            raise ValueError("x must have rows: shape (..., N)")
        cuda = x.device.type == "cuda"
        sync = _sync(cuda)

        def step():
            out = fn()
            sync()
            return out

        times: list[float] = []

        def timed():
            t0 = time.perf_counter()
            out = step()
            times.append(time.perf_counter() - t0)
            return out

        step()  # warm-up: compilation and autotuning stay out of the figure
        if rounds is None:
            self.benchmark(timed)
        else:
            self.benchmark.pedantic(timed, rounds=rounds, iterations=1)
        n = x.shape[-1]
        nbytes = norm_bytes(x, params, pass_, residual)
        info: dict[str, Any] = {"kernel": kernel, "op": op, "pass": pass_, "dtype": _dtype_name(x, params),
                                "M": x.numel() // n, "N": n, "bytes": nbytes}
        if times:
            us = statistics.median(times) * 1e6
            info.update(time_us=round(us, 3), gbps=round(nbytes / us / 1e3, 3))
        if copy_gbps:
            info["copy_gbps"] = copy_gbps
            if "gbps" in info:
                info["fraction_of_copy"] = round(info["gbps"] / copy_gbps, 4)
        if cuda:
            import torch

            info["gpu"] = torch.cuda.get_device_name(x.device)
        self.benchmark.extra_info.update(info)
        return info


def _sync(cuda: bool) -> Callable[[], None]:
    if not cuda:
        return lambda: None
    import torch

    return torch.cuda.synchronize
