"""From RawData to a DataBundle: validate, settle the task, split, preprocess, make tensors.

One path for every source, so every dataset gets the same checks and the same guarantees:
splits never share a sample, oversampling and PCA are fitted on the training split only, and
normalization statistics come from the training split only. uint8 features (images) stay uint8
until the batch; every other feature becomes float32. A table's columns are encoded (`tables`)
with an encoder fitted on the training split; regression targets are standardized with the
training split's mean and std, and the bundle keeps both to give metrics in the target's units.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

from automl_nn.data import tables
from automl_nn.data.arrays import RawData
from automl_nn.errors import DataError

if TYPE_CHECKING:  # torch is imported where tensors are made, so `automl-nn datasets` stays fast
    import torch

Shape = tuple[int, ...]
SPLIT_SEED = 0  # splits never move with --seed, so trials of every study see the same samples
TASKS = ("classification", "regression")
MAX_INFERRED_CLASSES = 20  # integer targets with more distinct values are read as regression


@dataclass(frozen=True)
class DataBundle:
    """Train / validation / test tensors plus what a model and a trainer need to know about them.

    Classification targets are int64 class indices (N,); regression targets are float32 (N, k),
    standardized with the training split's `target_mean` / `target_std` (losses are computed in
    that space; `to_target_units` maps values back). `class_names` names the classes, or the
    outputs of a regression. `encoding` describes how a table's columns became the features.
    """

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
    target_mean: torch.Tensor | None = None  # (k,) regression only; from the training split
    target_std: torch.Tensor | None = None
    encoding: tables.TableEncoding | None = field(default=None, compare=False)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Float, standardized copy of a batch (stats live on the bundle's device)."""
        return (x.float() - self.mean) / self.std

    def to_target_units(self, values: torch.Tensor) -> torch.Tensor:
        """Regression values (N, k) from the standardized space back to the target's own units."""
        if self.target_mean is None or self.target_std is None:
            return values
        return values * self.target_std + self.target_mean

    def to(self, device: torch.device | str) -> DataBundle:
        """The same bundle with every tensor on `device`."""
        moved = {k: getattr(self, k).to(device) for k in _TENSOR_FIELDS if getattr(self, k) is not None}
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
            "splits": {"train": self.n_train, "val": int(self.x_val.shape[0]),
                       "test": int(self.x_test.shape[0])},
            **({} if self.target_mean is None or self.target_std is None else {
                "target_mean": self.target_mean.tolist(), "target_std": self.target_std.tolist()}),
            **({} if self.encoding is None else {"encoding": self.encoding.to_dict()}),
        }


_TENSOR_FIELDS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test", "mean", "std",
                  "target_mean", "target_std")


@dataclass(frozen=True)
class Preprocess:
    """What to do between loading and tensors; all of it is part of the study identity."""

    task: str | None = None  # None: the source's own task, else inferred from the targets
    oversample: bool = False  # resample minority classes of the training split up to the majority
    pca: int | None = None  # project features on this many principal components of the train split
    train_size: int | None = None  # keep a fixed random subset of this many training samples
    # validation samples to keep; None keeps the split whole, or in proportion to train_size
    val_size: int | None = None


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


def stratified_subset(strata: np.ndarray, idx: np.ndarray, size: int,
                      seed: int = SPLIT_SEED) -> np.ndarray:
    """A fixed random subset of about `size` of `idx` (the same every run), each stratum in proportion.

    Every stratum (class) present keeps at least one sample, so the result may be a few samples
    larger than `size`; the largest remainders fill the rest. Kept in order.
    """
    if size >= len(idx):
        return idx
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(strata[idx], return_counts=True)
    share = counts * size / len(idx)
    keep = np.maximum(np.floor(share).astype(np.int64), 1)
    short = size - int(keep.sum())
    if short > 0:
        keep[np.argsort(-(share - np.floor(share)), kind="stable")[:short]] += 1
    parts = [rng.permutation(idx[strata[idx] == c])[:k] for c, k in zip(classes, keep, strict=True)]
    return np.sort(np.concatenate(parts))


def validation_size(name: str, pre: Preprocess, n_val: int, n_train: int) -> int:
    """How many validation samples to keep: `val_size`, else in proportion to `train_size`, else all.

    Training on N of the split's `n_train` samples validates on about N / n_train of its `n_val`
    (MNIST's 6,000 for 54,000: 427 for train_size=3840), so evaluating a model never costs more
    than the training data it learns from; the same samples every epoch and every trial.
    """
    if pre.val_size is not None:
        if pre.val_size > n_val:
            raise DataError(f"dataset {name}: val_size={pre.val_size} asks for more validation samples "
                            f"than the validation split holds ({n_val}). Use at most {n_val}, or leave "
                            "val_size out.")
        return pre.val_size
    if pre.train_size is None or n_train == 0:
        return n_val
    return min(n_val, math.ceil(n_val * pre.train_size / n_train))


