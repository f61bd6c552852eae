"""Running a model on calibration data, whole or one block at a time.

:func:`calibration_batches` turns what the user gives (a list of example inputs,
a ``DataLoader``, a token tensor) into a list of batches. :func:`find_blocks`
finds the model's chain of repeated blocks (the children of the
``nn.ModuleList`` / ``nn.Sequential`` holding most parameters, where each child
reads the previous child's output: decoder layers, ViT blocks, a CNN's
``features``). :class:`BlockRunner` then runs the data up to the first block
once, keeps each batch's block inputs, and runs one block at a time on them, so
that statistics are held for one block only and, when blocks are pruned as they
are reached, the inputs of block *l* come from the already-pruned blocks
before it.
"""

from __future__ import annotations

import contextlib
import logging
import weakref
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError, TraceError
from ..trace.recorder import run_model

__all__ = ["calibration_batches", "find_blocks", "BlockRunner", "progress"]

log = logging.getLogger(__name__)


def calibration_batches(data: Any, batch_size: int = 8) -> list[Any]:
    """Normalise calibration data to a list of batches, each passed to the model like ``example_inputs``.

    Args:
        data: a tensor (split along dim 0 into batches of ``batch_size``; e.g. token ids ``[N, T]``), a
            ``torch.utils.data.DataLoader`` (a batch that is a list or tuple ``(inputs, targets, ...)``
            contributes its first element), or any other iterable of example inputs.
        batch_size: rows per batch when ``data`` is a tensor.

    Raises:
        ConfigError: for empty data or a type that cannot be iterated.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be an int >= 1, got {batch_size!r}")
    if isinstance(data, torch.Tensor):
        if data.dim() == 0 or data.shape[0] == 0:
            raise ConfigError(f"calibration data is an empty or 0-d tensor (shape {tuple(data.shape)}); give "
                              "[N, ...] examples, e.g. token ids [N, T]")
        batches: list[Any] = list(data.split(batch_size))
    elif isinstance(data, torch.utils.data.DataLoader):
        batches = [b[0] if isinstance(b, (list, tuple)) else b for b in data]
    elif isinstance(data, (str, bytes)) or not isinstance(data, Iterable):
        raise ConfigError(f"calibration data must be a tensor, a DataLoader or an iterable of example inputs, "
                          f"got {type(data).__name__}")
    else:
        batches = list(data)
    if not batches:
        raise ConfigError("calibration data is empty; give at least one batch of example inputs")
    return batches


def run_batch(model: nn.Module, batch: Any, forward_fn: Callable | None, j: int = 0) -> Any:
    """Run ``model`` on one calibration batch; a failure becomes a :class:`~anyprune.TraceError` saying which."""
    try:
        return run_model(model, batch, forward_fn)
    except _Stop:
        raise
    except Exception as err:
        raise TraceError(f"the model failed on calibration batch {j}: {type(err).__name__}: {err}. Calibration "
                         "batches are passed to the model like example_inputs (a tensor as one argument, a tuple "
                         "unpacked, a dict as keywords); pass forward_fn=lambda model, batch: ... otherwise") from err


def run_hooked(model: nn.Module, batch: Any, forward_fn: Callable | None, handles: list[Any]) -> None:
    """Run one batch without gradients, then remove the hook ``handles`` (also if the model raises)."""
    try:
        with torch.no_grad():
            run_batch(model, batch, forward_fn)
    finally:
        for h in handles:
            h.remove()


def progress(iterable: Iterable, total: int, desc: str, enabled: bool) -> Iterable:
    """``tqdm`` over ``iterable`` when ``enabled`` and tqdm is installed (on stderr, not kept)."""
    if not enabled:
        return iterable
    try:
        from tqdm.auto import tqdm
    except ImportError:  # progress is optional
        return iterable
    return tqdm(iterable, total=total, desc=desc, leave=False)


def _params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def find_blocks(model: nn.Module) -> list[nn.Module] | None:
    """The model's chain of blocks: children of the ``ModuleList``/``Sequential`` with most parameters
    (at least two children, each with parameters), or ``None``. Whether they really form a chain is
    checked when they first run (:meth:`BlockRunner.start`)."""
    best: list[nn.Module] | None = None
    best_n = 0
    for m in model.modules():
        if m is model or not isinstance(m, (nn.ModuleList, nn.Sequential)) or len(m) < 2:
            continue
        kids = list(m)
        if not all(_params(k) > 0 for k in kids):
            continue
        n = sum(_params(k) for k in kids)
        if n > best_n:
            best, best_n = kids, n
    return best


_CHAINS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> {key: (batch, fn, blocks, ok)}


class _Stop(Exception):
    """Raised by a hook to end a forward pass early."""


def _hidden(args: tuple, kwargs: dict) -> tuple[torch.Tensor | None, str | int | None]:
    if args and isinstance(args[0], torch.Tensor):
        return args[0], 0
    h = kwargs.get("hidden_states")
    if isinstance(h, torch.Tensor):
        return h, "hidden_states"
    return None, None


def _output_hidden(out: Any) -> torch.Tensor | None:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    return None


def _no_cache(kwargs: dict) -> dict:
    """Drop key/value caches from a block's keyword arguments (a block run twice must not append twice)."""
    return {k: (None if type(v).__name__.endswith("Cache") else v) for k, v in kwargs.items()}


