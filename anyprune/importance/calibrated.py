"""Calibrated criteria: scores from what the group's consumers see on calibration data.

A *consumer* of a group is a layer that sums over the group's dim (see
:mod:`anyprune.calibration.consumers`): the down projection of an MLP, the output
projection of attention heads, the 1x1 conv after a depthwise block, every
reader of a residual stream. Removing unit ``u`` removes the consumer's input
features ``P(u)`` (one for a channel, ``k*k`` for a conv channel, ``head_dim``
for a head, ...), found through the dimension graph. Each criterion sums a
per-consumer cost over every consumer of the group:

* :class:`WandaSPImportance` (Wanda-sp): ``sum_{j in P(u)} ||W[:, j]||_1 * rms(x_j)``.
* :class:`FluctuationImportance` (FLAP): ``sum_{j in P(u)} ||W[:, j]||_2^2 * var(x_j)``: the output error
  left after the consumer's bias absorbs the unit's mean (bias compensation).
* :class:`OBSImportance` (structured Optimal Brain Surgeon, as in ZipLM/SlimGPT): the smallest output error
  reachable after removing the unit *and* re-fitting the consumer's kept weights (and bias, if it has one)
  by least squares: ``tr(W_P (H^-1)_PP^-1 W_P^T)`` with ``H = E[x x^T]``. Divided by the consumer's output
  energy ``tr(W H W^T)``, so that scores are relative errors, comparable across layers (global pruning).

Usage: ``imp.calibrate(model, data)`` once (statistics of every consumer kept), or let a pruner call
``imp.calibrate(model, data, groups=...)``: then the data runs one block at a time and only the groups'
scores are kept. Groups without a calibrated consumer are scored ``None`` (left alone).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from ..calibration import (
    InputStats,
    calibration_batches,
    consumer_spec,
    stream_statistics,
    weight_matrix,
)
from ..calibration import evaluating as _evaluating
from ..errors import ConfigError, PruningError
from ..groups.group import ParamSlice
from .base import Normalizer, _one_atom, check_group, check_normalizer, normalize

__all__ = ["CalibratedImportance", "WandaSPImportance", "FluctuationImportance", "OBSImportance",
           "consumer_slices"]



def consumer_slices(group: Any) -> list[tuple[Any, Any, torch.Tensor]]:
    """``(slice, spec, unit_of_feature)`` for every consumer of a one-atom group.

    ``unit_of_feature[j]`` is the group unit that consumer feature ``j`` belongs to (``-1`` for features
    outside the group).
    """
    a = _one_atom(group, "consumer_slices")
    table = group.table
    out = []
    for s in group.slices:
        if not isinstance(s, ParamSlice) or s.module is None or s.attr != "weight":
            continue
        spec = consumer_spec(s.module)
        if spec is None or s.dim != spec.in_dim or s.tensor is not s.module.weight:
            continue
        index = table.index_of(s.layout, a)
        if spec.per_channel > 1:
            index = index.repeat_interleave(spec.per_channel)
        out.append((s, spec, index))
    return out


def _units(index: torch.Tensor, size: int) -> torch.Tensor | list[torch.Tensor]:
    """Feature positions of each unit: ``[size, m]`` when every unit has ``m`` features, else a list."""
    inside = index >= 0
    pos = inside.nonzero().flatten()
    units = index[pos]
    counts = torch.bincount(units, minlength=size)
    order = pos[torch.argsort(units, stable=True)]
    if bool((counts == counts[0]).all()) and int(counts[0]) > 0:
        return order.view(size, int(counts[0]))
    return list(order.split(counts.tolist()))


class CalibratedImportance:
    """Base class: collect consumer statistics on calibration data, then score groups from them.

    Subclasses implement :meth:`consumer_cost`. Scores are one value per unit of the group (higher means
    keep), summed over the group's consumers, then normalised by ``normalizer``.

    Args:
        normalizer: how a group's scores are normalised (see :func:`anyprune.importance.base.normalize`).
        batch_size: rows per batch when the calibration data is one tensor.
        max_features: consumers with more input features are not calibrated.
        progress: show progress bars while calibrating.
    """

    needs_calibration = True

    def __init__(self, normalizer: Normalizer | Callable | None = None, batch_size: int = 8,
                 max_features: int = 8192, progress: bool = False) -> None:
        check_normalizer(normalizer)
        if isinstance(max_features, bool) or not isinstance(max_features, int) or max_features < 1:
            raise ConfigError(f"max_features must be an int >= 1, got {max_features!r}")
        self.normalizer = normalizer
        self.batch_size = batch_size
        self.max_features = max_features
        self.progress = progress
        self._stats: dict[nn.Module, InputStats] = {}
        self._scores: dict[int, tuple[int, torch.Tensor]] = {}
        self.reset()

    # ---------------------------------------------------------- calibration
    def reset(self) -> None:
        """Forget statistics and scores (calibrate again after the model changes)."""
        self._stats.clear()
        self._scores.clear()
        self._weights: dict[tuple, tuple[torch.Tensor, torch.Tensor | None]] = {}
        self._calibrated = False

    def calibrate(self, model: nn.Module, data: Any, groups: Iterable[Any] | None = None,
                  forward_fn: Callable | None = None) -> None:
        """Run ``model`` on the calibration ``data``.

        Args:
            model: the model (run in eval mode without gradients; its modes are restored).
            data: a tensor of examples (e.g. token ids ``[N, T]``), a ``DataLoader`` or an iterable of inputs.
            groups: if given, only these groups are scored, block by block (bounded memory: statistics are
                dropped once used); otherwise the statistics of every consumer are kept and any group can be
                scored afterwards.
            forward_fn: ``forward_fn(model, batch)`` instead of the default call.
        """
        if not isinstance(model, nn.Module):
            raise ConfigError(f"calibrate expects the model (an nn.Module), got {type(model).__name__}")
        batches = calibration_batches(data, self.batch_size)
        self.reset()
        with _evaluating(model):
            if groups is None:
                stream_statistics(model, batches, list(model.modules()), blocks=None,
                                  on_stats=lambda st, _k: self._stats.update(st), forward_fn=forward_fn,
                                  max_features=self.max_features, show_progress=self.progress)
            else:
                self._score_streaming(model, batches, list(groups), forward_fn)
        self._calibrated = True

    def _score_streaming(self, model: nn.Module, batches: list[Any], groups: list[Any],
                         forward_fn: Callable | None) -> None:
        found = [(g, consumer_slices(g)) for g in groups]
        partial = {id(g): torch.zeros(g.size, dtype=torch.float64) for g, _ in found}
        consumers = [s.module for _, cs in found for s, _, _ in cs]

        readers: dict[nn.Module, list[tuple[Any, Any, torch.Tensor]]] = {}
        count = {id(g): len(cs) for g, cs in found}
        for g, cs in found:
            for s, spec, index in cs:
                readers.setdefault(s.module, []).append((g, spec, index))

        def on_stats(stats: dict[nn.Module, InputStats], _k: int | None) -> None:
            for module, st in stats.items():
                for g, spec, index in readers.get(module, []):  # one consumer at a time: its inverse is reused
                    partial[id(g)] += self._cost(module, spec, st, index, g.size, sole=count[id(g)] == 1)
                    seen.add(id(g))

        seen: set[int] = set()
        stream_statistics(model, batches, consumers, on_stats=on_stats, forward_fn=forward_fn,
                          max_features=self.max_features, show_progress=self.progress)
        for g, _ in found:
            if id(g) in seen:
                a = g.table.find(g.atoms[0])
                self._scores[a] = (g.size, partial[id(g)])

    # --------------------------------------------------------------- scoring
    def _forget_weights(self) -> None:
        self._weights.clear()

    def _cost(self, module: nn.Module, spec: Any, stats: InputStats, index: torch.Tensor, size: int,
              sole: bool = False) -> torch.Tensor:
        weight = getattr(module, "weight")
        bias = getattr(module, "bias", None)
        key = (module, id(stats), weight._version, tuple(weight.shape),
               None if not isinstance(bias, torch.Tensor) else bias._version)
        hit = self._weights.get(key)
        if hit is None:
            w = weight_matrix(module, spec).double().cpu()
            if w.shape[1] != stats.features:
                raise PruningError(
                    f"{type(module).__name__} has {w.shape[1]} input features but {stats.features} were "
                    "calibrated: the model changed since calibrate(); calibrate again"
                )
            b = bias.detach().double().cpu() if isinstance(bias, torch.Tensor) else None
            hit = self._weights[key] = (w, b)
            while len(self._weights) > 4:  # a few consumers at a time (with what subclasses derive from them)
                self._weights.pop(next(iter(self._weights)))
        return self.consumer_cost(hit[0], hit[1], stats, index, size, sole=sole)

    def consumer_cost(self, weight: torch.Tensor, bias: torch.Tensor | None, stats: InputStats,
                      index: torch.Tensor, size: int, sole: bool = False) -> torch.Tensor:
        """Per-unit score contribution of one consumer (``[size]`` float64).

        Args:
            weight: ``[outputs, features]`` float64.
            bias: ``[outputs]`` or ``None``.
            stats: the consumer's input statistics.
            index: unit of each feature (``-1`` outside the group).
            size: number of units.
            sole: this consumer is the group's only one (its score is the group's score).
        """
        raise NotImplementedError

    def __call__(self, group: Any) -> torch.Tensor | None:
        check_group(group, type(self).__name__)
        if not self._calibrated:
            raise PruningError(f"{type(self).__name__} is not calibrated: call imp.calibrate(model, data) first, "
                               "or give the pruner calibration data (MetaPruner(..., calibration=data))")
        a = group.table.find(_one_atom(group, type(self).__name__))
        if a in self._scores:
            size, scores = self._scores[a]
            if size != group.size:
                raise PruningError(f"{type(self).__name__} scored this group at size {size}, it has {group.size} "
                                   "units now: the model changed since calibrate(); calibrate again")
        elif self._stats:
            return self.score_with(group, self._stats)
        else:
            return None
        return normalize(scores.clone(), self.normalizer)

    def can_score(self, group: Any) -> bool:
        """Whether the group has a consumer this criterion could calibrate (what :meth:`score_with` needs)."""
        return any(spec.features(s.module) <= self.max_features for s, spec, _ in consumer_slices(group))

    def score_with(self, group: Any, stats: dict[nn.Module, InputStats]) -> torch.Tensor | None:
        """The group's scores from the given consumer statistics and the consumers' current weights
        (``None`` if no consumer of the group has statistics). Used to choose units again on statistics
        collected later, e.g. on the inputs of already pruned layers (:mod:`anyprune.reconstruction`)."""
        self._forget_weights()  # weights may have been rewritten (same shape) since they were cached
        total = torch.zeros(group.size, dtype=torch.float64)
        found = False
        readers = consumer_slices(group)
        for s, spec, index in readers:
            st = stats.get(s.module)
            if st is not None:
                total += self._cost(s.module, spec, st, index, group.size, sole=len(readers) == 1)
                found = True
        if not found:
            return None
        return normalize(total, self.normalizer)


def _per_unit(values: torch.Tensor, index: torch.Tensor, size: int) -> torch.Tensor:
    keep = index >= 0
    return torch.zeros(size, dtype=torch.float64).index_add_(0, index[keep], values[keep])


class WandaSPImportance(CalibratedImportance):
    """Wanda-sp: ``sum_{j in P(u)} ||W[:, j]||_1 * rms(x_j)`` over every consumer (activation-weighted
    magnitude). See :mod:`anyprune.importance.calibrated`.

    Example:
        >>> import torch, anyprune as tp
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
        >>> imp = tp.importance.WandaSPImportance()
        >>> imp.calibrate(model, torch.randn(32, 3))
        >>> dg = tp.DependencyGraph().build_dependency(model, torch.randn(1, 3))
        >>> imp(dg.groups()[0]).shape
        torch.Size([4])
    """

    def __init__(self, normalizer: Normalizer | Callable | None = "mean", **kwargs: Any) -> None:
        super().__init__(normalizer=normalizer, **kwargs)

    def consumer_cost(self, weight, bias, stats, index, size, sole=False):
        rms = stats.gram.diagonal().div(max(stats.rows, 1)).clamp_min(0).sqrt()
        return _per_unit(weight.abs().sum(0) * rms, index, size)


class FluctuationImportance(CalibratedImportance):
    """FLAP's fluctuation: ``sum_{j in P(u)} ||W[:, j]||_2^2 * var(x_j)`` over every consumer, the error left
    once the consumer's bias absorbs the removed inputs' means. See :mod:`anyprune.importance.calibrated`."""

    def __init__(self, normalizer: Normalizer | Callable | None = "mean", **kwargs: Any) -> None:
        super().__init__(normalizer=normalizer, **kwargs)

    def consumer_cost(self, weight, bias, stats, index, size, sole=False):
        return _per_unit(weight.square().sum(0) * stats.variance, index, size)


def augmented(weight: torch.Tensor, bias: torch.Tensor | None, stats: InputStats
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(W, H)`` with ``H = E[x x^T]``; with a bias, ``x`` gets a constant 1 feature (last) and ``W`` the bias
    column, so least squares over ``W`` also re-fits the bias."""
    h = stats.second_moment
    if bias is None:
        return weight, h
    n = h.shape[0]
    ha = torch.empty(n + 1, n + 1, dtype=torch.float64)
    ha[:n, :n] = h
    ha[:n, n] = ha[n, :n] = stats.mean
    ha[n, n] = 1.0
    return torch.cat([weight, bias[:, None]], 1), ha


