"""Least-squares re-fit of the consumers of removed units (see :mod:`anyprune.reconstruction`)."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from ..apply.transaction import Transaction
from ..calibration import InputStats, consumer_spec, weight_matrix, write_weight_matrix
from ..calibration.consumers import ConsumerSpec
from ..errors import ConfigError, PruningError
from ..groups.group import ParamSlice
from ..importance.calibrated import augmented, damped_cholesky

__all__ = ["Reconstructor", "correct_to_reference", "least_squares_refit"]


def least_squares_refit(weight: torch.Tensor, bias: torch.Tensor | None, stats: InputStats,
                        kept: torch.Tensor, damp: float = 0.1) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The kept columns (and bias) that best reproduce ``weight @ x + bias`` from the kept features.

    Minimises ``E||W x + b - W' x_K - b'||^2 + l ||W' - W_K||^2`` over the calibration rows, with
    ``l = damp * mean(diag H[K, K])``: ``W' = W_K + W_R H_RK (H_KK + l I)^-1`` (the optimal-brain-surgeon update
    with a damped Hessian; ``damp=0`` is plain least squares).

    When ``stats`` has cross products with a reference pass (:attr:`InputStats.cross`, ``sum r x^T``), the
    target is the reference output ``W r + b`` instead: the layer is re-fitted to reproduce what the dense
    model computes at this point from what the pruned model now feeds it, which also corrects the error that
    pruning earlier layers left in its inputs: ``W' = (W C_K + l W_K) (H_KK + l I)^-1`` with
    ``C = E[r x^T]``.

    Args:
        weight: the dense weight ``[outputs, features]``.
        bias: the dense bias ``[outputs]`` or ``None`` (then no bias is fitted).
        stats: the consumer's input statistics (over all ``features``).
        kept: sorted indices of the kept features.
        damp: relative damping (0 solves the plain normal equations).

    Returns:
        ``(W' [outputs, len(kept)], b')`` in float64; ``b'`` is ``None`` without a bias.

    Example:
        >>> import torch
        >>> from anyprune.calibration import InputStats
        >>> x = torch.randn(200, 3, dtype=torch.float64)
        >>> x[:, 2] = 2 * x[:, 0] - x[:, 1]          # feature 2 is a combination of the others
        >>> st = InputStats.empty(3); st.add(x)
        >>> w = torch.tensor([[1.0, 0.0, 1.0]], dtype=torch.float64)
        >>> w2, _ = least_squares_refit(w, None, st, torch.tensor([0, 1]), damp=0.0)
        >>> torch.allclose(w2, torch.tensor([[3.0, -1.0]], dtype=torch.float64))
        True
    """
    w, h = augmented(weight.double(), None if bias is None else bias.double(), stats)
    n = stats.features
    cols = kept if bias is None else torch.cat([kept, torch.tensor([n])])
    a = h[cols][:, cols]
    chol, lam = damped_cholesky(a, damp)
    # damped normal equations of W (H + l I): the damping pulls the kept weights towards their dense values
    # (W_K' = W_K + W_R H_RK (H_KK + l I)^-1), not towards zero
    c = h if stats.cross is None else cross_augmented(stats, bias is not None)
    rhs = (w @ c[:, cols] + lam * w[:, cols]).t()  # [kept, outputs]
    sol = torch.cholesky_solve(rhs, chol).t()
    if bias is None:
        return sol, None
    return sol[:, :-1], sol[:, -1]


def cross_augmented(stats: InputStats, bias: bool) -> torch.Tensor:
    """``E[r x^T]`` of the reference rows ``r`` and the rows ``x`` (with a bias: both get a constant 1 last)."""
    assert stats.cross is not None
    assert stats.ref_sum is not None
    rows = max(stats.rows, 1)
    n = stats.features
    if not bias:
        return stats.cross / rows
    c = torch.empty(n + 1, n + 1, dtype=torch.float64)
    c[:n, :n] = stats.cross / rows
    c[:n, n] = stats.ref_sum / rows
    c[n, :n] = stats.mean
    c[n, n] = 1.0
    return c


