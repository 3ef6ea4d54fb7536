"""StudyConfig: a study file (YAML) plus CLI flags, validated once into frozen dataclasses.

In a study file's `space`, a scalar is fixed, a list is a choice and a mapping
`{low, high, log, step}` is a range. Unknown keys, unknown names and bad ranges are rejected with
their key path (`space.width.low`), before anything touches storage.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from automl_nn import blocks, data, losses, metrics, optim
from automl_nn.errors import ConfigError, suggest

Value = bool | int | float | str


@dataclass(frozen=True)
class Fixed:
    """A parameter that is not searched."""

    value: Value

    def describe(self) -> str:
        return f"fixed {self.value!r}"

    def to_raw(self) -> Any:
        return self.value


@dataclass(frozen=True)
class Choice:
    """A categorical parameter: one of `options`."""

    options: tuple[Value, ...]

    def describe(self) -> str:
        return "choice of " + ", ".join(repr(o) for o in self.options)

    def to_raw(self) -> Any:
        return list(self.options)


@dataclass(frozen=True)
class Range:
    """A numeric range; `integer` follows the parameter's type, `log` samples on a log scale."""

    low: float
    high: float
    log: bool = False
    step: float | None = None
    integer: bool = False

    def describe(self) -> str:
        kind = "int" if self.integer else "float"
        extra = " log" if self.log else (f" step {self.step:g}" if self.step else "")
        return f"{kind} range [{self.low:g}, {self.high:g}]{extra}"

    def to_raw(self) -> Any:
        num = int if self.integer else float
        raw: dict[str, Any] = {"low": num(self.low), "high": num(self.high)}
        if self.log:
            raw["log"] = True
        if self.step is not None:
            raw["step"] = num(self.step)
        return raw


Param = Fixed | Choice | Range


@dataclass(frozen=True)
class Rule:
    """What a space parameter accepts: its type, valid names, lower bound, and when it applies."""

    kind: type
    default: Any
    names: Callable[[], list[str]] | None = None
    minimum: float | None = None
    exclusive_minimum: bool = False
    maximum: float | None = None
    applies: Callable[[Mapping[str, Any]], bool] | None = None
    condition: str = ""
    help: str = ""


def _conv_family(values: Mapping[str, Any]) -> bool:
    return bool(blocks.FAMILIES.get(str(values["family"])).convolutional)


def _has_momentum(values: Mapping[str, Any]) -> bool:
    return bool(optim.OPTIMIZERS.get(str(values["optimizer"])).has_momentum)


# The search-space vocabulary, in sampling order. A rule's `applies` sees the values sampled before it.
RULES: dict[str, Rule] = {
    "family": Rule(str, ["linear", "conv2d", "conv2d_linear"], blocks.FAMILIES.names,
                   help="layer family"),
    "depth": Rule(int, {"low": 1, "high": 3}, minimum=1, help="number of hidden layers"),
    "width": Rule(int, {"low": 8, "high": 128, "log": True}, minimum=1,
                  help="units (linear) or channels (conv) per hidden layer"),
    "kernel_size": Rule(int, 3, minimum=1, applies=_conv_family, condition="family is convolutional",
                        help="convolution kernel size"),
    "activation": Rule(str, ["relu", "selu", "tanh", "sigmoid", "none"], blocks.ACTIVATIONS.names,
                       help="activation after each hidden layer"),
    "loss": Rule(str, "cross_entropy", losses.LOSSES.names, help="training loss"),
    "optimizer": Rule(str, ["adam", "sgd"], optim.OPTIMIZERS.names, help="optimizer"),
    "momentum": Rule(float, 0.9, minimum=0.0, maximum=1.0, applies=_has_momentum,
                     condition="optimizer has momentum", help="momentum"),
    "lr": Rule(float, {"low": 1e-4, "high": 1e-1, "log": True}, minimum=0.0, exclusive_minimum=True,
               help="learning rate"),
    "batch_size": Rule(int, [32, 64, 128], minimum=1, help="training batch size"),
    "epochs": Rule(int, 5, minimum=1, help="training epochs per trial"),
}

