"""Hugging Face ``transformers``: attention/MLP attributes and the model ``config``.

Attention modules of ``transformers`` view their projections as ``(…, -1,
head_dim)`` and read ``head_dim``, ``num_key_value_groups``, ``split_size`` (and
a few others) from attributes. One updater covers them by attribute name:
``head_dim`` is the innermost factor of the attention's output projection input
(``o_proj``/``out_proj``/``c_proj``/``o``) or, where the module has none (BERT),
of its query projection output; head counts follow from the projections' sizes.
The model-level updater keeps ``config`` (``num_attention_heads``,
``num_key_value_heads``, ``head_dim``, ``intermediate_size``, ``hidden_size``)
in sync while all layers stay uniform; when they differ it writes the common
fields it can and records the per-layer values in ``config.pruned_layers``.

Rotary embeddings: pruning ``head_dim`` keeps the rotary frequencies of the
kept pairs, which no standard ``rope_type`` can recompute from ``head_dim``.
The config then gets ``rope_parameters = {"rope_type": "anyprune_pruned",
"inv_freq": [...], "attention_factor": ..., ...}`` (the exact frequencies), and
this module registers that type with ``transformers`` so that plain
``from_pretrained`` rebuilds the same model. A process that has not imported
anyprune after ``transformers`` (or called
:func:`anyprune.integrations.load_builtin`) fails loudly on that config
(``KeyError: 'anyprune_pruned'``) instead of loading other frequencies.
Frequencies that change with the sequence length (``dynamic``, ``longrope``)
cannot be frozen: pruning their ``head_dim`` is refused.
"""

from __future__ import annotations

import copy
import math
import warnings
from typing import Any

import torch
from torch import nn

from ..errors import AnyPruneWarning, PruningError
from .registry import ROOT_TYPES, Sizes, register_module_updater

# (module path, class names) of attention modules; extend with register_module_updater(<class>, hf_attention)
ATTENTION: dict[str, tuple[str, ...]] = {
    "transformers.models.llama.modeling_llama": ("LlamaAttention",),
    "transformers.models.qwen2.modeling_qwen2": ("Qwen2Attention",),
    "transformers.models.qwen3.modeling_qwen3": ("Qwen3Attention",),
    "transformers.models.mistral.modeling_mistral": ("MistralAttention",),
    "transformers.models.mixtral.modeling_mixtral": ("MixtralAttention",),
    "transformers.models.gemma.modeling_gemma": ("GemmaAttention",),
    "transformers.models.phi3.modeling_phi3": ("Phi3Attention",),
    "transformers.models.bert.modeling_bert": ("BertSelfAttention", "BertCrossAttention"),
    "transformers.models.roberta.modeling_roberta": ("RobertaSelfAttention", "RobertaCrossAttention"),
    "transformers.models.vit.modeling_vit": ("ViTSelfAttention", "ViTAttention"),
    "transformers.models.gpt2.modeling_gpt2": ("GPT2Attention",),
    "transformers.models.t5.modeling_t5": ("T5Attention",),
    "transformers.models.clip.modeling_clip": ("CLIPAttention",),
    "transformers.models.swin.modeling_swin": ("SwinSelfAttention", "SwinAttention"),
}

# attention modules whose forward reads head counts from ``self.config``
CONFIG_READERS = {"Phi3Attention"}

_OUT = ("o_proj", "out_proj", "c_proj", "o", "dense")
_Q = ("q_proj", "query", "q", "c_attn", "qkv_proj")
_K = ("k_proj", "key", "k")
_HEAD_DIM = ("head_dim", "attention_head_size", "key_value_proj_dim")
_HEADS = ("num_heads", "num_attention_heads", "n_heads")


def _proj(module: nn.Module, names: tuple[str, ...]) -> tuple[str, nn.Module] | None:
    for n in names:
        m = getattr(module, n, None)
        if isinstance(m, nn.Module) and isinstance(getattr(m, "weight", None), nn.Parameter):
            return n, m
    return None


