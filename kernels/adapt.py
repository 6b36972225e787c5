"""Turn a norm module (or function) written elsewhere into a candidate, reading its semantics.

``normgate.adapt(module)`` reads what the module computes from the module itself: the op, the
casting mode, the weight offset (Gemma's ``1 + weight``, Megatron's ``zero_centered_gamma``), the
attribute its forward reads eps from, whether it has a weight and a bias, and whether its backward
writes into its inputs. Known classes (Hugging Face Llama/Mistral/Qwen, Gemma, Gemma3n/Gemma4,
T5, ``torch.nn.RMSNorm``, ``torch.nn.LayerNorm``, Megatron, Liger-Kernel) are read explicitly;
anything else must be described through keyword overrides. Nothing is guessed: a field that cannot
be read is an error that names it and the override that supplies it.

The harness draws the weights and eps of every case, so the candidate runs the module's own
forward with the case's parameters (``torch.func.functional_call``) and the case's eps (the eps
attribute set for the duration of the call). Where eps cannot be set per call, the candidate
declares the one eps it computes with.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import os
import re
import sys
import threading
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from normgate.candidates import ALL_DTYPES, Candidate

EPS_ATTRS = ("variance_epsilon", "eps", "epsilon")
SAME_DTYPES = ("fp32", "bf16", "fp16")
LIGER_CASTING = {0: "llama", 1: "gemma", -1: "none"}
_FIXED = object()  # marks "the module's eps cannot be set per call"


class AdaptError(TypeError):
    """The module's semantics could not be read; the message names the override that supplies them."""


@dataclass
class Semantics:
    """What a module computes, field by field, with where each field came from."""

    op: str | None = None
    casting: str | None = None
    offset: float | None = None
    out: str | None = None
    weight: bool | None = None
    bias: bool | None = None
    residual: bool = False
    eps_attr: str | None = None  # the attribute forward reads eps from
    eps: Any = None  # the module's own eps
    eps_none: bool = False  # forward accepts eps=None (PyTorch's default)
    inplace: bool = False
    triton: bool = False
    dtypes: tuple[str, ...] | None = None
    #: attributes Triton receives as float scalars (converted under the interpreter, see _liger_call)
    triton_scalars: tuple[str, ...] = ()
    notes: list[str] = field(default_factory=list)


# ---- known classes ----------------------------------------------------------------------------
def _hf_llama(m) -> Semantics:
    # weight * h.to(input_dtype): float32 statistics, one rounding of xhat, promoted output
    return Semantics("rmsnorm", "llama", 0.0, "promote", True, False, eps_attr="variance_epsilon")


def _hf_gemma(m) -> Semantics:
    # (x * rsqrt(...)) * (1.0 + weight.float()) all in float32, then type_as(x)
    return Semantics("rmsnorm", "gemma", 1.0, "input", True, False, eps_attr="eps")


def _hf_gemma3n(m) -> Semantics:
    # Gemma3n/Gemma4: float32 throughout like Gemma, but the weight is used as is (no 1 +), and
    # with_scale=False has no weight at all
    return Semantics("rmsnorm", "gemma", 0.0, "input", bool(getattr(m, "with_scale", True)), False, eps_attr="eps")


def _hf_t5(m) -> Semantics:
    # xhat in float32, cast to the weight's dtype only when that is half precision, then weight *:
    # llama for one dtype; with bf16/fp16 activations and fp32 weights it is gemma-promote
    # (normgate.kernels.thirdparty registers that as its own candidate).
    return Semantics("rmsnorm", "llama", 0.0, "input", True, False, eps_attr="variance_epsilon",
                     dtypes=SAME_DTYPES)


def _torch_rmsnorm(m) -> Semantics:
    return Semantics("rmsnorm", "gemma", 0.0, "input", m.weight is not None, False, eps_attr="eps", eps_none=True)


