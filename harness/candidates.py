"""Candidates: the kernels under test, and the public API to register one.

A candidate is a callable that claims an op and an exact variant of it, with the dtypes and
devices it supports. Register one from your own file::

    import normgate

    @normgate.register("my_rmsnorm", op="rmsnorm",
                       variant=normgate.RMSNormVariant(casting="gemma", offset=0.0),
                       dtypes=("fp32", "bf16", "fp16", "bf16/fp32"))
    def my_rmsnorm(x, weight, eps):
        ...

and run ``normgate run --load my_file.py``. An installed package can register through the
``normgate.candidates`` entry-point group instead (see README).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib
import importlib.util
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import dtypes as _dtypes
from . import entrypoints as _entry_points
from .op import Variant, all_ops, op_of

ALL_DTYPES = ("fp32", "bf16", "fp16", "bf16/fp32", "fp16/fp32")
#: the gradients a backward can provide, by the name the checks give them; "dx" is the row
#: gradient (of x, and of the residual in a fused add, which receives the same values)
GRADIENTS = ("dx", "dweight", "dbias")
_GRAD_ALIASES = {"dw": "dweight", "db": "dbias", "dresidual": "dx"}


@dataclass
class Candidate:
    name: str
    #: the op, which follows from the variant's type (``op_of``); given, it must agree
    op: str | None = None
    variant: Variant = None  # type: ignore[assignment]  (required: checked in __post_init__)
    fn: Callable | str = None  # type: ignore[assignment]  # a callable, or "module:attribute" resolved on first use
    dtypes: tuple[str, ...] = ("fp32", "bf16", "fp16")
    devices: tuple[str, ...] = ("cpu", "cuda")
    backward: bool = True  # has a backward: gradients are checked
    inplace: bool = False  # may overwrite its inputs (e.g. dx written into dy's storage)
    strided: bool = True  # accepts rows whose stride is not N
    eps_none: bool = True  # accepts eps=None (PyTorch's "machine epsilon" default)
    full_range: bool = False  # claims every finite input (e.g. a scaled sum of squares)
    eps_values: tuple[float | None, ...] | None = None  # the only eps it takes (a module's fixed eps); None: any
    #: the widest row it takes (a documented limit of the kernel); None: any. A mapping gives it per
    #: dtype ({"fp32": 16384, "bf16": 32768}: flash-attention's 64 KB per row), by the activation
    #: dtype or the whole dtype string ("bf16/fp32")
    max_n: int | dict[str, int] | None = None
    batch_invariant: bool = True  # claims a row's bits do not depend on the batch (else: observed, not judged)
    triton: bool = False  # its stores are Triton's (rounding differs under the interpreter)
    #: where it switches strategy, {"n": [...], "m": [...]}: widths and batch sizes the cases visit
    boundaries: dict[str, tuple[int, ...]] | None = None
    #: the gradients its backward provides (``GRADIENTS``), e.g. ("dx",) for a backward that returns
    #: no weight gradient; None: every gradient the variant has. The others are not asked for (their
    #: inputs do not require grad); a declared one that does not arrive breaks the contract
    grads: tuple[str, ...] | None = None
    description: str = ""
    source: str = "builtin"
    loads: tuple[str, ...] = field(default=())  # --load files needed to find it again (replay)

    def __post_init__(self) -> None:
        if not self.name or any(c in self.name for c in "@:, \t\n"):
            raise ValueError(f"candidate name {self.name!r} must be non-empty, without '@', ':', ',' or spaces")
        if not isinstance(self.variant, Variant):
            raise TypeError(f"candidate {self.name!r}: variant must be an op variant such as "
                            f"normgate.RMSNormVariant(...), got {type(self.variant).__name__}")
        if self.fn is None:
            raise TypeError(f"candidate {self.name!r}: no fn (a callable, or 'module:attribute')")
        op = op_of(self.variant).name
        if self.op is not None and self.op != op:
            raise ValueError(f"candidate {self.name!r} declares op={self.op!r}, but its variant "
                             f"{type(self.variant).__name__} is op {op!r}")
        self.op = op
        for d in self.dtypes:
            try:
                _dtypes.split_pair(d)
            except ValueError as e:
                raise ValueError(f"candidate {self.name!r} declares dtype {d!r}: {e}") from None
        if self.eps_values is not None and not self.eps_values:
            raise ValueError(f"candidate {self.name!r} declares eps_values=(): give at least one eps it accepts")
        if isinstance(self.max_n, dict):
            for k, v in self.max_n.items():
                try:
                    _dtypes.split_pair(k)
                except ValueError as e:
                    raise ValueError(f"candidate {self.name!r} declares max_n for dtype {k!r}: {e}") from None
                if not isinstance(v, int) or v < 1:
                    raise ValueError(f"candidate {self.name!r} declares max_n[{k!r}]={v!r}: it must be at least 1")
            self.max_n = dict(sorted(self.max_n.items()))
        elif self.max_n is not None and self.max_n < 1:
            raise ValueError(f"candidate {self.name!r} declares max_n={self.max_n}: it must be at least 1")
        if self.grads is not None:
            grads = tuple(dict.fromkeys(_GRAD_ALIASES.get(g, g) for g in self.grads))
            bad = [g for g in grads if g not in GRADIENTS]
            if bad or "dx" not in grads:
                raise ValueError(f"candidate {self.name!r} declares grads={self.grads!r}: expected some of "
                                 f"{GRADIENTS}, dx among them (backward=False is a kernel without a backward)")
            self.grads = tuple(g for g in GRADIENTS if g in grads)
        if self.boundaries is not None:
            unknown = set(self.boundaries) - {"n", "m"}
            if unknown or not all(isinstance(b, int) and b >= 1 for v in self.boundaries.values() for b in v):
                raise ValueError(f"candidate {self.name!r} declares boundaries={self.boundaries!r}: expected "
                                 '{"n": [widths], "m": [batch sizes]} of positive integers')
            self.boundaries = {k: tuple(sorted(set(v))) for k, v in self.boundaries.items()}
        bad = [d for d in self.devices if d not in ("cpu", "cuda")]
        if bad:
            raise ValueError(f"candidate {self.name!r} declares unknown devices {bad}; use 'cpu' and/or 'cuda'")

    def resolve(self) -> Callable:
        if isinstance(self.fn, str):
            module, _, attr = self.fn.partition(":")
            self.fn = getattr(importlib.import_module(module), attr)
        return self.fn

    def supports(self, device: str) -> bool:
        return device.split(":")[0] in self.devices

    def max_n_for(self, dtype: str) -> int | None:
        """The widest row it takes in ``dtype`` (a dtype string such as "bf16/fp32"), or None."""
        if not isinstance(self.max_n, dict):
            return self.max_n
        if dtype in self.max_n:
            return self.max_n[dtype]
        return self.max_n.get(_dtypes.split_pair(dtype)[0])

    def provides(self, gradient: str) -> bool:
        """Whether its backward claims the gradient named ``gradient`` ("dx", "dweight", ...)."""
        if not self.backward:
            return False
        g = _GRAD_ALIASES.get(gradient, gradient)
        return self.grads is None or g in self.grads

    def declaration(self) -> dict[str, Any]:
        """What the candidate claims, as JSON: recorded in results and baselines, because the gate
        judges a kernel against what the base branch claimed for it, not what the pull request
        says now. Every field that shapes the checks is in it; a new field is recorded as-is."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name in _NOT_DECLARED:
                continue
            v = getattr(self, f.name)
            if f.name == "grads" and v is None:
                # every gradient, as before the field existed: recorded declarations stay comparable
                continue
            if isinstance(v, Variant):
                v = v.key()
            elif isinstance(v, tuple):
                v = list(v)
            elif isinstance(v, dict):
                v = {k: (list(b) if isinstance(b, tuple) else b) for k, b in sorted(v.items())}
            out[f.name] = v
        return out


