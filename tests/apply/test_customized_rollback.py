"""A customized pruner that writes in place and then raises is undone, and the module keeps its own objects."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import anyprune as tp


class Scale(nn.Module):
    def __init__(self, n: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.rand(n))
        self.scale.grad = torch.ones(n)

    def forward(self, x):
        return x * self.scale.view(1, -1, 1, 1)


class FailingPruner(tp.function.BasePruningFunc):
    def prune_out_channels(self, layer, idxs):
        layer.scale.data.mul_(0)
        layer.scale.grad.mul_(0)
        layer.extra = "left behind"
        layer._forward_hooks.clear()
        raise RuntimeError("custom pruner failed")

    prune_in_channels = prune_out_channels

    def get_out_channels(self, layer):
        return layer.scale.numel()

    get_in_channels = get_out_channels


def test_in_place_writes_and_attribute_objects_are_restored():
    model = nn.Sequential(nn.Conv2d(3, 6, 1), Scale(6), nn.Conv2d(6, 2, 1))
    x = torch.randn(1, 3, 4, 4)
    calls = []
    handle = model[1].register_forward_hook(lambda *args: calls.append(1))
    hooks = model[1]._forward_hooks
    value, grad = model[1].scale.detach().clone(), model[1].scale.grad.clone()
    dg = tp.DependencyGraph().build_dependency(model, x, customized_pruners={Scale: FailingPruner()})
    calls.clear()  # the trace ran the hook
    with pytest.raises(RuntimeError, match="custom pruner failed"):
        dg.get_pruning_group(model[0], tp.prune_conv_out_channels, idxs=[0]).prune()
    assert torch.equal(model[1].scale.detach(), value)
    assert torch.equal(model[1].scale.grad, grad)
    assert not hasattr(model[1], "extra")
    assert model[1]._forward_hooks is hooks
    assert model[0].out_channels == 6
    model(x)
    assert calls == [1]
    handle.remove()  # the handle still finds the hook in the module's own dict
    model(x)
    assert calls == [1]
