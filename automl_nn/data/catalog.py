"""Datasets: the registry behind `--dataset NAME|PATH`, dataset options, and the per-process cache.

A dataset is named by a *spec*: a registered name or a file path, plus options, written compactly
as `gaussian-mixture?dim=12&separation=0.5` (or, in a study file, as a mapping
`{name: gaussian-mixture, dim: 12, separation: 0.5}`). `parse_spec` validates it (unknown options
are refused with the valid ones listed) and `DataSpec.to_string()` gives the canonical form that
the study identity stores. `load` turns a spec into a DataBundle once per process.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from automl_nn.data import files, synthetic, vision
from automl_nn.data.arrays import RawData
from automl_nn.data.prepare import SPLIT_SEED as SPLIT_SEED
from automl_nn.data.prepare import TASKS, Preprocess, make_bundle
from automl_nn.data.prepare import DataBundle as DataBundle
from automl_nn.data.prepare import bundle_from_arrays as bundle_from_arrays
from automl_nn.data.prepare import channel_stats as channel_stats
from automl_nn.data.prepare import split_indices as split_indices
from automl_nn.errors import ConfigError, unknown_name
from automl_nn.registry import Registry

Shape = tuple[int, ...]
OptionValue = bool | int | float | str | tuple[float, ...] | tuple[str, ...] | None


@dataclass(frozen=True)
class Option:
    """One dataset option: its type ("int", "float", "bool", "str", "floats", "names"), default, bounds."""

    kind: str
    default: OptionValue
    help: str
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()


# Options every dataset accepts: they act after loading (prepare.py).
COMMON: dict[str, Option] = {
    "task": Option("str", None, "classification or regression (default: inferred)", choices=TASKS),
    "oversample": Option("bool", False, "resample minority classes of the training split"),
    "pca": Option("int", None, "project features on this many principal components", minimum=1),
    "train_size": Option("int", None, "train on a fixed random subset of this many samples "
                         "(validation shrinks in proportion)", minimum=2),
    "val_size": Option("int", None, "validate on a fixed, stratified subset of this many samples",
                       minimum=1),
}
FILE_OPTIONS: dict[str, Option] = {
    "target": Option("str", None, "CSV column to predict"),
    # Column lists change the features, so they are part of the spec (and the study identity); a
    # spec without them reads as before. Names are kept sorted: the order of a list means nothing.
    "categorical": Option("names", None, "CSV columns to one-hot encode (comma-separated)"),
    "numeric": Option("names", None, "CSV columns to read as numbers (comma-separated)"),
}
_SIZE = {"size": Option("int", 1000, "samples", minimum=3),
         "noise": Option("float", 0.0, "noise std", minimum=0.0),
         "seed": Option("int", 0, "generator seed")}


def _sized(size: int, noise: float, **extra: Option) -> dict[str, Option]:
    return {**_SIZE, "size": Option("int", size, "samples", minimum=3),
            "noise": Option("float", noise, "noise std", minimum=0.0), **extra}


@dataclass(frozen=True)
class DatasetInfo:
    """A registered dataset: how to load it and what it is, without loading it."""

    load: Callable[[dict[str, Any], str | None], RawData]
    description: str
    task: str
    shape: Shape
    size: int
    source: str
    options: dict[str, Option] = field(default_factory=dict)
    available: Callable[[str | None], bool] = lambda _data_dir: True  # offline, by file checks


DATASETS: Registry[DatasetInfo] = Registry("dataset")


# ---- specs ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DataSpec:
    """A dataset name or path plus the options that differ from their defaults (sorted)."""

    name: str
    options: tuple[tuple[str, OptionValue], ...] = ()
    is_file: bool = False

    def get(self, key: str) -> OptionValue:
        return dict(self.options).get(key, _options_for(self).get(key, Option("str", None, "")).default)

    def to_string(self) -> str:
        """Canonical compact form, e.g. `sin?frequency=3&noise=0.1` (just the name without options)."""
        if not self.options:
            return self.name
        return self.name + "?" + "&".join(f"{k}={_format(v)}" for k, v in self.options)


def _format(value: OptionValue) -> str:
    if isinstance(value, tuple):
        return ",".join(_format(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    return str(value)


def _options_for(spec: DataSpec) -> dict[str, Option]:
    own = FILE_OPTIONS if spec.is_file else DATASETS.get(spec.name).options
    return {**own, **COMMON}


def parse_spec(value: Any, extra: Mapping[str, Any] | None = None, where: str = "dataset") -> DataSpec:
    """A spec from `name?k=v&...` or a mapping `{name: ..., k: v}`, with `extra` options on top."""
    if isinstance(value, Mapping):
        raw = dict(value)
        if "name" not in raw:
            raise ConfigError(f"{where}: a dataset mapping needs a name, e.g. "
                              "{name: gaussian-mixture, dim: 12}.")
        name, given = str(raw.pop("name")), raw
    elif isinstance(value, str) and value.strip():
        name, _, query = value.strip().partition("?")
        given = _query(query, where)
    else:
        raise ConfigError(f"{where}: expected a dataset name, a file path or a mapping with a name, "
                          f"but got {value!r}.")
    given.update({k: v for k, v in (extra or {}).items() if v is not None})
    is_file = name not in DATASETS and files.is_path(name)
    spec = DataSpec(name if is_file else DATASETS.canonical(name, where), is_file=is_file)
    if is_file:
        files.check_file(Path(name))
    return DataSpec(spec.name, _check_options(spec, given, where), is_file)


def _query(query: str, where: str) -> dict[str, Any]:
    """`k=v&k=v` (also from repeated --data-option k=v) into a mapping of strings."""
    out: dict[str, Any] = {}
    for part in filter(None, query.split("&")):
        key, sep, val = part.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{where}: expected options as key=value joined by &, but got {part!r}.")
        out[key.strip()] = val.strip()
    return out


def _check_options(
    spec: DataSpec, given: Mapping[str, Any], where: str
) -> tuple[tuple[str, OptionValue], ...]:
    valid = _options_for(spec)
    out = []
    for key in sorted(given):
        if key not in valid:
            raise unknown_name(f"{spec.name} option", key, valid, where,
                               shown=[f"{k} ({o.help})" for k, o in valid.items()])
        value = _coerce(given[key], valid[key], f"{where}.{key}")
        if value != valid[key].default:
            out.append((key, value))
    return tuple(out)


def _coerce(value: Any, option: Option, where: str) -> OptionValue:
    if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
        return None
    if option.kind == "bool":
        return _boolean(value, where)
    if option.kind == "str":
        text = str(value).strip()
        if option.choices and text not in option.choices:
            raise ConfigError(f"{where}: expected one of {', '.join(option.choices)}, but got {text!r}.")
        return text
    if option.kind == "names":
        return _names(value, where)
    if option.kind == "floats":
        items = value.split(",") if isinstance(value, str) else value
        items = items if isinstance(items, list | tuple) else [items]
        return tuple(_number(v, "float", option, f"{where}[{i}]") for i, v in enumerate(items))
    return _number(value, option.kind, option, where)


def _names(value: Any, where: str) -> tuple[str, ...] | None:
    """Comma-separated names (or a list of them), sorted and without repeats; none at all: None."""
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple):
        raise ConfigError(f"{where}: expected comma-separated column names, such as suit,rank, "
                          f"but got {value!r}.")
    names = sorted({str(item).strip() for item in items} - {""})
    return tuple(names) or None


def _boolean(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{where}: expected true or false, but got {value!r}.")


def _number(value: Any, kind: str, option: Option, where: str) -> float:
    try:
        number = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number) or (kind == "int" and not number.is_integer()):
        raise ConfigError(f"{where}: expected {'an integer' if kind == 'int' else 'a number'}, "
                          f"but got {value!r}.")
    if option.minimum is not None and number < option.minimum:
        raise ConfigError(f"{where}: must be >= {option.minimum:g}, but got {number:g}.")
    if option.maximum is not None and number > option.maximum:
        raise ConfigError(f"{where}: must be <= {option.maximum:g}, but got {number:g}.")
    return int(number) if kind == "int" else number


# ---- loading -------------------------------------------------------------------------------------

_CACHE: dict[tuple[str, str | None], DataBundle] = {}


def load(spec: DataSpec | str, data_dir: str | None = None) -> DataBundle:
    """The dataset `spec` names, loaded once per process (bad data raises DataError)."""
    spec = parse_spec(spec) if isinstance(spec, str) else spec
    key = (spec.to_string(), data_dir)
    if key not in _CACHE:
        _CACHE[key] = _load(spec, data_dir)
    return _CACHE[key]


_ON_DEVICE: dict[tuple[int, str], tuple[DataBundle, DataBundle]] = {}


def on_device(bundle: DataBundle, device: Any) -> DataBundle:
    """`bundle` with every tensor on `device`, copied there once per process and then reused.

    Every trial, ablation variant or retraining in a process shares the one device copy, so the
    data crosses to a GPU once, not once per trial.
    """
    key = (id(bundle), str(device))
    if key not in _ON_DEVICE:  # the source is kept with its copy, so its id is never reused
        _ON_DEVICE[key] = (bundle, bundle.to(device))
    return _ON_DEVICE[key][1]


def subsample(bundle: DataBundle, n_train: int, n_eval: int | None = None) -> DataBundle:
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


def _load(spec: DataSpec, data_dir: str | None) -> DataBundle:
    options = {k: spec.get(k) for k in _options_for(spec)}
    common = {k: options.pop(k) for k in COMMON}
    if spec.is_file:
        raw = files.load_file(Path(spec.name), options.get("target"),  # type: ignore[arg-type]
                              options.get("categorical") or (),  # type: ignore[arg-type]
                              options.get("numeric") or ())  # type: ignore[arg-type]
    else:
        raw = DATASETS.get(spec.name).load(options, data_dir)
    pre = Preprocess(task=common["task"], oversample=bool(common["oversample"]),  # type: ignore[arg-type]
                     pca=common["pca"], train_size=common["train_size"],  # type: ignore[arg-type]
                     val_size=common["val_size"])  # type: ignore[arg-type]
    return make_bundle(spec.to_string(), raw, pre)


def listing(data_dir: str | None = None) -> list[dict[str, Any]]:
    """One row per dataset for `automl-nn datasets` (file checks only, no loading, no network)."""
    rows = [{"name": name, "shape": "x".join(map(str, info.shape)), "size": info.size,
             "task": info.task, "offline": "yes" if info.available(data_dir) else "no",
             "source": info.source, "options": ", ".join(info.options) or "-"}
            for name, info in DATASETS.items()]
    rows.append({"name": "PATH.npz", "shape": "from file", "size": "-", "task": "inferred",
                 "offline": "yes", "source": "your file: arrays x, y [, x_test, y_test]",
                 "options": "-"})
    rows.append({"name": "PATH.csv", "shape": "from file", "size": "-", "task": "inferred",
                 "offline": "yes", "source": "your file: header row; categorical one-hot",
                 "options": ", ".join(FILE_OPTIONS)})
    return rows


# ---- registrations -------------------------------------------------------------------------------


def _load_digits(options: dict[str, Any], data_dir: str | None) -> RawData:
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images.astype(np.uint8)[:, None, :, :]  # values 0..16, one channel
    return RawData(images, digits.target, task="classification",
                   class_names=tuple(str(c) for c in range(10)))


DATASETS.add("digits", DatasetInfo(
    load=_load_digits, description="scikit-learn's 8x8 handwritten digits (embedded, no download)",
    task="classification", shape=(1, 8, 8), size=1797, source="embedded (scikit-learn)",
))


def _vision(name: str) -> None:
    vset = vision.SETS[name]
    DATASETS.add(name, DatasetInfo(
        load=lambda _options, data_dir: vision.load(name, data_dir), description=vset.description,
        task="classification", shape=vset.shape, size=vset.size, source=f"torchvision {vset.cls}",
        available=lambda data_dir: vision.available(name, data_dir),
    ))


for _name in vision.SETS:
    _vision(_name)


def _generator(fn: Callable[..., RawData]) -> Callable[[dict[str, Any], str | None], RawData]:
    return lambda options, _data_dir: fn(**options)


DATASETS.add("gaussian-mixture", DatasetInfo(
    load=_generator(synthetic.gaussian_mixture),
    description="one Gaussian per class, means `separation` apart per dimension; balanced test set "
                "of size/4 (atomic experiments)",
    task="classification", shape=(12,), size=1250, source="synthetic",
    options=_sized(1000, 1.0,
                   dim=Option("int", 12, "dimensions", minimum=1),
                   classes=Option("int", 2, "classes", minimum=2),
                   separation=Option("float", 1.0, "mean distance per dimension", minimum=0.0),
                   profile=Option("str", "constant", "constant, or harmonic (1/i in dimension i)",
                                  choices=("constant", "harmonic")),
                   imbalance=Option("float", 1.0, "smallest / largest class", minimum=1e-4, maximum=1.0),
                   random_labels=Option("bool", False, "labels drawn at random"),
                   dummy_dims=Option("int", 0, "near-constant extra features", minimum=0),
                   rotate=Option("bool", False, "random rotation of all features")),
), aliases=("gaussians",))
DATASETS.add("two-moons", DatasetInfo(
    load=_generator(synthetic.two_moons), description="two interleaved half circles (atomic experiments)",
    task="classification", shape=(2,), size=1000, source="synthetic", options=_sized(1000, 0.1),
), aliases=("moons",))
DATASETS.add("alternating-line", DatasetInfo(
    load=_generator(synthetic.alternating_line),
    description="points on [-1, 1] in `segments` pieces of alternating class (atomic experiments)",
    task="classification", shape=(1,), size=1000, source="synthetic",
    options=_sized(1000, 0.0, segments=Option("int", 16, "alternating pieces", minimum=2)),
))
DATASETS.add("sin", DatasetInfo(
    load=_generator(synthetic.sine), description="y = sin(frequency x), x on [-1, 1] (atomic experiments)",
    task="regression", shape=(1,), size=200, source="synthetic",
    options=_sized(200, 0.0, frequency=Option("float", 12.0, "angular frequency")),
), aliases=("sine",))
DATASETS.add("polynomial", DatasetInfo(
    load=_generator(synthetic.polynomial),
    description="y = sum c_i x^i, x on [-1, 1] (the atomic experiments: 0,-2,1,1,-2)",
    task="regression", shape=(1,), size=200, source="synthetic",
    options=_sized(200, 0.0, coefficients=Option("floats", (0.0, -2.0, 1.0, 1.0, -2.0),
                                                  "c0,c1,... lowest power first")),
), aliases=("poly",))
DATASETS.add("abs", DatasetInfo(
    load=_generator(synthetic.absolute), description="y = |x|, x on [-1, 1] (atomic experiments)",
    task="regression", shape=(1,), size=200, source="synthetic", options=_sized(200, 0.0),
))