#: Candidate fields that name or locate it rather than claim anything about it.
_NOT_DECLARED = frozenset({"name", "fn", "description", "source", "loads"})


_REGISTRY: dict[str, Candidate] = {}


def register(name: str, fn: Callable | str | None = None, *, variant: Variant, op: str | None = None,
             dtypes: tuple[str, ...] = ("fp32", "bf16", "fp16"), devices: tuple[str, ...] = ("cpu", "cuda"),
             backward: bool = True, inplace: bool = False, strided: bool = True, eps_none: bool = True,
             full_range: bool = False, eps_values: tuple[float | None, ...] | None = None,
             max_n: int | dict[str, int] | None = None, batch_invariant: bool = True, triton: bool = False,
             boundaries: dict[str, list[int] | tuple[int, ...]] | None = None,
             grads: tuple[str, ...] | None = None, description: str = "", replace: bool = False):
    """Register a candidate; usable as ``register(name, fn, ...)`` or as a decorator.

    The op follows from the variant (``op=`` may still be given, and must agree). Returns the
    :class:`Candidate` (or, as a decorator, the function unchanged).
    """

    def add(f: Callable | str):
        cand = Candidate(name=name, op=op, variant=variant, fn=f, dtypes=tuple(dtypes), devices=tuple(devices),
                         backward=backward, inplace=inplace, strided=strided, eps_none=eps_none,
                         full_range=full_range, eps_values=None if eps_values is None else tuple(eps_values),
                         max_n=max_n, batch_invariant=batch_invariant, triton=triton,
                         boundaries=None if boundaries is None else {k: tuple(v) for k, v in boundaries.items()},
                         grads=None if grads is None else tuple(grads), description=description,
                         source=_current_source, loads=tuple(_current_loads))
        add_candidate(cand, replace=replace)
        return cand

    if fn is not None:
        return add(fn)

    def decorator(f: Callable) -> Callable:
        add(f)
        return f

    return decorator


