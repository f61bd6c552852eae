"""MetaPruner: one test per argument, each failing if the argument were ignored."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import anyprune as tp
from anyprune.errors import AnyPruneWarning, ConfigError, PruningError
from anyprune.testing import models as toys
from tests.helpers import assert_same_state, state

X = torch.randn(1, 3, 8, 8)


class Net(nn.Module):
    """Three independent groups: conv1 (16), conv2 (32), conv3 (24); the classifier's outputs are pinned."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.conv2, self.bn2 = nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32)
        self.conv3, self.bn3 = nn.Conv2d(32, 24, 3, padding=1), nn.BatchNorm2d(24)
        self.fc = nn.Linear(24, 10)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.relu(self.bn2(self.conv2(x)))
        x = torch.relu(self.bn3(self.conv3(x)))
        return self.fc(x.mean((2, 3)))


def widths(m: Net) -> tuple[int, int, int]:
    return m.conv1.out_channels, m.conv2.out_channels, m.conv3.out_channels


class Fixed:
    """A user importance with fixed scores per group root (``{root module name: scores}``)."""

    def __init__(self, scores: dict[str, torch.Tensor]) -> None:
        self.scores = scores

    def __call__(self, group):
        return self.scores[group.root.module_name][: group.size]


def _net() -> Net:
    return Net().eval()


SKEWED = {  # conv3 is unimportant everywhere, conv1 and conv2 are flat
    "conv1": torch.full((16,), 10.0), "conv2": torch.full((32,), 9.0), "conv3": torch.arange(24.0) * 0.01,
}


def test_local_pruning_ratio_per_group():
    m = _net()
    tp.pruner.MetaPruner(m, X, pruning_ratio=0.25).step()
    assert widths(m) == (12, 24, 18)
    assert m(X).shape == (1, 10)


def test_global_distributes_differently_from_local():
    local, glob = _net(), _net()
    tp.pruner.MetaPruner(local, X, importance=Fixed(SKEWED), pruning_ratio=0.25).step()
    tp.pruner.MetaPruner(glob, X, importance=Fixed(SKEWED), pruning_ratio=0.25, global_pruning=True).step()
    assert widths(local) == (12, 24, 18)
    # 18 of 72 channels go, all from conv3 (the lowest scores)
    assert widths(glob) == (16, 32, 6)


def test_global_ranks_normalised_scores():
    m = _net()
    scores = {"conv1": torch.linspace(1, 2, 16) * 100, "conv2": torch.linspace(1, 2, 32), "conv3": torch.ones(24)}
    imp = Fixed({k: v / v.mean() for k, v in scores.items()})  # what a mean normalizer would give
    tp.pruner.MetaPruner(m, X, importance=imp, pruning_ratio=0.25, global_pruning=True).step()
    assert m.conv1.out_channels < 16, "after normalisation conv1's scale no longer protects it"
    assert sum(widths(m)) == 72 - 18


def test_max_pruning_ratio_caps_every_group():
    m = _net()
    tp.pruner.MetaPruner(m, X, importance=Fixed(SKEWED), pruning_ratio=0.5, global_pruning=True,
                         max_pruning_ratio=0.5).step()
    assert widths(m)[2] == 12, "conv3 stops at half its width"
    m2 = _net()
    tp.pruner.MetaPruner(m2, X, importance=Fixed(SKEWED), pruning_ratio=0.5, global_pruning=True).step()
    assert widths(m2)[2] == 1, "without the cap conv3 goes down to one channel"


def test_never_prunes_a_group_to_zero():
    m = _net()
    tp.pruner.MetaPruner(m, X, pruning_ratio=1.0).step()
    assert widths(m) == (1, 1, 1)
    assert m(X).shape == (1, 10)


def test_round_to_gives_multiples():
    m = _net()
    tp.pruner.MetaPruner(m, X, pruning_ratio=0.3, round_to=4).step()
    assert widths(m) == (12, 24, 16)  # 11.2 -> 11 -> 12, 22.4 -> 22 -> 24, 16.8 -> 16 -> 16
    m2 = _net()
    tp.pruner.MetaPruner(m2, X, pruning_ratio=0.3).step()
    assert widths(m2) == (11, 22, 16)


