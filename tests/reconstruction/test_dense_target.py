"""Re-fitting toward the dense model: cross statistics, the corrected least-squares optimum, the
cross-validation gate, stage-by-stage pruning of models without a chain of blocks, and choosing units again."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import anyprune as tp
from anyprune.calibration import InputStats, StatsCollector, stream_statistics
from anyprune.calibration.runner import twins
from anyprune.errors import ConfigError
from anyprune.reconstruction import least_squares_refit, prune_and_reconstruct
from anyprune.reconstruction.refit import correct_to_reference


def _pairs(n: int, f: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, f, generator=g, dtype=torch.float64)
    r = x @ (torch.eye(f, dtype=torch.float64) + 0.3 * torch.randn(f, f, generator=g, dtype=torch.float64)) + 0.2
    return r, x


def test_cross_products_fold_and_split_are_sums_over_rows():
    r, x = _pairs(50, 4)
    st = InputStats.empty(4)
    for k, (rr, xx) in enumerate(zip(r.split(10), x.split(10))):
        st.add(xx, fold=k % 2 == 1)
        st.add_reference(rr, xx, fold=k % 2 == 1)
    torch.testing.assert_close(st.cross, r.t() @ x, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(st.ref_gram, r.t() @ r, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(st.ref_sum, r.sum(0), rtol=1e-12, atol=1e-12)
    odd = torch.cat([x[10:20], x[30:40]])
    fold, rest = st.split()
    assert (fold.rows, rest.rows) == (20, 30)
    torch.testing.assert_close(fold.gram, odd.t() @ odd, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(rest.gram + fold.gram, st.gram, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(rest.cross + fold.cross, st.cross, rtol=1e-12, atol=1e-12)
    st.drop_reference()
    assert st.cross is None
    assert st.fold is not None  # the fold keeps its own statistics (for cross-validated choices), not the cross
    assert st.fold.cross is None
    fold, rest = st.split()  # still splits, now without cross products
    assert (fold.rows, rest.rows, rest.cross) == (20, 30, None)


@pytest.mark.parametrize("with_bias", [True, False])
def test_refit_to_the_reference_is_the_least_squares_optimum(with_bias):
    r, x = _pairs(200, 6, seed=1)
    w = torch.randn(3, 6, dtype=torch.float64)
    b = torch.randn(3, dtype=torch.float64) if with_bias else None
    st = InputStats.empty(6)
    st.add(x)
    st.add_reference(r, x)
    kept = torch.tensor([0, 1, 3, 4])
    w2, b2 = least_squares_refit(w, b, st, kept, damp=0.0)
    y = r @ w.t() + (0 if b is None else b)  # the reference output
    a = x[:, kept] if b is None else torch.cat([x[:, kept], torch.ones(200, 1, dtype=torch.float64)], 1)
    ref = torch.linalg.lstsq(a, y).solution.t()
    torch.testing.assert_close(w2, ref[:, :4], rtol=1e-8, atol=1e-10)
    if with_bias:
        torch.testing.assert_close(b2, ref[:, 4], rtol=1e-8, atol=1e-10)


def test_collector_pairs_each_row_with_the_reference_models_row():
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3), nn.Linear(3, 2)).double()
    ref = copy.deepcopy(model)
    with torch.no_grad():
        model[0].weight.mul_(0.5)  # the model now feeds its consumers something else than the reference
    data = [torch.randn(7, 4, dtype=torch.float64) for _ in range(3)]
    twin = twins(model, ref)
    consumers = [model[2], model[3]]
    with StatsCollector(consumers, reference={m: twin[m] for m in consumers}) as col, torch.no_grad():
        for batch in data:
            col.new_batch()
            col.phase = "reference"
            ref(batch)
            col.phase = "model"
            model(batch)
        col.new_batch()
    x = torch.cat(data)
    with torch.no_grad():
        hx, hr = torch.tanh(model[0](x)), torch.tanh(ref[0](x))
        h2x, h2r = model[2](hx), ref[2](hr)
    st = col.stats[model[2]]
    torch.testing.assert_close(st.gram, hx.t() @ hx, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(st.cross, hr.t() @ hx, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(col.stats[model[3]].cross, h2r.t() @ h2x, rtol=1e-10, atol=1e-10)
    assert st.fold is not None
    assert st.fold.rows == 14  # every other batch: the first and the third


def test_a_consumer_that_does_not_pair_gets_no_cross_products():
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2)).double()
    ref = copy.deepcopy(model)
    data = torch.randn(5, 4, dtype=torch.float64)
    with StatsCollector([model[1]], reference={model[1]: ref[1]}) as col, torch.no_grad():
        col.new_batch()
        col.phase = "reference"
        ref(data)
        ref(data)  # the reference ran the consumer twice, the model once
        col.phase = "model"
        model(data)
        col.new_batch()
    assert col.stats[model[1]].cross is None
    assert col.stats[model[1]].rows == 5


def test_block_stream_forks_a_reference_when_a_block_changes():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = nn.ModuleList(nn.Sequential(nn.Linear(5, 5), nn.Tanh()) for _ in range(3))
            self.head = nn.Linear(5, 2)

        def forward(self, x):
            for b in self.blocks:
                x = b(x)
            return self.head(x)

    model = Net().double()
    dense = copy.deepcopy(model)
    data = [torch.randn(6, 5, dtype=torch.float64) for _ in range(2)]
    got: dict = {}

    def before_advance(k):
        if k == 0:
            with torch.no_grad():
                model.blocks[0][0].weight.mul_(0.7)
            return True
        return False

    with torch.no_grad():
        stream_statistics(model, data, [*(b[0] for b in model.blocks), model.head],
                          on_stats=lambda st, k: got.update(st), before_advance=before_advance, reference=True)
        x = torch.cat(data)
        cur = model.blocks[0](x)
        ref = dense.blocks[0](x)
        last, ref_last = model.blocks[2](model.blocks[1](cur)), dense.blocks[2](dense.blocks[1](ref))
    head = got[model.head]  # after the last block: the reference outputs replayed through the tail
    torch.testing.assert_close(head.gram, last.t() @ last, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(head.cross, ref_last.t() @ last, rtol=1e-10, atol=1e-10)
    st = got[model.blocks[1][0]]
    torch.testing.assert_close(st.gram, cur.t() @ cur, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(st.cross, ref.t() @ cur, rtol=1e-10, atol=1e-10)
    assert got[model.blocks[0][0]].cross is None  # nothing had changed before block 0


def test_correction_is_applied_where_it_generalises_and_only_there():
    g = torch.Generator().manual_seed(3)
    lin = nn.Linear(8, 4).double()
    w0 = lin.weight.detach().clone()
    # a systematic, learnable difference between reference and inputs, many rows per feature: corrected
    mix = torch.eye(8, dtype=torch.float64) + 0.5 * torch.randn(8, 8, generator=g, dtype=torch.float64)
    st = InputStats.empty(8)
    for k in range(4):
        x = torch.randn(400, 8, generator=g, dtype=torch.float64)
        st.add(x, fold=k % 2 == 1)
        st.add_reference(x @ mix, x, fold=k % 2 == 1)
    assert correct_to_reference({lin: st}, damp=0.0) == [lin]
    torch.testing.assert_close(lin.weight.detach(), w0 @ mix.t(), rtol=1e-8, atol=1e-8)  # W r = W mix^T-free
    assert st.cross is None
    # pure noise between reference and inputs, fewer rows than features: left alone
    lin2 = nn.Linear(8, 4).double()
    w2 = lin2.weight.detach().clone()
    st2 = InputStats.empty(8)
    for k in range(4):
        x = torch.randn(3, 8, generator=g, dtype=torch.float64)
        st2.add(x, fold=k % 2 == 1)
        st2.add_reference(torch.randn(3, 8, generator=g, dtype=torch.float64), x, fold=k % 2 == 1)
    assert correct_to_reference({lin2: st2}, damp=0.01) == []
    assert torch.equal(lin2.weight.detach(), w2)


def _cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(8, 6, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 16, 3)).double()


def _plans(model, data):
    dg = tp.DependencyGraph().build_dependency(model, data[:1])
    imp = tp.importance.OBSImportance()
    imp.calibrate(model, [data])
    plans = []
    for g in dg.get_all_groups(ignored_layers=[model[7]]):
        s = imp(g)
        plans.append((g, torch.argsort(s)[: g.size // 2].sort().values))
    return plans, imp


def test_stages_without_a_chain_of_blocks():
    torch.manual_seed(12)
    data = torch.randn(128, 2, 4, 4, dtype=torch.float64)
    base = _cnn()
    torch.manual_seed(2)
    with torch.no_grad():
        for p in base.parameters():
            p.copy_(torch.randn_like(p) * 0.5)
        dense_out = base(data)
    errs = {}
    for t in ("dense", "layer", "one pass"):
        model = copy.deepcopy(base)
        plans, _ = _plans(model, data)
        rep = prune_and_reconstruct(model, plans, list(data.split(32)), target="layer" if t == "one pass" else t,
                                    sequential=t != "one pass")
        assert rep.stages == (1 if t == "one pass" else 3)  # the three conv groups, in the order data meets them
        assert (len(rep.corrected) > 0) == (t == "dense")
        with torch.no_grad():
            errs[t] = float((model(data) - dense_out).square().mean())
    # correcting each stage toward the dense model also removes the error the earlier stages left
    assert errs["dense"] < 0.8 * min(errs["layer"], errs["one pass"])


def test_rescore_chooses_units_on_the_statistics_met_at_the_groups_turn():
    data = torch.randn(64, 2, 4, 4, dtype=torch.float64)
    model = _cnn()
    plans, _ = _plans(model, data)
    seen = []

    def rescore(group, stats):
        seen.append(group.size)
        return -torch.arange(group.size, dtype=torch.float64)  # keep the first units, remove the last

    rep = prune_and_reconstruct(model, plans, list(data.split(16)), rescore=rescore)
    assert seen == [8, 8, 6]
    assert rep.rechosen > 0
    assert [model[0].out_channels, model[2].out_channels, model[4].out_channels] == [4, 4, 3]


def test_deferred_groups_that_cannot_be_scored_are_left_alone():
    data = torch.randn(64, 2, 4, 4, dtype=torch.float64)
    model = _cnn()
    plans, _ = _plans(model, data)
    first = plans[0][0]
    rep = prune_and_reconstruct(model, plans, list(data.split(16)), deferred=[g for g, _ in plans],
                                rescore=lambda g, st: None if g is first else -torch.arange(g.size).double())
    assert (rep.skipped, rep.skipped_units) == (1, 4)
    assert [model[0].out_channels, model[2].out_channels, model[4].out_channels] == [8, 4, 3]
    with pytest.raises(ConfigError, match="rescore"):
        prune_and_reconstruct(model, [], [data], deferred=[first])


def test_uniform_plans_need_no_scoring_pass():
    data = torch.randn(32, 2, 4, 4, dtype=torch.float64)
    model = _cnn()
    imp = tp.importance.OBSImportance()
    pr = tp.pruner.MetaPruner(model, data[:1], importance=imp, pruning_ratio=0.5, ignored_layers=[model[7]],
                              calibration=list(data.split(8)), reconstruct=True)
    result = pr.step()
    assert not imp._calibrated  # units were chosen by the reconstruction, at each group's turn
    assert (result.groups_pruned, result.indices_pruned) == (3, 11)
    assert [model[0].out_channels, model[2].out_channels, model[4].out_channels] == [4, 4, 3]


def test_metapruner_and_config_take_the_target():
    data = torch.randn(32, 2, 4, 4, dtype=torch.float64)
    model = _cnn()
    pr = tp.pruner.MetaPruner(model, data[:1], importance=tp.importance.OBSImportance(), pruning_ratio=0.5,
                              ignored_layers=[model[7]], calibration=list(data.split(8)), reconstruct=True,
                              reconstruction_target="layer")
    pr.step()
    assert pr.reconstruction[-1].corrected == []
    assert tp.PruneConfig(reconstruction_target="dense").reconstruction_target == "dense"
    with pytest.raises(ConfigError, match="reconstruction_target"):
        tp.PruneConfig(reconstruction_target="teacher")
    with pytest.raises(ConfigError, match="reconstruction_target"):
        tp.pruner.MetaPruner(model, data[:1], calibration=data, reconstruct=True, reconstruction_target=None)
    with pytest.raises(ConfigError, match="target"):
        prune_and_reconstruct(model, [], [data], target="x")