def _out_dim(m: nn.Module) -> int:
    """Weight dim holding a projection's outputs (HF ``Conv1D`` stores ``[in, out]``)."""
    return 1 if type(m).__name__ == "Conv1D" else 0


def attention_sizes(module: nn.Module, sizes: Sizes) -> tuple[int, int, int | None]:
    """``(num_heads, head_dim, num_key_value_heads or None)`` of an attention module after the step."""
    out = _proj(module, _OUT)
    if out is not None and out[0] != "dense":
        name, m = out
        w = f"{name}.weight"
        in_dim = 1 - _out_dim(m)
        factors = sizes.factors(w, in_dim)
        total = sizes.size(w, in_dim)
    else:
        q = _proj(module, _Q)
        if q is None:
            raise AttributeError(f"{type(module).__name__}: no output or query projection found")
        name, m = q
        factors = sizes.factors(f"{name}.weight", _out_dim(m))
        total = sizes.size(f"{name}.weight", _out_dim(m))
    head_dim = factors[-1]
    if head_dim <= 0 or total % head_dim:
        raise ValueError(f"{type(module).__name__}: projection size {total} is not a multiple of {head_dim}")
    heads = total // head_dim
    kv = None
    k = _proj(module, _K)
    if k is not None:
        kv = sizes.size(f"{k[0]}.weight", _out_dim(k[1])) // head_dim
    elif hasattr(module, "qkv_proj"):
        qkv = sizes.size("qkv_proj.weight", 0)
        kv = (qkv - heads * head_dim) // (2 * head_dim)
    return heads, head_dim, kv


def hf_attention(module: nn.Module, sizes: Sizes) -> dict[str, Any]:
    """New size attributes of a Hugging Face attention module."""
    heads, head_dim, kv = attention_sizes(module, sizes)
    new: dict[str, Any] = {}
    for a in _HEAD_DIM:
        if hasattr(module, a):
            new[a] = head_dim
    for a in _HEADS:
        if isinstance(getattr(module, a, None), int):
            new[a] = heads
    if kv is not None:
        if hasattr(module, "num_key_value_heads"):
            new["num_key_value_heads"] = kv
        if hasattr(module, "num_key_value_groups"):
            new["num_key_value_groups"] = heads // kv
    if hasattr(module, "all_head_size"):
        new["all_head_size"] = heads * head_dim
    if hasattr(module, "inner_dim"):
        new["inner_dim"] = heads * head_dim
    if hasattr(module, "split_size"):
        new["split_size"] = heads * head_dim
    if isinstance(getattr(module, "embed_dim", None), int):
        out = _proj(module, _OUT)
        if out is not None:
            new["embed_dim"] = sizes.size(f"{out[0]}.weight", _out_dim(out[1]))
    return new


def hf_mlp(module: nn.Module, sizes: Sizes) -> dict[str, Any]:
    new: dict[str, Any] = {}
    for name in ("gate_proj", "up_proj", "fc1", "c_fc"):
        m = getattr(module, name, None)
        if isinstance(m, nn.Module) and hasattr(module, "intermediate_size"):
            new["intermediate_size"] = sizes.size(f"{name}.weight", _out_dim(m))
            break
    if hasattr(module, "hidden_size"):
        for name in ("down_proj", "fc2", "c_proj"):
            m = getattr(module, name, None)
            if isinstance(m, nn.Module):
                new["hidden_size"] = sizes.size(f"{name}.weight", _out_dim(m))
                break
    return new


# ------------------------------------------------------------------ config
_MLP_IN = {"gate_proj": 1, "up_proj": 1, "fc1": 1, "c_fc": 1, "wi": 1, "wi_0": 1, "gate_up_proj": 2}
_INTERMEDIATE_PARENTS = ("intermediate",)


def _uniform(values: list) -> Any:
    return values[0] if values and all(v == values[0] for v in values) else None