def damped_cholesky(h: torch.Tensor, damp: float) -> tuple[torch.Tensor, float]:
    """Cholesky factor of ``H + l I`` with ``l = damp * mean(diag H)``, and ``l``; the damping grows until the
    factorisation succeeds."""
    scale = float(h.diagonal().mean().clamp_min(1e-12))
    eye = torch.eye(h.shape[0], dtype=h.dtype)
    d = damp
    for _ in range(12):
        chol, info = torch.linalg.cholesky_ex(h + (d * scale) * eye)
        if int(info) == 0:
            return chol, d * scale
        d = max(d * 10, 1e-8)
    raise PruningError("the calibration Gram matrix is not positive definite even with strong damping; give "
                       "more calibration data")


def damped_inverse(h: torch.Tensor, damp: float) -> torch.Tensor:
    """``(H + damp * mean(diag H) * I)^-1`` (see :func:`damped_cholesky`)."""
    return torch.cholesky_inverse(damped_cholesky(h, damp)[0])


def _spd_inverse(a: torch.Tensor) -> torch.Tensor:
    """Inverse of a (batch of) symmetric positive definite matrices, by Cholesky, with jitter if needed."""
    eye = torch.eye(a.shape[-1], dtype=a.dtype)
    scale = a.diagonal(dim1=-2, dim2=-1).mean(-1).clamp_min(1e-30)[..., None, None]
    jitter = 0.0
    for _ in range(12):
        chol, info = torch.linalg.cholesky_ex(a + jitter * scale * eye)
        if not bool((info != 0).any()):
            return torch.cholesky_inverse(chol)
        jitter = max(jitter * 10, 1e-10)
    raise PruningError("a block of the inverse Gram matrix is not positive definite; give more calibration data")