def _held_out_error(w: torch.Tensor, fitted: torch.Tensor, stats: InputStats) -> float:
    """``E||W r - W' x||^2`` on ``stats`` (``W``, ``W'`` with their bias columns, if any; full width)."""
    assert stats.cross is not None
    return _fit_error(w, fitted, stats, torch.arange(fitted.shape[1]))


DAMP_GRID = (0.001, 0.01, 0.1, 1.0)
"""The relative dampings ``damp="auto"`` chooses from."""


def _fit_error(w: torch.Tensor, fitted: torch.Tensor, stats: InputStats, cols: torch.Tensor) -> float:
    """``E||W t - W' x_cols||^2`` on ``stats``, where the target ``t`` is the reference row with cross products
    and the row itself without (``W`` with its bias column, ``W'`` over ``cols``, which include the bias column)."""
    bias = w.shape[1] == stats.features + 1
    _, h = augmented(w[:, :stats.features], w[:, -1] if bias else None, stats)
    if stats.cross is None:
        r, c = h, h
    else:
        assert stats.ref_gram is not None
        assert stats.ref_sum is not None
        rows = max(stats.rows, 1)
        c = cross_augmented(stats, bias)
        r = stats.ref_gram / rows
        if bias:
            r = torch.cat([torch.cat([r, (stats.ref_sum / rows)[:, None]], 1),
                           torch.cat([stats.ref_sum / rows, torch.ones(1, dtype=torch.float64)])[None]], 0)
    hk = h[cols][:, cols]
    return float((w @ r * w).sum() - 2 * (w @ c[:, cols] * fitted).sum() + (fitted @ hk * fitted).sum())


def choose_damp(weight: torch.Tensor, bias: torch.Tensor | None, stats: InputStats, kept: torch.Tensor,
                grid: tuple[float, ...] = DAMP_GRID, default: float = 0.1) -> float:
    """The damping of :func:`least_squares_refit` whose re-fit generalises best: for each value of ``grid``, fit
    on one half of the calibration batches (:attr:`InputStats.fold`) and measure the output error on the other,
    both ways. ``default`` when the statistics have no fold with rows on both sides (see
    :func:`~anyprune.calibration.stats.collecting_folds`)."""
    halves = stats.split()
    if halves is None:
        return default
    w = weight.double().cpu()
    b = None if bias is None else bias.detach().double().cpu()
    wa = w if b is None else torch.cat([w, b[:, None]], 1)
    cols = kept if b is None else torch.cat([kept, torch.tensor([stats.features])])
    best: tuple[float, float] | None = None
    for damp in grid:
        err = 0.0
        for fit_on, check_on in (halves, halves[::-1]):
            sol, sb = least_squares_refit(w, b, fit_on, kept, damp)
            fitted = sol if sb is None else torch.cat([sol, sb[:, None]], 1)
            err += _fit_error(wa, fitted, check_on, cols)
        if best is None or err < best[0]:
            best = (err, damp)
    assert best is not None
    # the halves hold about half the rows: the damping that suits them is about twice what suits all the rows
    # (a ridge penalty's best strength, relative to the Gram matrix per row, falls as 1 / rows)
    return best[1] * max(halves[0].rows, halves[1].rows) / max(stats.rows, 1)


