"""Composable pieces for drawing cases, and the value regimes that turn a case into tensors.

Every piece shrinks towards the plainest input: regimes towards ``normal``, sizes towards 1, seeds
towards 0, so a failure found on a 3x1031 bf16 row of outliers shrinks to the smallest case that
still fails. Regimes are named in the case key; tensors come from a seeded ``torch.Generator``.
"""

from __future__ import annotations

import math
import random

import torch
from hypothesis import strategies as st

from normgate import dtypes
from normgate.op import Profile

# Activation regimes. Order matters for shrinking: earlier is simpler.
X_REGIMES = (
    "normal", "zeros", "zero_row", "tiny", "tinier", "huge", "constant", "outlier",
    "cancellation", "mixed_scale",
)
#: a probe past the edge of the variant's claimed domain; failures there are range limits
BEYOND = "beyond"
DY_REGIMES = ("normal", "zeros", "tiny", "huge")
W_REGIMES = ("normal", "ones", "zeros", "negative", "large", "small", "cancel")
EPS_VALUES = (1e-6, 1e-5, 1e-2, 0.1)


SMALL = (1, 2, 3, 4, 5, 7, 8, 16, 17, 31, 64, 127, 128)
SMALL_POW2 = (2, 4, 8, 16, 64, 128)
SMALL_ODD = (3, 5, 7, 17, 31, 127)


