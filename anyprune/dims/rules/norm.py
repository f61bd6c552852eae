"""Normalisation layers, PReLU and embeddings."""

from __future__ import annotations

import torch.nn.functional as F
from torch import nn

from .registry import register_dim_rule


def _per_channel(ctx, input, tensors, module_attr: str | None) -> None:
    x = ctx.layouts(input)
    c = 1 if input.ndim > 1 else 0
    owner = None
    for t in tensors:
        if t is not None and t.ndim == 1 and t.shape[0] == input.shape[c]:
            ctx.unify(ctx.layouts(t)[0], x[c])
            owner = owner or ctx.module_of(t)
    ctx.set_output(list(x))
    if module_attr and owner is not None and hasattr(owner, module_attr):
        ctx.bind(owner, module_attr, [x[c]])


@register_dim_rule(F.batch_norm)
def batch_norm(ctx, input, running_mean, running_var, weight=None, bias=None, *args, **kwargs) -> None:
    _per_channel(ctx, input, [running_mean, running_var, weight, bias], "num_features")
    training = kwargs.get("training", args[0] if args else False)
    if training or running_mean is None:  # statistics of this batch: every dim but the channels is averaged over
        _mix_all_but_channels(ctx, input, "batch_norm with batch statistics")


def _mix_all_but_channels(ctx, input, why: str) -> None:
    lays = ctx.layouts(input)
    for d, lay in enumerate(lays):
        if d != 1:
            ctx.mix(lay, f"averaged over by {why}")


@register_dim_rule(F.instance_norm)
def instance_norm(ctx, input, running_mean=None, running_var=None, weight=None, bias=None, *args, **kwargs) -> None:
    _per_channel(ctx, input, [running_mean, running_var, weight, bias], "num_features")
    if kwargs.get("use_input_stats", args[0] if args else True):
        for lay in ctx.layouts(input)[2:]:
            ctx.mix(lay, "averaged over by instance_norm")


@register_dim_rule(F.layer_norm)
def layer_norm(ctx, input, normalized_shape, weight=None, bias=None, eps=1e-5) -> None:
    x = ctx.layouts(input)
    k = len(normalized_shape)
    normed = x[len(x) - k:]
    for t in (weight, bias):
        if t is not None:
            for a, b in zip(ctx.layouts(t), normed):
                ctx.unify(a, b)
    for lay in normed:
        ctx.mix(lay, "normalised over by layer_norm")
    ctx.set_output(list(x))
    owner = ctx.module_of(weight) or ctx.module_of(bias)
    if isinstance(owner, nn.LayerNorm):
        ctx.bind(owner, "normalized_shape", list(normed), tuple)


if hasattr(F, "rms_norm"):

    @register_dim_rule(F.rms_norm)
    def rms_norm(ctx, input, normalized_shape, weight=None, eps=None) -> None:
        x = ctx.layouts(input)
        k = len(normalized_shape)
        normed = x[len(x) - k:]
        if weight is not None:
            for a, b in zip(ctx.layouts(weight), normed):
                ctx.unify(a, b)
        for lay in normed:
            ctx.mix(lay, "normalised over by rms_norm")
        ctx.set_output(list(x))
        owner = ctx.module_of(weight)
        if owner is not None and isinstance(getattr(owner, "normalized_shape", None), tuple):
            ctx.bind(owner, "normalized_shape", list(normed), tuple)


@register_dim_rule(F.group_norm)
def group_norm(ctx, input, num_groups, weight=None, bias=None, eps=1e-5) -> None:
    x = ctx.layouts(input)
    c = 1 if input.ndim > 1 else 0
    cl = x[c]
    for t in (weight, bias):
        if t is not None:
            ctx.unify(ctx.layouts(t)[0], cl)
    groups, per_group = ctx.atoms.factor(cl, [num_groups, input.shape[c] // num_groups], "group_norm groups")
    ctx.mix(per_group, "normalised over by group_norm (within a group)")
    ctx.set_output(list(x))
    owner = ctx.module_of(weight) or ctx.module_of(bias)
    if isinstance(owner, nn.GroupNorm):
        ctx.bind(owner, "num_groups", [groups])
        ctx.bind(owner, "num_channels", [cl])


@register_dim_rule(F.local_response_norm)
def local_response_norm(ctx, input, *args, **kwargs) -> None:
    x = ctx.layouts(input)
    ctx.mix(x[1], "local_response_norm mixes neighbouring channels")
    ctx.pin(x[1], "local_response_norm mixes neighbouring channels by position")
    ctx.set_output(list(x))


@register_dim_rule(F.prelu)
def prelu(ctx, input, weight) -> None:
    x = ctx.layouts(input)
    if weight.shape[0] > 1:
        c = 1 if input.ndim > 1 else 0
        ctx.unify(ctx.layouts(weight)[0], x[c])
        owner = ctx.module_of(weight)
        if isinstance(owner, nn.PReLU):
            ctx.bind(owner, "num_parameters", [x[c]])
    ctx.set_output(list(x))


@register_dim_rule(F.embedding)
def embedding(ctx, input, weight, *args, **kwargs) -> None:
    w = ctx.layouts(weight)
    ctx.pin(w[0], "embedding rows are selected by data")
    ctx.set_output([*list(ctx.layouts(input)), w[1]])
    owner = ctx.module_of(weight)
    if isinstance(owner, nn.Embedding):
        ctx.bind(owner, "embedding_dim", [w[1]])
