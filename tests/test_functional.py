"""Tests of the 22 seed-compatible single-layer pruning functions in ``anyprune.functional``."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

import anyprune as tp

FUNCTION_NAMES = [
    "prune_conv_out_channels", "prune_conv_in_channels",
    "prune_depthwise_conv_out_channels", "prune_depthwise_conv_in_channels",
    "prune_batchnorm_out_channels", "prune_batchnorm_in_channels",
    "prune_linear_out_channels", "prune_linear_in_channels",
    "prune_prelu_out_channels", "prune_prelu_in_channels",
    "prune_layernorm_out_channels", "prune_layernorm_in_channels",
    "prune_embedding_out_channels", "prune_embedding_in_channels",
    "prune_parameter_out_channels", "prune_parameter_in_channels",
    "prune_multihead_attention_out_channels", "prune_multihead_attention_in_channels",
    "prune_groupnorm_out_channels", "prune_groupnorm_in_channels",
    "prune_instancenorm_out_channels", "prune_instancenorm_in_channels",
]

SIZE = 6
DROP = [4, 1]  # deliberately unsorted
KEEP = torch.tensor([0, 2, 3, 5])
N_KEEP = SIZE - len(DROP)

SIMPLE_ATTRS = (int, float, bool, str, tuple, list, type(None))


# ----------------------------------------------------------------- helpers
def _randomize(obj: nn.Module | torch.Tensor) -> None:
    """Give every float parameter/buffer distinct random values (running_var stays positive)."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, t in _named_tensors(obj):
            if not t.is_floating_point():
                continue
            values = torch.rand(t.shape, generator=gen) + 0.5 if name.endswith("running_var") else \
                torch.randn(t.shape, generator=gen)
            t.copy_(values)


def _named_tensors(obj: nn.Module | torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    if isinstance(obj, torch.Tensor):
        return [("", obj)]
    return list(obj.named_parameters()) + [(n, b) for n, b in obj.named_buffers() if b is not None]


def _set_grads(obj: nn.Module | torch.Tensor) -> None:
    params = [obj] if isinstance(obj, torch.Tensor) else list(obj.parameters())
    gen = torch.Generator().manual_seed(1)
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen)


def _module_attrs(obj: nn.Module | torch.Tensor) -> dict[str, Any]:
    if isinstance(obj, torch.Tensor):
        return {"shape": tuple(obj.shape)}
    out = {}
    for mod_name, mod in obj.named_modules():
        for k, v in vars(mod).items():
            if not k.startswith("__") and isinstance(v, SIMPLE_ATTRS):
                out[f"{mod_name}.{k}"] = v
    return out


def _snapshot(obj: nn.Module | torch.Tensor) -> dict[str, Any]:
    tensors = {
        name: (t, t.detach().clone(), None if t.grad is None else t.grad.detach().clone())
        for name, t in _named_tensors(obj)
    }
    return {"tensors": tensors, "attrs": _module_attrs(obj)}


def _assert_unchanged(obj: nn.Module | torch.Tensor, snap: dict[str, Any]) -> None:
    current = dict(_named_tensors(obj))
    assert set(current) == set(snap["tensors"]), f"tensor names changed: {set(current) ^ set(snap['tensors'])}"
    for name, (t, data, grad) in snap["tensors"].items():
        assert current[name] is t, f"{name}: tensor object was replaced"
        assert t.shape == data.shape, f"{name}: shape changed {tuple(data.shape)} -> {tuple(t.shape)}"
        assert torch.equal(t.detach(), data), f"{name}: values changed"
        if grad is None:
            assert t.grad is None, f"{name}: grad appeared"
        else:
            assert t.grad is not None, f"{name}: grad was dropped"
            assert torch.equal(t.grad, grad), f"{name}: grad changed"
    assert _module_attrs(obj) == snap["attrs"], "module attributes changed"


def _getattr_path(obj: Any, path: str) -> Any:
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


