"""Networks the fuzzer found that once broke pruning, kept as plain tests.

1. ``x[:, :2]`` / ``x[:, 2:]`` (or ``narrow``) on a conv's output: the bound 2 is a constant of
   the code, so pruning a channel before it made the slices select the wrong channels. Positions
   before a literal bound are now pinned; a cut in the middle (``x[:, : c // 2]``) is read as
   derived from the size and its halves are pruned alike.
2. ``view(b, n, -1, d)`` with one key/value head: the ``-1`` comes out as 1, and the constant
   ``d`` was left prunable. The literal factor next to a derived size-1 dim is now pinned.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import anyprune as tp
from anyprune.testing.fuzz import Block, NetSpec
from tests.fuzz.test_dimension_graph_fuzz import build_graph, check_network

FOUND = [
    pytest.param(NetSpec("image", (Block("conv", k=1, out=4),
                                   Block("split", at=3, how="slice", out=2, swap=False, which=1)), "mean"),
                 id="literal-slice-bound"),
    pytest.param(NetSpec("image", (Block("conv", k=1, out=6),
                                   Block("split", at=4, how="narrow", out=3, swap=True, which=0)), "flatten"),
                 id="literal-narrow-bound"),
    pytest.param(NetSpec("tokens", token_blocks=(
        Block("linear", bias=False, out=4),
        Block("attn", dim=2, dim_v=2, heads=2, kv=1, packed=False, repeat="expand", variant="matmul",
              view="heads")), head="tokens"), id="gqa-one-kv-head-view-minus1"),
]


def _every_other(n: int) -> list[int]:
    return list(range(0, n, 2))[: n - 1]


@pytest.mark.parametrize("spec", FOUND)
def test_found_networks(spec):
    checked = check_network(spec, lambda n: list(range(n)), _every_other)
    assert checked >= 1, f"{spec}: no group left to check"


class SliceNet(nn.Module):
    def __init__(self, how: str, at: int | None) -> None:
        super().__init__()
        self.how, self.at = how, at
        self.stem = nn.Conv2d(3, 6, 1)
        self.branch = nn.Conv2d(6 - (at or 3), 2, 1)
        self.head = nn.Conv2d((at or 3) + 2, 2, 1)

    def forward(self, x):
        y = self.stem(x)
        c = y.shape[1]
        at = c // 2 if self.at is None else self.at
        if self.how == "narrow":
            a, b = y.narrow(1, 0, at), y.narrow(1, at, c - at)
        else:
            a, b = y[:, :at], y[:, at:]
        return self.head(torch.cat([a, self.branch(b)], 1))


@pytest.mark.parametrize("how", ["slice", "narrow"])
def test_positions_before_a_literal_slice_bound_are_pinned(how):
    model = SliceNet(how, at=2).double().eval()
    x = torch.randn(1, 3, 4, 4, dtype=torch.float64)
    dg = build_graph(model, x)
    with pytest.raises(tp.PruningError, match=r"slice bound 2 written as a constant"):
        dg.get_pruning_group(model.stem, tp.prune_conv_out_channels, idxs=[1])
    group = dg.get_pruning_group(model.stem, tp.prune_conv_out_channels, idxs=[2, 5])
    assert {(s.fqn, s.dim) for s in group.slices} >= {("stem.weight", 0), ("branch.weight", 1)}
    res = tp.verify_group(dg, group, example_inputs=x, atol=1e-10)
    assert res.exact
    assert res.ok, res.details
    assert (model.stem.out_channels, model.branch.in_channels) == (4, 2)


def test_a_cut_in_the_middle_prunes_both_halves_alike():
    model = SliceNet("slice", at=None).double().eval()
    x = torch.randn(1, 3, 4, 4, dtype=torch.float64)
    dg = build_graph(model, x)
    group = dg.get_pruning_group(model.stem, tp.prune_conv_out_channels, idxs=[1])
    stem = next(s for s in group.slices if s.fqn == "stem.weight" and s.dim == 0)
    mask = dg.dims.atoms.removal_mask(stem.layout, group.removal())
    assert mask.nonzero().flatten().tolist() == [1, 4], "position 1 of each half goes"
    res = tp.verify_group(dg, group, example_inputs=x, atol=1e-10)
    assert res.exact
    assert res.ok, res.details
    assert (model.stem.out_channels, model.branch.in_channels, model.head.in_channels) == (4, 2, 4)


class OneKVHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.q = nn.Linear(4, 4)
        self.k = nn.Linear(4, 2)
        self.v = nn.Linear(4, 2)
        self.o = nn.Linear(4, 4)

    def forward(self, x):
        b, n, _ = x.shape
        q = self.q(x).view(b, n, -1, 2).transpose(1, 2)
        k = self.k(x).view(b, n, -1, 2).transpose(1, 2)
        v = self.v(x).view(b, n, -1, 2).transpose(1, 2)
        k = k[:, :, None].expand(-1, -1, 2, -1, -1).flatten(1, 2)
        v = v[:, :, None].expand(-1, -1, 2, -1, -1).flatten(1, 2)
        y = ((q @ k.transpose(-2, -1)).softmax(-1) @ v).transpose(1, 2).flatten(2)
        return self.o(y)


def test_head_dim_written_as_a_constant_is_pinned_with_one_kv_head():
    model = OneKVHead().double().eval()
    x = torch.randn(2, 3, 4, dtype=torch.float64)
    dg = build_graph(model, x)
    with pytest.raises(tp.PruningError, match=r"size 2 written as a constant"):
        dg.get_pruning_group(model.v, tp.prune_linear_out_channels, idxs=[0])
    # q's head_dim is k's (q @ k^T), the heads are tiled by expand: nothing in the block is prunable
    assert [g.root.fqn for g in dg.groups(root_module_types=None)] == []
