"""Save a pruned model as safetensors + a JSON record of its structure; load it into a fresh original model.

No pickle anywhere: loading reads JSON and safetensors only, so a file from an untrusted source can never run
code. The record holds, for every parameter and buffer (non-persistent buffers included, e.g. a pruned rotary
``inv_freq``), its shape and dtype; for every module, the plain attributes (ints, floats, bools, strings,
tuples of them) of its ``__dict__``; for models with a ``config`` (Hugging Face), the config's fields, and the
fields of per-layer config copies. Loading checks every name and type against the freshly built model before
it changes anything: attributes are only ever set where the module already has an attribute of that name and
kind, and tensors only where the model has a parameter or buffer of that name and rank.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError

__all__ = ["save_pruned", "load_pruned", "structure_of", "apply_structure", "state_dict", "load_state_dict",
           "FORMAT"]

FORMAT = "anyprune.pruned/1"
WEIGHTS = "model.safetensors"
RECORD = "anyprune.json"
_SIMPLE = (bool, int, float, str, type(None))


def _simple(v: Any) -> bool:
    if type(v) in _SIMPLE:  # exact types: enums and other subclasses are left alone
        return not (isinstance(v, float) and (v != v or v in (float("inf"), float("-inf"))))
    if isinstance(v, (tuple, list)):
        return all(_simple(x) for x in v)
    return False


def _tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer by name (aliases of tied tensors included)."""
    out: dict[str, torch.Tensor] = {}
    for mname, m in model.named_modules(remove_duplicate=False):
        prefix = f"{mname}." if mname else ""
        for n, t in (*m._parameters.items(), *m._buffers.items()):
            if t is not None:
                out.setdefault(prefix + n, t)
    return out


def _config_dict(config: Any) -> dict[str, Any]:
    d = config.to_dict() if hasattr(config, "to_dict") else dict(vars(config))
    return {k: v for k, v in d.items() if _simple(v) or (isinstance(v, dict) and _json_ok(v))}


def _json_ok(v: Any) -> bool:
    try:
        json.dumps(v)
    except (TypeError, ValueError):
        return False
    return True


def structure_of(model: nn.Module) -> dict[str, Any]:
    """The JSON-able structure record of ``model`` (shapes, dtypes, module attributes, configs)."""
    tensors: dict[str, Any] = {}
    first: dict[int, str] = {}
    for name, t in _tensors(model).items():
        if id(t) in first:
            tensors[name] = {"alias": first[id(t)]}
            continue
        first[id(t)] = name
        tensors[name] = {"shape": list(t.shape), "dtype": str(t.dtype).replace("torch.", "")}
    modules: dict[str, dict[str, Any]] = {}
    configs: dict[str, dict[str, Any]] = {}
    root_config = getattr(model, "config", None)
    for mname, m in model.named_modules():
        attrs = {k: v for k, v in vars(m).items() if not k.startswith("_") and _simple(v)}
        if attrs:
            modules[mname] = attrs
        cfg = vars(m).get("config")
        if cfg is not None and hasattr(cfg, "to_dict") and (mname == "" or cfg is not root_config):
            configs[mname] = _config_dict(cfg)
    return {"format": FORMAT, "tensors": tensors, "modules": modules, "configs": configs}


def _check_record(record: Any) -> dict[str, Any]:
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise ConfigError(f"not an anyprune structure record (expected format {FORMAT!r})")
    for key in ("tensors", "modules", "configs"):
        if not isinstance(record.get(key), dict):
            raise ConfigError(f"structure record: {key!r} must be a mapping")
    return record


def _is_int(v: Any) -> bool:
    return type(v) is int


def _fits(old: Any, new: Any) -> bool:
    """Whether ``new`` can replace attribute value ``old`` after pruning: the same kind (an int stays an int,
    a tuple keeps its length and element kinds), and a positive size stays between 1 and its original value
    (pruning only ever shrinks sizes)."""
    if isinstance(old, (bool, str)) or isinstance(new, (bool, str)):  # flags and modes: pruning keeps them
        return type(old) is type(new) and old == new
    if _is_int(old):
        return _is_int(new) and (1 <= new <= old if old >= 1 else new == old)
    if isinstance(old, float):
        return type(new) in (int, float) and _simple(new)
    if isinstance(old, (tuple, list)):
        return isinstance(new, (tuple, list)) and len(new) == len(old) and all(_fits(a, b) for a, b in zip(old, new))
    if old is None:  # pruning never sets an attribute that the original leaves unset
        return new is None
    return type(old) is type(new)


