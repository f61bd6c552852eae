"""Streaming input statistics of consumer layers: count, sum and Gram matrix of the input features."""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import weakref
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from .consumers import ConsumerSpec, consumer_spec, input_features

__all__ = ["InputStats", "StatsCollector", "collecting_folds", "reduce_across_ranks"]



def _as_float(rows: torch.Tensor) -> torch.Tensor:
    x = rows.detach()
    if not x.is_floating_point() or x.dtype in (torch.float16, torch.bfloat16):
        x = x.float()
    return x


@dataclasses.dataclass(eq=False)
class InputStats:
    """What a consumer saw on the calibration data, accumulated in float64.

    Attributes:
        rows: number of feature rows (tokens, or output positions of a convolution).
        sum: ``[features]`` sum of the rows.
        gram: ``[features, features]`` sum of ``x x^T`` over the rows.
        cross: with a reference pass (:class:`StatsCollector` with ``reference=``), ``[features, features]``
            sum of ``r x^T``, where ``r`` is the same row as the reference model (the dense one) fed it;
            ``None`` otherwise.
        ref_sum: ``[features]`` sum of the reference rows (with ``cross``).
        ref_gram: ``[features, features]`` sum of ``r r^T`` (with ``cross``).
        fold: with a reference pass, the same statistics over every other batch only (an :class:`InputStats`
            of its own), so that what is fitted on one half can be checked on the other.
    """

    rows: int
    sum: torch.Tensor
    gram: torch.Tensor
    cross: torch.Tensor | None = None
    ref_sum: torch.Tensor | None = None
    ref_gram: torch.Tensor | None = None
    fold: InputStats | None = None

    @classmethod
    def empty(cls, features: int) -> InputStats:
        return cls(0, torch.zeros(features, dtype=torch.float64),
                   torch.zeros(features, features, dtype=torch.float64))

    @property
    def features(self) -> int:
        return int(self.sum.numel())

    def add(self, rows: torch.Tensor, fold: bool = False) -> None:
        """Accumulate ``rows`` (``[n, features]``): products in the rows' dtype (float32 or float64),
        sums in float64; with ``fold``, also into :attr:`fold`."""
        x = _as_float(rows)
        n, total, gram = int(x.shape[0]), x.sum(0, dtype=torch.float64).cpu(), \
            (x.t() @ x).to(device="cpu", dtype=torch.float64)
        for st in (self, self._fold() if fold else None):
            if st is not None:
                st.rows += n
                st.sum += total
                st.gram += gram

    def add_reference(self, ref_rows: torch.Tensor, rows: torch.Tensor, fold: bool = False) -> None:
        """Accumulate ``sum r x^T`` of the reference rows ``r`` paired with the rows ``x`` (call with the same
        ``rows`` and ``fold`` as :meth:`add`, in the same order)."""
        r, x = _as_float(ref_rows), _as_float(rows)
        ref_sum, cross = r.sum(0, dtype=torch.float64).cpu(), (r.t() @ x).to(device="cpu", dtype=torch.float64)
        ref_gram = (r.t() @ r).to(device="cpu", dtype=torch.float64)
        for st in (self, self._fold() if fold else None):
            if st is not None:
                if st.cross is None or st.ref_sum is None or st.ref_gram is None:
                    st.cross = torch.zeros(self.features, self.features, dtype=torch.float64)
                    st.ref_gram = torch.zeros(self.features, self.features, dtype=torch.float64)
                    st.ref_sum = torch.zeros(self.features, dtype=torch.float64)
                st.ref_sum += ref_sum
                st.cross += cross
                st.ref_gram += ref_gram

    def _fold(self) -> InputStats:
        if self.fold is None:
            self.fold = InputStats.empty(self.features)
        return self.fold

    def drop_reference(self) -> None:
        """Forget the cross products (the fold keeps its own rows, sums and Gram matrix)."""
        for st in (self, self.fold):
            if st is not None:
                st.cross = st.ref_sum = st.ref_gram = None

    def split(self) -> tuple[InputStats, InputStats] | None:
        """``(fold, rest)``: the statistics of the two halves of the batches, or ``None`` without a fold that
        has rows on both sides."""
        f = self.fold
        if f is None or f.rows == 0 or f.rows == self.rows:
            return None
        rest = InputStats(self.rows - f.rows, self.sum - f.sum, self.gram - f.gram)
        if self.cross is not None and self.ref_sum is not None and self.ref_gram is not None:
            rest.cross = self.cross - (f.cross if f.cross is not None else 0)
            rest.ref_sum = self.ref_sum - (f.ref_sum if f.ref_sum is not None else 0)
            rest.ref_gram = self.ref_gram - (f.ref_gram if f.ref_gram is not None else 0)
        return f, rest

    @property
    def mean(self) -> torch.Tensor:
        """Per-feature mean."""
        return self.sum / max(self.rows, 1)

    @property
    def second_moment(self) -> torch.Tensor:
        """``E[x x^T]`` (the Gram matrix per row)."""
        return self.gram / max(self.rows, 1)

    @property
    def variance(self) -> torch.Tensor:
        """Per-feature variance (population)."""
        return (self.gram.diagonal() / max(self.rows, 1) - self.mean.square()).clamp_min(0)


