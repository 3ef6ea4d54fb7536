"""Export trials as plain PyTorch: readable `model.py`, weights, the spec and provenance.

`model.py` is written out from the trained module tree: torch layers as `nn.X(...)` calls, and the
few automl-nn blocks by their own source (they import only torch). Every export checks itself
before it is written: the generated code is executed, the weights are loaded into it strictly and
its outputs must equal the trial's model on a fixed batch.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import math
import platform
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import FrozenTrial
from torch import nn

from automl_nn import __version__, accel, vocab, weights
from automl_nn.errors import StorageError, UsageError
from automl_nn.nn import build
from automl_nn.spec import ArchSpec, Candidate, TrainSpec
from automl_nn.storage import artifacts, record
from automl_nn.storage.record import TrialRecord
from automl_nn.trial import train_candidate

DATA_ATTR = "data"  # study user attribute written by the search: DataBundle.describe()


# ---- code generation -----------------------------------------------------------------------------


def module_code(module: nn.Module, classes: dict[str, type], indent: int = 1) -> str:
    """Python source that constructs `module` (same structure, same state-dict keys)."""
    cls = type(module)
    if cls is nn.Sequential:
        pad = "    " * (indent + 1)
        children = ",\n".join(pad + module_code(child, classes, indent + 1) for child in module.children())
        return f"nn.Sequential(\n{children},\n{'    ' * indent})"
    if cls.__module__.startswith("torch.nn"):
        if list(module.children()):
            raise UsageError(f"cannot export {cls.__name__} containers; only nn.Sequential nests")
        return f"nn.{module!r}"
    classes[cls.__name__] = cls
    return f"{cls.__name__}({_constructor_args(module, classes, indent)})"


def _constructor_args(module: nn.Module, classes: dict[str, type], indent: int) -> str:
    """Constructor arguments of an automl-nn block, read back from attributes of the same names."""
    params = [p for p in inspect.signature(type(module).__init__).parameters.values()
              if p.name != "self"]
    args = []
    for param in params:
        if not hasattr(module, param.name):
            raise UsageError(f"{type(module).__name__} does not keep its argument {param.name!r} "
                             "as an attribute, so it cannot be written out as code")
        value = getattr(module, param.name)
        code = module_code(value, classes, indent) if isinstance(value, nn.Module) else repr(value)
        args.append(f"{param.name}={code}")
    return ", ".join(args)


def generate_source(model: nn.Module, header: str, data: dict[str, Any]) -> str:
    """The whole `model.py`: imports, block classes, constants, build(), preprocess(), load()."""
    classes: dict[str, type] = {}
    body = module_code(model, classes)
    blocks = "\n\n".join(inspect.getsource(cls).rstrip() for cls in classes.values())
    table = _table_encoding(data)
    return _TEMPLATE.format(
        header=header, blocks=(blocks + "\n\n") if blocks else "", body=body,
        input_shape=tuple(data["input_shape"]), classes=data.get("class_names"),
        mean=data["mean"], std=data["std"], stat_shape=tuple(data["stat_shape"]),
        inputs="raw table rows (see preprocess)" if table else "raw values shaped (N, *INPUT_SHAPE)",
        outputs=_output_words(data), table=_table_code(table) if table else "",
        preprocess=_TABLE_PREPROCESS if table else _PLAIN_PREPROCESS,
        postprocess=_postprocess_code(data),
    )


def _table_encoding(data: dict[str, Any]) -> dict[str, Any] | None:
    """The table encoding preprocess() applies; None when the inputs are not a table's rows.

    A table projected by PCA trains on the projection, which the export does not write out: its
    preprocess then takes the projected features, as for any other dataset.
    """
    encoding = data.get("encoding")
    if not encoding or len(encoding["outputs"]) != math.prod(data["input_shape"]):
        return None
    return dict(encoding)


def _output_words(data: dict[str, Any]) -> str:
    if data.get("task") == "regression":
        return "predictions in the target's units" if "target_mean" in data else "predictions"
    return "class scores (argmax indexes CLASSES)"


def _table_code(encoding: dict[str, Any]) -> str:
    columns = "".join(f"    {column!r},\n" for column in encoding["columns"])
    return _TABLE_CONSTANTS.format(features=encoding["features"], columns=columns,
                                   missing=tuple(encoding["missing"])) + "\n"


def _postprocess_code(data: dict[str, Any]) -> str:
    if "target_mean" in data:
        return _TARGET_POSTPROCESS.format(target_mean=data["target_mean"], target_std=data["target_std"])
    if data.get("task") == "regression":  # recorded before targets were standardized
        return _IDENTITY_POSTPROCESS.format(what="predictions, unchanged (trained on the targets as given)")
    return _IDENTITY_POSTPROCESS.format(what="class scores, unchanged (argmax indexes CLASSES)")


_TEMPLATE = '''"""{header}

