"""One toy model per hard case: the exact group structure, and the oracle on every group."""

from __future__ import annotations

import pytest
import torch

import anyprune as tp
from anyprune.testing.models import TOY_MODELS
from tests.helpers import structure


def build(name: str, check_groups: bool = True):
    cls, shape = TOY_MODELS[name]
    model = cls().double().eval()
    x = torch.randn(*shape, dtype=torch.float64)
    return model, x, tp.DependencyGraph().build_dependency(model, x, check_groups=check_groups)


def weight_structure(dg, group):
    return {k: v for k, v in structure(dg, group).items() if k[0].endswith("weight") or k[0] == "scale"}


def find(dg, fqn: str, dim: int = 0):
    for g in dg.groups(root_module_types=None):
        if any(s.fqn == fqn and s.dim == dim for s in g.slices):
            return g
    raise AssertionError(f"no group contains {fqn} dim {dim}")


def test_residual_add_is_one_group():
    _, _, dg = build("residual")
    g = find(dg, "stem.weight")
    assert weight_structure(dg, g) == {
        ("stem.weight", 0): "identity", ("branch.weight", 0): "identity",
        ("branch.weight", 1): "identity", ("head.weight", 1): "identity",
    }


def test_concat_segments_map_back_to_producers():
    _, _, dg = build("concat")
    ga, gb = find(dg, "a.weight"), find(dg, "b.weight")
    assert ga is not gb
    assert ga.size == 6
    assert gb.size == 10
    assert weight_structure(dg, ga) == {("a.weight", 0): "identity", ("head.weight", 1): "segment"}
    # positions of b's segment start after a's 6 channels
    idx = dg.dims.atoms.index_of(next(s for s in gb.slices if s.fqn == "head.weight").layout, gb.atoms[0])
    assert idx.tolist() == [-1] * 6 + list(range(10))


def test_chunk_halves_are_pruned_alike():
    model, x, dg = build("chunk")
    g = find(dg, "stem.weight")
    assert g.size == 4
    assert weight_structure(dg, g) == {("stem.weight", 0): "tile", ("left.weight", 1): "identity",
                                       ("right.weight", 1): "identity"}
    g.prune(idxs=[1])
    assert model.stem.out_channels == 6
    assert model.left.in_channels == 3
    assert model.right.in_channels == 3
    model(x)


def test_channel_shuffle_interleaves():
    _, _, dg = build("shuffle")
    g = find(dg, "a.weight")
    assert weight_structure(dg, g) == {("a.weight", 0): "identity", ("b.weight", 0): "identity",
                                       ("head.weight", 1): "factor"}
    head = next(s for s in g.slices if s.fqn == "head.weight")
    # after the shuffle, position 2j + i comes from branch i, channel j
    assert dg.dims.atoms.index_of(head.layout, g.atoms[0]).tolist() == [0, 0, 1, 1, 2, 2, 3, 3]


def test_depthwise_conv_couples_in_and_out():
    _, _, dg = build("depthwise")
    g = find(dg, "pw.weight")
    assert weight_structure(dg, g) == {("pw.weight", 0): "identity", ("bn.weight", 0): "identity",
                                       ("dw.weight", 0): "identity", ("head.weight", 1): "identity"}


def test_grouped_conv_factors_into_groups_and_positions():
    model, x, dg = build("grouped")
    groups = {g.size: g for g in dg.groups()}
    whole, per_in, per_out = groups[4], groups[2], groups[3]
    assert weight_structure(dg, whole) == {("pw.weight", 0): "factor", ("gc.weight", 0): "factor",
                                           ("head.weight", 1): "factor"}
    assert weight_structure(dg, per_in) == {("pw.weight", 0): "factor", ("gc.weight", 1): "identity"}
    assert weight_structure(dg, per_out) == {("gc.weight", 0): "factor", ("head.weight", 1): "factor"}
    whole.prune(idxs=[1])  # drop the second of 4 conv groups
    assert (model.gc.groups, model.gc.in_channels, model.gc.out_channels) == (3, 6, 9)
    assert model(x).shape == (1, 2, 6, 6)


def test_squeeze_excite_gate_is_coupled_to_gated_tensor():
    _, _, dg = build("squeeze_excite")
    g = find(dg, "conv.weight")
    assert weight_structure(dg, g) == {("conv.weight", 0): "identity", ("fc1.weight", 1): "identity",
                                       ("fc2.weight", 0): "identity", ("head.weight", 1): "identity"}


def test_flatten_linear_blocks():
    _, _, dg = build("flatten_linear")
    g = find(dg, "conv.weight")
    fc = next(s for s in g.slices if s.fqn == "fc.weight")
    assert dg.dims.atoms.index_of(fc.layout, g.atoms[0]).tolist() == [0] * 4 + [1] * 4 + [2] * 4 + [3] * 4


