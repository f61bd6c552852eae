"""count_ops_and_params leaves the model untouched and counts models that pass parameters into blocks."""

from __future__ import annotations

import torch
from torch import nn

import anyprune as tp


class TokenBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.Linear(8, 8)

    def forward(self, x, cls):
        return cls + self.attn(torch.cat([cls, x], 1)).mean(1, keepdim=True)


class ClassToken(nn.Module):  # CaiT / PiT style: an expanded parameter passed straight into a block
    def __init__(self) -> None:
        super().__init__()
        self.cls = nn.Parameter(torch.zeros(1, 1, 8))
        self.embed = nn.Linear(4, 8)
        self.block = TokenBlock()
        self.bn = nn.BatchNorm1d(8)

    def forward(self, x):
        x = self.embed(x)
        cls = self.block(x, self.cls.expand(x.shape[0], -1, -1))
        return self.bn(cls[:, 0])


def test_counts_a_block_fed_with_an_expanded_parameter_under_no_grad():
    model = ClassToken()
    x = torch.randn(3, 5, 4)
    expected_macs = 3 * 5 * 4 * 8 + 3 * 6 * 8 * 8  # embed + the block's linear over class token and patches
    with torch.no_grad():
        macs, params = tp.utils.count_ops_and_params(model, x)
    assert (macs, params) == (expected_macs, sum(p.numel() for p in model.parameters()))
    assert tp.utils.count_ops_and_params(model, x)[0] == expected_macs
    assert all(p.requires_grad for p in model.parameters())


def test_a_model_in_training_mode_keeps_its_batch_norm_statistics_and_mode():
    model = ClassToken().train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    tp.utils.count_ops_and_params(model, torch.randn(3, 5, 4) * 5 + 2)
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
