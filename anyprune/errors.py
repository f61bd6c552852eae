"""Exceptions and warnings raised by anyprune.

Every error subclasses the builtin it replaces, so ``except ValueError`` code
written against other libraries keeps working.
"""

from __future__ import annotations

__all__ = [
    "AnyPruneError",
    "ConfigError",
    "TraceError",
    "PruningError",
    "VerificationError",
    "AnyPruneWarning",
    "UnsupportedOpWarning",
    "PinnedDimWarning",
]


class AnyPruneError(Exception):
    """Base class of every error anyprune raises."""


class ConfigError(AnyPruneError, ValueError):
    """An argument has a wrong type or value."""


class TraceError(AnyPruneError, RuntimeError):
    """The model could not be run on the example inputs."""

    failed_at: str | None = None  # the op (and source line) that raised, when known


class PruningError(AnyPruneError, ValueError):
    """A pruning request cannot be carried out (pinned dims, bad indices, zero width)."""


class VerificationError(AnyPruneError, RuntimeError):
    """A pruned model no longer runs, or no longer matches its masked original."""


class AnyPruneWarning(UserWarning):
    """Base class of anyprune's warnings."""


class UnsupportedOpWarning(AnyPruneWarning):
    """Ops without a dimension rule were met; their dims were pinned."""


class PinnedDimWarning(AnyPruneWarning):
    """Dims were pinned for a reason the user may want to act on."""
