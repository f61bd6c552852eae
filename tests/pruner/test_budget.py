"""Budget targets: ``target_macs`` / ``target_params`` land within 2% of the target, measured."""

from __future__ import annotations

import pytest
import torch
from torchvision.models import mobilenet_v2, resnet18

import anyprune as tp
from anyprune.errors import PruningError
from tests.helpers import assert_same_state, state

X = torch.randn(1, 3, 64, 64)


@pytest.mark.parametrize("global_pruning", [True, False], ids=["global", "local"])
@pytest.mark.parametrize("ctor", [resnet18, mobilenet_v2], ids=lambda c: c.__name__)
def test_target_macs_fraction_within_two_percent(ctor, global_pruning):
    model = ctor().eval()
    base_macs, _ = tp.utils.count_ops_and_params(model, X)
    pruner = tp.pruner.MetaPruner(model, X, target_macs=0.5, global_pruning=global_pruning)
    result = pruner.step()
    macs, params = tp.utils.count_ops_and_params(model, X)
    assert result.macs_before == base_macs
    assert result.macs_after == macs, "the reported MACs are measured"
    assert result.params_after == params
    assert result.target_macs == pytest.approx(0.5 * base_macs)
    assert abs(macs / (0.5 * base_macs) - 1) < 0.02, macs / base_macs
    assert macs <= 0.5 * base_macs * 1.0001, "the budget is met"
    assert model(X).shape == (1, 1000)


def test_target_params_absolute_count():
    model = resnet18().eval()
    base = sum(p.numel() for p in model.parameters())
    target = 4_000_000
    result = tp.pruner.MetaPruner(model, X, target_params=target, global_pruning=True).step()
    params = sum(p.numel() for p in model.parameters())
    assert result.params_before == base
    assert result.params_after == params
    assert result.macs_after is None, "MACs are only measured for a MACs target"
    assert abs(params / target - 1) < 0.02
    assert params <= target


def test_both_targets_meet_the_stricter_one():
    model = resnet18().eval()
    base_macs, base_params = tp.utils.count_ops_and_params(model, X)
    tp.pruner.MetaPruner(model, X, target_macs=0.8, target_params=0.3).step()
    macs, params = tp.utils.count_ops_and_params(model, X)
    assert params <= 0.3 * base_params
    assert abs(params / (0.3 * base_params) - 1) < 0.02, "params are the binding constraint"
    assert macs < 0.8 * base_macs


def test_iterative_budget_follows_the_scheduler():
    model = resnet18().eval()
    base_macs, _ = tp.utils.count_ops_and_params(model, X)
    pruner = tp.pruner.MetaPruner(model, X, target_macs=0.4, iterative_steps=2, global_pruning=True)
    seen = []
    for _ in range(2):
        pruner.step()
        seen.append(tp.utils.count_ops_and_params(model, X)[0] / base_macs)
    assert seen[0] == pytest.approx(0.7, abs=0.014), "half-way: 1 - 0.6 * 1/2"
    assert seen[1] == pytest.approx(0.4, abs=0.008)


def test_unreachable_budget_raises_and_leaves_the_model():
    model = resnet18().eval()
    before = state(model)
    pruner = tp.pruner.MetaPruner(model, X, target_macs=0.05, max_pruning_ratio=0.3)
    with pytest.raises(PruningError, match=r"the budget cannot be met.*max_pruning_ratio"):
        pruner.step()
    assert_same_state(before, state(model))


def test_ratio_dict_entries_stay_fixed_under_a_budget():
    model = resnet18().eval()
    base_macs, _ = tp.utils.count_ops_and_params(model, X)
    tp.pruner.MetaPruner(model, X, target_macs=0.5, pruning_ratio_dict={model.layer4: 0.0}).step()
    assert [b.conv1.out_channels for b in model.layer4] == [512, 512]
    macs, _ = tp.utils.count_ops_and_params(model, X)
    assert abs(macs / (0.5 * base_macs) - 1) < 0.02
