"""Calibration over several processes: statistics are summed over torch.distributed ranks, so two processes on
two halves of the data give the statistics and the pruned model of one process on all of it."""

from __future__ import annotations

import os
import tempfile
import warnings
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import anyprune as tp
from anyprune.calibration import collect

N_BATCHES, BATCH = 4, 2  # contiguous halves: rank r gets batches 2r, 2r+1, so the every-other-batch folds align


def _cnn() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                          nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)).double().eval()
    data = torch.randn(N_BATCHES * BATCH, 3, 8, 8, dtype=torch.float64)
    return model, data[:1], data


def _llama() -> tuple[nn.Module, dict, torch.Tensor]:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                                   num_key_value_heads=2, vocab_size=64)
    model = transformers.LlamaForCausalLM(cfg).double().eval()
    data = torch.randint(0, 64, (N_BATCHES * BATCH, 10), generator=torch.Generator().manual_seed(1))
    return model, {"input_ids": data[:1]}, data


class Routed(nn.Module):
    """Each batch goes to one of two experts by its sign; expert b's two projections read the same tensor (one
    shared statistics object). The first half of the data only ever reaches expert a."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 6)
        self.b_gate, self.b_up = nn.Linear(4, 6), nn.Linear(4, 6)
        self.out = nn.Linear(6, 2)

    def forward(self, x):
        if float(x[:, 0].mean()) > 0:
            return self.out(torch.relu(self.a(x)))
        return self.out(torch.relu(self.b_gate(x)) * self.b_up(x))


def _routed() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    data = torch.randn(N_BATCHES * BATCH, 4, dtype=torch.float64)
    data[: N_BATCHES * BATCH // 2, 0] = data[: N_BATCHES * BATCH // 2, 0].abs() + 0.1  # rank 0: expert a only
    data[N_BATCHES * BATCH // 2:, 0] = -data[N_BATCHES * BATCH // 2:, 0].abs() - 0.1  # rank 1: expert b only
    return Routed().double().eval(), data[:1], data


CASES = {"cnn": _cnn, "llama": _llama, "routed": _routed}


def _run(case: str, data_slice: slice) -> dict:
    """Statistics of every consumer and the model pruned with OBS + re-fit, on ``data[data_slice]``."""
    model, example, data = CASES[case]()
    part = data[data_slice]
    stats = collect(model, part, batch_size=BATCH)
    names = {m: n for n, m in model.named_modules()}
    grams = {names[m]: (st.rows, st.sum.clone(), st.gram.clone()) for m, st in stats.items()}
    if case == "routed":  # data-dependent control flow: statistics only
        shared = stats.get(model.b_gate) is stats.get(model.b_up) is not None
        return {"grams": grams, "state": {}, "shared": shared}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pruner = tp.pruner.MetaPruner(model, example, importance=tp.importance.OBSImportance(), pruning_ratio=0.5,
                                      calibration=part, calibration_batch_size=BATCH, reconstruct=True)
        pruner.step()
    return {"grams": grams, "state": {k: v.clone() for k, v in model.state_dict().items()}}


def _worker(rank: int, world: int, init: str, case: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=world)
    try:
        per = N_BATCHES * BATCH // world
        torch.save(_run(case, slice(rank * per, (rank + 1) * per)), os.path.join(out, f"{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("case", sorted(CASES))
def test_two_processes_equal_one_process_on_all_the_data(case, tmp_path):
    if not dist.is_available():
        pytest.skip("torch.distributed is not available")
    if case == "llama":
        pytest.importorskip("transformers")
    init = Path(tempfile.mkdtemp(dir=tmp_path)) / "init"
    mp.start_processes(_worker, args=(2, str(init), case, str(tmp_path)), nprocs=2, start_method="spawn", join=True)
    single = _run(case, slice(None))
    for rank in range(2):
        got = torch.load(tmp_path / f"{rank}.pt")
        assert sorted(got["grams"]) == sorted(single["grams"])
        for name, (rows, total, gram) in single["grams"].items():
            r, s, g = got["grams"][name]
            assert r == rows, name
            torch.testing.assert_close(s, total, rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(g, gram, rtol=1e-12, atol=1e-10)
        assert got.get("shared") == single.get("shared")
        assert sorted(got["state"]) == sorted(single["state"])
        for k, v in single["state"].items():
            assert got["state"][k].shape == v.shape, k
            torch.testing.assert_close(got["state"][k], v, rtol=1e-9, atol=1e-10)


def test_without_distributed_nothing_is_reduced():
    model, _, data = _cnn()
    a = collect(model, data[:4], batch_size=BATCH)
    b = collect(model, data[:4], batch_size=BATCH)
    assert all(torch.equal(a[m].gram, b[m].gram) for m in a)
    assert not dist.is_initialized()
