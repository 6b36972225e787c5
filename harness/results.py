"""Writing results: one JSON object per line, flushed as produced, rewritten in canonical order at
the end. The format is in docs/results-format.md."""

from __future__ import annotations

import datetime
import json
import os
import platform
from collections import Counter
from pathlib import Path
from typing import IO, Any, TypedDict

from . import __version__
from .names import VERDICTS

#: The results format (docs/results-format.md), in every env line; version 1 had no such field.
FORMAT = "normgate-results/2"
TIMING_FIELDS = ("duration_s", "date", "elapsed_s", "argv", "workers", "compile_s", "compiles")


class _ResultIdentity(TypedDict):
    type: str  # "result"
    kernel: str
    op: str | None
    variant: str | None
    check: str
    dtype: str
    regime: str | None
    case: str | None
    shape: list[int] | None
    verdict: str
    reason: str


class ResultLine(_ResultIdentity, total=False):
    """A ``result`` line (docs/results-format.md has every field), as ``result_record`` builds it
    and the loader (normgate.reports.load), the report and the gate read it."""

    errors: dict[str, dict[str, Any]]
    worst: list[dict[str, Any]]
    replay: str
    notes: list[str]
    digest: str
    sanitizer: dict[str, Any]
    not_run: bool
    examples: int
    shrinks: int
    compile_s: float
    compiles: int
    seq: int
    task: str
    duration_s: float


class TaskLine(TypedDict, total=False):
    """A ``task`` line, as runner.task_line builds it."""

    type: str  # "task"
    task: str
    kernel: str
    check: str
    dtype: str
    cases: int | None
    status: str  # "done" | "error"
    elapsed_s: float
    left_behind: str
    worker_replaced: str


#: the fields without which a result line cannot be placed (the loader refuses the file)
RESULT_REQUIRED = ("kernel", "check", "dtype", "verdict")
#: The ``seq`` of an error line the supervisor writes for a task (docs/results-format.md).
SUPERVISOR_SEQ = 10**9


class ResultsError(Exception):
    """An unreadable or malformed results file (the message names the file and line)."""


class WriteError(OSError):
    """The results file could not be written (disk full, file removed under us, ...)."""


def result_record(*, kernel: str, op: str | None, variant: str | None, check: str, dtype: str,
                  regime: str | None, case: str | None, shape: list[int] | None, verdict: str, reason: str,
                  **rest: Any) -> ResultLine:
    """A result line (docs/results-format.md), its identifying fields first and in this order; the
    optional ones (worst, replay, errors, notes, digest, seq, task, duration_s, ...) follow in
    ``rest``. Every writer builds its result lines here: the runner for each case, the supervisor
    for a task whose worker died."""
    if verdict not in VERDICTS:
        raise ValueError(f"verdict {verdict!r} is not one of {VERDICTS}")
    return ResultLine(type="result", kernel=kernel, op=op, variant=variant, check=check, dtype=dtype,
                      regime=regime, case=case, shape=shape, verdict=verdict, reason=reason, **rest)


def check_writable(path: str | Path) -> None:
    """Raise OSError unless a file can be written at ``path`` the way reports are written (a
    temporary file in its folder, then renamed): called before a run, so that a bad path fails
    at once, not after the run."""
    import tempfile

    p = Path(path)
    if p.is_dir():
        raise IsADirectoryError(21, "it is a directory", str(p))
    fd, tmp = tempfile.mkstemp(prefix=".normgate-check-", dir=p.parent)
    os.close(fd)
    os.unlink(tmp)


