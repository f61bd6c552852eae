"""Resolve a MODEL argument of the command line to a model and example inputs (nothing is downloaded).

* ``torchvision:NAME`` — ``torchvision.models.get_model(NAME)`` with random weights;
* ``timm:NAME`` — ``timm.create_model(NAME, pretrained=False)``;
* ``hf:PATH`` — a local Hugging Face directory (weights loaded when it has them, else built from its
  ``config.json``) or a ``config.json`` file;
* a directory written by ``anyprune prune --out`` (or :func:`anyprune.save_pruned` with a ``source``): the
  original is rebuilt from the recorded source and re-shaped to the saved structure.

Example inputs: images of the model's input size (``--input-size``), token ids for language models.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError

__all__ = ["Loaded", "load_model"]


class Loaded:
    """A model ready for the command line: the module, example inputs and how to read its output."""

    def __init__(self, model: nn.Module, inputs: Any, source: str, output_transform=None) -> None:
        self.model = model
        self.inputs = inputs
        self.source = source
        self.output_transform = output_transform


def _image(size: int) -> torch.Tensor:
    return torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))


def _torchvision(name: str, size: int | None) -> Loaded:
    import torchvision

    try:
        model = torchvision.models.get_model(name, weights=None)
    except (ValueError, KeyError) as err:
        raise ConfigError(f"unknown torchvision model {name!r} (see torchvision.models.list_models())") from err
    return Loaded(model.eval(), _image(size or (299 if "inception" in name else 224)), f"torchvision:{name}")


def _timm(name: str, size: int | None) -> Loaded:
    try:
        import timm
    except ImportError as err:
        raise ConfigError("timm is not installed: pip install timm") from err
    try:
        model = timm.create_model(name, pretrained=False)
    except RuntimeError as err:
        raise ConfigError(f"unknown timm model {name!r} (see timm.list_models())") from err
    cfg: Any = getattr(model, "pretrained_cfg", None) or {}
    default = int(cfg.get("input_size", (3, 224, 224))[-1])
    return Loaded(model.eval(), _image(size or default), f"timm:{name}")


def _hf(path: str, size: int | None) -> Loaded:
    try:
        import transformers
    except ImportError as err:
        raise ConfigError("transformers is not installed: pip install transformers") from err
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"no such Hugging Face directory or config file: {path}")
    cfg_dir = p if p.is_dir() else p.parent
    try:
        if p.is_dir():
            config = transformers.AutoConfig.from_pretrained(str(p), local_files_only=True)
        else:
            config = transformers.AutoConfig.for_model(**json.loads(p.read_text()))
    except Exception as err:
        raise ConfigError(f"cannot read a Hugging Face config from {path}: {err}") from err
    has_weights = p.is_dir() and any((cfg_dir / f).exists() for f in ("model.safetensors", "pytorch_model.bin",
                                                                      "model.safetensors.index.json"))
    archs = getattr(config, "architectures", None) or []
    cls = getattr(transformers, archs[0], None) if archs else None
    if cls is None:
        cls = transformers.AutoModelForCausalLM if getattr(config, "vocab_size", None) and \
            not getattr(config, "image_size", None) else transformers.AutoModel
    try:
        if has_weights:
            model = cls.from_pretrained(str(p), local_files_only=True)
        else:
            model = cls.from_config(config) if hasattr(cls, "from_config") else cls(config)
    except Exception as err:
        raise ConfigError(f"cannot build a model from {path}: {err}") from err
    model.eval()
    if getattr(config, "image_size", None):
        s = size or int(config.image_size if isinstance(config.image_size, int) else config.image_size[0])
        inputs: Any = {"pixel_values": _image(s)}
    else:
        vocab = int(getattr(config, "vocab_size", 1000))
        ids = torch.randint(0, vocab, (1, 16), generator=torch.Generator().manual_seed(0))
        inputs = {"input_ids": ids}
    return Loaded(model, inputs, f"hf:{p.resolve()}", _main_output)


def _main_output(out: Any) -> Any:
    for name in ("logits", "last_hidden_state"):
        if hasattr(out, name):
            return getattr(out, name)
    return out


def load_model(spec: str, input_size: int | None = None) -> Loaded:
    """A :class:`Loaded` for ``spec`` (see the module docstring); :class:`ConfigError` on bad input."""
    if not isinstance(spec, str) or not spec:
        raise ConfigError("MODEL must be torchvision:NAME, timm:NAME, hf:PATH or a directory saved by anyprune")
    kind, _, rest = spec.partition(":")
    torch.manual_seed(0)  # random weights, but the same ones on every run
    if kind == "torchvision" and rest:
        return _torchvision(rest, input_size)
    if kind == "timm" and rest:
        return _timm(rest, input_size)
    if kind == "hf" and rest:
        return _hf(rest, input_size)
    p = Path(spec)
    if p.is_dir() and (p / "anyprune.json").exists():
        from ..io.saving import load_pruned

        try:
            record = json.loads((p / "anyprune.json").read_text())
        except ValueError as err:
            raise ConfigError(f"unreadable anyprune file {p / 'anyprune.json'}: {err}") from err
        source = record.get("source") if isinstance(record, dict) else None
        if not isinstance(source, str) or source.partition(":")[0] not in ("torchvision", "timm", "hf"):
            raise ConfigError(f"{spec} does not say which original model it was pruned from (no 'source')")
        loaded = load_model(source, input_size)
        load_pruned(loaded.model, p)
        loaded.source = source
        return loaded
    raise ConfigError(f"unknown model {spec!r}: use torchvision:NAME, timm:NAME, hf:PATH or a directory saved by "
                      "anyprune")
