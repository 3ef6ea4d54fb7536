"""The user's own files: `.npz` (arrays x/y, optionally x_test/y_test) and `.csv` (--target COLUMN).

A CSV file is read as a table: each feature column is numeric or categorical by the rule in
`column_kind` (`--categorical` / `--numeric` override it), and its cells are handed over raw, with
missing cells marked; `data.tables` encodes them with statistics of the training split. Problems
raise DataError naming the file, the column or the row, and what to change.
"""

from __future__ import annotations

import csv
import math
import zipfile
from pathlib import Path

import numpy as np

from automl_nn.data.arrays import Column, RawData
from automl_nn.errors import DataError, unknown_name

EXTENSIONS = (".npz", ".csv")
_NPZ_KEYS = (("x", "y"), ("X", "y"), ("X", "Y"))
# Cells read as missing in every column (compared stripped and lower-cased).
MISSING = ("", "?", "na", "n/a", "nan", "null", "none")
# An integer column is categorical by default when it holds at most MAX_CODES distinct values and
# has at least ROWS_PER_CODE rows per value (distinct values at most 5% of the rows): codes such as
# card suits and ranks, not counts or measurements, and enough rows to learn a weight per value.
MAX_CODES = 20
ROWS_PER_CODE = 20


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


def load_file(path: Path, target: str | None, categorical: tuple[str, ...] = (),
              numeric: tuple[str, ...] = ()) -> RawData:
    """Read a user's .npz or .csv file into RawData."""
    check_file(path)
    if path.suffix.lower() == ".npz":
        for flag, given in (("--target", target), ("--categorical", categorical), ("--numeric", numeric)):
            if given:
                raise DataError(f"dataset {path}: {flag} names CSV columns, but this is an .npz file "
                                f"of arrays x and y. Drop {flag}.")
        return load_npz(path)
    if target is None:
        raise DataError(f"dataset {path}: a CSV file needs --target COLUMN (the column to predict). "
                        f"Columns: {', '.join(_header(path))}.")
    return load_csv(path, target, categorical, numeric)


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


def load_csv(path: Path, target: str, categorical: tuple[str, ...] = (),
             numeric: tuple[str, ...] = ()) -> RawData:
    """The feature columns (raw cells, each with its kind) and the `target` column of a CSV file."""
    header, rows = _read_rows(path)
    if target not in header:
        raise DataError(f"dataset {path}: no column named {target!r}. Columns: {', '.join(header)}. "
                        "Pass one of them with --target.")
    names = [name for name in header if name != target]
    if not names:
        raise DataError(f"dataset {path}: the target {target!r} is the only column; there are no "
                        "features to learn from. Add feature columns.")
    _check_overrides(path, target, names, categorical, numeric)
    cells = {name: [row[i] for row in rows] for i, name in enumerate(header)}
    columns = tuple(column_kind(path, name, cells[name], categorical, numeric) for name in names)
    x = np.empty((len(rows), len(names)), dtype=object)
    for j, column in enumerate(columns):
        x[:, j] = _raw_cells(path, column, cells[column.name])
    y = _target(path, target, cells[target])
    return RawData(x, y, feature_names=tuple(names), columns=columns)


def _check_overrides(path: Path, target: str, names: list[str], categorical: tuple[str, ...],
                     numeric: tuple[str, ...]) -> None:
    """--categorical / --numeric name feature columns of this file, and none in both."""
    for flag, given in (("--categorical", categorical), ("--numeric", numeric)):
        for name in given:
            if name == target:
                raise DataError(f"dataset {path}: {flag} names {name!r}, the target. It lists "
                                "feature columns; drop the target from it.")
            if name not in names:
                raise unknown_name("column", name, names, f"dataset {path}: {flag}", error=DataError)
    both = sorted(set(categorical) & set(numeric))
    if both:
        raise DataError(f"dataset {path}: {', '.join(map(repr, both))} given to both --categorical "
                        "and --numeric. Name each column in one of them.")


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


def is_missing(cell: str) -> bool:
    """Whether a CSV cell is a missing value (see MISSING)."""
    return cell.strip().lower() in MISSING


def column_kind(path: Path, name: str, cells: list[str], categorical: tuple[str, ...] = (),
                numeric: tuple[str, ...] = ()) -> Column:
    """Numeric or categorical, by the documented rule (--categorical / --numeric first).

    A column with a cell that is not a number is categorical; a column of whole numbers with few
    distinct values (at most MAX_CODES, and at least ROWS_PER_CODE rows per value) is categorical;
    any other column of numbers is numeric. Missing cells are left out of the count.
    """
    present = [cell for cell in cells if not is_missing(cell)]
    if not present:
        raise DataError(f"dataset {path}: column {name!r} has no values (every cell is missing). "
                        "Drop the column.")
    numbers = _as_numbers(present)
    if name in numeric:
        if numbers is None:
            line, cell = next((i + 2, c) for i, c in enumerate(cells)
                              if not is_missing(c) and _as_numbers([c]) is None)
            raise DataError(f"dataset {path}: --numeric names column {name!r}, but line {line} "
                            f"holds {cell!r}, which is not a number. Fix the cell, or drop {name!r} "
                            "from --numeric.")
        return Column(name, "numeric", "--numeric")
    if name in categorical:
        return Column(name, "categorical", "--categorical", numbers=numbers is not None)
    if numbers is None:
        return Column(name, "categorical", "text")
    distinct = len(np.unique(numbers))
    if np.all(np.mod(numbers, 1) == 0) and distinct <= MAX_CODES and distinct * ROWS_PER_CODE <= len(cells):
        return Column(name, "categorical", "few integer codes", numbers=True)
    return Column(name, "numeric", "numbers")


def _raw_cells(path: Path, column: Column, cells: list[str]) -> list[object]:
    """A column's cells as the encoder takes them: floats (NaN missing) or text (None missing)."""
    if column.kind == "numeric":
        values: list[object] = [math.nan if is_missing(c) else float(c) for c in cells]
        bad = [i for i, v in enumerate(values) if isinstance(v, float) and math.isinf(v)]
        if bad:
            raise DataError(f"dataset {path}: column {column.name!r} holds an infinite value on line "
                            f"{bad[0] + 2}. Replace it by a number, or leave the cell empty (missing).")
        return values
    return [None if is_missing(c) else category(c, column.numbers) for c in cells]


def category(cell: str, numbers: bool) -> str:
    """The category a cell stands for: the text, or for a column of numbers their canonical text.

    So `3`, `3.0` and `03` are one category of an integer-coded column (and `0.5`, `.5` another).
    """
    if not numbers:
        return cell.strip()
    value = float(cell)
    return str(int(value)) if value.is_integer() else repr(value)


def _as_numbers(cells: list[str]) -> np.ndarray | None:
    try:
        return np.array([float(cell) for cell in cells], dtype=np.float64)
    except ValueError:
        return None


def _target(path: Path, name: str, cells: list[str]) -> np.ndarray:
    gaps = [i for i, cell in enumerate(cells) if is_missing(cell)]
    if gaps:
        raise DataError(f"dataset {path}: target column {name!r} is empty on line(s) "
                        f"{', '.join(str(i + 2) for i in gaps[:5])}. Every row needs a target.")
    numbers = _as_numbers(cells)
    return numbers if numbers is not None else np.array(cells, dtype=str)