# ------------------------------------------------------------------- specs
@dataclasses.dataclass
class Spec:
    """One pruning function applied to one kind of module, with its expected effect for DROP."""

    id: str
    fn_name: str
    make: Callable[[], nn.Module]
    cuts: dict[str, int]  # tensor name -> dim that must be sliced by KEEP
    attrs: dict[str, Any]  # attribute path -> value expected after pruning DROP
    forward: Callable[[nn.Module], tuple[torch.Tensor, tuple[int, ...]]]  # -> (output, expected shape)

    @property
    def fn(self):
        return getattr(tp, self.fn_name)


def _conv_fwd(in_shape, out_shape):
    return lambda m: (m(torch.randn(*in_shape)), out_shape)


SPECS = [
    Spec("conv-out-conv2d", "prune_conv_out_channels", lambda: nn.Conv2d(3, SIZE, 3),
         {"weight": 0, "bias": 0}, {"out_channels": N_KEEP, "in_channels": 3, "groups": 1},
         _conv_fwd((2, 3, 8, 8), (2, N_KEEP, 6, 6))),
    Spec("conv-out-conv1d", "prune_conv_out_channels", lambda: nn.Conv1d(3, SIZE, 3),
         {"weight": 0, "bias": 0}, {"out_channels": N_KEEP, "in_channels": 3},
         _conv_fwd((2, 3, 8), (2, N_KEEP, 6))),
    Spec("conv-out-convtranspose2d", "prune_conv_out_channels", lambda: nn.ConvTranspose2d(3, SIZE, 3),
         {"weight": 1, "bias": 0}, {"out_channels": N_KEEP, "in_channels": 3},
         _conv_fwd((2, 3, 5, 5), (2, N_KEEP, 7, 7))),
    Spec("conv-in-conv2d", "prune_conv_in_channels", lambda: nn.Conv2d(SIZE, 3, 3),
         {"weight": 1}, {"in_channels": N_KEEP, "out_channels": 3},
         lambda m: (m(torch.randn(2, N_KEEP, 8, 8)), (2, 3, 6, 6))),
    Spec("conv-in-convtranspose2d", "prune_conv_in_channels", lambda: nn.ConvTranspose2d(SIZE, 3, 3),
         {"weight": 0}, {"in_channels": N_KEEP, "out_channels": 3},
         lambda m: (m(torch.randn(2, N_KEEP, 5, 5)), (2, 3, 7, 7))),
    Spec("depthwise-out", "prune_depthwise_conv_out_channels",
         lambda: nn.Conv2d(SIZE, SIZE, 3, padding=1, groups=SIZE),
         {"weight": 0, "bias": 0}, {"out_channels": N_KEEP, "in_channels": N_KEEP, "groups": N_KEEP},
         lambda m: (m(torch.randn(2, N_KEEP, 5, 5)), (2, N_KEEP, 5, 5))),
    Spec("depthwise-in", "prune_depthwise_conv_in_channels",
         lambda: nn.Conv2d(SIZE, SIZE, 3, padding=1, groups=SIZE),
         {"weight": 0, "bias": 0}, {"out_channels": N_KEEP, "in_channels": N_KEEP, "groups": N_KEEP},
         lambda m: (m(torch.randn(2, N_KEEP, 5, 5)), (2, N_KEEP, 5, 5))),
    Spec("batchnorm-out-bn2d", "prune_batchnorm_out_channels", lambda: nn.BatchNorm2d(SIZE),
         {"weight": 0, "bias": 0, "running_mean": 0, "running_var": 0}, {"num_features": N_KEEP},
         lambda m: (m(torch.randn(4, N_KEEP, 3, 3)), (4, N_KEEP, 3, 3))),
    Spec("batchnorm-in-bn1d", "prune_batchnorm_in_channels", lambda: nn.BatchNorm1d(SIZE),
         {"weight": 0, "bias": 0, "running_mean": 0, "running_var": 0}, {"num_features": N_KEEP},
         lambda m: (m(torch.randn(4, N_KEEP)), (4, N_KEEP))),
    Spec("instancenorm-out-in2d", "prune_instancenorm_out_channels",
         lambda: nn.InstanceNorm2d(SIZE, affine=True, track_running_stats=True),
         {"weight": 0, "bias": 0, "running_mean": 0, "running_var": 0}, {"num_features": N_KEEP},
         lambda m: (m(torch.randn(2, N_KEEP, 4, 4)), (2, N_KEEP, 4, 4))),
    Spec("instancenorm-in-in1d", "prune_instancenorm_in_channels",
         lambda: nn.InstanceNorm1d(SIZE, affine=True, track_running_stats=True),
         {"weight": 0, "bias": 0, "running_mean": 0, "running_var": 0}, {"num_features": N_KEEP},
         lambda m: (m(torch.randn(2, N_KEEP, 5)), (2, N_KEEP, 5))),
    Spec("linear-out", "prune_linear_out_channels", lambda: nn.Linear(5, SIZE),
         {"weight": 0, "bias": 0}, {"out_features": N_KEEP, "in_features": 5},
         lambda m: (m(torch.randn(2, 5)), (2, N_KEEP))),
    Spec("linear-in", "prune_linear_in_channels", lambda: nn.Linear(SIZE, 5),
         {"weight": 1}, {"in_features": N_KEEP, "out_features": 5},
         lambda m: (m(torch.randn(2, N_KEEP)), (2, 5))),
    Spec("prelu-out", "prune_prelu_out_channels", lambda: nn.PReLU(SIZE),
         {"weight": 0}, {"num_parameters": N_KEEP},
         lambda m: (m(torch.randn(2, N_KEEP, 3)), (2, N_KEEP, 3))),
    Spec("prelu-in", "prune_prelu_in_channels", lambda: nn.PReLU(SIZE),
         {"weight": 0}, {"num_parameters": N_KEEP},
         lambda m: (m(torch.randn(2, N_KEEP, 3)), (2, N_KEEP, 3))),
    Spec("layernorm-out", "prune_layernorm_out_channels", lambda: nn.LayerNorm(SIZE),
         {"weight": -1, "bias": -1}, {"normalized_shape": (N_KEEP,)},
         lambda m: (m(torch.randn(2, 3, N_KEEP)), (2, 3, N_KEEP))),
    Spec("layernorm-in-2d-shape", "prune_layernorm_in_channels", lambda: nn.LayerNorm((3, SIZE)),
         {"weight": -1, "bias": -1}, {"normalized_shape": (3, N_KEEP)},
         lambda m: (m(torch.randn(2, 3, N_KEEP)), (2, 3, N_KEEP))),
    Spec("embedding-out", "prune_embedding_out_channels", lambda: nn.Embedding(10, SIZE),
         {"weight": 1}, {"embedding_dim": N_KEEP, "num_embeddings": 10},
         lambda m: (m(torch.tensor([[0, 3, 9], [1, 2, 3]])), (2, 3, N_KEEP))),
    Spec("embedding-in", "prune_embedding_in_channels", lambda: nn.Embedding(10, SIZE),
         {"weight": 1}, {"embedding_dim": N_KEEP, "num_embeddings": 10},
         lambda m: (m(torch.tensor([[0, 3, 9], [1, 2, 3]])), (2, 3, N_KEEP))),
    Spec("groupnorm-out", "prune_groupnorm_out_channels", lambda: nn.GroupNorm(2, SIZE),
         {"weight": 0, "bias": 0}, {"num_channels": N_KEEP, "num_groups": 2},
         lambda m: (m(torch.randn(2, N_KEEP, 3, 3)), (2, N_KEEP, 3, 3))),
    Spec("groupnorm-in", "prune_groupnorm_in_channels", lambda: nn.GroupNorm(2, SIZE),
         {"weight": 0, "bias": 0}, {"num_channels": N_KEEP, "num_groups": 2},
         lambda m: (m(torch.randn(2, N_KEEP, 3, 3)), (2, N_KEEP, 3, 3))),
]