def subset(name: str, train: np.ndarray, size: int, seed: int = SPLIT_SEED) -> np.ndarray:
    """A fixed random subset of `size` training indices (the same every run), kept in order."""
    if size > len(train):
        raise DataError(f"dataset {name}: train_size={size} asks for more training samples than the "
                        f"training split holds ({len(train)}). Use at most {len(train)}, or leave "
                        "train_size out to train on all of them.")
    return np.sort(np.random.default_rng(seed).permutation(train)[:size])


STATS_CHUNK = 1024  # samples converted to float64 at a time for the statistics


def channel_stats(x_train: torch.Tensor, chunk: int = STATS_CHUNK) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel (images) or per-feature (vectors) mean and std (unbiased) of the training split.

    Two passes over chunks of `chunk` samples with float64 sums: a float copy of all of MNIST's
    uint8 images would be 170 MB, more than three times the data, at the peak of loading.
    """
    dims = (0, *range(2, x_train.dim())) if x_train.dim() > 2 else (0,)
    count = x_train.numel() // math.prod(x_train.shape[1:2])  # values per channel or feature
    chunks = [x_train[i:i + chunk] for i in range(0, x_train.shape[0], chunk)]
    total = chunks[0].double().sum(dim=dims, keepdim=True)
    for c in chunks[1:]:
        total += c.double().sum(dim=dims, keepdim=True)
    mean = total / count
    squares = ((chunks[0].double() - mean) ** 2).sum(dim=dims, keepdim=True)
    for c in chunks[1:]:
        squares += ((c.double() - mean) ** 2).sum(dim=dims, keepdim=True)
    std = (squares / max(count - 1, 1)).sqrt()
    return mean.float()[0], std.float()[0].clamp_min(1e-6)


def bundle_from_arrays(
    name: str, x: np.ndarray, y: np.ndarray, class_names: tuple[str, ...],
    val_fraction: float = 0.2, test_fraction: float = 0.2,
) -> DataBundle:
    """Split a labelled classification array set into a DataBundle."""
    raw = RawData(x, y, task="classification", class_names=class_names, val_fraction=val_fraction)
    return make_bundle(name, raw, Preprocess(), test_fraction)


# ---- the one path from RawData to a bundle -------------------------------------------------------


def make_bundle(name: str, raw: RawData, pre: Preprocess, test_fraction: float = 0.2) -> DataBundle:
    """Validate `raw`, settle its task, split it, preprocess it and make tensors."""
    if raw.columns:  # a table: raw cells, encoded below once the training split is known
        x, x_test = raw.x, None
    else:
        x, x_test = _features(name, raw.x, "x"), None if raw.x_test is None else _features(
            name, raw.x_test, "x_test")
    _check_shapes(name, raw, x, x_test)
    for label, arr in (("x", x), ("x_test", x_test)):
        if arr is not None:
            _check_finite(name, label, arr, raw.feature_names)
    task = settle_task(name, raw, pre.task)
    targets = _targets(name, raw, task)
    y, y_test, names = targets
    if x_test is None or y_test is None:
        train, val, test = split_indices(_strata(y, task), raw.val_fraction, test_fraction)
        x_test, y_test = x[test], y[test]
    else:
        train, val, _ = split_indices(_strata(y, task), raw.val_fraction, 0.0)
    val = stratified_subset(_strata(y, task), val, validation_size(name, pre, len(val), len(train)))
    if pre.train_size is not None:
        train = subset(name, train, pre.train_size)
    encoding = None
    if raw.columns:  # fitted on the training rows (each once: oversampling only repeats them)
        encoder = tables.fit(raw.columns, x[np.unique(train)])
        x, x_test, encoding = encoder.transform(x), encoder.transform(x_test), encoder.encoding
    if pre.oversample:
        train = oversample(name, y, train, task)
    x_tr, x_val = x[train], x[val]
    if pre.pca is not None:
        x_tr, x_val, x_test = pca(name, pre.pca, x_tr, x_val, x_test)
    bundle = _tensors(name, (x_tr, y[train], x_val, y[val], x_test, y_test), task, names)
    return replace(bundle, encoding=encoding)


def _features(name: str, x: np.ndarray, label: str) -> np.ndarray:
    if x.dtype.kind not in "biuf":
        raise DataError(f"dataset {name}: features {label} must be numbers, but their dtype is "
                        f"{x.dtype}. Encode text columns as numbers (a CSV file is one-hot encoded "
                        "for you).")
    if x.ndim == 1:
        x = x[:, None]  # one feature per sample
    return x if x.dtype == np.uint8 else x.astype(np.float32)


def _check_shapes(name: str, raw: RawData, x: np.ndarray, x_test: np.ndarray | None) -> None:
    pairs = [("x", x, "y", raw.y)]
    if x_test is not None and raw.y_test is not None:
        pairs.append(("x_test", x_test, "y_test", raw.y_test))
        if x_test.shape[1:] != x.shape[1:]:
            raise DataError(f"dataset {name}: x has samples of shape {x.shape[1:]} but x_test has "
                            f"{x_test.shape[1:]}. Both must describe samples the same way.")
    for x_label, xs, y_label, ys in pairs:
        if len(xs) != len(ys):
            raise DataError(f"dataset {name}: {x_label} has {len(xs)} samples but {y_label} has "
                            f"{len(ys)}. They must have one target per sample, in the same order.")
    if len(x) < 3:
        raise DataError(f"dataset {name}: {len(x)} sample(s) cannot be split into train, "
                        "validation and test. Provide more data.")


def _check_finite(name: str, label: str, x: np.ndarray, feature_names: tuple[str, ...]) -> None:
    if x.dtype.kind != "f":
        return
    bad = ~np.isfinite(x.reshape(len(x), -1))
    if not bad.any():
        return
    row, col = (int(v) for v in np.argwhere(bad)[0])
    column = f"column {feature_names[col]!r}" if col < len(feature_names) else f"feature {col}"
    raise DataError(f"dataset {name}: {int(bad.sum())} NaN or infinite value(s) in the features "
                    f"{label}, the first at sample {row}, {column}. Fill or drop them before "
                    "searching.")


def settle_task(name: str, raw: RawData, requested: str | None) -> str:
    """The requested task, else the source's, else classification for few integer labels."""
    if requested is not None:
        return requested
    if raw.task is not None:
        return raw.task
    y = raw.y
    if y.dtype.kind in "USO":
        return "classification"
    if y.ndim > 1 and y.shape[1] > 1:
        return "regression"
    integral = y.dtype.kind in "biu" or bool(np.all(np.isfinite(y)) and np.all(np.mod(y, 1) == 0))
    few = len(np.unique(y)) <= MAX_INFERRED_CLASSES
    return "classification" if integral and few else "regression"


