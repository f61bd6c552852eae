"""The public surface is deliberate, and `import anyprune` is lean."""

from __future__ import annotations

import subprocess
import sys

import anyprune

SEED_FUNCTIONS = [
    f"prune_{layer}_{io}_channels"
    for layer in ("conv", "depthwise_conv", "batchnorm", "linear", "prelu", "layernorm", "embedding", "parameter",
                  "multihead_attention", "groupnorm", "instancenorm")
    for io in ("out", "in")
]


def test_all_is_pinned():
    assert len(SEED_FUNCTIONS) == 22
    public = ["DependencyGraph", "pruner", "utils", "register_dim_rule", "register_module_updater", "verify_group",
              "calibration", "reconstruction", "function"]
    for name in [*SEED_FUNCTIONS, *public]:
        assert name in anyprune.__all__, name
        assert hasattr(anyprune, name), name
    assert sorted(anyprune.__all__) == sorted(set(anyprune.__all__))
    assert len(anyprune.__all__) == 56


def test_import_is_lean():
    code = "import sys, anyprune; print(sorted(m for m in ('torchvision', 'transformers', 'timm') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_customized_pruner_base_is_exposed():
    assert hasattr(anyprune.pruner, "BasePruningFunc")


def test_seed_names_of_pruners_importances_and_utils():
    for name in ("MetaPruner", "BasePruner", "MagnitudePruner", "BNScalePruner", "GroupNormPruner",
                 "GrowingRegPruner", "PruneConfig", "prune_"):
        assert name in anyprune.pruner.__all__, name
        assert hasattr(anyprune.pruner, name), name
    assert anyprune.pruner.BasePruner is anyprune.pruner.MetaPruner
    for name in ("GroupMagnitudeImportance", "GroupNormImportance", "MagnitudeImportance", "BNScaleImportance",
                 "LAMPImportance", "FPGMImportance", "RandomImportance", "GroupTaylorImportance", "TaylorImportance",
                 "GroupHessianImportance", "HessianImportance", "ActivationImportance"):
        assert name in anyprune.importance.__all__, name
        assert hasattr(anyprune.importance, name), name
    assert anyprune.importance.GroupNormImportance is anyprune.importance.GroupMagnitudeImportance
    assert anyprune.importance.TaylorImportance is anyprune.importance.GroupTaylorImportance
    for name in ("count_ops_and_params", "measure_latency", "benchmark"):
        assert hasattr(anyprune.utils, name), name
