"""Random small CNNs from the hard-case blocks: the oracle holds on every group (fixed seeds).

Such networks once exposed a shuffle of a single conv's channels
whose group factor (a constant of the code) was prunable; they stay in the range.
"""

from __future__ import annotations

import random

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import anyprune as tp

KINDS = ("conv", "gconv", "dw", "res", "cat", "chunk", "shuffle", "se", "gn", "bnrelu")


class RandNet(nn.Module):
    """A random chain of hard-case blocks, ending in flatten -> linear."""

    def __init__(self, rng: random.Random) -> None:
        super().__init__()
        self.ops: list[tuple[str, int]] = []
        self.mods = nn.ModuleList()
        c = 3
        for _ in range(rng.randint(2, 7)):
            kind = rng.choice(KINDS)
            even = c % 2 == 0
            if kind == "conv":
                c = self._add("m", nn.Conv2d(c, rng.choice([4, 6, 8]), 3, padding=1))
            elif kind == "gconv" and even:
                c = self._add("m", nn.Conv2d(c, 2 * rng.choice([2, 3, 4]), 1, groups=2))
            elif kind == "dw":
                self._add("m", nn.Conv2d(c, c, 3, padding=1, groups=c))
            elif kind == "res":
                self._add("res", nn.Conv2d(c, c, 1))
            elif kind == "cat":
                c += self._add("cat", nn.Conv2d(c, rng.choice([2, 4]), 1))
            elif kind == "chunk" and even:
                self._add("chunk", nn.Conv2d(c // 2, c // 2, 1))
            elif kind == "shuffle" and even:
                self.ops.append(("shuffle", -1))
            elif kind == "se":
                h = rng.choice([2, 3])
                self._add("se", nn.Conv2d(c, h, 1))
                self.mods.append(nn.Conv2d(h, c, 1))
            elif kind == "gn" and even:
                self._add("m", nn.GroupNorm(2, c))
            elif kind == "bnrelu":
                self._add("bnrelu", nn.BatchNorm2d(c))
        self.head = nn.Linear(c * 4, 3)

    def _add(self, op: str, module: nn.Module) -> int:
        self.ops.append((op, len(self.mods)))
        self.mods.append(module)
        return getattr(module, "out_channels", 0)

    def forward(self, x):
        for op, i in self.ops:
            if op == "m":
                x = self.mods[i](x)
            elif op == "res":
                x = x + F.relu(self.mods[i](x))
            elif op == "cat":
                x = torch.cat([x, self.mods[i](x)], 1)
            elif op == "chunk":
                a, b = x.chunk(2, 1)
                x = torch.cat([a, self.mods[i](b)], 1)
            elif op == "shuffle":
                n, c, h, w = x.shape
                x = x.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)
            elif op == "se":
                gate = torch.sigmoid(self.mods[i + 1](F.relu(self.mods[i](F.adaptive_avg_pool2d(x, 1)))))
                x = x * gate
            elif op == "bnrelu":
                x = F.relu(self.mods[i](x))
        return self.head(torch.flatten(F.adaptive_avg_pool2d(x, 2), 1))


@pytest.mark.parametrize("seed", range(200))
def test_random_cnn_oracle(seed):
    rng = random.Random(seed)
    torch.manual_seed(seed)
    model = RandNet(rng).double().eval()
    for bn in model.modules():
        if isinstance(bn, nn.BatchNorm2d):
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    with torch.no_grad():
        shape = model(x).shape
    dg = tp.DependencyGraph().build_dependency(model, x)
    for g in dg.groups(root_module_types=None):
        n = g.size
        if n < 2:
            continue
        idxs = sorted(rng.sample(range(n), rng.randint(1, n - 1)))
        res = tp.verify_group(dg, g, idxs=idxs, example_inputs=x, atol=1e-9)
        assert res.shapes_match, f"seed {seed} {model.ops}: shapes changed pruning {g.root.fqn}"
        assert res.ok or not res.exact, f"seed {seed} {model.ops}: {g.root.fqn} {res.details}"
    dg.lint()
    with torch.no_grad():
        assert model(x).shape == shape
