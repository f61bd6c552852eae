"""Gradient criteria: first-order Taylor (from ``.grad``) and diagonal Hessian (accumulated squared gradients)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError, PruningError
from .base import (
    GroupReduction,
    Normalizer,
    check_group,
    check_group_reduction,
    check_normalizer,
    normalize,
    per_unit,
    reduce_group,
    rows_of,
    unit_slices,
)

__all__ = ["GroupTaylorImportance", "GroupHessianImportance", "OBDCImportance"]


class GroupTaylorImportance:
    """First-order Taylor: the loss change ``|w * dL/dw|`` of removing each unit's weights.

    Run your loss's ``backward()`` first; the score reads ``.grad``. Per slice and
    unit: ``sum |w * g|`` over the unit's positions, or ``|sum w * g|`` with
    ``multivariable=True`` (the joint first-order change of removing the unit).

    Args:
        group_reduction: how slices combine.
        normalizer: how a group's scores are normalised.
        multivariable: sum the signed products before taking the absolute value.
        bias: count bias vectors too.

    Raises:
        PruningError: when no parameter slice of the group has a gradient.
    """

    def __init__(self, group_reduction: GroupReduction = "mean", normalizer: Normalizer | Callable | None = "mean",
                 multivariable: bool = False, bias: bool = False) -> None:
        check_group_reduction(group_reduction)
        check_normalizer(normalizer)
        self.group_reduction = group_reduction
        self.normalizer = normalizer
        self.multivariable = multivariable
        self.bias = bias

    @torch.no_grad()
    def __call__(self, group: Any) -> torch.Tensor | None:
        per_slice = []
        found = False
        for s, idx in unit_slices(group, type(self).__name__, include_bias=self.bias):
            g = s.tensor.grad
            if g is None:
                continue
            found = True
            prod = rows_of(s.tensor, s.dim) * rows_of(g, s.dim)
            if self.multivariable:
                per_slice.append(per_unit(prod.sum(1), idx, group.size).abs())
            else:
                per_slice.append(per_unit(prod.abs().sum(1), idx, group.size))
        if not found:
            raise PruningError(
                f"{type(self).__name__} needs gradients, but no parameter of the group rooted at "
                f"{getattr(group.root, 'fqn', group.root)} has a .grad: run loss.backward() before pruning"
            )
        return normalize(reduce_group(per_slice, self.group_reduction), self.normalizer)


class GroupHessianImportance:
    """Diagonal second-order (OBD) criterion: ``sum w^2 * H`` with ``H`` the mean squared gradient.

    ``H`` (the Fisher approximation of the Hessian's diagonal) is accumulated over
    samples: call :meth:`zero_grad`, then for each sample (or small batch) run
    ``loss.backward()`` and :meth:`accumulate_grad` ``(model)``; then prune.

    Args:
        group_reduction: how slices combine.
        normalizer: how a group's scores are normalised.
        bias: count bias vectors too.

    Example:
        >>> import torch, anyprune as tp
        >>> model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
        >>> imp = tp.importance.GroupHessianImportance(normalizer=None, group_reduction="sum")
        >>> for x in torch.randn(5, 1, 3):
        ...     model.zero_grad()
        ...     model(x).sum().backward()
        ...     imp.accumulate_grad(model)
        >>> dg = tp.DependencyGraph().build_dependency(model, torch.randn(1, 3))
        >>> imp(dg.groups()[0]).shape
        torch.Size([4])
    """

    def __init__(self, group_reduction: GroupReduction = "mean", normalizer: Normalizer | Callable | None = "mean",
                 bias: bool = False) -> None:
        check_group_reduction(group_reduction)
        check_normalizer(normalizer)
        self.group_reduction = group_reduction
        self.normalizer = normalizer
        self.bias = bias
        self._acc: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._count: dict[int, int] = {}

    def zero_grad(self) -> None:
        """Forget the accumulated squared gradients (call it again after pruning: shapes change)."""
        self._acc.clear()
        self._count.clear()

    @torch.no_grad()
    def accumulate_grad(self, model: nn.Module) -> None:
        """Add ``p.grad ** 2`` of every parameter of ``model`` that has a gradient."""
        if not isinstance(model, nn.Module):
            raise ConfigError(f"accumulate_grad expects the model (an nn.Module), got {type(model).__name__}")
        for p in model.parameters():
            if p.grad is None:
                continue
            key = id(p)
            sq = p.grad.detach().float().pow(2)
            if key in self._acc:
                _, acc = self._acc[key]
                if acc.shape != sq.shape:
                    raise PruningError(
                        f"a parameter changed shape {tuple(acc.shape)} -> {tuple(sq.shape)} since the last "
                        "accumulate_grad: call zero_grad() after pruning and accumulate again"
                    )
                acc.add_(sq)
                self._count[key] += 1
            else:
                self._acc[key] = (p, sq.clone())
                self._count[key] = 1

    @torch.no_grad()
    def __call__(self, group: Any) -> torch.Tensor | None:
        check_group(group, type(self).__name__)
        if not self._acc:
            raise PruningError(
                "GroupHessianImportance has no accumulated gradients: for each sample run loss.backward() "
                "and imp.accumulate_grad(model) before pruning"
            )
        per_slice = []
        for s, idx in unit_slices(group, type(self).__name__, include_bias=self.bias):
            entry = self._acc.get(id(s.tensor))
            if entry is None or entry[0] is not s.tensor:
                continue
            h = entry[1] / self._count[id(s.tensor)]
            if h.shape != s.tensor.shape:
                raise PruningError(
                    f"{s.fqn} has shape {tuple(s.tensor.shape)} but its accumulated gradients {tuple(h.shape)}: "
                    "call zero_grad() after pruning and accumulate again"
                )
            w = rows_of(s.tensor, s.dim)
            per_slice.append(per_unit((w.pow(2) * rows_of(h, s.dim)).sum(1), idx, group.size))
        if not per_slice:
            return None
        return normalize(reduce_group(per_slice, self.group_reduction), self.normalizer)


class OBDCImportance(GroupHessianImportance):
    """Optimal Brain Damage with the empirical Fisher from per-sample gradients (the seed's EigenDamage-style
    diagonal criterion): ``sum w^2 * F`` with ``F`` the mean over steps of the per-sample squared gradients.

    Unlike :class:`GroupHessianImportance`, one backward pass per batch is enough: hooks on the target layers
    keep each layer's input and output gradient, and :meth:`step` turns them into per-sample weight gradients
    (``torch.func``), scaled by the batch size as for a mean-reduced loss. Typical use, as in the seed::

        imp = tp.importance.OBDCImportance(num_classes=10)
        pruner = tp.pruner.MetaPruner(model, example_inputs, importance=imp, pruning_ratio=0.5)
        imp._prepare_model(model, pruner)
        for x, _ in loader:
            out = model(x)
            y = torch.multinomial(out.softmax(1), 1).squeeze(1)  # labels sampled from the model: true Fisher
            torch.nn.functional.cross_entropy(out, y).backward()
            imp.step()
        pruner.step()
        imp._rm_hooks(model); imp._clear_buffer()

    Args:
        group_reduction: how slices combine.
        normalizer: how a group's scores are normalised.
        bias: count bias vectors too.
        target_types: layer types whose weights get a Fisher (default: convolutions and linear layers).
        num_classes: a linear layer with this many outputs (the classifier) is left out, as in the seed.
    """

    def __init__(self, group_reduction: GroupReduction = "mean", normalizer: Normalizer | Callable | None = "mean",
                 bias: bool = False, target_types: Any = (nn.modules.conv._ConvNd, nn.Linear),
                 num_classes: int | None = None) -> None:
        super().__init__(group_reduction=group_reduction, normalizer=normalizer, bias=bias)
        types = tuple(target_types) if not isinstance(target_types, type) else (target_types,)
        if not types or not all(isinstance(t, type) and issubclass(t, nn.Module) for t in types):
            raise ConfigError(f"target_types must be module types, got {target_types!r}")
        if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int)):
            raise ConfigError(f"num_classes must be an int or None, got {num_classes!r}")
        self.target_types = types
        self.num_classes = num_classes
        self.modules: list[nn.Module] = []
        self.steps = 0
        self._handles: list[Any] = []
        self._seen: dict[int, list[tuple[torch.Tensor, torch.Tensor | None]]] = {}
        self._busy = False  # computing per-sample gradients: the hooks stay quiet

    def _prepare_model(self, model: nn.Module, pruner: Any = None) -> None:
        """Hook the target layers of ``model`` (``pruner`` is accepted for the seed's signature)."""
        if not isinstance(model, nn.Module):
            raise ConfigError(f"_prepare_model expects the model (an nn.Module), got {type(model).__name__}")
        self._rm_hooks(model)
        for m in model.modules():
            if not isinstance(m, self.target_types) or not isinstance(getattr(m, "weight", None), torch.Tensor):
                continue
            if self.num_classes is not None and isinstance(m, nn.Linear) and m.out_features == self.num_classes:
                continue
            self.modules.append(m)
            self._handles.append(m.register_forward_hook(self._save_call))

    def _save_call(self, module: nn.Module, args: tuple, out: Any) -> None:
        """Keep a call's input, and its output gradient once backward reaches it (a hook on the output tensor)."""
        if self._busy or not torch.is_grad_enabled() or not args or not isinstance(args[0], torch.Tensor) or \
                not isinstance(out, torch.Tensor) or not out.requires_grad:
            return
        calls = self._seen.setdefault(id(module), [])
        k = len(calls)
        calls.append((args[0].detach(), None))

        def keep_grad(g: torch.Tensor) -> None:
            if k < len(calls):
                calls[k] = (calls[k][0], g.detach())

        out.register_hook(keep_grad)

    def _rm_hooks(self, model: nn.Module | None = None) -> None:
        """Remove the hooks :meth:`_prepare_model` added."""
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self.modules.clear()
        self._seen.clear()

    def _clear_buffer(self) -> None:
        """Forget the accumulated Fisher (call it after pruning: shapes change)."""
        self.zero_grad()
        self._seen.clear()
        self.steps = 0

    def adjust_fisher(self, group: Any, idxs: Any) -> None:
        """Kept for the seed's signature; the Fisher is checked against the weights' shapes when scoring, so
        after pruning call :meth:`_clear_buffer` and accumulate again."""

    @torch.no_grad()
    def step(self) -> None:
        """Add the per-sample squared gradients of the batches run since the last call."""
        if not self.modules:
            raise PruningError("OBDCImportance.step(): no layer is hooked; call imp._prepare_model(model, pruner) "
                               "first, then run forward and backward passes")
        for m in self.modules:
            params = {n: p for n, p in m.named_parameters(recurse=False)
                      if n == "weight" or (self.bias and n == "bias")}
            for x, g in self._seen.pop(id(m), []):
                if g is None:
                    continue
                self._busy = True
                try:
                    squares = _per_sample_squares(m, params, x, g)
                finally:
                    self._busy = False
                for name, sq in squares.items():
                    p = params[name]
                    entry = self._acc.get(id(p))
                    if entry is not None and entry[1].shape != sq.shape:
                        raise PruningError(
                            f"a parameter changed shape {tuple(entry[1].shape)} -> {tuple(sq.shape)} since the last "
                            "step(): call imp._clear_buffer() after pruning and accumulate again"
                        )
                    if entry is None:
                        self._acc[id(p)] = (p, sq)
                    else:
                        entry[1].add_(sq)
        self.steps += 1
        for key in self._acc:
            self._count[key] = self.steps


def _per_sample_squares(module: nn.Module, params: Mapping[str, torch.Tensor], x: torch.Tensor,
                        grad_out: torch.Tensor) -> dict[str, torch.Tensor]:
    """``sum_n (B * dL_n/dp)^2`` for each parameter, from one call's input ``x`` and output gradient."""
    from torch.func import functional_call, grad, vmap

    fixed = {n: p.detach() for n, p in params.items()}

    def inner(p: dict[str, torch.Tensor], xi: torch.Tensor, gi: torch.Tensor) -> torch.Tensor:
        out = functional_call(module, p, (xi.unsqueeze(0),))
        return (out * gi.unsqueeze(0)).sum()

    with torch.enable_grad():
        per_sample = vmap(grad(inner), in_dims=(None, 0, 0))(fixed, x, grad_out)
    batch = x.shape[0]
    return {n: (g.float() * batch).pow(2).sum(0) for n, g in per_sample.items()}
