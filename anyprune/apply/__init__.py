"""Apply: cut tensors and update attributes, all or nothing; verify the result."""

from __future__ import annotations

from .slicing import apply_removal, validate_indices
from .transaction import Transaction, slice_tensor

__all__ = ["Transaction", "apply_removal", "slice_tensor", "validate_indices"]
