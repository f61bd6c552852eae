"""Shared test helpers."""

from __future__ import annotations

import collections

import torch

import anyprune as tp

# what the reliability tests checked (fuzzing, fault injection), reported at the end of the run
STATS: collections.Counter[str] = collections.Counter()


def structure(dg: tp.DependencyGraph, group) -> dict[tuple[str, int], str]:
    """``{(fqn, dim): index-map kind}`` of a group's parameter slices."""
    return {(s.fqn, s.dim): dg._index_map_kind(s.layout, group.atoms) for s in group.slices}


def state(model: torch.nn.Module) -> dict:
    """Everything that pruning may change: tensors (with grads) and module attributes."""
    out = {}
    for n, t in list(model.named_parameters()) + list(model.named_buffers()):
        out[n] = (t.detach().clone(), None if t.grad is None else t.grad.clone(), tuple(t.shape))
    for n, m in model.named_modules():
        for k, v in vars(m).items():
            if isinstance(v, (int, tuple, float, str, bool)):
                out[f"{n}:{k}"] = v
    return out


def assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        if isinstance(a[k], tuple) and a[k] and isinstance(a[k][0], torch.Tensor):
            assert a[k][2] == b[k][2], f"{k}: shape {a[k][2]} != {b[k][2]}"
            if a[k][0].is_meta or b[k][0].is_meta:  # no values on the meta device: device and dtype only
                assert (a[k][0].device, a[k][0].dtype) == (b[k][0].device, b[k][0].dtype), f"{k}: moved or cast"
            else:
                assert torch.equal(a[k][0], b[k][0]), f"{k}: values changed"
            assert (a[k][1] is None) == (b[k][1] is None), f"{k}: grad presence changed"
            if a[k][1] is not None:
                assert torch.equal(a[k][1], b[k][1]), f"{k}: grad changed"
        else:
            assert a[k] == b[k], f"{k}: {a[k]} != {b[k]}"
