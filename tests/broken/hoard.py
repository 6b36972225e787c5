"""Allocates memory until the allocator refuses, keeping every block (a leak in a loop).

Bounded so a test never exhausts the machine: the hoard may grow by CAP, no more. On the CPU the
process's address space is capped CAP above what it uses (RLIMIT_AS, restored afterwards), on a GPU
the caching allocator's share of the card likewise. The refusal is a real one from the allocator.

A deliberately broken candidate for tests/test_isolation.py: correct on the first (1x1) case
hypothesis draws, broken on larger ones, so one run shows both a passing case and the failure.
"""

import contextlib
import os
import resource

import torch

import normgate

CAP = 64 << 20  # bytes the hoard may reach before the allocator says no
BLOCK = 4 << 20  # bytes per allocation


def _rmsnorm(x: torch.Tensor, weight: torch.Tensor, eps: float | None) -> torch.Tensor:
    eps = torch.finfo(torch.float32).eps if eps is None else eps
    h = x.float()
    return (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + eps) * weight.float()).to(x.dtype)


@contextlib.contextmanager
def _capped(device: torch.device):
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, (torch.cuda.memory_allocated(device) + CAP) / total),
                                                   device)
        try:
            yield
        finally:
            torch.cuda.set_per_process_memory_fraction(1.0, device)
            torch.cuda.empty_cache()
        return
    with open("/proc/self/statm") as f:
        used = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (used + CAP, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


@normgate.register("broken_hoard", op="rmsnorm", variant=normgate.RMSNormVariant(casting="gemma", offset=0.0),
                   dtypes=("fp32",), devices=("cpu", "cuda"))
def broken_hoard(x: torch.Tensor, weight: torch.Tensor, eps: float | None) -> torch.Tensor:
    if x.numel() > 1:
        hoard = []
        with _capped(x.device):
            while len(hoard) * BLOCK < 64 * CAP:  # the cap stops it long before this
                hoard.append(torch.ones(BLOCK, dtype=torch.uint8, device=x.device))
        raise AssertionError("the allocator never refused: the cap did not apply")
    return _rmsnorm(x, weight, eps)
