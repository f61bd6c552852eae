"""Importance criteria against hand computations in float64, on plain, concat, residual and tiled structures."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import anyprune as tp
from anyprune.errors import ConfigError, PruningError
from anyprune.importance.base import normalize
from anyprune.testing import models as toys


def _graph(model, x):
    return tp.DependencyGraph().build_dependency(model, x)


def _by_root(dg):
    return {g.root.fqn: g for g in dg.groups()}


def _concat():
    m = toys.Concat().double()
    return m, _graph(m, torch.randn(1, 3, 6, 6, dtype=torch.float64))


def _concat_slices(m, root, p):
    """Per-slice unit scores of Concat's groups, written out by hand (a's outputs come first in the cat)."""
    conv = getattr(m, root)
    n = conv.out_channels
    off = 0 if root == "a" else m.a.out_channels
    head = m.head.weight.detach()[:, off:off + n]
    return [conv.weight.detach().abs().pow(p).flatten(1).sum(1), head.abs().pow(p).transpose(0, 1).flatten(1).sum(1)]


@pytest.mark.parametrize("reduction", ["mean", "sum", "max", "prod", "first"])
@pytest.mark.parametrize("p", [1, 2])
def test_magnitude_on_a_concatenation(reduction, p):
    m, dg = _concat()
    imp = tp.importance.GroupMagnitudeImportance(p=p, group_reduction=reduction, normalizer=None)
    for root, g in (("a", _by_root(dg)["a.weight"]), ("b", _by_root(dg)["b.weight"])):
        per = torch.stack(_concat_slices(m, root, p))
        expected = {"mean": per.mean(0), "sum": per.sum(0), "max": per.max(0).values, "prod": per.prod(0),
                    "first": per[0]}[reduction]
        torch.testing.assert_close(imp(g), expected, rtol=1e-12, atol=0)


def test_magnitude_bias_flag():
    m, dg = _concat()
    g = _by_root(dg)["a.weight"]
    with_bias = tp.importance.GroupMagnitudeImportance(p=2, group_reduction="sum", normalizer=None, bias=True)(g)
    without = tp.importance.GroupMagnitudeImportance(p=2, group_reduction="sum", normalizer=None)(g)
    torch.testing.assert_close(with_bias - without, m.a.bias.detach().pow(2), rtol=1e-12, atol=1e-15)


def test_magnitude_on_a_residual_stream():
    m = toys.Residual().double()
    dg = _graph(m, torch.randn(1, 3, 6, 6, dtype=torch.float64))
    (g,) = dg.groups()
    imp = tp.importance.GroupMagnitudeImportance(p=2, group_reduction="sum", normalizer=None)
    expected = torch.zeros(g.size, dtype=torch.float64)
    for s in g.slices:  # every parameter dim of the stream (buffers excluded), by hand
        if isinstance(s.tensor, nn.Parameter) and s.attr != "bias":
            expected += s.tensor.detach().movedim(s.dim, 0).pow(2).flatten(1).sum(1)
    torch.testing.assert_close(imp(g), expected, rtol=1e-12, atol=0)
    assert sum(1 for s in g.slices if s.attr == "weight") >= 3, "the stream couples several producers"


def test_magnitude_on_a_tiled_dim_sums_both_copies():
    m = toys.Chunk().double()
    dg = _graph(m, torch.randn(1, 3, 6, 6, dtype=torch.float64))
    (g,) = dg.groups()
    assert g.size == 4
    w = m.stem.weight.detach().pow(2).flatten(1).sum(1)  # stem: 8 outputs, split in two halves of one atom
    imp = tp.importance.GroupMagnitudeImportance(p=2, group_reduction="first", normalizer=None)
    torch.testing.assert_close(imp(g), w[:4] + w[4:], rtol=1e-12, atol=0)


def test_normalizers():
    s = torch.tensor([1.0, 4.0, 2.0, 3.0], dtype=torch.float64)
    torch.testing.assert_close(normalize(s, "mean"), s / 2.5, rtol=1e-7, atol=0)
    torch.testing.assert_close(normalize(s, "max"), s / 4, rtol=1e-7, atol=0)
    torch.testing.assert_close(normalize(s, "sum"), s / 10, rtol=1e-7, atol=0)
    torch.testing.assert_close(normalize(s, "standarization"), (s - 1) / 3, rtol=1e-7, atol=0)
    torch.testing.assert_close(normalize(s, "gaussian"), (s - 2.5) / s.std(unbiased=False), rtol=1e-7, atol=0)
    # LAMP: each score over the sum of all scores not smaller than it
    torch.testing.assert_close(normalize(s, "lamp"), torch.tensor([1 / 10, 4 / 4, 2 / 9, 3 / 7],
                                                                   dtype=torch.float64), rtol=1e-7, atol=0)
    assert normalize(s, None) is s
    torch.testing.assert_close(normalize(s, lambda v: v * 2), s * 2)


def test_lamp_importance_is_magnitude_with_the_lamp_normalizer():
    _m, dg = _concat()
    g = _by_root(dg)["b.weight"]
    raw = tp.importance.GroupMagnitudeImportance(p=2, normalizer=None)(g)
    torch.testing.assert_close(tp.importance.LAMPImportance(p=2)(g), normalize(raw, "lamp"))


def test_bn_scale_importance_and_groups_without_batch_norm():
    m = toys.Depthwise().double()
    dg = _graph(m, torch.randn(1, 3, 6, 6, dtype=torch.float64))
    (g,) = dg.groups()
    torch.testing.assert_close(tp.importance.BNScaleImportance()(g), m.bn.weight.detach().abs())
    _m2, dg2 = _concat()
    assert tp.importance.BNScaleImportance()(dg2.groups()[0]) is None


def test_fpgm_sums_distances_to_the_other_units():
    m = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).double()
    dg = _graph(m, torch.randn(1, 3, dtype=torch.float64))
    g = dg.groups()[0]
    imp = tp.importance.FPGMImportance(p=2, group_reduction="sum", normalizer=None)
    expected = torch.zeros(4, dtype=torch.float64)
    for t in (m[0].weight.detach(), m[0].bias.detach()[:, None], m[2].weight.detach().t()):
        expected += torch.stack([sum((t[i] - t[j]).norm() for j in range(4)) for i in range(4)])
    torch.testing.assert_close(imp(g), expected, rtol=1e-10, atol=1e-12)


def test_random_importance_is_seeded():
    _m, dg = _concat()
    g = dg.groups()[0]
    a, b = tp.importance.RandomImportance(seed=3)(g), tp.importance.RandomImportance(seed=3)(g)
    assert torch.equal(a, b)
    assert a.shape == (g.size,)
    assert not torch.equal(a, tp.importance.RandomImportance(seed=4)(g))


def _mlp():
    m = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2)).double()
    return m, _graph(m, torch.randn(1, 3, dtype=torch.float64)).groups()[0]


def test_taylor_importance_from_grad():
    m, g = _mlp()
    with pytest.raises(PruningError, match=r"run loss\.backward"):
        tp.importance.TaylorImportance()(g)
    m(torch.randn(4, 3, dtype=torch.float64)).pow(2).sum().backward()
    w0, g0 = m[0].weight.detach(), m[0].weight.grad
    w2, g2 = m[2].weight.detach(), m[2].weight.grad
    per = torch.stack([(w0 * g0).abs().sum(1), (w2 * g2).abs().sum(0)])
    imp = tp.importance.GroupTaylorImportance(normalizer=None)
    torch.testing.assert_close(imp(g), per.mean(0), rtol=1e-12, atol=0)
    multi = torch.stack([(w0 * g0).sum(1).abs(), (w2 * g2).sum(0).abs()]).mean(0)
    torch.testing.assert_close(tp.importance.GroupTaylorImportance(normalizer=None, multivariable=True)(g), multi,
                               rtol=1e-12, atol=0)


def test_hessian_importance_accumulates_squared_gradients():
    m, g = _mlp()
    imp = tp.importance.HessianImportance(normalizer=None, group_reduction="sum")
    with pytest.raises(PruningError, match="accumulate_grad"):
        imp(g)
    sq0 = torch.zeros_like(m[0].weight)
    sq2 = torch.zeros_like(m[2].weight)
    for x in torch.randn(3, 2, 3, dtype=torch.float64):
        m.zero_grad()
        m(x).pow(2).sum().backward()
        imp.accumulate_grad(m)
        sq0 += m[0].weight.grad.pow(2)
        sq2 += m[2].weight.grad.pow(2)
    expected = (m[0].weight.detach() ** 2 * sq0 / 3).sum(1) + (m[2].weight.detach() ** 2 * sq2 / 3).sum(0)
    torch.testing.assert_close(imp(g), expected, rtol=1e-6, atol=1e-12)  # squared grads are kept in float32
    imp.zero_grad()
    with pytest.raises(PruningError, match="accumulate_grad"):
        imp(g)


def test_activation_importance_from_calibration_batches():
    m, g = _mlp()
    batches = [torch.randn(8, 3, dtype=torch.float64) for _ in range(3)]
    imp = tp.importance.ActivationImportance(p=1, normalizer=None)
    with pytest.raises(PruningError, match="calibrate"):
        imp(g)
    m.train()
    imp.calibrate(m, batches)
    assert m.training, "calibrate restores the training flags"
    expected = torch.stack([m[0](b).abs().mean(0) for b in batches]).mean(0).detach()
    torch.testing.assert_close(imp(g), expected, rtol=1e-6, atol=1e-9)
    with pytest.raises(ConfigError, match="no batches"):
        imp.calibrate(m, [])


def test_activation_importance_for_conv_channels():
    m = toys.Depthwise().eval()
    x = torch.randn(2, 3, 6, 6)
    imp = tp.importance.ActivationImportance(p=2, normalizer=None, group_reduction="first")
    imp.calibrate(m, [x])
    (g,) = _graph(m, x).groups()
    torch.testing.assert_close(imp(g), m.pw(x).pow(2).mean((0, 2, 3)).double().detach(), rtol=1e-5, atol=1e-7)


def test_importances_reject_bad_arguments_and_multi_atom_groups():
    with pytest.raises(ConfigError, match="group_reduction must be one of"):
        tp.importance.GroupMagnitudeImportance(group_reduction="median")
    with pytest.raises(ConfigError, match="normalizer must be one of"):
        tp.importance.GroupMagnitudeImportance(normalizer="z")
    with pytest.raises(ConfigError, match="p must be a number > 0"):
        tp.importance.FPGMImportance(p=0)
    _m, dg = _concat()
    multi = tp.groups.group.Group(dg, [g.atoms[0] for g in dg.groups()], [], dg.groups()[0].root, None)
    with pytest.raises(PruningError, match="one-atom groups"):
        tp.importance.GroupMagnitudeImportance()(multi)


@pytest.mark.parametrize("name", ["GroupMagnitudeImportance", "LAMPImportance", "FPGMImportance", "RandomImportance",
                                  "TaylorImportance", "HessianImportance", "ActivationImportance",
                                  "BNScaleImportance"])
def test_every_criterion_drives_the_pruner(name):
    m = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 3)).eval()
    x = torch.randn(2, 3, 8, 8)
    imp = getattr(tp.importance, name)()
    if name in ("TaylorImportance", "HessianImportance"):
        m(x).sum().backward()
        if name == "HessianImportance":
            imp.accumulate_grad(m)
    if name == "ActivationImportance":
        imp.calibrate(m, [x])
    tp.pruner.MetaPruner(m, x, importance=imp, pruning_ratio=0.5).step()
    assert m[0].out_channels == 4
    assert m(x).shape == (2, 4, 4, 4)
