"""The customized-pruner protocol of the seed API."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["BasePruningFunc"]


class BasePruningFunc:
    """Base class for pruners of user layer types (``customized_pruners={MyLayer: MyPruner()}``).

    Subclasses implement the four methods below. Layers of a customized type are
    recorded whole by the tracer: their input dim of size ``get_in_channels``
    and output dim of size ``get_out_channels`` are coupled to the rest of the
    model, and pruning calls ``prune_out_channels`` / ``prune_in_channels``
    (inside a transaction: if they raise, the layer is restored).
    """

    TARGET_MODULES: tuple[type, ...] = ()

    def __init__(self, pruning_dim: int = 1) -> None:
        self.pruning_dim = pruning_dim

    def prune_out_channels(self, layer: nn.Module, idxs: list[int]) -> nn.Module:
        raise NotImplementedError

    def prune_in_channels(self, layer: nn.Module, idxs: list[int]) -> nn.Module:
        raise NotImplementedError

    def get_out_channels(self, layer: nn.Module) -> int | None:
        raise NotImplementedError

    def get_in_channels(self, layer: nn.Module) -> int | None:
        raise NotImplementedError

    def __call__(self, layer: nn.Module, idxs: list[int]) -> Any:
        return self.prune_out_channels(layer, idxs)

    def check(self, layer: nn.Module, idxs: Sequence[int], to_output: bool) -> None:
        """Raise unless ``idxs`` are valid output (``to_output``) or input channels of ``layer``."""
        from ..apply.slicing import validate_indices

        n = self.get_out_channels(layer) if to_output else self.get_in_channels(layer)
        if n is not None:
            validate_indices(idxs, n, f"{type(self).__name__} on {type(layer).__name__}")

    def _prune_parameter_and_grad(self, weight: nn.Parameter, keep_idxs: Sequence[int],
                                  pruning_dim: int) -> nn.Parameter:
        """A new parameter holding positions ``keep_idxs`` of ``weight`` along ``pruning_dim`` (and of its
        ``.grad`` alike), for custom pruners that rebuild their parameters."""
        keep = torch.as_tensor(list(keep_idxs), dtype=torch.long, device=weight.device)
        new = nn.Parameter(torch.index_select(weight.data, pruning_dim, keep).clone(),
                           requires_grad=weight.requires_grad)
        if weight.grad is not None:
            new.grad = torch.index_select(weight.grad, pruning_dim, keep).clone()
        return new
