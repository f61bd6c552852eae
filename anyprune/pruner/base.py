"""``MetaPruner``: score every prunable group, choose how many and which indices to remove, and apply.

The pruner works on the one-atom groups of :class:`anyprune.DependencyGraph`
(every parameter dim coupled to one prunable index space). Per step it

1. gives each group a target ratio: its scope's ratio (``pruning_ratio`` or a
   ``pruning_ratio_dict`` entry) at this step of the schedule, or the head
   policy's ratio (:meth:`MetaPruner._head_policy`);
2. scores the group with the importance criterion (one score per index);
3. decides how many indices to remove: per group (local) or by one threshold
   over normalised scores of a whole scope (global, optionally only among
   isomorphic groups), then caps by ``max_pruning_ratio``, rounds the kept
   width up to a multiple of ``round_to`` and never goes below one;
4. removes the lowest-scoring indices, one group at a time (each group is
   all-or-nothing).

Ratios are channel ratios relative to the width each group had when the
pruner was built: after the last step a group keeps ``floor(width * (1 -
ratio))`` indices (before caps and rounding).
"""

from __future__ import annotations

import functools
import itertools
import math
import numbers
import sys
import warnings
from collections.abc import Callable, Generator, Iterable, Sequence
from typing import Any

import torch
from torch import nn

from ..calibration import calibration_batches
from ..depgraph import DependencyGraph
from ..errors import AnyPruneWarning, ConfigError, PruningError, VerificationError
from ..groups.group import Group, LeafSlice, ParamSlice
from ..importance.magnitude import GroupMagnitudeImportance
from ..reconstruction import ReconstructionReport, prune_and_reconstruct
from ..reconstruction.driver import TARGETS as RECONSTRUCTION_TARGETS
from ..utils.flops import count_ops_and_params
from .budget import CostModel, PruneResult, module_macs
from .schedule import check_schedule, linear_scheduler

__all__ = ["MetaPruner", "BasePruner", "PruneResult"]

_DEFAULT_ROOTS: tuple[type, ...] = (nn.modules.conv._ConvNd, nn.Linear, nn.RNNBase)


def _is_hugging_face(model: nn.Module) -> bool:
    config = getattr(model, "config", None)
    return type(model).__module__.startswith("transformers.") and hasattr(config, "to_dict")


def _user_stacklevel() -> int:
    """The ``stacklevel`` that points a warning at the first caller outside anyprune."""
    frame = sys._getframe(1)
    level = 1
    while frame is not None and frame.f_globals.get("__name__", "").startswith("anyprune."):
        frame = frame.f_back  # type: ignore[assignment]
        level += 1
    return level