@pytest.mark.parametrize(("round_to", "width"), [(12, 384), (8, 384), (48, 384), (7, 420)])
def test_round_to_applies_to_the_layer_width_not_each_head(round_to, width):
    import torchvision

    torch.manual_seed(0)
    m = torchvision.models.vit_b_16(num_classes=10).eval()
    m.encoder.layers = m.encoder.layers[:2]
    tp.pruner.MetaPruner(m, torch.randn(1, 3, 224, 224), pruning_ratio=0.5, round_to=round_to,
                         ignored_layers=[m.heads], prune_head_dims=True).step()
    attn = m.encoder.layers[0].self_attention
    assert attn.in_proj_weight.shape[0] == 3 * width  # 12 heads of the same head_dim, width a multiple of round_to
    assert width % round_to == 0
    assert attn.head_dim * attn.num_heads == width


def test_iterative_steps_follow_the_scheduler_and_reach_the_target():
    calls = []

    def scheduler(ratio, steps):
        calls.append((ratio, steps))
        return [0.0, 0.5 * ratio, 0.75 * ratio, ratio][: steps + 1]

    m = _net()
    pruner = tp.pruner.MetaPruner(m, X, pruning_ratio=0.5, iterative_steps=3,
                                  iterative_pruning_ratio_scheduler=scheduler)
    seen = []
    for _ in range(3):
        pruner.step()
        seen.append(widths(m))
    assert (0.5, 3) in calls
    assert seen == [(12, 24, 18), (10, 20, 15), (8, 16, 12)]
    with pytest.warns(AnyPruneWarning, match="iterative steps are done"):
        assert pruner.step() is None
    assert widths(m) == (8, 16, 12)


def test_linear_scheduler_is_the_default():
    m = _net()
    pruner = tp.pruner.MetaPruner(m, X, pruning_ratio=0.5, iterative_steps=2)
    pruner.step()
    assert widths(m) == (12, 24, 18)
    pruner.step()
    assert widths(m) == (8, 16, 12)


def test_pruning_ratio_dict_modules_and_tuple_scopes_local():
    m = _net()
    tp.pruner.MetaPruner(m, X, pruning_ratio=0.5, pruning_ratio_dict={m.conv1: 0.25, (m.conv2, m.conv3): 0.75}).step()
    assert widths(m) == (12, 8, 6)


def test_tuple_scope_shares_one_ratio_under_global_pruning():
    m = _net()
    scores = {"conv1": torch.ones(16), "conv2": torch.full((32,), 5.0), "conv3": torch.arange(24.0) * 0.01}
    tp.pruner.MetaPruner(m, X, importance=Fixed(scores), pruning_ratio=0.0, global_pruning=True,
                         pruning_ratio_dict={(m.conv2, m.conv3): 0.25}).step()
    assert widths(m) == (16, 32, 10), "14 of the scope's 56 channels, all from conv3; conv1 is outside the scope"


def test_ignored_layers_modules_types_and_parameters():
    m = _net()
    tp.pruner.MetaPruner(m, X, pruning_ratio=0.5, ignored_layers=[m.conv2]).step()
    assert widths(m) == (8, 32, 12)
    m = _net()
    tp.pruner.MetaPruner(m, X, pruning_ratio=0.5, ignored_layers=[m.conv3.weight]).step()
    assert widths(m) == (8, 32, 24), "an ignored parameter keeps every dim: conv3's outputs and inputs"
    seq = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Conv1d(8, 6, 1), nn.ReLU(), nn.Conv1d(6, 2, 1))

    def forward_fn(model, x):
        return model[4](model[3](model[2](model[1](model[0](x)).transpose(1, 2))))

    tp.pruner.MetaPruner(seq, torch.randn(1, 5, 4), pruning_ratio=0.5, ignored_layers=[nn.Conv1d],
                         forward_fn=forward_fn).step()
    assert seq[2].out_channels == 6, "a module type: every Conv1d keeps its outputs"
    assert seq[0].out_features == 4


def test_isomorphic_ranks_only_groups_of_one_structure_together():
    m, iso = _net(), _net()
    tp.pruner.MetaPruner(m, X, importance=Fixed(SKEWED), pruning_ratio=0.5, global_pruning=True).step()
    tp.pruner.MetaPruner(iso, X, importance=Fixed(SKEWED), pruning_ratio=0.5, global_pruning=True,
                         isomorphic=True).step()
    # conv1 and conv2 groups (conv -> bn -> conv) are isomorphic; conv3's (conv -> bn -> linear) is not
    assert widths(m) == (16, 20, 1)
    assert widths(iso)[2] == 12, "conv3 is ranked alone: exactly half of it goes"
    assert sum(widths(iso)[:2]) == 24, "conv1 and conv2 lose half of their 48 channels together"
    assert widths(iso)[1] == 8, "conv2's lower scores go first"