Needs only PyTorch:
    from model import load, preprocess, postprocess
    net = load()                          # architecture + trained weights (weights_only=True)
    y = postprocess(net(preprocess(x)))   # x: {inputs}
                                          # y: {outputs}
"""

from __future__ import annotations

import math  # noqa: F401 - some blocks use it
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F  # noqa: F401 - some blocks use it

INPUT_SHAPE = {input_shape}
CLASSES = {classes}
# Standardization statistics of the training split, applied to raw inputs as during the search.
MEAN = torch.tensor({mean}).reshape({stat_shape})
STD = torch.tensor({std}).reshape({stat_shape})
{table}

{blocks}def build() -> nn.Module:
    """The architecture, untrained."""
    return {body}


{preprocess}


{postprocess}


def load(weights: str | Path | None = None) -> nn.Module:
    """The trained network, in eval mode."""
    path = Path(weights) if weights is not None else Path(__file__).with_name("weights.pt")
    model = build()
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval()
'''

_PLAIN_PREPROCESS = '''def preprocess(x: torch.Tensor) -> torch.Tensor:
    """Raw inputs -> what the network was trained on."""
    return (x.float() - MEAN) / STD'''

# These texts go through str.format: braces meant for the generated code are doubled.
_TABLE_CONSTANTS = '''
# The table's feature columns in file order (the target left out), which preprocess() takes, and
# how each is encoded: fitted on the training split during the search (scikit-learn's
# ColumnTransformer) and written out as constants, so that only torch is needed. Numeric columns:
# missing -> median, then (value - mean) / scale, plus a 0/1 indicator where "indicator" is set.
# Categorical columns: one-hot over "categories" (None: missing); any other value encodes as zeros.
FEATURES = {features}
COLUMNS = [
{columns}]
MISSING = {missing}  # cells read as missing, compared stripped and lower-cased


def _is_missing(value: object) -> bool:
    if value is None:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    return isinstance(value, str) and value.strip().lower() in MISSING


def _category(value: object, numbers: bool) -> str:
    """The category a value stands for; in a column of numbers 3, 3.0 and "03" are one."""
    if numbers:
        try:
            number = float(value)  # type: ignore[arg-type]
        except ValueError:
            return str(value).strip()  # not a number: no category of this column
        return str(int(number)) if number.is_integer() else repr(number)
    return str(value).strip()


def _encode_row(row: list[object]) -> list[float]:
    values, indicators, onehot = [], [], []
    for column, value in zip(COLUMNS, row):
        missing = _is_missing(value)
        if column["kind"] == "numeric":
            try:
                number = column["median"] if missing else float(value)  # type: ignore[arg-type]
            except ValueError:
                raise ValueError(f"column {{column['name']!r}}: {{value!r}} is not a number") from None
            values.append((number - column["mean"]) / column["scale"])
            if column["indicator"]:
                indicators.append(1.0 if missing else 0.0)
        else:
            key = None if missing else _category(value, column["numbers"])
            onehot.extend(1.0 if key == category else 0.0 for category in column["categories"])
    return values + indicators + onehot


def encode(rows: list[list[object]] | torch.Tensor) -> torch.Tensor:
    """Raw rows -> encoded features: scaled numbers, missing indicators, then one-hot blocks."""
    if isinstance(rows, torch.Tensor):
        rows = rows.tolist()
    encoded = []
    for number, row in enumerate(rows):
        if len(row) != len(FEATURES):
            raise ValueError(f"row {{number}}: expected {{len(FEATURES)}} values "
                             f"({{', '.join(FEATURES)}}), but got {{len(row)}}")
        encoded.append(_encode_row(list(row)))
    return torch.tensor(encoded, dtype=torch.float32).reshape(len(encoded), *INPUT_SHAPE)'''

_TABLE_PREPROCESS = '''def preprocess(rows: list[list[object]] | torch.Tensor) -> torch.Tensor:
    """Raw table rows -> what the network was trained on.

    rows: a list of rows, each holding the values of FEATURES in that order (the CSV file's columns
    without the target): text as in the file, or numbers; None, NaN or a cell in MISSING (such as
    "" or "?") is a missing value. A float tensor shaped (N, len(FEATURES)) works too, when every
    value is a number (NaN where missing).
    """
    return (encode(rows) - MEAN) / STD'''

_TARGET_POSTPROCESS = '''# The network predicts standardized targets, (y - TARGET_MEAN) / TARGET_STD with the
# training split's mean and std; postprocess() maps its outputs back to the target's units.
TARGET_MEAN = torch.tensor({target_mean})
TARGET_STD = torch.tensor({target_std})


def postprocess(outputs: torch.Tensor) -> torch.Tensor:
    """Network outputs -> predictions in the target's units (those of mse and mae in meta.json)."""
    return outputs * TARGET_STD + TARGET_MEAN'''

_IDENTITY_POSTPROCESS = '''def postprocess(outputs: torch.Tensor) -> torch.Tensor:
    """Network outputs -> {what}."""
    return outputs'''


def import_source(path: Path) -> Any:
    """Import a generated model.py as a fresh module object."""
    spec = importlib.util.spec_from_file_location(f"automl_nn_export_{uuid.uuid4().hex}", path)
    if spec is None or spec.loader is None:
        raise StorageError(f"{path}: cannot be imported as Python.")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ---- exporting trials ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Exported:
    """Where one trial went."""

    trial: int
    directory: Path
    values: dict[str, float]


def export_trial(
    study: optuna.Study, number: int, out: Path, storage_url: str, *,
    retrain: bool = False, onnx: bool = False,
) -> Exported:
    """Write model.py, weights.pt, arch.json and meta.json (and model.onnx) for trial `number`."""
    trial = record.trained_trial(study.get_trials(deepcopy=False), number, study.study_name)
    candidate = Candidate.from_dict(TrialRecord.of(trial).candidate)
    data = _study_data(study, candidate)
    out.mkdir(parents=True, exist_ok=True)
    weights_path = out / "weights.pt"
    if retrain:
        arch = _retrain_to(candidate, data, study, weights_path)
    else:
        artifacts.fetch_weights(trial, artifacts.open_store(storage_url), weights_path)
        arch = trained_arch(trial, candidate)
    model = build(arch, tuple(data["input_shape"]), int(data["n_outputs"]))
    model.load_state_dict(weights.load_state(weights_path))
    model.eval()
    values = ", ".join(f"{k}={v:.4g}" for k, v in zip(study.metric_names or [], trial.values or [],
                                                        strict=False))
    shrunk = f" (gated, shrunk from width {candidate.arch.widths[0]})" if candidate.arch.gated else ""
    header = (f'automl-nn export: study "{study.study_name}", trial {number}: {arch.family}, '
              f"{arch.depth} layers {list(arch.widths)}{shrunk}, {arch.activation}; {values}.")
    source = generate_source(model, header, data)
    _write_checked(out, source, model, data)
    (out / "arch.json").write_text(json.dumps(arch.to_dict(), indent=2) + "\n")
    meta = _meta(study, trial, Candidate(arch, candidate.train), data,
                 artifacts.sha256_file(weights_path), out)
    if candidate.arch.gated:
        meta["searched_arch"] = candidate.arch.to_dict()
    (out / "meta.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
    if onnx:
        export_onnx(model, tuple(data["input_shape"]), out / "model.onnx")
    return Exported(number, out, meta["objectives"])


def trained_arch(trial: FrozenTrial, candidate: Candidate) -> ArchSpec:
    """The architecture of a trial's kept weights: a gated one is stored shrunk to its widths."""
    if not candidate.arch.gated:
        return candidate.arch
    widths = TrialRecord.of(trial).effective_widths
    if widths is None:
        raise StorageError(f"trial {trial.number} is gated but records no effective_widths; "
                           "export it with --retrain.")
    return candidate.arch.shrunk(widths)


def _study_data(study: optuna.Study, candidate: Candidate) -> dict[str, Any]:
    """The study's data description, with the statistics this candidate's inputs were scaled by."""
    data = study.user_attrs.get(DATA_ATTR)
    if data is None:
        raise StorageError(f'study "{study.study_name}" does not record its data description '
                           "(it predates export support); run one more trial to record it.")
    data = dict(data)
    if not candidate.train.normalize:  # trained on raw values: preprocess only converts to float
        data["mean"] = [0.0] * len(data["mean"])
        data["std"] = [1.0] * len(data["std"])
    return data


def _write_checked(out: Path, source: str, model: nn.Module, data: dict[str, Any]) -> None:
    """Write model.py only after the generated code reproduces the trial's outputs exactly."""
    path = out / "model.py"
    path.write_text(source)
    generated = import_source(path).build()
    generated.load_state_dict(model.state_dict(), strict=True)
    generated.eval()
    batch = torch.randn((4, *data["input_shape"]), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        if not torch.equal(generated(batch), model(batch)):
            path.unlink()
            raise RuntimeError("export self-check failed: generated model.py does not reproduce "
                               "the trial's outputs")


def _meta(study: optuna.Study, trial: FrozenTrial, candidate: Candidate, data: dict[str, Any],
          sha: str, out: Path) -> dict[str, Any]:
    names = study.metric_names or [f"objective{i}" for i in range(len(study.directions))]
    rec = TrialRecord.of(trial)
    measured = rec.metrics
    return {
        "study": study.study_name, "trial": trial.number,
        "objectives": dict(zip(names, trial.values or [], strict=False)),
        "units": {name: vocab.METRICS.get(name).unit for name in measured},
        "metrics": measured, "test_accuracy": rec.test.get("accuracy"),
        "arch": candidate.arch.to_dict(), "train": candidate.train.to_dict(), "data": data,
        **({"outputs": "standardized targets: model.py's postprocess() maps them to the target's "
                       "units (outputs * data.target_std + data.target_mean), those of the metrics"}
           if "target_mean" in data else {}),
        "weights_sha256": sha,
        "versions": {"automl-nn": __version__, "torch": torch.__version__,
                     "optuna": optuna.__version__, "python": platform.python_version()},
        "reproduce": f"automl-nn train {out} --seed {candidate.train.seed}",
    }


def _retrain_to(candidate: Candidate, described: dict[str, Any], study: optuna.Study,
                dest: Path) -> ArchSpec:
    """Train the candidate again, save its weights to `dest`; returns the trained architecture."""
    config = study.user_attrs.get("config", {})
    result = train_candidate(candidate, str(described["dataset"]), config.get("data_dir"))
    state = accel.plain(result.model).state_dict()
    torch.save(accel.plain_state({k: v.detach().cpu() for k, v in state.items()}), dest)
    return result.arch


def export_onnx(model: nn.Module, input_shape: tuple[int, ...], path: Path) -> None:
    """model.onnx through torch.onnx, when the onnx package is installed."""
    if importlib.util.find_spec("onnx") is None:
        raise UsageError("--onnx needs the onnx package: pip install onnx onnxscript, then export again.")
    # the batch dimension stays free: the example input has one sample, a user's batches have more
    torch.onnx.export(model, (torch.zeros((1, *input_shape)),), str(path), dynamo=False,
                      input_names=["input"], output_names=["output"],
                      dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})


def export_front(study: optuna.Study, out: Path, storage_url: str, *, retrain: bool = False,
                 onnx: bool = False) -> list[Exported]:
    """Every front trial into out/trial-N/, plus out/index.json sorted by the first objective."""
    from automl_nn.study import front

    done = [export_trial(study, t.number, out / f"trial-{t.number}", storage_url,
                         retrain=retrain, onnx=onnx) for t in front(study)]
    index = [{"trial": e.trial, "directory": e.directory.name, **e.values} for e in done]
    (out / "index.json").write_text(json.dumps(index, indent=2) + "\n")
    return done


# ---- retraining ----------------------------------------------------------------------------------


# ---- loading -------------------------------------------------------------------------------------


def load_exported(directory: str | Path) -> nn.Module:
    """The trained network of an export directory, after checking its weights' SHA-256."""
    directory = Path(directory)
    meta_path, code_path = directory / "meta.json", directory / "model.py"
    for path in (meta_path, code_path, directory / "weights.pt"):
        if not path.is_file():
            raise StorageError(f"{directory}: not an automl-nn export ({path.name} is missing). "
                               "Pass a directory written by `automl-nn export`.")
    meta = json.loads(meta_path.read_text())
    artifacts.check_hash(directory / "weights.pt", str(meta.get("weights_sha256", "")))
    module = import_source(code_path)
    model: nn.Module = module.build()
    model.load_state_dict(weights.load_state(directory / "weights.pt"))
    return model.eval()


@dataclass(frozen=True)
class RetrainJob:
    """What `automl-nn train` runs: a candidate, its dataset, and optional starting weights."""

    candidate: Candidate
    dataset: str
    init_state: dict[str, torch.Tensor] | None


def retrain_job(source: Path, *, dataset: str | None, epochs: int | None, seed: int | None,
                init_weights: bool) -> RetrainJob:
    """Resolve an export (or a bare arch.json) plus overrides into a training job."""
    arch, meta = read_arch(source)
    train = dict(meta.get("train") or {"optimizer": "adam", "lr": 1e-3, "batch_size": 64, "epochs": 5})
    if epochs is not None:
        train["epochs"] = epochs
    if seed is not None:
        train["seed"] = seed
    name = dataset or (meta.get("data") or {}).get("dataset")
    if name is None:
        raise UsageError(f"{source}: a bare arch.json does not say which data it was made for; "
                         "pass --dataset.")
    state = None
    if init_weights:
        if not source.is_dir():
            raise UsageError("--init-weights needs an export directory (with weights.pt and meta.json).")
        artifacts.check_hash(source / "weights.pt", str(meta.get("weights_sha256", "")))
        state = weights.load_state(source / "weights.pt")
    return RetrainJob(Candidate(arch, TrainSpec.from_dict(train)), str(name), state)


def read_arch(path: Path) -> tuple[ArchSpec, dict[str, Any]]:
    """An ArchSpec (and the export's meta, if any) from an export directory or an arch.json."""
    arch_path = path / "arch.json" if path.is_dir() else path
    if not arch_path.is_file():
        raise StorageError(f"{path}: expected an export directory or an arch.json file.")
    try:
        arch = ArchSpec.from_dict(json.loads(arch_path.read_text()))
    except (json.JSONDecodeError, TypeError) as exc:
        raise StorageError(f"{arch_path}: not a valid arch.json ({exc}).") from None
    meta_path = arch_path.with_name("meta.json")
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    return arch, meta
