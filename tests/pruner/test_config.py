"""PruneConfig (JSON round trip, validation) and the one-call prune_."""

from __future__ import annotations

import json

import pytest
import torch
from torchvision.models import resnet18

import anyprune as tp
from anyprune.errors import ConfigError
from tests.helpers import assert_same_state, state

X = torch.randn(1, 3, 32, 32)


def test_round_trip_through_json():
    cfg = tp.PruneConfig(pruning_ratio=0.3, pruning_ratio_dict={"layer1,layer2": 0.4}, global_pruning=True,
                         ignored_layers=["fc"], importance="lamp", importance_kwargs={"p": 1}, round_to=8,
                         target_macs=0.5)
    data = json.loads(cfg.to_json())
    assert data["ignored_layers"] == ["fc"]
    assert tp.PruneConfig.from_dict(data) == cfg
    assert tp.PruneConfig.from_json(cfg.to_json()) == cfg


def test_prune_with_a_config_equals_the_pruner():
    a, b = resnet18().eval(), resnet18().eval()
    b.load_state_dict(a.state_dict())
    cfg = {"pruning_ratio": 0.5, "round_to": 8, "ignored_layers": ["fc"],
           "pruning_ratio_dict": {"layer1,layer2": 0.25, "layer4": 0.75}, "global_pruning": True}
    result = tp.prune_(a, X, cfg)
    tp.pruner.MetaPruner(b, X, pruning_ratio=0.5, round_to=8, ignored_layers=[b.fc], global_pruning=True,
                         pruning_ratio_dict={(b.layer1, b.layer2): 0.25, b.layer4: 0.75}).step()
    assert result.params_after == sum(p.numel() for p in a.parameters())
    assert {k: v.shape for k, v in a.state_dict().items()} == {k: v.shape for k, v in b.state_dict().items()}
    for k, v in a.state_dict().items():
        assert torch.equal(v, b.state_dict()[k]), k


def test_prune_runs_every_iterative_step_and_builds_the_named_pruner():
    model = resnet18().eval()
    result = tp.prune_(model, X, tp.PruneConfig(pruning_ratio=0.5, iterative_steps=2, pruner="group_norm"))
    assert result.step == 2
    assert model.layer1[0].conv1.out_channels == 32


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"importance": "l0"}, "importance must be one of"),
    ({"pruner": "slim"}, "pruner must be one of"),
    ({"ignored_layers": "fc"}, "ignored_layers must be a list of module names"),
    ({"pruning_ratio_dict": {1: 0.5}}, "pruning_ratio_dict must map module names"),
])
def test_config_validation(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        tp.PruneConfig(**kwargs)


def test_unknown_fields_and_module_names_are_errors_before_pruning():
    with pytest.raises(ConfigError, match="unknown PruneConfig fields"):
        tp.PruneConfig.from_dict({"ratio": 0.5})
    model = resnet18().eval()
    before = state(model)
    with pytest.raises(ConfigError, match="'layer9'"):
        tp.prune_(model, X, tp.PruneConfig(ignored_layers=("layer9",)))
    with pytest.raises(ConfigError, match="pruning_ratio must be"):
        tp.prune_(model, X, tp.PruneConfig(pruning_ratio=2.0))
    assert_same_state(before, state(model))