def test_isomorphic_without_global_warns():
    with pytest.warns(AnyPruneWarning, match="global_pruning=True"):
        tp.pruner.MetaPruner(_net(), X, isomorphic=True)


def test_forward_fn_output_transform_and_dict_inputs():
    class DictNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(4, 8), nn.Linear(8, 3)

        def forward(self, x, scale=1.0):
            hidden = self.a(x)
            return {"logits": self.b(torch.relu(hidden)) * scale, "hidden": hidden}

    m = DictNet()
    with pytest.warns(AnyPruneWarning, match="found no prunable group in DictNet"):
        tp.pruner.MetaPruner(m, {"x": torch.randn(2, 4)}, pruning_ratio=0.5).step()  # dict inputs are keywords
    assert m.a.out_features == 8, "the 'hidden' output pins a's width"
    calls: list[str] = []

    def forward_fn(model, inputs):
        calls.append("forward_fn")
        return model(inputs[0], scale=inputs[1])["logits"]

    def output_transform(out):
        calls.append("output_transform")
        return out

    pruner = tp.pruner.MetaPruner(m, (torch.randn(2, 4), 2.0), pruning_ratio=0.5, forward_fn=forward_fn,
                                  output_transform=output_transform)
    pruner.step()
    assert calls[:2] == ["forward_fn", "output_transform"]
    assert m.a.out_features == 4, "forward_fn returns only the logits: 'hidden' no longer pins a"


def test_unwrapped_parameters_are_pruned_with_their_dim():
    m = toys.Unwrapped()
    tp.pruner.MetaPruner(m, torch.randn(2, 4), pruning_ratio=0.5, unwrapped_parameters=[(m.scale, 0)]).step()
    assert m.fc1.out_features == 3
    assert m.scale.shape == (3,)
    assert m(torch.randn(2, 4)).shape == (2, 3)


def test_customized_pruners_are_used():
    class Scale(nn.Module):
        def __init__(self, n: int) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.rand(n))

        def forward(self, x):
            return x * self.w

    class ScalePruner(tp.pruner.BasePruningFunc):
        def __init__(self) -> None:
            self.calls: list[int] = []

        def prune_out_channels(self, layer, idxs):
            keep = [i for i in range(layer.w.numel()) if i not in set(idxs)]
            layer.w = nn.Parameter(layer.w.data[keep])
            self.calls.append(len(idxs))
            return layer

        prune_in_channels = prune_out_channels

        def get_out_channels(self, layer):
            return layer.w.numel()

        get_in_channels = get_out_channels

    m = nn.Sequential(nn.Linear(4, 8), Scale(8), nn.Linear(8, 2))
    scale_pruner = ScalePruner()
    tp.pruner.MetaPruner(m, torch.randn(1, 4), pruning_ratio=0.5, customized_pruners={Scale: scale_pruner}).step()
    assert scale_pruner.calls == [4]
    assert m[1].w.shape == (4,)
    assert m[0].out_features == 4
    assert m(torch.randn(1, 4)).shape == (1, 2)


def test_head_policy_on_conv_groups():
    """Conv groups count repeated blocks of the producing dim, like heads: pruned only with prune_num_heads."""
    m = toys.Grouped()
    x = torch.randn(1, 3, 6, 6)
    tp.pruner.MetaPruner(m, x, pruning_ratio=0.5).step()
    assert m.gc.groups == 4, "block counts are left alone by default"
    assert (m.pw.out_channels, m.gc.out_channels) == (4, 4), "per-block widths 2 -> 1 and 3 -> 1"
    m = toys.Grouped()
    tp.pruner.MetaPruner(m, x, pruning_ratio=0.5, prune_num_heads=True, head_pruning_ratio=0.5).step()
    assert m.gc.groups == 2
    m = toys.Grouped()
    tp.pruner.MetaPruner(m, x, pruning_ratio=0.5, prune_num_heads=True, head_pruning_ratio=0.5,
                         prune_head_dims=False).step()
    assert (m.gc.groups, m.pw.out_channels, m.gc.out_channels) == (2, 4, 6)
    m = toys.Grouped()
    tp.pruner.MetaPruner(m, x, pruning_ratio=0.0, prune_num_heads=True, head_pruning_ratio=0.5,
                         head_pruning_ratio_dict={m.gc: 0.75}).step()
    assert m.gc.groups == 1
    assert m(x).shape == (1, 2, 6, 6)


