"""A serialisable pruning configuration and the one-call entry point :func:`prune_`."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any

from torch import nn

from .. import importance as imp
from ..errors import ConfigError
from .algorithms import BNScalePruner, GroupNormPruner, GrowingRegPruner, MagnitudePruner
from .base import MetaPruner, PruneResult

__all__ = ["PruneConfig", "prune_", "IMPORTANCES"]

IMPORTANCES: dict[str, Callable[..., Any]] = {
    "magnitude": imp.GroupMagnitudeImportance,
    "bn_scale": imp.BNScaleImportance,
    "lamp": imp.LAMPImportance,
    "fpgm": imp.FPGMImportance,
    "random": imp.RandomImportance,
    "taylor": imp.GroupTaylorImportance,
    "hessian": imp.GroupHessianImportance,
    "wanda_sp": imp.WandaSPImportance,
    "fluctuation": imp.FluctuationImportance,
    "obs": imp.OBSImportance,
}
_PRUNERS: dict[str, type[MetaPruner]] = {
    "meta": MetaPruner, "magnitude": MagnitudePruner, "bn_scale": BNScalePruner, "group_norm": GroupNormPruner,
    "growing_reg": GrowingRegPruner,
}


@dataclasses.dataclass(frozen=True)
class PruneConfig:
    """Everything a pruner needs besides the model and inputs, as plain data (JSON round-trips).

    Modules are named by their fully qualified names (``model.named_modules()``). The calibrated criteria
    (``importance="obs"``, ``"wanda_sp"``, ``"fluctuation"``) and ``reconstruct=True`` need calibration data,
    given to :func:`prune_` (data is not part of the configuration).
    A ``pruning_ratio_dict`` key may name several modules separated by ``","``:
    they form one scope sharing the ratio.

    Example:
        >>> import torch, anyprune as tp
        >>> cfg = tp.PruneConfig(pruning_ratio=0.5, round_to=2, ignored_layers=("2",))
        >>> tp.PruneConfig.from_json(cfg.to_json()) == cfg
        True
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 8),
        ...                             torch.nn.ReLU(), torch.nn.Linear(8, 2))
        >>> result = tp.prune_(model, torch.randn(1, 4), cfg)
        >>> model[0].out_features, model[2].out_features
        (4, 8)
    """

    pruning_ratio: float = 0.5
    pruning_ratio_dict: dict[str, float] = dataclasses.field(default_factory=dict)
    max_pruning_ratio: float = 1.0
    global_pruning: bool = False
    isomorphic: bool = False
    iterative_steps: int = 1
    round_to: int | None = None
    ignored_layers: tuple[str, ...] = ()
    importance: str = "magnitude"
    importance_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict)
    pruner: str = "meta"
    target_macs: float | None = None
    target_params: float | None = None
    reconstruct: bool = False
    sequential: bool = True
    calibration_batch_size: int = 8
    reconstruction_target: str = "auto"

    def __post_init__(self) -> None:
        if self.importance not in IMPORTANCES:
            raise ConfigError(f"importance must be one of {sorted(IMPORTANCES)}, got {self.importance!r}")
        if self.pruner not in _PRUNERS:
            raise ConfigError(f"pruner must be one of {sorted(_PRUNERS)}, got {self.pruner!r}")
        if not isinstance(self.ignored_layers, (tuple, list)) or \
                not all(isinstance(n, str) for n in self.ignored_layers):
            raise ConfigError(f"ignored_layers must be a list of module names, got {self.ignored_layers!r}")
        object.__setattr__(self, "ignored_layers", tuple(self.ignored_layers))
        if not isinstance(self.pruning_ratio_dict, dict) or \
                not all(isinstance(k, str) for k in self.pruning_ratio_dict):
            raise ConfigError("pruning_ratio_dict must map module names (comma-separated for a scope) to ratios")
        if not isinstance(self.importance_kwargs, dict):
            raise ConfigError("importance_kwargs must be a dict of keyword arguments for the importance")
        for name in ("reconstruct", "sequential"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, got {getattr(self, name)!r}")
        b = self.calibration_batch_size
        if isinstance(b, bool) or not isinstance(b, int) or b < 1:
            raise ConfigError(f"calibration_batch_size must be an int >= 1, got {b!r}")
        from ..reconstruction.driver import TARGETS

        if self.reconstruction_target not in TARGETS:
            raise ConfigError(f"reconstruction_target must be one of {', '.join(map(repr, TARGETS))}, got "
                              f"{self.reconstruction_target!r}")

    def to_dict(self) -> dict[str, Any]:
        """The configuration as JSON-compatible data."""
        d = dataclasses.asdict(self)
        d["ignored_layers"] = list(self.ignored_layers)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PruneConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`ConfigError`."""
        if not isinstance(data, dict):
            raise ConfigError(f"a PruneConfig is a mapping of its fields, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(f"unknown PruneConfig fields {unknown}; known fields: {sorted(names)}")
        return cls(**data)

    def to_json(self) -> str:
        """The configuration as a JSON string (keys sorted)."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> PruneConfig:
        """Inverse of :meth:`to_json`; text that is not a JSON object of the fields raises :class:`ConfigError`."""
        if not isinstance(text, (str, bytes, bytearray)):
            raise ConfigError(f"PruneConfig.from_json expects JSON text, got {type(text).__name__}")
        try:
            data = json.loads(text)
        except RecursionError as err:
            raise ConfigError("PruneConfig.from_json: the JSON is nested too deeply") from err
        except ValueError as err:
            raise ConfigError(f"PruneConfig.from_json: not valid JSON: {err}") from err
        return cls.from_dict(data)

    def build(self, model: nn.Module, example_inputs: Any, **kwargs: Any) -> MetaPruner:
        """A pruner for ``model`` with this configuration (``kwargs`` go to the pruner as they are)."""
        modules = dict(model.named_modules())

        def module(name: str) -> nn.Module:
            if name not in modules:
                raise ConfigError(f"PruneConfig names module {name!r}, which the model does not have")
            return modules[name]

        ratio_dict: dict[Any, float] = {}
        for key, ratio in self.pruning_ratio_dict.items():
            parts = [k.strip() for k in key.split(",")]
            ratio_dict[tuple(module(p) for p in parts) if len(parts) > 1 else module(parts[0])] = ratio
        try:
            importance = IMPORTANCES[self.importance](**self.importance_kwargs)
        except TypeError as err:
            raise ConfigError(f"importance_kwargs {sorted(self.importance_kwargs)} do not fit importance "
                              f"{self.importance!r}: {err}") from err
        return _PRUNERS[self.pruner](
            model, example_inputs, importance=importance, pruning_ratio=self.pruning_ratio,
            pruning_ratio_dict=ratio_dict or None, max_pruning_ratio=self.max_pruning_ratio,
            global_pruning=self.global_pruning, isomorphic=self.isomorphic, iterative_steps=self.iterative_steps,
            round_to=self.round_to, ignored_layers=[module(n) for n in self.ignored_layers],
            target_macs=self.target_macs, target_params=self.target_params, reconstruct=self.reconstruct,
            sequential=self.sequential, calibration_batch_size=self.calibration_batch_size,
            reconstruction_target=self.reconstruction_target, **kwargs,
        )


def prune_(model: nn.Module, example_inputs: Any, config: PruneConfig | dict | None = None,
           calibration: Any = None, **kwargs: Any) -> PruneResult:
    """Prune ``model`` in place with one call: build the pruner from ``config`` and run every step.

    Args:
        model: the model.
        example_inputs: inputs for one forward pass.
        config: a :class:`PruneConfig` (or its dict); default ``PruneConfig()``.
        calibration: calibration data for calibrated criteria and ``reconstruct=True`` (a tensor of examples
            such as token ids ``[N, T]``, a ``DataLoader`` or an iterable of example inputs).
        **kwargs: extra pruner arguments (e.g. ``forward_fn``).

    Returns:
        the :class:`PruneResult` of the last step.

    Example:
        >>> import torch, anyprune as tp
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
        >>> data = torch.randn(256, 4)
        >>> dense = model(data).detach()
        >>> cfg = tp.PruneConfig(pruning_ratio=0.5, importance="obs", reconstruct=True)
        >>> result = tp.prune_(model, data[:1], cfg, calibration=data)
        >>> model[0].out_features, bool((model(data) - dense).abs().mean() < dense.abs().mean())
        (8, True)
    """
    if config is None:
        config = PruneConfig()
    elif isinstance(config, dict):
        config = PruneConfig.from_dict(config)
    elif not isinstance(config, PruneConfig):
        raise ConfigError(f"config must be a PruneConfig or a dict, got {type(config).__name__}")
    if calibration is not None:
        kwargs["calibration"] = calibration
    pruner = config.build(model, example_inputs, **kwargs)
    result = None
    for _ in range(pruner.iterative_steps):
        result = pruner.step()
    if not isinstance(result, PruneResult):
        raise ConfigError("the configuration ran no pruning step")
    return result
