"""Sparse-training pruners: each regulariser adds exactly the gradient of its documented penalty."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import anyprune as tp
from anyprune.errors import ConfigError

X = torch.randn(2, 3, 6, 6, dtype=torch.float64)


def _model() -> nn.Module:
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.Conv2d(6, 4, 3, padding=1),
                      nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 1)).double()
    with torch.no_grad():
        m[1].weight.copy_(torch.randn(6, dtype=torch.float64))
        m[4].weight.copy_(torch.randn(4, dtype=torch.float64))
    return m


def _units(m: nn.Module) -> list[list[torch.Tensor]]:
    """Per group, per unit: every parameter entry the unit removes, written out by hand for this model."""
    groups = []
    for prod, bn, cons in ((m[0], m[1], m[3]), (m[3], m[4], m[6])):
        units = []
        for u in range(prod.out_channels):
            units.append(torch.cat([prod.weight[u].flatten(), prod.bias[u:u + 1], bn.weight[u:u + 1],
                                    bn.bias[u:u + 1], cons.weight[:, u].flatten()]))
        groups.append(units)
    return groups


def _added_grads(pruner, m) -> dict[str, torch.Tensor]:
    m.zero_grad()
    m(X).pow(2).sum().backward()
    before = {n: p.grad.clone() for n, p in m.named_parameters()}
    pruner.regularize(m)
    return {n: p.grad - before[n] for n, p in m.named_parameters()}


def _penalty_grads(m, penalty) -> dict[str, torch.Tensor]:
    params = dict(m.named_parameters())
    grads = torch.autograd.grad(penalty, list(params.values()), allow_unused=True)
    return {n: torch.zeros_like(p) if g is None else g for (n, p), g in zip(params.items(), grads)}


def test_bn_scale_pruner_adds_l1_subgradient():
    m = _model()
    pruner = tp.pruner.BNScalePruner(m, X, reg=0.1)
    added = _added_grads(pruner, m)
    for name, d in added.items():
        if name in ("1.weight", "4.weight"):
            gamma = dict(m.named_parameters())[name]
            torch.testing.assert_close(d, 0.1 * torch.sign(gamma.detach()), rtol=0, atol=1e-15)
        else:
            assert torch.count_nonzero(d) == 0, name


def test_group_norm_pruner_adds_group_lasso_gradient():
    m = _model()
    pruner = tp.pruner.GroupNormPruner(m, X, reg=0.05)
    added = _added_grads(pruner, m)
    penalty = 0.05 * sum(u.norm() for units in _units(m) for u in units)
    expected = _penalty_grads(m, penalty)
    for name in added:
        torch.testing.assert_close(added[name], expected[name], rtol=1e-10, atol=1e-12, msg=name)
    assert torch.count_nonzero(added["6.bias"]) == 0, "the pinned output is not regularised"


def test_growing_reg_pruner_grows_coefficients_and_adds_their_gradient():
    m = _model()
    imp = tp.importance.GroupMagnitudeImportance(p=2, normalizer=None)
    pruner = tp.pruner.GrowingRegPruner(m, X, importance=imp, reg=0.01, delta_reg=0.5)
    groups = pruner.DG.groups()
    for g in groups:
        torch.testing.assert_close(pruner.coefficients(g), torch.full((g.size,), 0.01, dtype=torch.float64))
    pruner.update_reg()
    lams = []
    for g in groups:
        s = imp(g)
        expected = 0.01 + 0.5 * (s.max() - s) / (s.max() - s.min() + 1e-8)
        torch.testing.assert_close(pruner.coefficients(g), expected, rtol=1e-12, atol=1e-12)
        lams.append(expected)
    assert float(lams[0].max()) == pytest.approx(0.51), "the least important unit grows by delta_reg"
    added = _added_grads(pruner, m)
    penalty = sum(lam[k] / 2 * u.pow(2).sum() for lam, units in zip(lams, _units(m)) for k, u in enumerate(units))
    expected_grads = _penalty_grads(m, penalty)
    for name in added:
        torch.testing.assert_close(added[name], expected_grads[name], rtol=1e-10, atol=1e-12, msg=name)
    pruner.update_regularizer()
    torch.testing.assert_close(pruner.coefficients(groups[0]), torch.full((6,), 0.01, dtype=torch.float64))


def test_regularize_creates_missing_grads_and_follows_pruning():
    m = _model()
    pruner = tp.pruner.GroupNormPruner(m, X, reg=0.1, pruning_ratio=0.5)
    pruner.regularize(m)  # no backward yet: the penalty's gradient alone
    assert m[0].weight.grad is not None
    pruner.step()
    pruner.update_regularizer()
    m.zero_grad()
    m(X).sum().backward()
    pruner.regularize(m)
    assert m[0].weight.grad.shape == (3, 3, 3, 3)


def test_regulariser_arguments_are_checked():
    with pytest.raises(ConfigError, match="reg must be a finite number >= 0"):
        tp.pruner.GroupNormPruner(_model(), X, reg=-1)
    with pytest.raises(ConfigError, match="delta_reg must be"):
        tp.pruner.GrowingRegPruner(_model(), X, delta_reg="big")


def test_meta_pruner_regularize_is_a_no_op():
    m = _model()
    pruner = tp.pruner.MagnitudePruner(m, X)
    added = _added_grads(pruner, m)
    assert all(torch.count_nonzero(d) == 0 for d in added.values())


def test_deprecation_warnings_point_at_the_caller_through_subclasses():
    with pytest.warns(FutureWarning, match="ch_sparsity is deprecated") as record:
        pruner = tp.pruner.GroupNormPruner(_model(), X, ch_sparsity=0.5)
    assert record[0].filename == __file__
    assert pruner.pruning_ratio == 0.5
