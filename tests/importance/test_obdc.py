"""OBDCImportance: Optimal Brain Damage with the per-sample (empirical) Fisher, used the seed's way."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import anyprune as tp


def _brute_fisher(model: nn.Module, x: torch.Tensor, y: torch.Tensor, params: list[torch.Tensor]) -> list:
    """sum over samples of (d loss_n / d p)^2, one backward per sample."""
    acc = [torch.zeros_like(p) for p in params]
    for n in range(x.shape[0]):
        model.zero_grad()
        F.cross_entropy(model(x[n:n + 1]), y[n:n + 1]).backward()
        for a, p in zip(acc, params):
            a += p.grad.pow(2)
    return acc


class SeqModel(nn.Module):
    """A linear layer applied over a sequence (3-D input) and a padded convolution."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1, padding_mode="reflect")
        self.tok = nn.Linear(6, 5)
        self.head = nn.Linear(5, 4)

    def forward(self, x):
        h = torch.relu(self.conv(x)).flatten(2).transpose(1, 2)  # B, HW, 6
        return self.head(torch.relu(self.tok(h)).mean(1))


@pytest.mark.parametrize("bias", [False, True])
def test_fisher_is_the_sum_of_per_sample_squared_gradients(bias):
    torch.manual_seed(0)
    model = SeqModel().double()
    x = torch.randn(5, 3, 4, 4, dtype=torch.float64)
    y = torch.randint(0, 4, (5,))
    imp = tp.importance.OBDCImportance(bias=bias, normalizer=None)
    imp._prepare_model(model)
    assert imp.modules == [model.conv, model.tok, model.head]
    for _ in range(2):  # two steps: the Fisher is their mean
        model.zero_grad()
        F.cross_entropy(model(x), y).backward()
        imp.step()
    params = [model.conv.weight, model.tok.weight, model.head.weight]
    if bias:
        params += [model.conv.bias, model.tok.bias]
    brute = _brute_fisher(model, x, y, params)
    for p, want in zip(params, brute):
        got = imp._acc[id(p)][1] / imp._count[id(p)]
        torch.testing.assert_close(got, want.float(), rtol=1e-5, atol=1e-7)
    if not bias:
        assert id(model.conv.bias) not in imp._acc


def test_score_is_obd_over_the_groups_slices():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3)).double()
    x, y = torch.randn(8, 4, dtype=torch.float64), torch.randint(0, 3, (8,))
    imp = tp.importance.OBDCImportance(normalizer=None, group_reduction="sum")
    imp._prepare_model(model)
    F.cross_entropy(model(x), y).backward()
    imp.step()
    fisher = _brute_fisher(model, x, y, [model[0].weight, model[2].weight])
    dg = tp.DependencyGraph().build_dependency(model, x[:1])
    (group,) = dg.groups()
    want = (model[0].weight.pow(2) * fisher[0]).sum(1) + (model[2].weight.pow(2) * fisher[1]).sum(0)
    torch.testing.assert_close(imp(group).double(), want, rtol=1e-5, atol=1e-9)


def test_num_classes_leaves_the_classifier_out():
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
    imp = tp.importance.OBDCImportance(num_classes=3)
    imp._prepare_model(model)
    assert imp.modules == [model[0]]


def test_seed_usage_with_a_pruner_then_hooks_removed():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                          nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
    example = torch.randn(1, 3, 8, 8)
    imp = tp.importance.OBDCImportance(group_reduction="mean", num_classes=10)
    pruner = tp.pruner.MagnitudePruner(model, example, importance=imp, pruning_ratio=0.5,
                                       ignored_layers=[model[-1]])
    imp._prepare_model(model, pruner)
    for _ in range(3):
        out = model(torch.randn(4, 3, 8, 8))
        sampled = torch.multinomial(F.softmax(out.detach(), dim=1), 1).squeeze(1)
        F.cross_entropy(out, sampled).backward()
        imp.step()
    scores = {g.root.module: imp(g) for g in pruner.DG.groups()}
    assert all(s is not None and s.shape == (8,) and torch.isfinite(s).all() for s in scores.values())
    pruner.step()
    imp._rm_hooks(model)
    imp._clear_buffer()
    assert (model[0].out_channels, model[3].out_channels) == (4, 4)
    assert model(example).shape == (1, 10)
    assert not model[0]._forward_hooks
    assert (imp.steps, imp._acc) == (0, {})


def test_errors():
    with pytest.raises(tp.ConfigError, match="target_types"):
        tp.importance.OBDCImportance(target_types=["conv"])
    with pytest.raises(tp.ConfigError, match="num_classes"):
        tp.importance.OBDCImportance(num_classes=2.5)
    imp = tp.importance.OBDCImportance()
    with pytest.raises(tp.PruningError, match="_prepare_model"):
        imp.step()
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
    imp._prepare_model(model)
    F.cross_entropy(model(torch.randn(2, 4)), torch.tensor([0, 1])).backward()
    imp.step()
    dg = tp.DependencyGraph().build_dependency(model, torch.randn(1, 4))
    dg.groups()[0].prune([0, 1])
    with pytest.raises(tp.PruningError, match=r"_clear_buffer|zero_grad"):
        imp(dg.groups()[0])
