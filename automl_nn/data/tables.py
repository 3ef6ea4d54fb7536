"""Encoding a table's columns: scikit-learn's ColumnTransformer, fitted on the training split.

Numeric columns: missing cells become the column's training median, then values are standardized
(StandardScaler); a column with missing cells in the training split also gets a 0/1 indicator
column. Categorical columns: one-hot over the categories of the training split, a missing cell
being a category of its own; a category seen only outside the training split encodes as all zeros
(handle_unknown="ignore"), so it never creates a column. The encoded features are, in order: the
numeric columns, their indicators, then each categorical column's one-hot block (columns in file
order within each group).

`TableEncoding` is the fitted encoder's plain description (medians, scaler means and scales,
categories): the data description keeps it, and an exported model.py applies it with torch alone.
scikit-learn is imported only when a table is encoded, so `automl-nn datasets` stays fast.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from automl_nn.data.arrays import Column
from automl_nn.data.files import MISSING

if TYPE_CHECKING:
    from sklearn.compose import ColumnTransformer


@dataclass(frozen=True)
class Numeric:
    """A numeric column: fill value, standardization, and whether it has a missing indicator."""

    name: str
    median: float
    mean: float
    scale: float
    indicator: bool
    reason: str


@dataclass(frozen=True)
class Categorical:
    """A categorical column: its categories in one-hot order (None: the missing category)."""

    name: str
    categories: tuple[str | None, ...]
    numbers: bool  # cells are numbers, matched by their canonical text (see files.category)
    reason: str


@dataclass(frozen=True)
class TableEncoding:
    """A fitted encoding as plain values: what `to_dict` stores and an export writes as constants."""

    features: tuple[str, ...]  # the feature columns, in file order: the raw rows' layout
    numeric: tuple[Numeric, ...]
    categorical: tuple[Categorical, ...]
    missing: tuple[str, ...]  # cells read as missing (stripped, lower-cased)

    def output_names(self) -> tuple[str, ...]:
        """Names of the encoded features, in order (`col`, `col missing`, `col=category`)."""
        values = [c.name for c in self.numeric]
        indicators = [f"{c.name} missing" for c in self.numeric if c.indicator]
        onehot = [f"{c.name}={'(missing)' if v is None else v}" for c in self.categorical
                  for v in c.categories]
        return (*values, *indicators, *onehot)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the columns in file order, each with its kind and fitted values."""
        by_name: dict[str, dict[str, Any]] = {}
        for n in self.numeric:
            by_name[n.name] = {"name": n.name, "kind": "numeric", "reason": n.reason,
                               "median": n.median, "mean": n.mean, "scale": n.scale,
                               "indicator": n.indicator}
        for c in self.categorical:
            by_name[c.name] = {"name": c.name, "kind": "categorical", "reason": c.reason,
                               "categories": list(c.categories), "numbers": c.numbers}
        return {"features": list(self.features), "columns": [by_name[f] for f in self.features],
                "missing": list(self.missing), "outputs": list(self.output_names())}


@dataclass(frozen=True)
class Encoder:
    """A ColumnTransformer fitted on training rows, and its description."""

    transformer: ColumnTransformer
    encoding: TableEncoding

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Raw cells (one row per sample, columns as in the file) -> float32 features."""
        if len(x) == 0:  # scikit-learn refuses empty arrays; a tiny file can leave a split empty
            return np.zeros((0, len(self.encoding.output_names())), dtype=np.float32)
        out: np.ndarray = self.transformer.transform(x)
        return np.ascontiguousarray(out, dtype=np.float32)


def fit(columns: tuple[Column, ...], x_train: np.ndarray) -> Encoder:
    """Fit the encoding of `columns` on the training rows `x_train` (raw cells, see RawData)."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import MissingIndicator, SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    numeric = [j for j, c in enumerate(columns) if c.kind == "numeric"]
    categorical = [j for j, c in enumerate(columns) if c.kind == "categorical"]
    # keep_empty_features: a column missing in every training row still gives a (constant) feature,
    # so the encoded width never depends on which rows landed in the training split.
    scaled = Pipeline([("impute", SimpleImputer(strategy="median", keep_empty_features=True)),
                       ("scale", StandardScaler())])
    transformer = ColumnTransformer([
        ("numeric", scaled, numeric),
        ("missing", MissingIndicator(features="missing-only", error_on_new=False), numeric),
        ("categorical", OneHotEncoder(handle_unknown="ignore", sparse_output=False), categorical),
    ], sparse_threshold=0.0)
    transformer.fit(x_train)
    return Encoder(transformer, _describe(transformer, columns, numeric, categorical))


def _describe(transformer: ColumnTransformer, columns: tuple[Column, ...], numeric: list[int],
              categorical: list[int]) -> TableEncoding:
    """The fitted values, read back from the transformer's own attributes."""
    fitted = transformer.named_transformers_
    nums: list[Numeric] = []
    if numeric:
        medians = fitted["numeric"]["impute"].statistics_
        scaler = fitted["numeric"]["scale"]
        flagged = set(fitted["missing"].features_.tolist())
        nums = [Numeric(columns[j].name, float(medians[i]), float(scaler.mean_[i]),
                        float(scaler.scale_[i]), i in flagged, columns[j].reason)
                for i, j in enumerate(numeric)]
    cats: list[Categorical] = []
    if categorical:
        cats = [Categorical(columns[j].name, tuple(_plain(v) for v in values), columns[j].numbers,
                            columns[j].reason)
                for j, values in zip(categorical, fitted["categorical"].categories_, strict=True)]
    return TableEncoding(tuple(c.name for c in columns), tuple(nums), tuple(cats), MISSING)


def _plain(value: object) -> str | None:
    return None if value is None else str(value)
