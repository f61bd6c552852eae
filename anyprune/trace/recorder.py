"""Record a forward pass with a ``TorchFunctionMode``.

The recorder sees every call of a torch function or tensor method made by the
model's Python code (``F.conv2d``, ``Tensor.view``, ``torch.cat``, …) with its
real arguments. It does not use autograd, so tracing works under
``torch.no_grad()``, for any dtype, and on the ``meta`` device. The model's
training flag, grad mode and buffers (e.g. BatchNorm running statistics
updated by a forward in training mode) are restored afterwards.
"""

from __future__ import annotations

import contextlib
import gc
import inspect
import logging
import os
import sys
from collections.abc import Callable
from types import FrameType
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from ..errors import ConfigError, TraceError
from .opgraph import Call, OpGraph, Value, iter_tensors, map_tensors
from .shapes import fast_meta_result
from .sizes import TracedSize, product, traced_shape

__all__ = ["trace", "MetaShadow", "to_meta", "run_model", "model_failed", "user_source_line", "paused_gc", "raised_at"]

log = logging.getLogger(__name__)

_NOT_TENSORS = (int, float, bool, torch.Size, torch.dtype, torch.device, type(None))
# calls that read a tensor's sizes: their results are handed out as traced sizes (see .sizes)
_SHAPE_GET = inspect.getattr_static(torch.Tensor, "shape").__get__
_SIZE_READERS = {_SHAPE_GET: "shape", torch.Tensor.size: "size", torch.Tensor.numel: "numel", torch.numel: "numel",
                 torch.Tensor.__len__: "len"}

_TORCH_DIR = os.path.dirname(torch.__file__) + os.sep
_PKG_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


_INTERNAL: dict[str, bool] = {}


def _internal(fname: str) -> bool:
    hit = _INTERNAL.get(fname)
    if hit is None:
        hit = (fname.startswith(_TORCH_DIR) or fname.startswith(_PKG_DIR)) and "/tests/" not in fname
        _INTERNAL[fname] = hit
    return hit


def user_source_line(skip: int = 2) -> str:
    """``file:line`` of the innermost frame outside torch and anyprune."""
    frame: FrameType | None = sys._getframe(skip)
    while frame is not None:
        fname = frame.f_code.co_filename
        if not _internal(fname):
            return f"{fname}:{frame.f_lineno}"
        frame = frame.f_back
    return "<unknown>"


def raised_at(err: BaseException) -> str | None:
    """``file:line`` of the innermost frame outside torch and anyprune in ``err``'s traceback."""
    tb = err.__traceback__
    where = None
    while tb is not None:
        fname = tb.tb_frame.f_code.co_filename
        if not _internal(fname):
            where = f"{fname}:{tb.tb_lineno}"
        tb = tb.tb_next
    return where


def model_failed(model: nn.Module, err: BaseException) -> TraceError:
    """The error for a model that cannot run on its example inputs (chain ``err`` to it)."""
    return TraceError(
        f"the model failed on the example inputs: {type(err).__name__}: {err}. "
        f"Check that example_inputs match model.forward{signature_help(model)} (a tuple is unpacked into "
        "positional arguments, a dict into keyword arguments, anything else is passed as one argument), "
        "or pass forward_fn=lambda model, inputs: ..."
    )


def run_model(model: nn.Module, example_inputs: Any, forward_fn: Callable | None = None) -> Any:
    """Call the model the way the seed API does.

    ``forward_fn(model, example_inputs)`` if given; else a dict is passed as
    keyword arguments, a tuple is unpacked into positional arguments, and
    anything else (a tensor, a list) is passed as the single argument.
    """
    if forward_fn is not None:
        return forward_fn(model, example_inputs)
    if isinstance(example_inputs, dict):
        return model(**example_inputs)
    if isinstance(example_inputs, tuple):
        return model(*example_inputs)
    return model(example_inputs)