def layer_structure(model: nn.Module) -> dict[str, dict[str, int]]:
    """Per-module sizes a config describes: attention heads, head_dim, KV heads; MLP widths."""
    out: dict[str, dict[str, int]] = {}
    for name, m in model.named_modules():
        cls = type(m).__name__
        if any(cls in names for names in ATTENTION.values()) and _proj(m, _Q + _OUT) is not None:
            try:
                heads, hd, kv = _current_attention(m)
            except (AttributeError, ValueError):
                continue
            rec = {"num_attention_heads": heads, "head_dim": hd}
            if kv is not None:
                rec["num_key_value_heads"] = kv
            out[name] = rec
        leaf = name.rpartition(".")[2]
        if leaf in _MLP_IN and isinstance(getattr(m, "weight", None), nn.Parameter):
            w = m.weight
            width = w.shape[_out_dim(m)] // _MLP_IN[leaf]
            out.setdefault(name, {})["intermediate_size"] = int(width)
        if leaf == "dense" and name.rpartition(".")[0].endswith(_INTERMEDIATE_PARENTS):
            out.setdefault(name, {})["intermediate_size"] = int(m.weight.shape[0])
    return out


def _current_attention(m: nn.Module) -> tuple[int, int, int | None]:
    """``(heads, head_dim, kv heads or None)`` as the module's attributes and weights say now."""
    hd = next((getattr(m, a) for a in _HEAD_DIM if isinstance(getattr(m, a, None), int)), None)
    heads = next((getattr(m, a) for a in _HEADS if isinstance(getattr(m, a, None), int)), None)
    if hd is None:
        raise AttributeError("no head_dim attribute")
    if heads is None:
        out = _proj(m, _OUT)
        q = _proj(m, _Q)
        if out is not None and out[0] != "dense":
            weight: Any = out[1].weight
            heads = int(weight.shape[1 - _out_dim(out[1])]) // hd
        elif q is not None and q[0] != "qkv_proj":
            weight = q[1].weight
            heads = int(weight.shape[_out_dim(q[1])]) // hd
        else:
            raise AttributeError("no head count")
    kv = getattr(m, "num_key_value_heads", None)
    if kv is None and hasattr(m, "num_key_value_groups"):
        kv = heads // m.num_key_value_groups
    return heads, hd, kv


def _hidden_size(model: nn.Module) -> int | None:
    get = getattr(model, "get_input_embeddings", None)
    try:
        emb = get() if callable(get) else None
    except (NotImplementedError, AttributeError):  # models without input embeddings (ResNet, Wav2Vec2, ...)
        return None
    if isinstance(emb, nn.Embedding):
        return int(emb.embedding_dim)
    conv = emb if isinstance(emb, nn.Conv2d) else getattr(emb, "projection", None)
    if isinstance(conv, nn.Conv2d):
        return int(conv.out_channels)
    return None


PRUNED_ROPE = "anyprune_pruned"
_DYNAMIC_ROPE = ("dynamic", "longrope")


def _pruned_rope_init(config: Any, device: Any = None, seq_len: Any = None, layer_type: Any = None,
                      **_: Any) -> tuple[torch.Tensor, float]:
    """``ROPE_INIT_FUNCTIONS`` entry for :data:`PRUNED_ROPE`: the frequencies stored in the config."""
    params = config.rope_parameters
    if layer_type is not None and isinstance(params.get(layer_type), dict):
        params = params[layer_type]
    return torch.tensor(params["inv_freq"], dtype=torch.float32, device=device), float(params["attention_factor"])


def _validate_pruned_rope(self: Any, rope_parameters: dict, ignore_keys: Any = None) -> None:
    inv = rope_parameters.get("inv_freq")
    if not isinstance(inv, list) or not inv or not all(isinstance(v, (int, float)) and v > 0 for v in inv):
        raise ValueError(f"rope_parameters of rope_type {PRUNED_ROPE!r} need 'inv_freq': a non-empty list of "
                         f"positive numbers (the kept rotary frequencies), got {inv!r}")
    if not isinstance(rope_parameters.get("attention_factor"), (int, float)):
        raise ValueError(f"rope_parameters of rope_type {PRUNED_ROPE!r} need a numeric 'attention_factor'")


