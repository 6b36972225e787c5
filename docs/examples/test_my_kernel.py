"""A kernel repository's own test, checking its kernel with normgate (docs/integrations.md).

Run it with ``pytest docs/examples/test_my_kernel.py --normgate-profile dev``.
"""

import torch

import normgate


class MyRMSNorm(torch.nn.Module):
    """The module under test: Llama-style RMSNorm, eps in ``variance_epsilon``."""

    def __init__(self, hidden: int, eps: float = 1e-6):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(hidden))
        self.variance_epsilon = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.variance_epsilon)
        return self.weight * h.to(x.dtype)


def test_my_rmsnorm(normgate_check):
    # the class is not one normgate knows, so the variant is stated; eps is read from the module
    normgate_check(MyRMSNorm(64), name="my_rmsnorm", op="rmsnorm", casting="llama", offset=0.0, out="promote")


def test_torch_rmsnorm(normgate_check):
    # torch.nn.RMSNorm is known: everything is read from the module
    normgate_check(torch.nn.RMSNorm(64), dtypes=("bf16", "fp32"), checks=("accuracy", "repeat"))


def test_a_candidate(normgate_check):
    cand = normgate.adapt(torch.nn.RMSNorm(64, eps=None), name="rmsnorm_default_eps", dtypes=("fp32",))
    assert cand.eps_none  # cases include eps=None, PyTorch's machine-epsilon default
    outcome = normgate_check(cand, checks=("accuracy",))
    assert outcome.count("pass") > 0