class OBSImportance(CalibratedImportance):
    """Structured Optimal Brain Surgeon: the relative output error of removing a unit with the best re-fit of
    the consumer's kept weights (and bias). See :mod:`anyprune.importance.calibrated`.

    For one consumer with weight ``W`` (``[outputs, features]``, the bias appended as a column fed by a
    constant 1 feature), ``H = E[x x^T] + damp * mean(diag H) * I`` and the unit's features ``P``::

        cost(u) = tr(W_P ((H^-1)_PP)^-1 W_P^T) / tr(W H W^T)

    which equals ``min_W' E||W x - W' x_{-P}||^2 / E||W x||^2`` (the least-squares error after removing the
    unit, relative to the consumer's output energy). The group's score is the sum over its consumers.

    Args:
        damp: Tikhonov damping relative to the mean diagonal of ``H`` (0.01 as in SparseGPT).
        relative: divide by the consumer's output energy (comparable across layers); ``False`` keeps the
            absolute squared error per row.
        greedy_steps: for a group read by one consumer (an MLP's down projection, heads' output projection),
            remove units greedily in this many rounds, updating the kept weights and the inverse Gram matrix after
            each (as SlimGPT / ZipLM do), and score units by the order of removal; ``0``: the one-shot costs
            below.
        normalizer: see :class:`CalibratedImportance` (default ``None``: the costs already compare).
    """

    def __init__(self, damp: float = 0.01, relative: bool = True, greedy_steps: int = 32,
                 normalizer: Normalizer | Callable | None = None, **kwargs: Any) -> None:
        if isinstance(damp, bool) or not isinstance(damp, (int, float)) or not 0 <= damp < 1e3:
            raise ConfigError(f"damp must be a number >= 0 (e.g. 0.01), got {damp!r}")
        if isinstance(greedy_steps, bool) or not isinstance(greedy_steps, int) or greedy_steps < 0:
            raise ConfigError(f"greedy_steps must be an int >= 0 (0: one-shot costs), got {greedy_steps!r}")
        super().__init__(normalizer=normalizer, **kwargs)
        self.damp = float(damp)
        self.relative = bool(relative)
        self.greedy_steps = greedy_steps

    def reset(self) -> None:
        super().reset()
        self._cache: dict[tuple, tuple[Any, ...]] = {}

    def _forget_weights(self) -> None:
        super()._forget_weights()
        self._cache.clear()

    def _prepared(self, weight: torch.Tensor, bias: torch.Tensor | None, stats: InputStats
                  ) -> tuple[torch.Tensor, torch.Tensor, float]:
        """``(H^-1, W^T W, output energy)`` of a consumer, computed once for all the groups it reads."""
        key = (id(stats), id(weight))  # the weights come from CalibratedImportance's small cache
        hit = self._cache.get(key)
        if hit is None or hit[0] is not weight or hit[1] is not stats:  # ids of dropped tensors can be reused
            w, h = augmented(weight, bias, stats)
            hit = (weight, stats, damped_inverse(h, self.damp), w.t() @ w, float((w @ h * w).sum().clamp_min(1e-30)))
            self._cache[key] = hit
            while len(self._cache) > 4:
                self._cache.pop(next(iter(self._cache)))
        return hit[2], hit[3], hit[4]

    def consumer_cost(self, weight, bias, stats, index, size, sole=False):
        hinv, gram_w, energy = self._prepared(weight, bias, stats)
        units = _units(index, size)
        if self.greedy_steps and sole and isinstance(units, torch.Tensor) and size > 1:
            w, _ = augmented(weight, bias, stats)
            cost = self._greedy(w, hinv, units)
        elif isinstance(units, torch.Tensor):
            if units.shape[1] == 1:
                p = units[:, 0]
                cost = gram_w.diagonal()[p] / hinv.diagonal()[p]
            else:
                sub = hinv[units[:, :, None], units[:, None, :]]
                ww = gram_w[units[:, :, None], units[:, None, :]]
                cost = (ww * _spd_inverse(sub)).sum((1, 2))
        else:
            cost = torch.zeros(size, dtype=torch.float64)
            for u, p in enumerate(units):
                if p.numel():
                    cost[u] = (gram_w[p][:, p] * _spd_inverse(hinv[p][:, p])).sum()
        if self.relative:
            cost = cost / energy
        return cost

    def _greedy(self, w: torch.Tensor, hinv: torch.Tensor, units: torch.Tensor) -> torch.Tensor:
        """Scores from greedy removal with optimal updates: units go ``ceil(U / greedy_steps)`` at a time, the
        cheapest first, and after each removal the kept weights and the inverse Gram matrix are updated (OBS);
        a unit's score is the largest marginal cost met up to its removal (so scores follow the removal order,
        and the ``n`` lowest are the first ``n`` removed)."""
        size, m = units.shape
        w, hinv = w.clone(), hinv.clone()
        alive = torch.ones(size, dtype=torch.bool)
        scores = torch.empty(size, dtype=torch.float64)
        chunk = max(1, math.ceil(size / self.greedy_steps))
        level = 0.0
        while int(alive.sum()) > 1:
            idx = alive.nonzero().flatten()
            p = units[idx]  # [A, m]
            if m == 1:
                cost = w[:, p[:, 0]].square().sum(0) / hinv.diagonal()[p[:, 0]]
            else:
                wp = w[:, p]  # [O, A, m]
                ww = torch.einsum("oam,oan->amn", wp, wp)
                cost = (ww * _spd_inverse(hinv[p[:, :, None], p[:, None, :]])).sum((1, 2))
            order = cost.argsort()[: min(chunk, idx.numel() - 1)]
            for j in order.tolist():
                level = max(level, float(cost[j]))
                scores[idx[j]] = level
            feats = p[order].flatten()
            inv = _spd_inverse(hinv[feats][:, feats])
            rows = hinv[feats]  # [k, F]
            w -= (w[:, feats] @ inv) @ rows
            hinv -= rows.t() @ inv @ rows
            alive[idx[order]] = False
        scores[alive] = 2 * level + 1e-12 if level > 0 else 1.0
        return scores