class _Recorder(TorchFunctionMode):
    def __init__(self, graph: OpGraph, named_tensors: dict[int, tuple[str, list[str]]],
                 fast_meta: bool = False) -> None:
        super().__init__()
        self.fast_meta = fast_meta
        self.graph = graph
        self.named = named_tensors  # id -> (kind, names)
        self.by_id: dict[int, Value] = {}
        self.alive: list[torch.Tensor] = []
        self.suspended = 0
        self.scopes: list[str | None] = []
        self.failed_at: str | None = None  # the first op that raised (for error messages)

    # ----------------------------------------------------------- values
    def value_of(self, t: torch.Tensor) -> Value:
        v = self.by_id.get(id(t))
        if v is not None:
            return v
        kind, names = self.named.get(id(t), ("const", []))
        v = self.graph.new_value(kind, t, names)
        self.by_id[id(t)] = v
        self.alive.append(t)
        return v

    def add_input(self, t: torch.Tensor) -> Value:
        if id(t) in self.by_id:
            return self.by_id[id(t)]
        v = self.graph.new_value("input", t, [f"input{len(self.graph.inputs)}"])
        self.by_id[id(t)] = v
        self.alive.append(t)
        self.graph.inputs.append(v)
        return v

    # ------------------------------------------------------------ calls
    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = None
        if self.fast_meta and not self.suspended:
            out = fast_meta_result(func, args, kwargs)
        if out is None:
            try:
                out = func(*args, **kwargs)
            except Exception:
                if self.failed_at is None:
                    from .opgraph import func_name

                    self.failed_at = f"{func_name(func)} at {user_source_line(2)}"
                raise
        if self.suspended or (isinstance(out, _NOT_TENSORS) and func is not torch.Tensor.__setitem__):
            if not self.suspended and type(out) in (int, torch.Size) and args and isinstance(args[0], torch.Tensor):
                return self.traced_sizes(func, args, kwargs, out)
            return out
        self.record(func, args, kwargs, out)
        return out

    def traced_sizes(self, func: Callable, args: tuple, kwargs: dict, out: Any) -> Any:
        """Sizes read from a traced tensor, as :class:`~anyprune.trace.sizes.TracedSize` (plain otherwise)."""
        try:
            kind = _SIZE_READERS.get(func)
        except TypeError:  # an unhashable callable
            return out
        if kind is None:
            return out
        t = args[0]
        index = self.value_of(t).index
        if isinstance(out, torch.Size):
            return traced_shape(out, index)
        if kind == "numel":
            return product(t.shape, index)
        if kind == "len":
            return TracedSize(out, ("dim", index, 0))
        d = kwargs.get("dim", args[1] if len(args) > 1 else None)
        if not isinstance(d, int) or t.ndim == 0:
            return out
        return TracedSize(out, ("dim", index, d % t.ndim))

    def record(self, func: Callable, args: tuple, kwargs: dict, out: Any, leaf_module: str | None = None) -> None:
        inplace_target = None
        if func is torch.Tensor.__setitem__ and isinstance(args[0], torch.Tensor):
            inplace_target = args[0]
            out_tensors = [args[0]]
        else:
            out_tensors = iter_tensors(out)
        if not out_tensors:
            return
        in_ids: set[int] = set()
        inputs: list[Value] = []

        def to_value(t: torch.Tensor) -> Value:
            v = self.value_of(t)
            if id(t) not in in_ids:
                in_ids.add(id(t))
                if v not in inputs:
                    inputs.append(v)
            return v

        c_args = map_tensors(args, to_value)
        c_kwargs = map_tensors(kwargs, to_value) if kwargs else {}
        call = Call(len(self.graph.calls), func, c_args, c_kwargs, inputs, [], user_source_line(3), leaf_module,
                    scope=self.scopes[-1] if self.scopes else None)
        outputs: list[Value] = []
        out_values: dict[int, Value] = {}
        for t in out_tensors:
            if id(t) in out_values:
                outputs.append(out_values[id(t)])
                continue
            prev = self.by_id.get(id(t))
            if prev is not None and id(t) in in_ids:
                inplace_target = t
                v = self.graph.new_value("tensor", t, [], call, prev.version + 1)
            elif prev is not None:
                # an existing tensor returned unchanged (e.g. a no-op ``.to``): alias it
                v = self.graph.new_value("tensor", t, [], call)
            else:
                v = self.graph.new_value("tensor", t, [], call)
            self.by_id[id(t)] = v
            self.alive.append(t)
            out_values[id(t)] = v
            outputs.append(v)
        call.outputs = outputs
        if inplace_target is not None and getattr(inplace_target, "_base", None) is not None:
            call.view_base = self.by_id.get(id(inplace_target._base))
        self.graph.calls.append(call)