def _make(spec_make: Callable[[], Any]) -> Any:
    obj = spec_make()
    _randomize(obj)
    return obj


def _mha() -> nn.MultiheadAttention:
    return nn.MultiheadAttention(embed_dim=8, num_heads=2, batch_first=True)


def _param() -> nn.Parameter:
    return nn.Parameter(torch.randn(3, SIZE))


# (function name, factory, channel count) for every one of the 22 functions
TARGETS = [(s.fn_name, s.make, SIZE) for s in SPECS] + [
    ("prune_parameter_out_channels", _param, SIZE),
    ("prune_parameter_in_channels", _param, SIZE),
    ("prune_multihead_attention_out_channels", _mha, 8),
    ("prune_multihead_attention_in_channels", _mha, 8),
]
TARGET_IDS = [s.id for s in SPECS] + ["parameter-out", "parameter-in", "mha-out", "mha-in"]


def test_targets_cover_all_22_functions():
    covered = {name for name, _, _ in TARGETS}
    assert len(FUNCTION_NAMES) == 22, "the seed API has 22 pruning functions"
    assert covered == set(FUNCTION_NAMES), f"functions without a test target: {set(FUNCTION_NAMES) - covered}"


@pytest.mark.parametrize("name", FUNCTION_NAMES)
def test_exported_at_top_level(name):
    fn = getattr(tp, name, None)
    assert fn is not None, f"anyprune.{name} is not exported"
    assert fn is getattr(tp.functional, name), f"anyprune.{name} is not anyprune.functional.{name}"
    assert callable(fn), f"anyprune.{name} is not callable"


