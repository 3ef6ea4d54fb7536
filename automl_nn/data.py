"""Datasets: name -> loader returning a DataBundle (train / validation / test tensors).

Each dataset is loaded once per process and reused by every trial. Pixels stay uint8 until the
batch; normalization statistics come from the training split only and are applied per batch on the
device (`DataBundle.normalize`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from automl_nn.errors import DataError
from automl_nn.registry import Registry

if TYPE_CHECKING:  # torch is imported where tensors are made, so `automl-nn datasets` stays fast
    import torch

Shape = tuple[int, ...]
SPLIT_SEED = 0  # splits never move with --seed, so trials of every study see the same samples


@dataclass(frozen=True)
class DataBundle:
    """Train / validation / test tensors plus what a model and a trainer need to know about them."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    input_shape: Shape
    task: str  # "classification" or "regression"
    n_outputs: int
    class_names: tuple[str, ...]
    mean: torch.Tensor  # broadcasts against one sample; computed on the training split
    std: torch.Tensor

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Float, standardized copy of a batch (stats live on the bundle's device)."""
        return (x.float() - self.mean) / self.std

    def to(self, device: torch.device | str) -> DataBundle:
        """The same bundle with every tensor on `device`."""
        moved = {k: getattr(self, k).to(device) for k in _TENSOR_FIELDS}
        return replace(self, **moved)

    @property
    def n_train(self) -> int:
        return int(self.x_train.shape[0])

    def describe(self) -> dict[str, object]:
        """What an exported model needs to know about its data: shape, outputs, classes, statistics."""
        return {
            "dataset": self.name, "input_shape": list(self.input_shape), "task": self.task,
            "n_outputs": self.n_outputs, "class_names": list(self.class_names),
            "mean": self.mean.flatten().tolist(), "std": self.std.flatten().tolist(),
            "stat_shape": list(self.mean.shape),
        }


_TENSOR_FIELDS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test", "mean", "std")


@dataclass(frozen=True)
class DatasetInfo:
    """A registered dataset: how to load it and what it is, without loading it."""

    load: Callable[[str | None], DataBundle]
    description: str
    task: str
    shape: Shape
    size: int
    source: str


DATASETS: Registry[DatasetInfo] = Registry("dataset")
_CACHE: dict[tuple[str, str | None], DataBundle] = {}


def load(name: str, data_dir: str | None = None) -> DataBundle:
    """The dataset `name`, loaded once per process."""
    canonical = DATASETS.canonical(name, "dataset")
    key = (canonical, data_dir)
    if key not in _CACHE:
        _CACHE[key] = DATASETS.get(canonical).load(data_dir)
    return _CACHE[key]


def shrink(bundle: DataBundle, n_train: int, n_eval: int | None = None) -> DataBundle:
    """A smaller bundle: `n_train` training samples, `n_eval` (default n_train // 2) in val and test.

    Samples are a fixed random subset of each split (the same every run); the normalization
    statistics stay those of the full training split. For smoke runs: the same code path, less data.
    """
    import torch

    n_eval = max(n_train // 2, 1) if n_eval is None else n_eval
    generator = torch.Generator().manual_seed(SPLIT_SEED)
    cut = {}
    for split, n in (("train", n_train), ("val", n_eval), ("test", n_eval)):
        x, y = getattr(bundle, f"x_{split}"), getattr(bundle, f"y_{split}")
        keep = torch.randperm(x.shape[0], generator=generator)[:n].sort().values.to(x.device)
        cut[f"x_{split}"], cut[f"y_{split}"] = x[keep], y[keep]
    return replace(bundle, **cut)


def split_indices(
    labels: np.ndarray, val_fraction: float, test_fraction: float, seed: int = SPLIT_SEED
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Stratified train / validation / test index arrays that never share a sample."""
    rng = np.random.default_rng(seed)
    parts: list[list[np.ndarray]] = [[], [], []]
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        n_test = round(len(idx) * test_fraction)
        n_val = round(len(idx) * val_fraction)
        parts[2].append(idx[:n_test])
        parts[1].append(idx[n_test:n_test + n_val])
        parts[0].append(idx[n_test + n_val:])
    return tuple(np.sort(np.concatenate(p)) for p in parts)  # type: ignore[return-value]


def channel_stats(x_train: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (images) or per-feature (vectors) mean and std of the training split."""
    x = x_train.float()
    dims = (0, *range(2, x.dim())) if x.dim() > 2 else (0,)
    mean = x.mean(dim=dims, keepdim=True)[0]
    std = x.std(dim=dims, keepdim=True)[0].clamp_min(1e-6)
    return mean, std


def bundle_from_arrays(
    name: str, x: np.ndarray, y: np.ndarray, class_names: tuple[str, ...],
    val_fraction: float = 0.2, test_fraction: float = 0.2,
) -> DataBundle:
    """Split a labelled classification array set into a DataBundle."""
    if len(np.unique(y)) < 2:
        raise DataError(f"dataset {name}: a classification set needs at least 2 classes, "
                        f"but all {len(y)} labels are {y[0]!r}.")
    import torch

    train, val, test = split_indices(y, val_fraction, test_fraction)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))
    mean, std = channel_stats(xt[train])
    return DataBundle(
        name=name, x_train=xt[train], y_train=yt[train], x_val=xt[val], y_val=yt[val],
        x_test=xt[test], y_test=yt[test], input_shape=tuple(x.shape[1:]),
        task="classification", n_outputs=len(class_names), class_names=class_names,
        mean=mean, std=std,
    )


def _load_digits(data_dir: str | None) -> DataBundle:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images.astype(np.uint8)[:, None, :, :]  # values 0..16, one channel
    names = tuple(str(c) for c in range(10))
    return bundle_from_arrays("digits", images, digits.target, names)


DATASETS.add("digits", DatasetInfo(
    load=_load_digits, description="scikit-learn's 8x8 handwritten digits (embedded, no download)",
    task="classification", shape=(1, 8, 8), size=1797, source="embedded (scikit-learn)",
))
