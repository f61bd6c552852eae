"""The seed's per-layer pruner classes (``tp.function.LinearPruner`` …) over :mod:`anyprune.functional`.

Each class prunes one layer type and reports its sizes: ``prune_out_channels(layer, idxs)``,
``prune_in_channels(layer, idxs)``, ``get_out_channels(layer)``, ``get_in_channels(layer)``. Calling an
instance prunes output channels. Subclass :class:`BasePruningFunc` to teach the dependency graph a custom
layer (pass an instance in ``customized_pruners={LayerType: pruner}`` or to
:meth:`anyprune.DependencyGraph.register_customized_layer`).

Example:
    >>> import torch, anyprune as tp
    >>> lin = torch.nn.Linear(4, 6)
    >>> pruner = tp.function.LinearPruner()
    >>> _ = pruner.prune_out_channels(lin, [0, 1])
    >>> pruner.get_out_channels(lin), pruner.get_in_channels(lin)
    (4, 4)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from . import functional as fn
from .pruner.function import BasePruningFunc

__all__ = [
    "BasePruningFunc", "ConvPruner", "DepthwiseConvPruner", "LinearPruner", "BatchnormPruner", "LayernormPruner",
    "GroupNormPruner", "InstanceNormPruner", "PReLUPruner", "EmbeddingPruner", "ParameterPruner",
    "MultiheadAttentionPruner", "PrunerBox",
]


class _FromFunctions(BasePruningFunc):
    OUT: fn.PruningFunction
    IN: fn.PruningFunction

    def prune_out_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        return self.OUT(layer, idxs)

    def prune_in_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        return self.IN(layer, idxs)

    def get_out_channels(self, layer: nn.Module) -> int | None:
        return _size(self.OUT, layer)

    def get_in_channels(self, layer: nn.Module) -> int | None:
        return _size(self.IN, layer)


def _size(f: fn.PruningFunction, layer: Any) -> int | None:
    n = f.get_out_channels(layer)
    return None if n is None else int(n)


def _attr(name: str):
    def get(self, layer: Any) -> int:
        return int(getattr(layer, name))
    return get


class ConvPruner(_FromFunctions):
    TARGET_MODULES = (nn.modules.conv._ConvNd,)
    OUT, IN = fn.prune_conv_out_channels, fn.prune_conv_in_channels
    get_out_channels = _attr("out_channels")
    get_in_channels = _attr("in_channels")


class DepthwiseConvPruner(ConvPruner):
    OUT, IN = fn.prune_depthwise_conv_out_channels, fn.prune_depthwise_conv_in_channels


class LinearPruner(_FromFunctions):
    TARGET_MODULES = (nn.Linear,)
    OUT, IN = fn.prune_linear_out_channels, fn.prune_linear_in_channels
    get_out_channels = _attr("out_features")
    get_in_channels = _attr("in_features")


class BatchnormPruner(_FromFunctions):
    TARGET_MODULES = (nn.modules.batchnorm._BatchNorm,)
    OUT, IN = fn.prune_batchnorm_out_channels, fn.prune_batchnorm_in_channels
    get_out_channels = get_in_channels = _attr("num_features")


class InstanceNormPruner(_FromFunctions):
    TARGET_MODULES = (nn.modules.instancenorm._InstanceNorm,)
    OUT, IN = fn.prune_instancenorm_out_channels, fn.prune_instancenorm_in_channels
    get_out_channels = get_in_channels = _attr("num_features")


class LayernormPruner(_FromFunctions):
    TARGET_MODULES = (nn.LayerNorm,)
    OUT, IN = fn.prune_layernorm_out_channels, fn.prune_layernorm_in_channels

    def get_out_channels(self, layer: nn.Module) -> int:
        return int(layer.normalized_shape[-1])  # type: ignore[index]

    get_in_channels = get_out_channels


class GroupNormPruner(_FromFunctions):
    TARGET_MODULES = (nn.GroupNorm,)
    OUT, IN = fn.prune_groupnorm_out_channels, fn.prune_groupnorm_in_channels
    get_out_channels = get_in_channels = _attr("num_channels")


class PReLUPruner(_FromFunctions):
    TARGET_MODULES = (nn.PReLU,)
    OUT, IN = fn.prune_prelu_out_channels, fn.prune_prelu_in_channels


class EmbeddingPruner(_FromFunctions):
    TARGET_MODULES = (nn.Embedding,)
    OUT, IN = fn.prune_embedding_out_channels, fn.prune_embedding_in_channels
    get_out_channels = get_in_channels = _attr("embedding_dim")


class MultiheadAttentionPruner(_FromFunctions):
    TARGET_MODULES = (nn.MultiheadAttention,)
    OUT, IN = fn.prune_multihead_attention_out_channels, fn.prune_multihead_attention_in_channels
    get_out_channels = get_in_channels = _attr("embed_dim")


class ParameterPruner(_FromFunctions):
    """An unwrapped ``nn.Parameter`` pruned along ``pruning_dim`` (default: the last dim)."""

    TARGET_MODULES = (nn.Parameter,)
    OUT, IN = fn.prune_parameter_out_channels, fn.prune_parameter_in_channels

    def __init__(self, pruning_dim: int = -1) -> None:
        super().__init__(pruning_dim)

    def get_out_channels(self, layer: Any) -> int:
        return int(layer.shape[self.pruning_dim])

    get_in_channels = get_out_channels


PrunerBox: dict[type, BasePruningFunc] = {
    nn.modules.conv._ConvNd: ConvPruner(), nn.Linear: LinearPruner(),
    nn.modules.batchnorm._BatchNorm: BatchnormPruner(), nn.modules.instancenorm._InstanceNorm: InstanceNormPruner(),
    nn.LayerNorm: LayernormPruner(), nn.GroupNorm: GroupNormPruner(), nn.PReLU: PReLUPruner(),
    nn.Embedding: EmbeddingPruner(), nn.MultiheadAttention: MultiheadAttentionPruner(),
    nn.Parameter: ParameterPruner(),
}
"""The built-in pruner of each layer type."""


def pruner_for(layer: Any) -> BasePruningFunc | None:
    """The built-in pruner whose layer type ``layer`` is an instance of (depthwise convs get theirs)."""
    if isinstance(layer, nn.modules.conv._ConvNd) and layer.groups > 1 and \
            layer.groups == layer.in_channels == layer.out_channels:
        return DepthwiseConvPruner()
    for t, p in PrunerBox.items():
        if isinstance(layer, t):
            return p
    return None
