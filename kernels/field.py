"""One-line adapters for the function kernels of the field: each returns a :class:`normgate.Candidate`.

    normgate.field.flash_attn_rms_norm(residual="unrounded", register=True)

Each adapter states what the kernel computes as a declared variant (the residual handling, the
weight offset, the output dtype) and what it claims as the kernel documents or its code enforces
(dtypes, devices, the row widths it takes, the gradients its backward returns, in-place writes),
and maps the case onto the function's own arguments. ``fn=`` adapts another function with the same
signature (a vendored copy, a fork); by default the package's own is imported on first call, so
nothing is imported until a case runs. When a package is installed, the defaults are registered as
built-in candidates (``register_installed``, from ``normgate.kernels.thirdparty``).

What the adapters read from the packages' code (flash-attention 2.4.3 and 2.8.3, Unsloth,
quack, Liger-Kernel 0.8.5):

- flash-attention's ``layer_norm_fn`` / ``rms_norm_fn(x, weight, bias, residual=None, ..., eps,
  prenorm, residual_in_fp32, [zero_centered_weight], [out_dtype])``: float32 inside, one rounding;
  the residual is added in float32 and that sum is normalized (``residual_mode="unrounded"``; with
  a float32 residual, the fp32 stream: ``"fp32"``); ``prenorm=True`` returns ``(y, h)``; a row of
  at most 64 KB (16,384 fp32 or 32,768 half-precision elements; wider raises); autotuned Triton,
  CUDA only. ``zero_centered_weight`` (``1 + weight``) and ``out_dtype`` exist from 2.6 / 2.8.
- Unsloth's ``fast_rms_layernorm(layernorm, X, gemma=False)`` and ``fast_layernorm(layernorm, X)``
  read ``weight`` (and ``bias``) and ``variance_epsilon`` / ``eps`` from the object passed. Llama
  path: the normalized value is cast to the weight's dtype before the multiply (llama casting with
  same-dtype weights; with fp32 weights it would be gemma's, so it claims one dtype at a time);
  gemma path: all float32 with ``1 + weight``. What the backward returns depends on the release:
  2024.8's returns dX only (``grads=("dx",)``), written into dY's storage on both paths, and has no
  ``fast_layernorm``; 2026.10.9's returns dX in a buffer of its own and dW (and dB), so
  ``register_installed`` declares ``grads=None, inplace=False`` when the installed source's
  backward returns dW.
- quack's ``rmsnorm(x, weight, ..., eps=...)``: CuTe DSL, float32 inside, one rounding, CUDA only.
- Liger-Kernel's autograd Functions ``LigerRMSNormFunction.apply(X, W, eps, offset, casting_mode,
  in_place)``, ``LigerLayerNormFunction.apply(X, W, B, eps)``, ``LigerFusedAddRMSNormFunction.apply(
  X, R, W, eps, offset, casting_mode, in_place)`` (its add rounds to X's dtype: ``rounded``).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import os
import re
import types
from collections.abc import Callable
from typing import Any

import torch

from normgate.candidates import Candidate, add_candidate
from normgate.properties.layernorm import LayerNormVariant
from normgate.properties.rmsnorm import RMSNormVariant

ALL = ("fp32", "bf16", "fp16", "bf16/fp32", "fp16/fp32")
SAME = ("fp32", "bf16", "fp16")
#: flash-attention's row limit: 64 KB per row, so the widest row depends on the element size
FLASH_ATTN_ROW_BYTES = 65536
#: Unsloth's and Liger's: Triton's largest block (``calculate_settings`` raises past it)
TRITON_MAX_BLOCK = 65536
_OUT = {None: "input", torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16",
        "fp32": "fp32", "bf16": "bf16", "fp16": "fp16", "input": "input"}
_TORCH = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}

FLASH_ATTN = "flash_attn.ops.triton.layer_norm"
UNSLOTH_RMS = "unsloth.kernels.rms_layernorm:fast_rms_layernorm"
UNSLOTH_LN = "unsloth.kernels.layernorm:fast_layernorm"
QUACK = "quack.rmsnorm:rmsnorm"
LIGER_RMS = "liger_kernel.ops.rms_norm:LigerRMSNormFunction"
LIGER_LN = "liger_kernel.ops.layer_norm:LigerLayerNormFunction"
LIGER_ADD = "liger_kernel.ops.fused_add_rms_norm:LigerFusedAddRMSNormFunction"


def row_limit(row_bytes: int, dtypes: tuple[str, ...] = ALL) -> dict[str, int]:
    """A per-dtype ``max_n`` for a kernel that takes rows of at most ``row_bytes`` bytes."""
    acts = dict.fromkeys(d.split("/")[0] for d in dtypes)
    return {d: row_bytes // _TORCH[d].itemsize for d in acts}


class _Lazy:
    """The function a candidate calls: the target is imported on the first call ("module:attr"),
    then ``convention(target, *case_args)`` maps normgate's calling convention onto it."""

    def __init__(self, target: Callable | str, convention: Callable[..., Any]):
        self.target, self.convention = target, convention

    def resolve(self) -> Callable:
        if isinstance(self.target, str):
            module, _, attr = self.target.partition(":")
            self.target = getattr(importlib.import_module(module), attr)
        return self.target

    def __call__(self, *args: Any) -> Any:
        return self.convention(self.resolve(), *args)


