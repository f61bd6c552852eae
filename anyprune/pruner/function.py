"""The customized-pruner protocol of the seed API."""

from __future__ import annotations

from typing import Any

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