def register_rope() -> None:
    """Teach ``transformers`` the :data:`PRUNED_ROPE` rope type (idempotent)."""
    try:
        from transformers import modeling_rope_utils as mru
    except ImportError:  # a transformers without rope_parameters: nothing to register
        return
    mru.ROPE_INIT_FUNCTIONS[PRUNED_ROPE] = _pruned_rope_init
    mixin = getattr(mru, "RotaryEmbeddingConfigMixin", None)
    if mixin is not None:
        setattr(mixin, f"_validate_{PRUNED_ROPE}_rope_parameters", _validate_pruned_rope)


def _scale_ratio(model: nn.Module, cfg: Any) -> float | None:
    """``scaling`` of the attention modules now over what a module built from ``cfg`` computes (None: unknown).

    A pruned module keeps its original ``scaling`` (``head_dim ** -0.5`` of the unpruned head), which is what
    makes head_dim pruning exact; a module rebuilt from the config derives it from the new head_dim.
    """
    attn = [m for m in model.modules() if isinstance(getattr(m, "scaling", None), float)
            and any(type(m).__name__ in names for names in ATTENTION.values())]
    scales: set[float] = {getattr(m, "scaling") for m in attn}
    if len(scales) != 1:
        return None
    try:
        with torch.device("meta"):
            fresh = type(attn[0])(cfg, 0)
        return scales.pop() / float(getattr(fresh, "scaling"))
    except Exception:
        return None


def _rope_fields(model: nn.Module, config: Any, new: dict[str, Any]) -> dict[str, Any]:
    """``config.rope_parameters`` that rebuild the rotary embedding the model computes now (empty if it already does).

    A fresh rotary module built from the config (with this step's ``new`` fields) is compared with the model's:
    when head_dim was pruned its frequencies differ (the kept pairs' frequencies are not those of a smaller
    head_dim), and the attention modules keep the unpruned ``scaling`` while a rebuilt one derives it from the
    new head_dim. The exact kept frequencies are then written under :data:`PRUNED_ROPE`, with the rotary
    ``attention_factor`` multiplied by ``sqrt(old scaling / rebuilt scaling)``: cos and sin scale both q and k,
    so a rebuilt model's attention logits equal the pruned model's.
    """
    named = [(n, m) for n, m in model.named_modules()
             if isinstance(getattr(m, "rope_type", None), str)
             and isinstance(getattr(m, "inv_freq", None), torch.Tensor)]
    rotary = [m for _, m in named]
    params = getattr(config, "rope_parameters", None)
    if not rotary or not isinstance(params, dict) or not isinstance(params.get("rope_type"), str):
        return {}  # no rotary module, or one set of parameters per layer type (not handled: left as it is)
    inv = rotary[0].inv_freq
    if inv.is_meta or any(m.inv_freq.shape != inv.shape or not torch.equal(m.inv_freq.cpu(), inv.cpu())
                          for m in rotary[1:]):
        return {}
    cfg = copy.deepcopy(config)
    for key, value in new.items():
        setattr(cfg, key.partition(".")[2], value)
    ratio = _scale_ratio(model, cfg)
    factor = float(rotary[0].attention_scaling) * math.sqrt(ratio if ratio is not None else 1.0)
    try:
        fresh = type(rotary[0])(cfg)
        same = (fresh.inv_freq.shape == inv.shape
                and torch.equal(fresh.inv_freq.to(inv.device, inv.dtype), inv)
                and math.isclose(float(fresh.attention_scaling), factor, rel_tol=1e-12))
    except Exception:
        same = False
    if same:
        return {}
    kind = rotary[0].rope_type
    if kind in _DYNAMIC_ROPE:
        raise PruningError(
            f"`{kind}` rotary embeddings recompute their frequencies from head_dim as the sequence grows, so a "
            "pruned head_dim cannot be kept; prune whole heads only (prune_head_dims=False) or leave the "
            "attention's head_dim out"
        )
    base = params.get("original_rope_type", kind) if kind == PRUNED_ROPE else kind
    rope = {k: v for k, v in params.items() if k not in ("inv_freq", "attention_factor")}
    rope.update(rope_type=PRUNED_ROPE, original_rope_type=base, inv_freq=inv.float().cpu().tolist(),
                attention_factor=factor)
    try:  # the config class must accept the new type and a module built from it must compute the same
        cfg.rope_parameters = rope
        cfg.validate_rope()
        check = type(rotary[0])(cfg)
        ok = torch.equal(check.inv_freq.to(inv.device, inv.dtype), inv) and math.isclose(
            float(check.attention_scaling), factor, rel_tol=1e-12)
    except Exception:
        ok = False
    if not ok:
        warnings.warn(
            f"{type(config).__name__} cannot describe the pruned rotary head_dim (its rope_parameters reject the "
            f"kept frequencies), so a model rebuilt from the config (from_pretrained) would compute others: save "
            "this model with anyprune.save_pruned and reload it with anyprune.load_pruned",
            AnyPruneWarning,
            stacklevel=2,
        )
        return {}
    out: dict[str, Any] = {"config.rope_parameters": rope}
    for name, m in named:  # the unused reference copy follows, as in a model built from the new config
        if isinstance(getattr(m, "original_inv_freq", None), torch.Tensor):
            out[f"{name}.original_inv_freq"] = m.inv_freq.detach().clone()
    return out


