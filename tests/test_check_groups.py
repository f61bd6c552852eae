"""DependencyGraph.check_groups: the safety net that tries groups on the model and pins those that break it.

build_dependency runs it by default (shapes only, on meta twins, all groups at once); check_groups() can also be
called on a graph built with check_groups=False, and tries groups on the real model where meta cannot run them.
"""

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
    dg = tp.DependencyGraph().build_dependency(model, x, check_groups=False)
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
    model.forward = lambda t: nn.Sequential.forward(model, t.tolist() and t)  # needs real values: no meta trial
    dg = tp.DependencyGraph().build_dependency(model, x, check_groups=False)
    assert not dg.ops.on_meta
    calls = []
    real = dg._retrace

    def counting_retrace(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    dg._retrace = counting_retrace
    assert dg.check_groups() == []
    assert len(dg.groups()) == 7  # the 4 hidden widths and the 3 widths between blocks
    assert len(calls) == 2  # one 16-wide hidden group and one 8-wide group between blocks, each tried once


def test_the_build_offers_only_groups_that_keep_the_forward_running():
    model = WidthAssert()
    x = torch.randn(1, 3, 4, 4)
    before = state(model)
    dg = tp.DependencyGraph().build_dependency(model, x)
    assert_same_state(before, state(model))
    assert dg.ops.on_meta
    assert [g.size for g in dg.groups(root_module_types=None)] == [6]
    with pytest.raises(tp.PruningError, match="multiple of 8"):
        dg.get_pruning_group(model.a, tp.prune_conv_out_channels, idxs=[0])
    for p in model.parameters():
        assert not p.is_meta


def test_groups_tried_together_do_not_hide_each_other():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 3))
    calls = []

    class Counting(tp.DependencyGraph):
        def _shapes_trial(self, groups, counts):
            calls.append(sorted(counts[id(g)] for g in groups))
            return super()._shapes_trial(groups, counts)

    dg = Counting().build_dependency(model, torch.randn(2, 4))
    assert len(dg.groups()) == 2
    assert len(calls) == 1  # nothing breaks: one trial for all groups
    assert calls[0] == [1, 2]  # a different number of units per group of the same width


def test_a_failing_set_is_halved_until_the_breaking_group_is_found():
    torch.manual_seed(0)

    class Mixed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 8)) for _ in range(5))
            self.bad = nn.Linear(8, 8)
            self.out = nn.Linear(8, 2)

        def forward(self, x):
            for b in self.blocks:
                x = b(x) + x
            h = self.bad(x)
            assert h.shape[-1] == 8, "bad needs all 8"
            return self.out(torch.relu(h))

    model = Mixed()
    x = torch.randn(3, 8)
    before = state(model)
    dg = tp.DependencyGraph().build_dependency(model, x)
    assert_same_state(before, state(model))
    offered = {g.root.module for g in dg.groups()}
    assert model.bad not in offered
    assert all(b[0] in offered for b in model.blocks)  # the 5 hidden widths
    assert len(dg.groups()) == 5  # the residual stream is the model input: pinned
    for g in dg.groups():
        g.prune(list(range(g.size // 2)))
    assert model(x).shape == (3, 2)


def test_check_groups_false_offers_everything_the_algebra_allows():
    dg = tp.DependencyGraph().build_dependency(WidthAssert(), torch.randn(1, 3, 4, 4), check_groups=False)
    assert sorted(g.size for g in dg.groups()) == [6, 8]


def test_any_error_in_the_trial_pins_the_group_instead_of_failing_the_build():
    class Lookup(nn.Module):
        """The forward looks its width up in a table: a KeyError once pruned."""

        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 2)
            self.scale = {8: 1.0}

        def forward(self, x):
            h = self.a(x)
            return self.b(h * self.scale[h.shape[-1]])

    model = Lookup()
    dg = tp.DependencyGraph().build_dependency(model, torch.randn(2, 4))
    assert dg.groups() == []
    with pytest.raises(tp.PruningError, match="KeyError"):
        dg.get_pruning_group(model.a, tp.prune_linear_out_channels, idxs=[0])