def _targets(name: str, raw: RawData, task: str) -> tuple[np.ndarray, np.ndarray | None, tuple[str, ...]]:
    if task == "classification":
        return _class_targets(name, raw)
    return _regression_targets(name, raw)


def _class_targets(name: str, raw: RawData) -> tuple[np.ndarray, np.ndarray | None, tuple[str, ...]]:
    y, y_test = _flat_labels(name, raw.y, "y"), None if raw.y_test is None else _flat_labels(
        name, raw.y_test, "y_test")
    if len(np.unique(y)) < 2:
        raise DataError(f"dataset {name}: a classification set needs at least 2 classes, but all "
                        f"{len(y)} training labels are {y[0]!r}. Check the target, or use "
                        "--task regression for a numeric target.")
    given = raw.class_names
    if given and y.dtype.kind in "iu" and y.min() >= 0 and y.max() < len(given):
        return y.astype(np.int64), None if y_test is None else y_test.astype(np.int64), given
    values = np.unique(y if y_test is None else np.concatenate([y, y_test]))
    names = tuple(_label_name(v) for v in values)
    encode = {v: i for i, v in enumerate(values.tolist())}
    as_index = np.vectorize(lambda v: encode[v], otypes=[np.int64])
    return as_index(y), None if y_test is None else as_index(y_test), names


def _flat_labels(name: str, y: np.ndarray, label: str) -> np.ndarray:
    if y.ndim > 1 and y.shape[1:] != (1,):
        raise DataError(f"dataset {name}: classification labels {label} must be one value per "
                        f"sample, but have shape {y.shape}. Give class indices, or use "
                        "--task regression for several outputs.")
    y = y.reshape(len(y))
    if y.dtype.kind == "f" and not (np.all(np.isfinite(y)) and np.all(np.mod(y, 1) == 0)):
        raise DataError(f"dataset {name}: classification needs integer class labels, but {label} "
                        f"holds fractional values such as {y[np.mod(y, 1) != 0][:1]}. Use "
                        "--task regression, or round the labels.")
    return y.astype(np.int64) if y.dtype.kind == "f" else y