def hf_model(model: nn.Module, sizes: Sizes) -> dict[str, Any]:
    """Config fields for the pruned structure (module updaters have already run in this step)."""
    config = getattr(model, "config", None)
    if config is None:
        return {}
    layers = layer_structure(model)
    new: dict[str, Any] = {}
    per_layer: dict[str, dict[str, int]] = {}
    keys = {k for rec in layers.values() for k in rec}
    field = {"num_attention_heads": "num_attention_heads", "num_key_value_heads": "num_key_value_heads",
             "head_dim": "head_dim", "intermediate_size": "intermediate_size"}
    if hasattr(config, "d_kv"):
        field["head_dim"] = "d_kv"
    if hasattr(config, "d_ff"):
        field["intermediate_size"] = "d_ff"
    if hasattr(config, "n_inner"):
        field["intermediate_size"] = "n_inner"
    for key in sorted(keys):
        attr = field[key]
        current = getattr(config, attr, None)
        implied = None
        if current is None and key == "head_dim":
            heads = _uniform([r["num_attention_heads"] for r in layers.values() if "num_attention_heads" in r])
            hidden = _hidden_size(model) or getattr(config, "hidden_size", None)
            implied = hidden // heads if isinstance(heads, int) and isinstance(hidden, int) and heads else None
        if current is None and attr == "n_inner":
            hidden = getattr(config, "hidden_size", None)
            implied = 4 * hidden if isinstance(hidden, int) else None
        if not isinstance(current, int) and implied is None:
            continue  # not a single size in this config (e.g. one value per stage)
        values = [rec[key] for rec in layers.values() if key in rec]
        common = _uniform(values)
        if common is None:
            for name, rec in layers.items():
                if key in rec:
                    per_layer.setdefault(name, {})[attr] = rec[key]
            continue
        if common != (current if current is not None else implied):
            new[f"config.{attr}"] = common
    hidden = _hidden_size(model)
    # ALBERT, ELECTRA: the embeddings have their own width (embedding_size), projected to hidden_size
    field_name = "embedding_size" if isinstance(getattr(config, "embedding_size", None), int) else "hidden_size"
    if hidden is not None and getattr(config, field_name, hidden) != hidden:
        new[f"config.{field_name}"] = hidden
    if per_layer or getattr(config, "pruned_layers", None):
        if getattr(config, "pruned_layers", None) != per_layer:
            new["config.pruned_layers"] = per_layer or None
    new.update(_rope_fields(model, config, new))
    return new


