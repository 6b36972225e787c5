"""The op-agnostic core: what an op must provide for normgate to check kernels of it.

An op is a reference, a strategy and a calling convention. The harness never knows what a norm
is: it asks the op for inputs, calls the candidate through the op, runs backward through autograd,
and compares every output and gradient with the op's float64 reference under the error model in
``normgate.tolerance``.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch

if TYPE_CHECKING:
    from hypothesis.strategies import SearchStrategy

    from .candidates import Candidate
    from .case import Case, CaseField


@dataclass(frozen=True)
class Variant:
    """Base of an op's variant: the exact function a candidate claims to compute.

    A variant is one declared value (``RMSNorm(casting="gemma", offset=1.0)``); its key is stable and
    readable, and parses back with :meth:`from_key`.
    """

    def key(self) -> str:
        parts = []
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.metadata.get("key_when_set") and v == f.default:
                # a field added after keys were recorded (results, baselines, replay commands): a
                # variant that leaves it at its default keeps the key it always had
                continue
            v = int(v) if isinstance(v, bool) else v
            parts.append(f"{f.name}={v:g}" if isinstance(v, float) else f"{f.name}={v}")
        return ",".join(parts)

    @classmethod
    def from_key(cls, key: str) -> Variant:
        kinds = {f.name: f.type for f in dataclasses.fields(cls)}
        vals: dict[str, Any] = {}
        for part in filter(None, key.split(",")):
            name, _, raw = part.partition("=")
            if name not in kinds:
                raise ValueError(f"{cls.__name__} has no field {name!r} (key {key!r})")
            default = getattr(cls, name, None)
            vals[name] = (bool(int(raw)) if isinstance(default, bool)
                          else float(raw) if isinstance(default, float) else raw)
        return cls(**vals)


@dataclass
class Expected:
    """The reference for one output or gradient, with what its error bound is built from.

    value:        the exact result (float64).
    magnitude:    sum of |terms| the result is computed from, element by element (float64).
    steps:        how many roundings in the internal dtype the result accumulates along its longest
                  dependency chain (a reduction of length n counts n).
    internal:     the dtype the variant computes in.
    intermediate: relative error the variant itself mandates before the final rounding (an
                  intermediate cast to a narrower dtype; 0 when there is none).
    dtype:        the dtype the candidate must return it in.
    floor:        absolute error the mandated intermediate roundings can add where they land
                  among subnormals (relative bounds do not hold there).
    defined:      elements the variant determines; where a rounding the variant mandates overflows
                  (a composed kernel's intermediate), the result is not defined and not compared.
    """

    value: torch.Tensor
    magnitude: torch.Tensor
    steps: int
    internal: torch.dtype
    intermediate: float | torch.Tensor
    dtype: torch.dtype
    floor: float | torch.Tensor = 0.0  # absolute error of mandated roundings into subnormals
    defined: torch.Tensor | None = None  # False where a mandated intermediate overflows its dtype
    #: the items (``Op.batch``: a norm's rows) this reference covers, for a case too big for a
    #: float64 reference of every item; None: all of them
    rows: torch.Tensor | None = None
    #: how many items the whole output has, when ``rows`` samples them
    of_items: int | None = None

    def pick(self, got: torch.Tensor) -> torch.Tensor:
        """The part of a candidate's output this reference covers: the sampled items of a whole
        output, or the output itself (already the part, or not of the shape to sample from)."""
        if self.rows is None or self.of_items is None:
            return got
        per_item = self.value.numel() // max(1, len(self.rows))
        if got.numel() != self.of_items * per_item:
            return got
        return got.reshape(self.of_items, -1)[self.rows.to(got.device)]


Tensors = dict[str, torch.Tensor]


@dataclass(frozen=True)
class Claim:
    """Something a candidate of one op may declare beyond what every candidate declares (dtypes,
    devices, backward, in place, batch invariance, gradients, boundaries): a norm's "takes
    eps=None" or "rows up to this width". The op names its claims (``Op.claims``), the candidate
    states them as keywords (``register(..., max_n=4096)``), the op's case strategy reads them, and
    the declaration recorded in results and baselines carries them.

    ``check(value, candidate_name)`` returns the value as stored, or raises ValueError."""

    default: Any = None
    doc: str = ""
    check: Callable[[Any, str], Any] | None = None


@dataclass(frozen=True)
class Scaling:
    """An exact homogeneity of an op: with ``inputs`` multiplied by 2**k, each output ``o`` in
    ``powers`` is its old value times 2**(k * powers[o]), bit for bit, wherever no value the
    computation depends on overflows or turns subnormal (a power of two commutes with rounding in
    the normal range)."""

    name: str
    inputs: tuple[str, ...]
    powers: Mapping[str, int]


@dataclass
class Identity:
    """One reference-free identity evaluated on a candidate's outputs: ``ratio`` is the largest
    |measured - expected| / bound over the rows it covers (<= 1: it holds)."""

    name: str
    ratio: float
    detail: str = ""


class Op(ABC):
    """What normgate needs to know about an op. Subclass, then :func:`register_op` an instance."""

    name: ClassVar[str]
    variant_type: ClassVar[type[Variant]]
    #: inputs a candidate is differentiated with respect to, when the variant uses them
    differentiable: ClassVar[tuple[str, ...]]
    #: what its candidates may claim beyond the core's declarations (``Claim``), by keyword; None:
    #: not declared, the keywords a candidate gives are kept as given, unchecked
    claims: ClassVar[Mapping[str, Claim] | None] = None
    #: the gradients a backward can provide, by the names the checks give them, in order; other
    #: names they go by; those every backward must provide
    gradients: ClassVar[tuple[str, ...]] = ()
    gradient_aliases: ClassVar[Mapping[str, str]] = {}
    required_gradients: ClassVar[tuple[str, ...]] = ()
    #: the fields its cases carry besides op, shape, dtype and seed (``normgate.case.CaseField``)
    case_fields: ClassVar[tuple[CaseField, ...] | None] = None
    #: the case field whose value regime results and reports group by ("" for none)
    regime_field: ClassVar[str] = ""
    #: the axes a candidate may declare dispatch boundaries on (``register(boundaries={...})``);
    #: "m", the batch, is the core's (harness/boundaries.py)
    boundary_axes: ClassVar[tuple[str, ...]] = ("m",)

    @abstractmethod
    def make_inputs(self, case: Case, variant: Variant, device: str) -> Tensors:
        """Inputs and upstream gradients (named ``grad:<output>``), from the case's seed."""

    @abstractmethod
    def call(self, fn: Callable, inputs: Tensors, case: Case, variant: Variant) -> Tensors:
        """Call a candidate with its calling convention; return its outputs by name."""

    @abstractmethod
    def reference(self, inputs: Mapping[str, torch.Tensor], case: Case, variant: Variant,
                  backward: bool) -> dict[str, Expected]:
        """Expected outputs (and gradients ``d<input>`` when ``backward``)."""

    @abstractmethod
    def cases(self, candidate: Candidate, dtype: str, profile: Profile) -> SearchStrategy[Case]:
        """A hypothesis strategy of cases this candidate claims to handle."""

    @abstractmethod
    def eager(self, variant: Variant) -> Callable:
        """PyTorch eager computing ``variant``, for the report's "no worse than eager" line."""

    @abstractmethod
    def output_dtype(self, variant: Variant, case: Case) -> torch.dtype:
        """The dtype the variant's outputs must have (its stated mixed-dtype rule)."""

    def domain(self, variant: Variant, case: Case, full_range: bool) -> float:
        """Largest input magnitude inside the variant's domain (inf: everything finite)."""
        return float("inf")

    # ---- shapes: what the checks slice and compare, in the op's own vocabulary ----------------
    # An item is the unit whose outputs must not depend on the rest of the batch: a norm's row, a
    # GroupNorm's sample. The batch-invariance check and the dispatch boundaries in M run items
    # in batches of other sizes; the accuracy and contract checks ask for shapes.
    # (Not abstract: an op that has not said yet can be imported and checked for accuracy; the
    # check that needs the missing method reports an error naming it.)
    def batch(self, case: Case) -> int:
        """How many items the case holds."""
        raise NotImplementedError(f"{type(self).__name__}.batch")

    def item_elements(self, case: Case) -> int:
        """Elements of the input per item (caps the batches the boundaries build)."""
        raise NotImplementedError(f"{type(self).__name__}.item_elements")

    def with_batch(self, case: Case, items: int) -> Case:
        """The same case with ``items`` items."""
        raise NotImplementedError(f"{type(self).__name__}.with_batch")

    def take(self, inputs: Tensors, case: Case, lo: int, hi: int) -> Tensors:
        """The inputs (and upstream gradients) of items ``lo .. hi - 1``; the rest unchanged."""
        raise NotImplementedError(f"{type(self).__name__}.take")

    def items(self, name: str, t: torch.Tensor, case: Case) -> torch.Tensor | None:
        """Output or gradient ``name`` as (items, -1), or None when it is not one per item (a
        parameter's gradient) or not of the case's shape (the contract check's to judge)."""
        raise NotImplementedError(f"{type(self).__name__}.items")

    def output_shape(self, name: str, inputs: Mapping[str, torch.Tensor], case: Case) -> tuple[int, ...]:
        """The shape output or gradient ``name`` must have."""
        raise NotImplementedError(f"{type(self).__name__}.output_shape")

    # ---- reference-free identities (the ``identities`` check); an op without any gets a skip ----
    def identities(self, inputs: Mapping[str, torch.Tensor], got: Tensors, case: Case, variant: Variant,
                   rounding: float) -> list[Identity]:
        """Identities the candidate's outputs must satisfy on these inputs, each with its bound
        (``rounding``: the final rounding allowance, 0.5 ULP or 1 where stores truncate)."""
        return []

    def scalings(self, variant: Variant, case: Case) -> list[Scaling]:
        """Exact homogeneities beyond the one every op has (gradients are linear in the upstream
        gradient, which the check applies by itself)."""
        return []

    def scaling_undecidable(self, variant: Variant, case: Case) -> str:
        """Why exact scaling cannot be judged for this case (a narrow intermediate dtype whose
        subnormals break it), or "" when it can."""
        return ""


@dataclass(frozen=True)
class Profile:
    """How big the generated cases get: small under the CPU interpreter, large on a GPU.

    ``widths_seed``: when set, a task's cases take their row width N from a few widths chosen from
    this seed (the same for every check of one kernel and dtype) instead of a new one almost every
    case. A JIT-compiled kernel builds a binary per constexpr block size and per integer
    specialization of N and the strides; drawing a new N per case made a user's Triton kernel spend
    its run compiling (4-17 cases in 300 s on an H200)."""

    name: str
    max_rows: int
    max_n: int
    big_n: tuple[int, ...]  # sizes above the usual block sizes, drawn now and then
    widths_seed: int | None = None

    @property
    def elements(self) -> int:
        """The largest case in elements: what an op whose cases are not rows x N sizes them by."""
        return self.max_rows * self.max_n

    @classmethod
    def for_device(cls, device: str) -> Profile:
        return GPU_PROFILE if device.startswith("cuda") else CPU_PROFILE

    def for_widths(self, seed: int) -> Profile:
        return dataclasses.replace(self, widths_seed=seed)


CPU_PROFILE = Profile("cpu", max_rows=160, max_n=160, big_n=(257, 1000, 1031))
GPU_PROFILE = Profile("gpu", max_rows=4096, max_n=8192, big_n=(16384, 32768, 65536, 65537))

_OPS: dict[str, Op] = {}
_ops_loaded = False


def register_op(op: Op) -> Op:
    _OPS[op.name] = op
    return op


def unregister_op(name: str) -> None:
    _OPS.pop(name, None)


def load_ops() -> None:
    """Register the ops of the ``normgate.ops`` entry points (harness/entrypoints.py), once."""
    global _ops_loaded
    if _ops_loaded:
        return
    _ops_loaded = True
    from . import entrypoints as registry

    def use(obj: object, ep) -> None:
        if isinstance(obj, Op):
            register_op(obj)
        elif isinstance(obj, type) and issubclass(obj, Op):
            register_op(obj())
        else:
            registry.call_unless_module(obj)

    registry.load(registry.OPS_GROUP, use)


def get_op(name: str) -> Op:
    load_ops()
    try:
        return _OPS[name]
    except KeyError:
        raise KeyError(f"unknown op {name!r}; known ops: {', '.join(sorted(_OPS)) or 'none'}") from None


def all_ops() -> dict[str, Op]:
    load_ops()
    return dict(_OPS)


def op_of(variant: Variant) -> Op:
    """The op a variant belongs to: the one whose ``variant_type`` it is (a candidate's op follows
    from the variant it claims, so the two cannot disagree)."""
    load_ops()
    for op in _OPS.values():
        if type(variant) is op.variant_type:
            return op
    for op in _OPS.values():
        if isinstance(variant, op.variant_type):
            return op
    raise TypeError(f"{type(variant).__name__} is the variant of no registered op; known ops: "
                    f"{', '.join(f'{n} ({o.variant_type.__name__})' for n, o in sorted(_OPS.items())) or 'none'}")
