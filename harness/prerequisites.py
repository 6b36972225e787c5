"""What a run's kernels need beyond normgate itself, probed once before the run starts.

A Triton kernel on the CPU needs Triton's interpreter (which imports numpy, undeclared by Triton);
a candidate named as ``"module:attribute"`` needs its package. When such a piece cannot be loaded,
every case of every task that uses it would error for the same reason: hundreds of identical
lines, none of them about a kernel. Instead the run names the piece once, with the fix, at the top
of its output, in the environment record and in the report, and records each affected task as one
``error`` line (never a pass, never a skip) without running it.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field


@dataclass
class Unavailable:
    piece: str  # what could not be loaded, in words
    error: str  # the exception, one line
    fix: str  # what to do about it
    kernels: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)

    def reason(self) -> str:
        return f"not run: {self.piece} is unavailable ({self.error}); {self.fix}"


def _one_line(e: BaseException) -> str:
    return f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:300]}"


def _interpreter_error() -> BaseException | None:
    try:
        importlib.import_module("triton.runtime.interpreter")
    except Exception as e:  # noqa: BLE001 - whatever stops it, the Triton kernels cannot run here
        return e
    return None


def probe(candidates: Iterable, interpreter: bool) -> list[Unavailable]:
    """The pieces the given candidates need that cannot be loaded in this environment."""
    found: dict[str, Unavailable] = {}
    candidates = list(candidates)
    if interpreter and any(c.triton for c in candidates):
        err = _interpreter_error()
        if err is not None:
            missing = getattr(err, "name", None) if isinstance(err, ImportError) else None
            fix = (f"install it (pip install {missing}), or reinstall normgate, which declares it" if missing
                   else "reinstall triton (pip install --force-reinstall triton)")
            found["interpreter"] = Unavailable("Triton's CPU interpreter (TRITON_INTERPRET=1)", _one_line(err), fix,
                                               [c.name for c in candidates if c.triton])
    for c in candidates:
        if c.name in found.get("interpreter", Unavailable("", "", "")).kernels or not isinstance(c.fn, str):
            continue
        try:
            c.resolve()
        except ImportError as e:
            module = c.fn.partition(":")[0]
            u = found.setdefault(f"module {module}", Unavailable(
                f"module {module}", _one_line(e), f"install the package that provides {e.name or module}"))
            u.kernels.append(c.name)
    return list(found.values())


def notice(missing: list[Unavailable], tasks: int) -> str:
    """The lines printed once at the top of a run."""
    out = []
    for u in missing:
        out.append(f"normgate: {u.piece} is unavailable: {u.error}\n"
                   f"normgate:   fix: {u.fix}\n"
                   f"normgate:   affected: {len(u.kernels)} kernels ({', '.join(u.kernels[:6])}"
                   f"{', ...' if len(u.kernels) > 6 else ''})")
    out.append(f"normgate: {tasks} tasks of those kernels are recorded as errors without running")
    return "\n".join(out)