def correct_to_reference(stats: dict[nn.Module, InputStats], damp: float = 0.1) -> list[nn.Module]:
    """Re-fit consumers whose statistics have cross products with a reference pass, at full width, to
    reproduce the reference output from their current inputs (``W <- (W C + l W)(H + l I)^-1``, bias
    included), where that generalises; then drop the cross products.

    A correction is an ``F x F`` fit; with few calibration rows per input feature it fits noise (the
    unpredictable part of the upstream error) and does worse than no correction on new data. So each consumer
    is checked by two-fold cross-validation over its calibration batches (:attr:`InputStats.fold`): the
    correction fitted on one half must lower the error to the reference on the other half, both ways, else the
    consumer is left as it is. Without a fold (one batch) nothing is corrected.

    Afterwards a corrected consumer's own output on its current inputs is the best estimate of the reference
    output, so criteria and later re-fits that reason about the consumer's own output reason about the
    reference: removing units and re-fitting to ``W x`` reaches the same optimum as re-fitting to the reference
    directly (the least-squares residual is orthogonal to ``x``). All writes are one transaction.

    Returns:
        the modules corrected.
    """
    new: list[tuple[nn.Module, torch.Tensor, torch.Tensor | None]] = []
    for m, st in stats.items():
        spec = consumer_spec(m)
        halves = st.split() if st.cross is not None else None
        if halves is None or spec is None:
            continue
        mod: Any = m
        bias = mod.bias if isinstance(getattr(mod, "bias", None), torch.Tensor) else None
        w = weight_matrix(m, spec).double().cpu()
        b = None if bias is None else bias.detach().double().cpu()
        if w.shape[1] != st.features:
            continue
        full = torch.arange(st.features)
        wa = w if b is None else torch.cat([w, b[:, None]], 1)
        kept_err = fitted_err = 0.0
        for fit_on, check_on in (halves, halves[::-1]):
            sol, sb = least_squares_refit(w, b, fit_on, full, damp)
            fitted = sol if sb is None else torch.cat([sol, sb[:, None]], 1)
            fitted_err += _held_out_error(wa, fitted, check_on)
            kept_err += _held_out_error(wa, wa, check_on)
        if not fitted_err < kept_err:
            continue
        sol, sb = least_squares_refit(w, b, st, full, damp)
        if not bool(torch.isfinite(sol).all()):
            raise PruningError(f"the least-squares correction of {type(m).__name__} is not finite")
        new.append((m, write_weight_matrix(m, spec, sol),
                    None if sb is None or bias is None else sb.to(dtype=bias.dtype, device=bias.device)))
    with Transaction() as tx:
        for m, weight, nb in new:
            mod = m
            tx.set_data(mod.weight, weight)
            if nb is not None:
                tx.set_data(mod.bias, nb)
    for st in stats.values():
        st.drop_reference()
    return [m for m, _, _ in new]


@dataclasses.dataclass(eq=False)
class _Watched:
    spec: ConsumerSpec
    weight: torch.Tensor  # dense [outputs, features] at the time it was first watched (float64, CPU)
    bias: torch.Tensor | None
    cols: torch.Tensor  # kept input channels (positions of the watched weight's in-dim)
    rows: torch.Tensor  # kept outputs


