"""compute-sanitizer on the shrunk case of a failure that smells of memory.

The guard bands see writes into normgate's own buffers; a kernel that writes past a buffer it
allocated itself, or reads memory nobody wrote, needs the device's own memory checker. On a CUDA
run with ``compute-sanitizer`` on PATH, the minimal case of a failing task whose reason smells of
memory (a guard hit, non-finite outputs, bits that change with poisoned free memory) is replayed
once under ``compute-sanitizer --tool memcheck`` in a fresh process (``normgate replay KEY``,
with PyTorch's caching allocator off, so that memcheck sees each tensor as its own allocation);
the first finding goes into the result line (``sanitizer``) and its reason, which the report and
the gate summary show.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys

#: what makes a failure smell of memory (substrings of the reason)
SMELLS = ("out-of-bounds write", "non-finite", "with poisoned free memory", "illegal memory access",
          "misaligned address")
TIMEOUT_ENV = "NORMGATE_SANITIZER_TIMEOUT"
#: memcheck runs kernels one to two orders of magnitude slower: a shrunk case, so minutes at most
TIMEOUT_S = 600.0


def smells_of_memory(reason: str) -> bool:
    low = reason.lower()
    return any(s in low for s in SMELLS)


def available(device: str) -> str | None:
    """The compute-sanitizer executable for a CUDA run, or None."""
    if not device.startswith("cuda"):
        return None
    return shutil.which("compute-sanitizer")


def first_finding(output: str) -> str:
    """The first error compute-sanitizer reports, with its location lines (""=none).

    Its lines start with "========= "; a finding is a line such as "Invalid __global__ write of
    size 4 bytes" followed by indented "at ..." / "by thread ..." / "Address ..." lines."""
    lines = [ln[len("========="):].rstrip() for ln in output.splitlines() if ln.startswith("=========")]
    for i, ln in enumerate(lines):
        text = ln.strip()
        if not text or text.startswith(("COMPUTE-SANITIZER", "ERROR SUMMARY", "Program hit", "Saved host backtrace")):
            continue
        if ln.startswith("     "):  # a detail line before any finding
            continue
        detail = [d.strip() for d in lines[i + 1:i + 4] if d.startswith("     ")]
        return "; ".join([text] + detail)[:400]
    return ""


def replay_argv(replay: str, device: str) -> list[str]:
    """``normgate replay KEY [--load F]`` as this interpreter runs it."""
    parts = shlex.split(replay)
    if parts[:2] != ["normgate", "replay"]:
        raise ValueError(f"not a replay command: {replay!r}")
    if "--device" not in parts:
        parts += ["--device", device]
    return [sys.executable, "-m", "normgate.cli", *parts[1:]]


def explain(line: dict, device: str, exe: str | None = None) -> dict:
    """Replay a failing line's case under memcheck once; record the first finding in the line.

    Returns the line (changed in place). Does nothing unless the line failed, smells of memory and
    a sanitizer is there (``exe``, or ``compute-sanitizer`` on PATH for a CUDA device)."""
    if line.get("verdict") != "fail" or not line.get("replay") or not smells_of_memory(line.get("reason", "")):
        return line
    exe = exe or available(device)
    if not exe:
        return line
    argv = [exe, "--tool", "memcheck", *replay_argv(line["replay"], device)]
    env = dict(os.environ, PYTORCH_NO_CUDA_MEMORY_CACHING="1")
    timeout = float(os.environ.get(TIMEOUT_ENV, TIMEOUT_S))
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)
        finding = first_finding(proc.stdout + "\n" + proc.stderr)
        rc = proc.returncode
    except subprocess.TimeoutExpired:
        finding, rc = f"no result: memcheck ran past {timeout:g} s", None
    except OSError as e:
        finding, rc = f"no result: {e}", None
    line["sanitizer"] = {"tool": "compute-sanitizer --tool memcheck", "finding": finding or "no error reported",
                         "exit": rc}
    line["reason"] = f"{line.get('reason', '')}; compute-sanitizer: {finding or 'no error reported'}"
    return line