class BlockRunner:
    """Run calibration batches through a chain of blocks, one block at a time.

    Usage: :meth:`start` (runs every batch up to the first block, keeping its inputs; hooks placed before
    the call see the layers before the first block), then :meth:`run_block` for ``0 .. len(blocks) - 1``
    (each replaces the kept inputs with the block's outputs), then optionally :meth:`finish` (runs the
    layers after the last block on the kept outputs).

    Args:
        model: the model.
        batches: from :func:`calibration_batches`.
        blocks: from :func:`find_blocks`.
        forward_fn: ``forward_fn(model, batch)`` instead of the default call.
    """

    def __init__(self, model: nn.Module, batches: list[Any], blocks: list[nn.Module],
                 forward_fn: Callable | None = None,
                 reference: tuple[nn.Module, list[nn.Module]] | None = None) -> None:
        self.model = model
        self.batches = batches
        self.blocks = blocks
        self.forward_fn = forward_fn
        self.reference = reference  # (reference model, its blocks): a reference stream from the start
        self._inputs: list[tuple[tuple, dict, str | int]] = []
        self._outputs: list[Any] = []
        self._pending: list[Any] = []
        self._ref: list[tuple[tuple, dict, str | int]] | None = None  # reference stream (None: same as own)
        self._ref_outputs: list[Any] = []

    @staticmethod
    def check_chain(model: nn.Module, blocks: list[nn.Module], batch: Any, forward_fn: Callable | None) -> bool:
        """Whether, on ``batch``, each block runs once and reads the previous block's output (remembered per
        model, blocks, batch and ``forward_fn``: pruning does not change how blocks are wired)."""
        key = (tuple(id(b) for b in blocks), id(batch), id(forward_fn))
        seen = _CHAINS.setdefault(model, {})
        hit = seen.get(key)
        if hit is not None and hit[0] is batch and hit[1] is forward_fn and all(
                a is b for a, b in zip(hit[2], blocks)):
            return hit[3]
        ok = BlockRunner._check_chain(model, blocks, batch, forward_fn)
        seen[key] = (batch, forward_fn, list(blocks), ok)
        return ok

    @staticmethod
    def _check_chain(model: nn.Module, blocks: list[nn.Module], batch: Any, forward_fn: Callable | None) -> bool:
        events: list[tuple[str, int, torch.Tensor | None]] = []
        handles = []
        for k, b in enumerate(blocks):
            def pre(_m, args, kwargs, k=k):
                events.append(("in", k, _hidden(args, kwargs)[0]))

            def post(_m, _args, _kwargs, out, k=k):
                events.append(("out", k, _output_hidden(out)))
            handles.append(b.register_forward_pre_hook(pre, with_kwargs=True))
            handles.append(b.register_forward_hook(post, with_kwargs=True))
        run_hooked(model, batch, forward_fn, handles)
        expected = [(kind, k) for k in range(len(blocks)) for kind in ("in", "out")]
        if [(kind, k) for kind, k, _ in events] != expected or any(t is None for _, _, t in events):
            return False
        return all(events[2 * k + 2][2] is events[2 * k + 1][2] for k in range(len(blocks) - 1))

    def start(self, show_progress: bool = False) -> None:
        """Run every batch up to the first block and keep the block's inputs (and the reference model's)."""
        self._inputs = self._first_inputs(self.model, self.blocks[0], show_progress)
        self._ref = None
        if self.reference is not None:
            ref_model, ref_blocks = self.reference
            self._ref = self._first_inputs(ref_model, ref_blocks[0], False)

    def _first_inputs(self, model: nn.Module, first: nn.Module, show_progress: bool
                      ) -> list[tuple[tuple, dict, str | int]]:
        inputs: list[tuple[tuple, dict, str | int]] = []

        def grab(_m, args, kwargs):
            _, where = _hidden(args, kwargs)
            inputs.append((args, _no_cache(kwargs), where))  # type: ignore[arg-type]
            raise _Stop

        h = first.register_forward_pre_hook(grab, with_kwargs=True)
        try:
            for j, batch in enumerate(progress(self.batches, len(self.batches), "calibration: inputs",
                                               show_progress)):
                with contextlib.suppress(_Stop):
                    run_batch(model, batch, self.forward_fn, j)
        finally:
            h.remove()
        if len(inputs) != len(self.batches):
            raise RuntimeError("the first block did not run on every calibration batch")
        return inputs

    def run_block(self, k: int, on_batch: Callable[[], None] | None = None, advance: bool = True,
                  keep: bool = False, collector: Any = None, reference: bool = True) -> None:
        """Run block ``k`` on the kept inputs; with ``advance``, its outputs become the next block's inputs.

        ``keep=True`` advances with the outputs of the previous (non-advancing) run instead of running again.
        With a reference stream (:meth:`fork_reference`) and ``reference=True``, each batch first runs through
        the block on its reference inputs (``collector.phase = "reference"``, if a paired
        :class:`~anyprune.calibration.stats.StatsCollector` is given), which advances the reference stream.
        """
        block = self.blocks[k]
        ref_outputs: list[Any] = []
        if keep:
            outputs = self._pending
        else:
            outputs = []
            for j, (args, kwargs, _) in enumerate(self._inputs):
                if on_batch is not None:
                    on_batch()
                if reference and self._ref is not None:
                    if collector is not None:
                        collector.phase = "reference"
                    rargs, rkwargs, _ = self._ref[j]
                    ref_block = block if self.reference is None else self.reference[1][k]
                    ref_outputs.append(ref_block(*rargs, **rkwargs))
                    if collector is not None:
                        collector.phase = "model"
                outputs.append(block(*args, **kwargs))
            if on_batch is not None:
                on_batch()
        if ref_outputs:
            self._ref = self._advanced(self._ref or [], ref_outputs, k)
            self._ref_outputs = ref_outputs
        if not advance:
            self._pending = outputs
            return
        self._outputs = outputs
        self._inputs = self._advanced(self._inputs, outputs, k)

    @staticmethod
    def _advanced(inputs: list[tuple[tuple, dict, str | int]], outputs: list[Any], k: int
                  ) -> list[tuple[tuple, dict, str | int]]:
        new = []
        for j, (args, kwargs, where) in enumerate(inputs):
            h = _output_hidden(outputs[j])
            if h is None:
                raise RuntimeError(f"block {k} returned {type(outputs[j]).__name__}, not a tensor or a tuple "
                                   "starting with one")
            if isinstance(where, int):
                args = (h, *args[1:])
            else:
                kwargs = {**kwargs, where: h}
            new.append((args, kwargs, where))
        return new

    @property
    def has_reference(self) -> bool:
        """Whether a reference stream differs from the model's own (after :meth:`fork_reference`)."""
        return self._ref is not None

    def fork_reference(self, k: int) -> None:
        """Start a reference stream: block ``k``'s outputs from the last non-advancing run (before the block was
        changed) become the reference inputs of the next block, which from then on also runs on them."""
        if self._ref is None:
            self._ref = self._advanced(self._inputs, self._pending, k)
            self._ref_outputs = self._pending

    def finish(self, on_batch: Callable[[], None] | None = None, collector: Any = None) -> None:
        """Run the layers after the last block on each batch (every block returns its kept output); with a
        reference stream, each batch runs first on the reference outputs (see :meth:`run_block`)."""
        if not self._outputs:
            raise RuntimeError("finish() needs every block to have run (run_block)")
        ref_model, ref_blocks = self.reference or (self.model, self.blocks)
        with _replaying(self.blocks) as current, \
                (_replaying(ref_blocks) if self.reference else contextlib.nullcontext(current)) as ref_current:
            for j, batch in enumerate(self.batches):
                if on_batch is not None:
                    on_batch()
                if self._ref is not None:
                    if collector is not None:
                        collector.phase = "reference"
                    ref_current[0] = self._ref_outputs[j]
                    run_batch(ref_model, batch, self.forward_fn, j)
                    if collector is not None:
                        collector.phase = "model"
                current[0] = self._outputs[j]
                run_batch(self.model, batch, self.forward_fn, j)
            if on_batch is not None:
                on_batch()