def widths(profile: Profile, seed: int) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """A task's few row widths, in three groups drawn equally often, as the free draw's three are:
    small (N = 1, a power of two, an odd non-power of two), mid (an odd width and a multiple of 16
    that is no power of two, up to the profile's max_n) and one past the usual block sizes.

    Six widths are six block sizes at most for a kernel with ``BLOCK = next_power_of_2(N)``, and
    three of them are small, cheap to compile; every case class a width stands for is still in
    every task. Each group is sorted: shrinking goes towards the first, the smallest."""
    rng = random.Random(seed)
    small = tuple(sorted({1, rng.choice(SMALL_POW2), rng.choice(SMALL_ODD)}))
    hi = profile.max_n
    odd = rng.randrange(9, hi + 1, 2)
    sixteens = [16 * k for k in range(3, hi // 16 + 1) if k & (k - 1)] or [16]
    mid = tuple(sorted({odd, rng.choice(sixteens)}))
    return small, mid, (rng.choice(profile.big_n),)


def rows_and_n(profile: Profile) -> st.SearchStrategy[tuple[int, int]]:
    """(M, N): tiny sizes first, then anything up to the profile's limits, then sizes above the
    usual block sizes; with ``profile.widths_seed``, N from that task's few widths (:func:`widths`)
    and M as freely as ever. M * N is capped so one case stays cheap."""
    small = st.sampled_from(SMALL)
    m = st.one_of(small, st.integers(1, profile.max_rows))
    if profile.widths_seed is not None:
        n = st.one_of(*(st.sampled_from(group) for group in widths(profile, profile.widths_seed)))
    else:
        n = st.one_of(small, st.integers(1, profile.max_n), st.sampled_from(profile.big_n))
    cap = profile.max_rows * profile.max_n
    return st.tuples(m, n).map(lambda mn: (max(1, min(mn[0], cap // mn[1])), mn[1]))


@st.composite
def shapes(draw, profile: Profile) -> tuple[int, ...]:
    """2-D (M, N) mostly; 3-D (B, T, N) now and then, since kernels flatten leading dims."""
    m, n = draw(rows_and_n(profile))
    if m > 1 and draw(st.booleans()):
        b = draw(st.sampled_from([d for d in (2, 3, 4) if m % d == 0] or [1]))
        return (b, m // b, n)
    return (m, n)


def fill(regime: str, shape: tuple[int, ...], dtype: torch.dtype, gen: torch.Generator,
         limit: float, beyond: float) -> torch.Tensor:
    """Float64 values of one regime, on the generator's device (callers round to the dtype).

    ``limit`` is the largest magnitude inside the variant's domain, ``beyond`` the magnitude of
    the probe past it.
    """
    n = shape[-1]
    rows = math.prod(shape[:-1])
    on = dict(dtype=torch.float64, device=gen.device)

    def randn(*s):
        return torch.randn(*s, generator=gen, **on)

    def magnitudes(scale):
        # |v| in [scale/2, scale] with random signs: the largest element is known exactly.
        sign = torch.randint(0, 2, (rows, n), generator=gen, device=gen.device).to(torch.float64) * 2 - 1
        return sign * scale * (0.5 + 0.5 * torch.rand(rows, n, generator=gen, **on))

    if regime == "normal":
        v = randn(rows, n)
    elif regime == "zeros":
        v = torch.zeros(rows, n, **on)
    elif regime == "zero_row":
        v = randn(rows, n)
        v[int(torch.randint(0, rows, (1,), generator=gen, device=gen.device))] = 0.0
    elif regime == "tiny":
        v = randn(rows, n) * 1e-4
    elif regime == "tinier":
        v = randn(rows, n) * 1e-6
    elif regime == "huge":
        # up to the edge of the domain: past 256, x * x overflows fp16
        v = magnitudes(limit)
    elif regime == BEYOND:
        v = magnitudes(beyond)
    elif regime == "constant":
        v = randn(rows, 1).expand(rows, n).clone()
    elif regime == "outlier":
        v = randn(rows, n)
        cols = torch.randint(0, n, (rows,), generator=gen, device=gen.device)
        sign = torch.rand(rows, generator=gen, **on).round() * 2 - 1
        v[torch.arange(rows, device=gen.device), cols] = sign * min(1e3, limit)
    elif regime == "cancellation":
        # A large offset with a spread of a few units in the last place of the dtype: x - mean
        # cancels almost every bit (the LayerNorm variance's hard case).
        size = min(1e3, limit / 2) * (1 + torch.rand(rows, 1, generator=gen, **on))
        offset = randn(rows, 1).sign() * size
        v = offset * (1 + 8 * dtypes.unit_roundoff(dtype) * randn(rows, n))
    elif regime == "mixed_scale":
        v = randn(rows, n) * torch.pow(10.0, torch.empty(rows, 1, **on).uniform_(-5, 2, generator=gen))
    else:
        raise ValueError(f"unknown activation regime {regime!r}")
    bound = beyond if regime == BEYOND else limit
    return v.clamp(-bound, bound).reshape(shape)


def fill_grad(regime: str, shape: tuple[int, ...], dtype: torch.dtype, gen: torch.Generator) -> torch.Tensor:
    v = torch.randn(*shape, generator=gen, dtype=torch.float64, device=gen.device)
    if regime == "normal":
        return v
    if regime == "zeros":
        return torch.zeros_like(v)
    if regime == "tiny":
        return v * 1e-4
    if regime == "huge":
        return v * (1e3 if dtype == torch.float16 else 1e8)
    raise ValueError(f"unknown gradient regime {regime!r}")


def fill_param(regime: str, n: int, gen: torch.Generator, offset: float = 0.0) -> torch.Tensor:
    v = torch.randn(n, generator=gen, dtype=torch.float64)
    if regime == "normal":
        return v
    if regime == "ones":
        return torch.ones(n, dtype=torch.float64) - offset
    if regime == "zeros":
        return torch.zeros(n, dtype=torch.float64)
    if regime == "negative":
        return -(0.5 + v.abs())
    if regime == "large":
        return v * 100
    if regime == "small":
        return v * 1e-3
    if regime == "cancel":
        # offset + w == 0 exactly: the output is all zeros whatever x is
        return torch.full((n,), -offset, dtype=torch.float64)
    raise ValueError(f"unknown parameter regime {regime!r}")


def generator(seed: int, stream: int, device: str = "cpu") -> torch.Generator:
    """A generator per (case seed, tensor role): one tensor's values never depend on another's
    shape, so shrinking one role leaves the others' bits alone.

    Row-sized tensors are drawn on the device that checks them. The CPU's generator costs about
    45 ns per float64 element on one core (1.4 s for one 4096 x 8192 tensor, and a case draws two to
    four), more than the whole check takes on an H200; a GPU draws it in microseconds. A case key
    gives the same bits on the same kind of device (a replay, another worker, another shard of one
    run), not the CPU's bits on a GPU."""
    return torch.Generator(device=device).manual_seed(seed * 1_000_003 + stream)


def place(values: torch.Tensor, dtype: torch.dtype, device: str, layout: str) -> torch.Tensor:
    """Round to ``dtype`` on ``device``; with ``strided``, rows are a view into a wider buffer."""
    t = values.to(dtype)
    if layout == "strided" and t.dim() >= 2:
        n = t.shape[-1]
        buf = torch.full((*t.shape[:-1], n + 3), float("nan"), dtype=dtype, device=device)
        buf[..., :n] = t.to(device)
        return buf[..., :n]
    return t.to(device).contiguous()


def eps_values(candidate_eps_none: bool) -> st.SearchStrategy[float | None]:
    values: tuple = EPS_VALUES + ((None,) if candidate_eps_none else ())
    return st.sampled_from(values)
