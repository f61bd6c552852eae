"""Calibration statistics: Gram matrices of consumer inputs, shared inputs, block-by-block streaming."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import anyprune as tp
from anyprune.calibration import (
    BlockRunner,
    InputStats,
    calibration_batches,
    consumer_spec,
    find_blocks,
    stream_statistics,
)


def _gram(x: torch.Tensor) -> torch.Tensor:
    x = x.double()
    return x.t() @ x


def test_linear_gram_sum_and_rows_in_float64():
    model = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2))
    xs = [torch.randn(7, 3), torch.randn(4, 3)]
    stats = tp.calibration.collect(model, xs)
    h = torch.cat([torch.relu(model[0](x)) for x in xs]).detach()
    st = stats[model[2]]
    assert st.rows == 11
    assert st.gram.dtype == torch.float64
    torch.testing.assert_close(st.gram, _gram(h), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(st.sum, h.double().sum(0), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(st.variance, h.double().var(0, unbiased=False), rtol=1e-5, atol=1e-6)
    assert model[0] in stats
    assert stats[model[0]].features == 3


@pytest.mark.parametrize(("kernel", "stride", "padding", "dilation"), [(3, 1, 1, 1), (3, 2, 0, 1), (1, 1, 0, 1),
                                                                       (3, 1, 2, 2)])
def test_conv_inputs_are_unfolded_channel_major(kernel, stride, padding, dilation):
    conv = nn.Conv2d(4, 6, kernel, stride=stride, padding=padding, dilation=dilation)
    x = torch.randn(2, 4, 9, 9)
    st = tp.calibration.collect(conv, [x])[conv]
    cols = F.unfold(x, kernel, dilation=dilation, padding=padding, stride=stride).transpose(1, 2).reshape(-1, 4 * kernel
                                                                                                         ** 2)
    assert st.features == 4 * kernel * kernel
    torch.testing.assert_close(st.gram, _gram(cols), rtol=1e-5, atol=1e-5)
    # the feature order matches weight.reshape(out, -1): the conv is the linear map on these rows
    y = conv(x).permute(0, 2, 3, 1).reshape(-1, 6)
    torch.testing.assert_close(cols @ conv.weight.reshape(6, -1).t() + conv.bias, y, rtol=1e-4, atol=1e-4)


def test_conv1d_and_reflect_padding():
    conv = nn.Conv1d(3, 2, 3, padding=1, padding_mode="reflect")
    x = torch.randn(2, 3, 10)
    st = tp.calibration.collect(conv, [x])[conv]
    cols = F.unfold(F.pad(x, (1, 1), mode="reflect").unsqueeze(2), (1, 3)).transpose(1, 2).reshape(-1, 9)
    torch.testing.assert_close(st.gram, _gram(cols), rtol=1e-5, atol=1e-5)
    y = conv(x).transpose(1, 2).reshape(-1, 2)
    torch.testing.assert_close(cols @ conv.weight.reshape(2, -1).t() + conv.bias, y, rtol=1e-4, atol=1e-4)


def test_which_layers_are_consumers():
    assert consumer_spec(nn.Linear(2, 3)).in_dim == 1
    assert consumer_spec(nn.Conv2d(4, 4, 3, groups=4)) is None  # depthwise: no sum over channels
    assert consumer_spec(nn.Conv2d(4, 4, 3, groups=2)) is None
    assert consumer_spec(nn.ConvTranspose2d(4, 4, 3)) is None
    assert consumer_spec(nn.BatchNorm2d(4)) is None
    assert consumer_spec(nn.Conv2d(4, 2, 3)).per_channel == 9


class _QKV(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.q, self.k, self.v = nn.Linear(4, 4), nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x):
        return self.q(x) * self.k(x) + self.v(x).sum(-1, keepdim=True)


def test_consumers_of_one_input_share_one_statistics_object():
    m = _QKV()
    stats = tp.calibration.collect(m, [torch.randn(3, 4), torch.randn(2, 4)])
    assert stats[m.q] is stats[m.k] is stats[m.v]
    assert stats[m.q].rows == 5


def _tiny_llama(layers: int = 3):
    transformers = pytest.importorskip("transformers")
    cfg = transformers.LlamaConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=layers,
                                   num_attention_heads=4, num_key_value_heads=2, vocab_size=64)
    return transformers.LlamaForCausalLM(cfg).eval()


def test_block_by_block_equals_one_pass_on_a_decoder():
    model = _tiny_llama()
    ids = torch.randint(0, 64, (6, 10))
    blocks = find_blocks(model)
    assert blocks == list(model.model.layers)
    assert BlockRunner.check_chain(model, blocks, ids[:2], None)
    chunks: list[tuple[int | None, set]] = []
    streamed: dict = {}

    def on_stats(st, k):
        chunks.append((k, set(st)))
        streamed.update(st)

    with torch.no_grad():
        stream_statistics(model, calibration_batches(ids, 2), list(model.modules()), on_stats=on_stats)
    assert [k for k, _ in chunks] == [0, 1, 2, None]  # one chunk per block, then lm_head after the last block
    assert chunks[-1][1] == {model.lm_head}
    for k, mods in chunks[:3]:
        assert all(any(m is x for x in model.model.layers[k].modules()) for m in mods)
    one = tp.calibration.collect(model, ids, batch_size=3)
    assert set(one) == set(streamed)
    for m, st in one.items():
        torch.testing.assert_close(streamed[m].gram, st.gram, rtol=1e-5, atol=1e-4)
        assert streamed[m].rows == st.rows == 60


def test_chain_check_rejects_blocks_that_do_not_chain():
    class Parallel(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.branches = nn.ModuleList([nn.Linear(4, 4), nn.Linear(4, 4)])

        def forward(self, x):
            return sum(b(x) for b in self.branches)

    m = Parallel()
    assert find_blocks(m) == list(m.branches)
    assert not BlockRunner.check_chain(m, list(m.branches), torch.randn(2, 4), None)
    seen = []
    stream_statistics(m, [torch.randn(3, 4)], list(m.modules()), on_stats=lambda st, k: seen.append(k))
    assert seen == [None]  # fell back to one pass


def test_calibration_data_forms():
    assert [b.shape for b in calibration_batches(torch.zeros(5, 3, dtype=torch.long), 2)] == [(2, 3), (2, 3), (1, 3)]
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(6, 2), torch.zeros(6)),
                                         batch_size=4)
    assert [b.shape for b in calibration_batches(loader)] == [(4, 2), (2, 2)]
    assert len(calibration_batches(x for x in [torch.randn(1, 2)] * 3)) == 3
    with pytest.raises(tp.ConfigError, match="empty"):
        calibration_batches([])
    with pytest.raises(tp.ConfigError, match="empty or 0-d"):
        calibration_batches(torch.zeros(0, 3))
    with pytest.raises(tp.ConfigError, match="iterable"):
        calibration_batches(3)
    with pytest.raises(tp.ConfigError, match="batch_size"):
        calibration_batches(torch.zeros(2, 2), 0)


def test_collect_restores_modes_and_grad_mode():
    model = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5)).train()
    with torch.enable_grad():
        tp.calibration.collect(model, [torch.randn(3, 2)])
        assert torch.is_grad_enabled()
    assert model.training
    assert model[1].training


def test_half_precision_inputs_accumulate_in_float64():
    st = InputStats.empty(2)
    x = torch.tensor([[1.0, 2.0], [3.0, 4.0]], dtype=torch.bfloat16)
    st.add(x)
    assert st.gram.dtype == torch.float64
    torch.testing.assert_close(st.gram, torch.tensor([[10.0, 14.0], [14.0, 20.0]], dtype=torch.float64))
