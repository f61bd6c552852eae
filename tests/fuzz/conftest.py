"""Hypothesis profiles of the fuzz tests and the end-of-run report of what they checked.

``ANYPRUNE_FUZZ=fast`` (the default, used by ``make test``) runs a fixed, derandomized
set of examples; ``ANYPRUNE_FUZZ=long`` (``make fuzz``) explores freely and
saves failing examples in ``.hypothesis/``. ``ANYPRUNE_FUZZ_EXAMPLES=N``
overrides the number of networks of either profile.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings

_SLOW = [HealthCheck.too_slow, HealthCheck.data_too_large]
settings.register_profile(
    "fast", max_examples=250, derandomize=True, database=None, deadline=None, print_blob=True,
    suppress_health_check=_SLOW,
)
settings.register_profile("long", max_examples=4000, deadline=None, print_blob=True, suppress_health_check=_SLOW)

PROFILE = os.environ.get("ANYPRUNE_FUZZ", "fast")
if PROFILE not in ("fast", "long"):
    raise ValueError(f"ANYPRUNE_FUZZ must be 'fast' or 'long', got {PROFILE!r}")
_examples = os.environ.get("ANYPRUNE_FUZZ_EXAMPLES")
FUZZ_SETTINGS = settings(settings.get_profile(PROFILE),
                         **({"max_examples": int(_examples)} if _examples else {}))

