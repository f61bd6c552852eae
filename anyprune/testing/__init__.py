"""Test helpers shipped with the package: one toy model per hard case and the torchvision zoo registry."""

from __future__ import annotations

from .models import TOY_MODELS

__all__ = ["TOY_MODELS"]
