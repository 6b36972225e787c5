"""normgate: numerical-correctness and determinism harness for fused GPU kernels.

The public API (imported lazily, so ``import normgate`` stays cheap for the pytest plugin). The
core's names, and those the op families add through the ``normgate.api`` entry points (the norms'
variants, ``adapt``, ``field``)::

    normgate.register(name, fn, variant=..., dtypes=..., devices=..., backward=...)  # the op follows from the variant
    normgate.RMSNormVariant(casting="llama"|"gemma"|"none", offset=0.0, residual=False, weight=True,
                            out="input"|"promote")
    normgate.LayerNormVariant(weight=True, bias=True, residual=False, casting="gemma", out="input")
    normgate.load_file(path), normgate.get(name), normgate.registry()
    normgate.field.flash_attn_rms_norm(...), ...: one-line adapters for the field's function kernels
    normgate.Case, normgate.Candidate
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

#: the core's own public names, by module
_EXPORTS = {
    "register": "normgate.candidates",
    "Candidate": "normgate.candidates",
    "load_file": "normgate.candidates",
    "get": "normgate.candidates",
    "registry": "normgate.candidates",
    "Case": "normgate.case",
}
#: names an op family adds to the top level (``normgate.RMSNormVariant``, ``normgate.adapt``,
#: ``normgate.field``): entry points, so that the core names no op and no kernel module
API_GROUP = "normgate.api"

__all__ = ["__version__", *_EXPORTS]


def _api() -> dict:
    from importlib.metadata import entry_points

    return {ep.name: ep for ep in entry_points(group=API_GROUP)}


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is not None:
        value = getattr(importlib.import_module(module), name)
    else:
        ep = _api().get(name) if not name.startswith("__") else None
        if ep is None:
            raise AttributeError(f"module 'normgate' has no attribute {name!r}")
        # a module (normgate.adapt is a callable one, with AdaptError beside it; normgate.field the
        # one-line adapters) or an attribute of one (a variant type)
        value = ep.load()
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS, *_api()})