def _candidate(name: str, op: str, variant, call: _Lazy, register: bool, **declared: Any) -> Candidate:
    from normgate import candidates

    cand = Candidate(name=name, op=op, variant=variant, fn=call, source=candidates._current_source,
                     loads=tuple(candidates._current_loads), **declared)
    if register:
        add_candidate(cand)
    return cand


def _residual_mode(residual: str | None) -> tuple[bool, str]:
    if residual not in (None, "unrounded", "fp32"):
        raise ValueError(f"residual must be None, 'unrounded' (the float32 sum normalized, h returned in x's "
                         f"dtype) or 'fp32' (an fp32 residual stream), got {residual!r}")
    return residual is not None, residual or "rounded"


def _out(out_dtype: Any) -> str:
    try:
        return _OUT[out_dtype]
    except (KeyError, TypeError):
        raise ValueError(f"out_dtype must be None, torch.float32, torch.bfloat16 or torch.float16, got {out_dtype!r}") \
            from None


def _suffix(residual: str | None, out: str) -> str:
    return ("" if residual is None else "_residual" + ("_fp32" if residual == "fp32" else "")) + \
        ("" if out == "input" else f"_out_{out}")


# ---- flash-attention ----------------------------------------------------------------------------
def _flash_kwargs(fn: Callable, eps: float, residual: torch.Tensor | None, mode: str, out: str,
                  zero_centered: bool) -> dict[str, Any]:
    kw: dict[str, Any] = {"eps": eps}
    if residual is not None:
        # prenorm returns (y, h); residual_in_fp32 only matters where no residual comes in, but it
        # says what the caller means: the residual's own dtype (float32 here) sets h's
        kw.update(residual=residual, prenorm=True, residual_in_fp32=mode == "fp32")
    params = inspect.signature(fn).parameters
    for arg, value, wanted in (("zero_centered_weight", True, zero_centered), ("out_dtype", _TORCH.get(out),
                                                                                out != "input")):
        if wanted:
            if arg not in params:
                raise TypeError(f"{getattr(fn, '__module__', '')}.{getattr(fn, '__name__', fn)} has no {arg} "
                                "argument (flash-attention added it in a later release)")
            kw[arg] = value
    return kw


def flash_attn_rms_norm(*, residual: str | None = None, zero_centered_weight: bool = False,
                        out_dtype: torch.dtype | str | None = None, fn: Callable | str | None = None,
                        name: str | None = None, devices: tuple[str, ...] = ("cuda",),
                        register: bool = False) -> Candidate:
    """flash-attention's ``rms_norm_fn``: ``residual`` None, "unrounded" (its default with a residual
    of x's dtype) or "fp32" (``residual_in_fp32``: an fp32 residual stream); ``zero_centered_weight``
    is Gemma's ``1 + weight``; ``out_dtype`` the output dtype asked for."""
    has_res, mode = _residual_mode(residual)
    out = _out(out_dtype)
    variant = RMSNormVariant(casting="gemma", offset=1.0 if zero_centered_weight else 0.0, residual=has_res,
                             residual_mode=mode, out=out)

    def call(f, x, weight, eps, res=None):
        y = f(x, weight, None, **_flash_kwargs(f, eps, res, mode, out, zero_centered_weight))
        return tuple(y) if res is not None else y

    name = name or "flash_attn_rms_norm" + ("_zc" if zero_centered_weight else "") + _suffix(residual, out)
    return _candidate(name, "rmsnorm", variant, _Lazy(fn or f"{FLASH_ATTN}:rms_norm_fn", call), register,
                      **_FLASH_DECLARED, devices=tuple(devices),
                      description=f"flash-attention rms_norm_fn ({variant.key()})")