BAD_ARGS = [
    ({"pruning_ratio": 1.5}, "pruning_ratio must be a number in"),
    ({"pruning_ratio": "half"}, "pruning_ratio must be a number in"),
    ({"max_pruning_ratio": 0.0}, "max_pruning_ratio must be in"),
    ({"iterative_steps": 0}, "iterative_steps must be an int"),
    ({"round_to": 0}, "round_to must be None or an int"),
    ({"importance": 3}, "importance must be callable"),
    ({"global_pruning": "yes"}, "global_pruning must be True or False"),
    ({"iterative_pruning_ratio_scheduler": lambda r, s: [r]}, "returned 1 values"),
    ({"iterative_pruning_ratio_scheduler": lambda r, s: [0.0, r, 0.0], "iterative_steps": 2}, "must not decrease"),
    ({"iterative_pruning_ratio_scheduler": lambda r, s: None}, "must return a sequence"),
    ({"pruning_ratio_dict": {nn.Linear(2, 2): 0.5}}, "not a submodule"),
    ({"pruning_ratio_dict": {(): 0.5}}, "empty tuple"),
    ({"num_heads": {"x": 2}}, "num_heads keys must be submodules"),
    ({"head_pruning_ratio": -0.1}, "head_pruning_ratio must be"),
    ({"target_macs": 0}, "target_macs must be"),
    ({"target_params": float("inf")}, "target_params must be"),
    ({"ignored_layers": ["conv1"]}, "ignored_layers entries must be"),
    ({"root_module_types": []}, "root_module_types must be"),
    ({"ch_sparsity": 0.3, "pruning_ratio": 0.2}, "not both"),
]


@pytest.mark.parametrize(("kwargs", "message"), BAD_ARGS, ids=[next(iter(k)) for k, _ in BAD_ARGS])
def test_bad_arguments_raise_before_touching_the_model(kwargs, message):
    m = _net()
    before = state(m)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        with pytest.raises(ConfigError, match=message):
            tp.pruner.MetaPruner(m, X, **kwargs)
    assert_same_state(before, state(m))


def test_num_heads_must_divide_the_width():
    m = toys.Grouped()
    with pytest.raises(ConfigError, match="does not divide its width 12"):
        tp.pruner.MetaPruner(m, torch.randn(1, 3, 6, 6), num_heads={m.gc: 5})


def test_a_ratio_dict_entry_that_matches_no_group_warns():
    m = _net()
    with pytest.warns(AnyPruneWarning, match="root of no prunable group"):
        tp.pruner.MetaPruner(m, X, pruning_ratio_dict={m.fc: 0.5})


def test_bad_importance_output_raises_and_leaves_the_model():
    m = _net()
    before = state(m)
    pruner = tp.pruner.MetaPruner(m, X, importance=lambda g: torch.ones(3))
    with pytest.raises(PruningError, match="one score per index"):
        pruner.step()
    assert_same_state(before, state(m))
    pruner = tp.pruner.MetaPruner(m, X, importance=lambda g: torch.full((g.size,), float("nan")))
    with pytest.raises(PruningError, match="non-finite"):
        pruner.step()
    assert_same_state(before, state(m))


def test_importance_returning_none_leaves_the_group():
    m = _net()
    tp.pruner.MetaPruner(m, X, importance=lambda g: None if g.root.module_name == "conv2" else torch.rand(g.size),
                         pruning_ratio=0.5).step()
    assert widths(m) == (8, 32, 12)


def test_step_returns_a_result_and_regularize_checks_the_model():
    m = _net()
    pruner = tp.pruner.MetaPruner(m, X, pruning_ratio=0.5)
    result = pruner.step()
    assert result is pruner.result
    assert result.groups_pruned == 3
    assert result.indices_pruned == 36
    assert result.params_after == sum(p.numel() for p in m.parameters())
    assert result.params_before > result.params_after
    assert "params" in str(result)
    with pytest.raises(ConfigError, match="the model this pruner was built for"):
        pruner.regularize(_net())


def test_a_criterion_that_scores_nothing_warns():
    with torch.device("meta"):
        m = _net()
        x = torch.randn(1, 3, 8, 8)
    with pytest.warns(AnyPruneWarning, match="scored none of the 3 groups"):
        tp.pruner.MetaPruner(m, x, pruning_ratio=0.5).step()
    assert widths(m) == (16, 32, 24)
    tp.pruner.MetaPruner(m, x, importance=tp.importance.RandomImportance(seed=0), pruning_ratio=0.5).step()
    assert widths(m) == (8, 16, 12), "meta models prune by a criterion that needs no values"
