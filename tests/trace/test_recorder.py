"""The TorchFunctionMode recorder."""

from __future__ import annotations

import dataclasses
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import anyprune as tp
from anyprune.trace import trace


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 1)
        self.bn = nn.BatchNorm2d(6)
        self.fc = nn.Linear(6, 2)

    def forward(self, x):
        y = F.relu(self.bn(self.conv(x)), inplace=True)
        return self.fc(y.mean((2, 3)))


def test_records_calls_params_and_buffers():
    model = Net().eval()
    g = trace(model, torch.randn(2, 3, 4, 4))
    g.lint()
    kinds = {n: v.kind for v in g.values for n in v.names}
    assert kinds["conv.weight"] == "param"
    assert kinds["bn.running_mean"] == "buffer"
    names = [c.name for c in g.calls]
    assert names[:3] == ["F.conv2d", "F.batch_norm", "F.relu"]
    relu = g.calls[2]
    assert relu.outputs[0].version == 1, "in-place relu must create a new version"
    assert g.outputs
    assert g.outputs[0].shape == (2, 2)
    assert "test_recorder.py" in g.calls[0].source


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("training", [True, False])
def test_modes_and_dtypes_are_restored(dtype, training):
    model = Net().to(dtype).train(training)
    before = {n: b.clone() for n, b in model.named_buffers()}
    with torch.no_grad():
        dg = tp.DependencyGraph().build_dependency(model, torch.randn(2, 3, 4, 4, dtype=dtype))
    assert model.training is training
    assert all(m.training is training for m in model.modules())
    for n, b in model.named_buffers():
        assert torch.equal(b, before[n]), f"buffer {n} changed by tracing"
    assert len(dg.groups()) == 1


def test_meta_device():
    model = Net().to("meta")
    dg = tp.DependencyGraph().build_dependency(model, torch.randn(2, 3, 4, 4, device="meta"))
    g = dg.groups()[0]
    g.prune(idxs=[0, 1])
    assert model.conv.weight.shape == (4, 3, 1, 1)
    assert model.conv.weight.is_meta


@dataclasses.dataclass
class Out:
    logits: torch.Tensor
    extra: dict


class Nested(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 5)
        self.b = nn.Linear(5, 3)
        self.c = nn.Linear(5, 2)

    def forward(self, x, scale=None):
        h = self.a(x["feat"]) * (scale if scale is not None else 1.0)
        return Out(self.b(h), {"aux": [self.c(h)]})


def test_nested_outputs_and_dict_inputs_are_pinned():
    model = Nested()
    dg = tp.DependencyGraph().build_dependency(model, {"x": {"feat": torch.randn(2, 4)}})
    groups = dg.groups()
    assert [g.root.fqn for g in groups] == ["a.weight"], "only the hidden dim is prunable"
    groups[0].prune(idxs=[0])
    out = model({"feat": torch.randn(2, 4)})
    assert out.logits.shape == (2, 3)
    assert out.extra["aux"][0].shape == (2, 2)


def test_forward_fn_and_output_transform():
    model = Nested()
    calls = []

    def forward_fn(m, inputs):
        calls.append(1)
        return m(inputs, scale=2.0)

    dg = tp.DependencyGraph().build_dependency(model, {"feat": torch.randn(2, 4)}, forward_fn=forward_fn,
                                               output_transform=lambda out: out.logits.sum(), check_groups=False)
    assert calls == [1]
    assert len(dg.groups()) == 1
    tp.DependencyGraph().build_dependency(model, {"feat": torch.randn(2, 4)}, forward_fn=forward_fn,
                                          output_transform=lambda out: out.logits.sum())
    assert calls == [1, 1, 1]  # the safety net re-traces once more, through forward_fn too


def test_tied_parameters_are_one_value():
    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(10, 6)
            self.mid = nn.Linear(6, 6)
            self.head = nn.Linear(6, 10, bias=False)
            self.head.weight = self.emb.weight

        def forward(self, ids):
            return self.head(torch.relu(self.mid(self.emb(ids))))

    model = Tied()
    dg = tp.DependencyGraph().build_dependency(model, torch.tensor([[1, 2, 3]]))
    values = [v for v in dg.ops.values if "emb.weight" in v.names]
    assert len(values) == 1
    assert "head.weight" in values[0].names
    group = dg.get_pruning_group(model.mid, tp.prune_linear_out_channels, idxs=[0, 1])
    group.prune()
    assert model.emb.weight is model.head.weight
    assert model.emb.weight.shape == (10, 4)
    assert model.emb.embedding_dim == 4
    assert model(torch.tensor([[1, 2]])).shape == (1, 2, 10)


