"""Test helpers shipped with the package: toy models per hard case, the zoo registry, the oracle."""

from __future__ import annotations

from .models import TOY_MODELS

__all__ = ["TOY_MODELS"]
