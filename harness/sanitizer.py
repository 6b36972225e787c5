"""compute-sanitizer on the shrunk case of a failure that smells of memory.

The guard bands see writes into normgate's own buffers; a kernel that writes past a buffer it
allocated itself, or reads memory nobody wrote, needs the device's own memory checker. On a CUDA
run with ``compute-sanitizer`` on PATH, the minimal case of a failing task whose reason smells of
memory (a guard hit, non-finite outputs, bits that change with poisoned free memory) is replayed
once under ``compute-sanitizer --tool memcheck`` in a fresh process (``normgate replay KEY``,
with PyTorch's caching allocator off, so that memcheck sees each tensor as its own allocation);
the first finding goes into the result line (``sanitizer``) and its reason, which the report and
the gate summary show.

A case that crashed the device (a sticky CUDA error: an illegal address, a misaligned access) is
replayed the same way; memcheck then says which kernel made the access. A fault in a kernel that
is not PyTorch's turns the ``error`` into a ``fail`` ("memory fault: ..."), the same verdict as a
write into a guard band: the crash is the candidate's bug, shown by the device's own checker. With
no sanitizer, or no such finding, the line stays an ``error``.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable

#: what makes a failure smell of memory (substrings of the reason)
SMELLS = ("out-of-bounds write", "non-finite", "with poisoned free memory", "illegal memory access",
          "misaligned address")
TIMEOUT_ENV = "NORMGATE_SANITIZER_TIMEOUT"
#: memcheck runs kernels one to two orders of magnitude slower: a shrunk case, so minutes at most
TIMEOUT_S = 600.0
#: the run's time limit for one case, which a worker's supervisor sets: the replay under memcheck
#: gets a fresh window of it (``before``) and stays within 90% of it, so that the supervisor never
#: takes a slow memcheck for a hung case and loses the failure it is explaining
CASE_TIMEOUT_ENV = "NORMGATE_CASE_TIMEOUT"


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


#: findings of memcheck that are an access by a kernel outside memory it may touch
ACCESS_FAULTS = ("Invalid __global__", "Invalid __shared__", "Invalid __local__", "Misaligned", "Out-of-range")
#: kernels of PyTorch itself: a fault there is not pinned on the candidate's own code
TORCH_KERNELS = ("at::", "c10::", "cub::", "thrust::")


def timeout_s() -> float:
    """Seconds memcheck may take: NORMGATE_SANITIZER_TIMEOUT (default TIMEOUT_S), within 90% of
    the case time limit where a supervisor set one."""
    timeout = float(os.environ.get(TIMEOUT_ENV, TIMEOUT_S))
    case_limit = os.environ.get(CASE_TIMEOUT_ENV)
    return min(timeout, 0.9 * float(case_limit)) if case_limit else timeout


def _memcheck(line: dict, device: str, exe: str, before: Callable[[], None] | None) -> tuple[str, int | None]:
    """(first finding or "", exit status) of the line's replay under memcheck."""
    argv = [exe, "--tool", "memcheck", *replay_argv(line["replay"], device)]
    env = dict(os.environ, PYTORCH_NO_CUDA_MEMORY_CACHING="1")
    timeout = timeout_s()
    if before is not None:
        before()
    try:
        # a session of its own: on a timeout the replay it started dies with it (killing memcheck
        # alone would leave the replay running on the GPU after the line is written)
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                                start_new_session=True)
    except OSError as e:
        return f"no result: {e}", None
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return f"no result: memcheck ran past {timeout:g} s", None
    return first_finding(out + "\n" + err), proc.returncode


def _record(line: dict, finding: str, rc: int | None) -> None:
    line["sanitizer"] = {"tool": "compute-sanitizer --tool memcheck", "finding": finding or "no error reported",
                         "exit": rc}
    line["reason"] = f"{line.get('reason', '')}; compute-sanitizer: {finding or 'no error reported'}"


def access_fault(finding: str) -> bool:
    """Does memcheck's finding say that a kernel other than PyTorch's own read or wrote where it
    may not? (The finding's location lines name the kernel.)"""
    return finding.startswith(ACCESS_FAULTS) and not any(k in finding for k in TORCH_KERNELS)


def attribute(line: dict, device: str, exe: str | None = None, before: Callable[[], None] | None = None) -> dict:
    """A case that left the device unusable (an ``error`` line, a sticky CUDA error) replayed once
    under memcheck. When memcheck names an access fault in a kernel that is not PyTorch's, the
    crash is the candidate's bug, as an out-of-bounds write into a guard band is: the line becomes
    a ``fail`` whose reason starts "memory fault:". Any other outcome (no sanitizer, no finding, a
    fault in PyTorch's kernels, an ECC error) leaves it an ``error``: a crash is never a catch on
    its own. ``before`` is called just before memcheck starts (a worker restarts its case clock).
    Returns the line (changed in place)."""
    if line.get("verdict") != "error" or not line.get("replay"):
        return line
    exe = exe or available(device)
    if not exe:
        return line
    finding, rc = _memcheck(line, device, exe, before)
    _record(line, finding, rc)
    if access_fault(finding):
        line["verdict"] = "fail"
        line["reason"] = "memory fault: " + line["reason"]
    return line


def explain(line: dict, device: str, exe: str | None = None, before: Callable[[], None] | None = None) -> dict:
    """Replay a failing line's case under memcheck once; record the first finding in the line.

    Returns the line (changed in place). Does nothing unless the line failed, smells of memory and
    a sanitizer is there (``exe``, or ``compute-sanitizer`` on PATH for a CUDA device); ``before``
    as in ``attribute``."""
    if line.get("verdict") != "fail" or not line.get("replay") or not smells_of_memory(line.get("reason", "")):
        return line
    exe = exe or available(device)
    if not exe:
        return line
    _record(line, *_memcheck(line, device, exe, before))
    return line
