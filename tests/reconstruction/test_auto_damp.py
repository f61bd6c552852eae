"""reconstruction_damp="auto": the re-fit's damping chosen per consumer by two-fold cross-validation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import anyprune as tp
from anyprune.calibration import InputStats, StatsCollector
from anyprune.calibration.stats import collecting_folds
from anyprune.reconstruction import least_squares_refit
from anyprune.reconstruction.refit import DAMP_GRID, Reconstructor, _fit_error, choose_damp


def _stats(batches: list[torch.Tensor]) -> InputStats:
    st = InputStats.empty(batches[0].shape[1])
    for j, x in enumerate(batches):
        st.add(x, fold=j % 2 == 1)
    return st


@pytest.mark.parametrize("bias", [False, True])
def test_held_out_error_is_the_mean_squared_output_error_on_the_other_half(bias):
    torch.manual_seed(0)
    batches = [torch.randn(30, 6, dtype=torch.float64) @ torch.randn(6, 6, dtype=torch.float64) for _ in range(4)]
    st = _stats(batches)
    fold, rest = st.split()
    w = torch.randn(3, 6, dtype=torch.float64)
    b = torch.randn(3, dtype=torch.float64) if bias else None
    kept = torch.tensor([0, 2, 3, 5])
    sol, sb = least_squares_refit(w, b, rest, kept, 0.05)
    held_out = torch.cat([batches[1], batches[3]])  # the fold: every other batch
    want = ((held_out @ w.T + (0 if b is None else b)) - (held_out[:, kept] @ sol.T + (0 if sb is None else sb)))
    want = float(want.square().sum(1).mean())
    wa = w if b is None else torch.cat([w, b[:, None]], 1)
    fitted = sol if sb is None else torch.cat([sol, sb[:, None]], 1)
    cols = kept if b is None else torch.cat([kept, torch.tensor([6])])
    assert _fit_error(wa, fitted, fold, cols) == pytest.approx(want, rel=1e-9)


def test_choose_damp_is_the_grid_value_with_the_least_held_out_error_scaled_to_all_rows():
    torch.manual_seed(1)
    batches = [torch.randn(8, 10, dtype=torch.float64) for _ in range(4)]  # few rows: damping matters
    st = _stats(batches)
    w = torch.randn(4, 10, dtype=torch.float64)
    kept = torch.arange(0, 10, 2)
    halves = st.split()
    errors = {}
    for d in DAMP_GRID:
        err = 0.0
        for fit_on, check_on in (halves, halves[::-1]):
            sol, _ = least_squares_refit(w, None, fit_on, kept, d)
            err += _fit_error(w, sol, check_on, kept)
        errors[d] = err
    best = min(errors, key=errors.get)
    assert choose_damp(w, None, st, kept) == pytest.approx(best * 16 / 32)
    one_batch = _stats(batches[:1])  # no fold: the default
    assert choose_damp(w, None, one_batch, kept) == 0.1


def test_reconstructor_auto_uses_folds_collected_on_request():
    torch.manual_seed(2)
    data = [torch.randn(16, 5, dtype=torch.float64) for _ in range(4)]
    for folds in (True, False):
        torch.manual_seed(2)
        m = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3)).double().eval()
        (g,) = tp.DependencyGraph().build_dependency(m, data[0]).groups()
        rec = Reconstructor("auto")
        ctx = collecting_folds() if folds else torch.no_grad()
        with ctx, StatsCollector([m[2]]) as col, torch.no_grad():
            for x in data:
                col.new_batch()
                m(x)
        assert (col.stats[m[2]].fold is not None) == folds
        rec.watch(g, g.removal([0, 1, 2]))
        g.prune([0, 1, 2])
        assert rec.refit(col.stats) == [m[2]]
        if folds:
            assert rec.chosen[m[2]] in {d * 0.5 for d in DAMP_GRID}  # half the rows in each fold
        else:
            assert rec.chosen[m[2]] == 0.1


def test_meta_pruner_accepts_auto_and_refuses_other_words():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 3, padding=1)).eval()
    calib = torch.randn(16, 3, 6, 6)
    pruner = tp.pruner.MetaPruner(model, calib[:1], importance=tp.importance.OBSImportance(), pruning_ratio=0.5,
                                  calibration=calib, calibration_batch_size=4, reconstruct=True,
                                  reconstruction_damp="auto")
    pruner.step()
    assert model[0].out_channels == 4
    with pytest.raises(tp.ConfigError, match="or 'auto'"):
        tp.pruner.MetaPruner(model, calib[:1], calibration=calib, reconstruct=True, reconstruction_damp="fast")


def test_dropping_the_reference_keeps_the_fold():
    st = InputStats.empty(3)
    x, r = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    st.add(x, fold=True)
    st.add_reference(r, x, fold=True)
    st.drop_reference()
    assert st.cross is None
    assert st.fold is not None
    assert st.fold.cross is None
    assert st.fold.rows == 4
