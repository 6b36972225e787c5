"""pytest plugin: check a kernel with normgate from a kernel repository's own tests.

Installed with normgate (entry point ``pytest11``), so it is loaded by every pytest run on the
machine: it imports nothing heavy until a test asks for one of its fixtures.

    def test_my_rmsnorm(normgate_check):
        normgate_check(my_module)               # an nn.Module (read by normgate.adapt) or a Candidate

Every failing check becomes one ordinary pytest failure listing each failing case with the command
that replays it (``pytest NODEID --normgate-replay KEY``). Options: ``--normgate-profile
dev|ci|thorough`` (how many cases; default ``ci`` when the ``CI`` environment variable is set, else
``dev``; also ``NORMGATE_PROFILE``), ``--normgate-device``, ``--normgate-replay KEY``,
``--normgate-pin-gpu auto|off``. Under pytest-xdist each worker is pinned to one GPU
(``CUDA_VISIBLE_DEVICES``, worker number modulo the GPU count) before anything touches CUDA.
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from .names import CHECKS


@dataclass(frozen=True)
class CheckProfile:
    examples: int  # accuracy cases per kernel and dtype; the other checks get a share
    checks: tuple[str, ...]


ALL_CHECKS = CHECKS
PROFILES = {
    "dev": CheckProfile(8, ALL_CHECKS),
    "ci": CheckProfile(30, ALL_CHECKS),
    "thorough": CheckProfile(300, ALL_CHECKS),
}


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("normgate", "normgate kernel checks")
    g.addoption("--normgate-profile", choices=tuple(PROFILES), default=None,
                help="how hard normgate_check searches: dev (8 cases), ci (30), thorough (300) per kernel and "
                     "dtype; default: $NORMGATE_PROFILE, else ci when $CI is set, else dev")
    g.addoption("--normgate-device", default=None, help="cpu or cuda (default: cuda when available)")
    g.addoption("--normgate-replay", default=None, metavar="KEY",
                help="run only this KERNEL@CHECK:CASE, as printed by a normgate_check failure")
    g.addoption("--normgate-pin-gpu", choices=("auto", "off"), default="auto",
                help="under pytest-xdist, give each worker one GPU (default auto)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "normgate: a test that checks a kernel with normgate")
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker and config.getoption("normgate_pin_gpu", "auto") == "auto":
        pin_gpu(worker, os.environ)


# ---- GPU pinning under xdist ----------------------------------------------------------------------
def visible_gpus(env: dict[str, str] | os._Environ, dev: Path = Path("/dev")) -> list[str]:
    """GPU ids this process may use, without importing torch (CUDA must not be touched yet)."""
    spec = env.get("CUDA_VISIBLE_DEVICES")
    if spec is not None:
        ids = [d.strip() for d in spec.split(",") if d.strip()]
        # CUDA stops at the first invalid id ("-1" hides every GPU)
        return ids[:next((i for i, d in enumerate(ids) if d.startswith("-")), len(ids))]
    return sorted((p.name[len("nvidia"):] for p in dev.glob("nvidia[0-9]*")), key=int)


def pin_gpu(worker: str, env: dict[str, str] | os._Environ, dev: Path = Path("/dev")) -> str | None:
    """Pin xdist worker ``gwN`` to GPU ``N mod count``; returns the id, None without GPUs."""
    gpus = visible_gpus(env, dev)
    if not gpus:
        return None
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        import warnings

        warnings.warn("normgate: CUDA was initialized before the plugin could pin this xdist worker's GPU; "
                      "every worker shares the default GPU", stacklevel=1)
        return None
    index = int(re.sub(r"\D", "", worker) or 0) % len(gpus)
    env["CUDA_VISIBLE_DEVICES"] = gpus[index]
    return gpus[index]


# ---- the fixture --------------------------------------------------------------------------------
def profile_name(config: pytest.Config) -> str:
    name = config.getoption("normgate_profile") or os.environ.get("NORMGATE_PROFILE")
    if name is None:
        name = "ci" if os.environ.get("CI") else "dev"
    if name not in PROFILES:
        raise pytest.UsageError(f"NORMGATE_PROFILE={name!r}: expected one of {', '.join(PROFILES)}")
    return name


@dataclass
class Outcome:
    """What one ``normgate_check`` call ran: its result and task lines, and the failing results."""

    kernel: str
    lines: list[dict] = field(default_factory=list)

    @property
    def failures(self) -> list[dict]:
        return [r for r in self.lines if r.get("type") == "result" and r["verdict"] in ("fail", "error")]

    def count(self, verdict: str) -> int:
        return sum(1 for r in self.lines if r.get("type") == "result" and r["verdict"] == verdict)


class Checker:
    def __init__(self, request: pytest.FixtureRequest):
        self.request = request
        self.config = request.config

    def __call__(self, kernel: Any, *, dtypes: tuple[str, ...] | None = None, checks: tuple[str, ...] | None = None,
                 examples: int | None = None, device: str | None = None, seed: int = 0,
                 **adapt_overrides: Any) -> Outcome:
        from normgate.candidates import Candidate

        if isinstance(kernel, Candidate):
            if adapt_overrides:
                raise TypeError(f"adapt overrides {sorted(adapt_overrides)} given with a Candidate")
            cand = kernel
        else:
            import normgate

            # the adapter is an op family's (normgate.api entry points), not the core's
            cand = normgate.adapt(kernel, **adapt_overrides)
        device = device or self.config.getoption("normgate_device") or _default_device()
        if not cand.supports(device):
            pytest.skip(f"{cand.name} does not run on {device} (devices {', '.join(cand.devices)})")
        replay = self.config.getoption("normgate_replay")
        with _registered(cand) as reg, _check_memory():
            self.external = reg.prev is cand  # found by name in a fresh process: `normgate replay` works
            if replay:
                return self._replay(cand, replay, device)
            prof = PROFILES[profile_name(self.config)]
            return self._run(cand, dtypes or cand.dtypes, checks or prof.checks, examples or prof.examples, device,
                             seed)

    def _run(self, cand, dtypes, checks, examples, device, seed) -> Outcome:
        from normgate.checks import Context, budget
        from normgate.runner import Task, interpreter_on
        from normgate.session import run_in_process

        ctx = Context(device=device, interpreter=interpreter_on(), eager_opinion=False)
        out = Outcome(cand.name)
        run_in_process([Task(cand.name, dtype, check, budget(check, examples), seed)
                        for dtype in dtypes for check in checks], ctx, out.lines.append)
        if out.failures:
            pytest.fail(self._message(cand, out.failures), pytrace=False)
        return out

    def _replay(self, cand, key: str, device: str) -> Outcome:
        from normgate.case import ReplayKey
        from normgate.checks import ALL, Context
        from normgate.op import get_op
        from normgate.runner import Task, interpreter_on, result_line

        try:
            rk = ReplayKey.parse(key)
        except ValueError as e:
            raise pytest.UsageError(f"--normgate-replay: {e}") from None
        out = Outcome(cand.name)
        if rk.kernel != cand.name:
            return out  # another normgate_check call of this test is the one to replay
        if rk.check not in ALL:
            raise pytest.UsageError(f"--normgate-replay: unknown check {rk.check!r}; known: {', '.join(ALL)}")
        ctx = Context(device=device, interpreter=interpreter_on())
        res = ALL[rk.check](cand, get_op(cand.op), rk.case, ctx)
        task = Task(cand.name, rk.case.dtype, rk.check, 1)
        out.lines.append(result_line(task, cand, rk.case, res, 0, device))
        if out.failures:
            pytest.fail(self._message(cand, out.failures, replayed=True), pytrace=False)
        return out

    def _message(self, cand, failures: list[dict], replayed: bool = False) -> str:
        from normgate.case import ReplayKey

        nodeid = self.request.node.nodeid
        head = f"normgate: {cand.name} ({cand.op}, {cand.variant.key()}) failed {len(failures)} check(s)"
        lines = [head + (" on replay" if replayed else "")]
        for r in failures:
            key = str(ReplayKey(r["kernel"], r["check"], _case(r["case"])))
            lines.append(f"- {r['check']} {r['dtype']}: {r['verdict']}: {r['reason']}")
            lines.append(f"  case {r['case']}")
            lines.append(f"  replay: pytest {shlex.quote(nodeid)} --normgate-replay {shlex.quote(key)}")
            if self.external and r.get("replay"):
                lines.append(f"      or: {r['replay']}")
        return "\n".join(lines)


def _case(key: str):
    from normgate.case import Case

    return Case.from_key(key)


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class _registered:
    """The runner finds kernels by name: register the candidate for the duration of the check,
    and put back whatever had that name before."""

    def __init__(self, cand):
        self.cand = cand

    def __enter__(self):
        from normgate import candidates

        candidates.registry()  # load the built-ins first, so they cannot replace it later
        self.prev = candidates._REGISTRY.get(self.cand.name)
        candidates._REGISTRY[self.cand.name] = self.cand
        return self

    def __exit__(self, *exc):
        from normgate import candidates

        if self.prev is None:
            candidates._REGISTRY.pop(self.cand.name, None)
        else:
            candidates._REGISTRY[self.cand.name] = self.prev
        return False


class _check_memory:
    """``torch.empty`` filled with NaN while the checks run (the poisoned and accuracy checks rely
    on it), restored afterwards so the rest of the test session is unaffected."""

    def __enter__(self):
        import torch

        from normgate import memory

        self.prev = (torch.are_deterministic_algorithms_enabled(),
                     torch.is_deterministic_algorithms_warn_only_enabled(),
                     torch.utils.deterministic.fill_uninitialized_memory)
        memory.enable_uninitialized_fill()
        return self

    def __exit__(self, *exc):
        import torch

        enabled, warn_only, fill = self.prev
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
        torch.utils.deterministic.fill_uninitialized_memory = fill
        return False


@pytest.fixture
def normgate_check(request: pytest.FixtureRequest) -> Checker:
    """``normgate_check(kernel, dtypes=..., checks=..., examples=..., device=..., **adapt_overrides)``:
    run normgate's checks on ``kernel`` (a Candidate, or a module or function for normgate.adapt);
    any failure fails the test with the replay command of each failing case."""
    return Checker(request)


@pytest.fixture
def normgate_bench(request: pytest.FixtureRequest):
    """Benchmark a kernel with pytest-benchmark, recording what ``normgate report --bench`` reads
    (see normgate.benchmark.NormBench)."""
    from normgate.benchmark import NormBench

    return NormBench(request.getfixturevalue("benchmark"))
