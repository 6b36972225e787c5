"""Candidates: the kernels under test, and the public API to register one.

A candidate is a callable that claims an op and an exact variant of it, with the dtypes and
devices it supports. Register one from your own file::

    import normgate

    @normgate.register("my_rmsnorm", variant=normgate.RMSNormVariant(casting="gemma", offset=0.0),
                       dtypes=("fp32", "bf16", "fp16", "bf16/fp32"))
    def my_rmsnorm(x, weight, eps):
        ...

(the variant's type names the op; ``normgate.RMSNormVariant`` is the RMSNorm op's, an entry point
of normgate's own)

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import dtypes as _dtypes
from . import entrypoints as _entry_points
from .op import Variant, all_ops, op_of

ALL_DTYPES = ("fp32", "bf16", "fp16", "bf16/fp32", "fp16/fp32")


@dataclass(init=False)
class Candidate:
    """A kernel under test and what it claims. The core's declarations are fields; an op's own
    (a norm's ``eps_none``, ``max_n``, ...: ``Op.claims``) are keywords, kept in ``claims`` and
    read as attributes (``cand.max_n``)."""

    name: str
    #: the op, which follows from the variant's type (``op_of``); given, it must agree
    op: str | None
    variant: Variant
    fn: Callable | str  # a callable, or "module:attribute" resolved on first use
    dtypes: tuple[str, ...]
    devices: tuple[str, ...]
    backward: bool  # has a backward: gradients are checked
    inplace: bool  # may overwrite its inputs (e.g. dx written into dy's storage)
    batch_invariant: bool  # claims a row's bits do not depend on the batch (else: observed, not judged)
    triton: bool  # its stores are Triton's (rounding differs under the interpreter)
    #: where it switches strategy, by axis ({"m": [...]} batch sizes, and the op's axes: a norm's
    #: "n" widths): the cases visit them
    boundaries: dict[str, tuple[int, ...]] | None
    #: the gradients its backward provides (``Op.gradients``), e.g. ("dx",) for a backward that
    #: returns no weight gradient; None: every gradient the variant has. The others are not asked
    #: for (their inputs do not require grad); a declared one that does not arrive breaks the contract
    grads: tuple[str, ...] | None
    #: the op's own claims (``Op.claims``), every one of them, defaults filled in
    claims: dict[str, Any]
    description: str
    source: str
    loads: tuple[str, ...]  # --load files needed to find it again (replay)

    def __init__(self, name: str, op: str | None = None, variant: Variant | None = None,
                 fn: Callable | str | None = None, *, dtypes: tuple[str, ...] = ("fp32", "bf16", "fp16"),
                 devices: tuple[str, ...] = ("cpu", "cuda"), backward: bool = True, inplace: bool = False,
                 batch_invariant: bool = True, triton: bool = False,
                 boundaries: dict[str, tuple[int, ...]] | None = None, grads: tuple[str, ...] | None = None,
                 claims: dict[str, Any] | None = None, description: str = "", source: str = "builtin",
                 loads: tuple[str, ...] = (), **op_claims: Any) -> None:
        self.name, self.op, self.variant, self.fn = name, op, variant, fn  # type: ignore[assignment]
        self.dtypes, self.devices, self.backward, self.inplace = dtypes, devices, backward, inplace
        self.batch_invariant, self.triton, self.boundaries, self.grads = batch_invariant, triton, boundaries, grads
        self.claims = {**(claims or {}), **op_claims}
        self.description, self.source, self.loads = description, source, loads
        self.__post_init__()

    def __getattr__(self, name: str) -> Any:
        claims = self.__dict__.get("claims")  # absent while a copy is being built
        if claims is not None and name in claims:
            return claims[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def __post_init__(self) -> None:
        if not self.name or any(c in self.name for c in "@:, \t\n"):
            raise ValueError(f"candidate name {self.name!r} must be non-empty, without '@', ':', ',' or spaces")
        if not isinstance(self.variant, Variant):
            raise TypeError(f"candidate {self.name!r}: variant must be an op variant such as "
                            f"normgate.RMSNormVariant(...), got {type(self.variant).__name__}")
        if self.fn is None:
            raise TypeError(f"candidate {self.name!r}: no fn (a callable, or 'module:attribute')")
        op = op_of(self.variant)
        if self.op is not None and self.op != op.name:
            raise ValueError(f"candidate {self.name!r} declares op={self.op!r}, but its variant "
                             f"{type(self.variant).__name__} is op {op.name!r}")
        self.op = op.name
        self.dtypes, self.devices = tuple(self.dtypes), tuple(self.devices)
        for d in self.dtypes:
            try:
                _dtypes.split_pair(d)
            except ValueError as e:
                raise ValueError(f"candidate {self.name!r} declares dtype {d!r}: {e}") from None
        if op.claims is not None:
            unknown = sorted(set(self.claims) - set(op.claims))
            if unknown:
                raise TypeError(f"candidate {self.name!r}: {op.name} candidates claim "
                                f"{', '.join(op.claims) or 'nothing beyond the core'}; unknown: {', '.join(unknown)}")
            claims = {}
            for key, claim in op.claims.items():
                v = self.claims.get(key, claim.default)
                claims[key] = claim.check(v, self.name) if claim.check is not None else v
            self.claims = claims
        if self.grads is not None:
            grads = tuple(dict.fromkeys(op.gradient_aliases.get(g, g) for g in self.grads))
            bad = [g for g in grads if g not in op.gradients]
            missing = [g for g in op.required_gradients if g not in grads]
            if bad or missing:
                required = f", {', '.join(op.required_gradients)} among them" if op.required_gradients else ""
                raise ValueError(f"candidate {self.name!r} declares grads={self.grads!r}: expected some of "
                                 f"{op.gradients}{required} (backward=False is a kernel without a backward)")
            self.grads = tuple(g for g in op.gradients if g in grads)
        if self.boundaries is not None:
            unknown = set(self.boundaries) - set(op.boundary_axes)
            if unknown or not all(isinstance(b, int) and b >= 1 for v in self.boundaries.values() for b in v):
                axes = ", ".join(f'"{a}": [...]' for a in op.boundary_axes)
                raise ValueError(f"candidate {self.name!r} declares boundaries={self.boundaries!r}: expected "
                                 f"{{{axes}}} of positive integers")
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

    def provides(self, gradient: str) -> bool:
        """Whether its backward claims the gradient named ``gradient`` ("dx", "dweight", ...)."""
        if not self.backward:
            return False
        from .op import get_op

        g = get_op(self.op).gradient_aliases.get(gradient, gradient)
        return self.grads is None or g in self.grads

    def declaration(self) -> dict[str, Any]:
        """What the candidate claims, as JSON: recorded in results and baselines, because the gate
        judges a kernel against what the base branch claimed for it, not what the pull request
        says now. Every field that shapes the checks is in it; a new field is recorded as-is."""
        out: dict[str, Any] = {}
        fields = [(f.name, getattr(self, f.name)) for f in dataclasses.fields(self)
                  if f.name not in _NOT_DECLARED and f.name != "claims"]
        for name, v in [*fields, *self.claims.items()]:
            if name == "grads" and v is None:
                # every gradient, as before the field existed: recorded declarations stay comparable
                continue
            if isinstance(v, Variant):
                v = v.key()
            elif isinstance(v, tuple):
                v = list(v)
            elif isinstance(v, dict):
                v = {k: (list(b) if isinstance(b, tuple) else b) for k, b in sorted(v.items())}
            out[name] = v
        return out


#: Candidate fields that name or locate it rather than claim anything about it.
_NOT_DECLARED = frozenset({"name", "fn", "description", "source", "loads"})


_REGISTRY: dict[str, Candidate] = {}


def register(name: str, fn: Callable | str | None = None, *, variant: Variant, op: str | None = None,
             dtypes: tuple[str, ...] = ("fp32", "bf16", "fp16"), devices: tuple[str, ...] = ("cpu", "cuda"),
             backward: bool = True, inplace: bool = False, batch_invariant: bool = True, triton: bool = False,
             boundaries: dict[str, list[int] | tuple[int, ...]] | None = None,
             grads: tuple[str, ...] | None = None, description: str = "", replace: bool = False, **claims: Any):
    """Register a candidate; usable as ``register(name, fn, ...)`` or as a decorator.

    The op follows from the variant (``op=`` may still be given, and must agree); ``claims`` are
    the op's own (``Op.claims``: for the norms ``strided``, ``eps_none``, ``eps_values``,
    ``full_range``, ``max_n``). Returns the :class:`Candidate` (or, as a decorator, the function
    unchanged).
    """

    def add(f: Callable | str):
        cand = Candidate(name=name, op=op, variant=variant, fn=f, dtypes=tuple(dtypes), devices=tuple(devices),
                         backward=backward, inplace=inplace, batch_invariant=batch_invariant, triton=triton,
                         boundaries=None if boundaries is None else {k: tuple(v) for k, v in boundaries.items()},
                         grads=None if grads is None else tuple(grads), description=description,
                         source=_current_source, loads=tuple(_current_loads), **claims)
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
