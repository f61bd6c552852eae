"""Graph-level pruning of every supported layer type, customized pruners, verify_forward errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import anyprune as tp
from tests.helpers import assert_same_state, state


class Mixed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(10, 6)
        self.proj = nn.Linear(6, 12)
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.inorm = nn.InstanceNorm2d(8, affine=True, track_running_stats=True)
        self.act = nn.PReLU(8)
        self.up = nn.ConvTranspose2d(8, 5, 2, stride=2)
        self.bn = nn.BatchNorm2d(5)
        self.ln = nn.LayerNorm(12)
        self.head = nn.Linear(5 + 12, 3)

    def forward(self, img, ids):
        y = self.bn(self.up(self.act(self.inorm(self.conv(img))))).mean((2, 3))
        t = self.ln(self.proj(self.emb(ids))).mean(1)
        return self.head(torch.cat([y, t], 1))


def test_every_layer_type_prunes_and_keeps_attributes_consistent():
    model = Mixed().double().eval()
    x = (torch.randn(2, 3, 4, 4, dtype=torch.float64), torch.tensor([[1, 2, 3], [4, 5, 6]]))
    dg = tp.DependencyGraph().build_dependency(model, x)
    groups = {g.root.fqn: g for g in dg.groups(root_module_types=None)}
    assert set(groups) >= {"emb.weight", "conv.weight", "up.weight", "proj.weight"}
    assert groups["conv.weight"].exact
    assert groups["up.weight"].exact
    assert not groups["proj.weight"].exact, "channels under LayerNorm are approximate"
    for root, idxs in [("conv.weight", [0, 3]), ("up.weight", [1]), ("emb.weight", [2]), ("proj.weight", [5])]:
        res = tp.verify_group(dg, groups[root], idxs=idxs, example_inputs=x, atol=1e-10)
        assert res.ok, f"{root}: {res.details}"
    assert (model.conv.out_channels, model.inorm.num_features, model.act.num_parameters) == (6, 6, 6)
    assert (model.up.in_channels, model.up.out_channels, model.bn.num_features) == (6, 4, 4)
    assert model.emb.embedding_dim == 5
    assert model.proj.in_features == 5
    assert model.ln.normalized_shape == (11,)
    assert model.head.in_features == 4 + 11
    assert model.inorm.running_mean.shape == (6,)
    assert model(*x).shape == (2, 3)


class Scale(nn.Module):
    """A user layer the tracer does not look into (handled by a customized pruner)."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.rand(n) + 0.5)

    def forward(self, x):
        return x * self.w.view(1, -1, 1, 1)


class ScalePruner(tp.pruner.BasePruningFunc):
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail

    def prune_out_channels(self, layer, idxs):
        keep = [i for i in range(layer.w.shape[0]) if i not in idxs]
        layer.w.data = layer.w.data[keep]
        if self.fail:
            raise RuntimeError("pruner failed")
        return layer

    prune_in_channels = prune_out_channels

    def get_out_channels(self, layer):
        return layer.w.shape[0]

    get_in_channels = get_out_channels


def custom_model():
    return nn.Sequential(nn.Conv2d(3, 6, 1), Scale(6), nn.Conv2d(6, 2, 1)).double().eval()


def test_customized_pruner_layer_is_coupled_and_pruned():
    model = custom_model()
    x = torch.randn(1, 3, 4, 4, dtype=torch.float64)
    dg = tp.DependencyGraph().build_dependency(model, x, customized_pruners={Scale: ScalePruner()})
    group = dg.get_pruning_group(model[0], tp.prune_conv_out_channels, idxs=[1, 4])
    handlers = [dep.handler for dep, _ in group]
    assert any(getattr(h, "__name__", "") == "prune_out_channels" for h in handlers)
    group.prune()
    assert model[1].w.shape == (4,)
    assert model[2].in_channels == 4
    assert model(x).shape == (1, 2, 4, 4)


def test_failing_customized_pruner_restores_the_model():
    model = custom_model()
    x = torch.randn(1, 3, 4, 4, dtype=torch.float64)
    dg = tp.DependencyGraph().build_dependency(model, x, customized_pruners={Scale: ScalePruner(fail=True)})
    before = state(model)
    with pytest.raises(RuntimeError, match="pruner failed"):
        dg.get_pruning_group(model[0], tp.prune_conv_out_channels, idxs=[1]).prune()
    assert_same_state(before, state(model))


def test_bad_customized_pruner_is_rejected():
    with pytest.raises(tp.ConfigError, match=r"no method prune_out_channels\(\)"):
        tp.DependencyGraph().build_dependency(custom_model(), torch.randn(1, 3, 2, 2, dtype=torch.float64),
                                              customized_pruners={Scale: object()})


def test_verify_forward_names_the_op_and_line():
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2))
    tp.prune_linear_out_channels(model[0], [0])  # breaks the model on purpose: layer 2 still expects 6
    with pytest.raises(tp.VerificationError, match=r"F\.linear at .*no longer fits.*\(1, 5\)"):
        tp.verify_forward(model, torch.randn(1, 4))


def test_inplace_write_through_a_view_is_pinned():
    class M(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(4, 6)
            self.b = nn.Linear(4, 3)
            self.c = nn.Linear(6, 2)

        def forward(self, x):
            h = self.a(x)
            h[:, : h.shape[1] // 2].add_(self.b(x))
            return self.c(h)

    model = M()
    dg = tp.DependencyGraph().build_dependency(model, torch.randn(2, 4))
    roots = {g.root.fqn for g in dg.groups()}
    assert "a.weight" not in roots
    assert "b.weight" not in roots
    with pytest.raises(tp.PruningError, match="in-place write through a view"):
        dg.get_pruning_group(model.a, tp.prune_linear_out_channels, idxs=[0])


def test_unary_inplace_on_a_view_couples_nothing_new():
    class M(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv2d(3, 6, 1)
            self.c = nn.Linear(6, 2)

        def forward(self, x):
            h = torch.flatten(nn.functional.adaptive_avg_pool2d(self.a(x), 1), 1)
            h = nn.functional.dropout(h, 0.5, self.training, inplace=True)
            return self.c(h)

    model = M().eval()
    dg = tp.DependencyGraph().build_dependency(model, torch.randn(1, 3, 4, 4))
    assert [g.root.fqn for g in dg.groups()] == ["a.weight"]


def test_tied_weights_update_the_attributes_of_every_module_that_uses_them():
    """An embedding tied to the output projection: pruning the stream shrinks both, and both modules' attributes
    (embedding_dim, in_features) follow, whichever name the weight is traced under."""

    class TiedLM(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(10, 8)
            self.body = nn.Linear(8, 8)
            self.head = nn.Linear(8, 10, bias=False)
            self.head.weight = self.emb.weight

        def forward(self, ids):
            h = self.emb(ids)
            return self.head(h + torch.relu(self.body(h)))

    model = TiedLM().eval()
    ids = torch.randint(0, 10, (2, 5))
    dg = tp.DependencyGraph().build_dependency(model, ids)
    (stream,) = [g for g in dg.groups() if any(s.fqn == "emb.weight" for s in g.slices)]
    stream.prune([0, 3, 5])
    assert model.emb.weight is model.head.weight
    assert (model.emb.embedding_dim, model.head.in_features, model.body.in_features, model.body.out_features) == \
        (5, 5, 5, 5)
    assert model(ids).shape == (2, 5, 10)
