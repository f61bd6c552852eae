"""Activation criterion: how strongly each unit fires on calibration batches."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError, PruningError
from ..trace.recorder import run_model
from .base import (
    GroupReduction,
    Normalizer,
    check_group,
    check_group_reduction,
    check_normalizer,
    check_p,
    normalize,
    per_unit,
    reduce_group,
    unit_slices,
)

__all__ = ["ActivationImportance"]

# modules whose output keeps channels in dim 1 (N, C, ...); every other recorded module keeps them last
_CHANNEL_FIRST: tuple[type, ...] = (
    nn.modules.conv._ConvNd, nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm,
)


class ActivationImportance:
    """Mean ``|y|^p`` of each unit's output over calibration batches.

    :meth:`calibrate` runs the model on a few batches with forward hooks on every
    module that owns a ``weight`` (convs, linears, norms) and records, per output
    channel (dim 1 for conv and norm outputs, the last dim otherwise), the mean of
    ``|y|^p``. A group's unit score is then the reduction, over the group's
    producing weights (``weight`` dim 0 of recorded modules), of those means.
    Groups without a recorded producer get ``None`` (left alone).

    Args:
        p: the exponent of ``|y|``.
        group_reduction: how producers combine.
        normalizer: how a group's scores are normalised.

    Example:
        >>> import torch, anyprune as tp
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
        >>> imp = tp.importance.ActivationImportance(normalizer=None)
        >>> imp.calibrate(model, [torch.randn(8, 3) for _ in range(2)])
        >>> dg = tp.DependencyGraph().build_dependency(model, torch.randn(1, 3))
        >>> imp(dg.groups()[0]).shape
        torch.Size([4])
    """

    def __init__(self, p: float = 1, group_reduction: GroupReduction = "mean",
                 normalizer: Normalizer | Callable | None = "mean") -> None:
        check_p(p)
        check_group_reduction(group_reduction)
        check_normalizer(normalizer)
        self.p = p
        self.group_reduction = group_reduction
        self.normalizer = normalizer
        self._sums: dict[nn.Module, torch.Tensor] = {}
        self._counts: dict[nn.Module, int] = {}

    def reset(self) -> None:
        """Forget recorded activations (calibrate again after pruning: widths change)."""
        self._sums.clear()
        self._counts.clear()

    @torch.no_grad()
    def calibrate(self, model: nn.Module, batches: Iterable[Any], forward_fn: Callable | None = None) -> None:
        """Run ``model`` on each batch (``forward_fn(model, batch)`` if given) and record activations.

        The model's ``training`` flags are restored afterwards; it runs in ``eval()`` mode.
        """
        if not isinstance(model, nn.Module):
            raise ConfigError(f"calibrate expects the model (an nn.Module), got {type(model).__name__}")
        self.reset()
        modules = [m for m in model.modules() if isinstance(m._parameters.get("weight"), torch.Tensor)]

        def hook(mod: nn.Module, _inp: Any, out: Any) -> None:
            if not isinstance(out, torch.Tensor) or out.dim() == 0:
                return
            ch = 1 if isinstance(mod, _CHANNEL_FIRST) and out.dim() > 1 else out.dim() - 1
            dims = [d for d in range(out.dim()) if d != ch]
            v = out.detach().float().abs().pow(self.p)
            v = v.mean(dims) if dims else v
            prev = self._sums.get(mod)
            self._sums[mod] = v.cpu().double() if prev is None else prev + v.cpu().double()
            self._counts[mod] = self._counts.get(mod, 0) + 1

        training = {m: m.training for m in model.modules()}
        handles = [m.register_forward_hook(hook) for m in modules]
        n = 0
        try:
            model.eval()
            for batch in batches:
                run_model(model, batch, forward_fn)
                n += 1
        finally:
            for h in handles:
                h.remove()
            for m, flag in training.items():
                m.training = flag
        if n == 0:
            raise ConfigError("calibrate got no batches; pass an iterable of example inputs")

    def __call__(self, group: Any) -> torch.Tensor | None:
        check_group(group, "ActivationImportance")
        if not self._sums:
            raise PruningError("ActivationImportance is not calibrated: call imp.calibrate(model, batches) first")
        per_slice = []
        for s, idx in unit_slices(group, "ActivationImportance", include_bias=False):
            if s.dim != 0 or s.attr != "weight" or s.module not in self._sums:
                continue
            act = self._sums[s.module] / self._counts[s.module]
            if act.numel() != s.tensor.shape[0]:
                raise PruningError(
                    f"{s.fqn} has {s.tensor.shape[0]} outputs but {act.numel()} recorded activations: the model "
                    "changed since calibrate(); calibrate again"
                )
            per_slice.append(per_unit(act, idx, group.size))
        if not per_slice:
            return None
        return normalize(reduce_group(per_slice, self.group_reduction), self.normalizer)
