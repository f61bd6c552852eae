"""Reconstruction: the least-squares re-fit is the optimum, agrees with the OBS cost, works block by block."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import anyprune as tp
from anyprune.calibration import InputStats
from anyprune.reconstruction import Reconstructor, least_squares_refit, prune_and_reconstruct, reestimate_batchnorm


@pytest.mark.parametrize("with_bias", [True, False])
def test_refit_is_the_least_squares_optimum(with_bias):
    x = torch.randn(120, 6, dtype=torch.float64) + 0.5
    w = torch.randn(4, 6, dtype=torch.float64)
    b = torch.randn(4, dtype=torch.float64) if with_bias else None
    st = InputStats.empty(6)
    st.add(x)
    kept = torch.tensor([0, 2, 3, 5])
    w2, b2 = least_squares_refit(w, b, st, kept, damp=0.0)
    y = x @ w.t() + (0 if b is None else b)
    a = x[:, kept] if b is None else torch.cat([x[:, kept], torch.ones(120, 1, dtype=torch.float64)], 1)
    ref = torch.linalg.lstsq(a, y).solution.t()
    torch.testing.assert_close(w2, ref[:, :4], rtol=1e-8, atol=1e-10)
    if with_bias:
        torch.testing.assert_close(b2, ref[:, 4], rtol=1e-8, atol=1e-10)
    else:
        assert b2 is None


def test_refit_error_equals_the_obs_cost_of_the_removed_unit():
    model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3)).double()
    data = torch.randn(300, 5, dtype=torch.float64)
    dense = model(data).detach()
    imp = tp.importance.OBSImportance(damp=0.0, greedy_steps=0)
    imp.calibrate(model, [data])
    stats = tp.calibration.collect(model, [data])
    dg = tp.DependencyGraph().build_dependency(model, data[:1])
    g = dg.groups()[0]
    cost = imp(g)
    u = int(cost.argmin())
    rec = Reconstructor(damp=0.0)
    rec.watch(g, g.removal([u]))
    g.prune([u])
    assert rec.refit(stats) == [model[2]]
    with torch.no_grad():
        err = float((model(data) - dense).square().sum() / dense.square().sum())
    assert err == pytest.approx(float(cost[u]), rel=1e-7)


def test_conv_consumer_refit_matches_lstsq_on_unfolded_patches():
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.Tanh(), nn.Conv2d(6, 4, 3, padding=1)).double()
    data = torch.randn(8, 3, 6, 6, dtype=torch.float64)
    stats = tp.calibration.collect(model, [data])
    h = torch.tanh(model[0](data)).detach()
    w, b = model[2].weight.detach().reshape(4, -1), model[2].bias.detach()
    dg = tp.DependencyGraph().build_dependency(model, data[:1])
    g = dg.groups()[0]
    rec = Reconstructor(damp=0.0)
    rec.watch(g, g.removal([1, 4]))
    g.prune([1, 4])
    rec.refit(stats)
    x = F.unfold(h, 3, padding=1).transpose(1, 2).reshape(-1, 54)
    keep = torch.tensor([c * 9 + k for c in (0, 2, 3, 5) for k in range(9)])
    a = torch.cat([x[:, keep], torch.ones(len(x), 1, dtype=torch.float64)], 1)
    ref = torch.linalg.lstsq(a, x @ w.t() + b).solution.t()
    torch.testing.assert_close(model[2].weight.detach().reshape(4, -1), ref[:, :36], rtol=1e-7, atol=1e-9)
    torch.testing.assert_close(model[2].bias.detach(), ref[:, 36], rtol=1e-7, atol=1e-9)


def _tiny_llama(layers: int = 3):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.LlamaConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=layers,
                                   num_attention_heads=4, num_key_value_heads=2, vocab_size=64)
    return transformers.LlamaForCausalLM(cfg).eval().double()


def _prune(model, ids, sequential, ratio_dict=None, ratio=0.5, **kw):
    pruner = tp.pruner.MetaPruner(
        model, ids[:1], importance=tp.importance.OBSImportance(), pruning_ratio=ratio,
        pruning_ratio_dict=ratio_dict, output_transform=lambda o: o.logits,
        ignored_layers=[model.lm_head, model.model.embed_tokens], calibration=ids, reconstruct=True,
        sequential=sequential, calibration_batch_size=4, **kw)
    pruner.step()
    return pruner


@pytest.mark.parametrize("layer", [0, 2])
def test_sequential_equals_one_pass_when_one_block_is_pruned(layer):
    base = _tiny_llama()
    ids = torch.randint(0, 64, (8, 12))
    models = [copy.deepcopy(base), copy.deepcopy(base)]
    for m, seq in zip(models, (True, False)):
        _prune(m, ids, seq, ratio_dict={m.model.layers[layer].mlp: 0.5}, ratio=0.0)
    a, b = models
    assert a.model.layers[layer].mlp.down_proj.weight.shape == (32, 24)
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        torch.testing.assert_close(p, q, rtol=1e-9, atol=1e-11, msg=n)
    dense = base(ids).logits
    plain = copy.deepcopy(base)
    tp.pruner.MetaPruner(plain, ids[:1], importance=tp.importance.OBSImportance(), pruning_ratio=0.0,
                         pruning_ratio_dict={plain.model.layers[layer].mlp: 0.5},
                         output_transform=lambda o: o.logits, ignored_layers=[plain.lm_head], calibration=ids).step()
    assert (a(ids).logits - dense).square().mean() < (plain(ids).logits - dense).square().mean()


def test_sequential_reconstruction_of_every_block_and_the_residual_stream():
    base = _tiny_llama()
    ids = torch.randint(0, 64, (8, 12))
    model = copy.deepcopy(base)
    pruner = tp.pruner.MetaPruner(
        model, ids[:1], importance=tp.importance.OBSImportance(), pruning_ratio=0.25,
        output_transform=lambda o: o.logits, ignored_layers=[model.lm_head], calibration=ids, reconstruct=True,
        prune_num_heads=True, head_pruning_ratio=0.5)
    pruner.step()
    rep = pruner.reconstruction[-1]
    assert rep.blocks == 3
    assert rep.stages >= 1  # the residual stream lies outside the blocks
    assert rep.rechosen > 0  # units chosen on the statistics of the already pruned blocks
    assert "lm_head" in rep.refitted  # a reader of the pruned residual stream
    for k in range(3):
        for name in ("self_attn.q_proj", "self_attn.o_proj", "mlp.down_proj"):
            assert f"model.layers.{k}.{name}" in rep.refitted
    assert model.config.hidden_size == 24
    assert model.config.intermediate_size == 36
    assert model.config.num_attention_heads == 2
    tp.DependencyGraph().build_dependency(model, ids[:1], output_transform=lambda o: o.logits).lint()
    assert model(ids).logits.shape == (8, 12, 64)


def test_reconstructed_llama_round_trips_through_from_pretrained(tmp_path):
    transformers = pytest.importorskip("transformers")
    from anyprune.integrations.huggingface import config_matches

    model = _tiny_llama().float()
    ids = torch.randint(0, 64, (8, 12))
    shapes = {}
    for rec in (False, True):
        m = copy.deepcopy(model)
        tp.pruner.MetaPruner(m, ids[:1], importance=tp.importance.OBSImportance(), pruning_ratio=0.25,
                             output_transform=lambda o: o.logits, ignored_layers=[m.lm_head],
                             calibration=ids, reconstruct=rec).step()
        shapes[rec] = {n: tuple(p.shape) for n, p in m.named_parameters()}
    assert shapes[True] == shapes[False]  # reconstruction changes values, never shapes
    assert config_matches(m)
    m.save_pretrained(tmp_path)
    again = transformers.LlamaForCausalLM.from_pretrained(tmp_path).eval()
    with torch.no_grad():
        torch.testing.assert_close(again(ids).logits, m(ids).logits, rtol=1e-5, atol=1e-5)


class _BNNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU()),
            nn.Sequential(nn.Conv2d(8, 8, 1), nn.BatchNorm2d(8), nn.ReLU()),
            nn.Sequential(nn.Conv2d(8, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU()))
        self.head = nn.Linear(6, 3)

    def forward(self, x):
        return self.head(self.features(x).mean((2, 3)))


def test_cnn_with_batchnorm_reconstruction_lowers_the_error_and_reestimates_statistics():
    model = _BNNet()
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(16, 3, 8, 8))
    model.eval()
    data = [torch.randn(16, 3, 8, 8) for _ in range(4)]
    x = torch.cat(data)
    dense = model(x).detach()
    errs = {}
    for rec in (False, True):
        m = copy.deepcopy(model)
        p = tp.pruner.MetaPruner(m, data[0][:1], importance=tp.importance.OBSImportance(), pruning_ratio=0.5,
                                 ignored_layers=[m.head], calibration=data, reconstruct=rec)
        p.step()
        if rec:
            assert p.reconstruction[-1].batchnorm_layers == 0  # every consumer re-fitted: statistics still hold
            assert p.reconstruction[-1].not_refitted == []
            assert p.reconstruction[-1].blocks == 0  # every group spans two blocks: one pass, before pruning
        errs[rec] = float((m(x) - dense).square().mean())
    assert errs[True] < errs[False]


def test_batchnorm_reestimation_is_the_mean_over_batches_and_restores_modes():
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.Dropout(0.3)).eval()
    model[1].momentum = 0.3
    data = [torch.randn(8, 3, 4, 4) * 2 + 1 for _ in range(3)]
    assert reestimate_batchnorm(model, data) == 1
    ys = [model[0](d).detach() for d in data]
    torch.testing.assert_close(model[1].running_mean, torch.stack([y.mean((0, 2, 3)) for y in ys]).mean(0))
    torch.testing.assert_close(model[1].running_var, torch.stack([y.var((0, 2, 3)) for y in ys]).mean(0))
    assert not model.training
    assert not model[1].training
    assert model[1].momentum == 0.3
    before = model[1].running_mean.clone()
    with pytest.raises(RuntimeError):
        reestimate_batchnorm(model, [torch.randn(2, 5, 4, 4)])  # wrong channels: nothing changes
    assert torch.equal(model[1].running_mean, before)
    assert reestimate_batchnorm(nn.Linear(2, 2), data) == 0


def test_reconstruction_arguments_are_checked():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    with pytest.raises(tp.ConfigError, match="needs calibration data"):
        tp.pruner.MetaPruner(model, torch.randn(1, 3), reconstruct=True)
    with pytest.raises(tp.ConfigError, match="reconstruct must be True or False"):
        tp.pruner.MetaPruner(model, torch.randn(1, 3), reconstruct="yes", calibration=torch.randn(4, 3))
    with pytest.raises(tp.ConfigError, match="reconstruction_damp"):
        tp.pruner.MetaPruner(model, torch.randn(1, 3), reconstruction_damp=-1.0, calibration=torch.randn(4, 3))
    with pytest.raises(tp.ConfigError, match="damp"):
        Reconstructor(damp=-1)


def test_prune_and_reconstruct_magnitude_plans_on_a_plain_mlp():
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 2)).double()
    data = torch.randn(200, 4, dtype=torch.float64)
    dense = model(data).detach()
    dg = tp.DependencyGraph().build_dependency(model, data[:1])
    plans = [(g, torch.arange(8)) for g in dg.groups()]
    rep = prune_and_reconstruct(model, plans, [data], damp=0.0)
    assert sorted(rep.refitted) == ["2", "4"]
    assert rep.blocks == 0
    assert model[2].weight.shape == (8, 8)
    assert float((model(data) - dense).square().mean()) < float(dense.square().mean())


def test_reconstructed_cnn_round_trips_through_save_pruned(tmp_path):
    model = _BNNet().eval()
    data = [torch.randn(8, 3, 8, 8) for _ in range(3)]
    tp.pruner.MetaPruner(model, data[0][:1], importance=tp.importance.OBSImportance(), pruning_ratio=0.5,
                         ignored_layers=[model.head], calibration=data, reconstruct=True).step()
    tp.save_pruned(model, tmp_path / "pruned")
    fresh = _BNNet().eval()
    tp.load_pruned(fresh, tmp_path / "pruned")
    x = torch.randn(4, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), model(x), rtol=0, atol=0)
