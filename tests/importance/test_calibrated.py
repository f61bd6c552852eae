"""Calibrated criteria against brute-force references (float64)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import anyprune as tp
from anyprune.importance.calibrated import consumer_slices


def _ls_relative_error(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, drop: torch.Tensor) -> float:
    """min over (W', b') of mean ||W x + b - W' x_keep - b'||^2, divided by mean ||W x + b||^2 (float64)."""
    y = x @ w.t() + (0 if b is None else b)
    keep = torch.ones(x.shape[1], dtype=torch.bool)
    keep[drop] = False
    a = x[:, keep]
    if b is not None:
        a = torch.cat([a, torch.ones(len(a), 1, dtype=x.dtype)], 1)
    sol = torch.linalg.lstsq(a, y).solution
    return float((a @ sol - y).square().sum() / y.square().sum())


def _group_of(dg, module_fqn: str):
    for g in dg.groups():
        if any(getattr(s, "fqn", "") == module_fqn + ".weight" and s.dim == 0 for s in g.slices):
            return g
    raise AssertionError(module_fqn)


def test_obs_cost_is_the_least_squares_error_of_removing_one_unit():
    model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3)).double()
    data = torch.randn(300, 5, dtype=torch.float64)
    imp = tp.importance.OBSImportance(damp=0.0, greedy_steps=0)
    imp.calibrate(model, [data])
    dg = tp.DependencyGraph().build_dependency(model, data[:1])
    g = _group_of(dg, "0")
    scores = imp(g)
    x = torch.relu(model[0](data)).detach()
    w, b = model[2].weight.detach(), model[2].bias.detach()
    expected = torch.tensor([_ls_relative_error(x, w, b, torch.tensor([u])) for u in range(8)], dtype=torch.float64)
    torch.testing.assert_close(scores, expected, rtol=1e-7, atol=1e-12)


def test_obs_cost_of_a_conv_channel_covers_its_whole_patch():
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Tanh(), nn.Conv2d(4, 5, 3, padding=1)).double()
    data = torch.randn(6, 3, 7, 7, dtype=torch.float64)
    imp = tp.importance.OBSImportance(damp=0.0, greedy_steps=0)
    imp.calibrate(model, [data])
    dg = tp.DependencyGraph().build_dependency(model, data[:1])
    scores = imp(_group_of(dg, "0"))
    h = torch.tanh(model[0](data)).detach()
    x = F.unfold(h, 3, padding=1).transpose(1, 2).reshape(-1, 36)
    w, b = model[2].weight.detach().reshape(5, -1), model[2].bias.detach()
    expected = [_ls_relative_error(x, w, b, torch.arange(9 * u, 9 * u + 9)) for u in range(4)]
    torch.testing.assert_close(scores, torch.tensor(expected, dtype=torch.float64), rtol=1e-6, atol=1e-12)


class _TwoReaders(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.up = nn.Linear(4, 6)
        self.a = nn.Linear(6, 3, bias=False)
        self.b = nn.Linear(6, 2)

    def forward(self, x):
        h = torch.relu(self.up(x))
        return self.a(h).sum(-1) + self.b(h).sum(-1)


def test_obs_sums_the_relative_costs_of_every_consumer():
    model = _TwoReaders().double()
    data = torch.randn(200, 4, dtype=torch.float64)
    imp = tp.importance.OBSImportance(damp=0.0, greedy_steps=0)
    imp.calibrate(model, [data])
    dg = tp.DependencyGraph().build_dependency(model, data[:1])
    g = _group_of(dg, "up")
    assert {s.module_name for s, _, _ in consumer_slices(g)} == {"a", "b"}
    x = torch.relu(model.up(data)).detach()
    expected = [_ls_relative_error(x, model.a.weight.detach(), None, torch.tensor([u]))
                + _ls_relative_error(x, model.b.weight.detach(), model.b.bias.detach(), torch.tensor([u]))
                for u in range(6)]
    torch.testing.assert_close(imp(g), torch.tensor(expected, dtype=torch.float64), rtol=1e-7, atol=1e-12)


class _Heads(nn.Module):
    """Two heads of width 3: the output projection reads heads x head_dim. ``view`` follows one factor of the
    projection: the heads (``-1`` heads of 3) or the head_dim (2 heads of ``-1``)."""

    def __init__(self, shape: tuple[int, int]) -> None:
        super().__init__()
        self.shape = shape
        self.v = nn.Linear(4, 6)
        self.o = nn.Linear(6, 4)

    def forward(self, x):
        b, n, _ = x.shape
        v = self.v(x).view(b, n, *self.shape).transpose(1, 2)
        attn = torch.softmax(v @ v.transpose(-1, -2), -1) @ v
        return self.o(attn.transpose(1, 2).reshape(b, n, -1))


@pytest.mark.parametrize(("shape", "units"), [((-1, 3), [[0, 1, 2], [3, 4, 5]]),
                                              ((2, -1), [[0, 3], [1, 4], [2, 5]])], ids=["heads", "head_dim"])
def test_obs_heads_and_head_dim_remove_the_right_feature_blocks(shape, units):
    model = _Heads(shape).double()
    data = torch.randn(40, 5, 4, dtype=torch.float64)
    imp = tp.importance.OBSImportance(damp=0.0, greedy_steps=0)
    imp.calibrate(model, [data])
    dg = tp.DependencyGraph().build_dependency(model, data[:1])
    (g,) = [g for g in dg.groups() if any(s.module_name == "o" and s.dim == 1 for s in g.slices)]
    assert g.size == len(units)
    feats: dict = {}
    model.o.register_forward_pre_hook(lambda m, a: feats.__setitem__("x", a[0].reshape(-1, 6).detach()))
    model(data)
    w, b = model.o.weight.detach(), model.o.bias.detach()
    expected = [_ls_relative_error(feats["x"], w, b, torch.tensor(u)) for u in units]
    torch.testing.assert_close(imp(g), torch.tensor(expected, dtype=torch.float64), rtol=1e-6, atol=1e-12)


def test_wanda_and_fluctuation_formulas():
    model = nn.Sequential(nn.Linear(3, 6), nn.ReLU(), nn.Linear(6, 2)).double()
    data = torch.randn(100, 3, dtype=torch.float64)
    dg = tp.DependencyGraph().build_dependency(model, data[:1])
    g = dg.groups()[0]
    x = torch.relu(model[0](data)).detach()
    w = model[2].weight.detach()
    wanda = tp.importance.WandaSPImportance(normalizer=None)
    wanda.calibrate(model, data)
    torch.testing.assert_close(wanda(g), w.abs().sum(0) * x.square().mean(0).sqrt())
    flap = tp.importance.FluctuationImportance(normalizer=None)
    flap.calibrate(model, data)
    torch.testing.assert_close(flap(g), w.square().sum(0) * x.var(0, unbiased=False))


def _tiny_llama():
    transformers = pytest.importorskip("transformers")
    cfg = transformers.LlamaConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=3,
                                   num_attention_heads=4, num_key_value_heads=2, vocab_size=64)
    return transformers.LlamaForCausalLM(cfg).eval()


@pytest.mark.parametrize("cls", [tp.importance.OBSImportance, tp.importance.WandaSPImportance,
                                 tp.importance.FluctuationImportance])
def test_streamed_scores_equal_one_pass_scores(cls):
    model = _tiny_llama()
    ids = torch.randint(0, 64, (8, 12))
    dg = tp.DependencyGraph().build_dependency(model, ids[:1], output_transform=lambda o: o.logits)
    groups = dg.groups()
    one, streamed = cls(), cls()
    one.calibrate(model, ids)
    streamed.calibrate(model, ids, groups=groups)
    assert not streamed._stats  # only scores were kept
    scored = 0
    for g in groups:
        a, b = one(g), streamed(g)
        assert (a is None) == (b is None)
        if a is not None:
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-8)
            scored += 1
    assert scored == len(groups)  # every group of a Llama has a linear consumer


def test_errors_say_what_to_do():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    dg = tp.DependencyGraph().build_dependency(model, torch.randn(1, 3))
    imp = tp.importance.OBSImportance()
    with pytest.raises(tp.PruningError, match="not calibrated"):
        imp(dg.groups()[0])
    with pytest.raises(tp.ConfigError, match="damp"):
        tp.importance.OBSImportance(damp=-1)
    with pytest.raises(tp.ConfigError, match=r"nn\.Module"):
        imp.calibrate("model", [torch.randn(2, 3)])
    imp.calibrate(model, [torch.randn(8, 3)])
    dg.groups()[0].prune([0])
    with pytest.raises(tp.PruningError, match="calibrate again"):
        imp(dg.groups()[0])
    with pytest.raises(tp.ConfigError, match="needs calibration data"):
        tp.pruner.MetaPruner(model, torch.randn(1, 3), importance=tp.importance.WandaSPImportance())


def test_group_without_calibrated_consumer_is_left_alone():
    class M(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv1d(3, 4, 1)
            self.b = nn.Conv1d(4, 4, 1, groups=2)  # grouped: not a consumer

        def forward(self, x):
            return self.b(torch.relu(self.a(x)))

    model = M()
    x = torch.randn(2, 3, 5)
    dg = tp.DependencyGraph().build_dependency(model, x)
    imp = tp.importance.OBSImportance()
    imp.calibrate(model, [x])
    lonely = [g for g in dg.groups() if not consumer_slices(g)]
    assert lonely
    assert all(imp(g) is None for g in lonely)


def test_greedy_obs_follows_the_brute_force_greedy_least_squares_order():
    model = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 3)).double()
    data = torch.randn(300, 5, dtype=torch.float64)
    imp = tp.importance.OBSImportance(damp=0.0, greedy_steps=100)  # one unit per round
    imp.calibrate(model, [data])
    dg = tp.DependencyGraph().build_dependency(model, data[:1])
    scores = imp(_group_of(dg, "0"))
    x = torch.tanh(model[0](data)).detach()
    w, b = model[2].weight.detach(), model[2].bias.detach()
    removed: list[int] = []
    marginal: list[float] = []
    before = 0.0
    for _ in range(6):  # greedily remove the unit whose removal (with a least-squares re-fit) costs least
        errs = {u: _ls_relative_error(x, w, b, torch.tensor([*removed, u])) for u in range(7) if u not in removed}
        u = min(errs, key=errs.get)
        removed.append(u)
        marginal.append(errs[u] - before)
        before = errs[u]
    assert scores.argsort()[:6].tolist() == removed
    torch.testing.assert_close(scores[removed], torch.tensor(marginal, dtype=torch.float64).cummax(0).values,
                               rtol=1e-6, atol=1e-12)
    assert float(scores.max()) > float(scores[removed].max())  # the last unit is never the cheapest


def test_greedy_obs_in_rounds_scores_every_unit_and_keeps_multi_consumer_groups_one_shot():
    model = _TwoReaders().double()
    data = torch.randn(200, 4, dtype=torch.float64)
    greedy = tp.importance.OBSImportance(damp=0.0, greedy_steps=2)
    plain = tp.importance.OBSImportance(damp=0.0, greedy_steps=0)
    greedy.calibrate(model, [data])
    plain.calibrate(model, [data])
    dg = tp.DependencyGraph().build_dependency(model, data[:1])
    g = _group_of(dg, "up")  # two consumers: the one-shot costs
    torch.testing.assert_close(greedy(g), plain(g))
    with pytest.raises(tp.ConfigError, match="greedy_steps"):
        tp.importance.OBSImportance(greedy_steps=-1)
