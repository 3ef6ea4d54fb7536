"""RawData: what every dataset source hands to `data.py` before splitting and tensors.

Sources (synthetic generators, user files, torchvision sets) only produce NumPy arrays; `data.py`
validates them, infers the task, splits, preprocesses and makes tensors, in one place for all.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

KINDS = ("numeric", "categorical")


@dataclass(frozen=True)
class Column:
    """One feature column of a table: how it is encoded and why (the rule in `data.files`)."""

    name: str
    kind: str  # "numeric" or "categorical"
    reason: str  # what decided the kind: "numbers", "text", "few integer codes", a flag
    numbers: bool = False  # categorical: the cells are numbers, kept as their canonical text


@dataclass(frozen=True)
class RawData:
    """Features and targets of one dataset, with an optional test set that the source fixed.

    `task` is the source's own answer ("classification" / "regression") or None to infer it from
    the targets. `class_names` names the classes (classification) or the outputs (regression);
    empty means "derive from the labels".

    A table (a CSV file) sets `columns`: then `x` is an object array of raw cells, one column per
    entry (numeric columns as floats with NaN where missing, categorical ones as text with None
    where missing), and `data.prepare` encodes it with statistics of the training split.
    """

    x: np.ndarray
    y: np.ndarray
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    task: str | None = None
    class_names: tuple[str, ...] = ()
    feature_names: tuple[str, ...] = ()  # columns of a CSV, to say where a NaN is
    columns: tuple[Column, ...] = ()  # a table's feature columns, in file order; empty: x is numeric
    val_fraction: float = 0.2  # of the training pool; sources with big fixed test sets use less
