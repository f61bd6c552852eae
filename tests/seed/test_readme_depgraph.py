"""The seed README's DepGraph snippets, run with ``import anyprune as tp`` (random weights)."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import resnet18

import anyprune as tp


def test_minimal_example(tmp_path):
    model = resnet18().eval()
    # 1. Build dependency graph for a resnet18. This requires a dummy input for forwarding
    DG = tp.DependencyGraph().build_dependency(model, example_inputs=torch.randn(1, 3, 224, 224))
    # 2. To prune the output channels of model.conv1, we need to find the corresponding group
    group = DG.get_pruning_group(model.conv1, tp.prune_conv_out_channels, idxs=[2, 6, 9])
    # 3. Do the pruning
    if DG.check_pruning_group(group):  # avoid over-pruning, i.e., channels=0.
        group.prune()
    # 4. Save & Load
    model.zero_grad()
    torch.save(model, tmp_path / "model.pth")
    model = torch.load(tmp_path / "model.pth", weights_only=False)
    assert model.conv1.out_channels == 61
    assert model.layer2[0].downsample[0].in_channels == 61
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 1000)
    text = group.details()
    for name in ("conv1.weight", "bn1.weight", "layer1.0.conv1.weight", "layer1.1.conv2.weight",
                 "layer2.0.conv1.weight", "layer2.0.downsample.0.weight"):
        assert name in text, f"{name} missing from group.details()"
    assert str(group) == text


def test_scan_all_groups():
    model = resnet18().eval()
    DG = tp.DependencyGraph().build_dependency(model, example_inputs=torch.randn(1, 3, 224, 224))
    seen = 0
    for group in DG.get_all_groups(ignored_layers=[model.conv1], root_module_types=[nn.Conv2d, nn.Linear]):
        idxs = [2, 4, 6]  # your pruning indices, feel free to change them
        group.prune(idxs=idxs)
        assert str(group)
        seen += 1
    assert seen == 11
    assert model.conv1.out_channels == 64, "ignored layer keeps its width"
    assert model.layer4[1].conv1.out_channels == 509
    assert model(torch.randn(1, 3, 64, 64)).shape == (1, 1000)


def test_low_level_functions():
    model = resnet18().eval()
    tp.prune_conv_out_channels(model.conv1, idxs=[2, 6, 9])
    # fix the broken dependencies manually
    tp.prune_batchnorm_out_channels(model.bn1, idxs=[2, 6, 9])
    tp.prune_conv_in_channels(model.layer2[0].conv1, idxs=[2, 6, 9])
    assert model.conv1.weight.shape == (61, 3, 7, 7)
    assert model.bn1.running_mean.shape == (61,)
    assert model.layer2[0].conv1.weight.shape == (128, 61, 3, 3)


def test_customized_layer_as_in_the_seed():
    class CustomizedLayer(nn.Module):
        def __init__(self, in_dim):
            super().__init__()
            self.in_dim = in_dim
            self.scale = nn.Parameter(torch.Tensor(self.in_dim))
            self.bias = nn.Parameter(torch.Tensor(self.in_dim))

        def forward(self, x):
            norm = x.pow(2).sum(dim=1, keepdim=True).sqrt()
            x = torch.div(x, norm)
            return x * self.scale + self.bias

    class FullyConnectedNet(nn.Module):
        def __init__(self, input_size, num_classes, hidden_units):
            super().__init__()
            self.fc1 = nn.Linear(input_size, hidden_units)
            self.customized_layer = CustomizedLayer(hidden_units)
            self.fc2 = nn.Linear(hidden_units, num_classes)

        def forward(self, x):
            return self.fc2(self.customized_layer(self.fc1(x)))

    class MyPruner(tp.pruner.BasePruningFunc):
        def prune_out_channels(self, layer: CustomizedLayer, idxs: list):
            keep_idxs = list(set(range(layer.in_dim)) - set(idxs))
            keep_idxs.sort()
            layer.in_dim = layer.in_dim - len(idxs)
            layer.scale = torch.nn.Parameter(layer.scale.data.clone()[keep_idxs])
            layer.bias = torch.nn.Parameter(layer.bias.data.clone()[keep_idxs])
            return layer

        def get_out_channels(self, layer):
            return layer.in_dim

        prune_in_channels = prune_out_channels
        get_in_channels = get_out_channels

    model = FullyConnectedNet(128, 10, 256)
    with torch.no_grad():
        model.customized_layer.scale.fill_(1.0)
        model.customized_layer.bias.zero_()
    DG = tp.DependencyGraph().build_dependency(model, example_inputs=torch.randn(1, 128),
                                               customized_pruners={CustomizedLayer: MyPruner()})
    group = DG.get_pruning_group(model.fc1, tp.prune_linear_out_channels, idxs=[0, 1, 6])
    assert any(dep.target.module is model.customized_layer for dep, _ in group)
    group.prune()
    assert model.fc1.out_features == 253
    assert model.customized_layer.in_dim == 253
    assert model.fc2.in_features == 253
    assert model(torch.randn(2, 128)).shape == (2, 10)
