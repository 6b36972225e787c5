"""How worker processes share one GPU's memory: the policy the pool sets up, the runner applies
once per process and the checks lift for a case's last try after an out-of-memory error."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

# Set by the pool in each GPU worker: how many workers share that worker's GPU.
WORKERS_PER_GPU_ENV = "NORMGATE_WORKERS_PER_GPU"
# The part of a shared GPU's memory the workers split evenly; the rest is their CUDA contexts.
GPU_MEMORY_SHARED = 0.9


def workers_per_gpu() -> int:
    """How many workers share this process's GPU (1 outside a pool)."""
    return int(os.environ.get(WORKERS_PER_GPU_ENV, "1") or 1)


def shares_a_gpu(device: str) -> bool:
    import torch

    return device.startswith("cuda") and workers_per_gpu() > 1 and torch.cuda.is_available()


@contextlib.contextmanager
def beyond_the_share(device: str) -> Iterator[None]:
    """For a case too big for one worker's share of the GPU (checks.guarded's last try): whatever
    memory the GPU has free, then the share again, with the cache returned. The share guards the
    workers against one another's caches; it is not meant to cap what a single case may use."""
    if not shares_a_gpu(device):
        yield
        return
    import torch

    torch.cuda.set_per_process_memory_fraction(1.0)
    try:
        yield
    finally:
        torch.cuda.empty_cache()
        torch.cuda.set_per_process_memory_fraction(GPU_MEMORY_SHARED / workers_per_gpu())