def _torch_layernorm(m) -> Semantics:
    return Semantics("layernorm", "gemma", 0.0, "input", m.weight is not None, m.bias is not None, eps_attr="eps")


def _megatron(m) -> Semantics:
    name = type(m).__name__
    op = {"RMSNorm": "rmsnorm", "LayerNorm": "layernorm"}.get(str(getattr(m, "normalization", "")))
    if op is None:
        op = "rmsnorm" if "RMSNorm" in name else "layernorm" if "LayerNorm" in name else None
    sem = Semantics(op, eps_attr="eps" if hasattr(m, "eps") else None)
    sem.offset = 1.0 if (getattr(m, "zero_centered_gamma", False) or getattr(m, "apply_layernorm_1p", False)) else 0.0
    sem.weight = getattr(m, "weight", None) is not None
    sem.bias = getattr(m, "bias", None) is not None
    if type(m).__module__.startswith("megatron.legacy") and name == "RMSNorm":
        # legacy RMSNorm: self._norm(x.float()).type_as(x) * self.weight
        sem.casting, sem.out = "llama", "promote"
    return sem


def _liger_rmsnorm(m) -> Semantics:
    casting = m.casting_mode if isinstance(m.casting_mode, str) else LIGER_CASTING.get(m.casting_mode)
    scale = m.weight is not None
    sem = Semantics("rmsnorm", casting, float(m.offset), "input", scale, False, eps_attr="variance_epsilon",
                    inplace=bool(getattr(m, "in_place", False)), triton=True,
                    triton_scalars=("variance_epsilon", "offset"))
    if not scale and getattr(m, "with_scale", True) is False:
        sem.triton, sem.triton_scalars = False, ()  # Gemma4-style with_scale=False runs plain PyTorch
    return sem


def _liger_fused_add(m) -> Semantics:
    sem = _liger_rmsnorm(m)
    sem.residual = True
    return sem


def _liger_layernorm(m) -> Semantics:
    # forward passes self.variance_epsilon (self.eps only feeds repr); bias is always a tensor
    return Semantics("layernorm", "gemma", 0.0, "input", True, True, eps_attr="variance_epsilon", triton=True,
                     triton_scalars=("variance_epsilon",))


_LLAMA_LIKE = ("LlamaRMSNorm", "MistralRMSNorm", "MixtralRMSNorm", "Qwen2RMSNorm", "Qwen3RMSNorm",
               "Qwen2MoeRMSNorm", "Qwen3MoeRMSNorm", "Phi3RMSNorm")
#: (module prefix, class names, reader); matched along the class's MRO, so subclasses are known too
KNOWN: tuple[tuple[str, tuple[str, ...], Callable[[Any], Semantics]], ...] = (
    ("liger_kernel", ("LigerFusedAddRMSNorm",), _liger_fused_add),
    ("liger_kernel", ("LigerRMSNorm",), _liger_rmsnorm),
    ("liger_kernel", ("LigerLayerNorm",), _liger_layernorm),
    ("transformers", _LLAMA_LIKE, _hf_llama),
    ("transformers", ("GemmaRMSNorm", "Gemma2RMSNorm", "Gemma3RMSNorm"), _hf_gemma),
    ("transformers", ("Gemma3nRMSNorm", "Gemma4RMSNorm"), _hf_gemma3n),
    ("transformers", ("T5LayerNorm",), _hf_t5),
    ("torch.nn", ("RMSNorm",), _torch_rmsnorm),
    ("torch.nn", ("LayerNorm",), _torch_layernorm),
    ("megatron", ("RMSNorm", "LayerNorm", "FusedLayerNorm", "MixedFusedRMSNorm", "MixedFusedLayerNorm",
                  "FusedRMSNorm"), _megatron),
)


def known_reader(cls: type) -> tuple[type, Callable[[Any], Semantics]] | None:
    for klass in cls.__mro__:
        for prefix, names, reader in KNOWN:
            if klass.__name__ in names and (klass.__module__ == prefix or klass.__module__.startswith(prefix + ".")):
                return klass, reader
    return None


