"""Recurrent layers: ``torch.lstm``, ``torch.gru``, ``torch.rnn_tanh``, ``torch.rnn_relu`` (``nn.LSTM``, ``nn.GRU``,
``nn.RNN``).

The hidden size ``H`` is one atom for the whole module (every layer and direction shares ``hidden_size``).
Each gate-packed weight or bias has rows ``gates x H`` (gates: 4 for LSTM, 3 for GRU, 1 for RNN; the gate
factor is pinned), the recurrent weights read ``H``, the first layer reads the input's features, and
later layers read ``directions x H`` (the concatenation of the previous layer's directions). Removing a
hidden unit removes its row in every gate, its column in every recurrent and next-layer weight, and its
positions in the output and the states. With a zero initial state (the default) this is exact: a unit
whose gate rows are all zero keeps a zero state and a zero output. Packed sequences and ``proj_size``
pin every dim.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..layout import cat_layouts, prod_layouts
from .registry import PinDims, register_dim_rule

_GATES: dict[Any, int] = {torch.lstm: 4, torch.gru: 3, torch.rnn_tanh: 1, torch.rnn_relu: 1}


def _created(v) -> bool:
    """A value made by a factory call (the module's default zero state, sized from ``hidden_size``)."""
    return v.producer is not None and not v.producer.inputs


def _recurrent(ctx, input, hx, params, has_biases, num_layers, dropout, train, bidirectional,
               batch_first=False) -> None:
    from ...trace.opgraph import Value

    if not isinstance(input, Value) or not isinstance(params, (list, tuple)):
        raise PinDims("packed sequence input")
    gates = _GATES[ctx.call.func]
    dirs = 2 if bidirectional else 1
    per_layer = 4 if has_biases else 2
    if len(params) != num_layers * dirs * per_layer or any(not isinstance(p, Value) for p in params):
        raise PinDims("recurrent layer with projections (proj_size) or unexpected parameters")
    hidden = params[1].shape[1]
    H = ctx.new(hidden)
    rows = prod_layouts([ctx.new(gates, pin="gates of a recurrent layer"), H])
    x = ctx.layouts(input)
    features = x[-1]
    for layer in range(num_layers):
        reads = features if layer == 0 else cat_layouts([H] * dirs)
        for d in range(dirs):
            k = (layer * dirs + d) * per_layer
            w_ih, w_hh = ctx.layouts(params[k]), ctx.layouts(params[k + 1])
            ctx.unify(w_ih[0], rows)
            ctx.unify(w_ih[1], reads)
            ctx.unify(w_hh[0], rows)
            ctx.unify(w_hh[1], H)
            if has_biases:
                ctx.unify(ctx.layouts(params[k + 2])[0], rows)
                ctx.unify(ctx.layouts(params[k + 3])[0], rows)
    batched = input.ndim == 3
    batch = (x[0] if batch_first else x[1]) if batched else None
    states = list(hx) if isinstance(hx, (list, tuple)) else [hx]
    for s in states:
        if isinstance(s, Value) and not _created(s):
            lays = ctx.layouts(s)
            ctx.pin(lays[0], "layers x directions of a recurrent state")
            ctx.unify(lays[-1], H)
            if batched and batch is not None:
                ctx.unify(lays[1], batch)
    out = [*x[:-1], cat_layouts([H] * dirs)]
    ctx.set_output(out, 0)
    for i in range(1, len(ctx.outputs)):
        shape = ctx.outputs[i].shape
        lays = [ctx.new(shape[0], pin="layers x directions of a recurrent state")]
        if batched:
            lays.append(batch)
        lays.append(H)
        ctx.set_output(lays, i)
    mod = ctx.module_of(params[0])
    if isinstance(mod, nn.RNNBase):
        ctx.bind(mod, "hidden_size", [H])
        ctx.bind(mod, "input_size", [features])


for _f in _GATES:
    register_dim_rule(_f)(_recurrent)