def test_pruning_error_is_value_error():
    assert issubclass(tp.PruningError, ValueError), "PruningError must subclass ValueError"


# --------------------------------------------------------- correct slicing
@pytest.mark.parametrize("as_tensor", [False, True], ids=["list", "tensor"])
@pytest.mark.parametrize("spec", SPECS, ids=[s.id for s in SPECS])
def test_slices_tensors_grads_and_attributes(spec, as_tensor):
    layer = _make(spec.make)
    _set_grads(layer)
    before = _snapshot(layer)
    params_before = list(layer.parameters())
    idxs = torch.tensor(DROP) if as_tensor else list(DROP)

    result = spec.fn(layer, idxs)

    assert result is layer, f"{spec.fn_name} must return the layer it pruned"
    params_after = list(layer.parameters())
    assert len(params_after) == len(params_before), "number of parameters changed"
    for p_old, p_new in zip(params_before, params_after):
        assert p_old is p_new, "nn.Parameter objects must be kept (identity), only their data swapped"
        assert isinstance(p_new, nn.Parameter), "parameter lost its nn.Parameter type"

    current = dict(_named_tensors(layer))
    for name, (t, data, grad) in before["tensors"].items():
        assert current[name] is t, f"{name}: tensor object was replaced"
        if name in spec.cuts:
            dim = spec.cuts[name]
            expected = data.index_select(dim, KEEP)
            assert t.shape == expected.shape, f"{name}: shape {tuple(t.shape)}, expected {tuple(expected.shape)}"
            assert torch.equal(t.detach(), expected), f"{name}: kept values are not the kept slices, in order"
            if grad is not None:
                assert t.grad is not None, f"{name}: grad was dropped instead of sliced"
                assert torch.equal(t.grad, grad.index_select(dim, KEEP)), f"{name}: grad not sliced like the data"
        else:
            assert torch.equal(t.detach(), data), f"{name}: must not change"
            if grad is not None:
                assert torch.equal(t.grad, grad), f"{name}: grad must not change"
    for sliced in spec.cuts:
        assert sliced in current, f"spec error: {sliced} is not a tensor of the layer"

    for path, value in spec.attrs.items():
        got = _getattr_path(layer, path)
        if isinstance(value, tuple):
            got = tuple(got)
        assert got == value, f"{path} is {got!r}, expected {value!r}"

    out, expected_shape = spec.forward(layer)
    assert tuple(out.shape) == expected_shape, f"forward gives {tuple(out.shape)}, expected {expected_shape}"
    if out.is_floating_point():
        out.sum().backward()  # grads kept from before must have the new shapes to accumulate into
        for name, p in layer.named_parameters():
            assert p.grad is not None, f"{name}: no grad after backward"
            assert p.grad.shape == p.shape, f"{name}: grad shape does not match after backward"


