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


def _same_kind(old: Any, new: Any) -> bool:
    if isinstance(old, bool) or isinstance(new, bool):
        return isinstance(old, bool) and isinstance(new, bool)
    if isinstance(old, (tuple, list)):
        return isinstance(new, (tuple, list))
    if isinstance(old, (int, float)):
        return isinstance(new, (int, float)) and not isinstance(new, bool)
    if old is None:
        return _simple(new) and not isinstance(new, (tuple, list))
    return type(old) is type(new)


def _plan(model: nn.Module, record: dict[str, Any]):
    """Check the record against ``model``; return the changes, raising before anything is modified."""
    modules = dict(model.named_modules())
    tensors = _tensors(model)
    shapes: list[tuple[torch.Tensor, tuple[int, ...], torch.dtype, str]] = []
    for name, spec in record["tensors"].items():
        if not isinstance(spec, dict):
            raise ConfigError(f"structure record: entry for {name!r} must be a mapping")
        if name not in tensors:
            raise ConfigError(f"the model has no parameter or buffer {name!r}: build the same original "
                              "architecture before loading")
        if "alias" in spec:
            if tensors.get(spec["alias"]) is not tensors[name]:
                raise ConfigError(f"{name!r} is tied to {spec['alias']!r} in the file but not in the model")
            continue
        shape = spec.get("shape")
        if not isinstance(shape, list) or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0
                                                  for s in shape):
            raise ConfigError(f"structure record: bad shape for {name!r}: {shape!r}")
        t = tensors[name]
        if len(shape) != t.ndim:
            raise ConfigError(f"{name!r} has {t.ndim} dims in the model and {len(shape)} in the file: it was saved "
                              "from another architecture; build the same original architecture before loading")
        dtype = getattr(torch, str(spec.get("dtype")), None)
        if not isinstance(dtype, torch.dtype):
            raise ConfigError(f"structure record: bad dtype for {name!r}: {spec.get('dtype')!r}")
        shapes.append((t, tuple(shape), dtype, name))
    missing = [n for n in tensors if n not in record["tensors"]]
    if missing:
        raise ConfigError(f"the file has no entry for {missing[:3]} (and {max(0, len(missing) - 3)} more); "
                          "it was saved from another architecture")
    attrs: list[tuple[Any, str, Any]] = []
    for mname, values in record["modules"].items():
        m = modules.get(mname)
        if m is None or not isinstance(values, dict):
            raise ConfigError(f"the model has no module {mname!r}")
        for k, v in values.items():
            if k.startswith("_") or k not in vars(m) or not _simple(v) or not _same_kind(vars(m)[k], v):
                raise ConfigError(f"structure record: attribute {k!r} of module {mname!r} cannot be set to {v!r}")
            if isinstance(vars(m)[k], tuple) and isinstance(v, list):
                v = tuple(tuple(x) if isinstance(x, list) else x for x in v)
            attrs.append((m, k, v))
    configs: list[tuple[nn.Module, str, dict[str, Any]]] = []
    for mname, values in record["configs"].items():
        m = modules.get(mname)
        cfg = vars(m).get("config") if m is not None else None
        if m is None or cfg is None or not hasattr(cfg, "to_dict") or not isinstance(values, dict):
            raise ConfigError(f"structure record: module {mname!r} has no config to update")
        configs.append((m, mname, values))
    return shapes, attrs, configs


def apply_structure(model: nn.Module, record: dict[str, Any]) -> None:
    """Re-shape a freshly built original ``model`` to the structure ``record`` (values are left uninitialised
    where shapes change; load the weights next)."""
    import copy

    shapes, attrs, configs = _plan(model, _check_record(record))
    root_config = getattr(model, "config", None)
    for m, mname, values in configs:
        cfg = vars(m)["config"]
        if mname != "" and cfg is root_config:
            cfg = copy.copy(cfg)  # a per-layer config: this module gets its own copy
            m.config = cfg
        for k, v in values.items():
            if k.startswith("_") or (hasattr(cfg, k) and not _same_kind(getattr(cfg, k), v) and
                                     getattr(cfg, k) is not None):
                continue
            setattr(cfg, k, v)
    for m, k, v in attrs:
        setattr(m, k, v)
    with torch.no_grad():
        for t, shape, dtype, _name in shapes:
            if tuple(t.shape) != shape or t.dtype != dtype:
                t.data = torch.empty(shape, dtype=dtype, device=t.device)


