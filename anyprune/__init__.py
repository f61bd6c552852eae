"""anyprune: structural pruning for any PyTorch model.

Trace once, find every coupled dimension, remove whole channels, heads and
hidden dims, and never hand back a broken model. ``import anyprune as tp`` runs
the Torch-Pruning (DepGraph) API.
"""

from __future__ import annotations

from . import (
    calibration,
    dims,
    errors,
    function,
    functional,
    importance,
    integrations,
    io,
    pruner,
    reconstruction,
    report,
    trace,
    utils,
)
from .apply.verify import VerifyResult, verify_forward, verify_group
from .depgraph import DependencyGraph
from .dims.rules import register_dim_rule
from .errors import AnyPruneError, ConfigError, PruningError, TraceError, VerificationError
from .functional import (
    prune_batchnorm_in_channels,
    prune_batchnorm_out_channels,
    prune_conv_in_channels,
    prune_conv_out_channels,
    prune_depthwise_conv_in_channels,
    prune_depthwise_conv_out_channels,
    prune_embedding_in_channels,
    prune_embedding_out_channels,
    prune_groupnorm_in_channels,
    prune_groupnorm_out_channels,
    prune_instancenorm_in_channels,
    prune_instancenorm_out_channels,
    prune_layernorm_in_channels,
    prune_layernorm_out_channels,
    prune_linear_in_channels,
    prune_linear_out_channels,
    prune_multihead_attention_in_channels,
    prune_multihead_attention_out_channels,
    prune_parameter_in_channels,
    prune_parameter_out_channels,
    prune_prelu_in_channels,
    prune_prelu_out_channels,
)
from .integrations import load_builtin as _load_builtin
from .integrations import register_module_updater, unregister_module_updater
from .io import load, load_pruned, load_state_dict, save, save_pruned, state_dict
from .pruner.config import PruneConfig, prune_
from .utils import count_ops_and_params

__version__ = "0.1.0"

__all__ = [
    "AnyPruneError",
    "calibration",
    "ConfigError",
    "DependencyGraph",
    "PruneConfig",
    "PruningError",
    "TraceError",
    "VerificationError",
    "VerifyResult",
    "count_ops_and_params",
    "dims",
    "errors",
    "function",
    "functional",
    "importance",
    "integrations",
    "io",
    "load",
    "load_pruned",
    "load_state_dict",
    "prune_",
    "prune_batchnorm_in_channels",
    "prune_batchnorm_out_channels",
    "prune_conv_in_channels",
    "prune_conv_out_channels",
    "prune_depthwise_conv_in_channels",
    "prune_depthwise_conv_out_channels",
    "prune_embedding_in_channels",
    "prune_embedding_out_channels",
    "prune_groupnorm_in_channels",
    "prune_groupnorm_out_channels",
    "prune_instancenorm_in_channels",
    "prune_instancenorm_out_channels",
    "prune_layernorm_in_channels",
    "prune_layernorm_out_channels",
    "prune_linear_in_channels",
    "prune_linear_out_channels",
    "prune_multihead_attention_in_channels",
    "prune_multihead_attention_out_channels",
    "prune_parameter_in_channels",
    "prune_parameter_out_channels",
    "prune_prelu_in_channels",
    "prune_prelu_out_channels",
    "pruner",
    "reconstruction",
    "register_dim_rule",
    "register_module_updater",
    "report",
    "save",
    "save_pruned",
    "state_dict",
    "trace",
    "unregister_module_updater",
    "utils",
    "verify_forward",
    "verify_group",
]

# Tables of the model libraries imported before anyprune (e.g. the pruned rotary type of ``transformers``).
_load_builtin()