def flash_attn_layer_norm(*, residual: str | None = None, bias: bool = True,
                          out_dtype: torch.dtype | str | None = None, fn: Callable | str | None = None,
                          name: str | None = None, devices: tuple[str, ...] = ("cuda",),
                          register: bool = False) -> Candidate:
    """flash-attention's ``layer_norm_fn`` (it requires a weight; ``bias=False`` passes None)."""
    has_res, mode = _residual_mode(residual)
    out = _out(out_dtype)
    variant = LayerNormVariant(weight=True, bias=bias, residual=has_res, residual_mode=mode, out=out)

    def call(f, x, weight, b, eps, res=None):
        y = f(x, weight, b, **_flash_kwargs(f, eps, res, mode, out, False))
        return tuple(y) if res is not None else y

    name = name or "flash_attn_layer_norm" + ("" if bias else "_nobias") + _suffix(residual, out)
    return _candidate(name, "layernorm", variant, _Lazy(fn or f"{FLASH_ATTN}:layer_norm_fn", call), register,
                      **_FLASH_DECLARED, devices=tuple(devices),
                      description=f"flash-attention layer_norm_fn ({variant.key()})")


# every dtype (weights are read as float32, y stored in x's dtype or out_dtype); eps must be a
# number; rows of at most 64 KB
_FLASH_DECLARED = dict(dtypes=ALL, triton=True, eps_none=False, max_n=row_limit(FLASH_ATTN_ROW_BYTES))


# ---- Unsloth ------------------------------------------------------------------------------------
def _grads(grads: tuple[str, ...] | None) -> tuple[str, ...] | None:
    return None if grads is None else tuple(grads)


def unsloth_rms_layernorm(*, gemma: bool = False, grads: tuple[str, ...] | None = ("dx",), inplace: bool = True,
                          fn: Callable | str | None = None, name: str | None = None,
                          devices: tuple[str, ...] = ("cuda",), register: bool = False) -> Candidate:
    """Unsloth's ``fast_rms_layernorm(layernorm, X, gemma)``; ``grads``: what its backward returns
    (dx only up to 2024.8; None, every gradient, for a release that returns dW too); ``inplace``:
    whether it may write dX into dY's storage (2024.8 does on both paths)."""
    variant = RMSNormVariant(casting="gemma", offset=1.0) if gemma else RMSNormVariant(casting="llama")

    def call(f, x, weight, eps):
        # it reads the weight and eps from the module it is given: a stand-in with the case's
        return f(types.SimpleNamespace(weight=weight, variance_epsilon=eps), x, gemma=gemma)

    return _candidate(name or "unsloth_rms_layernorm" + ("_gemma" if gemma else ""), "rmsnorm", variant,
                      _Lazy(fn or UNSLOTH_RMS, call), register,
                      # llama path: with fp32 weights its cast of the normalized value to the
                      # weight's dtype rounds nothing, so mixed dtypes are not llama's
                      # bf16 arithmetic on the llama path: as Liger's, bf16 on the GPU only
                      dtypes=ALL if gemma else _interpreter_safe(SAME, True), inplace=inplace, grads=_grads(grads),
                      triton=True,
                      eps_none=False, max_n=TRITON_MAX_BLOCK, devices=tuple(devices),
                      description=f"Unsloth fast_rms_layernorm(gemma={gemma})")


def unsloth_layernorm(*, grads: tuple[str, ...] | None = ("dx",), inplace: bool = True,
                      fn: Callable | str | None = None, name: str | None = None,
                      devices: tuple[str, ...] = ("cuda",), register: bool = False) -> Candidate:
    """Unsloth's ``fast_layernorm(layernorm, X)``: weight and bias, float32 inside; ``grads`` and
    ``inplace`` as for :func:`unsloth_rms_layernorm`."""

    def call(f, x, weight, bias, eps):
        return f(types.SimpleNamespace(weight=weight, bias=bias, eps=eps, elementwise_affine=True), x)

    # X.view(-1, N): a strided 3-D input cannot be viewed so
    return _candidate(name or "unsloth_layernorm", "layernorm", LayerNormVariant(), _Lazy(fn or UNSLOTH_LN, call),
                      register, dtypes=ALL, inplace=inplace, strided=False, grads=_grads(grads), triton=True,
                      eps_none=False, max_n=TRITON_MAX_BLOCK, devices=tuple(devices),
                      description="Unsloth fast_layernorm")


