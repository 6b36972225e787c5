"""Small stand-ins with the signatures of the field's function kernels (flash-attention, Unsloth,
quack, Liger-Kernel), written for normgate's CPU tests in plain PyTorch: the real packages need a
GPU or are not installed here. Each computes what the real kernel computes (its residual handling,
its casts, the gradients its backward returns); none is the package's code."""