def save_pruned(model: nn.Module, path: str | os.PathLike, source: str | None = None) -> Path:
    """Write ``model`` (pruned or not) to directory ``path``: ``model.safetensors`` + ``anyprune.json``.

    ``source`` (e.g. ``"torchvision:resnet50"``) records how to build the original, so that the command
    line can load the directory by itself.

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
    unique = {n: t for n, t in _tensors(model).items() if "alias" not in record["tensors"][n]}
    if any(t.is_meta for t in unique.values()):
        raise ConfigError("the model has tensors on the meta device: there are no weights to save")
    save_file({n: t.detach().contiguous().cpu() for n, t in unique.items()}, str(out / WEIGHTS),
              metadata={"format": FORMAT})
    (out / RECORD).write_text(json.dumps(record, indent=1, sort_keys=True))
    return out


def load_pruned(model: nn.Module, path: str | os.PathLike, strict: bool = True) -> nn.Module:
    """Re-shape the freshly built original ``model`` to the structure saved in ``path`` and load its weights.

    Reads only JSON and safetensors (no code runs). Raises :class:`~anyprune.ConfigError` with what does not
    match (and leaves ``model`` unchanged) if the file does not belong to this architecture.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not isinstance(model, nn.Module):
        raise ConfigError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    src = Path(path)
    try:
        record = json.loads((src / RECORD).read_text())
    except (OSError, ValueError) as err:
        raise ConfigError(f"cannot read the structure record {src / RECORD}: {err}") from err
    try:
        weights = load_file(str(src / WEIGHTS))
    except (OSError, SafetensorError, ValueError) as err:
        raise ConfigError(f"cannot read the weights {src / WEIGHTS} (not a safetensors file?): {err}") from err
    _check_record(record)
    _plan(model, record)  # raises before anything changes
    tensors = _tensors(model)
    for name, spec in record["tensors"].items():
        if isinstance(spec, dict) and "alias" not in spec:
            w = weights.get(name)
            if w is None or list(w.shape) != spec.get("shape"):
                raise ConfigError(f"weights and record disagree on {name!r}")
    extra = set(weights) - set(record["tensors"])
    if extra and strict:
        raise ConfigError(f"the weights file has tensors the record does not list: {sorted(extra)[:3]}")
    apply_structure(model, record)
    with torch.no_grad():
        for name, w in weights.items():
            t = tensors.get(name)
            if t is not None:
                t.data.copy_(w.to(t.dtype))
    return model


def state_dict(model: nn.Module) -> dict[str, Any]:
    """Seed-compatible ``tp.state_dict(model)``: ``{"state_dict": tensors, "structure": record}``."""
    if not isinstance(model, nn.Module):
        raise ConfigError(f"state_dict: model must be a torch.nn.Module, got {type(model).__name__}")
    return {"state_dict": {n: t.detach() for n, t in _tensors(model).items()}, "structure": structure_of(model)}


def load_state_dict(model: nn.Module, state_dict: dict[str, Any]) -> nn.Module:
    """Seed-compatible ``tp.load_state_dict(model, state_dict=tp.state_dict(pruned))`` into a fresh model."""
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
    for name, w in weights.items():  # everything is checked before the model changes
        if name not in tensors:
            raise ConfigError(f"the model has no parameter or buffer {name!r}: build the same original "
                              "architecture before loading")
        spec = record["tensors"].get(name)
        seen = 0
        while isinstance(spec, dict) and "alias" in spec and seen < len(record["tensors"]):
            spec, seen = record["tensors"].get(spec["alias"]), seen + 1
        want = spec.get("shape") if isinstance(spec, dict) else None
        if not isinstance(w, torch.Tensor) or list(w.shape) != want:
            got = tuple(w.shape) if isinstance(w, torch.Tensor) else type(w).__name__
            raise ConfigError(f"{name!r}: {got} in the state dict, but the structure record says {want}")
    apply_structure(model, record)  # checks the record against the model before changing anything
    with torch.no_grad():
        for name, w in weights.items():
            tensors[name].data.copy_(w)
    return model