def _is_ratio(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and 0.0 <= float(v) <= 1.0


def _check_ratio(v: Any, what: str) -> float:
    if not _is_ratio(v):
        raise ConfigError(f"{what} must be a number in [0, 1] (the fraction of channels to remove), got {v!r}")
    return float(v)


def _head_rank(target: float, kept: tuple[int, ...]) -> tuple[float, int, tuple[int, ...]]:
    """Order of head-factor choices: closest to ``target`` heads, then fewer heads, then more in earlier factors."""
    n = math.prod(kept)
    return round(abs(n - target), 9), n, tuple(-k for k in kept)


class _Plan:
    """One group's decision: the indices to remove."""

    __slots__ = ("deferred", "group", "indices")

    def __init__(self, group: Group, indices: torch.Tensor, deferred: bool = False) -> None:
        self.group = group
        self.indices = indices
        self.deferred = deferred  # only the count is decided; the reconstruction chooses which units


class MetaPruner:
    """Prune a model to a channel ratio (or a MACs / parameter budget) by an importance criterion.

    Args:
        model: the model to prune in place.
        example_inputs: inputs for one forward pass (a tensor, a tuple of positional args, a list, or a dict).
        importance: a callable ``imp(group) -> scores`` (see :class:`anyprune.importance.Importance`);
            default: L2 group magnitude.
        global_pruning: rank all groups of a scope together on their normalised scores instead of pruning
            every group by the same ratio.
        pruning_ratio: the default fraction of each group's channels to remove, in ``[0, 1]``.
        pruning_ratio_dict: ``{module: ratio}`` or ``{(module, module, ...): ratio}``: groups whose root
            module lies inside a key use that key's ratio; a tuple is one scope whose groups share the ratio
            (and compete under global pruning). The first matching key wins.
        max_pruning_ratio: no group loses more than this fraction of its original width.
        iterative_steps: number of ``step()`` calls to reach the ratios.
        iterative_pruning_ratio_scheduler: ``scheduler(ratio, steps)`` returns the ``steps + 1`` ratios
            reached after each step (default: linear).
        ignored_layers: modules, module types or parameters whose output dims are never pruned.
        round_to: keep a multiple of this many channels in each group (rounding the kept width up).
        isomorphic: under global pruning, rank only groups of identical structure together.
        in_channel_groups, out_channel_groups, channel_groups: accepted for compatibility; grouped
            structure is discovered from the trace (``channel_groups`` is deprecated).
        num_heads: ``{attention module: number of heads}``; checked against the module's width.
        prune_num_heads: remove whole heads (groups that count heads) at ``head_pruning_ratio``.
        prune_head_dims: prune per-head widths (groups inside heads) at the channel ratio.
        head_pruning_ratio: the fraction of heads to remove.
        head_pruning_ratio_dict: ``{module: ratio}`` overriding ``head_pruning_ratio`` per module.
        customized_pruners: ``{LayerType: pruner}`` for layers the tracer should treat as opaque.
        unwrapped_parameters: accepted for compatibility (unwrapped parameters are traced).
        root_module_types: only groups produced by modules of these types are pruned.
        forward_fn: ``forward_fn(model, example_inputs)`` instead of the default call.
        output_transform: applied to the outputs before their dims are pinned.
        ch_sparsity, ch_sparsity_dict: deprecated names of ``pruning_ratio`` and ``pruning_ratio_dict``.
        target_macs: a MACs budget instead of a ratio: a fraction of the original MACs in ``(0, 1]`` or an
            absolute count (> 1). The default ratio is searched so that the estimate meets the budget; the
            achieved MACs are measured and reported in :attr:`result`.
        target_params: the same for the parameter count.
        calibration: calibration data (a tensor of examples such as token ids ``[N, T]``, a ``DataLoader``,
            or an iterable of example inputs). A calibrated criterion (``WandaSPImportance``,
            ``FluctuationImportance``, ``OBSImportance``) is calibrated on it before each step, block by block.
        reconstruct: after removing units, re-fit every consumer of the removed units by least squares on the
            calibration data (bias compensation included) and re-estimate batch-norm statistics (see
            :mod:`anyprune.reconstruction`); needs ``calibration``.
        sequential: reconstruct one block at a time (inputs of a block come from the already pruned blocks)
            where the model has a chain of blocks; ``False``: one pass on the unpruned model.
        calibration_batch_size: rows per batch when ``calibration`` is one tensor.
        reconstruction_damp: relative damping of the least-squares re-fit, or ``"auto"``: chosen per re-fitted
            layer from 0.001, 0.01, 0.1 and 1 by two-fold cross-validation over the calibration batches.
        reconstruction_target: what re-fitted layers reproduce: ``"layer"`` their own outputs, ``"dense"`` the
            unpruned model's outputs at that layer where cross-validation shows this generalises (correcting
            the error of earlier pruned layers too), ``"auto"`` (default) ``"dense"`` outside the model's chain
            of repeated blocks and ``"layer"`` inside (see :func:`anyprune.reconstruction.prune_and_reconstruct`).
            With a calibrated criterion and ``sequential=True``, which units of a group go is chosen again on the
            statistics met when the group is reached (how many stays as planned).

    Raises:
        ConfigError: for any invalid argument, before the model is touched.

    Example:
        >>> import torch, anyprune as tp
        >>> model = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3), torch.nn.ReLU(), torch.nn.Conv2d(16, 4, 3))
        >>> pruner = tp.pruner.MetaPruner(model, torch.randn(1, 3, 8, 8), pruning_ratio=0.5, round_to=4)
        >>> result = pruner.step()
        >>> model[0].out_channels, model[2].in_channels, result.params_after < result.params_before
        (8, 8, True)
    """

    def __init__(
        self,
        model: nn.Module,
        example_inputs: Any,
        importance: Callable | None = None,
        global_pruning: bool = False,
        pruning_ratio: float = 0.5,
        pruning_ratio_dict: dict | None = None,
        max_pruning_ratio: float = 1.0,
        iterative_steps: int = 1,
        iterative_pruning_ratio_scheduler: Callable[[float, int], Sequence[float]] = linear_scheduler,
        ignored_layers: Iterable | None = None,
        round_to: int | None = None,
        isomorphic: bool = False,
        in_channel_groups: dict | None = None,
        out_channel_groups: dict | None = None,
        num_heads: dict | None = None,
        prune_num_heads: bool = False,
        prune_head_dims: bool = True,
        head_pruning_ratio: float = 0.0,
        head_pruning_ratio_dict: dict | None = None,
        customized_pruners: dict | None = None,
        unwrapped_parameters: Iterable | None = None,
        root_module_types: Iterable[type] = _DEFAULT_ROOTS,
        forward_fn: Callable | None = None,
        output_transform: Callable | None = None,
        channel_groups: dict | None = None,
        ch_sparsity: float | None = None,
        ch_sparsity_dict: dict | None = None,
        target_macs: float | None = None,
        target_params: float | None = None,
        calibration: Any = None,
        reconstruct: bool = False,
        sequential: bool = True,
        calibration_batch_size: int = 8,
        reconstruction_damp: float | str = 0.1,
        reconstruction_target: str = "auto",
    ) -> None:
        if ch_sparsity is not None:
            warnings.warn("ch_sparsity is deprecated; use pruning_ratio (same meaning)", FutureWarning,
                          stacklevel=_user_stacklevel())
            if pruning_ratio != 0.5:
                raise ConfigError("pass either pruning_ratio or the deprecated ch_sparsity, not both")
            pruning_ratio = ch_sparsity
        if ch_sparsity_dict is not None:
            warnings.warn("ch_sparsity_dict is deprecated; use pruning_ratio_dict (same meaning)", FutureWarning,
                          stacklevel=_user_stacklevel())
            if pruning_ratio_dict is not None:
                raise ConfigError("pass either pruning_ratio_dict or the deprecated ch_sparsity_dict, not both")
            pruning_ratio_dict = ch_sparsity_dict
        if channel_groups is not None:
            warnings.warn("channel_groups is deprecated and not needed: grouped convolutions and heads are found "
                          "from the trace", FutureWarning, stacklevel=_user_stacklevel())
        self._validate(model, importance, global_pruning, pruning_ratio, max_pruning_ratio, iterative_steps,
                       iterative_pruning_ratio_scheduler, round_to, isomorphic, root_module_types,
                       target_macs, target_params)
        self.model = model
        self.example_inputs = example_inputs
        self.importance: Callable = importance if importance is not None else GroupMagnitudeImportance(p=2)
        self.global_pruning = bool(global_pruning)
        self.isomorphic = bool(isomorphic)
        self.pruning_ratio = float(pruning_ratio)
        self.max_pruning_ratio = float(max_pruning_ratio)
        self.iterative_steps = int(iterative_steps)
        self.iterative_pruning_ratio_scheduler = iterative_pruning_ratio_scheduler
        self.round_to = round_to
        self._units: dict[tuple, int] = {}
        self.root_module_types = tuple(root_module_types)
        self.forward_fn = forward_fn
        self.target_macs = target_macs
        self.target_params = target_params
        self._scopes = self._check_ratio_dict(model, pruning_ratio_dict)
        self._check_calibration(importance, calibration, reconstruct, sequential, calibration_batch_size,
                                reconstruction_damp, reconstruction_target)
        self._check_heads(model, num_heads, prune_num_heads, prune_head_dims, head_pruning_ratio,
                          head_pruning_ratio_dict)
        for name, d in (("in_channel_groups", in_channel_groups), ("out_channel_groups", out_channel_groups),
                        ("channel_groups", channel_groups)):
            self._check_module_int_dict(model, d, name)
        self._schedules: dict[float, list[float]] = {}
        for r in {self.pruning_ratio, *(r for _, r in self._scopes), self.head_pruning_ratio,
                  *self.head_pruning_ratio_dict.values()}:
            self._schedule(r)
        if target_macs is not None or target_params is not None:
            self._budget_schedule = check_schedule(iterative_pruning_ratio_scheduler, 1.0, self.iterative_steps,
                                                   "the budget targets")

        self.DG = DependencyGraph().build_dependency(
            model, example_inputs, forward_fn=forward_fn, output_transform=output_transform,
            unwrapped_parameters=unwrapped_parameters, customized_pruners=customized_pruners,
            ignored_layers=ignored_layers,
        )
        self.ignored_layers = ignored_layers
        self.current_step = 0
        self.result: PruneResult | None = None
        self.searched_ratio: float | None = None
        table = self.DG.dims.atoms
        groups = self._groups()
        self._initial = {g.atoms[0]: table.atom_size(g.atoms[0]) for g in groups}
        self._check_scopes_used(groups)
        self.base_params = sum(p.numel() for p in model.parameters())
        self.base_macs: int | None = None
        if target_macs is not None:
            self.base_macs, _ = count_ops_and_params(model, example_inputs, forward_fn)
        self._absolute_targets = (self._absolute(target_macs, self.base_macs), self._absolute(target_params,
                                                                                               self.base_params))
        for name, target, base, unit in (("target_macs", target_macs, self.base_macs, "MACs"),
                                         ("target_params", target_params, self.base_params, "parameters")):
            if target is not None and base is not None and target > 1 and target > base:
                raise ConfigError(f"{name}={target!r} is more than the model has ({base:,} {unit}): nothing would "
                                  f"be pruned. Give a fraction in (0, 1] of the original or a count below {base:,}")
        if not groups:
            warnings.warn(f"{type(self).__name__} found no prunable group in {type(model).__name__}: every dim is "
                          "pinned (model inputs and outputs, ignored_layers, ops without a dimension rule) or no "
                          "group is rooted at root_module_types, so step() prunes nothing", AnyPruneWarning,
                          stacklevel=_user_stacklevel())

    # ------------------------------------------------------------ validation
    @staticmethod
    def _validate(model, importance, global_pruning, pruning_ratio, max_pruning_ratio, iterative_steps, scheduler,
                  round_to, isomorphic, root_module_types, target_macs, target_params) -> None:
        if not isinstance(model, nn.Module):
            raise ConfigError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if importance is not None and not callable(importance):
            raise ConfigError(f"importance must be callable as importance(group) -> scores, got {importance!r}")
        for name, v in (("global_pruning", global_pruning), ("isomorphic", isomorphic)):
            if not isinstance(v, bool):
                raise ConfigError(f"{name} must be True or False, got {v!r}")
        _check_ratio(pruning_ratio, "pruning_ratio")
        if not _is_ratio(max_pruning_ratio) or float(max_pruning_ratio) <= 0:
            raise ConfigError(f"max_pruning_ratio must be in (0, 1] (the most any group may lose), "
                              f"got {max_pruning_ratio!r}")
        if isinstance(iterative_steps, bool) or not isinstance(iterative_steps, numbers.Integral) \
                or iterative_steps < 1:
            raise ConfigError(f"iterative_steps must be an int >= 1, got {iterative_steps!r}")
        if not callable(scheduler):
            raise ConfigError("iterative_pruning_ratio_scheduler must be a callable (ratio, steps) -> list of "
                              f"steps + 1 ratios, got {scheduler!r}")
        if round_to is not None and (isinstance(round_to, bool) or not isinstance(round_to, numbers.Integral)
                                     or round_to < 1):
            raise ConfigError(f"round_to must be None or an int >= 1 (e.g. 8), got {round_to!r}")
        if isomorphic and not global_pruning:
            warnings.warn("isomorphic=True only changes global ranking; it has no effect without "
                          "global_pruning=True", AnyPruneWarning, stacklevel=_user_stacklevel())
        try:
            roots = tuple(root_module_types)
        except TypeError as err:
            raise ConfigError(f"root_module_types must be a list of module classes, got {root_module_types!r}") \
                from err
        if not roots or not all(isinstance(t, type) for t in roots):
            raise ConfigError(f"root_module_types must be a non-empty list of module classes, got {roots!r}")
        for name, t in (("target_macs", target_macs), ("target_params", target_params)):
            if t is not None and (isinstance(t, bool) or not isinstance(t, numbers.Real) or not float(t) > 0
                                  or not math.isfinite(float(t))):
                raise ConfigError(f"{name} must be a fraction in (0, 1] of the original or an absolute count "
                                  f"> 1, got {t!r}")

    def _check_calibration(self, importance: Any, calibration: Any, reconstruct: Any, sequential: Any, batch_size: Any,
                           damp: Any, target: Any = "auto") -> None:
        for name, v in (("reconstruct", reconstruct), ("sequential", sequential)):
            if not isinstance(v, bool):
                raise ConfigError(f"{name} must be True or False, got {v!r}")
        if damp != "auto" and (isinstance(damp, bool) or not isinstance(damp, numbers.Real) or
                               not 0 <= float(damp) < 1e3):
            raise ConfigError(f"reconstruction_damp must be a number >= 0 (e.g. 0.01) or 'auto', got {damp!r}")
        if target not in RECONSTRUCTION_TARGETS:
            raise ConfigError(f"reconstruction_target must be one of {', '.join(map(repr, RECONSTRUCTION_TARGETS))}, "
                              f"got {target!r}")
        self.calibration: list[Any] | None = None
        if calibration is not None:
            self.calibration = calibration_batches(calibration, batch_size)
        elif reconstruct:
            raise ConfigError("reconstruct=True needs calibration data: MetaPruner(..., calibration=batches), "
                              "e.g. a few hundred examples or 32 sequences of 256 tokens")
        elif getattr(importance, "needs_calibration", False) and not getattr(importance, "_calibrated", False):
            raise ConfigError(f"{type(importance).__name__} needs calibration data: pass "
                              "MetaPruner(..., calibration=batches) or call importance.calibrate(model, data) first")
        self.reconstruct = reconstruct
        self.sequential = sequential
        self.reconstruction_damp: float | str = damp if damp == "auto" else float(damp)
        self.reconstruction_target = str(target)
        self.reconstruction: list[ReconstructionReport] = []
        self._deferring = False  # this step plans counts only; the reconstruction chooses the units

    @staticmethod
    def _module_ids(model: nn.Module) -> set[int]:
        return {id(m) for m in model.modules()}

    def _check_ratio_dict(self, model: nn.Module, ratio_dict: dict | None) -> list[tuple[set[int], float]]:
        if ratio_dict is None:
            return []
        if not isinstance(ratio_dict, dict):
            raise ConfigError("pruning_ratio_dict must be a dict {module or tuple of modules: ratio}, "
                              f"got {type(ratio_dict).__name__}")
        ids = self._module_ids(model)
        scopes: list[tuple[set[int], float]] = []
        self._scope_names: list[str] = []
        for key, ratio in ratio_dict.items():
            members = list(key) if isinstance(key, (tuple, list)) else [key]
            if not members:
                raise ConfigError("pruning_ratio_dict has an empty tuple as a key; give at least one module")
            scope: set[int] = set()
            for m in members:
                if not isinstance(m, nn.Module):
                    raise ConfigError(f"pruning_ratio_dict keys must be modules or tuples of modules, got {m!r}")
                if id(m) not in ids:
                    raise ConfigError(f"pruning_ratio_dict key {type(m).__name__} is not a submodule of the model; "
                                      "use modules of the model being pruned (e.g. model.layer1)")
                scope.update(id(x) for x in m.modules())
            scopes.append((scope, _check_ratio(ratio, f"pruning_ratio_dict[{type(members[0]).__name__}]")))
            self._scope_names.append(", ".join(type(m).__name__ for m in members))
        return scopes

    def _check_heads(self, model, num_heads, prune_num_heads, prune_head_dims, head_pruning_ratio,
                     head_pruning_ratio_dict) -> None:
        for name, v in (("prune_num_heads", prune_num_heads), ("prune_head_dims", prune_head_dims)):
            if not isinstance(v, bool):
                raise ConfigError(f"{name} must be True or False, got {v!r}")
        self.head_pruning_ratio = _check_ratio(head_pruning_ratio, "head_pruning_ratio")
        self._check_module_int_dict(model, num_heads, "num_heads")
        for m, n in (num_heads or {}).items():
            width = self._module_width(m)
            if width is not None and width % n:
                raise ConfigError(f"num_heads[{type(m).__name__}] = {n} does not divide its width {width}; "
                                  "give the module's number of attention heads")
        self.num_heads: dict = dict(num_heads or {})
        self.prune_num_heads = prune_num_heads
        self.prune_head_dims = prune_head_dims
        hd = head_pruning_ratio_dict or {}
        if not isinstance(hd, dict):
            raise ConfigError("head_pruning_ratio_dict must be a dict {module: ratio}")
        ids = self._module_ids(model)
        for m, r in hd.items():
            if not isinstance(m, nn.Module) or id(m) not in ids:
                raise ConfigError(f"head_pruning_ratio_dict keys must be submodules of the model, got {m!r}")
            _check_ratio(r, f"head_pruning_ratio_dict[{type(m).__name__}]")
        self.head_pruning_ratio_dict: dict = {m: float(r) for m, r in hd.items()}
        if (hd or self.head_pruning_ratio > 0) and not prune_num_heads:
            warnings.warn("head_pruning_ratio is set but prune_num_heads=False: heads will not be removed; "
                          "set prune_num_heads=True", AnyPruneWarning, stacklevel=_user_stacklevel())

    @staticmethod
    def _module_width(m: nn.Module) -> int | None:
        for attr in ("embed_dim", "out_features", "out_channels"):
            v = getattr(m, attr, None)
            if isinstance(v, int):
                return v
        return None

    def _check_module_int_dict(self, model: nn.Module, d: dict | None, name: str) -> None:
        if d is None:
            return
        if not isinstance(d, dict):
            raise ConfigError(f"{name} must be a dict {{module: int}}, got {type(d).__name__}")
        ids = self._module_ids(model)
        for m, n in d.items():
            if not isinstance(m, nn.Module) or id(m) not in ids:
                raise ConfigError(f"{name} keys must be submodules of the model, got {m!r}")
            if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
                raise ConfigError(f"{name}[{type(m).__name__}] must be an int >= 1, got {n!r}")

    def _schedule(self, ratio: float) -> list[float]:
        if ratio not in self._schedules:
            self._schedules[ratio] = check_schedule(self.iterative_pruning_ratio_scheduler, ratio,
                                                    self.iterative_steps)
        return self._schedules[ratio]

    @staticmethod
    def _absolute(target: float | None, base: int | None) -> float | None:
        if target is None or base is None:
            return None
        return float(target) * base if target <= 1 else float(target)

    def _check_scopes_used(self, groups: list[Group]) -> None:
        used = {self._scope_of(g) for g in groups}
        for k, _ in enumerate(self._scopes):
            if k not in used:
                warnings.warn(f"pruning_ratio_dict entry {k} ({self._scope_names[k]}) is the root of no prunable "
                              "group; its ratio has no effect", AnyPruneWarning, stacklevel=_user_stacklevel())

    # ------------------------------------------------------------- groups
    def _groups(self) -> list[Group]:
        return list(self.DG.get_all_groups(root_module_types=self.root_module_types))

    @staticmethod
    def _root_module(group: Group) -> nn.Module | None:
        root = group.root
        if isinstance(root, (ParamSlice, LeafSlice)):
            return root.module
        return None

    def _scope_of(self, group: Group) -> int:
        m = self._root_module(group)
        if m is None:
            return -1
        for k, (ids, _) in enumerate(self._scopes):
            if id(m) in ids:
                return k
        return -1

    def _head_role(self, group: Group) -> str | None:
        """``"heads"`` if one unit of the group is a whole block of a factored dim (attention heads, KV groups,
        query heads per KV head, conv groups), ``"head_dims"`` if it is the same position inside every block,
        ``None`` for plain channels (see :attr:`anyprune.groups.group.Group.structure`)."""
        return {"heads": "heads", "head_dim": "head_dims"}.get(group.structure)

    def _head_policy(self, group: Group, ratio: float, step: int) -> float | None:
        """The ratio a group gets from head information; ``None`` leaves the group alone.

        This is the only place where ``prune_num_heads``, ``prune_head_dims``, ``head_pruning_ratio`` and
        ``head_pruning_ratio_dict`` decide anything (``num_heads`` is only checked: heads are found from the
        trace, see :meth:`_head_role`). A group that counts heads (or any
        repeated blocks of a producing dim) is pruned only with ``prune_num_heads=True``, at the head
        ratio of its module (``head_pruning_ratio_dict``, else ``head_pruning_ratio``); a group inside
        heads is pruned at the channel ratio only with ``prune_head_dims=True``.
        """
        role = self._head_role(group)
        if role is None:
            return ratio
        if role == "head_dims":
            return ratio if self.prune_head_dims else None
        if not self.prune_num_heads:
            return None
        r = self.head_pruning_ratio
        modules = {id(s.module) for s in group.slices if isinstance(s, ParamSlice)}
        for m, mr in self.head_pruning_ratio_dict.items():
            if id(m) in modules or any(id(x) in modules for x in m.modules()):
                r = mr
                break
        return self._schedule(r)[step]

    # ------------------------------------------------------------- planning
    def _targets(self, groups: list[Group], step: int, default_ratio: float | None = None
                 ) -> list[tuple[Group, float, Any]]:
        """``(group, ratio at this step, pool key)`` for every group the pruner acts on."""
        out = []
        for g in groups:
            scope = self._scope_of(g)
            if scope >= 0:
                ratio = self._schedule(self._scopes[scope][1])[step]
            elif default_ratio is not None:
                ratio = default_ratio
            else:
                ratio = self._schedule(self.pruning_ratio)[step]
            role = self._head_role(g)
            final = self._head_policy(g, ratio, step)
            if final is None:
                continue
            heads = role == "heads"
            key: Any = (scope, heads, final if heads else None)  # head ratios may differ per module
            if self.isomorphic:
                key = (*key, self._signature(g))
            out.append((g, final, key))
        return out

    @staticmethod
    def _signature(group: Group) -> tuple:
        """The structure of a group: its slices' module types, attributes, dims and ranks (sizes ignored)."""
        sig: list[tuple] = []
        for s in group.slices:
            if isinstance(s, ParamSlice):
                sig.append((type(s.module).__name__ if s.module is not None else "-", s.attr, s.dim,
                            s.tensor.dim()))
            else:
                sig.append((type(s.module).__name__, s.role))
        return tuple(sig)

    def _keep(self, initial: int, current: int, ratio: float, kept: int | None = None, unit: int = 1) -> int:
        """How many indices a group keeps: the ratio's target (or ``kept``), capped, at least 1, rounded up.

        ``round_to`` applies to the layer's width: a group whose unit removes ``unit`` positions of its root
        dim (a head_dim position removes one position in each of the heads) keeps a multiple of
        ``round_to / gcd(round_to, unit)`` units, so that the layer keeps a multiple of ``round_to``.
        """
        if kept is None:
            kept = int(initial * (1.0 - ratio) + 1e-6)
        floor = initial - int(initial * self.max_pruning_ratio + 1e-6)
        kept = max(kept, floor, 1)
        if self.round_to:
            step = self.round_to // math.gcd(self.round_to, max(1, unit))
            kept = -(-kept // step) * step
        return min(kept, current)

    def _unit(self, group: Group) -> int:
        """Positions of the group's root dim that one unit of the group covers (cached: the budget search asks
        for every group at every ratio it tries)."""
        root = group.root
        if not self.round_to or not isinstance(root, ParamSlice):
            return 1
        table = self.DG.dims.atoms
        key = (root.layout, group.atoms[0], table.version)
        unit = self._units.get(key)
        if unit is None:
            unit = self._units[key] = max(1, int((table.index_of(root.layout, group.atoms[0]) == 0).sum()))
        return unit

    def _scores(self, group: Group) -> torch.Tensor | None:
        scores = self.importance(group)
        if scores is None:
            return None
        if not isinstance(scores, torch.Tensor):
            try:
                scores = torch.as_tensor(scores)
            except (TypeError, ValueError, RuntimeError) as err:
                raise PruningError(f"importance {type(self.importance).__name__} returned {type(scores).__name__} "
                                   "for a group; it must return one number per index (a tensor or a list)") from err
        if scores.dtype == torch.bool or scores.is_complex():
            raise PruningError(f"importance {type(self.importance).__name__} returned {scores.dtype} scores; it must "
                               "return real numbers")
        scores = scores.detach().flatten().double().cpu()
        if scores.numel() != group.size:
            raise PruningError(f"importance {type(self.importance).__name__} returned {scores.numel()} scores for "
                               f"the group rooted at {getattr(group.root, 'fqn', '?')} of size {group.size}; it "
                               "must return one score per index of the group")
        if not bool(torch.isfinite(scores).all()):
            raise PruningError(f"importance {type(self.importance).__name__} returned non-finite scores for the "
                               f"group rooted at {getattr(group.root, 'fqn', '?')}")
        return scores

    def _score_all(self, targets: list[tuple[Group, float, Any]]) -> list[tuple[Group, float, Any, torch.Tensor]]:
        out = []
        can_score = getattr(self.importance, "can_score", None) if self._deferring else None
        for g, ratio, key in targets:
            if can_score is not None:  # scores chosen later, at each group's turn (_defers_scoring)
                if can_score(g):
                    out.append((g, ratio, key, torch.zeros(g.size)))
                continue
            s = self._scores(g)
            if s is not None:
                out.append((g, ratio, key, s))
        if targets and not out and any(r > 0 for _, r, _ in targets):
            warnings.warn(
                f"importance {type(self.importance).__name__} scored none of the {len(targets)} groups (it returned "
                "None for each), so nothing is pruned: parameters on the meta device carry no values, and "
                "BNScaleImportance needs batch-norm layers; use another criterion (e.g. RandomImportance)",
                AnyPruneWarning, stacklevel=_user_stacklevel())
        return out

    def _head_kept(self, scored: list[tuple[Group, float, Any, torch.Tensor]], init: list[int],
                   cur: list[int]) -> dict[int, int]:
        """Kept counts of the head groups (index in ``scored`` -> kept), chosen together per attention.

        The head groups of one attention (those sharing a projection's dim) are factors of its heads:
        with grouped-query attention, KV groups and query heads per KV head; the heads kept are the
        product of the factors kept. Each attention keeps the product closest to ``(1 - ratio)`` times its
        initial heads (a tie keeps fewer); where several factor counts reach it (3 x 2 or 2 x 3), the first
        factor in graph order keeps more, so identical layers stay identical (a Hugging Face config can only
        describe uniform layers). Which units go within a factor is decided by the scores as usual. A plain
        multi-head attention has one factor: the closest count.
        """
        heads = [k for k, (_, _, key, _) in enumerate(scored) if key[1] is True]
        parent = {k: k for k in heads}

        def find(k: int) -> int:
            while parent[k] != k:
                parent[k] = parent[parent[k]]
                k = parent[k]
            return k

        owner: dict[tuple[int, int], int] = {}
        for k in heads:
            for sl in scored[k][0].slices:
                if isinstance(sl, ParamSlice):
                    other = owner.setdefault((id(sl.tensor), sl.dim), k)
                    parent[find(k)] = find(other)
        families: dict[int, list[int]] = {}
        for k in heads:
            families.setdefault(find(k), []).append(k)
        kept: dict[int, int] = {}
        for members in families.values():
            ratio = scored[members[0]][1]
            target = math.prod(init[k] for k in members) * (1.0 - ratio)
            choices = itertools.product(*(range(1, cur[k] + 1) for k in members))
            if math.prod(cur[k] for k in members) > 100_000:  # far more heads than any attention has
                share = (1.0 - ratio) ** (1.0 / len(members))
                best = tuple(max(1, round(init[k] * share)) for k in members)
            else:
                best = min(choices, key=functools.partial(_head_rank, target))
            for k, kj in zip(members, best):
                kept[k] = self._keep(init[k], cur[k], ratio, kept=min(kj, cur[k]), unit=self._unit(scored[k][0]))
        return kept

    def _counts(self, scored: list[tuple[Group, float, Any, torch.Tensor]],
                orders: dict | None = None) -> list[int]:
        """Number of indices to remove from each scored group (local or global; heads per attention)."""
        table = self.DG.dims.atoms
        cur = [table.atom_size(g.atoms[0]) for g, *_ in scored]
        init = [self._initial.get(g.atoms[0], c) for (g, *_), c in zip(scored, cur)]
        head_kept = self._head_kept(scored, init, cur)
        if not self.global_pruning:
            return [c - head_kept[k] if k in head_kept else c - self._keep(i, c, r, unit=self._unit(g))
                    for k, ((g, r, _, _), i, c) in enumerate(zip(scored, init, cur))]
        pools: dict[Any, list[int]] = {}
        for k, (_, _, key, _) in enumerate(scored):
            if k not in head_kept:
                pools.setdefault(key, []).append(k)
        counts = [cur[k] - head_kept[k] if k in head_kept else 0 for k in range(len(scored))]
        for key, members in pools.items():
            ratio = scored[members[0]][1]
            total_init = sum(init[k] for k in members)
            n = sum(cur[k] for k in members) - int(total_init * (1.0 - ratio) + 1e-6)
            if n <= 0:
                continue
            if orders is not None and key in orders:
                gid = orders[key]
            else:
                flat = torch.cat([scored[k][3] for k in members])
                owner = torch.cat([torch.full((cur[k],), j, dtype=torch.long) for j, k in enumerate(members)])
                gid = owner[torch.argsort(flat, stable=True)]
                if orders is not None:
                    orders[key] = gid
            chosen = torch.bincount(gid[:n], minlength=len(members)).tolist()
            for j, k in enumerate(members):
                counts[k] = cur[k] - self._keep(init[k], cur[k], ratio, kept=cur[k] - chosen[j],
                                                unit=self._unit(scored[k][0]))
        return counts

    def _defers_scoring(self, interactive: bool) -> bool:
        """Whether scores are only needed to choose units, which the sequential reconstruction does anyway on the
        statistics it meets at each group's turn: then the counts are planned without a calibration pass."""
        return (not interactive and self.reconstruct and self.sequential and self.calibration is not None
                and not self.global_pruning and getattr(self.importance, "needs_calibration", False)
                and callable(getattr(self.importance, "score_with", None))
                and callable(getattr(self.importance, "can_score", None)))

    def _plan(self, step: int, interactive: bool = False) -> list[_Plan]:
        groups = self._groups()
        self._deferring = defer = self._defers_scoring(interactive)
        if defer:  # local ranking: the counts (also those a budget search finds) do not depend on the scores
            if self._absolute_targets != (None, None):
                scored, counts = self._plan_budget(groups, step)
            else:
                scored = self._score_all(self._targets(groups, step))
                counts = self._counts(scored)
            return [_Plan(g, torch.arange(n), deferred=True) for (g, *_), n in zip(scored, counts) if n > 0]
        if self.calibration is not None and getattr(self.importance, "needs_calibration", False):
            calibrate = getattr(self.importance, "calibrate")
            calibrate(self.model, self.calibration, groups=groups, forward_fn=self.forward_fn)
        if self._absolute_targets != (None, None):
            scored, counts = self._plan_budget(groups, step)
        else:
            scored = self._score_all(self._targets(groups, step))
            counts = self._counts(scored)
        plans = []
        for (g, _, _, s), n in zip(scored, counts):
            if n > 0:
                plans.append(_Plan(g, torch.argsort(s, stable=True)[:n].sort().values))
        return plans

    def _plan_budget(self, groups: list[Group], step: int):
        """Search the default ratio whose plan meets this step's share of the MACs / parameter budget."""
        frac = self._budget_schedule[step]
        macs_t, params_t = self._absolute_targets
        macs = module_macs(self.model, self.example_inputs, self.forward_fn) if macs_t is not None else None
        cost = CostModel(self.DG, macs)
        goals = []
        if macs_t is not None and self.base_macs is not None:
            goals.append(("MACs", cost.macs, self.base_macs - (self.base_macs - macs_t) * frac))
        if params_t is not None:
            goals.append(("params", cost.params, self.base_params - (self.base_params - params_t) * frac))
        scored_by_ratio: dict[float, Any] = {}
        orders: dict = {}
        base = self._score_all(self._targets(groups, step, default_ratio=0.0))
        searched = [key[0] == -1 and not key[1] for _, _, key, _ in base]  # default scope, not heads

        def plan(r: float):
            if r not in scored_by_ratio:
                scored = [(g, r if free else rr, key, s) for (g, rr, key, s), free in zip(base, searched)]
                scored_by_ratio[r] = (scored, self._counts(scored, orders))
            return scored_by_ratio[r]

        def meets(r: float) -> bool:
            scored, counts = plan(r)
            removed = {g.atoms[0]: n for (g, *_), n in zip(scored, counts) if n > 0}
            return all(f(removed) <= goal for _, f, goal in goals)

        if not meets(1.0):
            scored, counts = plan(1.0)
            removed = {g.atoms[0]: n for (g, *_), n in zip(scored, counts) if n > 0}
            best = ", ".join(f"{name} ~{f(removed):,.0f} (target {goal:,.0f})" for name, f, goal in goals)
            raise PruningError(
                f"the budget cannot be met: pruning every group as far as allowed gives {best}. Raise the target, "
                f"raise max_pruning_ratio (now {self.max_pruning_ratio}) or un-ignore layers. Nothing was pruned."
            )
        lo, hi = 0.0, 1.0
        if meets(0.0):
            hi = 0.0
        else:
            for _ in range(40):
                mid = (lo + hi) / 2
                if meets(mid):
                    hi = mid
                else:
                    lo = mid
                if hi - lo < 1e-7:
                    break
        self.searched_ratio = hi
        return plan(hi)

    # --------------------------------------------------------------- steps
    def step(self, interactive: bool = False) -> Any:
        """Run the next pruning step.

        Returns:
            a :class:`PruneResult` (``interactive=False``); or, with ``interactive=True``, a generator of
            groups with their chosen indices: call ``group.prune()`` (or ``group.prune(idxs=...)``) on each,
            in order. ``None`` once all ``iterative_steps`` are done.
        """
        if self.current_step >= self.iterative_steps:
            warnings.warn(f"all {self.iterative_steps} iterative steps are done; step() does nothing. Build a new "
                          "pruner (or raise iterative_steps) to prune further", AnyPruneWarning,
                          stacklevel=_user_stacklevel())
            return None
        plans = self._plan(self.current_step + 1, interactive)
        self.current_step += 1
        if interactive:
            return self._interactive(plans)
        return self._apply(plans)

    def _chosen_group(self, p: _Plan) -> Group:
        a = p.group.atoms[0]
        mask = torch.zeros(p.group.size, dtype=torch.bool)
        mask[p.indices] = True
        return Group(self.DG, [a], p.group.slices, p.group.root, None, {a: mask})

    def _interactive(self, plans: list[_Plan]) -> Generator[Group, None, None]:
        for p in plans:
            yield self._chosen_group(p)

    def _apply(self, plans: list[_Plan]) -> PruneResult:
        n = sum(int(p.indices.numel()) for p in plans)
        report = None
        try:
            with self.DG.transaction():  # all or nothing: any failure below restores the model exactly
                if self.reconstruct and plans:
                    assert self.calibration is not None
                    report = prune_and_reconstruct(
                        self.model, [(p.group, p.indices) for p in plans], self.calibration,
                        forward_fn=self.forward_fn, sequential=self.sequential, damp=self.reconstruction_damp,
                        target=self.reconstruction_target,
                        rescore=getattr(self.importance, "score_with", None) if self.sequential else None,
                        deferred=[p.group for p in plans if p.deferred])
                else:
                    for p in plans:
                        p.group.prune(p.indices)
                if plans:
                    with torch.no_grad():
                        self.DG.verify()  # re-run the example inputs: names any op that no longer fits
                    if _is_hugging_face(self.model):
                        from ..integrations.huggingface import sync_config

                        sync_config(self.model)  # fields the attribute tables do not cover, for any architecture
        except BaseException as err:
            self.current_step -= 1
            if isinstance(err, (PruningError, VerificationError)):
                raise type(err)(f"{err} The step was undone: the model, its attributes and its config are exactly "
                                "as they were before step().") from err
            raise
        if report is not None:
            self.reconstruction.append(report)
            n -= report.skipped_units
        result = PruneResult(step=self.current_step, groups_pruned=len(plans) - (report.skipped if report else 0),
                             indices_pruned=n,
                             params_before=self.base_params,
                             params_after=sum(p.numel() for p in self.model.parameters()),
                             target_macs=self._absolute_targets[0], target_params=self._absolute_targets[1])
        if self.target_macs is not None:
            result.macs_before = self.base_macs
            result.macs_after, _ = count_ops_and_params(self.model, self.example_inputs, self.forward_fn)
        self.result = result
        return result

    def pruning_history(self) -> list[tuple[str, Any, list[int]]]:
        """Every group pruned so far, replayable on an unpruned copy with :meth:`load_pruning_history`
        (see :meth:`anyprune.DependencyGraph.pruning_history`)."""
        return self.DG.pruning_history()

    def load_pruning_history(self, history: Any) -> None:
        """Replay another pruner's :meth:`pruning_history` on this pruner's (unpruned) model, all or
        nothing (see :meth:`anyprune.DependencyGraph.load_pruning_history`)."""
        self.DG.load_pruning_history(history)

    # -------------------------------------------------------- sparse training
    def update_regularizer(self) -> None:
        """Refresh what :meth:`regularize` acts on (call it at the start of each epoch). No-op here."""

    def regularize(self, model: nn.Module, reg: float | None = None, bias: bool = False) -> None:
        """Add regularisation gradients to ``.grad`` after ``loss.backward()``. No-op for ``MetaPruner``."""
        self._check_model(model)

    def _check_model(self, model: nn.Module) -> None:
        if model is not self.model:
            raise ConfigError("regularize(model) must get the model this pruner was built for")

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(pruning_ratio={self.pruning_ratio}, global_pruning={self.global_pruning}, "
                f"step {self.current_step}/{self.iterative_steps})")


BasePruner = MetaPruner
