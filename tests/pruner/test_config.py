"""PruneConfig (JSON round trip, validation) and the one-call prune_."""

from __future__ import annotations

import copy
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


def test_one_call_with_calibration_obs_and_reconstruction():
    model = torch.nn.Sequential(torch.nn.Linear(6, 32), torch.nn.ReLU(), torch.nn.Linear(32, 32), torch.nn.ReLU(),
                                torch.nn.Linear(32, 3))
    data = torch.randn(400, 6)
    dense = model(data).detach()
    cfg = tp.PruneConfig(pruning_ratio=0.5, importance="obs", reconstruct=True, global_pruning=True,
                         max_pruning_ratio=0.75)
    assert tp.PruneConfig.from_json(cfg.to_json()) == cfg
    errors = {}
    for name, c in (("plain", tp.PruneConfig(pruning_ratio=0.5, global_pruning=True, max_pruning_ratio=0.75)),
                    ("obs+reconstruct", cfg)):
        m = copy.deepcopy(model)
        tp.prune_(m, data[:1], c, calibration=data)
        assert 32 <= m[0].out_features + m[2].out_features < 40  # about half of the 64 units, allocated globally
        assert min(m[0].out_features, m[2].out_features) >= 8  # the cap: no layer loses more than 75%
        with torch.no_grad():
            errors[name] = float((m(data) - dense).square().mean())
    assert errors["obs+reconstruct"] < errors["plain"]


def test_one_call_needs_calibration_for_calibrated_settings():
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    with pytest.raises(tp.ConfigError, match="needs calibration data"):
        tp.prune_(model, torch.randn(1, 4), tp.PruneConfig(importance="obs"))
    with pytest.raises(tp.ConfigError, match="needs calibration data"):
        tp.prune_(model, torch.randn(1, 4), tp.PruneConfig(reconstruct=True))
    with pytest.raises(tp.ConfigError, match="reconstruct must be"):
        tp.PruneConfig(reconstruct="yes")
    with pytest.raises(tp.ConfigError, match="calibration_batch_size"):
        tp.PruneConfig(calibration_batch_size=0)
    assert model[0].out_features == 8