@pytest.mark.parametrize("fn_name", ["prune_parameter_out_channels", "prune_parameter_in_channels"])
def test_parameter_slices_last_dim_by_default(fn_name):
    p = _param()
    p.grad = torch.randn_like(p)
    data, grad = p.detach().clone(), p.grad.clone()

    result = getattr(tp, fn_name)(p, DROP)

    assert result is p, f"{fn_name} must return the same nn.Parameter object"
    assert isinstance(p, nn.Parameter), "parameter lost its nn.Parameter type"
    assert p.shape == (3, N_KEEP), f"expected the last dim sliced to {(3, N_KEEP)}, got {tuple(p.shape)}"
    assert torch.equal(p.detach(), data.index_select(-1, KEEP)), "kept values are not the kept columns, in order"
    assert torch.equal(p.grad, grad.index_select(-1, KEEP)), "grad not sliced like the data"


def test_parameter_registered_in_module_keeps_identity():
    owner = nn.Module()
    owner.scale = nn.Parameter(torch.randn(2, SIZE))
    p = owner.scale
    tp.prune_parameter_out_channels(owner.scale, DROP)
    assert owner.scale is p, "the module must still hold the same nn.Parameter"
    assert owner.scale.shape == (2, N_KEEP), f"registered parameter has shape {tuple(owner.scale.shape)}"


def test_conv_transpose_dims():
    """ConvTranspose2d weight is (in, out // groups, kh, kw): out is dim 1, in is dim 0."""
    deconv = nn.ConvTranspose2d(4, SIZE, 3)
    assert deconv.weight.shape == (4, SIZE, 3, 3), "precondition on torch's layout"
    w = deconv.weight.detach().clone()
    tp.prune_conv_out_channels(deconv, DROP)
    assert deconv.weight.shape == (4, N_KEEP, 3, 3), f"out pruning must cut dim 1, got {tuple(deconv.weight.shape)}"
    assert torch.equal(deconv.weight.detach(), w.index_select(1, KEEP)), "wrong columns kept along dim 1"
    assert deconv.bias.shape == (N_KEEP,), "bias must follow the out channels"

    w = deconv.weight.detach().clone()
    tp.prune_conv_in_channels(deconv, [0])
    assert deconv.weight.shape == (3, N_KEEP, 3, 3), f"in pruning must cut dim 0, got {tuple(deconv.weight.shape)}"
    assert torch.equal(deconv.weight.detach(), w[1:]), "wrong rows kept along dim 0"
    assert (deconv.in_channels, deconv.out_channels) == (3, N_KEEP), "in/out_channels not updated"
    assert deconv(torch.randn(1, 3, 5, 5)).shape == (1, N_KEEP, 7, 7), "pruned ConvTranspose2d does not run"


def test_depthwise_conv_changes_in_out_groups_together():
    conv = nn.Conv2d(SIZE, SIZE, 3, groups=SIZE)
    tp.prune_depthwise_conv_out_channels(conv, DROP)
    assert (conv.in_channels, conv.out_channels, conv.groups) == (N_KEEP, N_KEEP, N_KEEP), (
        f"got in={conv.in_channels} out={conv.out_channels} groups={conv.groups}, expected all {N_KEEP}"
    )
    assert conv.weight.shape == (N_KEEP, 1, 3, 3), f"depthwise weight has shape {tuple(conv.weight.shape)}"
    assert conv(torch.randn(1, N_KEEP, 5, 5)).shape == (1, N_KEEP, 3, 3), "pruned depthwise conv does not run"


# ------------------------------------------------------------- GroupNorm
@pytest.mark.parametrize("fn_name", ["prune_groupnorm_out_channels", "prune_groupnorm_in_channels"])
@pytest.mark.parametrize("drop", [[0, 1, 2], [5]], ids=["keep3", "keep5"])
def test_groupnorm_non_multiple_of_groups_raises_and_leaves_layer(fn_name, drop):
    gn = _make(lambda: nn.GroupNorm(2, SIZE))
    _set_grads(gn)
    snap = _snapshot(gn)
    with pytest.raises(tp.PruningError, match=r"not a multiple of num_groups"):
        getattr(tp, fn_name)(gn, drop)
    _assert_unchanged(gn, snap)


