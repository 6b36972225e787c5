"""Bitwise comparison and memory poisoning for the determinism checks.

Two ways to make a read of memory nobody wrote visible:
- ``fill_uninitialized_memory``: with deterministic algorithms on, PyTorch fills every
  ``torch.empty`` with NaN (floats) or the largest value (ints). A kernel that reads a partial-sum
  buffer some programs never wrote then returns NaN every time: the accuracy check sees it.
- poisoning: the ``poisoned`` check turns that off and, before each run, fills freed memory in the
  allocator with a different byte pattern, so leftovers differ from run to run and the outputs'
  bits with them. On the GPU, leftovers are otherwise often zeros or stale copies of the right
  values, and such a bug passes most runs.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import warnings

import torch

PATTERNS = (0xFF, 0x7F, 0x42, 0xA5)  # NaN, huge, ~48.6 (fp32), negative mixed


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bit-for-bit equality (NaNs compare by their bits, -0.0 differs from 0.0)."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    return bool(torch.equal(_bits(a), _bits(b)))


def differing(a: torch.Tensor, b: torch.Tensor) -> int:
    if a.shape != b.shape or a.dtype != b.dtype:
        return max(a.numel(), b.numel())
    return int((_bits(a) != _bits(b)).sum())


def digest(tensors: dict[str, torch.Tensor]) -> str:
    """A short hash of every tensor's bits, by name: the same digest means the same bits."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        h.update(name.encode())
        # the CPU copy must outlive the view of its bytes: a temporary freed inside _raw_bytes left
        # the view on freed memory, and on an H200 the repeat check's worker died of SIGSEGV on
        # cases big enough for the copy to be unmapped when freed (3,745 x 7,149 and up)
        cpu = _bits(tensors[name]).cpu().contiguous()
        h.update(_raw_bytes(cpu))
        del cpu
    return h.hexdigest()[:16]


def _raw_bytes(t: torch.Tensor) -> memoryview:
    """A contiguous CPU tensor's bytes, without a copy and without numpy (which a GPU install may
    lack): a ctypes view of its storage, valid while ``t`` lives."""
    n = t.numel() * t.element_size()
    return memoryview((ctypes.c_char * n).from_address(t.data_ptr())) if n else memoryview(b"")


def bit_view(t: torch.Tensor) -> torch.Tensor:
    """The tensor's bits as integers of its element size (a contiguous copy where needed)."""
    return _bits(t)


def _bits(t: torch.Tensor) -> torch.Tensor:
    t = t.detach().contiguous()
    view = {8: torch.int64, 4: torch.int32, 2: torch.int16, 1: torch.uint8}[t.element_size()]
    return t.view(view)


def enable_uninitialized_fill() -> None:
    """Make ``torch.empty`` deterministic garbage (NaN) for the whole process."""
    warnings.filterwarnings("ignore", message=".*deterministic.*")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = True


@contextlib.contextmanager
def uninitialized_left_as_is():
    prev = torch.utils.deterministic.fill_uninitialized_memory
    torch.utils.deterministic.fill_uninitialized_memory = False
    try:
        yield
    finally:
        torch.utils.deterministic.fill_uninitialized_memory = prev


def poison(device: str, run: int) -> None:
    """Fill freed allocator memory with pattern ``run``: allocate blocks of many sizes, write the
    pattern, free them. The caching allocator (CUDA) keeps them and hands them out again; on the
    CPU the C allocator reuses small and medium blocks."""
    pattern = PATTERNS[run % len(PATTERNS)]
    total_bytes = (64 << 20) if device.startswith("cuda") else (4 << 20)
    blocks = []
    size, used = 512, 0
    while used < total_bytes:
        for _ in range(4):
            blocks.append(torch.full((size,), pattern, dtype=torch.uint8, device=device))
            used += size
        size = min(size * 2, 16 << 20)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    del blocks


def clone(t: torch.Tensor) -> torch.Tensor:
    """A copy with the same strides, so a strided layout survives (``clone`` may compact it)."""
    out = torch.empty_strided(t.size(), t.stride(), dtype=t.dtype, device=t.device)
    return out.copy_(t)
