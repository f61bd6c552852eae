"""Dimension rules, one function per op.

Every rule guarantees:

* sizes agree: each output layout has the size of the output dim it describes;
* couplings are exact or conservative: two dims are unified only when pruning
  a position of one must remove the same position of the other; whatever a
  rule cannot express is pinned;
* an op with no rule pins every dim it touches and is named in one aggregated
  :class:`~anyprune.errors.UnsupportedOpWarning`.

Ops that the aten library tags *pointwise* get the broadcasting rule by name,
so most elementwise functions need no registration.
"""

from __future__ import annotations

from . import (  # noqa: F401 - registration
    attention,
    cat_split,
    conv,
    elementwise,
    linear,
    norm,
    pool,
    recurrent,
    reduce,
    shape,
    vision,
)
from .registry import QUIET_PIN, RULES, PinDims, get_rule, register_dim_rule

__all__ = ["register_dim_rule", "get_rule", "RULES", "QUIET_PIN", "PinDims", "vision"]