def test_groupnorm_keeps_multiple_of_groups():
    gn = _make(lambda: nn.GroupNorm(3, 9))
    w = gn.weight.detach().clone()
    tp.prune_groupnorm_out_channels(gn, [0, 4, 8])
    keep = torch.tensor([1, 2, 3, 5, 6, 7])
    assert (gn.num_channels, gn.num_groups) == (6, 3), f"num_channels={gn.num_channels}, num_groups={gn.num_groups}"
    assert torch.equal(gn.weight.detach(), w[keep]), "GroupNorm weight not sliced to the kept channels"
    assert gn(torch.randn(2, 6, 4)).shape == (2, 6, 4), "pruned GroupNorm does not run"


# ------------------------------------------------------------ grouped conv
@pytest.mark.parametrize("fn_name", ["prune_conv_out_channels", "prune_conv_in_channels"])
@pytest.mark.parametrize("make", [lambda: nn.Conv2d(4, 8, 3, groups=2), lambda: nn.Conv2d(4, 4, 3, groups=4)],
                         ids=["grouped", "depthwise"])
def test_plain_conv_function_on_grouped_conv_raises(fn_name, make):
    conv = _make(make)
    _set_grads(conv)
    snap = _snapshot(conv)
    with pytest.raises(tp.PruningError, match=r"grouped conv \(groups=\d+\)"):
        getattr(tp, fn_name)(conv, [0, 1])
    _assert_unchanged(conv, snap)


@pytest.mark.parametrize("fn_name", ["prune_depthwise_conv_out_channels", "prune_depthwise_conv_in_channels"])
@pytest.mark.parametrize("make", [lambda: nn.Conv2d(4, SIZE, 3), lambda: nn.Conv2d(4, 8, 3, groups=4)],
                         ids=["dense", "depth-multiplier"])
def test_depthwise_function_on_non_depthwise_conv_raises(fn_name, make):
    conv = _make(make)
    snap = _snapshot(conv)
    with pytest.raises(tp.PruningError, match=r"is not depthwise"):
        getattr(tp, fn_name)(conv, [0])
    _assert_unchanged(conv, snap)


# ---------------------------------------------------- MultiheadAttention
@pytest.mark.parametrize("add_bias_kv", [False, True], ids=["plain", "bias_kv"])
@pytest.mark.parametrize("fn_name", ["prune_multihead_attention_out_channels",
                                     "prune_multihead_attention_in_channels"])
@pytest.mark.parametrize("drop", [[0, 5], [0, 1]], ids=["one-per-head", "same-head"])
def test_multihead_attention(fn_name, drop, add_bias_kv):
    mha = nn.MultiheadAttention(embed_dim=8, num_heads=2, batch_first=True, add_bias_kv=add_bias_kv)
    _randomize(mha)
    _set_grads(mha)
    before = {name: (p, p.detach().clone(), p.grad.clone()) for name, p in mha.named_parameters()}
    keep = torch.tensor([i for i in range(8) if i not in drop])
    qkv_keep = torch.cat([keep, keep + 8, keep + 16])

    assert getattr(tp, fn_name)(mha, drop) is mha, f"{fn_name} must return the module"

    expected_slices = {
        "in_proj_weight": lambda t: t.index_select(0, qkv_keep).index_select(1, keep),
        "in_proj_bias": lambda t: t.index_select(0, qkv_keep),
        "out_proj.weight": lambda t: t.index_select(0, keep).index_select(1, keep),
        "out_proj.bias": lambda t: t.index_select(0, keep),
        "bias_k": lambda t: t.index_select(-1, keep),
        "bias_v": lambda t: t.index_select(-1, keep),
    }
    current = dict(mha.named_parameters())
    assert set(current) == set(before), "parameter names changed"
    for name, (p, data, grad) in before.items():
        assert current[name] is p, f"{name}: nn.Parameter object was replaced"
        expected = expected_slices[name](data)
        assert p.shape == expected.shape, f"{name}: shape {tuple(p.shape)}, expected {tuple(expected.shape)}"
        assert torch.equal(p.detach(), expected), f"{name}: kept values are not the kept q/k/v slices, in order"
        assert torch.equal(p.grad, expected_slices[name](grad)), f"{name}: grad not sliced like the data"

    assert mha.in_proj_weight.shape == (18, 6), f"in_proj_weight shape {tuple(mha.in_proj_weight.shape)}"
    assert (mha.embed_dim, mha.head_dim, mha.kdim, mha.vdim) == (6, 3, 6, 6), (
        f"embed_dim/head_dim/kdim/vdim = {(mha.embed_dim, mha.head_dim, mha.kdim, mha.vdim)}, expected (6, 3, 6, 6)"
    )
    assert (mha.out_proj.in_features, mha.out_proj.out_features) == (6, 6), "out_proj features not updated"

    x = torch.randn(2, 3, 6)
    out, weights = mha(x, x, x)
    seq_k = 4 if add_bias_kv else 3
    assert out.shape == (2, 3, 6), f"attention output shape {tuple(out.shape)}"
    assert weights.shape == (2, 3, seq_k), f"attention weights shape {tuple(weights.shape)}"
    out.sum().backward()
    mha.eval()
    with torch.no_grad():  # may take the fused fast path
        out_eval, _ = mha(x, x, x)
    assert out_eval.shape == (2, 3, 6), f"eval-mode attention output shape {tuple(out_eval.shape)}"


