"""Knowledge per model family: which attributes a module's forward reads as sizes.

One table per integration (:mod:`.torchvision`, :mod:`.timm`,
:mod:`.huggingface`), each registering updaters with
:func:`register_module_updater` (the public hook users call for their own
module types). A family's table is loaded when its library has been imported,
so anyprune never imports ``transformers`` or ``timm`` itself.
"""

from __future__ import annotations

import importlib
import sys

from .registry import (
    UPDATERS,
    ModuleUpdater,
    Sizes,
    managed_types,
    register_module_updater,
    unregister_module_updater,
    updater_for,
)

__all__ = ["ModuleUpdater", "Sizes", "UPDATERS", "load_builtin", "managed_types", "register_module_updater",
           "unregister_module_updater", "updater_for"]

_FAMILIES = {"torchvision": ".torchvision", "timm": ".timm", "transformers": ".huggingface"}
_loaded: set[str] = set()


def load_builtin() -> None:
    """Register the tables of the families whose library is imported (once each; cheap to call)."""
    for lib, mod in _FAMILIES.items():
        if lib not in _loaded and lib in sys.modules:
            _loaded.add(lib)
            importlib.import_module(mod, __name__).register()
    if "nn" not in _loaded:
        _loaded.add("nn")
        importlib.import_module(".torch_nn", __name__).register()