# ---- quack --------------------------------------------------------------------------------------
def quack_rmsnorm(*, fn: Callable | str | None = None, name: str | None = None,
                  devices: tuple[str, ...] = ("cuda",), register: bool = False) -> Candidate:
    """quack's ``rmsnorm(x, weight, eps=...)`` (CuTe DSL, GPU only): float32 inside, one rounding."""

    def call(f, x, weight, eps):
        # rows as a 2-D (M, N) tensor, which every release takes
        return f(x.reshape(-1, x.shape[-1]), weight, eps=eps).reshape(x.shape)

    # its copies are vectorized over 16-byte rows: contiguous rows only
    return _candidate(name or "quack_rmsnorm", "rmsnorm", RMSNormVariant(casting="gemma"), _Lazy(fn or QUACK, call),
                      register, dtypes=ALL, strided=False, eps_none=False, devices=tuple(devices),
                      description="quack rmsnorm (CuTe DSL)")


# ---- Liger-Kernel's functional forms ------------------------------------------------------------
def _interpreted(f: Callable, *scalars: float) -> tuple[Any, ...]:
    """Under the Triton interpreter, Liger's kernels need their float arguments (eps, and the
    offset they call ``.to`` on) as compiled Triton passes them, and libdevice's rsqrt replaced
    (normgate.kernels.adapt does the same for its modules); a stand-in is called as it is.
    Returns the scalars, then the context to call in."""
    if os.environ.get("TRITON_INTERPRET", "0") in ("", "0") or not getattr(f, "__module__", "").startswith("liger"):
        return (*scalars, contextlib.nullcontext())
    from normgate.kernels.adapt import _interpreter_libdevice, _interpreter_scalar

    return (*(_interpreter_scalar(float(v)) for v in scalars), _interpreter_libdevice("liger_kernel"))


def _interpreter_safe(dtypes: tuple[str, ...], bf16_arithmetic: bool) -> tuple[str, ...]:
    # the interpreter multiplies bf16 by bf16 on the raw bits: kernels that do bf16 arithmetic
    # (Liger's llama and none modes and fused add, Unsloth's llama path) claim bf16 on the GPU
    # only (kernels/thirdparty.py)
    from normgate.kernels.adapt import interpreter_on

    return tuple(d for d in dtypes if not d.startswith("bf16")) if bf16_arithmetic and interpreter_on() else dtypes


def _liger_dtypes(bf16_arithmetic: bool) -> tuple[str, ...]:
    return _interpreter_safe(ALL, bf16_arithmetic)


_LIGER_DECLARED = dict(triton=True, eps_none=False, max_n=TRITON_MAX_BLOCK)


def liger_rms_norm(*, casting: str = "llama", offset: float = 0.0, in_place: bool = False,
                   fn: Callable | str | None = None, name: str | None = None,
                   devices: tuple[str, ...] = ("cpu", "cuda"), register: bool = False) -> Candidate:
    """``LigerRMSNormFunction.apply(X, W, eps, offset, casting_mode, in_place)``."""

    def call(f, x, weight, eps):
        e, o, ctx = _interpreted(f, eps, offset)
        with ctx:
            return f.apply(x, weight, e, o, casting, in_place)

    name = name or f"liger_fn_rms_norm_{casting}" + ("_offset1" if offset else "") + ("_inplace" if in_place else "")
    return _candidate(name, "rmsnorm", RMSNormVariant(casting=casting, offset=offset), _Lazy(fn or LIGER_RMS, call),
                      register, dtypes=_liger_dtypes(casting != "gemma"), inplace=in_place, devices=tuple(devices),
                      **_LIGER_DECLARED,
                      description=f"Liger-Kernel LigerRMSNormFunction ({casting}, offset {offset:g})")


def liger_layer_norm(*, fn: Callable | str | None = None, name: str | None = None,
                     devices: tuple[str, ...] = ("cpu", "cuda"), register: bool = False) -> Candidate:
    """``LigerLayerNormFunction.apply(X, W, B, eps)``."""

    def call(f, x, weight, bias, eps):
        e, ctx = _interpreted(f, eps)
        with ctx:
            return f.apply(x, weight, bias, e)

    return _candidate(name or "liger_fn_layer_norm", "layernorm", LayerNormVariant(), _Lazy(fn or LIGER_LN, call),
                      register, dtypes=ALL, devices=tuple(devices), **_LIGER_DECLARED,
                      description="Liger-Kernel LigerLayerNormFunction")


