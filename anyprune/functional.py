"""The seed's low-level pruning functions: prune one layer, nothing else.

``prune_conv_out_channels(layer, idxs)`` removes output channels ``idxs`` of
``layer`` and updates its attributes; coupled layers are *not* touched (use
:class:`anyprune.DependencyGraph` for that). Every function validates its
indices (in range, not duplicated, not all of them), works transactionally
(on error the layer is left as it was) and returns the layer.

Each function is also a handler object of the seed API: ``handler(layer, idxs)``
is the same call; ``handler.get_out_channels(layer)`` / ``get_in_channels``
report the sizes it acts on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from .apply.slicing import validate_indices
from .apply.transaction import Transaction, slice_tensor
from .errors import PruningError

__all__ = [
    "prune_conv_out_channels", "prune_conv_in_channels",
    "prune_depthwise_conv_out_channels", "prune_depthwise_conv_in_channels",
    "prune_batchnorm_out_channels", "prune_batchnorm_in_channels",
    "prune_linear_out_channels", "prune_linear_in_channels",
    "prune_prelu_out_channels", "prune_prelu_in_channels",
    "prune_layernorm_out_channels", "prune_layernorm_in_channels",
    "prune_embedding_out_channels", "prune_embedding_in_channels",
    "prune_parameter_out_channels", "prune_parameter_in_channels",
    "prune_multihead_attention_out_channels", "prune_multihead_attention_in_channels",
    "prune_groupnorm_out_channels", "prune_groupnorm_in_channels",
    "prune_instancenorm_out_channels", "prune_instancenorm_in_channels",
    "PruningFunction", "handler_for", "root_dim",
]

_NORM_BUFFERS = ("running_mean", "running_var")


class PruningFunction:
    """A named single-layer pruning function (callable as ``fn(layer, idxs)``)."""

    def __init__(self, name: str, types: tuple[type, ...], size: Callable[[Any], int],
                 body: Callable[[Any, torch.Tensor, Transaction], None], role: str) -> None:
        self.__name__ = name
        self.__qualname__ = name
        self.types = types
        self._size = size
        self._body = body
        self.role = role

    def __call__(self, layer: Any, idxs, **kwargs) -> Any:
        if self.types and not isinstance(layer, self.types):
            expected = " or ".join(t.__name__ for t in self.types)
            raise PruningError(
                f"{self.__name__} does not fit a {type(layer).__name__}: it prunes {expected} layers. "
                "Pick the prune_* function of the layer's type."
            )
        n = self._size(layer, **kwargs)
        if n is None:  # nothing to prune on this layer (e.g. a PReLU with one shared slope)
            validate_indices(idxs, 1 << 62, f"{self.__name__} on {type(layer).__name__}")
            return layer
        keep_all = torch.arange(n)
        drop = validate_indices(idxs, n, f"{self.__name__} on {type(layer).__name__}")
        if drop.numel() == 0:
            return layer
        if drop.numel() >= n:
            raise PruningError(
                f"Cannot prune all {n} channels of {type(layer).__name__} with {self.__name__}: every layer "
                "must keep at least one. Prune fewer indices."
            )
        keep = keep_all[~torch.isin(keep_all, drop)]
        with Transaction() as tx:
            self._body(layer, keep, tx, **kwargs)
        return layer

    def get_out_channels(self, layer: Any) -> int:
        return self._size(layer)

    get_in_channels = get_out_channels

    def __repr__(self) -> str:
        return f"<pruning function {self.__name__}>"


def _cut(tx: Transaction, t: torch.Tensor | None, dim: int, keep: torch.Tensor) -> None:
    if t is None:
        return
    grad = slice_tensor(t.grad, dim, keep) if t.grad is not None else None
    tx.set_data(t, slice_tensor(t, dim, keep), grad)


# ---------------------------------------------------------------- conv
def _conv_out(layer, keep, tx):
    if layer.groups > 1:
        raise PruningError(
            f"prune_conv_out_channels on a grouped conv (groups={layer.groups}) must keep groups uniform; "
            "use prune_depthwise_conv_out_channels for depthwise convs or a DependencyGraph group"
        )
    _cut(tx, layer.weight, 1 if layer.transposed else 0, keep)
    _cut(tx, layer.bias, 0, keep)
    tx.set_attr(layer, "out_channels", int(keep.numel()))


def _conv_in(layer, keep, tx):
    if layer.groups > 1:
        raise PruningError(
            f"prune_conv_in_channels on a grouped conv (groups={layer.groups}) must keep groups uniform; "
            "use prune_depthwise_conv_in_channels for depthwise convs or a DependencyGraph group"
        )
    _cut(tx, layer.weight, 0 if layer.transposed else 1, keep)
    tx.set_attr(layer, "in_channels", int(keep.numel()))


def _depthwise(layer, keep, tx):
    if layer.groups != layer.in_channels or layer.out_channels != layer.in_channels:
        raise PruningError(
            f"{type(layer).__name__}(in={layer.in_channels}, out={layer.out_channels}, groups={layer.groups}) "
            "is not depthwise (groups == in_channels == out_channels)"
        )
    _cut(tx, layer.weight, 0, keep)
    _cut(tx, layer.bias, 0, keep)
    n = int(keep.numel())
    tx.set_attr(layer, "out_channels", n)
    tx.set_attr(layer, "in_channels", n)
    tx.set_attr(layer, "groups", n)


_CONV = (nn.modules.conv._ConvNd,)
prune_conv_out_channels = PruningFunction(
    "prune_conv_out_channels", _CONV, lambda m: m.out_channels, _conv_out, "out")
prune_conv_in_channels = PruningFunction(
    "prune_conv_in_channels", _CONV, lambda m: m.in_channels, _conv_in, "in")
prune_depthwise_conv_out_channels = PruningFunction(
    "prune_depthwise_conv_out_channels", _CONV, lambda m: m.out_channels, _depthwise, "out")
prune_depthwise_conv_in_channels = PruningFunction(
    "prune_depthwise_conv_in_channels", _CONV, lambda m: m.in_channels, _depthwise, "in")


# -------------------------------------------------------------- linear
def _linear_out(layer, keep, tx):
    _cut(tx, layer.weight, 0, keep)
    _cut(tx, layer.bias, 0, keep)
    tx.set_attr(layer, "out_features", int(keep.numel()))


def _linear_in(layer, keep, tx):
    _cut(tx, layer.weight, 1, keep)
    tx.set_attr(layer, "in_features", int(keep.numel()))


prune_linear_out_channels = PruningFunction(
    "prune_linear_out_channels", (nn.Linear,), lambda m: m.out_features, _linear_out, "out")
prune_linear_in_channels = PruningFunction(
    "prune_linear_in_channels", (nn.Linear,), lambda m: m.in_features, _linear_in, "in")


# --------------------------------------------------------------- norms
def _bn(layer, keep, tx):
    _cut(tx, layer.weight, 0, keep)
    _cut(tx, layer.bias, 0, keep)
    for name in _NORM_BUFFERS:
        _cut(tx, getattr(layer, name, None), 0, keep)
    tx.set_attr(layer, "num_features", int(keep.numel()))


_BN = (nn.modules.batchnorm._BatchNorm,)
_IN = (nn.modules.instancenorm._InstanceNorm,)
prune_batchnorm_out_channels = PruningFunction(
    "prune_batchnorm_out_channels", _BN, lambda m: m.num_features, _bn, "out")
prune_batchnorm_in_channels = PruningFunction(
    "prune_batchnorm_in_channels", _BN, lambda m: m.num_features, _bn, "in")
prune_instancenorm_out_channels = PruningFunction(
    "prune_instancenorm_out_channels", _IN, lambda m: m.num_features, _bn, "out")
prune_instancenorm_in_channels = PruningFunction(
    "prune_instancenorm_in_channels", _IN, lambda m: m.num_features, _bn, "in")


def _ln(layer, keep, tx):
    _cut(tx, layer.weight, -1, keep)
    _cut(tx, layer.bias, -1, keep)
    shape = tuple(layer.normalized_shape)
    tx.set_attr(layer, "normalized_shape", (*shape[:-1], int(keep.numel())))


prune_layernorm_out_channels = PruningFunction(
    "prune_layernorm_out_channels", (nn.LayerNorm,), lambda m: m.normalized_shape[-1], _ln, "out")
prune_layernorm_in_channels = PruningFunction(
    "prune_layernorm_in_channels", (nn.LayerNorm,), lambda m: m.normalized_shape[-1], _ln, "in")


def _gn(layer, keep, tx):
    n = int(keep.numel())
    if n % layer.num_groups:
        raise PruningError(
            f"GroupNorm(num_groups={layer.num_groups}) would keep {n} channels, not a multiple of num_groups; "
            "prune the same number of channels in every group (a DependencyGraph group does this)"
        )
    _cut(tx, layer.weight, 0, keep)
    _cut(tx, layer.bias, 0, keep)
    tx.set_attr(layer, "num_channels", n)


prune_groupnorm_out_channels = PruningFunction(
    "prune_groupnorm_out_channels", (nn.GroupNorm,), lambda m: m.num_channels, _gn, "out")
prune_groupnorm_in_channels = PruningFunction(
    "prune_groupnorm_in_channels", (nn.GroupNorm,), lambda m: m.num_channels, _gn, "in")


def _prelu(layer, keep, tx):
    if layer.num_parameters == 1:
        return
    _cut(tx, layer.weight, 0, keep)
    tx.set_attr(layer, "num_parameters", int(keep.numel()))


def _prelu_size(m):
    return m.num_parameters if m.num_parameters > 1 else None


prune_prelu_out_channels = PruningFunction("prune_prelu_out_channels", (nn.PReLU,), _prelu_size, _prelu, "out")
prune_prelu_in_channels = PruningFunction("prune_prelu_in_channels", (nn.PReLU,), _prelu_size, _prelu, "in")


def _emb(layer, keep, tx):
    _cut(tx, layer.weight, 1, keep)
    tx.set_attr(layer, "embedding_dim", int(keep.numel()))


prune_embedding_out_channels = PruningFunction(
    "prune_embedding_out_channels", (nn.Embedding,), lambda m: m.embedding_dim, _emb, "out")
prune_embedding_in_channels = PruningFunction(
    "prune_embedding_in_channels", (nn.Embedding,), lambda m: m.embedding_dim, _emb, "in")


# ----------------------------------------------------------- parameters
def _param(t, keep, tx, dim: int = -1):
    _cut(tx, t, dim, keep)


def _param_size(t, dim: int = -1):
    if not isinstance(t, torch.Tensor):
        raise PruningError(f"prune_parameter_*_channels needs a tensor/nn.Parameter, got {type(t).__name__}")
    return t.shape[dim]


prune_parameter_out_channels = PruningFunction(
    "prune_parameter_out_channels", (torch.Tensor,), _param_size, _param, "out")
prune_parameter_in_channels = PruningFunction(
    "prune_parameter_in_channels", (torch.Tensor,), _param_size, _param, "in")


# ------------------------------------------------------------ attention
def _mha(layer, keep, tx):
    e = layer.embed_dim
    n = int(keep.numel())
    if n % layer.num_heads:
        raise PruningError(
            f"MultiheadAttention(num_heads={layer.num_heads}) would keep embed_dim={n}, not a multiple of "
            "num_heads; prune the same number of dims in every head"
        )
    if not layer._qkv_same_embed_dim:
        raise PruningError("prune_multihead_attention_*: kdim/vdim different from embed_dim is not supported")
    qkv_keep = torch.cat([keep, keep + e, keep + 2 * e])
    _cut(tx, layer.in_proj_weight, 0, qkv_keep)
    _cut(tx, layer.in_proj_weight, 1, keep)
    _cut(tx, layer.in_proj_bias, 0, qkv_keep)
    _cut(tx, layer.out_proj.weight, 0, keep)
    _cut(tx, layer.out_proj.weight, 1, keep)
    _cut(tx, layer.out_proj.bias, 0, keep)
    for name in ("bias_k", "bias_v"):
        _cut(tx, getattr(layer, name, None), -1, keep)
    tx.set_attr(layer, "embed_dim", n)
    tx.set_attr(layer, "kdim", n)
    tx.set_attr(layer, "vdim", n)
    tx.set_attr(layer, "head_dim", n // layer.num_heads)
    tx.set_attr(layer.out_proj, "in_features", n)
    tx.set_attr(layer.out_proj, "out_features", n)


prune_multihead_attention_out_channels = PruningFunction(
    "prune_multihead_attention_out_channels", (nn.MultiheadAttention,), lambda m: m.embed_dim, _mha, "out")
prune_multihead_attention_in_channels = PruningFunction(
    "prune_multihead_attention_in_channels", (nn.MultiheadAttention,), lambda m: m.embed_dim, _mha, "in")


# ---------------------------------------------------------- dispatching
def handler_for(module: Any, attr: str, dim: int) -> PruningFunction:
    """The seed handler that corresponds to dim ``dim`` of ``module.<attr>``."""
    if isinstance(module, nn.modules.conv._ConvNd):
        out_dim = 1 if module.transposed else 0
        depthwise = module.groups > 1 and module.groups == module.in_channels == module.out_channels
        is_out = attr != "weight" or dim == out_dim
        if depthwise:
            return prune_depthwise_conv_out_channels if is_out else prune_depthwise_conv_in_channels
        return prune_conv_out_channels if is_out else prune_conv_in_channels
    if isinstance(module, nn.Linear):
        return prune_linear_out_channels if attr != "weight" or dim == 0 else prune_linear_in_channels
    table = [
        (_BN, prune_batchnorm_out_channels), (_IN, prune_instancenorm_out_channels),
        ((nn.LayerNorm,), prune_layernorm_out_channels), ((nn.GroupNorm,), prune_groupnorm_out_channels),
        ((nn.PReLU,), prune_prelu_out_channels), ((nn.MultiheadAttention,), prune_multihead_attention_out_channels),
    ]
    for types, fn in table:
        if isinstance(module, types):
            return fn
    if isinstance(module, nn.Embedding):
        return prune_embedding_out_channels if dim == 1 else prune_embedding_in_channels
    return prune_parameter_out_channels


def root_dim(module: Any, fn: PruningFunction) -> tuple[str, int]:
    """Which ``(attr, dim)`` of ``module`` a handler acts on (for ``get_pruning_group``)."""
    if fn.types and not isinstance(module, fn.types):
        expected = " or ".join(t.__name__ for t in fn.types)
        raise PruningError(
            f"{fn.__name__} does not fit module {type(module).__name__}: it prunes {expected} layers"
        )
    if isinstance(module, nn.modules.conv._ConvNd):
        out_dim = 1 if module.transposed else 0
        return "weight", out_dim if fn.role == "out" or fn in (prune_depthwise_conv_in_channels,) else 1 - out_dim
    if isinstance(module, nn.Linear):
        return "weight", 0 if fn.role == "out" else 1
    if isinstance(module, nn.Embedding):
        return "weight", 1
    if isinstance(module, nn.MultiheadAttention):
        return "in_proj_weight", 1
    if isinstance(module, nn.LayerNorm):
        return ("weight" if module.weight is not None else "bias"), -1
    for name in ("weight", "running_mean", "bias"):
        if getattr(module, name, None) is not None:
            return name, 0
    raise PruningError(f"{type(module).__name__} has no parameter that {fn.__name__} can prune")
