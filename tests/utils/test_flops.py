"""MACs and parameter counts against known values; latency measurement."""

from __future__ import annotations

import pytest
import torch
import torchvision

import anyprune as tp
from anyprune.errors import ConfigError


@pytest.mark.parametrize(("name", "gmacs", "mparams"), [
    ("resnet18", 1.82, 11.69), ("resnet50", 4.11, 25.56), ("vit_b_16", 17.6, 86.57),
])
def test_macs_of_known_models_on_meta(name, gmacs, mparams):
    with torch.device("meta"):
        model = torchvision.models.get_model(name).eval()
        x = torch.randn(1, 3, 224, 224)
    macs, params = tp.utils.count_ops_and_params(model, x)
    assert macs / 1e9 == pytest.approx(gmacs, rel=0.01), macs
    assert params / 1e6 == pytest.approx(mparams, rel=0.001), params


def test_layer_wise_counts():
    model = torchvision.models.resnet18().eval()
    x = torch.randn(1, 3, 64, 64)
    macs, params, layer_macs, layer_params = tp.utils.count_ops_and_params(model, x, layer_wise=True)
    assert layer_macs[""] == macs
    assert layer_params[""] == params
    assert sum(layer_macs[f"layer{i}"] for i in range(1, 5)) + layer_macs["conv1"] + layer_macs["fc"] == macs
    w = model.conv1.weight
    assert layer_macs["conv1"] == w.numel() * 32 * 32  # 64x64 input, stride 2
    assert layer_params["layer1.0.conv1"] == 64 * 64 * 9


def test_training_flags_are_restored():
    model = torchvision.models.resnet18()
    model.layer1.eval()
    tp.utils.count_ops_and_params(model, torch.randn(2, 3, 32, 32))
    assert model.training
    assert not model.layer1.training


def test_measure_latency():
    model = torch.nn.Linear(16, 4)
    mean, std = tp.utils.measure_latency(model, torch.randn(2, 16), repeat=3, warmup=1)
    assert mean > 0
    assert std >= 0
    calls = []
    tp.utils.measure_latency(model, torch.randn(2, 16), repeat=2, warmup=1,
                             run_fn=lambda m, x: calls.append(m(x)))
    assert len(calls) == 1 + 2 * 3, "warm-up, then per sample: the timer's 2 warm-up runs and the timed one"
    with pytest.raises(ConfigError, match="repeat must be an int >= 1"):
        tp.utils.measure_latency(model, torch.randn(2, 16), repeat=0)