def environment(device: str, interpreter: bool, **extra) -> dict:
    import torch

    env = {"type": "env", "format": FORMAT, "normgate": __version__, "torch": torch.__version__,
           "triton": _triton_version(),
           "python": platform.python_version(), "platform": platform.platform(), "device": device,
           "interpreter": interpreter, "gpu": None, "gpu_count": 0, "driver": None, "cuda": torch.version.cuda,
           "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    if not interpreter:
        from . import compiletime

        # how compile time was read, and the Triton cache the run's workers share
        env["compile_clock"], env["triton_cache_dir"] = compiletime.mode(), compiletime.cache_dir()
    if device.startswith("cuda") and torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name()
        env["gpu_count"] = torch.cuda.device_count()
        env["driver"] = _driver_version()
    env.update(extra)
    return env


def _triton_version() -> str | None:
    try:
        import triton

        return triton.__version__
    except Exception:  # noqa: BLE001
        return None


def _driver_version() -> str | None:
    try:
        import subprocess

        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
        return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None
    except Exception:  # noqa: BLE001
        return None


def read_lines(path: str | Path, allow_truncated_tail: bool = False) -> list[dict]:
    """Parse a results file. A malformed line is an error naming it; with
    ``allow_truncated_tail`` an incomplete last line (a run killed mid-write) is dropped."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise ResultsError(f"cannot read results file {path}: {e.strerror or e}") from None
    # split bytes, not text: a file that is not UTF-8 (a report, a binary) is then a malformed
    # line with its number, not a decoding error
    raw = data.split(b"\n")
    lines = []
    for i, chunk in enumerate(raw, start=1):
        if not chunk.strip():
            continue
        try:
            line = chunk.decode("utf-8")
            obj = json.loads(line)
            if not isinstance(obj, dict) or "type" not in obj:
                raise ValueError("not a normgate record (no 'type')")
        except RecursionError:
            raise ResultsError(f"{path}:{i}: malformed results line (nested too deeply)") from None
        except ValueError as e:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            last = i == len(raw)
            if allow_truncated_tail and last and not data.endswith(b"\n"):
                break
            raise ResultsError(f"{path}:{i}: malformed results line ({e})") from None
        lines.append(obj)
    return lines


class Writer:
    """Appends lines and flushes each one, so a killed run leaves a valid file.

    The file is not touched until the first line that is not the env line (or the summary): a
    run that stops before any task ran (a worker that cannot start) leaves whatever was there."""

    def __init__(self, path: str | Path, resume_lines: list[dict] | None = None):
        self.path = Path(path)
        self.counts: Counter = Counter()
        self.cases = 0
        self._resume = resume_lines
        self._pending: list[dict] = []
        self.f: IO[str] | None = None

    def _open(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self._resume is not None:
                # keep only what finished: lines of unfinished tasks are redone from scratch
                done = {ln["task"] for ln in self._resume if ln.get("type") == "task"}
                kept = [ln for ln in self._resume
                        if ln.get("type") == "env"
                        or (ln.get("type") in ("result", "task") and ln.get("task") in done)]
                _atomic_write(self.path, kept)
                self.f = open(self.path, "a")  # noqa: SIM115
                for ln in kept:
                    self._count(ln)
            else:
                self.f = open(self.path, "w")  # noqa: SIM115
        except OSError as e:
            raise WriteError(e.errno, f"cannot write results to {self.path}: {e.strerror or e}") from e
        pending, self._pending = self._pending, []
        for ln in pending:
            self.write(ln)

    def _count(self, line: dict) -> None:
        if line.get("type") == "result":
            self.counts[line["verdict"]] += 1
            self.cases += 1

    def write(self, line: dict) -> None:
        if self.f is None:
            if line.get("type") == "env":
                self._pending.append(line)
                return
            self._open()
            assert self.f is not None
        text = json.dumps(line, separators=(", ", ": "), allow_nan=False, default=str) + "\n"
        try:
            self.f.write(text)
            self.f.flush()
        except OSError as e:
            raise WriteError(e.errno, f"cannot write results to {self.path}: {e.strerror or e}") from e
        self._count(line)

    def close(self) -> None:
        if self.f is not None and not self.f.closed:
            try:
                self.f.flush()
                os.fsync(self.f.fileno())
            except OSError as e:
                raise WriteError(e.errno, f"cannot write results to {self.path}: {e.strerror or e}") from e
            finally:
                self.f.close()


def _atomic_write(path: Path, lines: list[dict]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        for ln in lines:
            f.write(json.dumps(ln, separators=(", ", ": "), allow_nan=False, default=str) + "\n")
        # on disk before the rename: a crash right after must leave the old file or the new
        # one, never a renamed empty one
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def canonicalize(path: str | Path, task_order: list[str]) -> None:
    """Rewrite the file: env first, then each task's result lines by sequence and its task line,
    tasks in the given order, then the summary. The same seed gives the same content whatever
    the number of workers (apart from TIMING_FIELDS)."""
    lines = read_lines(path, allow_truncated_tail=True)
    env = [ln for ln in lines if ln.get("type") == "env"][:1]
    order = {t: i for i, t in enumerate(task_order)}
    body = [ln for ln in lines if ln.get("type") in ("result", "task")]
    body.sort(key=lambda ln: (order.get(ln.get("task"), len(order)), ln.get("task", ""),
                              ln.get("type") == "task", ln.get("seq", 0)))
    tail = [ln for ln in lines if ln.get("type") == "summary"][-1:]
    _atomic_write(Path(path), env + body + tail)


def content(lines: list[dict]) -> list[dict]:
    """Lines without timing fields and the environment: what two runs of one seed must share."""
    out = []
    for ln in lines:
        if ln.get("type") == "env":
            continue
        out.append({k: v for k, v in ln.items() if k not in TIMING_FIELDS})
    return out


def summarize(counts: Counter, cases: int, **extra) -> dict:
    return {"type": "summary", "cases": cases, **{v: counts.get(v, 0) for v in VERDICTS}, **extra}