SAMPLERS = ("tpe", "nsga2", "random", "qmc", "grid", "gp")
PRUNERS = ("none",)
# Dataset options that also come as CLI flags (--target, --task, --oversample, --pca, --data-option).
DATA_FLAGS = ("target", "task", "oversample", "pca", "data_options")
# Losses that accept float targets (the rest need class labels).
REGRESSION_LOSSES = ("mse", "mae", "huber", "l1", "smooth_l1")
# Keys of a study file besides `space`; each may also come from a CLI flag.
TOP_KEYS = ("dataset", "objectives", "trials", "timeout", "study_name", "storage", "sampler",
            "pruner", "seed", "data_dir", "space")


@dataclass(frozen=True)
class SpaceConfig:
    """Every vocabulary parameter, fixed, a choice or a range (missing ones take their defaults)."""

    params: tuple[tuple[str, Param], ...]

    def __getitem__(self, name: str) -> Param:
        return dict(self.params)[name]

    def items(self) -> tuple[tuple[str, Param], ...]:
        return self.params

    def to_raw(self) -> dict[str, Any]:
        return {name: param.to_raw() for name, param in self.params}


@dataclass(frozen=True)
class StudyConfig:
    """A whole search request. `identity()` is what a resumed study must match."""

    dataset: str = "digits"
    objectives: tuple[str, ...] = ("accuracy", "params")
    trials: int = 20
    timeout: float | None = None
    study_name: str = "automl-nn"
    storage: str | None = None
    sampler: str = "tpe"
    pruner: str = "none"
    seed: int | None = None
    data_dir: str | None = None
    space: SpaceConfig = field(default_factory=lambda: parse_space({}))
    # Keys (top-level and space parameters) the user set; the others may follow the data's task.
    explicit: frozenset[str] = frozenset()

    def identity(self) -> dict[str, Any]:
        """The part of the config that defines the study: data (with its options), objectives, space."""
        return {"dataset": self.dataset, "objectives": list(self.objectives),
                "space": self.space.to_raw()}

    def identity_hash(self) -> str:
        blob = json.dumps(self.identity(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def directions(self) -> list[str]:
        return [metrics.METRICS.get(name).direction for name in self.objectives]

    def to_raw(self) -> dict[str, Any]:
        raw = {key: getattr(self, key) for key in TOP_KEYS if key != "space"}
        raw["objectives"] = list(self.objectives)
        raw["space"] = self.space.to_raw()
        return raw


# ---- parsing -------------------------------------------------------------------------------------


def load_file(path: str | Path) -> dict[str, Any]:
    """Read a study file into a plain mapping; missing files and bad YAML raise ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"study file {path}: no such file. Pass the path of a YAML study file, "
                          "e.g. studies/digits-quick.yaml.")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"study file {path}: not valid YAML ({exc}). Fix the syntax.") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"study file {path}: expected a mapping of keys "
                          f"({', '.join(TOP_KEYS)}), but got {type(raw).__name__}.")
    return raw


def resolve(raw: Mapping[str, Any], overrides: Mapping[str, Any] | None = None) -> StudyConfig:
    """Merge a study file's mapping with CLI overrides (None = not given) and validate it all."""
    merged = dict(raw)
    _reject_unknown(merged, TOP_KEYS, "")
    space_raw = dict(merged.pop("space", None) or {})
    if not isinstance(space_raw, dict):
        raise ConfigError(f"space: expected a mapping of parameter names, but got {space_raw!r}.")
    overrides = dict(overrides or {})
    data_flags = {key: overrides.pop(key, None) for key in DATA_FLAGS}
    for key, value in overrides.items():
        if value is None:
            continue
        if key in RULES:
            space_raw[key] = value
        else:
            merged[key] = value
    merged["dataset"] = _dataset(merged.get("dataset", StudyConfig.dataset), data_flags)
    explicit = frozenset(k for k, v in merged.items() if v is not None) | frozenset(space_raw)
    config = StudyConfig(space=parse_space(space_raw), explicit=explicit, **_parse_top(merged))
    _check_grid(config)
    return config


def _reject_unknown(mapping: Mapping[str, Any], allowed: tuple[str, ...] | list[str], where: str) -> None:
    for key in mapping:
        if key not in allowed:
            path = f"{where}.{key}" if where else str(key)
            raise ConfigError(f"{path}: unknown key.{suggest(str(key), allowed)} "
                              f"Valid keys here: {', '.join(allowed)}.")


def _parse_top(raw: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "dataset" in raw:
        out["dataset"] = raw["dataset"]
    if "objectives" in raw:
        out["objectives"] = _objectives(raw["objectives"])
    if "trials" in raw:
        out["trials"] = _positive_int(raw["trials"], "trials")
    if raw.get("timeout") is not None:
        out["timeout"] = _positive_number(raw["timeout"], "timeout")
    for key in ("study_name", "storage", "data_dir"):
        if raw.get(key) is not None:
            out[key] = _nonempty_str(raw[key], key)
    if "sampler" in raw:
        out["sampler"] = _one_of(raw["sampler"], SAMPLERS, "sampler")
    if "pruner" in raw:
        out["pruner"] = _one_of(raw["pruner"], PRUNERS, "pruner")
    if raw.get("seed") is not None:
        out["seed"] = _int(raw["seed"], "seed")
    return out


def _dataset(value: Any, flags: Mapping[str, Any]) -> str:
    """The canonical dataset spec string, with CLI dataset flags applied over the file's options."""
    extra = {k: v for k, v in flags.items() if k != "data_options" and v is not None}
    for item in flags.get("data_options") or ():
        key, sep, val = str(item).partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--data-option: expected KEY=VALUE, such as dim=12, but got {item!r}.")
        extra[key.strip()] = val.strip()
    return data.parse_spec(value, extra).to_string()


def _objectives(value: Any) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not items:
        raise ConfigError(f"objectives: expected 1 to 4 names such as accuracy,params, but got {value!r}.")
    names = tuple(metrics.METRICS.canonical(str(item).strip(), "objectives") for item in items)
    if len(names) > 4:
        raise ConfigError(f"objectives: at most 4 objectives are supported, but got {len(names)} "
                          f"({', '.join(names)}). Drop some or turn them into constraints.")
    if len(set(names)) != len(names):
        raise ConfigError(f"objectives: each objective may appear once, but got {', '.join(names)}.")
    return names


def _check_grid(config: StudyConfig) -> None:
    if config.sampler != "grid":
        return
    for name, param in config.space.items():
        if isinstance(param, Range) and (param.step is None and not param.integer):
            raise ConfigError(f"space.{name}: the grid sampler needs every range to be enumerable, "
                              f"but got a continuous {param.describe()}. Give it a step, or a list.")


# ---- scalar checks -------------------------------------------------------------------------------


def _int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
        raise ConfigError(f"{where}: expected an integer, but got {value!r}.")
    return value


def _positive_int(value: Any, where: str) -> int:
    number = _int(value, where)
    if number < 1:
        raise ConfigError(f"{where}: must be at least 1, but got {number}.")
    return number


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool):
        raise ConfigError(f"{where}: expected a number, but got {value!r}.")
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: expected a number, but got {value!r}.") from None


def _positive_number(value: Any, where: str) -> float:
    number = _number(value, where)
    if not number > 0 or not math.isfinite(number):
        raise ConfigError(f"{where}: must be a positive number, but got {value!r}.")
    return number


def _nonempty_str(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}: expected a non-empty string, but got {value!r}.")
    return value.strip()


def _one_of(value: Any, valid: tuple[str, ...], where: str) -> str:
    name = _nonempty_str(value, where)
    if name not in valid:
        raise ConfigError(f'{where}: unknown {where} "{name}".{suggest(name, valid)} '
                          f"Valid names: {', '.join(valid)}.")
    return name


# ---- the space -----------------------------------------------------------------------------------


def parse_space(raw: Mapping[str, Any]) -> SpaceConfig:
    """Validate a `space` mapping; parameters it leaves out take the vocabulary's defaults."""
    _reject_unknown(raw, list(RULES), "space")
    params = []
    for name, rule in RULES.items():
        value = raw.get(name, rule.default)
        params.append((name, parse_param(name, value, rule)))
    return SpaceConfig(tuple(params))


def parse_param(name: str, value: Any, rule: Rule) -> Param:
    """Fixed (scalar), Choice (list) or Range (mapping), checked against `rule`."""
    where = f"space.{name}"
    if isinstance(value, dict):
        return _parse_range(value, rule, where)
    if isinstance(value, list | tuple):
        if not value:
            raise ConfigError(f"{where}: a choice needs at least one option, but got an empty list.")
        options = tuple(_scalar(v, rule, f"{where}[{i}]") for i, v in enumerate(value))
        if len(set(options)) != len(options):
            raise ConfigError(f"{where}: choices must be distinct, but got {list(value)!r}.")
        return Fixed(options[0]) if len(options) == 1 else Choice(options)
    if isinstance(value, str) and "," in value:  # a CLI flag such as --activation relu,tanh
        return parse_param(name, [v.strip() for v in value.split(",")], rule)
    if isinstance(value, str) and ":" in value and rule.kind in (int, float):
        return _parse_range(_flag_range(value, where), rule, where)
    return Fixed(_scalar(value, rule, where))


def _scalar(value: Any, rule: Rule, where: str) -> Value:
    if rule.kind is str:
        # YAML reads `none` as a string but `null`/`~` as None; both mean "no such layer".
        name = "none" if value is None else _nonempty_str(value, where)
        if rule.names is not None:
            valid = rule.names()
            if name not in valid:
                raise ConfigError(f'{where}: unknown name "{name}".{suggest(name, valid)} '
                                  f"Valid names: {', '.join(valid)}.")
        return name
    if rule.kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, but got {value!r}.")
        return value
    number: Value = _int(value, where) if rule.kind is int else _number(value, where)
    _check_bounds(float(number), rule, where)
    return number


def _check_bounds(number: float, rule: Rule, where: str) -> None:
    if not math.isfinite(number):
        raise ConfigError(f"{where}: must be finite, but got {number!r}.")
    if rule.minimum is not None:
        too_low = number <= rule.minimum if rule.exclusive_minimum else number < rule.minimum
        if too_low:
            sign = ">" if rule.exclusive_minimum else ">="
            raise ConfigError(f"{where}: must be {sign} {rule.minimum:g}, but got {number:g}.")
    if rule.maximum is not None and number > rule.maximum:
        raise ConfigError(f"{where}: must be <= {rule.maximum:g}, but got {number:g}.")


def _flag_range(text: str, where: str) -> dict[str, Any]:
    """`low:high`, `low:high:log` or `low:high:STEP` from a CLI flag, as a study-file mapping."""
    parts = [p.strip() for p in text.split(":")]
    if len(parts) not in (2, 3) or not all(parts):
        raise ConfigError(f"{where}: expected low:high, low:high:log or low:high:step, "
                          f"but got {text!r}.")
    raw: dict[str, Any] = {"low": parts[0], "high": parts[1]}
    if len(parts) == 3:
        raw["log" if parts[2] == "log" else "step"] = True if parts[2] == "log" else parts[2]
    return raw


def _parse_range(raw: Mapping[str, Any], rule: Rule, where: str) -> Range:
    if rule.kind not in (int, float):
        raise ConfigError(f"{where}: a range {{low, high}} needs a numeric parameter; "
                          f"give a list of names instead, e.g. [a, b].")
    _reject_unknown(raw, ["low", "high", "log", "step"], where)
    for key in ("low", "high"):
        if key not in raw:
            raise ConfigError(f"{where}: a range needs both low and high, but {key} is missing.")
    low = float(_scalar(raw["low"], rule, f"{where}.low"))
    high = float(_scalar(raw["high"], rule, f"{where}.high"))
    log = raw.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(f"{where}.log: expected true or false, but got {log!r}.")
    if low > high:
        raise ConfigError(f"{where}: must satisfy low <= high, but got low={low:g}, high={high:g}.")
    if log and low <= 0:
        raise ConfigError(f"{where}: a log range needs low > 0, but got low={low:g}. "
                          "Raise low or drop log: true.")
    step = _parse_step(raw.get("step"), low, high, log, rule, where)
    return Range(low, high, log, step, integer=rule.kind is int)


def _parse_step(raw: Any, low: float, high: float, log: bool, rule: Rule, where: str) -> float | None:
    if raw is None:
        return None
    step = _int(raw, f"{where}.step") if rule.kind is int else _number(raw, f"{where}.step")
    if step <= 0:
        raise ConfigError(f"{where}.step: must be > 0, but got {step:g}.")
    if log:
        raise ConfigError(f"{where}: step and log cannot be combined; drop one of them.")
    span = (high - low) / step
    if abs(span - round(span)) > 1e-9:
        raise ConfigError(f"{where}: high - low must be a multiple of step, but got "
                          f"low={low:g}, high={high:g}, step={step:g}.")
    return float(step)


def _values(param: Param) -> list[Any]:
    if isinstance(param, Fixed):
        return [param.value]
    if isinstance(param, Choice):
        return list(param.options)
    return [param.low, param.high]


def for_data(config: StudyConfig, bundle: data.DataBundle) -> StudyConfig:
    """`config` with task-dependent defaults settled, then checked against the data.

    A regression task turns the default objectives into (mse, params) and the default loss into mse;
    what the user chose is kept, and refused here if it cannot apply.
    """
    if bundle.task == "regression":
        changes: dict[str, Any] = {}
        if "objectives" not in config.explicit:
            changes["objectives"] = ("mse", "params")
        if "loss" not in config.explicit:
            params = tuple((n, Fixed("mse") if n == "loss" else p) for n, p in config.space.items())
            changes["space"] = SpaceConfig(params)
        config = replace(config, **changes)
    check_against_data(config, bundle)
    return config


def check_against_data(config: StudyConfig, bundle: data.DataBundle) -> None:
    """Checks that need the data: batch sizes that fit, and at least one family that applies."""
    too_big = [v for v in _values(config.space["batch_size"]) if int(v) > bundle.n_train]
    if too_big:
        raise ConfigError(f"space.batch_size: {too_big[0]} is larger than the training split of "
                          f"{bundle.name} ({bundle.n_train} samples). Use batch sizes <= "
                          f"{bundle.n_train}.")
    families = [str(f) for f in _values(config.space["family"])]
    excluded = {name: blocks.FAMILIES.get(name).supports(bundle.input_shape) for name in families}
    if all(excluded.values()):
        reasons = "; ".join(f"{name} {why}" for name, why in excluded.items())
        raise ConfigError(f"space.family: no requested family applies to {bundle.name} "
                          f"({reasons}). Add a family that fits, such as linear.")
    for metric in config.objectives:
        if metric in ("accuracy", "error") and bundle.task != "classification":
            raise ConfigError(f"objectives: {metric} needs a classification task, but "
                              f"{bundle.name} is a {bundle.task} task. Use mse, mae or r2.")
        if metric in ("mse", "mae", "r2") and bundle.task != "regression":
            raise ConfigError(f"objectives: {metric} needs a regression task, but {bundle.name} is "
                              f"a {bundle.task} task. Use accuracy, error or loss, or --task "
                              "regression.")
    if bundle.task == "regression":
        wrong = [str(v) for v in _values(config.space["loss"]) if v not in REGRESSION_LOSSES]
        if wrong:
            raise ConfigError(f"space.loss: {', '.join(wrong)} needs class labels, but {bundle.name} "
                              f"is a regression task. Use one of {', '.join(REGRESSION_LOSSES)} "
                              "(or leave loss out: mse is the regression default).")