@pytest.mark.parametrize("fn_name", ["prune_multihead_attention_out_channels",
                                     "prune_multihead_attention_in_channels"])
@pytest.mark.parametrize("drop", [[0], [1, 2, 3]], ids=["keep7", "keep5"])
def test_multihead_attention_non_multiple_of_heads_raises(fn_name, drop):
    mha = _make(_mha)
    _set_grads(mha)
    snap = _snapshot(mha)
    with pytest.raises(tp.PruningError, match=r"not a multiple of num_heads"):
        getattr(tp, fn_name)(mha, drop)
    _assert_unchanged(mha, snap)


def test_multihead_attention_separate_kdim_raises():
    mha = nn.MultiheadAttention(embed_dim=8, num_heads=2, kdim=4, vdim=4, batch_first=True)
    snap = _snapshot(mha)
    with pytest.raises(tp.PruningError, match=r"kdim/vdim"):
        tp.prune_multihead_attention_out_channels(mha, [0, 1])
    _assert_unchanged(mha, snap)


# ------------------------------------------------------------------ PReLU
@pytest.mark.parametrize("fn_name", ["prune_prelu_out_channels", "prune_prelu_in_channels"])
@pytest.mark.parametrize("idxs", [[], [0], [0, 3]], ids=["empty", "one", "coupled-idxs"])
def test_prelu_single_parameter_left_unchanged(fn_name, idxs):
    prelu = nn.PReLU()
    prelu.weight.grad = torch.ones(1)
    snap = _snapshot(prelu)
    assert getattr(tp, fn_name)(prelu, idxs) is prelu, f"{fn_name} must return the PReLU"
    _assert_unchanged(prelu, snap)
    assert prelu.num_parameters == 1, "a shared PReLU weight must stay a single parameter"


# -------------------------------------------------------------- bad input
BAD_INPUTS = [
    ("out-of-range", lambda size: [size], lambda size: rf"indices \[{size}\] out of range \[0, {size}\)"),
    ("out-of-range-tensor", lambda size: torch.tensor([0, size + 3]), lambda size: rf"out of range \[0, {size}\)"),
    ("negative", lambda size: [-1], lambda size: r"\[-1\] out of range.*negative indices are not accepted"),
    ("duplicated", lambda size: [2, 2], lambda size: r"duplicated indices"),
    ("duplicated-tensor", lambda size: torch.tensor([1, 0, 1]), lambda size: r"duplicated indices"),
    ("all", lambda size: list(range(size)), lambda size: rf"Cannot prune all {size} channels"),
    ("all-shuffled-tensor", lambda size: torch.arange(size).flip(0), lambda size: rf"Cannot prune all {size} channels"),
    ("bool-mask", lambda size: torch.arange(size) % 2 == 0, lambda size: r"not a boolean mask"),
    ("bool-list", lambda size: [True, False], lambda size: r"indices must be ints, got True"),
    ("float", lambda size: [0, 1.5], lambda size: r"indices must be ints, got 1\.5 \(float\)"),
    ("str", lambda size: ["a"], lambda size: r"indices must be ints, got 'a' \(str\)"),
    ("none-item", lambda size: [None], lambda size: r"indices must be ints, got None"),
    ("not-a-sequence", lambda size: 3, lambda size: r"must be a sequence of ints or a tensor, got int"),
]


