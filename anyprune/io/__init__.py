"""Saving and loading pruned models without pickle (safetensors + a JSON structure record)."""

from __future__ import annotations

from .saving import FORMAT, apply_structure, load_pruned, load_state_dict, save_pruned, state_dict, structure_of

save = save_pruned
load = load_pruned

__all__ = ["FORMAT", "apply_structure", "load", "load_pruned", "load_state_dict", "save", "save_pruned",
           "state_dict", "structure_of"]
