"""The digits data set (bundled with scikit-learn, no download) and its deterministic batching."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from ._common import need

TEST_FRACTION = 0.2

# Independent random streams derived from the seed, so that the split, the initial
# parameters and the order of each epoch never depend on one another.
_SPLIT, _INIT, _ORDER = 0, 1, 2


@dataclass(frozen=True)
class Digits:
    """Standardised 8x8 digit images (64 float32 features) and labels 0-9."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    @property
    def n_features(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def n_classes(self) -> int:
        return 10


def load(seed: int) -> Digits:
    """Load digits, split 80/20 with a permutation drawn from ``seed``, standardise on train."""
    datasets = need("sklearn.datasets", "the digits data set")
    x, y = datasets.load_digits(return_X_y=True)
    order = rng(seed, _SPLIT).permutation(len(x))
    n_test = round(len(x) * TEST_FRACTION)
    test, train = order[:n_test], order[n_test:]
    mean = x[train].mean(axis=0)
    std = x[train].std(axis=0)
    std[std == 0] = 1.0  # constant border pixels
    x = ((x - mean) / std).astype(np.float32)
    y = y.astype(np.int64)
    return Digits(x[train], y[train], x[test], y[test])


def rng(seed: int, stream: int, *more: int) -> np.random.Generator:
    return np.random.default_rng([seed, stream, *more])


def init_rng(seed: int) -> np.random.Generator:
    return rng(seed, _INIT)


def batches(n: int, batch_size: int, seed: int, epoch: int) -> Iterator[np.ndarray]:
    """Index batches for one epoch; the order depends only on ``seed`` and ``epoch``.

    This is what makes ``--resume`` bit-identical: epoch ``k`` sees the same batches whether
    the run was interrupted or not. The last, smaller batch is kept.
    """
    order = rng(seed, _ORDER, epoch).permutation(n)
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size]


def steps_per_epoch(n: int, batch_size: int) -> int:
    return -(-n // batch_size)