def _dtype_kind(dtype: torch.dtype) -> str:
    if dtype == torch.bool:
        return "bool"
    if dtype.is_complex:
        return "complex"
    return "float" if dtype.is_floating_point else "int"


# module flags that are modes, not structure: a saved model keeps its own (train/eval, checkpointing)
_MODES = ("training", "gradient_checkpointing")
# config fields a record may change: sizes that pruning shrinks (any existing int field or list of ints, checked
# like module attributes) and these two, which anyprune writes itself
_CONFIG_RECORDS = ("pruned_layers", "rope_parameters")
# sizes a config may leave unset (derived from others) that pruning writes explicitly
_DERIVED_SIZES = ("head_dim", "intermediate_size", "n_inner", "d_ff", "d_kv", "ffn_hidden_size",
                  "num_key_value_heads", "embedding_size")


class _Plan:
    """Everything loading will change, checked and built before the first write."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.tensors: list[tuple[torch.Tensor, torch.Tensor]] = []  # (model tensor, new data)
        self.attrs: list[tuple[Any, str, Any]] = []
        self.configs: list[tuple[nn.Module, Any, dict[str, Any], bool]] = []  # module, config, fields, own copy


def _plan(model: nn.Module, record: dict[str, Any], weights: dict[str, Any] | None = None,
          strict: bool = True) -> _Plan:
    """Check the record (and ``weights``) against ``model`` and build every new tensor; nothing is modified.

    Raises :class:`ConfigError` naming the first entry that does not fit.
    """
    modules = dict(model.named_modules())
    tensors = _tensors(model)
    plan = _Plan(model)
    specs: dict[str, tuple[tuple[int, ...], torch.dtype]] = {}
    owner: dict[int, str] = {}
    for name, spec in record["tensors"].items():
        if not isinstance(spec, dict):
            raise ConfigError(f"structure record: entry for {name!r} must be a mapping")
        if name not in tensors:
            raise ConfigError(f"the model has no parameter or buffer {name!r}: build the same original "
                              "architecture before loading")
        if "alias" in spec:
            target = spec["alias"]
            if not isinstance(target, str) or set(spec) != {"alias"}:
                raise ConfigError(f"structure record: bad alias entry for {name!r}: {spec!r}")
            target_spec = record["tensors"].get(target)
            if not isinstance(target_spec, dict) or "alias" in target_spec or tensors.get(target) is not tensors[name]:
                raise ConfigError(f"{name!r} is tied to {target!r} in the file but not in the model")
            continue
        t = tensors[name]
        if id(t) in owner:
            raise ConfigError(f"structure record: {name!r} and {owner[id(t)]!r} are one tied tensor in the model, "
                              "but the file lists them as two; one must be an alias of the other")
        owner[id(t)] = name
        shape = spec.get("shape")
        if not isinstance(shape, list) or not all(_is_int(s) and s >= 0 for s in shape):
            raise ConfigError(f"structure record: bad shape for {name!r}: {shape!r}")
        if len(shape) != t.ndim:
            raise ConfigError(f"{name!r} has {t.ndim} dims in the model and {len(shape)} in the file: it was saved "
                              "from another architecture; build the same original architecture before loading")
        for d, (new, old) in enumerate(zip(shape, t.shape)):
            if not (1 <= new <= old if old >= 1 else new == old):
                raise ConfigError(f"structure record: {name!r} dim {d} has size {new}, which pruning cannot give "
                                  f"(the original has {old}; a pruned dim keeps between 1 and {old})")
        dtype = getattr(torch, str(spec.get("dtype")), None)
        if not isinstance(dtype, torch.dtype):
            raise ConfigError(f"structure record: bad dtype for {name!r}: {spec.get('dtype')!r}")
        if _dtype_kind(dtype) != _dtype_kind(t.dtype):
            raise ConfigError(f"structure record: bad dtype for {name!r}: {spec.get('dtype')!r} does not fit the "
                              f"model's {str(t.dtype).replace('torch.', '')}")
        # values are converted to the model's dtype: a record cannot give one tensor of a layer another precision
        specs[name] = (tuple(shape), t.dtype)
    missing = [n for n in tensors if n not in record["tensors"]]
    if missing:
        raise ConfigError(f"the file has no entry for {missing[:3]} (and {max(0, len(missing) - 3)} more); "
                          "it was saved from another architecture")
    if weights is not None:
        for name, (shape, dtype) in specs.items():
            w = weights.get(name)
            if not isinstance(w, torch.Tensor):
                raise ConfigError(f"the weights have no tensor for {name!r}" if w is None else
                                  f"weights entry {name!r} is a {type(w).__name__}, not a tensor")
            if tuple(w.shape) != shape or _dtype_kind(w.dtype) != _dtype_kind(dtype):
                declared = str(record["tensors"][name]["dtype"])
                raise ConfigError(f"weights and record disagree on {name!r}: {tuple(w.shape)} "
                                  f"{str(w.dtype).replace('torch.', '')} in the weights, {list(shape)} "
                                  f"{declared} in the record")
        for name in weights:
            if name in specs:
                continue
            if name in record["tensors"]:
                raise ConfigError(f"the weights have an entry for {name!r}, a tied alias of "
                                  f"{record['tensors'][name]['alias']!r}: tied tensors are stored once")
            if strict:
                raise ConfigError(f"the weights file has tensors the record does not list: {name!r}")
    attrs: list[tuple[Any, str, Any]] = []
    for mname, values in record["modules"].items():
        m = modules.get(mname)
        if m is None or not isinstance(values, dict):
            raise ConfigError(f"the model has no module {mname!r}")
        for k, v in values.items():
            mode = k in _MODES and isinstance(v, bool) and isinstance(vars(m).get(k), bool)
            if not isinstance(k, str) or k.startswith("_") or k not in vars(m) or not _simple(v) or \
                    not (mode or _fits(vars(m)[k], v)):
                raise ConfigError(f"structure record: attribute {k!r} of module {mname!r} cannot be set to {v!r}")
            if isinstance(vars(m)[k], tuple) and isinstance(v, list):
                v = tuple(tuple(x) if isinstance(x, list) else x for x in v)
            if vars(m)[k] != v:
                attrs.append((m, k, v))
    plan.attrs = attrs
    root_config = getattr(model, "config", None)
    for mname, values in record["configs"].items():
        m = modules.get(mname)
        cfg = vars(m).get("config") if m is not None else None
        if m is None or cfg is None or not hasattr(cfg, "to_dict") or not isinstance(values, dict):
            raise ConfigError(f"structure record: module {mname!r} has no config to update")
        fields = _config_fields(mname, cfg, values)
        plan.configs.append((m, cfg, fields, mname != "" and cfg is root_config))
    _check_configs(model, plan)
    # every new tensor is built (and filled) before anything changes; sizes are bounded by the original's
    for name, (shape, dtype) in specs.items():
        t = tensors[name]
        if weights is not None:
            new = weights[name].to(device=t.device, dtype=dtype, copy=True)
        elif tuple(t.shape) != shape or t.dtype != dtype:
            new = torch.empty(shape, dtype=dtype, device=t.device)
        else:
            continue
        plan.tensors.append((t, new))
    return plan


def _config_fields(mname: str, cfg: Any, values: dict[str, Any]) -> dict[str, Any]:
    """The fields of ``values`` that change ``cfg``; only sizes pruning changes (and anyprune's own records)."""
    current = cfg.to_dict()
    fields: dict[str, Any] = {}
    where = f"config of module {mname!r}" if mname else "config"
    for k, v in values.items():
        if not isinstance(k, str):
            raise ConfigError(f"structure record: {where} has a non-string key {k!r}")
        old = current.get(k, getattr(cfg, k, None))
        if old == v or _as_json(old) == v:  # JSON turns int keys into strings and tuples into lists
            continue
        if k in _CONFIG_RECORDS:
            if not (v is None or isinstance(v, dict)) or not _json_safe(v):
                raise ConfigError(f"structure record: {where} field {k!r} must be a mapping, got {v!r}")
        elif old is None and k in _DERIVED_SIZES:
            if not (_is_int(v) and v >= 1):
                raise ConfigError(f"structure record: {where} field {k!r} must be a size >= 1, got {v!r}")
        elif _is_int(old) or (isinstance(old, (list, tuple)) and old and all(_is_int(x) for x in old)):
            if not _fits(old, v):
                raise ConfigError(f"structure record: {where} field {k!r} cannot be set to {v!r} (it is "
                                  f"{old!r}; pruning keeps a size between 1 and the original)")
            v = list(v) if isinstance(old, list) else tuple(v) if isinstance(old, tuple) else v
        else:
            raise ConfigError(f"structure record: {where} field {k!r} cannot be changed by loading (from "
                              f"{old!r} to {v!r}): only sizes that pruning changes can be")
        fields[k] = v
    return fields


def _as_json(v: Any) -> Any:
    try:
        return json.loads(json.dumps(v))
    except (TypeError, ValueError, RecursionError):
        return v


def _json_safe(v: Any, depth: int = 0) -> bool:
    if depth > 20:
        return False
    if isinstance(v, dict):
        return all(isinstance(k, str) and _json_safe(x, depth + 1) for k, x in v.items())
    if isinstance(v, list):
        return all(_json_safe(x, depth + 1) for x in v)
    return _simple(v)


def _check_configs(model: nn.Module, plan: _Plan) -> None:
    """A root Hugging Face config with new fields must still build the model (on meta, nothing allocated)."""
    import copy

    for m, cfg, fields, _own in plan.configs:
        if m is not model or not fields or not type(model).__module__.startswith("transformers."):
            continue
        trial = copy.deepcopy(cfg)
        for k, v in fields.items():
            setattr(trial, k, v)
        try:
            with torch.device("meta"):
                type(model)(trial)
        except Exception as err:  # whatever the model class rejects
            raise ConfigError(f"structure record: the config fields {sorted(fields)} do not build a "
                              f"{type(model).__name__}: {type(err).__name__}: {err}") from err


_INPUT_DTYPES = ("float32", "float64", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8", "bool")
_INPUT_LIMIT = 2**26  # elements per example input


def input_spec(example_inputs: Any) -> dict[str, Any]:
    """The record's description of example inputs (shapes and dtypes only): a tensor, a tuple or list of
    tensors, or a dict of them. Raises :class:`ConfigError` for anything else."""
    if isinstance(example_inputs, torch.Tensor):
        kind, items = "tensor", [(None, example_inputs)]
    elif isinstance(example_inputs, (tuple, list)):
        kind, items = type(example_inputs).__name__ if type(example_inputs) in (tuple, list) else "tuple", \
            [(None, t) for t in example_inputs]
    elif isinstance(example_inputs, dict):
        kind, items = "dict", list(example_inputs.items())
    else:
        raise ConfigError(f"example_inputs must be a tensor, a tuple or list of tensors or a dict of them to be "
                          f"recorded, got {type(example_inputs).__name__}")
    out = []
    for key, t in items:
        if not isinstance(t, torch.Tensor) or (key is not None and not isinstance(key, str)):
            raise ConfigError("example_inputs: only tensors (under string keys) can be recorded, got "
                              f"{type(t).__name__}")
        out.append({"key": key, "shape": list(t.shape), "dtype": str(t.dtype).replace("torch.", "")})
    return {"kind": kind, "tensors": out}


def inputs_from_spec(spec: Any) -> Any:
    """Zero-filled example inputs from a (possibly untrusted) :func:`input_spec` record, strictly checked."""
    if not isinstance(spec, dict) or spec.get("kind") not in ("tensor", "tuple", "list", "dict") or \
            not isinstance(spec.get("tensors"), list) or not 1 <= len(spec["tensors"]) <= 16:
        raise ConfigError("structure record: 'example_inputs' must be {'kind': tensor|tuple|list|dict, "
                          "'tensors': [1 to 16 entries]}")
    made = []
    for k, e in enumerate(spec["tensors"]):
        shape, dtype = (e.get("shape"), e.get("dtype")) if isinstance(e, dict) else (None, None)
        if not isinstance(shape, list) or len(shape) > 8 or not all(_is_int(d) and 0 < d < 2**31 for d in shape):
            raise ConfigError(f"structure record: example input {k} needs a shape of at most 8 positive ints, "
                              f"got {shape!r}")
        if dtype not in _INPUT_DTYPES:
            raise ConfigError(f"structure record: example input {k} has dtype {dtype!r}; expected one of "
                              f"{', '.join(_INPUT_DTYPES)}")
        numel = 1
        for d in shape:
            numel *= d
        if numel > _INPUT_LIMIT:
            raise ConfigError(f"structure record: example input {k} has {numel:,} elements, more than the "
                              f"{_INPUT_LIMIT:,} allowed")
        key = e.get("key")
        if (spec["kind"] == "dict") != isinstance(key, str):
            raise ConfigError(f"structure record: example input {k} needs a string key exactly when kind is 'dict'")
        made.append((key, torch.zeros(shape, dtype=getattr(torch, dtype))))
    if spec["kind"] == "tensor":
        if len(made) != 1:
            raise ConfigError("structure record: example input of kind 'tensor' must list one tensor")
        return made[0][1]
    if spec["kind"] == "dict":
        return {key: t for key, t in made}
    values = [t for _, t in made]
    return tuple(values) if spec["kind"] == "tuple" else values


def _runs_on(model: nn.Module, inputs: Any) -> None:
    """Re-trace ``model`` on ``inputs`` (on meta where it can); a failure means widths that do not fit together."""
    from ..errors import TraceError
    from ..trace.recorder import trace

    try:
        trace(model, inputs)
    except TraceError as err:
        cause = err.__cause__ if err.__cause__ is not None else err
        raise ConfigError(f"the loaded structure does not run on its example inputs: {type(cause).__name__}: "
                          f"{cause}. The record's widths do not fit together (a file not written by "
                          "save_pruned for this architecture?)") from err


def _apply(plan: _Plan, example_inputs: Any = None) -> None:
    """Write a checked plan, all or nothing (any exception, ``KeyboardInterrupt`` included, restores the model).
    With ``example_inputs``, the re-shaped model must also run on them before the writes are kept."""
    import copy

    from ..apply.transaction import Transaction

    with Transaction() as tx, torch.no_grad():
        for m, cfg, fields, own in plan.configs:
            if own:  # a per-layer config: this module gets its own copy
                cfg = copy.copy(cfg)
                tx.set_attr(m, "config", cfg)
            else:
                tx.snapshot_object(cfg)
            for k, v in fields.items():
                setattr(cfg, k, v)
        for m, k, v in plan.attrs:
            tx.set_attr(m, k, v)
        for t, new in plan.tensors:
            tx.set_data(t, new, None)
        if example_inputs is not None:
            _runs_on(plan.model, example_inputs)


def apply_structure(model: nn.Module, record: dict[str, Any]) -> None:
    """Re-shape a freshly built original ``model`` to the structure ``record`` (values are left uninitialised
    where shapes change; load the weights next). All or nothing: the record is checked whole first."""
    _apply(_plan(model, _check_record(record)))


def save_pruned(model: nn.Module, path: str | os.PathLike, source: str | None = None,
                example_inputs: Any = None) -> Path:
    """Write ``model`` (pruned or not) to directory ``path``: ``model.safetensors`` + ``anyprune.json``.

    ``source`` (e.g. ``"torchvision:resnet50"``) records how to build the original, so that the command
    line can load the directory by itself. ``example_inputs`` (a tensor, a tuple or list of tensors, or a dict
    of them) records their shapes and dtypes: :func:`load_pruned` then checks that the loaded model runs on
    inputs of those shapes before it keeps the change, so a record whose widths do not fit together is refused.

    Example:
        >>> import torch, tempfile, anyprune as tp
        >>> net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
        >>> _ = tp.prune_linear_out_channels(net[0], [0, 1]), tp.prune_linear_in_channels(net[2], [0, 1])
        >>> d = tp.save_pruned(net, tempfile.mkdtemp())
        >>> fresh = tp.load_pruned(torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(),
        ...                                            torch.nn.Linear(8, 2)), d)
        >>> fresh[0].out_features, torch.equal(fresh[2].weight, net[2].weight)
        (6, True)
    """
    from safetensors.torch import save_file

    if not isinstance(model, nn.Module):
        raise ConfigError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    record = structure_of(model)
    if source is not None:
        record["source"] = str(source)
    if example_inputs is not None:
        record["example_inputs"] = input_spec(example_inputs)
    unique = {n: t for n, t in _tensors(model).items() if "alias" not in record["tensors"][n]}
    if any(t.is_meta for t in unique.values()):
        raise ConfigError("the model has tensors on the meta device: there are no weights to save")
    save_file({n: t.detach().contiguous().cpu() for n, t in unique.items()}, str(out / WEIGHTS),
              metadata={"format": FORMAT})
    (out / RECORD).write_text(json.dumps(record, indent=1, sort_keys=True))
    return out


RECORD_LIMIT = 64 * 2**20
"""The largest structure record (``anyprune.json``) :func:`load_pruned` reads, in bytes."""


def _regular_file(path: Path, what: str, limit: int | None = None, hint: str = "") -> None:
    import stat

    try:
        st = os.stat(path)
    except OSError as err:
        raise ConfigError(f"cannot read the {what} {path}{hint}: {err}") from err
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(f"the {what} {path} is not a regular file (a device, FIFO or directory): refusing to read it")
    if limit is not None and st.st_size > limit:
        raise ConfigError(f"the {what} {path} has {st.st_size:,} bytes, more than the {limit:,} allowed")


def _read_record(path: Path) -> dict[str, Any]:
    _regular_file(path, "structure record", RECORD_LIMIT)
    try:
        return json.loads(path.read_text())
    except RecursionError as err:
        raise ConfigError(f"cannot read the structure record {path}: nested too deeply") from err
    except (OSError, ValueError) as err:
        raise ConfigError(f"cannot read the structure record {path}: {err}") from err


def load_pruned(model: nn.Module, path: str | os.PathLike, strict: bool = True,
                example_inputs: Any = None) -> nn.Module:
    """Re-shape the freshly built original ``model`` to the structure saved in ``path`` and load its weights.

    Reads only JSON and safetensors (no code runs), and only regular files (the record at most
    :data:`RECORD_LIMIT` bytes). Everything is checked before the model changes: every name, shape (each dim
    between 1 and the original's), dtype, tied alias, module attribute (same kind, sizes between 1 and the
    original) and config field (only the sizes pruning changes; a Hugging Face config must still build the
    model), and every weight. Then the re-shaped model must run on ``example_inputs`` (default: zero inputs of the
    shapes the record lists, when it was saved with them; on meta where the model allows), so widths of
    connected layers that do not fit together are refused. The new tensors are built first and written in one
    transaction, so any failure, ``KeyboardInterrupt`` included, leaves ``model`` as it was. Raises
    :class:`~anyprune.ConfigError` naming what does not match.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not isinstance(model, nn.Module):
        raise ConfigError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    src = Path(path)
    record = _check_record(_read_record(src / RECORD))
    _regular_file(src / WEIGHTS, "weights", hint=" (not a safetensors file?)")
    try:
        weights = load_file(str(src / WEIGHTS))
    except (OSError, SafetensorError, ValueError) as err:
        raise ConfigError(f"cannot read the weights {src / WEIGHTS} (not a safetensors file?): {err}") from err
    inputs = example_inputs if example_inputs is not None else \
        (inputs_from_spec(record["example_inputs"]) if "example_inputs" in record else None)
    _apply(_plan(model, record, weights, strict=strict), inputs)
    return model


def state_dict(model: nn.Module) -> dict[str, Any]:
    """Seed-compatible ``tp.state_dict(model)``: ``{"state_dict": tensors, "structure": record}``."""
    if not isinstance(model, nn.Module):
        raise ConfigError(f"state_dict: model must be a torch.nn.Module, got {type(model).__name__}")
    return {"state_dict": {n: t.detach() for n, t in _tensors(model).items()}, "structure": structure_of(model)}


def load_state_dict(model: nn.Module, state_dict: dict[str, Any]) -> nn.Module:
    """Seed-compatible ``tp.load_state_dict(model, state_dict=tp.state_dict(pruned))`` into a fresh model.

    Checked and applied like :func:`load_pruned`: every tensor the record lists must be in the state dict
    (tied aliases once), and a failure leaves ``model`` as it was.
    """
    if not isinstance(model, nn.Module):
        raise ConfigError(f"load_state_dict: model must be a torch.nn.Module, got {type(model).__name__}")
    if not isinstance(state_dict, dict) or "structure" not in state_dict or "state_dict" not in state_dict:
        raise ConfigError("load_state_dict expects the dict returned by anyprune.state_dict(model), got "
                          f"{type(state_dict).__name__}")
    record = _check_record(state_dict["structure"])
    weights = state_dict["state_dict"]
    if not isinstance(weights, dict):
        raise ConfigError(f"load_state_dict: 'state_dict' must map names to tensors, got {type(weights).__name__}")
    tensors = _tensors(model)
    unknown = [n for n in weights if n not in tensors]
    if unknown:
        raise ConfigError(f"the model has no parameter or buffer {unknown[0]!r}: build the same original "
                          "architecture before loading")
    # the seed's state dict lists tied names too: keep the entry of the name the record stores
    stored = {n: w for n, w in weights.items()
              if not (isinstance(record["tensors"].get(n), dict) and "alias" in record["tensors"][n])}
    for n, w in weights.items():
        spec = record["tensors"].get(n)
        if isinstance(spec, dict) and "alias" in spec and isinstance(w, torch.Tensor):
            target = stored.get(spec["alias"]) if isinstance(spec["alias"], str) else None
            if not isinstance(target, torch.Tensor) or target.shape != w.shape:
                raise ConfigError(f"{n!r}: {tuple(w.shape)} in the state dict, but it is tied to "
                                  f"{spec['alias']!r}, which has another shape there")
    _apply(_plan(model, record, stored))
    return model
