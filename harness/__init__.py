"""normgate: numerical-correctness and determinism harness for fused GPU kernels.

The public API (imported lazily, so ``import normgate`` stays cheap for the pytest plugin)::

    normgate.register(name, fn, op=..., variant=..., dtypes=..., devices=..., backward=...)
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

_EXPORTS = {
    "register": "normgate.candidates",
    "Candidate": "normgate.candidates",
    "load_file": "normgate.candidates",
    "get": "normgate.candidates",
    "registry": "normgate.candidates",
    "Case": "normgate.case",
    "RMSNormVariant": "normgate.properties.rmsnorm",
    "LayerNormVariant": "normgate.properties.layernorm",
    "adapt": "normgate.adapt",
    "field": "normgate.kernels.field",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'normgate' has no attribute {name!r}")
    value = importlib.import_module(module)
    # normgate.adapt is a callable module (the function, with AdaptError beside it), whichever of
    # `normgate.adapt(...)` or `import normgate.adapt` comes first
    # (normgate.field is the module of one-line adapters, kernels/field.py)
    value = value if name in ("adapt", "field") else getattr(value, name)
    globals()[name] = value
    return value