def config_matches(model: nn.Module) -> bool:
    """Whether a fresh model built from ``model.config`` has the structure of ``model``: the same parameter and
    buffer shapes, and the same head counts, head sizes and group counts kept as module attributes.

    Built on the meta device (no memory, no initialisation cost); buffers include non-persistent ones such as
    rotary ``inv_freq``. False for models whose config cannot describe the pruned structure (e.g. BERT, GPT-2
    and CLIP derive head_dim from hidden_size, so pruned heads with an unpruned hidden size have no config
    form; Phi-3's config rejects the kept rotary frequencies of a pruned head_dim) or whose layers differ.
    """
    return _mismatches(model, model.config) == []


def _int_attrs(model: nn.Module) -> dict[tuple[str, str], int]:
    """The head counts and sizes modules keep as attributes (``num_heads``, ``head_dim``, ``num_key_value_groups``
    …): shapes alone do not tell 4 heads of 8 from 2 heads of 16."""
    out: dict[tuple[str, str], int] = {}
    for name, m in model.named_modules():
        for k, v in vars(m).items():
            if type(v) is int and not k.startswith("_") and ("head" in k or k.endswith("groups")):
                out[(name, k)] = v
    return out


def _mismatches(model: nn.Module, config: Any) -> list[tuple[Any, int, int]] | None:
    """``(where, size in the model, size in a model built from config)`` for every shape or int attribute that
    differs; ``None`` for a config that cannot build the model."""
    try:
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fresh = type(model)(copy.deepcopy(config))
    except Exception:
        return None
    out: list[tuple[Any, int, int]] = []
    mine = {k: tuple(v.shape) for k, v in [*model.state_dict().items(), *model.named_buffers()]}
    theirs = {k: tuple(v.shape) for k, v in [*fresh.state_dict().items(), *fresh.named_buffers()]}
    if mine.keys() != theirs.keys():
        out.append(("names", len(mine), len(theirs)))
    for k in mine.keys() & theirs.keys():
        a, b = mine[k], theirs[k]
        if a != b:
            if len(a) != len(b):
                out.append((k, len(a), len(b)))
            out.extend(((k, d), x, y) for d, (x, y) in enumerate(zip(a, b)) if x != y)
    ma, mb = _int_attrs(model), _int_attrs(fresh)
    out.extend((k, ma[k], mb[k]) for k in ma.keys() & mb.keys() if ma[k] != mb[k])
    return out


def derive_config(model: nn.Module, max_rounds: int = 6) -> dict[str, Any]:
    """Config fields whose new values make a model built from the config match ``model`` (see
    :func:`config_matches`), for any architecture: a greedy search over the config's integer fields and lists
    of integers (per-stage sizes), each candidate checked by building the model on the meta device. Returns
    ``{field: value}`` (empty if the config already matches, or if no set of fields it tried matches: then the
    config cannot describe the model and :func:`anyprune.save_pruned` must be used)."""
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "to_dict"):
        return {}
    current = copy.deepcopy(config)
    bad = _mismatches(model, current)
    if bad is None:
        return {}
    found: dict[str, Any] = {}
    for _ in range(max_rounds):
        if not bad:
            return found
        pairs = {(b, a) for _, a, b in bad if isinstance(a, int) and isinstance(b, int) and a > 0 and b > 0}
        best = None
        for field, value in _candidates(current, pairs):
            trial = copy.deepcopy(current)
            setattr(trial, field, value)
            left = _mismatches(model, trial)
            if left is not None and len(left) < len(bad) and (best is None or len(left) < len(best[2])):
                best = (field, value, left)
        if best is None:
            return {}
        field, value, bad = best
        setattr(current, field, value)
        found[field] = value
    return found if not bad else {}