def forward_override(cls: type, known: type) -> type | None:
    """The class between ``cls`` and its known ancestor that defines its own ``forward``, if any.

    A known class is read from what its forward computes; a subclass that replaces forward (Unsloth's
    drop-in ``LlamaRMSNorm`` runs its own Triton kernel) computes whatever its code does, which its
    parent's name says nothing about."""
    for klass in cls.__mro__:
        if klass is known:
            return None
        if "forward" in vars(klass):
            return klass
    return None


def _read_unknown(m) -> Semantics:
    """What can be read from any module without knowing its class: parameters, eps, offset."""
    sem = Semantics()
    found = [a for a in EPS_ATTRS if isinstance(getattr(m, a, None), (int, float))]
    if len({float(getattr(m, a)) for a in found}) == 1:
        sem.eps_attr = found[0] if len(found) == 1 else None
        if len(found) > 1:
            sem.notes.append(f"eps is in {', '.join(found)}: which one forward reads is unknown")
    elif found:
        sem.notes.append(f"{', '.join(found)} disagree: which one forward reads is unknown")
    if isinstance(getattr(m, "offset", None), (int, float)):
        sem.offset = float(m.offset)
    elif any(isinstance(getattr(m, a, None), bool) for a in ("zero_centered_gamma", "apply_layernorm_1p")):
        sem.offset = 1.0 if (getattr(m, "zero_centered_gamma", False)
                             or getattr(m, "apply_layernorm_1p", False)) else 0.0
    casting = getattr(m, "casting_mode", None)
    if isinstance(casting, str):
        sem.casting = casting
    for p in ("weight", "bias"):
        if hasattr(m, p):
            setattr(sem, p, getattr(m, p) is not None)
    return sem


# ---- running a module with the case's parameters and eps ----------------------------------------
_lock = threading.Lock()


@contextlib.contextmanager
def _attrs(obj, values: dict[str, Any]) -> Iterator[None]:
    old = {k: obj.__dict__[k] for k in values if k in obj.__dict__}
    try:
        for k, v in values.items():
            setattr(obj, k, v)
        yield
    finally:
        for k in values:
            if k in old:
                setattr(obj, k, old[k])
            else:
                delattr(obj, k)


def interpreter_on() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _interpreter_scalar(value: float):
    """A float as compiled Triton receives it (an fp32 scalar).

    The Triton interpreter passes Python floats through unconverted, so a kernel that calls
    ``eps.to(tl.float32)`` (Liger's do) fails there; compiled Triton specializes them as fp32.
    """
    import numpy as np
    import triton.language as tl
    from triton.runtime.interpreter import TensorHandle

    return tl.tensor(TensorHandle(np.array([value], dtype=np.float32), tl.float32), tl.float32)


@contextlib.contextmanager
def _interpreter_libdevice(module) -> Iterator[None]:
    """libdevice's ``rsqrt`` is a stub under the interpreter (it returns None); the interpreter
    implements ``tl.math.rsqrt``, which Liger itself uses on Triton < 3. Only under the interpreter."""
    import triton.language as tl

    # ``module``: the module object whose package's ops are patched, or that package's name
    package = module if isinstance(module, str) else type(module).__module__.split(".")[0]
    mods = [mod for name, mod in list(sys.modules.items())
            if name.startswith(package + ".ops") and hasattr(mod, "rsqrt")]
    olds = [mod.rsqrt for mod in mods]
    try:
        for mod in mods:
            mod.rsqrt = lambda x: tl.math.rsqrt(x)  # looked up at call time, when the interpreter patched it
        yield
    finally:
        for mod, old in zip(mods, olds, strict=True):
            mod.rsqrt = old