def liger_fused_add_rms_norm(*, casting: str = "gemma", offset: float = 0.0, fn: Callable | str | None = None,
                             name: str | None = None, devices: tuple[str, ...] = ("cpu", "cuda"),
                             register: bool = False) -> Candidate:
    """``LigerFusedAddRMSNormFunction.apply(X, R, W, eps, offset, casting_mode, in_place)``: (y, x + r),
    the sum rounded to X's dtype and that normalized (``residual_mode="rounded"``)."""

    def call(f, x, weight, eps, residual):
        e, o, ctx = _interpreted(f, eps, offset)
        with ctx:
            return tuple(f.apply(x, residual, weight, e, o, casting, False))

    name = name or f"liger_fn_fused_add_rms_norm_{casting}" + ("_offset1" if offset else "")
    return _candidate(name, "rmsnorm", RMSNormVariant(casting=casting, offset=offset, residual=True),
                      _Lazy(fn or LIGER_ADD, call), register, dtypes=_liger_dtypes(True), devices=tuple(devices),
                      **_LIGER_DECLARED, description=f"Liger-Kernel LigerFusedAddRMSNormFunction ({casting})")


# ---- built in when installed --------------------------------------------------------------------
def _installed(package: str) -> bool:
    try:
        return importlib.util.find_spec(package) is not None
    except (ImportError, ValueError):
        return False


def _flash_attn_source() -> str:
    """The text of flash-attention's Triton layer_norm file, found without importing anything (its
    package's __init__ loads the CUDA extension; the file itself queries the GPU at import)."""
    spec = importlib.util.find_spec("flash_attn")
    for root in (spec.submodule_search_locations or []) if spec else []:
        path = os.path.join(root, "ops", "triton", "layer_norm.py")
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                return f.read()
    return ""


def _unsloth_source(name: str) -> str:
    """The text of ``unsloth/kernels/NAME.py``, found without importing ``unsloth`` (its __init__
    imports models, trainers and patches); empty when the release has no such file."""
    spec = importlib.util.find_spec("unsloth")
    for root in (spec.submodule_search_locations or []) if spec else []:
        path = os.path.join(root, "kernels", f"{name}.py")
        if os.path.isfile(path):
            with open(path, encoding="utf-8") as f:
                return f.read()
    return ""


def _unsloth_backward(src: str) -> dict[str, Any]:
    """What a release's backward returns, read from its source: a release whose backward returns a
    weight gradient (``return dX, dW`` / ``dX.view(*shape), dW, dB``) also gives dX a buffer of its
    own; one that returns only dX writes it into dY's storage (2024.8)."""
    returns_dw = bool(re.search(r"return\s+dX[^\n]*,\s*dW\b", src))
    return {"grads": None, "inplace": False} if returns_dw else {"grads": ("dx",), "inplace": True}


def _signature_has(src: str, function: str, arg: str) -> bool:
    head = src.partition(f"def {function}(")[2].partition("):")[0]
    return arg in head


def register_installed() -> list[str]:
    """Register the adapters' defaults for the packages that are installed; return their names."""
    made: list[Candidate] = []
    if _installed("flash_attn") and (src := _flash_attn_source()):
        for residual in (None, "unrounded", "fp32"):
            made.append(flash_attn_rms_norm(residual=residual))
            made.append(flash_attn_layer_norm(residual=residual))
        made.append(flash_attn_layer_norm(bias=False))
        if _signature_has(src, "rms_norm_fn", "zero_centered_weight"):  # later releases
            made.append(flash_attn_rms_norm(zero_centered_weight=True))
        if _signature_has(src, "rms_norm_fn", "out_dtype"):
            made.append(flash_attn_rms_norm(out_dtype=torch.float32))
    if _installed("unsloth") and (rms := _unsloth_source("rms_layernorm")):
        made += [unsloth_rms_layernorm(**_unsloth_backward(rms)),
                 unsloth_rms_layernorm(gemma=True, **_unsloth_backward(rms))]
        if ln := _unsloth_source("layernorm"):  # 2024.8 has none
            made.append(unsloth_layernorm(**_unsloth_backward(ln)))
    if _installed("quack"):
        made.append(quack_rmsnorm())
    if _installed("liger_kernel"):
        made += [liger_rms_norm(casting="llama"), liger_rms_norm(casting="gemma"),
                 liger_rms_norm(casting="gemma", offset=1.0), liger_rms_norm(casting="none"), liger_layer_norm(),
                 liger_fused_add_rms_norm()]
    for cand in made:
        add_candidate(cand)
    return [c.name for c in made]
