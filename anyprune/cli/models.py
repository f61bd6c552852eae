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
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError

__all__ = ["Loaded", "load_model", "calibration_data"]


class Loaded:
    """A model ready for the command line: the module, example inputs and how to read its output."""

    def __init__(self, model: nn.Module, inputs: Any, source: str, output_transform=None,
                 directory: Path | None = None) -> None:
        self.model = model
        self.inputs = inputs
        self.source = source
        self.output_transform = output_transform
        self.directory = directory  # a Hugging Face model directory (for its tokenizer)


def _image(size: int) -> torch.Tensor:
    return torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))


def _torchvision(name: str, size: int | None) -> Loaded:
    import torchvision

    try:
        model = torchvision.models.get_model(name, weights=None)
    except (ValueError, KeyError) as err:
        raise ConfigError(f"unknown torchvision model {name!r} (see torchvision.models.list_models())") from err
    return Loaded(model.eval(), _image(size or (299 if "inception" in name else 224)), f"torchvision:{name}")


def _offline() -> None:
    """Never reach the network: the libraries the command line calls run offline."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ[var] = "1"


def _timm(name: str, size: int | None) -> Loaded:
    _offline()
    if ":" in name or "/" in name or "\\" in name or name.startswith("."):
        raise ConfigError(f"timm model {name!r}: give a model name (timm.list_models()); hub ids and paths are not "
                          "accepted (nothing is downloaded)")
    try:
        import timm
    except ImportError as err:
        raise ConfigError("timm is not installed: pip install timm") from err
    try:
        model = timm.create_model(name, pretrained=False)
    except (RuntimeError, ValueError) as err:
        raise ConfigError(f"unknown timm model {name!r} (see timm.list_models())") from err
    cfg: Any = getattr(model, "pretrained_cfg", None) or {}
    default = int(cfg.get("input_size", (3, 224, 224))[-1])
    return Loaded(model.eval(), _image(size or default), f"timm:{name}")


def _hf(path: str, size: int | None) -> Loaded:
    _offline()
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
            config = transformers.AutoConfig.from_pretrained(str(p), local_files_only=True, trust_remote_code=False)
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
            model = cls.from_pretrained(str(p), local_files_only=True, trust_remote_code=False)
        else:
            if cls.__name__.startswith("Auto"):
                model = cls.from_config(config, trust_remote_code=False)
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
    return Loaded(model, inputs, f"hf:{p.resolve()}", _main_output, p if p.is_dir() else None)


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
        from ..io.saving import _read_record, load_pruned

        record = _read_record(p / "anyprune.json")
        source = record.get("source") if isinstance(record, dict) else None
        if not isinstance(source, str) or source.partition(":")[0] not in ("torchvision", "timm", "hf"):
            raise ConfigError(f"{spec} does not say which original model it was pruned from (no 'source')")
        loaded = load_model(source, input_size)
        load_pruned(loaded.model, p)
        loaded.source = source
        return loaded
    raise ConfigError(f"unknown model {spec!r}: use torchvision:NAME, timm:NAME, hf:PATH or a directory saved by "
                      "anyprune")


_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp")
_IMAGENET_MEAN, _IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def _image_folder(folder: Path, size: int, limit: int) -> list[torch.Tensor]:
    from PIL import Image, UnidentifiedImageError
    from torchvision.transforms.v2 import functional as TF

    files = sorted(f for f in folder.rglob("*") if f.is_file() and f.suffix.lower() in _IMAGE_SUFFIXES)[:limit]
    if not files:
        raise ConfigError(f"--calibration {folder}: no images ({', '.join(_IMAGE_SUFFIXES)}) in this folder")
    images = []
    for f in files:
        try:
            with Image.open(f) as im:
                img = TF.pil_to_tensor(im.convert("RGB"))
        except (OSError, UnidentifiedImageError) as err:
            raise ConfigError(f"--calibration: cannot read image {f}: {err}") from err
        img = TF.center_crop(TF.resize(img, [size * 256 // 224], antialias=True), [size, size])
        images.append(TF.normalize(img.float() / 255.0, _IMAGENET_MEAN, _IMAGENET_STD))
    return list(torch.stack(images).split(16))


def _text_file(loaded: Loaded, path: Path, seq_len: int, limit: int) -> torch.Tensor:
    if loaded.directory is None:
        raise ConfigError("--calibration with a text file needs a tokenizer: give an hf:DIRECTORY model that holds "
                          "its tokenizer files, or an image folder for a vision model")
    import transformers

    try:
        tok = transformers.AutoTokenizer.from_pretrained(str(loaded.directory), local_files_only=True)
    except Exception as err:
        raise ConfigError(f"--calibration: no tokenizer in {loaded.directory} ({err}); give a model directory with "
                          "tokenizer files") from err
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as err:
        raise ConfigError(f"--calibration: cannot read {path}: {err}") from err
    ids = torch.as_tensor(tok(text)["input_ids"], dtype=torch.long).flatten()
    n = min(limit, ids.numel() // seq_len)
    if n < 1:
        raise ConfigError(f"--calibration {path}: {ids.numel()} tokens, fewer than one sequence of {seq_len}; give "
                          "more text or a smaller --calibration-seq-len")
    return ids[: n * seq_len].view(n, seq_len)


def calibration_data(loaded: Loaded, path: str, size: int | None, seq_len: int = 256, limit: int = 32) -> Any:
    """Calibration batches for the command line: an image folder (vision models: resized, centre-cropped,
    ImageNet-normalised) or a text file (language models: tokenised with the model directory's tokenizer into
    ``limit`` sequences of ``seq_len`` tokens)."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"--calibration {path}: no such file or folder")
    if p.is_dir():
        x = loaded.inputs if isinstance(loaded.inputs, torch.Tensor) else loaded.inputs.get("pixel_values") \
            if isinstance(loaded.inputs, dict) else None
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            raise ConfigError("--calibration with an image folder needs a vision model (image inputs)")
        images = _image_folder(p, size or int(x.shape[-1]), limit * 16)
        if isinstance(loaded.inputs, dict):
            return [{"pixel_values": b} for b in images]
        return images
    if not p.is_file():
        raise ConfigError(f"--calibration {path}: not a regular file or folder")
    return _text_file(loaded, p, seq_len, limit)
