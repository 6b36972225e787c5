"""``--load`` file for ``DEVICE=cpu scripts/field-check.sh``: the field's built-in candidates (registered
from the packages on PYTHONPATH) claimed on the CPU as well, so their Triton kernels run under the
interpreter with everything else as on the GPU. A kernel that allocates on CUDA itself (Unsloth
2024.8) errors here; that says nothing about the kernel.

flash-attention enters ``torch.cuda.device(x.device.index)`` around its launches and sizes its
backward's grid by ``get_device_properties(...).multi_processor_count``: on a machine without CUDA
these become a null context and a device of ``FIELD_CPU_SMS`` multiprocessors (default 8; 2.4.3
launches one backward program per multiprocessor, 2.8.3 eight: a batch with fewer rows than
programs leaves some without a row, as on a GPU). Its kernels are autotuned, and the interpreter
has no driver to time configurations with: each autotuned kernel runs its first configuration
that the kernel's own pruning keeps."""

import contextlib
import dataclasses
import os
import types

import torch

from normgate import candidates

if not torch.cuda.is_available():
    _props = types.SimpleNamespace(multi_processor_count=int(os.environ.get("FIELD_CPU_SMS", "8")), warp_size=32)
    torch.cuda.device = lambda index: contextlib.nullcontext()
    torch.cuda.get_device_properties = lambda device=None: _props
    torch.cuda.current_device = lambda: 0

    from triton.runtime import autotuner

    _prune = autotuner.Autotuner.prune_configs
    autotuner.Autotuner.prune_configs = lambda self, kwargs: _prune(self, kwargs)[:1]

for _cand in list(candidates.registry().values()):
    if _cand.name.startswith(("flash_attn_", "unsloth_")) and "cpu" not in _cand.devices:
        # a worker runs the files a candidate names before it runs a case: this one, for the shims above
        candidates.add_candidate(dataclasses.replace(_cand, devices=("cpu", *_cand.devices),
                                                     source=candidates._current_source,
                                                     loads=tuple(candidates._current_loads)), replace=True)
