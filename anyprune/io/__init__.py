"""Saving and loading pruned models without pickle (safetensors + a JSON structure record)."""

from __future__ import annotations

import os
from typing import Any

from torch import nn

from ..errors import ConfigError
from .saving import FORMAT, apply_structure, load_pruned, load_state_dict, save_pruned, state_dict, structure_of

save = save_pruned


def load(model_or_path: Any, path: str | os.PathLike | None = None, strict: bool = True) -> nn.Module:
    """Load a model saved by :func:`save_pruned`.

    ``tp.load(model, path)`` re-shapes the freshly built original ``model`` (see :func:`load_pruned`).
    ``tp.load(path)``, the seed's one-argument form, works for a directory saved with a ``source``
    (``save_pruned(model, path, source="torchvision:resnet50")``, as the command line does): the original is
    built from it (random weights) and then loaded. Nothing is unpickled either way.
    """
    if isinstance(model_or_path, nn.Module):
        if path is None:
            raise ConfigError("tp.load(model, path): pass the directory written by save_pruned as path")
        return load_pruned(model_or_path, path, strict)
    if path is not None or not isinstance(model_or_path, (str, os.PathLike)):
        raise ConfigError("use tp.load(model, path) with the freshly built original model, or tp.load(path) for a "
                          f"directory saved with a source; got {type(model_or_path).__name__}")
    from ..cli.models import load_model

    return load_model(os.fspath(model_or_path)).model

__all__ = ["FORMAT", "apply_structure", "load", "load_pruned", "load_state_dict", "save", "save_pruned",
           "state_dict", "structure_of"]