def reduce_across_ranks(stats: dict[nn.Module, InputStats], features: dict[nn.Module, int]) -> None:
    """Sum ``stats`` over the processes of ``torch.distributed`` (when it is initialised with more than one rank),
    in place: every rank then holds the statistics of all the ranks' data, so criteria, allocation and
    re-fits decide the same everywhere. ``features`` lists every consumer in the same order on all ranks (a rank
    whose data never reached one gets empty statistics first). Cross products and folds are kept only where
    every rank has them. Works with gloo (CPU) and NCCL (through the current CUDA device)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else \
        torch.device("cpu")

    def reduce(t: torch.Tensor, op: Any = dist.ReduceOp.SUM) -> torch.Tensor:
        moved = t.to(device)
        dist.all_reduce(moved, op=op)
        return moved.to("cpu")

    mods = list(features)
    # which consumers share one statistics object (they read the same tensor) is the same on every rank where
    # they ran; a rank whose data never reached a consumer (e.g. an expert no token was routed to) adopts it
    first: dict[int, int] = {}
    owners = [float(first.setdefault(id(stats[m]), k)) if m in stats else -1.0 for k, m in enumerate(mods)]
    canonical = reduce(torch.tensor(owners, dtype=torch.float64), dist.ReduceOp.MAX).tolist()
    for k, m in enumerate(mods):
        o = int(canonical[k])
        if o >= 0 and m not in stats:
            stats[m] = InputStats.empty(features[m]) if o == k else stats[mods[o]]
    unique: dict[int, InputStats] = {}
    for m in mods:
        if m in stats:
            unique.setdefault(id(stats[m]), stats[m])
    for st in unique.values():
        parts = [st] + ([st.fold] if st.fold is not None else [])
        flags = reduce(torch.tensor([float(st.cross is not None), float(st.fold is not None)], dtype=torch.float64),
                       dist.ReduceOp.MIN).tolist()
        if not flags[0]:
            st.cross = st.ref_sum = st.ref_gram = None
        if not flags[1]:
            st.fold = None
            parts = [st]
        for part in parts:
            part.rows = int(reduce(torch.tensor([float(part.rows)], dtype=torch.float64)).item())
            part.sum, part.gram = reduce(part.sum), reduce(part.gram)
            if flags[0] and part.cross is not None and part.ref_sum is not None and part.ref_gram is not None:
                part.cross, part.ref_sum, part.ref_gram = reduce(part.cross), reduce(part.ref_sum), \
                    reduce(part.ref_gram)


_FOLDS: contextvars.ContextVar[bool] = contextvars.ContextVar("anyprune_folds", default=False)


@contextlib.contextmanager
def collecting_folds():
    """Inside: every :class:`StatsCollector` also keeps the statistics of every other batch
    (:attr:`InputStats.fold`), for choices checked by two-fold cross-validation (e.g. the re-fit's damping)."""
    token = _FOLDS.set(True)
    try:
        yield
    finally:
        _FOLDS.reset(token)


class StatsCollector:
    """Forward pre-hooks that accumulate :class:`InputStats` for chosen consumer modules.

    Consumers reading the same input tensor in one forward pass (q/k/v projections, gate/up projections)
    share one :class:`InputStats` object, so the Gram matrix is computed and stored once.

    With ``reference`` (a map from each consumer to the module that plays its part in a reference model, e.g.
    the dense copy, or the consumer itself for a reference *pass* over other inputs), every batch is run twice:
    first the reference (``phase = "reference"``: the hooks keep the reference module's input features), then
    the model itself (``phase = "model"``: the hooks accumulate the statistics and the cross products
    ``sum r x^T`` of each row with the reference row at the same place, :attr:`InputStats.cross`). A consumer
    whose calls or shapes do not pair up (e.g. it ran a different number of times) gets no cross products.

    Args:
        modules: the consumer modules (those without a :func:`~anyprune.calibration.consumers.consumer_spec`
            are skipped).
        max_features: consumers with more input features than this (e.g. a 3x3 conv over 1024 channels:
            9216) are skipped, as their Gram matrix would not fit a sensible memory budget.
        reference: consumer -> reference module (see above), or ``None``.
    """

    def __init__(self, modules: Iterable[nn.Module], max_features: int = 8192,
                 reference: dict[nn.Module, nn.Module] | None = None) -> None:
        self.stats: dict[nn.Module, InputStats] = {}
        self.specs: dict[nn.Module, ConsumerSpec] = {}
        self.skipped: dict[nn.Module, str] = {}
        for m in modules:
            spec = consumer_spec(m)
            if spec is None:
                continue
            if spec.features(m) > max_features:
                self.skipped[m] = f"{spec.features(m)} input features > max_features={max_features}"
                continue
            self.specs[m] = spec
        self.reference = reference
        self.folds = _FOLDS.get()
        self.phase = "model"
        self._handles: list[Any] = []
        self._seen: dict[tuple, tuple[weakref.ref, Any]] = {}
        self._kept: dict[nn.Module, list[torch.Tensor]] = {}  # reference features of this batch, in call order
        self._unpaired: set[nn.Module] = set()
        self._batches = 0

    def __enter__(self) -> StatsCollector:
        for m in self.specs:
            self._handles.append(m.register_forward_pre_hook(functools.partial(self._hook, m, "model")))
            if self.reference is not None:
                ref = self.reference.get(m)
                if ref is None:
                    self._unpaired.add(m)
                else:
                    self._handles.append(ref.register_forward_pre_hook(functools.partial(self._hook, m, "reference")))
        return self

    def __exit__(self, *exc: Any) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
        self.new_batch()
        for m in self._unpaired:  # shared statistics: one consumer that did not pair drops the cross products
            st = self.stats.get(m)
            if st is not None:
                st.drop_reference()
        if exc[0] is None:
            reduce_across_ranks(self.stats, {m: s.features(m) for m, s in self.specs.items()})

    def new_batch(self) -> None:
        """Forget which inputs were seen (call between forward passes)."""
        self._seen.clear()
        if self.phase == "model":
            self._unpaired.update(m for m, kept in self._kept.items() if kept)  # reference calls left over
            self._kept.clear()
            self._batches += 1

    def _lookup(self, module: nn.Module, x: torch.Tensor) -> tuple[Any, Any]:
        """``(key, shared)``: the key of ``module`` reading ``x`` in this phase, and what another consumer already
        made of the same tensor (reference phase: its features; model phase: ``(stats, features, reference
        features)``), or ``None``."""
        spec = self.specs[module]
        key = (id(x), x._version, self.phase, spec, getattr(module, "kernel_size", None),
               getattr(module, "stride", None), getattr(module, "padding", None), getattr(module, "dilation", None))
        entry = self._seen.get(key)
        shared = entry[1] if entry is not None and entry[0]() is x else None  # a freed tensor's id can be reused
        return key, shared

    def _hook(self, module: nn.Module, phase: str, hooked: nn.Module, args: tuple) -> None:
        if phase != self.phase or not args or not isinstance(args[0], torch.Tensor):
            return
        x = args[0]
        spec = self.specs[module]
        key, shared = self._lookup(module, x)
        if phase == "reference":
            feats = shared if shared is not None else input_features(hooked, spec, x)
            self._kept.setdefault(module, []).append(feats)
            self._seen[key] = (weakref.ref(x), feats)
            return
        ref = None
        if self.reference is not None and module not in self._unpaired:
            kept = self._kept.get(module)
            ref = kept.pop(0) if kept else None
            if ref is None:
                self._unpaired.add(module)
        mine = self.stats.get(module)
        if shared is not None and (mine is None or mine is shared[0]):
            self.stats[module] = shared[0]
            if ref is not None and ref is not shared[2]:  # the reference did not share this input
                self._unpaired.add(module)
            return
        feats = input_features(module, spec, x)
        if mine is None:
            mine = self.stats[module] = InputStats.empty(feats.shape[1])
        if feats.shape[1] != mine.features:
            raise RuntimeError(f"{type(module).__name__} got {feats.shape[1]} input features, "
                               f"{mine.features} before; the model changed during calibration")
        fold = (self.reference is not None or self.folds) and self._batches % 2 == 1
        mine.add(feats, fold)
        if ref is not None:
            if ref.shape == feats.shape:
                mine.add_reference(ref, feats, fold)
            else:
                self._unpaired.add(module)
        self._seen[key] = (weakref.ref(x), (mine, feats, ref))
