"""Loading what is registered: the built-in ops and candidates, and installed entry points."""

from __future__ import annotations

import importlib
import sys
from importlib.metadata import entry_points

_loaded = False
ENTRY_POINT_GROUP = "normgate.candidates"
BUILTIN_OPS = ("normgate.properties.rmsnorm", "normgate.properties.layernorm")


def load_builtins() -> None:
    """Import the built-in ops and candidates, then the ``normgate.candidates`` entry points.

    An entry point names a module (importing it registers its candidates) or a callable (called
    with no arguments). One that fails to load is reported on stderr and skipped: a broken
    third-party package must not take the built-in checks down with it.
    """
    global _loaded
    if _loaded:
        return
    _loaded = True
    from . import candidates

    for module in BUILTIN_OPS:
        importlib.import_module(module)
    import normgate.kernels.builtins  # noqa: F401  (registers the built-in candidates)
    import normgate.kernels.thirdparty  # noqa: F401  (Liger-Kernel and transformers, when installed)

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        prev = candidates._current_source
        candidates._current_source = f"entry point {ep.name} ({ep.value})"
        try:
            obj = ep.load()
            if callable(obj):
                obj()
        except Exception as e:  # noqa: BLE001
            print(f"normgate: entry point {ep.name!r} ({ep.value}) failed to load: {e!r}; skipped",
                  file=sys.stderr)
        finally:
            candidates._current_source = prev