def _candidates(config: Any, pairs: set[tuple[int, int]]) -> list[tuple[str, Any]]:
    """``(field, value)`` edits worth trying: a field equal to a size built from the config takes the model's
    size; a field that divides it scales with it (a head count when heads were removed)."""
    out: list[tuple[str, Any]] = []
    for field, v in vars(config).items():
        if field.startswith("_") or field in ("vocab_size", "max_position_embeddings", "num_hidden_layers"):
            continue
        if type(v) is int and v > 0:
            for old, new in pairs:
                if v == old:
                    out.append((field, new))
                elif old % v == 0 and (new * v) % old == 0 and new * v // old > 0:
                    out.append((field, new * v // old))
        elif isinstance(v, (list, tuple)) and v and all(type(x) is int for x in v):
            for old, new in pairs:
                for i, x in enumerate(v):
                    if x == old:
                        edited = list(v)
                        edited[i] = new
                        out.append((field, type(v)(edited)))
    seen: set = set()
    unique = []
    for c in out:
        key = (c[0], repr(c[1]))
        if key not in seen:
            seen.add(key)
            unique.append(c)
    return unique[:64]


def sync_config(model: nn.Module, tx: Any = None) -> bool:
    """Bring ``model.config`` in line with the pruned model where the attribute tables did not
    (:func:`derive_config`); writes through ``tx`` (a transaction) when given. Returns whether the config
    now describes the model; if it cannot, warns that the model must be saved with
    :func:`anyprune.save_pruned`."""
    config = getattr(model, "config", None)
    if config is None or not hasattr(config, "to_dict") or config_matches(model):
        return True
    for field, value in derive_config(model).items():
        if tx is not None:
            tx.set_attr(config, field, value)
        else:
            setattr(config, field, value)
    if config_matches(model):
        return True
    from ..errors import AnyPruneWarning

    warnings.warn(f"{type(config).__name__} cannot describe the pruned {type(model).__name__} (its layers differ or "
                  "the config has no field for a pruned size), so from_pretrained would rebuild another model: save it "
                  "with anyprune.save_pruned and reload it with anyprune.load_pruned", AnyPruneWarning, stacklevel=3)
    return False


def _phi3_config(module: nn.Module, sizes: Sizes) -> dict[str, Any]:
    """Phi-3 reads ``config.num_attention_heads`` in forward: a layer that differs gets its own config."""
    new = hf_attention(module, sizes)
    heads = new.get("num_heads") or sizes.size("o_proj.weight", 1) // new["head_dim"]
    config: Any = module.config
    if config.num_attention_heads != heads:
        own = copy.copy(config)
        own.num_attention_heads = heads
        new["config"] = own
    return new


def conv1d(module: nn.Module, sizes: Sizes) -> dict[str, Any]:
    """``Conv1D`` (GPT-2) reshapes its output with ``self.nf``."""
    return {"nf": sizes.size("weight", 1)}


def register() -> None:
    register_rope()
    ROOT_TYPES.add("transformers.pytorch_utils.Conv1D")
    register_module_updater("transformers.pytorch_utils.Conv1D", conv1d)
    for mod, names in ATTENTION.items():
        for n in names:
            fn = _phi3_config if n in CONFIG_READERS else hf_attention
            register_module_updater(f"{mod}.{n}", fn)
    for mod, n in (("transformers.models.llama.modeling_llama", "LlamaMLP"),
                   ("transformers.models.qwen2.modeling_qwen2", "Qwen2MLP"),
                   ("transformers.models.mistral.modeling_mistral", "MistralMLP")):
        register_module_updater(f"{mod}.{n}", hf_mlp)
    register_module_updater("transformers.modeling_utils.PreTrainedModel", hf_model, model_level=True)