def test_unknown_op_pins_and_warns_once():
    def mystery(x):
        return torch.fft.fft(x).real

    class M(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(4, 6)
            self.b = nn.Linear(6, 6)
            self.c = nn.Linear(6, 3)

        def forward(self, x):
            h = mystery(mystery(self.a(x)))
            return self.c(torch.relu(self.b(h)))

    model = M()
    with pytest.warns(tp.errors.UnsupportedOpWarning, match=r"fft_fft .*×2.*register_dim_rule"):
        dg = tp.DependencyGraph().build_dependency(model, torch.randn(2, 4))
    with pytest.raises(tp.PruningError, match="op without a dimension rule"):
        dg.get_pruning_group(model.a, tp.prune_linear_out_channels, idxs=[0])
    groups = dg.groups()
    assert [g.root.fqn for g in groups] == ["b.weight"], "the rest of the model stays prunable"
    groups[0].prune(idxs=[0, 1, 2])
    assert model(torch.randn(2, 4)).shape == (2, 3)


def test_user_registered_rule_makes_op_prunable():
    def double(x):
        return torch.fft.ifft(torch.fft.fft(x)).real * 2

    @tp.register_dim_rule(torch.fft.fft, torch.fft.ifft, override=True)
    def _fft_rule(ctx, x, *args, **kwargs):
        lays = ctx.layouts(x)
        ctx.pin(lays[-1], "fft mixes the last dim")
        ctx.set_output(list(lays))

    try:
        model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))

        class Wrap(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.m = model

            def forward(self, x):
                return self.m(double(x.unsqueeze(1)).squeeze(1))

        with warnings.catch_warnings():
            warnings.simplefilter("error", tp.errors.UnsupportedOpWarning)
            dg = tp.DependencyGraph().build_dependency(Wrap(), torch.randn(2, 4))
        assert len(dg.groups()) == 1
    finally:
        from anyprune.dims.rules.registry import RULES

        RULES.pop(torch.fft.fft, None)
        RULES.pop(torch.fft.ifft, None)


def test_duplicate_rule_registration_raises():
    with pytest.raises(ValueError, match="already registered"):
        tp.register_dim_rule(F.linear)(lambda ctx, *a: None)


class DataDependent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 6)
        self.b = nn.Linear(6, 2)

    def forward(self, x):
        h = self.a(x)
        if h.sum() > -1e9:  # needs values: cannot run on the meta device
            h = torch.relu(h)
        return self.b(h)


def test_meta_trace_falls_back_to_real_values():
    model = DataDependent()
    x = torch.randn(2, 4)
    g = trace(model, x)  # auto: meta fails on bool(), real succeeds
    assert [c.name for c in g.calls][:2] == ["F.linear", "Tensor.sum"]
    with pytest.raises(tp.TraceError, match="failed on the example inputs"):
        trace(model, x, compute="meta")
    assert not any(p.is_meta for p in model.parameters()), "parameters must be restored after a failed meta trace"
    assert model(x).shape == (2, 2)


def test_meta_trace_restores_parameter_objects():
    model = Net()
    params = {n: p for n, p in model.named_parameters()}
    buffers = {n: b for n, b in model.named_buffers()}
    trace(model, torch.randn(2, 3, 4, 4), compute="meta")
    assert all(p is params[n] for n, p in model.named_parameters())
    assert all(b is buffers[n] for n, b in model.named_buffers())


def test_bad_compute_argument():
    with pytest.raises(tp.ConfigError, match="compute must be"):
        trace(Net(), torch.randn(1, 3, 2, 2), compute="gpu")


def test_meta_trace_does_not_leave_cached_meta_tensors():
    class Cache(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(4, 4)
            self.cached = None

        def forward(self, x):
            self.cached = torch.zeros_like(x)  # a plain attribute written by forward
            return self.lin(x) + self.cached

    model = Cache()
    trace(model, torch.randn(2, 4), compute="meta")
    assert model.cached is None
    assert model(torch.randn(2, 4)).shape == (2, 4)


def test_setitem_is_recorded_as_an_inplace_write():
    class M(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(4, 6)
            self.b = nn.Linear(6, 2)

        def forward(self, x):
            h = self.a(x)
            h[0] = 0.0
            return self.b(h)

    g = trace(M(), torch.randn(2, 4))
    setitem = [c for c in g.calls if c.name == "Tensor.__setitem__"]
    assert len(setitem) == 1
    assert setitem[0].outputs[0].version == 1