def _named_tensors(modules: list[tuple[str, nn.Module]]) -> dict[int, tuple[str, list[str]]]:
    named: dict[int, tuple[str, list[str]]] = {}
    for mname, m in modules:
        prefix = f"{mname}." if mname else ""
        for name, p in m._parameters.items():
            if p is not None:
                named.setdefault(id(p), ("param", []))[1].append(prefix + name)
    for mname, m in modules:
        prefix = f"{mname}." if mname else ""
        for name, b in m._buffers.items():
            if b is not None:
                named.setdefault(id(b), ("buffer", []))[1].append(prefix + name)
    return named


class MetaShadow:
    """Swap every parameter and buffer for a ``meta`` twin (same names, sharing kept), and back.

    Tracing needs shapes, not values: on the meta device a forward pass costs no
    arithmetic and no memory. Parameter objects are restored on exit.
    """

    def __init__(self, modules: list[nn.Module]) -> None:
        self.modules = modules
        self.saved: list[tuple[dict, str, Any]] = []
        self.attrs: list[tuple[nn.Module, dict]] = []
        self.twins: dict[int, torch.Tensor] = {}  # id(real tensor) -> its meta twin

    def twin(self, t: torch.Tensor) -> torch.Tensor:
        """The meta twin standing in for ``t`` (``t`` itself if it has none)."""
        return self.twins.get(id(t), t)

    def __enter__(self) -> MetaShadow:
        twins = self.twins
        for m in self.modules:
            # a forward may cache tensors in plain attributes (e.g. anchor generators); those must not
            # stay meta tensors after the trace
            self.attrs.append((m, dict(m.__dict__)))
            stores: tuple[dict[str, Any], ...] = (m._parameters, m._buffers)
            for store in stores:
                for name, t in store.items():
                    if t is None or t.is_meta:
                        continue
                    twin = twins.get(id(t))
                    if twin is None:
                        twin = torch.empty_like(t, device="meta")
                        if isinstance(t, nn.Parameter):
                            twin = nn.Parameter(twin, requires_grad=t.requires_grad)
                        twins[id(t)] = twin
                    self.saved.append((store, name, t))
                    store[name] = twin
        return self

    def __exit__(self, *exc) -> None:
        for store, name, t in reversed(self.saved):
            store[name] = t
        for m, attrs in self.attrs:
            if m.__dict__.keys() != attrs.keys():
                for k in [k for k in m.__dict__ if k not in attrs]:
                    del m.__dict__[k]
            m.__dict__.update(attrs)
        self.saved.clear()
        self.attrs.clear()
        self.twins.clear()