class ModuleKernel:
    """Calls ``module`` with the op's calling convention, the case's parameters and eps."""

    def __init__(self, module, sem: Semantics, fixed_eps: Any = _FIXED):
        self.module, self.sem, self.fixed_eps = module, sem, fixed_eps

    def __call__(self, x, *args):
        import torch

        sem = self.sem
        params, eps, rest = _case_args(sem.op, args)
        params = {k: v for k, v in params.items() if v is not None}
        if self.fixed_eps is not _FIXED and eps != self.fixed_eps:
            raise ValueError(f"this kernel computes with eps={self.fixed_eps} only (its eps cannot be set per call); "
                             f"the case asks for eps={eps}")
        attrs: dict[str, Any] = {}
        if isinstance(getattr(self.module, "normalized_shape", None), tuple):
            attrs["normalized_shape"] = (x.shape[-1],)  # torch.nn norms pass it on; cases vary N
        if sem.eps_attr is not None:
            attrs[sem.eps_attr] = eps
        interp = bool(sem.triton_scalars) and interpreter_on()
        if interp:
            for a in sem.triton_scalars:
                v = attrs.get(a, getattr(self.module, a))
                attrs[a] = _interpreter_scalar(float(v)) if isinstance(v, (int, float)) else v
        with _lock, _attrs(self.module, attrs), (_interpreter_libdevice(self.module) if interp
                                                 else contextlib.nullcontext()):
            out = torch.func.functional_call(self.module, params, (x, *rest))
        return tuple(out) if isinstance(out, (tuple, list)) else out


class FunctionKernel:
    """Calls a function by the names of its parameters (x first, then weight/bias/eps/residual)."""

    ROLES = {"weight": ("weight", "w", "W", "gamma", "scale"), "bias": ("bias", "b", "B", "beta"),
             "eps": EPS_ATTRS, "residual": ("residual", "res", "R")}

    def __init__(self, fn: Callable, sem: Semantics, kwargs: dict[str, Any], fixed_eps: Any = _FIXED):
        self.fn, self.sem, self.kwargs, self.fixed_eps = fn, sem, kwargs, fixed_eps
        self.names = _roles(fn, self.ROLES)

    def __call__(self, x, *args):
        vals, eps, rest = _case_args(self.sem.op, args)
        if rest:
            vals["residual"] = rest[0]
        if self.fixed_eps is not _FIXED:
            if eps != self.fixed_eps:
                raise ValueError(f"this kernel computes with eps={self.fixed_eps} only; the case asks for eps={eps}")
        else:
            vals["eps"] = eps
        kw = {self.names[k]: v for k, v in vals.items() if k in self.names}
        return self.fn(x, **kw, **self.kwargs)


def _case_args(op: str, args: tuple) -> tuple[dict[str, Any], Any, list]:
    """The parameters (by name), eps and what follows (the residual) of a norm case's call after x:
    (weight, eps, ...) for RMSNorm, (weight, bias, eps, ...) for LayerNorm."""
    if op == "rmsnorm":
        weight, eps, *rest = args
        return {"weight": weight}, eps, rest
    weight, bias, eps, *rest = args
    return {"weight": weight, "bias": bias}, eps, rest