def _label_name(value: object) -> str:
    return str(int(value)) if isinstance(value, float) and value.is_integer() else str(value)


def _regression_targets(name: str, raw: RawData) -> tuple[np.ndarray, np.ndarray | None,
                                                          tuple[str, ...]]:
    out: list[np.ndarray | None] = []
    for label, y in (("y", raw.y), ("y_test", raw.y_test)):
        if y is None:
            out.append(None)
            continue
        if y.dtype.kind not in "biuf":
            raise DataError(f"dataset {name}: regression needs numeric targets, but {label} holds "
                            f"{y.dtype} values such as {y[:1]}. Use --task classification.")
        y2 = y.reshape(len(y), -1).astype(np.float32)
        if not np.all(np.isfinite(y2)):
            raise DataError(f"dataset {name}: {label} holds NaN or infinite targets (first at "
                            f"sample {int(np.argwhere(~np.isfinite(y2))[0][0])}). Drop those samples.")
        out.append(y2)
    y_train, y_test = out
    assert y_train is not None  # y is always given
    names = raw.class_names if len(raw.class_names) == y_train.shape[1] else tuple(
        f"y{i}" if y_train.shape[1] > 1 else "y" for i in range(y_train.shape[1]))
    return y_train, y_test, names


def _strata(y: np.ndarray, task: str) -> np.ndarray:
    """Stratify classification splits by class; regression splits are plain random."""
    return y if task == "classification" else np.zeros(len(y), dtype=np.int64)


def oversample(name: str, y: np.ndarray, train: np.ndarray, task: str) -> np.ndarray:
    """Training indices with minority classes resampled (with replacement) up to the majority.

    Only the training split grows: validation and test keep the true class balance, and every
    added index repeats a training sample, so no sample reaches two splits.
    """
    if task != "classification":
        raise DataError(f"dataset {name}: oversample balances classes, but this is a {task} task. "
                        "Drop oversample.")
    rng = np.random.default_rng(SPLIT_SEED)
    classes, counts = np.unique(y[train], return_counts=True)
    extra = [rng.choice(train[y[train] == c], counts.max() - n, replace=True)
             for c, n in zip(classes, counts, strict=True) if n < counts.max()]
    return np.sort(np.concatenate([train, *extra]))


def pca(
    name: str, k: int, x_train: np.ndarray, x_val: np.ndarray, x_test: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Project every split on the top `k` principal components of the training split."""
    flat = x_train.reshape(len(x_train), -1).astype(np.float64)
    if k > min(flat.shape):
        raise DataError(f"dataset {name}: pca={k} needs at most min(training samples, features) = "
                        f"{min(flat.shape)} components. Lower pca.")
    mean = flat.mean(axis=0)
    _, _, vt = np.linalg.svd(flat - mean, full_matrices=False)
    basis = vt[:k].T

    def project(a: np.ndarray) -> np.ndarray:
        projected: np.ndarray = (a.reshape(len(a), -1) - mean) @ basis
        return projected.astype(np.float32)

    return project(x_train), project(x_val), project(x_test)


def _tensors(
    name: str, arrays: tuple[np.ndarray, ...], task: str, names: tuple[str, ...]
) -> DataBundle:
    import torch

    x_tr, y_tr, x_val, y_val, x_te, y_te = (torch.from_numpy(np.ascontiguousarray(a)) for a in arrays)
    mean, std = channel_stats(x_tr)
    n_outputs = len(names) if task == "classification" else int(y_tr.shape[1])
    target_mean = target_std = None
    if task == "regression":
        target_mean, target_std = target_stats(arrays[1])
        y_tr, y_val, y_te = (((y.double() - target_mean.double()) / target_std.double()).float()
                             for y in (y_tr, y_val, y_te))
    return DataBundle(name=name, x_train=x_tr, y_train=y_tr, x_val=x_val, y_val=y_val, x_test=x_te,
                      y_test=y_te, input_shape=tuple(x_tr.shape[1:]), task=task, n_outputs=n_outputs,
                      class_names=names, mean=mean, std=std, target_mean=target_mean,
                      target_std=target_std)


def target_stats(y_train: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-output mean and std (population, as StandardScaler) of the training targets.

    Standardized training targets then have mean 0 and variance 1 exactly, so a loss is on the same
    scale whatever the target's units. A constant output keeps std 1 (it is only shifted).
    """
    import torch

    y = y_train.astype(np.float64)
    mean, std = y.mean(axis=0), y.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    return torch.from_numpy(mean).float(), torch.from_numpy(std).float()