@contextlib.contextmanager
def _replaying(blocks: list[nn.Module]) -> Any:
    """Make each block return ``current[0]`` instead of running (restored on exit)."""
    current: list[Any] = [None]
    own = [b.__dict__.get("forward") for b in blocks]

    def stored(*_a: Any, **_k: Any) -> Any:
        return current[0]

    try:
        for b in blocks:
            b.forward = stored  # type: ignore[method-assign]
        yield current
    finally:
        for b, f in zip(blocks, own):
            del b.__dict__["forward"]
            if f is not None:  # the block had a forward of its own (an instance attribute)
                b.__dict__["forward"] = f


def twins(model: nn.Module, reference: nn.Module) -> dict[nn.Module, nn.Module]:
    """Each module of ``model`` -> the module of the same name in ``reference`` (a copy of it)."""
    ref = dict(reference.named_modules(remove_duplicate=False))
    return {m: ref[n] for n, m in model.named_modules(remove_duplicate=False) if n in ref}


def module_block(blocks: list[nn.Module] | None, model: nn.Module) -> dict[nn.Module, int]:
    """Which block (index) each module belongs to; modules outside every block are absent."""
    out: dict[nn.Module, int] = {}
    for k, b in enumerate(blocks or []):
        for m in b.modules():
            out[m] = k
    return out


