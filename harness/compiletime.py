"""Time spent in Triton's JIT compiler, counted apart from the time spent checking.

A user's Triton kernel compiles a binary for every new constexpr and integer specialization; on a
GPU that can be most of a run (8 of 8 stack samples inside Triton's compiler, 4-17 cases in 300 s,
for a kernel whose cases took under a second each). Results record it per case (``compile_s``,
``compiles``), so a report can say how much of a run was compiling.

Triton calls a hook before and after each compile of a ``@triton.jit`` function that misses the
process's in-memory cache; a hit in the on-disk cache (``TRITON_CACHE_DIR``) passes through both
hooks too and costs milliseconds, which is what it costs. Triton 3.4 and later have the hooks in
``triton.knobs.runtime`` (``jit_cache_hook``, ``jit_post_compile_hook``; 3.6 and 3.9 checked);
earlier versions as ``JITFunction.cache_hook`` / ``compiled_hook``. Hooks already installed (by
a profiler, by the kernel's own code) are called first and keep working. With neither, or without
Triton, the clock is ``unknown`` and results say nothing rather than 0. Triton kernels that
Inductor (``torch.compile``) builds compile outside these hooks and are not counted.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass

#: how the clock reads compile time: "triton.knobs", "JITFunction hooks" or "unknown"
_mode: str | None = None
_lock = threading.Lock()


@dataclass
class Reading:
    seconds: float = 0.0
    compiles: int = 0


_total = Reading()
_started: dict[int, list[float]] = {}  # per thread: start times of compiles in progress


def _before(**kwargs) -> None:
    _started.setdefault(threading.get_ident(), []).append(time.perf_counter())


def _after(**kwargs) -> None:
    stack = _started.get(threading.get_ident())
    if not stack:
        return
    elapsed = time.perf_counter() - stack.pop()
    with _lock:
        _total.seconds += elapsed
        _total.compiles += 1


def _chain(previous, ours):
    if previous is None:
        return ours

    def hook(**kwargs):
        result = previous(**kwargs)  # a true result tells Triton to skip the compile: keep it
        ours(**kwargs)
        return result

    return hook


def install() -> str:
    """Install the hooks once per process; return the mode ("unknown" when they cannot be)."""
    global _mode
    if _mode is not None:
        return _mode
    _mode = "unknown"
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        # nothing compiles under the interpreter; its kernels are InterpretedFunctions
        _mode = "interpreter"
        return _mode
    try:
        import triton
    except Exception:  # noqa: BLE001 - no Triton (or a broken one): nothing to time
        return _mode
    knobs = getattr(triton, "knobs", None)
    runtime = getattr(knobs, "runtime", None)
    if runtime is not None and hasattr(runtime, "jit_cache_hook") and hasattr(runtime, "jit_post_compile_hook"):
        runtime.jit_cache_hook = _chain(runtime.jit_cache_hook, _before)
        runtime.jit_post_compile_hook = _chain(runtime.jit_post_compile_hook, _after)
        _mode = "triton.knobs"
        return _mode
    try:
        from triton.runtime.jit import JITFunction
    except Exception:  # noqa: BLE001
        return _mode
    if hasattr(JITFunction, "cache_hook") and hasattr(JITFunction, "compiled_hook"):
        JITFunction.cache_hook = _chain(JITFunction.cache_hook, _before)
        JITFunction.compiled_hook = _chain(JITFunction.compiled_hook, _after)
        _mode = "JITFunction hooks"
    return _mode


def mode() -> str:
    """What the clock would be in a process like this one, without installing anything."""
    if _mode is not None:
        return _mode
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        return "interpreter"
    try:
        import triton
    except Exception:  # noqa: BLE001
        return "unknown"
    runtime = getattr(getattr(triton, "knobs", None), "runtime", None)
    if runtime is not None and hasattr(runtime, "jit_post_compile_hook"):
        return "triton.knobs"
    from triton.runtime.jit import JITFunction

    return "JITFunction hooks" if hasattr(JITFunction, "compiled_hook") else "unknown"


def known() -> bool:
    return install() != "unknown"


def reading() -> Reading:
    """Compile time and compiles so far in this process."""
    with _lock:
        return Reading(_total.seconds, _total.compiles)


def cache_dir() -> str | None:
    """Where compiled binaries are kept between runs and shared between workers."""
    env = os.environ.get("TRITON_CACHE_DIR")
    if env:
        return env
    try:
        from triton import knobs

        return str(knobs.cache.dir)
    except Exception:  # noqa: BLE001 - an older Triton: its documented default
        home = os.environ.get("TRITON_HOME") or os.path.expanduser("~")
        return os.path.join(home, ".triton", "cache")


# ---- where the time went ------------------------------------------------------------------------
@dataclass
class TimeSplit:
    """A run's worker time (the sum of its tasks' elapsed_s) and the part of it Triton compiled."""

    task_s: float
    compile_s: float | None  # None: the compile clock was unknown
    compiles: int
    tasks: dict[str, tuple[float, float]]  # task -> (elapsed_s, compile_s)

    @property
    def share(self) -> float | None:
        if self.compile_s is None or self.task_s <= 0:
            return None
        return min(1.0, self.compile_s / self.task_s)


def split(lines: list[dict]) -> TimeSplit:
    """Where a run's time went, from its results lines: result lines carry ``compile_s`` (a task's
    lines add up to its compile time), task lines ``elapsed_s``."""
    env = next((ln for ln in lines if ln.get("type") == "env"), {})
    clock = env.get("compile_clock")
    compiled: dict[str, float] = {}
    compiles = 0
    for ln in lines:
        if ln.get("type") == "result" and ln.get("compile_s"):
            compiled[ln["task"]] = compiled.get(ln["task"], 0.0) + float(ln["compile_s"])
            compiles += int(ln.get("compiles") or 0)
    tasks = {ln["task"]: (float(ln.get("elapsed_s") or 0.0), compiled.get(ln["task"], 0.0))
             for ln in lines if ln.get("type") == "task" and ln.get("task")}
    known = clock in ("triton.knobs", "JITFunction hooks", "interpreter") or bool(env.get("interpreter")) \
        or bool(compiled)
    return TimeSplit(sum(t for t, _ in tasks.values()), sum(compiled.values()) if known else None, compiles, tasks)


def describe(s: TimeSplit) -> str | None:
    """One line for a run's summary, or None when there is nothing to say (nothing compiled)."""
    if s.task_s <= 0:
        return None
    if s.compile_s is None:
        return (f"where the time went: {s.task_s:.1f} s of worker time; Triton compile time unknown (this "
                "Triton has no JIT compile hooks)")
    if not s.compiles:
        return None
    return (f"where the time went: {s.share:.0%} of {s.task_s:.1f} s of worker time was Triton compiling "
            f"({s.compile_s:.1f} s, {s.compiles} binaries built or loaded from the cache), "
            f"{1 - s.share:.0%} checking")