@pytest.mark.parametrize(("bad_id", "make_idxs", "make_msg"), BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
@pytest.mark.parametrize(("fn_name", "make", "size"), TARGETS, ids=TARGET_IDS)
def test_bad_indices_raise_and_leave_layer(fn_name, make, size, bad_id, make_idxs, make_msg):
    layer = _make(make)
    _set_grads(layer)
    snap = _snapshot(layer)
    with pytest.raises(tp.PruningError, match=make_msg(size)) as info:
        getattr(tp, fn_name)(layer, make_idxs(size))
    assert isinstance(info.value, ValueError), "PruningError must be catchable as ValueError"
    _assert_unchanged(layer, snap)


@pytest.mark.parametrize("idxs", [torch.tensor([1.5]), [torch.tensor(1.5)]], ids=["float-tensor", "float-0d-item"])
def test_float_tensor_indices_raise(idxs):
    lin = _make(lambda: nn.Linear(4, 3))
    snap = _snapshot(lin)
    with pytest.raises(tp.PruningError, match=r"indices must be ints"):
        tp.prune_linear_out_channels(lin, idxs)
    _assert_unchanged(lin, snap)


def _wrong_module(fn_name: str) -> nn.Module:
    return nn.Conv2d(4, 4, 1) if "linear" in fn_name else nn.Linear(4, 4)


@pytest.mark.parametrize("fn_name", FUNCTION_NAMES)
def test_function_that_does_not_fit_module_raises(fn_name):
    module = _wrong_module(fn_name)
    _set_grads(module)
    snap = _snapshot(module)
    with pytest.raises(tp.PruningError, match=rf"{fn_name} does not fit a {type(module).__name__}"):
        getattr(tp, fn_name)(module, [0])
    _assert_unchanged(module, snap)


def test_conv_function_on_linear_mentions_fit():
    lin = nn.Linear(4, 4)
    snap = _snapshot(lin)
    with pytest.raises(tp.PruningError, match=r"prune_conv_out_channels does not fit a Linear.*Conv"):
        tp.prune_conv_out_channels(lin, [0])
    _assert_unchanged(lin, snap)


# ---------------------------------------------------------------- no-ops
@pytest.mark.parametrize("empty", [[], (), torch.tensor([], dtype=torch.long)], ids=["list", "tuple", "tensor"])
@pytest.mark.parametrize(("fn_name", "make", "size"), TARGETS, ids=TARGET_IDS)
def test_empty_indices_are_a_noop(fn_name, make, size, empty):
    layer = _make(make)
    _set_grads(layer)
    snap = _snapshot(layer)
    assert getattr(tp, fn_name)(layer, empty) is layer, f"{fn_name} with no indices must return the layer"
    _assert_unchanged(layer, snap)


# ---------------------------------------------------------- transactional
def test_failure_midway_rolls_back_earlier_cuts():
    """A bias too short for the weight fails after the weight was cut: the weight must be put back."""
    lin = _make(lambda: nn.Linear(4, 3))
    with torch.no_grad():
        lin.bias.data = torch.randn(2)
    _set_grads(lin)
    snap = _snapshot(lin)
    with pytest.raises((IndexError, RuntimeError), match=r"out of range"):
        tp.prune_linear_out_channels(lin, [0])  # keeps rows 1, 2: index 2 does not exist in the bias
    _assert_unchanged(lin, snap)


def test_successive_prunings_compose():
    lin = _make(lambda: nn.Linear(SIZE, SIZE))
    w = lin.weight.detach().clone()
    tp.prune_linear_out_channels(lin, [0])
    tp.prune_linear_out_channels(lin, [0])
    tp.prune_linear_in_channels(lin, [SIZE - 1])
    assert torch.equal(lin.weight.detach(), w[2:, :-1]), "successive prunings do not compose"
    assert (lin.out_features, lin.in_features) == (SIZE - 2, SIZE - 1), "features not updated after several calls"
