"""Consumers: the layers that contract over a dim, seen as ``y = W x (+ b)`` on input *features*.

A consumer of a group is a layer that sums over the pruned dim: a linear layer's
input features, a (non-grouped) convolution's input channels, Hugging Face's
``Conv1D``. Removing units of the group removes input features of the consumer,
which is exactly what the calibrated criteria and the least-squares re-fit reason
about. For a convolution one input channel is ``kernel_h * kernel_w`` features
(the unfolded patch, channel-major, as ``weight.reshape(out, -1)`` orders them).

Depthwise convolutions do not contract over channels (channel ``c`` only feeds
output ``c``), so they are not consumers: the group passes through them to the
layer that does. Grouped convolutions with ``1 < groups < channels`` and layers
this module does not know are not consumers either; criteria ignore them and the
re-fit leaves them as they are.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ConsumerSpec", "consumer_spec", "input_features", "weight_matrix", "write_weight_matrix"]


@dataclasses.dataclass(frozen=True)
class ConsumerSpec:
    """How a module reads its input as features.

    Attributes:
        kind: ``"linear"`` (features are the last dim), ``"conv"`` (unfolded patches) or ``"conv1d_hf"``
            (Hugging Face ``Conv1D``: weight ``[in, out]``).
        in_dim: the weight dim that holds the input channels.
        per_channel: features per input channel (``prod(kernel_size)`` for a conv, else 1).
    """

    kind: str
    in_dim: int
    per_channel: int

    def features(self, module: nn.Module) -> int:
        """Number of input features the module's weight has now."""
        return int(_weight(module).shape[self.in_dim]) * self.per_channel


def _is_hf_conv1d(module: nn.Module) -> bool:
    w = getattr(module, "weight", None)
    return type(module).__name__ == "Conv1D" and isinstance(w, torch.Tensor) and w.dim() == 2


def _weight(module: nn.Module) -> torch.Tensor:
    w = module.weight
    if not isinstance(w, torch.Tensor):
        raise TypeError(f"{type(module).__name__}.weight is not a tensor")
    return w


def consumer_spec(module: nn.Module) -> ConsumerSpec | None:
    """The :class:`ConsumerSpec` of ``module``, or ``None`` if it does not contract over its input channels."""
    w = getattr(module, "weight", None)
    if not isinstance(w, torch.Tensor):
        return None
    if isinstance(module, nn.Linear):
        return ConsumerSpec("linear", 1, 1)
    if isinstance(module, (nn.Conv1d, nn.Conv2d)) and not module.transposed and module.groups == 1 \
            and isinstance(module.padding, tuple):
        return ConsumerSpec("conv", 1, math.prod(module.kernel_size))
    if _is_hf_conv1d(module):
        return ConsumerSpec("conv1d_hf", 0, 1)
    return None


def input_features(module: nn.Module, spec: ConsumerSpec, x: torch.Tensor) -> torch.Tensor:
    """The module's input ``x`` as rows of features ``[rows, features]`` (one row per token / output pixel)."""
    if spec.kind != "conv":
        return x.reshape(-1, x.shape[-1])
    conv: Any = module
    if math.prod(conv.kernel_size) == 1 and all(s == 1 for s in conv.stride) \
            and all(p == 0 for p in conv.padding):  # 1x1: the channels at every position
        return x.movedim(1, -1).reshape(-1, x.shape[1])
    kernel: tuple[int, ...]
    if isinstance(conv, nn.Conv1d):  # as a conv2d over a height of 1
        x4 = x.unsqueeze(2)
        kernel, dilation = (1, conv.kernel_size[0]), (1, conv.dilation[0])
        padding: tuple[int, ...] = (0, int(conv.padding[0]))
        stride: tuple[int, ...] = (1, conv.stride[0])
    else:
        x4, kernel, dilation = x, conv.kernel_size, conv.dilation
        padding, stride = tuple(conv.padding), conv.stride
    if conv.padding_mode != "zeros":
        pads = [int(p) for p in reversed(padding) for _ in range(2)]
        x4 = F.pad(x4, pads, mode=conv.padding_mode)
        padding = (0, 0)
    cols = F.unfold(x4, kernel, dilation=dilation, padding=padding, stride=stride)  # [N, C*k, L]
    return cols.transpose(1, 2).reshape(-1, cols.shape[1])


def weight_matrix(module: nn.Module, spec: ConsumerSpec) -> torch.Tensor:
    """The weight as ``[outputs, features]`` (a view where possible; detached)."""
    w = _weight(module).detach()
    if spec.kind == "conv1d_hf":
        return w.t()
    return w.reshape(w.shape[0], -1)


def write_weight_matrix(module: nn.Module, spec: ConsumerSpec, matrix: torch.Tensor) -> torch.Tensor:
    """``matrix`` (``[outputs, features]``) in the layout of the module's weight (same shape, dtype, device)."""
    w = _weight(module)
    if spec.kind == "conv1d_hf":
        matrix = matrix.t()
    return matrix.reshape(w.shape).to(dtype=w.dtype, device=w.device).contiguous()
