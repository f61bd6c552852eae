"""The seed-compatible low-level API on resnet18, and its errors."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

import anyprune as tp
from anyprune.apply.transaction import Transaction
from tests.helpers import assert_same_state, state


@pytest.fixture
def resnet():
    model = torchvision.models.resnet18().eval()
    x = torch.randn(1, 3, 64, 64)
    return model, x, tp.DependencyGraph().build_dependency(model, example_inputs=x)


def test_seed_minimal_example(resnet):
    model, x, dg = resnet
    group = dg.get_pruning_group(model.conv1, tp.prune_conv_out_channels, idxs=[2, 6, 9])
    assert dg.check_pruning_group(group)
    layers = [dep.target.module for dep, _ in group]
    assert layers[0] is model.conv1
    assert group[0][1] == [2, 6, 9]
    for m in (model.bn1, model.layer1[0].conv1, model.layer1[0].conv2, model.layer1[1].bn2,
              model.layer2[0].conv1, model.layer2[0].downsample[0]):
        assert m in layers, f"{m} missing from the conv1 group"
    handlers = {dep.target.module: dep.handler for dep, _ in group}
    assert handlers[model.layer2[0].conv1] is tp.prune_conv_in_channels
    assert handlers[model.bn1] is tp.prune_batchnorm_out_channels
    group.prune()
    assert model.conv1.out_channels == 61
    assert model.bn1.num_features == 61
    assert model.layer2[0].downsample[0].in_channels == 61
    assert model(x).shape == (1, 1000)


def test_group_details_golden():
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1))
    dg = tp.DependencyGraph().build_dependency(model, torch.randn(1, 3, 4, 4))
    group = dg.get_pruning_group(model[0], tp.prune_conv_out_channels, idxs=[1])
    rule = "-" * 72
    expected = "\n".join([
        rule,
        "Pruning Group (exact)",
        f"atoms {dg.dims.atoms.describe(('a', group.atoms[0]))}: 1 of 4 indices chosen",
        rule,
        "[0] 0.weight dim 0: 4 -> 3 (identity)  (root)",
        "[1] 0.bias dim 0: 4 -> 3 (identity)",
        "[2] 1.weight dim 0: 4 -> 3 (identity)",
        "[3] 1.bias dim 0: 4 -> 3 (identity)",
        "[4] 1.running_mean dim 0: 4 -> 3 (identity)",
        "[5] 1.running_var dim 0: 4 -> 3 (identity)",
        "[6] 3.weight dim 1: 4 -> 3 (identity)",
        rule,
    ])
    assert str(group) == expected == group.details()


def test_get_all_groups_scans_and_prunes(resnet):
    model, x, dg = resnet
    groups = list(dg.get_all_groups(ignored_layers=[model.conv1], root_module_types=[nn.Conv2d, nn.Linear]))
    roots = [g.root.fqn for g in groups]
    assert "conv1.weight" not in roots, "ignored layer must not root a group"
    assert len(groups) == 11
    for g in groups:
        g.prune(idxs=[2, 4, 6])
    assert model.conv1.out_channels == 64
    assert model.layer1[0].conv1.out_channels == 61
    assert model(x).shape == (1, 1000)


def test_classifier_output_is_pinned(resnet):
    model, _, dg = resnet
    with pytest.raises(tp.PruningError, match=r"pinned.*model output"):
        dg.get_pruning_group(model.fc, tp.prune_linear_out_channels, idxs=[0])
    assert all(g.root.fqn != "fc.weight" or g.root.dim != 0 for g in dg.groups())


def test_ignored_layers_at_build_pin_outputs():
    model = torchvision.models.resnet18().eval()
    dg = tp.DependencyGraph().build_dependency(model, torch.randn(1, 3, 32, 32), ignored_layers=[model.layer4])
    roots = {g.root.fqn for g in dg.groups()}
    assert not any(r.startswith("layer4") for r in roots)
    with pytest.raises(tp.PruningError, match="ignored layer"):
        dg.get_pruning_group(model.layer4[0].conv1, tp.prune_conv_out_channels, idxs=[0])


def test_interactive_style_loop(resnet):
    model, x, dg = resnet
    for group in dg.get_all_groups(root_module_types=[nn.Conv2d]):
        dep, idxs = group[0]
        assert isinstance(dep.target.module, nn.Conv2d)
        assert dep.target.module.weight is group.root.tensor
        assert idxs == list(range(group.size)), f"{group.root.fqn}: root positions must cover the whole unit"
        group.prune(idxs=[0])
    assert model(x).shape == (1, 1000)
    assert len(dg.pruning_history()) == 12


# ------------------------------------------------------------ bad input
def test_not_a_module():
    with pytest.raises(tp.ConfigError, match=r"must be a torch\.nn\.Module"):
        tp.DependencyGraph().build_dependency("resnet", torch.randn(1))


def test_inputs_the_model_cannot_run():
    model = nn.Linear(4, 2)
    before = state(model)
    with pytest.raises(tp.TraceError, match=r"failed on the example inputs.*mat1 and mat2") as info:
        tp.DependencyGraph().build_dependency(model, torch.randn(1, 5))
    assert isinstance(info.value.__cause__, RuntimeError)
    assert_same_state(before, state(model))


@pytest.mark.parametrize(("idxs", "match"), [
    ([64], r"out of range \[0, 64\)"),
    ([-1], "out of range"),
    ([1, 1], "duplicated"),
    ([0.5], "must be ints"),
])
def test_bad_indices(resnet, idxs, match):
    model, _, dg = resnet
    before = state(model)
    with pytest.raises(tp.PruningError, match=match):
        dg.get_pruning_group(model.conv1, tp.prune_conv_out_channels, idxs=idxs).prune()
    assert_same_state(before, state(model))


def test_pruning_every_index(resnet):
    model, _, dg = resnet
    before = state(model)
    group = dg.get_pruning_group(model.conv1, tp.prune_conv_out_channels, idxs=list(range(64)))
    assert not dg.check_pruning_group(group)
    with pytest.raises(tp.PruningError, match=r"Cannot prune all 64 positions"):
        group.prune()
    assert_same_state(before, state(model))


def test_module_not_in_graph(resnet):
    _, _, dg = resnet
    with pytest.raises(tp.PruningError, match="not a module of the model"):
        dg.get_pruning_group(nn.Conv2d(3, 3, 1), tp.prune_conv_out_channels, idxs=[0])


def test_handler_does_not_fit(resnet):
    model, _, dg = resnet
    with pytest.raises(tp.PruningError, match="does not fit"):
        dg.get_pruning_group(model.conv1, tp.prune_linear_out_channels, idxs=[0])


def test_group_without_indices(resnet):
    _, _, dg = resnet
    with pytest.raises(tp.PruningError, match="no indices"):
        dg.groups()[0].prune()


# ------------------------------------------------------- transactions
@pytest.mark.parametrize("fail_at", [0, 3, 10, 17])
def test_failure_part_way_restores_the_model(resnet, monkeypatch, fail_at):
    model, _x, dg = resnet
    model.conv1.weight.grad = torch.randn_like(model.conv1.weight)
    before = state(model)
    calls = {"n": 0}
    real = Transaction.set_data

    def flaky(self, t, new, grad=None):
        if calls["n"] == fail_at:
            raise RuntimeError("injected failure")
        calls["n"] += 1
        return real(self, t, new, grad)

    monkeypatch.setattr(Transaction, "set_data", flaky)
    group = dg.get_pruning_group(model.conv1, tp.prune_conv_out_channels, idxs=[1, 2])
    with pytest.raises(RuntimeError, match="injected"):
        group.prune()
    assert_same_state(before, state(model))
    monkeypatch.setattr(Transaction, "set_data", real)
    group.prune()
    assert model.conv1.out_channels == 62
    assert model.conv1.weight.grad.shape == model.conv1.weight.shape


def test_attribute_failure_restores(resnet, monkeypatch):
    model, _, dg = resnet
    before = state(model)

    def boom(self, obj, name, value):
        raise RuntimeError("attr failure")

    monkeypatch.setattr(Transaction, "set_attr", boom)
    with pytest.raises(RuntimeError, match="attr failure"):
        dg.get_pruning_group(model.layer1[0].conv1, tp.prune_conv_out_channels, idxs=[0]).prune()
    assert_same_state(before, state(model))


def test_order_of_remaining_channels_is_kept():
    model = nn.Sequential(nn.Linear(3, 6), nn.ReLU(), nn.Linear(6, 2))
    w = model[0].weight.detach().clone()
    dg = tp.DependencyGraph().build_dependency(model, torch.randn(1, 3))
    dg.get_pruning_group(model[0], tp.prune_linear_out_channels, idxs=[4, 1]).prune()
    assert torch.equal(model[0].weight, w[[0, 2, 3, 5]])


def test_lint_catches_a_model_pruned_behind_the_graphs_back(resnet):
    model, _, dg = resnet
    dg.lint()
    dg.get_pruning_group(model.conv1, tp.prune_conv_out_channels, idxs=[0]).prune()
    dg.lint()
    tp.prune_linear_in_channels(model.fc, [0])  # not through the graph
    with pytest.raises(ValueError, match=r"fc\.weight dim 1 has size 511, its layout 512"):
        dg.lint()
