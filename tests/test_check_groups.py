"""DependencyGraph.check_groups: the safety net that tries each group on the model and pins those that break it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import anyprune as tp
from tests.helpers import assert_same_state, state


class WidthAssert(nn.Module):
    """The forward checks a width in Python: no shape op records it, only running the model shows it."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Conv2d(3, 8, 1), nn.Conv2d(8, 6, 1), nn.Conv2d(6, 2, 1)

    def forward(self, x):
        y = self.a(x)
        assert y.shape[1] % 8 == 0, "needs a multiple of 8 channels"
        return self.c(torch.relu(self.b(torch.relu(y))))


def test_a_group_that_breaks_the_forward_is_pinned_and_the_model_is_untouched():
    model = WidthAssert()
    x = torch.randn(1, 3, 4, 4)
    dg = tp.DependencyGraph().build_dependency(model, x)
    assert sorted(g.size for g in dg.groups()) == [6, 8]
    before = state(model)
    first, second = sorted(dg.groups(), key=lambda g: g.size, reverse=True)
    assert "multiple of 8" in dg.try_prune(first)
    assert dg.try_prune(second) is None
    assert_same_state(before, state(model))
    failed = dg.check_groups()
    assert [(g.size, "multiple of 8" in err) for g, err in failed] == [(8, True)]
    assert_same_state(before, state(model))
    assert [g.size for g in dg.groups()] == [6]
    with pytest.raises(tp.PruningError, match="breaks the forward pass"):
        dg.get_pruning_group(model.a, tp.prune_conv_out_channels, idxs=[0])
    dg.groups()[0].prune([0, 1])
    assert model(x).shape == (1, 2, 4, 4)


def test_identical_layers_are_tried_once():
    torch.manual_seed(0)
    model = nn.Sequential(*[nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 8)) for _ in range(4)])
    x = torch.randn(2, 8)
    dg = tp.DependencyGraph().build_dependency(model, x)
    calls = []
    real = dg.verify

    def counting_verify(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    dg.verify = counting_verify
    assert dg.check_groups() == []
    assert len(dg.groups()) == 7  # the 4 hidden widths and the 3 widths between blocks
    assert len(calls) == 2  # one 16-wide hidden group and one 8-wide group between blocks, each tried once
