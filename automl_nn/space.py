"""sample(trial, SpaceConfig) -> Candidate: the only place that talks to optuna.Trial.

Parameter names are stable (`family`, `width`, `lr`, ...) so studies stay comparable across
versions; a parameter that does not apply (kernel_size for a linear net, momentum for Adam) is not
sampled at all. Per-layer names (`layer1.width`, `layer2.width`, ...; 1 is the first hidden layer)
are built here and nowhere else: `layer_name` and `trial_names`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import optuna

from automl_nn.config import RULES, Choice, Fixed, Param, Range, SpaceConfig
from automl_nn.errors import ConfigError
from automl_nn.spec import ArchSpec, Candidate, TrainSpec


def sample(
    trial: optuna.trial.BaseTrial, space: SpaceConfig, *, excluded_families: Mapping[str, str] | None = None,
    seed: int = 0,
) -> Candidate:
    """Draw one candidate from `space`; families in `excluded_families` are never offered."""
    values: dict[str, Any] = {}
    for name, param in space.items():
        rule = RULES[name]
        if rule.applies is not None and not rule.applies(values):
            continue
        if name == "family":
            param = restrict_families(param, excluded_families or {})
        for trial_name in trial_names(name, values):
            values[trial_name] = _suggest(trial, trial_name, param)
    return to_candidate(values, seed)


def layer_name(index: int | str, name: str) -> str:
    """The trial parameter of hidden layer `index` (1-based): `layer2.width`."""
    return f"layer{index}.{name}"


def trial_names(name: str, values: Mapping[str, Any]) -> list[str]:
    """The trial parameters a vocabulary parameter is sampled as, given the values before it.

    `width` in per_layer mode becomes one `layer{i}.width` per hidden layer; the rest keep their name.
    """
    if name == "width" and values.get("width_mode") == "per_layer":
        return [layer_name(i, name) for i in range(1, int(values["depth"]) + 1)]
    return [name]


def restrict_families(param: Param, excluded: Mapping[str, str]) -> Param:
    """The family parameter without the families that cannot apply to the data."""
    options = param.options if isinstance(param, Choice) else (param.to_raw(),)
    kept = tuple(o for o in options if o not in excluded)
    if not kept:
        reasons = "; ".join(f"{name} {why}" for name, why in excluded.items())
        raise ConfigError(f"space.family: no requested family applies to this data ({reasons}). "
                          "Add a family that fits, such as linear.")
    return Choice(kept) if len(kept) > 1 else Fixed(kept[0])


def _suggest(trial: optuna.trial.BaseTrial, name: str, param: Param) -> Any:
    if isinstance(param, Fixed):
        return param.value
    if isinstance(param, Choice):
        return trial.suggest_categorical(name, list(param.options))
    if param.integer:
        step = int(param.step) if param.step else 1
        return trial.suggest_int(name, int(param.low), int(param.high), step=step, log=param.log)
    return trial.suggest_float(name, param.low, param.high, step=param.step, log=param.log)


def to_candidate(values: Mapping[str, Any], seed: int = 0) -> Candidate:
    """A Candidate from sampled values; parameters not sampled take their vocabulary defaults."""
    def get(name: str) -> Any:
        return values.get(name, _default(name))

    depth = int(get("depth"))
    arch = ArchSpec(
        family=str(get("family")), depth=depth, widths=_widths(values, depth),
        activation=str(get("activation")), kernel_size=int(get("kernel_size")),
        stride=int(get("stride")), pool=str(get("pool")), batch_norm=bool(get("batch_norm")),
        dropout=float(get("dropout")), dropout_at=str(get("dropout_at")),
        gated=get("width_mode") == "gated", gate_threshold=float(get("gate_threshold")),
    )
    train = TrainSpec(
        optimizer=str(get("optimizer")), lr=float(get("lr")), batch_size=int(get("batch_size")),
        epochs=int(get("epochs")), loss=str(get("loss")), momentum=float(get("momentum")), seed=seed,
        nesterov=bool(get("nesterov")), weight_decay=float(get("weight_decay")),
        l1=float(get("l1")), l2=float(get("l2")), label_smoothing=float(get("label_smoothing")),
        init=str(get("init")), init_std=float(get("init_std")), schedule=str(get("schedule")),
        lr_gamma=float(get("lr_gamma")), lr_step=int(get("lr_step")),
        normalize=bool(get("normalize")),
        gate_l1=float(get("gate_l1")) if get("width_mode") == "gated" else 0.0,
        gate_lr=float(get("gate_lr")) if get("width_mode") == "gated" else None,
    )
    return Candidate(arch, train)


def _widths(values: Mapping[str, Any], depth: int) -> tuple[int, ...]:
    names = trial_names("width", values)
    if names == ["width"]:
        return (int(values.get("width", _default("width"))),) * depth
    return tuple(int(values[name]) for name in names)


def _default(name: str) -> Any:
    default = RULES[name].default
    if isinstance(default, list):
        return default[0]
    if isinstance(default, dict):
        return default["low"]
    return default


def grid(space: SpaceConfig) -> dict[str, list[Any]]:
    """Every searched parameter's values, for optuna's GridSampler (per-layer widths included)."""
    out: dict[str, list[Any]] = {}
    for name, param in space.items():
        values = _grid_values(param)
        if not values:
            continue
        if name == "width" and "per_layer" in _options(space["width_mode"]):
            for i in range(1, _max_depth(space) + 1):
                out[layer_name(i, "width")] = values
        out[name] = values
    return out


def _grid_values(param: Param) -> list[Any]:
    if isinstance(param, Choice):
        return list(param.options)
    if isinstance(param, Range):
        step = param.step or 1.0
        points = np.arange(param.low, param.high + step / 2, step)
        return [int(p) for p in points] if param.integer else [float(p) for p in points]
    return []


def _options(param: Param) -> list[Any]:
    return list(param.options) if isinstance(param, Choice) else [param.to_raw()]


def _span(param: Param) -> list[Any]:
    return [param.low, param.high] if isinstance(param, Range) else _options(param)


def describe(space: SpaceConfig) -> list[dict[str, str]]:
    """One row per parameter: name, type, what is searched, when it applies, what it means.

    In per_layer width mode, `width` is shown as the `layer{i}.width` parameters it is sampled as.
    """
    rows = []
    for name, param in space.items():
        rule = RULES[name]
        row = {"name": name, "type": rule.kind.__name__, "values": param.describe(),
               "applies": f"when {rule.condition}" if rule.condition else "always", "help": rule.help}
        if name == "width" and "per_layer" in _options(space["width_mode"]):
            rows.append({**row, "name": layer_name("{i}", "width"),
                         "applies": f"when width_mode is per_layer, for i = 1..depth "
                                    f"(up to {_max_depth(space)})"})
            single = [m for m in _options(space["width_mode"]) if m != "per_layer"]
            if not single:
                continue
            row["applies"] = f"when width_mode is {' or '.join(single)}"
        rows.append(row)
    return rows


def _max_depth(space: SpaceConfig) -> int:
    return max(int(d) for d in _span(space["depth"]))
