"""Synthetic datasets of the atomic experiments' atomic experiments, generated from a seed (pure NumPy).

Every generator takes `size` (samples), `noise` and `seed`, and returns RawData; the same
arguments always give the same arrays. Options and their defaults are declared in `data.py`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from automl_nn.data.arrays import RawData

DUMMY_SCALE = 0.01  # dummy dimensions carry almost no variance (the atomic experiments, PCA experiment)


def class_counts(size: int, classes: int, imbalance: float) -> list[int]:
    """Samples per class: class 0 is the largest, the last class `imbalance` times its size.

    Sizes fall geometrically between the two, and add up to `size`.
    """
    weights = np.array([imbalance ** (k / (classes - 1)) for k in range(classes)])
    counts = np.floor(size * weights / weights.sum()).astype(int)
    counts[0] += size - int(counts.sum())
    return [max(int(c), 1) for c in counts]


def mixture_means(dim: int, classes: int, separation: float, profile: str) -> np.ndarray:
    """Class means: class k sits at k * separation * w_i in dimension i.

    `profile` "constant" gives w_i = 1 (every dimension equally useful); "harmonic" gives
    w_i = 1 / i, so the first dimensions separate the classes well and the last ones barely.
    """
    weights = np.ones(dim) if profile == "constant" else 1.0 / np.arange(1, dim + 1)
    return np.arange(classes)[:, None] * separation * weights[None, :]


def gaussian_mixture(
    *, size: int, noise: float, seed: int, dim: int, classes: int, separation: float,
    profile: str, imbalance: float, random_labels: bool, dummy_dims: int, rotate: bool,
) -> RawData:
    """One isotropic Gaussian (std `noise`) per class, means `separation` apart per dimension.

    The training pool has `size` samples with the requested imbalance; the test set (size // 4)
    is always balanced, as in the atomic experiments, so accuracies stay comparable across imbalance ratios.
    `dummy_dims` adds near-constant features and `rotate` hides them behind a random rotation.
    """
    rng = np.random.default_rng(seed)
    means = mixture_means(dim, classes, separation, profile)
    x, y = _mixture_draw(rng, means, noise, class_counts(size, classes, imbalance))
    x_test, y_test = _mixture_draw(rng, means, noise, class_counts(max(size // 4, classes), classes, 1.0))
    if dummy_dims:
        x, x_test = (np.hstack([a, rng.normal(0.0, DUMMY_SCALE, (len(a), dummy_dims))]) for a in (x, x_test))
    if rotate:
        q, _ = np.linalg.qr(rng.normal(size=(x.shape[1], x.shape[1])))
        x, x_test = x @ q, x_test @ q
    if random_labels:
        y, y_test = rng.integers(0, classes, len(y)), rng.integers(0, classes, len(y_test))
    names = tuple(str(k) for k in range(classes))
    return RawData(x.astype(np.float32), y, x_test.astype(np.float32), y_test,
                   task="classification", class_names=names)


def _mixture_draw(
    rng: np.random.Generator, means: np.ndarray, noise: float, counts: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    x = np.vstack([rng.normal(means[k], noise, (n, means.shape[1])) for k, n in enumerate(counts)])
    y = np.concatenate([np.full(n, k, dtype=np.int64) for k, n in enumerate(counts)])
    order = rng.permutation(len(y))
    return x[order], y[order]


def two_moons(*, size: int, noise: float, seed: int) -> RawData:
    """Two interleaved half circles of radius 1 (centres (0, 0) and (1, 0.5)), Gaussian noise added.

    Class 0 is the upper arc, class 1 the lower one; with noise 0 every point lies on its circle.
    """
    rng = np.random.default_rng(seed)
    n0 = size // 2
    t0, t1 = rng.uniform(0.0, math.pi, n0), rng.uniform(0.0, math.pi, size - n0)
    upper = np.stack([np.cos(t0), np.sin(t0)], axis=1)
    lower = np.stack([1.0 - np.cos(t1), 0.5 - np.sin(t1)], axis=1)
    x = np.vstack([upper, lower]) + rng.normal(0.0, noise, (size, 2))
    y = np.concatenate([np.zeros(n0, np.int64), np.ones(size - n0, np.int64)])
    return RawData(x.astype(np.float32), y, task="classification", class_names=("upper", "lower"))


def alternating_line(*, size: int, noise: float, seed: int, segments: int) -> RawData:
    """Points on [-1, 1] cut into `segments` equal pieces whose classes alternate (0, 1, 0, ...).

    the atomic experiments' problem that is easier for deep networks: the label flips `segments - 1` times.
    `noise` is the std of a jitter added to x after labelling, so it blurs the boundaries.
    """
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1.0, 1.0, size)
    segment = np.minimum(((x + 1.0) / 2.0 * segments).astype(np.int64), segments - 1)
    x = x + rng.normal(0.0, noise, size) if noise > 0 else x
    return RawData(x[:, None].astype(np.float32), segment % 2, task="classification",
                   class_names=("even", "odd"))


def _function(rng: np.random.Generator, size: int, noise: float, values: np.ndarray, x: np.ndarray,
              name: str) -> RawData:
    y = values + (rng.normal(0.0, noise, size) if noise > 0 else 0.0)
    return RawData(x[:, None].astype(np.float32), y[:, None].astype(np.float32), task="regression",
                   class_names=(name,))


def sine(*, size: int, noise: float, seed: int, frequency: float) -> RawData:
    """y = sin(frequency * x) for x uniform on [-1, 1], plus Gaussian noise of std `noise`."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1.0, 1.0, size)
    return _function(rng, size, noise, np.sin(frequency * x), x, "sin")


def polynomial(*, size: int, noise: float, seed: int, coefficients: Sequence[float]) -> RawData:
    """y = sum_i coefficients[i] * x**i for x uniform on [-1, 1], plus Gaussian noise."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1.0, 1.0, size)
    values = sum(c * x**i for i, c in enumerate(coefficients))
    return _function(rng, size, noise, np.asarray(values, dtype=np.float64) * np.ones(size), x, "poly")


def absolute(*, size: int, noise: float, seed: int) -> RawData:
    """y = |x| for x uniform on [-1, 1], plus Gaussian noise (a kink that smooth units must bend to)."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1.0, 1.0, size)
    return _function(rng, size, noise, np.abs(x), x, "abs")
