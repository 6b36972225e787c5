"""Entry points: how ops and candidates reach the core without the core importing them.

Two groups, read from every installed distribution, normgate's own included:

- ``normgate.ops``: an op instance (``normgate.properties.rmsnorm:RMSNORM``), an ``Op`` subclass,
  or a module whose import registers its ops;
- ``normgate.candidates``: a module whose import registers candidates, or a callable called with
  no arguments.

normgate's own entry points load first and must load: a broken built-in is a bug to see, not to
skip. Another package's entry point that fails is reported on stderr and skipped, so that a broken
third-party package cannot take the built-in checks down with it.
"""

from __future__ import annotations

import contextlib
import sys
import types
from collections.abc import Callable
from importlib.metadata import EntryPoint, entry_points

OPS_GROUP = "normgate.ops"
CANDIDATES_GROUP = "normgate.candidates"
#: the group a kernel package declares (README: "Entry points")
ENTRY_POINT_GROUP = CANDIDATES_GROUP
DISTRIBUTION = "normgate"


def is_builtin(ep: EntryPoint) -> bool:
    dist = getattr(ep, "dist", None)
    return dist is not None and (dist.metadata["Name"] or "").lower() == DISTRIBUTION


def ordered(group: str) -> list[EntryPoint]:
    """The group's entry points, normgate's own first, then by distribution and name, so that
    registration (and `normgate list`) does not follow the order of the file system."""
    def key(ep: EntryPoint) -> tuple:
        dist = getattr(ep, "dist", None)
        return (not is_builtin(ep), (dist.metadata["Name"] if dist is not None else "") or "", ep.name)

    seen: dict[tuple[str, str], EntryPoint] = {}
    for ep in entry_points(group=group):
        seen.setdefault((ep.name, ep.value), ep)  # a distribution found twice on sys.path counts once
    return sorted(seen.values(), key=key)


def load(group: str, use: Callable[[object, EntryPoint], None],
         around: Callable[[EntryPoint], contextlib.AbstractContextManager] | None = None) -> None:
    """Load each entry point of ``group`` and hand what it names to ``use``, both inside
    ``around(ep)`` (what registers while a module is imported is attributed to its entry point)."""
    def one(ep: EntryPoint) -> None:
        with around(ep) if around else contextlib.nullcontext():
            use(ep.load(), ep)

    for ep in ordered(group):
        if is_builtin(ep):
            one(ep)
            continue
        try:
            one(ep)
        except Exception as e:  # noqa: BLE001
            print(f"normgate: entry point {ep.name!r} ({ep.value}) failed to load: {e!r}; skipped",
                  file=sys.stderr)


def call_unless_module(obj: object) -> None:
    """A module registered what it has on import; anything else callable is called."""
    if callable(obj) and not isinstance(obj, types.ModuleType):
        obj()
