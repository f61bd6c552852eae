"""Prune a sharded Hugging Face checkpoint without holding the model in memory.

The model is built from its config on the ``meta`` device (no weights), the graph and the groups come from that
model, the importance is computed by reading the checkpoint one tensor at a time (shard by shard), the pruning
step runs on the meta model (it decides the kept positions and updates the config), and the pruned checkpoint is
written shard by shard: each tensor is read, cut to its kept positions and written. At any time the process holds
at most one source tensor plus the output shard being filled.

Magnitude criteria (:class:`~anyprune.importance.GroupMagnitudeImportance` and its subclasses) are computed this
way; calibrated criteria need forward passes and are not supported here.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..calibration.runner import progress as show_progress
from ..errors import ConfigError

__all__ = ["prune_checkpoint", "StreamedImportance", "CheckpointReader", "parse_memory", "write_safetensors"]

_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "KIB": 2**10, "MIB": 2**20,
          "GIB": 2**30, "TIB": 2**40}


def parse_memory(value: Any) -> int:
    """Bytes from an int or a string such as ``"2GB"``, ``"1.5 GiB"`` or ``"512MB"``."""
    if isinstance(value, int) and not isinstance(value, bool):
        n = value
    elif isinstance(value, str):
        text = value.strip().upper().replace(" ", "")
        num = text.rstrip("KMGTIB")
        unit = text[len(num):]
        if unit not in _UNITS or not num:
            raise ConfigError(f"max_memory: cannot read {value!r}; write e.g. '2GB', '1.5GiB' or '512MB'")
        try:
            n = int(float(num) * _UNITS[unit])
        except ValueError as err:
            raise ConfigError(f"max_memory: cannot read {value!r}; write e.g. '2GB'") from err
    else:
        raise ConfigError(f"max_memory must be a number of bytes or a string such as '2GB', got {value!r}")
    if n < 2**16:
        raise ConfigError(f"max_memory must be at least 64 KiB, got {value!r}")
    return n


class CheckpointReader:
    """The tensors of a Hugging Face checkpoint directory (``model.safetensors`` or a sharded index), read one at
    a time."""

    def __init__(self, directory: str | os.PathLike) -> None:
        self.dir = Path(directory)
        index = self.dir / "model.safetensors.index.json"
        single = self.dir / "model.safetensors"
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (OSError, ValueError, KeyError, TypeError) as err:
                raise ConfigError(f"cannot read the shard index {index}: {err}") from err
            if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
                raise ConfigError(f"the shard index {index} has no weight_map of names to files")
            shards: dict[str, list[str]] = {}
            for name, file in weight_map.items():
                if Path(file).name != file:
                    raise ConfigError(f"the shard index {index} names a file outside the directory: {file!r}")
                shards.setdefault(file, []).append(name)
            self.shards = shards
        elif single.is_file():
            self.shards = {single.name: list(_read_header(single)[0])}
        else:
            raise ConfigError(f"{self.dir} has no model.safetensors or model.safetensors.index.json: out-of-core "
                              "pruning reads safetensors checkpoints only")
        self.names = {n: file for file, names in self.shards.items() for n in names}

    def entries(self) -> Iterator[tuple[str, int, Callable[[], torch.Tensor]]]:
        """``(name, bytes, load)`` for every tensor, shard by shard, in file order: ``load()`` reads the tensor
        (plain reads, not a memory map, so that only the tensor itself becomes resident, owned by the caller)."""
        for file, names in self.shards.items():
            path = self.dir / file
            header, start = _read_header(path)
            with open(path, "rb") as f:
                for name in names:
                    entry = header.get(name)
                    if entry is None:
                        raise ConfigError(f"{path} has no tensor {name!r} (the shard index says it does)")

                    def load(f=f, entry=entry, name=name, path=path, start=start) -> torch.Tensor:
                        dtype, shape, (lo, hi) = entry
                        buf = bytearray(hi - lo)
                        f.seek(start + lo)
                        if f.readinto(buf) != hi - lo:
                            raise ConfigError(f"{path} ends inside tensor {name!r} (a truncated file?)")
                        t = torch.frombuffer(buf, dtype=dtype) if buf else torch.empty(0, dtype=dtype)
                        return t.reshape(shape)

                    yield name, entry[2][1] - entry[2][0], load

    def tensors(self) -> Iterator[tuple[str, torch.Tensor]]:
        """``(name, tensor)`` for every tensor, shard by shard, each read when it is yielded."""
        for name, _, load in self.entries():
            yield name, load()

    def sizes(self) -> dict[str, int]:
        """Bytes of each tensor, read from the shards' headers (nothing is loaded)."""
        out: dict[str, int] = {}
        for file, names in self.shards.items():
            header, _ = _read_header(self.dir / file)
            for name in names:
                if name in header:
                    lo, hi = header[name][2]
                    out[name] = hi - lo
        return out


