"""Reconstruction after removal: re-fit what reads the removed units, re-estimate batch-norm statistics.

Contract. When units of a group are removed, every *consumer* of the group (a layer that sums over the
pruned dim, see :mod:`anyprune.calibration.consumers`) loses input features. :class:`Reconstructor` watches
each group just before it is pruned, keeps the consumer's dense weight and the positions it keeps, and
afterwards re-fits the kept weights by damped least squares on the calibration Gram matrix
``H = E[x x^T]``:

    ``W_K' = W_K + W_R H[R, K] (H[K, K] + l I)^-1``,  ``l = damp * mean(diag H[K, K])``

(``R``: the removed features) so that ``W_K' x_K`` is the best linear estimate of the dense output ``W x`` on the
calibration data, the damping pulling the kept weights towards their dense values. A
consumer with a bias gets the constant feature too, so the bias absorbs the removed inputs' means (bias
compensation). Nothing new is added to the model: only the values of kept weights and biases change, so
shapes, configs and the Hugging Face round trip are those of plain pruning. Every new tensor is computed
before the first is written, and the writes go through one transaction.

:func:`reestimate_batchnorm` recomputes the running statistics of every batch-norm layer on calibration
data (a cumulative average over the batches).
"""

from __future__ import annotations

from .batchnorm import reestimate_batchnorm
from .driver import ReconstructionReport, prune_and_reconstruct
from .refit import Reconstructor, least_squares_refit

__all__ = ["ReconstructionReport", "Reconstructor", "least_squares_refit", "prune_and_reconstruct",
           "reestimate_batchnorm"]