class Reconstructor:
    """Re-fit the consumers of removed units by least squares on calibration statistics.

    Call :meth:`watch` with each group (and what it removes) *just before* it is pruned, then :meth:`refit`
    with the consumers' input statistics (collected on inputs of the full width, before their input dim
    was pruned). Output rows removed after a consumer was first watched are followed too.

    Args:
        damp: relative Tikhonov damping of the normal equations, or ``"auto"``: chosen per consumer from
            :data:`DAMP_GRID` by two-fold cross-validation over the calibration batches (:func:`choose_damp`;
            collect the statistics under :func:`~anyprune.calibration.stats.collecting_folds`).

    Example:
        >>> import torch, anyprune as tp
        >>> from anyprune.reconstruction import Reconstructor
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
        >>> data = torch.randn(64, 4)
        >>> stats = tp.calibration.collect(model, [data])
        >>> dense = model(data).detach()
        >>> dg = tp.DependencyGraph().build_dependency(model, data[:1])
        >>> g = dg.groups()[0]
        >>> rec = Reconstructor(damp=0.0)
        >>> rec.watch(g, g.removal([0, 1, 2]))
        >>> g.prune([0, 1, 2])
        >>> plain = (model(data) - dense).square().mean()
        >>> rec.refit(stats) == [model[2]]
        True
        >>> bool((model(data) - dense).square().mean() <= plain)
        True
    """

    def __init__(self, damp: float | str = 0.1) -> None:
        if damp != "auto" and (isinstance(damp, bool) or not isinstance(damp, (int, float)) or damp < 0):
            raise ConfigError(f"damp must be a number >= 0 (e.g. 0.01) or 'auto', got {damp!r}")
        self.damp: float | str = damp if damp == "auto" else float(damp)
        self.chosen: dict[nn.Module, float] = {}  # with damp="auto": the damping each re-fit used
        self._watched: dict[nn.Module, _Watched] = {}

    @property
    def modules(self) -> list[nn.Module]:
        """The consumers whose input features were removed since they were first watched."""
        return [m for m, w in self._watched.items() if w.cols.numel() < w.weight.shape[1] // w.spec.per_channel]

    def watch(self, group: Any, removed: dict[int, torch.Tensor]) -> None:
        """Record what pruning ``group`` with ``removed`` (from ``group.removal(idxs)``) takes from consumers."""
        table = group.table
        for s in group.slices:
            if not isinstance(s, ParamSlice) or s.module is None or s.attr != "weight" \
                    or s.tensor is not getattr(s.module, "weight", None):
                continue
            spec = consumer_spec(s.module)
            if spec is None:
                continue
            out_dim = 1 if spec.kind == "conv1d_hf" else 0
            w = self._watched.get(s.module)
            if s.dim == spec.in_dim and w is None:
                bias = getattr(s.module, "bias", None)
                matrix = weight_matrix(s.module, spec).double().cpu().clone()
                w = self._watched[s.module] = _Watched(
                    spec, matrix, bias.detach().double().cpu().clone() if isinstance(bias, torch.Tensor) else None,
                    torch.arange(s.tensor.shape[s.dim]), torch.arange(matrix.shape[0]))
            if w is None or s.dim not in (spec.in_dim, out_dim):
                continue
            mask = table.removal_mask(s.layout, removed)
            if s.dim == spec.in_dim:
                w.cols = w.cols[~mask]
            else:
                w.rows = w.rows[~mask]

    def refit(self, stats: dict[nn.Module, InputStats], modules: list[nn.Module] | None = None
              ) -> list[nn.Module]:
        """Re-fit the watched consumers that have statistics (or only ``modules``); they are then forgotten.

        Every new weight is computed before any is written; the writes are one transaction.

        Returns:
            the modules re-fitted.
        """
        todo = [m for m in (self.modules if modules is None else modules) if m in self._watched and m in stats]
        new: list[tuple[Any, torch.Tensor, torch.Tensor | None]] = []
        for m in todo:
            mod: Any = m
            w = self._watched[m]
            st = stats[m]
            if st.features != w.weight.shape[1]:
                raise PruningError(f"{type(m).__name__}: {st.features} calibrated input features, but the weight "
                                   f"had {w.weight.shape[1]} when first watched; collect statistics before pruning")
            pc = w.spec.per_channel
            feats = (w.cols[:, None] * pc + torch.arange(pc)).flatten()
            damp = choose_damp(w.weight, w.bias, st, feats) if self.damp == "auto" else float(self.damp)
            self.chosen[m] = damp
            sol, b = least_squares_refit(w.weight, w.bias, st, feats, damp)
            sol = sol[w.rows]
            if not bool(torch.isfinite(sol).all()):
                raise PruningError(f"the least-squares re-fit of {type(m).__name__} is not finite")
            new.append((mod, write_weight_matrix(m, w.spec, sol),
                        None if b is None else b[w.rows].to(dtype=mod.bias.dtype, device=mod.bias.device)))
        with Transaction() as tx:
            for m, weight, bias in new:
                if weight.shape != m.weight.shape:
                    raise PruningError(f"{type(m).__name__}: re-fitted weight {tuple(weight.shape)} does not match "
                                       f"{tuple(m.weight.shape)}; watch every group before pruning it")
                tx.set_data(m.weight, weight)
                if bias is not None:
                    tx.set_data(m.bias, bias)
        for m in todo:
            del self._watched[m]
        return todo

    def forget(self) -> None:
        """Drop every watched consumer."""
        self._watched.clear()