def test_group_norm_groups_exact_positions_approximate():
    _, _, dg = build("group_norm")
    by_size = {g.size: g for g in dg.groups()}
    assert by_size[2].exact, "pruning whole GroupNorm groups keeps the others' statistics"
    assert not by_size[4].exact
    assert "group_norm" in by_size[4].mixing_reasons[0]


def test_in_place_add_couples_both_producers():
    _, _, dg = build("in_place")
    g = find(dg, "a.weight")
    assert weight_structure(dg, g) == {("a.weight", 0): "identity", ("b.weight", 0): "identity",
                                       ("head.weight", 1): "identity"}


def test_unwrapped_parameter_is_sliced_with_its_dim():
    model, x, dg = build("unwrapped")
    g = find(dg, "fc1.weight")
    assert weight_structure(dg, g) == {("fc1.weight", 0): "identity", ("scale", 0): "identity",
                                       ("fc2.weight", 1): "identity"}
    g.prune(idxs=[0, 5])
    assert model.scale.shape == (4,)
    assert model.fc2.in_features == 4
    model(x)


@pytest.mark.parametrize("name", list(TOY_MODELS))
def test_oracle_on_every_group(name):
    model, x, dg = build(name)
    with torch.no_grad():
        shape = model(x).shape
    checked = 0
    for g in dg.groups(root_module_types=None):
        n = g.size
        idxs = list(range(0, n, 2))[: max(1, n // 2)]
        if len(idxs) >= n:
            continue
        res = tp.verify_group(dg, g, idxs=idxs, example_inputs=x, atol=1e-10, rtol=1e-9)
        assert res.shapes_match, f"{name}: output shape changed after pruning {g!r}"
        if res.exact:
            assert res.ok, f"{name}: pruned != masked for exact {g!r}: {res.details}"
        checked += 1
    assert checked >= 1, f"{name}: no group was checked"
    dg.lint()
    with torch.no_grad():
        assert model(x).shape == shape


def test_group_norm_attributes_follow_pruning():
    model, x, dg = build("group_norm")
    by_size = {g.size: g for g in dg.groups()}
    by_size[2].prune(idxs=[0])  # one whole GroupNorm group
    assert (model.gn.num_groups, model.gn.num_channels, model.conv.out_channels) == (1, 4, 4)
    model(x)


def test_oracle_catches_a_wrong_rule(monkeypatch):
    """A rule that forgets to couple the operands of an add makes pruning break: verify must say so."""
    from anyprune.dims.rules.registry import RULES

    def forgetful_add(ctx, a, b, *args, **kwargs):
        ctx.set_output(list(ctx.layouts(a)))

    monkeypatch.setitem(RULES, torch.Tensor.add, forgetful_add)
    monkeypatch.setitem(RULES, torch.Tensor.__add__, forgetful_add)
    _, x, dg = build("residual", check_groups=False)
    g = find(dg, "stem.weight")
    assert "branch.weight" not in {s.fqn for s in g.slices if s.dim == 0}
    with pytest.raises(tp.VerificationError, match=r"no longer fits"):
        tp.verify_group(dg, g, idxs=[0], example_inputs=x)
    # the build's safety net finds the same breakage and does not offer the group at all
    _, x, dg = build("residual")
    assert "stem.weight" not in {s.fqn for g in dg.groups() for s in g.slices}


class ShuffleOneConv(torch.nn.Module):
    """A shuffle of one conv's channels: ``view(n, 2, c // 2)``: the 2 is a constant of the code."""

    def __init__(self, minus_one: bool) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 1)
        self.head = torch.nn.Conv2d(8, 2, 1)
        self.minus_one = minus_one

    def forward(self, x):
        y = self.conv(x)
        n, c, h, w = y.shape
        y = y.view(n, -1, 2, h, w) if self.minus_one else y.view(n, 2, c // 2, h, w)
        return self.head(y.transpose(1, 2).reshape(n, c, h, w))


@pytest.mark.parametrize("minus_one", [False, True])
def test_literal_view_factors_are_pinned(minus_one):
    model = ShuffleOneConv(minus_one).double().eval()
    x = torch.randn(1, 3, 4, 4, dtype=torch.float64)
    dg = tp.DependencyGraph().build_dependency(model, x)
    groups = dg.groups()
    # only the factor the code derives at run time (c // 2, or the -1) is prunable
    assert [g.size for g in groups] == [4]
    conv = next(s for s in groups[0].slices if s.fqn == "conv.weight" and s.dim == 0)
    idx = dg.dims.atoms.index_of(conv.layout, groups[0].atoms[0]).tolist()
    assert idx == ([0, 1, 2, 3, 0, 1, 2, 3] if not minus_one else [0, 0, 1, 1, 2, 2, 3, 3])
    res = tp.verify_group(dg, groups[0], idxs=[1], example_inputs=x, atol=1e-10)
    assert res.ok, res.details