def add_candidate(cand: Candidate, replace: bool = False) -> Candidate:
    if cand.name in _REGISTRY and not replace and _REGISTRY[cand.name] is not cand:
        raise ValueError(f"a candidate named {cand.name!r} is already registered "
                         f"(from {_REGISTRY[cand.name].source}); pick another name or pass replace=True")
    _REGISTRY[cand.name] = cand
    return cand


def unregister(name: str) -> None:
    _REGISTRY.pop(name, None)


_current_source = "builtin"
_current_loads: list[str] = []


class LoadError(Exception):
    """A --load file or entry point could not be imported; carries the traceback as text."""


def load_file(path: str | Path) -> list[str]:
    """Import a user's file that registers candidates; return the names it added."""
    global _current_source
    p = Path(path)
    if not p.is_file():
        raise LoadError(f"--load {path}: no such file")
    before = set(_REGISTRY)
    module_name = "normgate_user_" + hashlib.sha1(str(p.resolve()).encode()).hexdigest()[:12]
    spec = importlib.util.spec_from_file_location(module_name, p)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    prev = _current_source
    _current_source = str(p)
    _current_loads.append(str(p))
    try:
        with _no_process_exit(p):
            spec.loader.exec_module(module)
    except BaseException as e:  # noqa: BLE001 - anything a user file raises is reported, not fatal
        if isinstance(e, KeyboardInterrupt):
            raise
        sys.modules.pop(module_name, None)
        raise LoadError(f"--load {path} failed to import:\n{traceback.format_exc()}") from e
    finally:
        _current_source = prev
        _current_loads.remove(str(p))
    added = sorted(set(_REGISTRY) - before)
    for name in added:
        _REGISTRY[name].loads = (str(p),)
    return added


class _ExitCalled(Exception):
    pass


@contextlib.contextmanager
def _no_process_exit(path: Path) -> Iterator[None]:
    """A file being imported may not end the process: ``os._exit(0)`` there would end ``normgate
    run`` with exit code 0 and nothing checked. (sys.exit raises, and is caught like any error.)"""
    real = os._exit

    def refuse(code: int) -> None:
        raise _ExitCalled(f"{path} called os._exit({code}) while being imported")

    os._exit = refuse  # type: ignore[assignment]
    try:
        yield
    finally:
        os._exit = real


_loaded = False


def load_builtins() -> None:
    """Register the ops, then the candidates of the ``normgate.candidates`` entry points (normgate's
    built-ins are entry points of its own distribution: pyproject.toml), once."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    all_ops()

    @contextlib.contextmanager
    def source(ep) -> Iterator[None]:
        global _current_source
        prev = _current_source
        _current_source = "builtin" if _entry_points.is_builtin(ep) else f"entry point {ep.name} ({ep.value})"
        try:
            yield
        finally:
            _current_source = prev

    _entry_points.load(_entry_points.CANDIDATES_GROUP, lambda obj, ep: _entry_points.call_unless_module(obj),
                       around=source)


def registry() -> dict[str, Candidate]:
    load_builtins()
    return _REGISTRY


def get(name: str) -> Candidate:
    reg = registry()
    try:
        return reg[name]
    except KeyError:
        raise KeyError(f"unknown kernel {name!r}; `normgate list` shows the registered ones "
                       f"(a kernel of your own needs --load FILE)") from None
