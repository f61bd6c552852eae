"""Names the seed's own tests use: each exercised the way the seed uses it."""

from __future__ import annotations

import copy

import pytest
import torch
import torchvision
from torch import nn

import anyprune as tp


def _resnet():
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=10).eval(), torch.randn(1, 3, 64, 64)


def test_function_module_layer_pruners_prune_and_report_sizes():
    lin = nn.Linear(4, 6)
    pruner = tp.function.LinearPruner()
    pruner.prune_out_channels(lin, [0, 1])
    pruner.prune_in_channels(lin, [3])
    assert (pruner.get_out_channels(lin), pruner.get_in_channels(lin)) == (4, 3)
    assert lin.weight.shape == (4, 3)
    conv = nn.Conv2d(3, 8, 3)
    tp.function.ConvPruner()(conv, [0])  # calling a pruner prunes output channels
    assert tp.function.ConvPruner().get_out_channels(conv) == 7
    bn = nn.BatchNorm2d(8)
    tp.function.BatchnormPruner().prune_out_channels(bn, [1, 2])
    assert tp.function.BatchnormPruner().get_in_channels(bn) == 6
    assert isinstance(tp.function.PrunerBox[nn.Linear], tp.function.BasePruningFunc)


def test_prune_parameter_and_grad_keeps_the_chosen_positions_and_their_grads():
    w = nn.Parameter(torch.arange(12.0).reshape(3, 4))
    w.grad = torch.ones(3, 4) * torch.arange(4.0)
    new = tp.function.BasePruningFunc()._prune_parameter_and_grad(w, [0, 3], 1)
    assert isinstance(new, nn.Parameter)
    assert torch.equal(new.data, w.data[:, [0, 3]])
    assert torch.equal(new.grad, w.grad[:, [0, 3]])


class Scale(nn.Module):
    def __init__(self, n: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.rand(n))

    def forward(self, x):
        return x * self.scale.view(1, -1, 1, 1)


class ScalePruner(tp.function.BasePruningFunc):
    def prune_out_channels(self, layer, idxs):
        keep = [i for i in range(layer.scale.numel()) if i not in set(idxs)]
        layer.scale = self._prune_parameter_and_grad(layer.scale, keep, 0)
        return layer

    prune_in_channels = prune_out_channels

    def get_out_channels(self, layer):
        return layer.scale.numel()

    get_in_channels = get_out_channels


def test_register_customized_layer_before_building():
    model = nn.Sequential(nn.Conv2d(3, 6, 1), Scale(6), nn.Conv2d(6, 2, 1))
    x = torch.randn(1, 3, 4, 4)
    dg = tp.DependencyGraph()
    dg.register_customized_layer(Scale, ScalePruner())
    dg.build_dependency(model, x)
    group = dg.get_pruning_group(model[0], tp.prune_conv_out_channels, idxs=[0, 1])
    assert any(dep.target.module is model[1] for dep, _ in group)
    group.prune()
    assert model[1].scale.numel() == 4
    assert model(x).shape == (1, 2, 4, 4)
    assert (dg.get_out_channels(model[1]), dg.get_in_channels(model[2]), dg.get_out_channels(model[0])) == (4, 4, 4)
    with pytest.raises(tp.ConfigError, match="before build_dependency"):
        dg.register_customized_layer(Scale, ScalePruner())


def test_group_reduction_none_and_gate():
    model, x = _resnet()
    dg = tp.DependencyGraph().build_dependency(model, x)
    group = dg.get_pruning_group(model.conv1, tp.prune_conv_out_channels, idxs=list(range(64)))
    per_slice = tp.importance.GroupMagnitudeImportance(group_reduction=None, normalizer=None)(group)
    assert per_slice.ndim == 2
    assert per_slice.shape[1] == 64
    first = tp.importance.GroupMagnitudeImportance(group_reduction="first", normalizer=None)(group)
    gate = tp.importance.GroupMagnitudeImportance(group_reduction="gate", normalizer=None)(group)
    torch.testing.assert_close(per_slice[0], first)
    torch.testing.assert_close(per_slice[-1], gate)


def test_layer_wise_counts_are_keyed_by_module():
    model, x = _resnet()
    macs, _, layer_macs, layer_params = tp.utils.count_ops_and_params(model, x, layer_wise=True)
    assert layer_macs[model] == macs
    assert layer_params[model.layer1[0].conv1] == 64 * 64 * 9
    assert layer_macs[model.conv1] == layer_macs["conv1"] == model.conv1.weight.numel() * 32 * 32
    assert all(isinstance(k, nn.Module) for k in layer_macs)


def test_pruner_pruning_history_replays_on_a_fresh_model():
    model, x = _resnet()
    fresh = copy.deepcopy(model)
    pruner = tp.pruner.MetaPruner(model, x, pruning_ratio=0.5, ignored_layers=[model.fc])
    pruner.step()
    history = pruner.pruning_history()
    other = tp.pruner.MetaPruner(fresh, x, pruning_ratio=0.5, ignored_layers=[fresh.fc])
    other.load_pruning_history(history)
    torch.testing.assert_close(fresh(x), model(x))


def test_flatten_as_list_and_the_benchmark_functions():
    assert [t.shape for t in tp.utils.flatten_as_list({"a": torch.zeros(2), "b": (torch.ones(3),)})] == \
        [(2,), (3,)]
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    x = torch.randn(4, 8)

    def train_step(m, inputs):  # a run_fn that calls backward, as the seed's benchmarks do
        m(inputs).sum().backward()

    mean, std = tp.utils.benchmark.measure_latency(model, x, repeat=3, warmup=1, run_fn=train_step)
    assert mean > 0
    assert std >= 0
    assert model[0].weight.grad is not None
    fps = tp.utils.benchmark.measure_fps(model, x, repeat=3, warmup=1)
    throughput = tp.utils.benchmark.measure_throughput(model, x, repeat=3, warmup=1)
    assert fps > 0
    assert throughput > fps  # four samples per call
    big = nn.Linear(2048, 2048)  # 16 MB of weights, a 32 MB input and a 32 MB output
    assert tp.utils.benchmark.measure_memory(big, torch.randn(4096, 2048)) == pytest.approx(80, abs=0.1)
