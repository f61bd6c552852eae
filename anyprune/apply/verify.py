"""Verification: the mask-equivalence oracle and a forward re-run that names the failing op.

*Oracle.* For a group and indices, the *masked* model zeroes every slice that
pruning removes (producers' rows and biases, norm weights and running stats,
consumers' columns). For an *exact* group the pruned model must compute the
same outputs as the masked one; for an approximate group (an op normalises
or averages over the pruned dim) only the output shapes must match.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

from ..errors import ConfigError, VerificationError
from ..trace.opgraph import func_name, iter_tensors
from ..trace.recorder import model_failed, run_model, user_source_line

__all__ = ["VerifyResult", "verify_forward", "verify_group", "mask_group"]


@dataclasses.dataclass
class VerifyResult:
    """Outcome of :func:`verify_group`."""

    exact: bool
    shapes_match: bool
    max_abs_diff: float
    ok: bool
    details: str = ""


class _Watch(TorchFunctionMode):
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        try:
            return func(*args, **kwargs)
        except VerificationError:
            raise
        except Exception as err:
            shapes = [tuple(t.shape) for t in iter_tensors((args, kwargs))]
            raise VerificationError(
                f"{func_name(func)} at {user_source_line(2)} no longer fits after pruning "
                f"(tensor argument shapes {shapes}): {type(err).__name__}: {err}"
            ) from err


def verify_forward(model: torch.nn.Module, example_inputs: Any, forward_fn: Callable | None = None) -> Any:
    """Run the model; if it fails, raise :class:`VerificationError` naming the op and its source line."""
    if not isinstance(model, torch.nn.Module):
        raise ConfigError(f"verify_forward: model must be a torch.nn.Module, got {type(model).__name__}")
    with torch.no_grad(), _Watch():
        return run_model(model, example_inputs, forward_fn)


def mask_group(model: torch.nn.Module, group, removed: dict[int, torch.Tensor]) -> None:
    """Zero, in ``model`` (a copy of the graph's model), every slice that pruning ``removed`` would cut."""
    table = group.table
    params: dict[str, torch.Tensor] = dict(model.named_parameters(remove_duplicate=False))
    params.update(dict(model.named_buffers(remove_duplicate=False)))
    with torch.no_grad():
        for s in group._owner.index.slices_of(list(removed)):
            if not hasattr(s, "fqn"):
                raise VerificationError("groups with customized-pruner layers cannot be masked")
            mask = table.removal_mask(s.layout, removed)
            if bool(mask.any()):
                t = params[s.fqn]
                t.index_fill_(s.dim, mask.nonzero().flatten().to(t.device), 0)


def verify_group(graph, group, idxs=None, example_inputs: Any = None, forward_fn: Callable | None = None,
                 atol: float = 1e-7, rtol: float = 1e-6) -> VerifyResult:
    """Prune ``group`` in place and compare the model with its masked copy.

    Args:
        graph: the :class:`~anyprune.DependencyGraph` the group comes from.
        group: the group; ``idxs`` its indices (or the group's own).
        example_inputs: inputs for both runs (run in the model's current mode; use ``eval()``
            and float64 for a tight comparison).
        forward_fn: as in ``build_dependency``.
        atol, rtol: tolerances of the comparison for exact groups.

    Returns:
        A :class:`VerifyResult`; ``ok`` is False when shapes differ, or values differ for an exact group.

    Raises:
        VerificationError: the pruned model no longer runs; the message names the op and its source
            line. The pruning is not undone (verify on a copy of the model to keep the original).
    """
    from ..depgraph import DependencyGraph

    if not isinstance(graph, DependencyGraph):
        raise ConfigError(f"verify_group: graph must be a DependencyGraph, got {type(graph).__name__}")
    graph._check_group(group, "verify_group")
    for name, tol in (("atol", atol), ("rtol", rtol)):
        if not isinstance(tol, (int, float)) or isinstance(tol, bool) or not tol >= 0 or tol == float("inf"):
            raise ConfigError(f"verify_group: {name} must be a finite number >= 0, got {tol!r}")
    model = graph.model
    removed = group.removal(idxs)
    masked = copy.deepcopy(model)
    mask_group(masked, group, removed)
    try:
        with torch.no_grad():
            reference = run_model(masked, example_inputs, forward_fn)
    except Exception as err:  # the unpruned model cannot run: nothing was pruned
        raise model_failed(model, err) from err
    graph._prune_group(group, idxs)
    out = verify_forward(model, example_inputs, forward_fn)
    ref_t, out_t = iter_tensors(reference), iter_tensors(out)
    shapes = len(ref_t) == len(out_t) and all(a.shape == b.shape for a, b in zip(ref_t, out_t))
    diff = 0.0
    close = shapes
    if shapes:
        for a, b in zip(ref_t, out_t):
            if a.is_floating_point() and a.numel():
                diff = max(diff, float((a - b).abs().max()))
                close = close and torch.allclose(a, b, atol=atol, rtol=rtol)
            elif not torch.equal(a, b):
                close = False
    exact = group.exact
    ok = shapes and (close or not exact)
    return VerifyResult(exact, shapes, diff, ok, "" if ok else f"max |pruned - masked| = {diff:.3g}")