@contextlib.contextmanager
def paused_gc():
    """Pause Python's cyclic garbage collector (tracing allocates many small objects; a full
    collection in the middle scans the whole heap and can cost more than the trace)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def to_meta(obj: Any) -> Any:
    """``obj`` with every tensor in it replaced by an empty ``meta`` tensor of the same shape and dtype."""
    return map_tensors(obj, lambda t: t if t.is_meta else torch.empty_like(t, device="meta"))


def trace(
    model: nn.Module,
    example_inputs: Any,
    forward_fn: Callable | None = None,
    output_transform: Callable | None = None,
    leaf_modules: tuple[type, ...] = (),
    compute: str = "auto",
    scope_modules: tuple[type, ...] = (),
) -> OpGraph:
    """Run ``model`` once on ``example_inputs`` and record an :class:`OpGraph`.

    Args:
        model: any ``nn.Module``; its parameters may live on the ``meta`` device.
        example_inputs: a tensor, a tuple (unpacked), a list (passed whole) or a
            dict (keyword arguments); see :func:`run_model`.
        forward_fn: ``forward_fn(model, example_inputs)`` replaces the default call.
        output_transform: applied to the outputs; tensors it returns are model
            outputs too (and pinned like them).
        leaf_modules: module types recorded as one call each (their insides are
            not traced), for layers handled by customized pruners.
        scope_modules: module types whose forward sets :attr:`Call.scope` of
            the calls it makes (modules with a registered attribute updater).
        compute: ``"meta"`` runs the forward on meta twins of the parameters and
            inputs (shapes only, no arithmetic); ``"real"`` runs it as it is;
            ``"auto"`` (default) tries meta and falls back to real when the model
            needs values (data-dependent control flow, ops without meta kernels,
            tensors kept outside parameters and buffers).

    Returns:
        The op graph. The model's training flag, grad mode and buffers are
        left as they were.

    Raises:
        ConfigError: ``model`` is not an ``nn.Module``.
        TraceError: the model cannot run on ``example_inputs``; the model's own
            error is chained.
    """
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if compute not in ("auto", "meta", "real"):
        raise ConfigError(f"compute must be 'auto', 'meta' or 'real', got {compute!r}")
    named_modules = list(model.named_modules(remove_duplicate=False))
    modules = list({id(m): m for _, m in named_modules}.values())
    on_meta = all(t is None or t.is_meta for m in modules for t in (*m._parameters.values(), *m._buffers.values()))
    if compute == "real" or on_meta:
        return _trace(model, named_modules, example_inputs, forward_fn, output_transform, leaf_modules,
                      fast_meta=on_meta, scope_modules=scope_modules)
    try:
        with MetaShadow(modules):
            return _trace(model, named_modules, to_meta(example_inputs), forward_fn, output_transform,
                          leaf_modules, fast_meta=True, scope_modules=scope_modules)
    except TraceError as err:
        if compute == "meta":
            raise
        log.debug("tracing on meta failed (%s); tracing with real values", err.__cause__)
    return _trace(model, named_modules, example_inputs, forward_fn, output_transform, leaf_modules,
                  scope_modules=scope_modules)


def _trace(model, named_modules, example_inputs, forward_fn, output_transform, leaf_modules,
           fast_meta: bool = False, scope_modules: tuple[type, ...] = ()) -> OpGraph:
    graph = OpGraph()
    graph.on_meta = fast_meta
    rec = _Recorder(graph, _named_tensors(named_modules), fast_meta)
    for t in iter_tensors(example_inputs):
        rec.add_input(t)

    handles = []
    if leaf_modules:
        names = {m: n for n, m in model.named_modules()}

        def pre_hook(mod, args, kwargs):
            rec.suspended += 1
            mod._anyprune_leaf_inputs = (args, kwargs)

        def post_hook(mod, args, kwargs, out):
            rec.suspended -= 1
            a, k = mod._anyprune_leaf_inputs
            del mod._anyprune_leaf_inputs
            if rec.suspended == 0:
                rec.record(mod.forward, a, k, out, leaf_module=names.get(mod, type(mod).__name__))

        for m in model.modules():
            if isinstance(m, leaf_modules):
                handles.append(m.register_forward_pre_hook(pre_hook, with_kwargs=True))
                handles.append(m.register_forward_hook(post_hook, with_kwargs=True))

    if scope_modules:
        # every module pushes a scope: its own name if it has an updater, else None (a module without an
        # updater ends the scope of the module that calls it)
        scope_names = {m: n for n, m in reversed(named_modules)}

        def enter(mod, args):
            rec.scopes.append(scope_names.get(mod) if isinstance(mod, scope_modules) else None)

        def leave(mod, args, out):
            if rec.scopes:
                rec.scopes.pop()

        handles.append(torch.nn.modules.module.register_module_forward_pre_hook(enter))
        handles.append(torch.nn.modules.module.register_module_forward_hook(leave, always_call=True))

    buffers = {id(b): b for _, m in named_modules for b in m._buffers.values() if b is not None and not b.is_meta}
    snapshot = [(b, b.detach().clone()) for b in buffers.values()]
    modes = {m: m.training for _, m in named_modules}
    try:
        with torch.no_grad(), rec:
            out = run_model(model, example_inputs, forward_fn)
            if output_transform is not None:
                transformed = output_transform(out)
                out = (out, transformed)
    except Exception as err:
        failure = model_failed(model, err)
        failure.failed_at = rec.failed_at
        raise failure from err
    finally:
        for h in handles:
            h.remove()
        for m, flag in modes.items():
            if m.training is not flag:
                m.training = flag
        with torch.no_grad():
            for b, saved in snapshot:
                if b.shape == saved.shape:
                    b.copy_(saved)

    for t in iter_tensors(out):
        v = rec.by_id.get(id(t))
        if v is None:
            v = rec.value_of(t)
        if v not in graph.outputs:
            graph.outputs.append(v)
    used = {n for v in graph.values for n in v.names}
    if leaf_modules:
        for mname, m in model.named_modules():
            if isinstance(m, leaf_modules):
                used.update(f"{mname}.{n}" if mname else n for n, _ in m.named_parameters())
    graph.unused_params = [names[0] for kind, names in rec.named.values() if kind == "param" and names[0] not in used]
    return graph


def signature_help(model: nn.Module) -> str:
    try:
        return str(inspect.signature(model.forward))
    except (TypeError, ValueError):
        return "(...)"
