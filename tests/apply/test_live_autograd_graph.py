"""Pruning while an earlier autograd graph is alive (the loss of the previous iteration) does not break the next
backward pass."""

from __future__ import annotations

import torch
from torch import nn

import anyprune as tp


def test_backward_after_pruning_with_the_previous_loss_alive():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.ConvTranspose2d(8, 6, 3), nn.ReLU(),
                          nn.Conv2d(6, 2, 1))
    x = torch.randn(2, 3, 8, 8)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = model(x).square().mean()  # kept alive across the pruning step, as in a training loop
    loss.backward()
    opt.step()
    pruner = tp.pruner.MetaPruner(model, x, pruning_ratio=0.5)
    pruner.step()
    opt.zero_grad()
    new_loss = model(x).square().mean()
    new_loss.backward()
    opt.step()
    assert model[0].weight.grad.shape == model[0].weight.shape == (4, 3, 3, 3)
    assert model[3].weight.grad.shape == model[3].weight.shape == (4, 3, 3, 3)
    assert loss.requires_grad  # the old graph is still referenced


def test_a_rolled_back_group_also_leaves_backward_working():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2))
    x = torch.randn(3, 4)
    loss = model(x).sum()
    dg = tp.DependencyGraph().build_dependency(model, x)
    try:
        with dg.transaction():
            next(iter(dg.groups())).prune([0, 1])
            model(x).sum().backward()
            raise RuntimeError("undo")
    except RuntimeError:
        pass
    model.zero_grad()
    model(x).sum().backward()
    assert model[0].weight.grad.shape == (6, 4)
    assert loss.requires_grad