_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
           "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
           "BOOL": torch.bool}
_CODES = {v: k for k, v in _DTYPES.items()}


def _read_header(path: Path) -> tuple[dict[str, tuple[torch.dtype, list[int], tuple[int, int]]], int]:
    """A safetensors file's tensor table (dtype, shape, byte range) and where its data starts, checked."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if not 0 < n <= min(size - 8, 100 * 2**20):
                raise ConfigError(f"{path} is not a safetensors file (bad header length)")
            raw = json.loads(f.read(n))
    except (OSError, ValueError) as err:
        raise ConfigError(f"cannot read the safetensors file {path}: {err}") from err
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} is not a safetensors file (the header is not a table)")
    start, out = 8 + n, {}
    for name, e in raw.items():
        if name == "__metadata__":
            continue
        try:
            dtype = _DTYPES[e["dtype"]]
            shape = [int(d) for d in e["shape"]]
            lo, hi = (int(v) for v in e["data_offsets"])
        except (KeyError, TypeError, ValueError) as err:
            raise ConfigError(f"{path}: tensor {name!r} has an unsupported or malformed entry {e!r}") from err
        numel = 1
        for d in shape:
            numel *= d
        if min(shape, default=1) < 0 or hi - lo != numel * dtype.itemsize or lo < 0 or start + hi > size:
            raise ConfigError(f"{path}: tensor {name!r} has a byte range that does not fit its shape or the file")
        out[name] = (dtype, shape, (lo, hi))
    return out, start


def write_safetensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """Write ``tensors`` (CPU, contiguous) as a safetensors file, streaming each tensor's bytes from its own
    memory (no serialised copy of the whole shard)."""
    header: dict[str, Any] = {"__metadata__": dict(metadata or {})}
    offset = 0
    for name, t in tensors.items():
        if t.dtype not in _CODES:
            raise ConfigError(f"{name}: dtype {t.dtype} cannot be written to safetensors here")
        nbytes = t.numel() * t.element_size()
        header[name] = {"dtype": _CODES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(len(text).to_bytes(8, "little"))
        f.write(text)
        for t in tensors.values():
            if t.numel():
                flat = t.detach().contiguous().reshape(-1)
                f.write(flat.view(torch.uint8).numpy().data)


class StreamedImportance:
    """A magnitude criterion evaluated by reading the checkpoint one tensor at a time.

    Called on a group of a graph built on the meta model, it computes (once, for every group of that graph) the
    per-slice unit scores of ``importance`` from each tensor as it is read, then combines them with the
    criterion's own group reduction and normaliser: the same numbers as ``importance`` on the loaded model.
    """

    def __init__(self, importance: Any, reader: CheckpointReader, progress: bool = True) -> None:
        from ..importance.magnitude import GroupMagnitudeImportance

        if not isinstance(importance, GroupMagnitudeImportance):
            raise ConfigError("out-of-core pruning computes magnitude criteria only (GroupMagnitudeImportance and "
                              f"its subclasses), got {type(importance).__name__}")
        self.importance = importance
        self.reader = reader
        self.progress = progress
        self._graph: Any = None
        self._scores: dict[int, torch.Tensor | None] = {}

    def __call__(self, group: Any) -> torch.Tensor | None:
        if self._graph is not group._owner:
            self._compute(group._owner)
        return self._scores.get(group.atoms[0])

    def _compute(self, graph: Any) -> None:
        from ..importance.base import normalize, per_unit, reduce_group, unit_slices

        imp = self.importance
        names = _names_of(graph.model)
        items: dict[str, list[tuple[int, int, Any, torch.Tensor]]] = {}
        slots: dict[int, list[torch.Tensor | None]] = {}
        for g in graph.get_all_groups(root_module_types=None):
            a = g.atoms[0]
            listed = list(unit_slices(g, type(imp).__name__, include_bias=imp.bias, module_types=imp.target_types,
                                      allow_meta=True))
            slots[a] = [None] * len(listed)
            for k, (s, idx) in enumerate(listed):
                name = next((n for n in names.get(id(s.tensor), [s.fqn]) if n in self.reader.names), None)
                if name is None:
                    raise ConfigError(f"the checkpoint has no tensor for {s.fqn} (nor for a name tied to it)")
                items.setdefault(name, []).append((a, k, s, idx))
        for name, _, load in show_progress(self.reader.entries(), len(self.reader.names), "scoring", self.progress):
            if name not in items:
                continue  # a tensor no group scores (pinned, or not a target type) is not read at all
            t = load()
            for a, k, s, idx in items[name]:
                if tuple(t.shape) != tuple(s.tensor.shape):
                    raise ConfigError(f"{name} has shape {tuple(t.shape)} in the checkpoint and "
                                      f"{tuple(s.tensor.shape)} in the model built from the config")
                slots[a][k] = per_unit(imp._local(t, s.dim), idx, int(graph.dims.atoms.atom_size(a)))
        self._scores = {}
        for a, vecs in slots.items():
            got = [v for v in vecs if v is not None]
            self._scores[a] = normalize(reduce_group(got, imp.group_reduction), imp.normalizer) if got else None
        self._graph = graph


def _names_of(model: nn.Module) -> dict[int, list[str]]:
    """Every name of each parameter and buffer (tied tensors have several)."""
    out: dict[int, list[str]] = {}
    for mname, m in model.named_modules(remove_duplicate=False):
        prefix = f"{mname}." if mname else ""
        for store in (m._parameters, m._buffers):
            for n, t in store.items():
                if t is not None and prefix + n not in out.setdefault(id(t), []):
                    out[id(t)].append(prefix + n)
    return out


def _meta_model(directory: Path) -> tuple[nn.Module, Any]:
    try:
        import transformers
    except ImportError as err:
        raise ConfigError("out-of-core pruning of a Hugging Face checkpoint needs transformers") from err
    try:
        config = transformers.AutoConfig.from_pretrained(str(directory), local_files_only=True,
                                                         trust_remote_code=False)
    except Exception as err:  # whatever transformers raises for a bad config
        raise ConfigError(f"cannot read a Hugging Face config from {directory}: {err}") from err
    archs = getattr(config, "architectures", None) or []
    cls = getattr(transformers, archs[0], None) if archs and isinstance(archs[0], str) else None
    try:
        with torch.device("meta"):
            if cls is not None:
                model = cls(config)
            else:
                model = transformers.AutoModelForCausalLM.from_config(config, trust_remote_code=False)
    except Exception as err:
        raise ConfigError(f"cannot build a model from {directory}/config.json: {err}") from err
    return model.eval(), config


def prune_checkpoint(source: str | os.PathLike, out: str | os.PathLike, *, pruning_ratio: float = 0.5,
                     importance: Any = None, max_memory: int | str | None = None, example_inputs: Any = None,
                     progress: bool = True, **pruner_kwargs: Any) -> Any:
    """Prune the Hugging Face checkpoint in directory ``source`` into directory ``out`` without loading it whole.

    Args:
        source: a directory with ``config.json`` and ``model.safetensors`` or ``model.safetensors.index.json``.
        out: the directory to write (created; must not be ``source``): the pruned safetensors shards, their
            index, the updated ``config.json`` and every other file of ``source`` (tokenizer, generation config).
            Plain ``from_pretrained(out)`` loads it when the config can describe the result (uniform ratios).
        pruning_ratio: as in :class:`~anyprune.pruner.MetaPruner`; so are ``pruner_kwargs`` (``prune_num_heads``,
            ``head_pruning_ratio``, ``round_to``, ``global_pruning``, ``ignored_layers`` as module names or
            ``fnmatch`` patterns...).
        importance: a magnitude criterion (default: L2 :class:`~anyprune.importance.GroupMagnitudeImportance`).
        max_memory: the most memory the tensors may take at once (bytes or ``"2GB"``): output shards are sized
            to a quarter of it, and a single tensor larger than half of it is refused before any work.
        example_inputs: inputs to trace the meta model with (default: 16 token ids).
        progress: show progress bars over the tensors.

    Returns:
        The pruner's :class:`~anyprune.pruner.PruneResult`.
    """
    from ..importance.magnitude import GroupMagnitudeImportance
    from ..pruner.algorithms import MetaPruner

    src, dst = Path(source), Path(out)
    if not (src / "config.json").is_file():
        raise ConfigError(f"{src} is not a Hugging Face checkpoint directory (no config.json)")
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise ConfigError(f"the output {dst} exists and is not an empty directory")
    if dst.resolve() == src.resolve():
        raise ConfigError("the output directory must differ from the source")
    budget = parse_memory(max_memory) if max_memory is not None else None
    reader = CheckpointReader(src)
    sizes = reader.sizes()
    if budget is not None:
        big = max(sizes.items(), key=lambda kv: kv[1])
        if big[1] > budget // 2:
            raise ConfigError(f"the tensor {big[0]} takes {big[1]:,} bytes, more than half of max_memory "
                              f"({budget:,} bytes): raise max_memory")
    model, config = _meta_model(src)
    if example_inputs is None:
        vocab = int(getattr(config, "vocab_size", 1000) or 1000)
        example_inputs = {"input_ids": torch.randint(0, vocab, (1, 16)).to("meta")}
    ignored = pruner_kwargs.pop("ignored_layers", None)
    if ignored is not None:
        import fnmatch

        modules = dict(model.named_modules())
        resolved = []
        for item in ignored:
            if not isinstance(item, str):
                resolved.append(item)
                continue
            hits = [m for n, m in modules.items() if n and fnmatch.fnmatch(n, item)]
            if not hits:
                raise ConfigError(f"ignored_layers: {item!r} matches no module of the model")
            resolved.extend(hits)
        ignored = resolved
    scorer = StreamedImportance(importance or GroupMagnitudeImportance(p=2), reader, progress)
    pruner = MetaPruner(model, example_inputs, importance=scorer, pruning_ratio=pruning_ratio,
                        ignored_layers=ignored, **pruner_kwargs)
    log: list[tuple[str, int, torch.Tensor]] = []
    pruner.DG.removal_log = log
    try:
        result = pruner.step()
    finally:
        pruner.DG.removal_log = None
    from ..integrations.huggingface import config_matches

    if not config_matches(model):
        raise ConfigError(f"{type(model.config).__name__} cannot describe the pruned {type(model).__name__} (layers "
                          "pruned differently, or a size the config has no field for, e.g. a pruned head_dim with "
                          "rotary embeddings): a checkpoint written out of core would not reload. Prune uniformly "
                          "(no global_pruning) and keep head_dim (prune_head_dims=False); nothing was written")
    keeps = _kept_positions(model, log)
    expected = _shapes_of(model)
    shard_limit = budget // 4 if budget is not None else 2 * 10**9
    tmp = dst.with_name(f".{dst.name}.partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        weight_map: dict[str, str] = {}
        buffer: dict[str, torch.Tensor] = {}
        filled = 0
        files: list[tuple[str, list[str]]] = []

        def flush() -> None:
            nonlocal filled
            if not buffer:
                return
            name = f"part-{len(files) + 1:05d}.safetensors"
            write_safetensors(tmp / name, buffer, metadata={"format": "pt"})
            files.append((name, list(buffer)))
            buffer.clear()
            filled = 0

        for name, size, load in show_progress(reader.entries(), len(reader.names), "writing", progress):
            if buffer and filled + size > shard_limit:  # flush before reading: shard + tensor stay within budget
                flush()
            t = load()
            for dim, keep in keeps.get(name, {}).items():
                t = t.index_select(dim, keep)
            want = expected.get(name)
            if want is not None and tuple(t.shape) != want:
                raise ConfigError(f"{name}: the pruned tensor has shape {tuple(t.shape)}, the pruned model expects "
                                  f"{want}")
            nbytes = t.numel() * t.element_size()
            buffer[name] = t.contiguous()
            filled += nbytes
        flush()
        total = len(files)
        for k, (name, names) in enumerate(files, start=1):
            final = f"model-{k:05d}-of-{total:05d}.safetensors" if total > 1 else "model.safetensors"
            os.replace(tmp / name, tmp / final)
            weight_map.update((n, final) for n in names)
        if total > 1:
            size = sum((tmp / f).stat().st_size for f in set(weight_map.values()))
            (tmp / "model.safetensors.index.json").write_text(
                json.dumps({"metadata": {"total_size": size}, "weight_map": weight_map}, indent=2, sort_keys=True))
        config_out: Any = model.config
        config_out.save_pretrained(str(tmp))
        skip = {"config.json", "model.safetensors", "model.safetensors.index.json", *reader.shards}
        for f in src.iterdir():
            if f.is_file() and f.name not in skip and not f.name.endswith((".safetensors", ".bin")):
                shutil.copy2(f, tmp / f.name)
        dst.mkdir(parents=True, exist_ok=True)
        for f in tmp.iterdir():
            os.replace(f, dst / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return result


def _shapes_of(model: nn.Module) -> dict[str, tuple[int, ...]]:
    """The shape of every parameter and buffer, under each of its names."""
    out: dict[str, tuple[int, ...]] = {}
    for mname, m in model.named_modules(remove_duplicate=False):
        prefix = f"{mname}." if mname else ""
        for store in (m._parameters, m._buffers):
            out.update((prefix + n, tuple(t.shape)) for n, t in store.items() if t is not None)
    return out


def _kept_positions(model: nn.Module, log: list[tuple[str, int, torch.Tensor]]) -> dict[str, dict[int, torch.Tensor]]:
    """Per tensor name (every tied name too) and dim, the original positions kept, composed over the masks the
    step removed in order (a later mask indexes what an earlier one kept)."""
    names = _names_of(model)
    by_name = {n: tid for tid, ns in names.items() for n in ns}
    kept: dict[int, dict[int, torch.Tensor]] = {}
    for fqn, dim, mask in log:
        tid = by_name.get(fqn)
        if tid is None:
            continue
        dims = kept.setdefault(tid, {})
        current = dims.get(dim, torch.arange(mask.numel()))
        if current.numel() != mask.numel():
            raise ConfigError(f"internal: {fqn} dim {dim} has {current.numel()} positions but a mask of "
                              f"{mask.numel()}")
        dims[dim] = current[~mask]
    return {n: kept[tid] for tid, ns in names.items() if tid in kept for n in ns}