def stream_statistics(model: nn.Module, batches: list[Any], consumers: Iterable[nn.Module], *,
                      on_stats: Callable[[dict[nn.Module, Any], int | None], None],
                      forward_fn: Callable | None = None, blocks: list[nn.Module] | str | None = "auto",
                      max_features: int = 8192, show_progress: bool = False,
                      before_advance: Callable[[int], bool] | None = None, reference: bool = False,
                      reference_model: nn.Module | None = None) -> None:
    """Collect :class:`~anyprune.calibration.stats.InputStats` of ``consumers`` in bounded memory.

    With a chain of blocks (``blocks="auto"``: :func:`find_blocks`, checked on the first batch), the
    statistics of the consumers inside block ``k`` are handed to ``on_stats(stats, k)`` as soon as block
    ``k`` has run on every batch, and then dropped; consumers outside the blocks are handed over with
    ``k = None`` (those before the first block while the inputs are gathered, those after the last block in
    a final pass that is only run if needed). ``before_advance(k)`` (if given) runs after ``on_stats`` for
    block ``k``; if it returns ``True`` (the block was changed, e.g. pruned), block ``k`` runs again so that
    the next block reads the changed block's outputs. With ``reference=True`` the unchanged outputs of the
    first changed block start a reference stream that runs through the following blocks as they were before
    being changed (the dense model), and each consumer's statistics get the cross products with its input on
    that stream (:attr:`~anyprune.calibration.stats.InputStats.cross`); with ``reference_model`` (a copy of
    ``model`` from before it was changed, same module names) the reference stream runs through that model's
    blocks from the start. Without blocks, one pass over the whole model hands
    every consumer's statistics to ``on_stats(stats, None)`` at once.
    """
    from .stats import StatsCollector

    consumers = list(dict.fromkeys(consumers))
    chain = find_blocks(model) if blocks == "auto" else blocks
    if isinstance(chain, str):
        raise ConfigError(f"blocks must be 'auto', None or a list of modules, got {chain!r}")
    if chain and not BlockRunner.check_chain(model, chain, batches[0], forward_fn):
        log.info("the blocks found do not form a chain; calibrating in one pass")
        chain = None
    if not chain:
        with StatsCollector(consumers, max_features) as col:
            for j, batch in enumerate(progress(batches, len(batches), "calibration", show_progress)):
                col.new_batch()
                run_batch(model, batch, forward_fn, j)
        on_stats(col.stats, None)
        return
    where = module_block(chain, model)
    outside = [m for m in consumers if m not in where]
    twin: dict[nn.Module, nn.Module] = {}
    ref_spec = None
    if reference_model is not None:
        twin = twins(model, reference_model)
        if all(b in twin for b in chain):
            ref_spec = (reference_model, [twin[b] for b in chain])
        else:
            twin = {}
    runner = BlockRunner(model, batches, chain, forward_fn, reference=ref_spec)
    with StatsCollector(outside, max_features) as col:
        runner.start(show_progress)
    early = dict(col.stats)
    if early:
        on_stats(early, None)
    for k in progress(range(len(chain)), len(chain), "calibration: blocks", show_progress):
        mine = [m for m in consumers if where.get(m) == k]
        if not mine:
            runner.run_block(k)
            continue
        pairs = {m: twin.get(m, m) if ref_spec else m for m in mine} if runner.has_reference else None
        with StatsCollector(mine, max_features, reference=pairs) as col:
            runner.run_block(k, on_batch=col.new_batch, advance=before_advance is None, collector=col)
        on_stats(col.stats, k)
        del col
        if before_advance is not None:
            changed = before_advance(k)
            if changed and reference and ref_spec is None:
                runner.fork_reference(k)
            runner.run_block(k, keep=not changed, reference=False)
    late = [m for m in outside if m not in early]
    if late:
        pairs = {m: twin.get(m, m) if ref_spec else m for m in late} if runner.has_reference else None
        with StatsCollector(late, max_features, reference=pairs) as col:
            runner.finish(on_batch=col.new_batch, collector=col)
        on_stats(col.stats, None)
