"""Prune a list of planned groups and re-fit their consumers, one block at a time where the model allows."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..calibration import InputStats, consumer_spec, stream_statistics
from ..calibration import evaluating as _evaluating
from ..calibration.runner import BlockRunner, find_blocks, module_block
from ..groups.group import ParamSlice
from .batchnorm import reestimate_batchnorm
from .refit import Reconstructor

__all__ = ["ReconstructionReport", "prune_and_reconstruct"]

log = logging.getLogger(__name__)


@dataclasses.dataclass
class ReconstructionReport:
    """What :func:`prune_and_reconstruct` did."""

    refitted: list[str] = dataclasses.field(default_factory=list)  # consumer module names
    not_refitted: list[str] = dataclasses.field(default_factory=list)  # consumers without statistics
    blocks: int = 0  # blocks processed one at a time (0: one pass over the whole model)
    batchnorm_layers: int = 0  # batch-norm layers re-estimated


def _consumers(group: Any) -> list[nn.Module]:
    out = []
    for s in group.slices:
        if isinstance(s, ParamSlice) and s.module is not None and s.attr == "weight":
            spec = consumer_spec(s.module)
            if spec is not None and s.dim == spec.in_dim and s.tensor is s.module.weight:
                out.append(s.module)
    return out


def _block_of(group: Any, where: dict[nn.Module, int]) -> int | None:
    ks = {where.get(s.module) for s in group.slices if isinstance(s, ParamSlice) and s.module is not None}
    if len(ks) == 1:
        (k,) = ks
        return k
    return None


def prune_and_reconstruct(model: nn.Module, plans: list[tuple[Any, torch.Tensor]], batches: list[Any], *,
                          forward_fn: Callable | None = None, sequential: bool = True, damp: float = 0.1,
                          max_features: int = 8192, batchnorm: bool | None = None,
                          show_progress: bool = False) -> ReconstructionReport:
    """Prune ``plans`` (``(group, indices)`` pairs) and re-fit every consumer of the removed units.

    Groups that span blocks (a residual stream) or lie outside the chain of blocks are pruned first; their
    consumers are re-fitted on statistics of the model before that. Then, with ``sequential=True`` and a
    chain of blocks (:func:`anyprune.calibration.find_blocks`), each block's own groups are pruned when the
    data reaches the block: its consumers' statistics come from inputs produced by the already pruned and
    re-fitted blocks before it, so errors do not accumulate, and only that block's statistics are held.
    Batch-norm statistics are re-estimated at the end (``batchnorm=None``: when some consumer of removed units
    could not be re-fitted, e.g. a grouped convolution; re-fitted consumers reproduce their dense outputs, so the
    statistics after them still hold).

    Args:
        model: the model.
        plans: the groups and the unit indices to remove (as a pruner plans them).
        batches: calibration batches (:func:`anyprune.calibration.calibration_batches`).
        forward_fn: ``forward_fn(model, batch)`` instead of the default call.
        sequential: block by block where the model has a chain of blocks.
        damp: relative damping of the least-squares re-fit.
        max_features: consumers with more input features are not re-fitted.
        batchnorm: re-estimate batch-norm statistics (``None``: if some consumer was not re-fitted).
        show_progress: progress bars.
    """
    report = ReconstructionReport()
    rec = Reconstructor(damp)
    names = {m: n for n, m in model.named_modules()}
    with _evaluating(model):
        chain = find_blocks(model) if sequential else None
        if chain and not BlockRunner.check_chain(model, chain, batches[0], forward_fn):
            chain = None
        where = module_block(chain, model)
        local: dict[int, list[tuple[Any, torch.Tensor]]] = {}
        spanning: list[tuple[Any, torch.Tensor]] = []
        for group, idx in plans:
            k = _block_of(group, where) if chain else None
            if k is None:
                spanning.append((group, idx))
            else:
                local.setdefault(k, []).append((group, idx))

        def prune(todo: list[tuple[Any, torch.Tensor]]) -> None:
            for group, idx in todo:
                rec.watch(group, group.removal(idx))
                group.prune(idx)

        if spanning:
            stats: dict[nn.Module, InputStats] = {}
            consumers = [m for g, _ in spanning for m in _consumers(g)]
            stream_statistics(model, batches, consumers, on_stats=lambda st, _k: stats.update(st),
                              forward_fn=forward_fn, blocks=chain, max_features=max_features,
                              show_progress=show_progress)
            prune(spanning)
            report.refitted += [names.get(m, "?") for m in rec.refit(stats)]
            del stats
        if local:
            report.blocks = len(chain or [])

            def on_stats(st: dict[nn.Module, InputStats], k: int | None) -> None:
                if k is not None:
                    block_stats[k] = st

            def before_advance(k: int) -> bool:
                todo = local.get(k)
                if not todo:
                    return False
                prune(todo)
                report.refitted.extend(names.get(m, "?") for m in rec.refit(block_stats.pop(k, {})))
                return True

            block_stats: dict[int, dict[nn.Module, InputStats]] = {}
            consumers = [m for todo in local.values() for g, _ in todo for m in _consumers(g)]
            stream_statistics(model, batches, consumers, on_stats=on_stats, forward_fn=forward_fn, blocks=chain,
                              max_features=max_features, show_progress=show_progress,
                              before_advance=before_advance)
        left = rec.modules
        report.not_refitted = [names.get(m, "?") for m in left]
        if left:
            log.info("not re-fitted (no statistics): %s", ", ".join(report.not_refitted))
    if batchnorm is None:  # re-fitted consumers reproduce their dense outputs: their statistics still hold
        batchnorm = bool(left) and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    if batchnorm:
        report.batchnorm_layers = reestimate_batchnorm(model, batches, forward_fn, show_progress=show_progress)
    return report
