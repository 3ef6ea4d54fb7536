"""The user's own files: `.npz` (arrays x/y, optionally x_test/y_test) and `.csv` (--target COLUMN).

CSV columns that are all numbers stay numeric; any other column is categorical and one-hot encoded
(categories sorted, so the encoding repeats). Problems raise DataError naming the file, the column
or the row, and what to change.
"""

from __future__ import annotations

import csv
import zipfile
from pathlib import Path

import numpy as np

from automl_nn.data.arrays import RawData
from automl_nn.errors import DataError

EXTENSIONS = (".npz", ".csv")
_NPZ_KEYS = (("x", "y"), ("X", "y"), ("X", "Y"))


def is_path(name: str) -> bool:
    """Whether a --dataset value names a file rather than a registered dataset."""
    return "/" in name or "\\" in name or Path(name).suffix != "" or Path(name).exists()


def check_file(path: Path) -> None:
    """Refuse wrong extensions and missing files before anything is read."""
    if path.suffix.lower() not in EXTENSIONS:
        raise DataError(f"dataset {path}: expected a .npz or .csv file (or a dataset name from "
                        f"`automl-nn datasets`), but the extension is {path.suffix or 'missing'!r}. "
                        "Save the data as .npz (arrays x, y) or .csv with a header row.")
    if not path.is_file():
        raise DataError(f"dataset {path}: no such file. Check the path (relative paths start from "
                        f"{Path.cwd()}).")


def load_file(path: Path, target: str | None) -> RawData:
    """Read a user's .npz or .csv file into RawData."""
    check_file(path)
    if path.suffix.lower() == ".npz":
        if target is not None:
            raise DataError(f"dataset {path}: --target names a CSV column, but this is an .npz file "
                            "whose targets are the array y. Drop --target.")
        return load_npz(path)
    if target is None:
        raise DataError(f"dataset {path}: a CSV file needs --target COLUMN (the column to predict). "
                        f"Columns: {', '.join(_header(path))}.")
    return load_csv(path, target)


# ---- npz -----------------------------------------------------------------------------------------


def load_npz(path: Path) -> RawData:
    """Arrays x/y (or X/y), optionally x_test/y_test, from an .npz file."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise DataError(f"dataset {path}: cannot read it as .npz ({exc}). Save it with numpy.savez "
                        "and plain numeric arrays (no objects).") from None
    x_key, y_key = _npz_pair(path, arrays)
    suffix = "_test"
    x_test, y_test = arrays.get(x_key + suffix), arrays.get(y_key + suffix)
    if (x_test is None) != (y_test is None):
        raise DataError(f"dataset {path}: found only one of {x_key}_test and {y_key}_test. "
                        "Give both test arrays or neither.")
    for key, labels in ((y_key, arrays[y_key]), (y_key + suffix, y_test)):
        if labels is not None and labels.dtype.kind in "USO":
            raise DataError(f"dataset {path}: labels {key} are strings ({labels.dtype}), but .npz "
                            "labels must be numbers. Encode the classes as integers 0..K-1 "
                            "(e.g. np.unique(y, return_inverse=True)).")
    return RawData(arrays[x_key], arrays[y_key], x_test, y_test)


def _npz_pair(path: Path, arrays: dict[str, np.ndarray]) -> tuple[str, str]:
    for x_key, y_key in _NPZ_KEYS:
        if x_key in arrays and y_key in arrays:
            return x_key, y_key
    raise DataError(f"dataset {path}: expected arrays named x and y (or X and y), optionally "
                    f"x_test and y_test, but the file holds {', '.join(arrays) or 'no arrays'}. "
                    "Save with numpy.savez(path, x=features, y=targets).")


# ---- csv -----------------------------------------------------------------------------------------


def _header(path: Path) -> list[str]:
    with path.open(newline="") as handle:
        return next(csv.reader(handle), [])


def load_csv(path: Path, target: str) -> RawData:
    """Features (numeric kept, categorical one-hot) and the `target` column of a CSV file."""
    header, rows = _read_rows(path)
    if target not in header:
        raise DataError(f"dataset {path}: no column named {target!r}. Columns: {', '.join(header)}. "
                        "Pass one of them with --target.")
    columns = {name: [row[i] for row in rows] for i, name in enumerate(header)}
    features, names = [], []
    for name in header:
        if name == target:
            continue
        block, block_names = _encode_column(path, name, columns[name])
        features.append(block)
        names.extend(block_names)
    if not features:
        raise DataError(f"dataset {path}: the target {target!r} is the only column; there are no "
                        "features to learn from. Add feature columns.")
    y = _target(path, target, columns[target])
    return RawData(np.hstack(features).astype(np.float32), y, feature_names=tuple(names))


def _read_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    with path.open(newline="") as handle:
        reader = csv.reader(handle)
        header = [h.strip() for h in next(reader, [])]
        rows = [row for row in reader if row]
    if not header or not rows:
        raise DataError(f"dataset {path}: expected a header row and at least one data row, but the "
                        "file is empty. Write the column names on the first line.")
    for number, row in enumerate(rows, start=2):
        if len(row) != len(header):
            raise DataError(f"dataset {path}: line {number} has {len(row)} fields, but the header has "
                            f"{len(header)}. Fix that line (quote values that contain commas).")
    return header, [[cell.strip() for cell in row] for row in rows]


def _missing(cell: str) -> bool:
    return cell == "" or cell.lower() in ("nan", "na", "null", "none")


def _encode_column(path: Path, name: str, cells: list[str]) -> tuple[np.ndarray, list[str]]:
    """A numeric column as one float column; a categorical one as sorted one-hot columns."""
    gaps = [i for i, cell in enumerate(cells) if _missing(cell)]
    if gaps:
        lines = ", ".join(str(i + 2) for i in gaps[:5])
        raise DataError(f"dataset {path}: column {name!r} has {len(gaps)} missing or NaN value(s), "
                        f"first on line(s) {lines}. Fill them in or drop those rows.")
    numbers = _as_numbers(cells)
    if numbers is not None:
        return numbers[:, None], [name]
    categories = sorted(set(cells))
    index = {c: i for i, c in enumerate(categories)}
    onehot = np.zeros((len(cells), len(categories)), dtype=np.float32)
    onehot[np.arange(len(cells)), [index[c] for c in cells]] = 1.0
    return onehot, [f"{name}={c}" for c in categories]


def _as_numbers(cells: list[str]) -> np.ndarray | None:
    try:
        return np.array([float(cell) for cell in cells], dtype=np.float64)
    except ValueError:
        return None


def _target(path: Path, name: str, cells: list[str]) -> np.ndarray:
    gaps = [i for i, cell in enumerate(cells) if _missing(cell)]
    if gaps:
        raise DataError(f"dataset {path}: target column {name!r} is empty on line(s) "
                        f"{', '.join(str(i + 2) for i in gaps[:5])}. Every row needs a target.")
    numbers = _as_numbers(cells)
    return numbers if numbers is not None else np.array(cells, dtype=str)
