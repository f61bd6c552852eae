"""Pruners with sparse-training regularisers: BN-scale L1, group lasso and growing regularisation.

Each adds the gradient of its penalty to ``.grad`` in :meth:`regularize`
(call it after ``loss.backward()`` and before ``optimizer.step()``), over the
groups the pruner would prune (refreshed by :meth:`update_regularizer`).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError
from ..groups.group import Group
from ..importance.base import per_unit, rows_of, unit_slices
from ..importance.magnitude import BNScaleImportance, GroupMagnitudeImportance
from .base import MetaPruner

__all__ = ["MagnitudePruner", "BNScalePruner", "GroupNormPruner", "GrowingRegPruner"]

_EPS = 1e-8


def _check_reg(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= float(value) < math.inf:
        raise ConfigError(f"{name} must be a finite number >= 0 (the penalty's strength), got {value!r}")
    return float(value)


def _add_grad(p: torch.Tensor, g: torch.Tensor) -> None:
    if p.grad is None:
        p.grad = g.to(p.dtype).clone()
    else:
        p.grad.add_(g.to(p.grad.dtype))


def _along(values: torch.Tensor, t: torch.Tensor, dim: int) -> torch.Tensor:
    """``values`` (one per position of ``dim``) shaped to broadcast against ``t``."""
    shape = [1] * t.dim()
    shape[dim] = -1
    return values.to(device=t.device, dtype=torch.float32 if t.dtype != torch.float64 else t.dtype).reshape(shape)


class MagnitudePruner(MetaPruner):
    """``MetaPruner`` with the L2 group-magnitude criterion by default (no regulariser)."""


class _RegularizedPruner(MetaPruner):
    def __init__(self, model: nn.Module, example_inputs: Any, importance: Callable | None = None,
                 reg: float = 1e-4, **kwargs: Any) -> None:
        self.reg = _check_reg(reg, "reg")
        super().__init__(model, example_inputs, importance=importance, **kwargs)
        self._reg_groups: list[Group] = []
        self.update_regularizer()

    def update_regularizer(self) -> None:
        """Collect the groups to regularise (the model may have been pruned since the last call)."""
        self._reg_groups = [g for g, _, _ in self._targets(self._groups(), max(self.current_step, 1))]


class BNScalePruner(_RegularizedPruner):
    """Network Slimming: L1 on batch-norm scales, then prune by ``|gamma|``.

    ``regularize`` adds ``reg * sign(gamma)`` to the ``.grad`` of every batch-norm
    weight in the prunable groups (the gradient of ``reg * sum |gamma|``).

    Args:
        reg: the L1 strength (default ``1e-5``).
        **kwargs: every :class:`MetaPruner` argument; the default importance is :class:`BNScaleImportance`.
    """

    def __init__(self, model: nn.Module, example_inputs: Any, importance: Callable | None = None,
                 reg: float = 1e-5, **kwargs: Any) -> None:
        super().__init__(model, example_inputs, importance=importance or BNScaleImportance(), reg=reg, **kwargs)

    def _bn_weights(self) -> list[torch.Tensor]:
        out: dict[int, torch.Tensor] = {}
        for g in self._reg_groups:
            for s in g.slices:
                if isinstance(getattr(s, "module", None), nn.modules.batchnorm._BatchNorm) and s.attr == "weight":
                    out[id(s.tensor)] = s.tensor
        return list(out.values())

    @torch.no_grad()
    def regularize(self, model: nn.Module, reg: float | None = None, bias: bool = False) -> None:
        """``gamma.grad += reg * sign(gamma)`` for each batch-norm weight of the prunable groups."""
        self._check_model(model)
        r = self.reg if reg is None else _check_reg(reg, "reg")
        for w in self._bn_weights():
            _add_grad(w, r * torch.sign(w.detach()))


class GroupNormPruner(_RegularizedPruner):
    """Group lasso over whole groups (DepGraph's sparse training), then prune by group magnitude.

    With ``theta_u`` all parameters a unit ``u`` of a group removes, the penalty is
    ``reg * sum_u ||theta_u||_2``; ``regularize`` adds its gradient
    ``reg * w / ||theta_u||_2`` to every parameter position of every prunable unit.

    Args:
        reg: the group-lasso strength (default ``1e-4``).
        **kwargs: every :class:`MetaPruner` argument.
    """

    def __init__(self, model: nn.Module, example_inputs: Any, importance: Callable | None = None,
                 reg: float = 1e-4, **kwargs: Any) -> None:
        super().__init__(model, example_inputs, importance=importance or GroupMagnitudeImportance(p=2), reg=reg,
                         **kwargs)

    @torch.no_grad()
    def regularize(self, model: nn.Module, reg: float | None = None, bias: bool = False) -> None:
        """``w.grad += reg * w / ||theta_u||_2`` for every position of every unit ``u`` of each group."""
        self._check_model(model)
        r = self.reg if reg is None else _check_reg(reg, "reg")
        for g in self._reg_groups:
            slices = list(unit_slices(g, "GroupNormPruner"))
            norm = torch.zeros(g.size, dtype=torch.float64)
            for s, idx in slices:
                norm += per_unit(rows_of(s.tensor, s.dim).pow(2).sum(1), idx, g.size)
            inv = r / norm.sqrt().clamp_min(_EPS)
            for s, idx in slices:
                coeff = torch.where(idx >= 0, inv[idx.clamp(min=0)], torch.zeros((), dtype=torch.float64))
                _add_grad(s.tensor, _along(coeff, s.tensor, s.dim) * s.tensor.detach())


class GrowingRegPruner(_RegularizedPruner):
    """Growing regularisation (Wang et al., ICLR 2021): per-unit L2 penalties that grow on unimportant units.

    Every unit ``u`` of a prunable group has a coefficient ``lambda_u`` (``reg`` after
    :meth:`update_regularizer`); :meth:`update_reg` adds ``delta_reg * (max - s_u) / (max - min)``
    to it, with ``s`` the group's importance scores, so the least important units are
    pushed hardest; ``regularize`` adds ``lambda_u * w`` to every position of unit ``u``
    (the gradient of ``sum_u lambda_u / 2 * ||theta_u||^2``).

    Args:
        reg: the initial coefficient (default ``1e-4``).
        delta_reg: the growth per :meth:`update_reg` (default ``1e-5``).
        **kwargs: every :class:`MetaPruner` argument.
    """

    def __init__(self, model: nn.Module, example_inputs: Any, importance: Callable | None = None,
                 reg: float = 1e-4, delta_reg: float = 1e-5, **kwargs: Any) -> None:
        self.delta_reg = _check_reg(delta_reg, "delta_reg")
        self._coeffs: dict[int, torch.Tensor] = {}
        super().__init__(model, example_inputs, importance=importance or GroupMagnitudeImportance(p=2), reg=reg,
                         **kwargs)

    def update_regularizer(self) -> None:
        """Collect the prunable groups and reset every coefficient to ``reg``."""
        super().update_regularizer()
        self._coeffs = {g.atoms[0]: torch.full((g.size,), self.reg, dtype=torch.float64) for g in self._reg_groups}

    @torch.no_grad()
    def update_reg(self) -> None:
        """Grow each unit's coefficient by ``delta_reg`` times its standardised unimportance."""
        for g in self._reg_groups:
            scores = self._scores(g)
            if scores is None:
                continue
            lo, hi = scores.min(), scores.max()
            self._coeffs[g.atoms[0]] += self.delta_reg * (hi - scores) / (hi - lo + _EPS)

    def coefficients(self, group: Group) -> torch.Tensor:
        """The current per-unit coefficients of a group (a copy)."""
        return self._coeffs[group.atoms[0]].clone()

    @torch.no_grad()
    def regularize(self, model: nn.Module, reg: float | None = None, bias: bool = False) -> None:
        """``w.grad += lambda_u * w`` for every position of every unit ``u`` of each prunable group."""
        self._check_model(model)
        for g in self._reg_groups:
            lam = self._coeffs[g.atoms[0]]
            for s, idx in unit_slices(g, "GrowingRegPruner"):
                coeff = torch.where(idx >= 0, lam[idx.clamp(min=0)], torch.zeros((), dtype=torch.float64))
                _add_grad(s.tensor, _along(coeff, s.tensor, s.dim) * s.tensor.detach())
