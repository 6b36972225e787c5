"""Adapting modules written elsewhere into normgate candidates (docs/integrations.md)."""

import torch

import normgate

# A known class: everything is read from the module (casting, offset, eps attribute, parameters).
rms = normgate.adapt(torch.nn.RMSNorm(4096))
print(rms.name, rms.op, rms.variant.key(), "eps=None accepted:", rms.eps_none)


class FastNorm(torch.nn.Module):
    """A module normgate does not know: it computes Gemma's RMSNorm, (1 + weight) in float32."""

    def __init__(self, hidden: int):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(hidden))
        self.eps = 1e-6

    def forward(self, x):
        h = x.float()
        return (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps) * (1 + self.weight.float())).to(x.dtype)


# Its variant is stated; eps is read from its one eps attribute, `eps`.
fast = normgate.adapt(FastNorm(4096), name="fast_norm", op="rmsnorm", casting="gemma", offset=1.0, out="input",
                      register=True)  # register=True: `normgate run --load this_file.py --kernels fast_norm`
print(fast.name, fast.variant.key())

try:
    normgate.adapt(FastNorm(4096))
except normgate.adapt.AdaptError as e:  # unstated, it is refused: what could not be read, and the override
    print(e)
