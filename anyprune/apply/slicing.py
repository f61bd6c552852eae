"""Cut parameters, buffers and grads: the only place where tensors shrink."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ..dims.layout import AtomTable
from ..errors import PruningError
from .transaction import Transaction, slice_tensor

__all__ = ["keep_from_mask", "apply_removal", "validate_indices"]


def validate_indices(idxs: Any, n: int, what: str) -> torch.Tensor:
    """Indices as a sorted ``long`` tensor; raises :class:`PruningError` if any is bad."""
    if isinstance(idxs, torch.Tensor):
        if idxs.dtype == torch.bool:
            raise PruningError(f"{what}: pass integer indices, not a boolean mask (use mask.nonzero())")
        if idxs.is_floating_point() or idxs.is_complex():
            raise PruningError(f"{what}: indices must be ints, got a {idxs.dtype} tensor")
        if idxs.ndim != 1:
            raise PruningError(f"{what}: indices must be a 1-D tensor or a list, got a tensor of shape "
                               f"{tuple(idxs.shape)}")
        t = idxs.detach().to("cpu", torch.long).flatten()
    else:
        try:
            items = list(idxs)
        except TypeError as err:
            raise PruningError(f"{what}: indices must be a sequence of ints or a tensor, got {type(idxs).__name__}") \
                from err
        for i in items:
            bad_tensor = isinstance(i, torch.Tensor) and (
                i.numel() != 1 or i.is_floating_point() or i.dtype == torch.bool
            )
            not_int = not isinstance(i, (int, torch.Tensor)) and not hasattr(i, "__index__")
            if isinstance(i, bool) or bad_tensor or not_int:
                raise PruningError(f"{what}: indices must be ints, got {i!r} ({type(i).__name__})")
        values = [int(i) for i in items]
        huge = [v for v in values if not -(2**63) <= v < 2**63]
        if huge:
            raise PruningError(f"{what}: indices {huge[:5]} out of range [0, {n})")
        t = torch.tensor(values, dtype=torch.long)
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= n):
        bad = t[(t < 0) | (t >= n)][:5].tolist()
        raise PruningError(f"{what}: indices {bad} out of range [0, {n}); negative indices are not accepted")
    uniq = torch.unique(t)
    if uniq.numel() != t.numel():
        raise PruningError(f"{what}: duplicated indices in {t.tolist()[:20]}; pass each index once")
    return uniq


def keep_from_mask(mask: torch.Tensor) -> torch.Tensor:
    return (~mask).nonzero().flatten()


def apply_removal(table: AtomTable, slices: list, bindings: list, removed: dict[int, torch.Tensor],
                  tx: Transaction, resolve: Callable[[torch.Tensor], torch.Tensor] | None = None,
                  log: list[tuple[str, int, torch.Tensor]] | None = None) -> None:
    """Remove the positions that ``removed`` marks from every slice, inside ``tx``.

    Raises :class:`PruningError` before touching anything if a dim would become
    zero-width. Updates the atom sizes of ``table`` only once all swaps are done.
    ``resolve`` maps a slice's tensor to the tensor to cut instead (its meta twin, for a shapes-only trial).
    ``log`` (a list) gets ``(tensor name, dim, removed-positions mask)`` for every parameter slice cut.
    """
    from ..groups.group import LeafSlice  # stage-local type

    per_tensor: dict[int, tuple[torch.Tensor, dict[int, torch.Tensor]]] = {}
    leaf_calls: list[tuple[LeafSlice, list[int]]] = []
    for s in slices:
        mask = table.removal_mask(s.layout, removed)
        if not bool(mask.any()):
            continue
        if bool(mask.all()):
            name = s.fqn if not isinstance(s, LeafSlice) else f"{s.module_name} ({s.role} channels)"
            dim = getattr(s, "dim", s.role if isinstance(s, LeafSlice) else "?")
            raise PruningError(
                f"Cannot prune all {mask.numel()} positions of `{name}` dim {dim}: every dim must keep at least "
                "one. Prune fewer indices (lower the ratio)."
            )
        if isinstance(s, LeafSlice):
            leaf_calls.append((s, mask.nonzero().flatten().tolist()))
            continue
        t = s.tensor if resolve is None else resolve(s.tensor)
        per_tensor.setdefault(id(t), (t, {}))[1][s.dim] = mask
        if log is not None:
            log.append((s.fqn, s.dim, mask))
    new_tensors: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]] = []
    for t, dims in per_tensor.values():
        if t.is_meta and t.grad is None:  # shapes only: no positions to gather
            shape = list(t.shape)
            for dim, mask in dims.items():
                shape[dim] -= int(mask.sum())
            new_tensors.append((t, t.new_empty(shape), None))
            continue
        new = t.detach()
        grad = t.grad
        for dim, mask in dims.items():
            keep = keep_from_mask(mask)
            new = slice_tensor(new, dim, keep)
            if grad is not None:
                grad = slice_tensor(grad, dim, keep)
        new_tensors.append((t, new, grad))
    counts = {a: int(m.sum()) for a, m in removed.items()}
    new_attrs = []
    for b in bindings:
        sizes = [table.size_after(lay, counts) for lay in b.layouts]
        new_attrs.append((b.obj, b.attr, b.make(sizes)))
    for t, new, grad in new_tensors:
        tx.set_data(t, new, grad)
    for obj, attr, value in new_attrs:
        tx.set_attr(obj, attr, value)
    for s, idxs in leaf_calls:
        tx.snapshot_module(s.module, copy_tensors=True)  # user code may write in place before it fails
        if s.role == "out":
            s.pruner.prune_out_channels(s.module, idxs)
        else:
            s.pruner.prune_in_channels(s.module, idxs)