def _roles(fn: Callable, roles: dict[str, tuple[str, ...]]) -> dict[str, str]:
    try:
        params = list(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return {}
    return {role: next(p for p in params[1:] if p in names) for role, names in roles.items()
            if any(p in names for p in params[1:])}


# ---- adapt --------------------------------------------------------------------------------------
_OVERRIDABLE = ("op", "casting", "offset", "out", "weight", "bias", "residual", "eps_attr", "inplace", "triton",
                "eps_none")
_CANDIDATE = ("dtypes", "devices", "backward", "strided", "full_range", "description")


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


def adapt(obj: Any, *, name: str | None = None, eps: Any = _FIXED, call_kwargs: dict[str, Any] | None = None,
          register: bool = False, as_parent: bool | None = None, **overrides: Any) -> Candidate:
    """A :class:`~normgate.Candidate` that runs ``obj`` (an ``nn.Module`` or a function) on every case.

    Overrides (each one replaces what was read, or supplies what could not be):
    ``op`` ("rmsnorm" | "layernorm"), ``casting`` ("llama" | "gemma" | "none"), ``offset`` (1.0 for
    ``1 + weight``), ``out`` ("input" | "promote"), ``weight``, ``bias``, ``residual`` (bools),
    ``eps_attr`` (the attribute forward reads eps from), ``eps=value`` (the kernel computes with this eps
    only, it cannot be set per call), ``inplace``, ``triton``, ``eps_none``, and the candidate's
    ``dtypes``, ``devices``, ``backward``, ``strided``, ``full_range``, ``description``.
    ``call_kwargs`` are passed to a function on every call. ``register=True`` adds the candidate to the
    registry (for ``normgate list`` and ``normgate run``).

    A subclass of a known class that defines its own ``forward`` is refused unless ``as_parent`` says
    how to read it: ``as_parent=True`` reads it as its known parent (its forward computes the same
    variant), ``as_parent=False`` as an unknown class (described by the overrides).
    """
    import torch

    unknown = set(overrides) - set(_OVERRIDABLE) - set(_CANDIDATE)
    if unknown:
        known_args = ("name", "eps", "call_kwargs", "register", "as_parent") + _OVERRIDABLE + _CANDIDATE
        raise TypeError(f"normgate.adapt got unknown overrides {sorted(unknown)}; known: {', '.join(known_args)}")
    is_module = isinstance(obj, torch.nn.Module)
    cls = type(obj) if is_module else None
    known = known_reader(cls) if cls is not None else None
    if known is not None and as_parent is not True:
        own = forward_override(cls, known[0])
        if own is not None and as_parent is None:
            parent = f"{known[0].__module__}.{known[0].__name__}"
            raise AdaptError(
                f"normgate.adapt: {cls.__module__}.{cls.__qualname__} subclasses {parent} but "
                f"{own.__qualname__} defines its own forward, so what it computes cannot be read from "
                f"{known[0].__name__}: pass as_parent=True if that forward computes exactly what "
                f"{known[0].__name__}'s does, or as_parent=False with overrides that describe it "
                "(op=, casting=, offset=, out=, eps_attr=)")
        if own is not None:
            known = None
    if known is not None:
        sem = known[1](obj)
        source = f"{known[0].__module__}.{known[0].__name__}"
    elif is_module:
        sem = _read_unknown(obj)
        source = f"{cls.__module__}.{cls.__name__} (not a known class)"
    else:
        sem = Semantics()
        source = f"function {getattr(obj, '__qualname__', repr(obj))}"
    for k in _OVERRIDABLE:
        if k in overrides:
            setattr(sem, k, overrides[k])
    fixed = eps is not _FIXED
    if fixed:
        sem.eps_attr = None
        sem.eps_none = eps is None
    elif not is_module:
        if "eps" not in _roles(obj, FunctionKernel.ROLES):
            sem.notes.append("the function has no eps parameter (eps, epsilon or variance_epsilon)")
    else:
        if sem.eps_attr is not None and not hasattr(obj, sem.eps_attr):
            raise AdaptError(f"normgate.adapt: {source} has no attribute {sem.eps_attr!r} to read eps from")
    _require(sem, source, is_module, fixed, obj)

    from normgate.properties.layernorm import LayerNormVariant
    from normgate.properties.rmsnorm import RMSNormVariant

    if sem.op == "rmsnorm":
        variant = RMSNormVariant(casting=sem.casting, offset=float(sem.offset), residual=sem.residual,
                                 weight=bool(sem.weight), out=sem.out or "input")
    else:
        if sem.offset:
            raise AdaptError(f"normgate.adapt: {source}: a LayerNorm with a weight offset is not a variant normgate "
                             "knows (LayerNormVariant has no offset)")
        variant = LayerNormVariant(weight=bool(sem.weight), bias=bool(sem.bias), residual=sem.residual,
                                   casting=sem.casting, out=sem.out or "input")
    fixed_eps = eps if fixed else _FIXED
    fn = ModuleKernel(obj, sem, fixed_eps) if is_module else FunctionKernel(obj, sem, call_kwargs or {}, fixed_eps)
    dtypes = overrides.get("dtypes") or sem.dtypes or _default_dtypes(sem)
    desc = overrides.get("description") or f"{source}, adapted ({variant.key()})"
    from normgate import candidates

    kwargs = dict(name=name or _snake(cls.__name__ if cls else getattr(obj, "__name__", "kernel")), op=sem.op,
                  variant=variant, fn=fn, dtypes=tuple(dtypes),
                  devices=tuple(overrides.get("devices", ("cpu", "cuda"))),
                  backward=overrides.get("backward", True), inplace=sem.inplace,
                  strided=overrides.get("strided", True), eps_none=sem.eps_none,
                  full_range=overrides.get("full_range", False), triton=sem.triton, description=desc,
                  source=candidates._current_source, loads=tuple(candidates._current_loads))
    names = {f.name for f in dataclasses.fields(Candidate)}
    if fixed and "eps_values" in names:
        kwargs["eps_values"] = (eps,)
    cand = Candidate(**kwargs)
    if register:
        candidates.add_candidate(cand)
    return cand


def _default_dtypes(sem: Semantics) -> tuple[str, ...]:
    if sem.out is None:  # the mixed-dtype rule was not read: claim one dtype at a time
        return SAME_DTYPES
    if sem.triton and interpreter_on() and sem.casting in ("llama", "none"):
        # the Triton 3.9 interpreter multiplies bf16 by bf16 on the raw bits; these casting modes do
        return tuple(d for d in ALL_DTYPES if not d.startswith("bf16"))
    return ALL_DTYPES


def _require(sem: Semantics, source: str, is_module: bool, fixed: bool, obj) -> None:
    missing = []
    if sem.op not in ("rmsnorm", "layernorm"):
        missing.append("the op (pass op='rmsnorm' or op='layernorm')")
    if sem.casting not in ("llama", "gemma", "none"):
        missing.append("the casting mode: where it computes in float32 and rounds (pass casting='llama', "
                       "'gemma' or 'none'; see normgate.RMSNormVariant)")
    if sem.op != "layernorm" and sem.offset is None:
        missing.append("the weight offset (pass offset=1.0 for Gemma's (1 + weight), else offset=0.0)")
    if sem.op == "layernorm" and sem.offset is None:
        sem.offset = 0.0
    if sem.weight is None:
        missing.append("whether it has a weight (pass weight=True or weight=False)")
    if sem.op == "layernorm" and sem.bias is None:
        missing.append("whether it has a bias (pass bias=True or bias=False)")
    if is_module and not fixed and sem.eps_attr is None:
        seen = [a for a in EPS_ATTRS if hasattr(obj, a)]
        where = f" (it has {', '.join(seen)}; which one forward reads is unknown)" if seen else ""
        missing.append(f"the eps its forward reads{where} (pass eps_attr='name', or eps=value if it is fixed)")
    if not is_module and not fixed and "eps" not in _roles(obj, FunctionKernel.ROLES):
        missing.append("how to pass eps: the function has no eps parameter (pass eps=value, the one eps it uses)")
    if missing:
        raise AdaptError(f"normgate.adapt: cannot read the semantics of {source}: " + "; ".join(missing)
                         + ("; " + "; ".join(sem.notes) if sem.notes else ""))


class _CallableModule(types.ModuleType):
    """``normgate.adapt`` (this module, exported by name through the ``normgate.api`` entry points)
    is both the module and the function: ``normgate.adapt(module)`` adapts, and
    ``normgate.adapt.AdaptError`` is the error beside it."""

    def __call__(self, obj: Any, **kw: Any) -> Candidate:
        return adapt(obj, **kw)


sys.modules[__name__].__class__ = _CallableModule
