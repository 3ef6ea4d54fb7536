"""sample(trial, SpaceConfig) -> Candidate: the only place that talks to optuna.Trial.

Parameter names are stable (`family`, `width`, `lr`, ...) so studies stay comparable across
versions; a parameter that does not apply (kernel_size for a linear net, momentum for Adam) is not
sampled at all. Per-layer names (`layer1.width`, `layer2.width`, ...; 1 is the first hidden layer)
and per-option names (`adamw.lr`, `sgd.lr`: a parameter given per option of another) are built
here and nowhere else: `layer_name`, `option_name` and `trial_names`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import optuna

from automl_nn.config import RULES, ByOption, Choice, Fixed, Param, Range, Single, SpaceConfig
from automl_nn.defaults import Point
from automl_nn.errors import ConfigError
from automl_nn.spec import ArchSpec, Candidate, TrainSpec


def sample(
    trial: optuna.trial.BaseTrial, space: SpaceConfig, *, excluded_families: Mapping[str, str] | None = None,
    seed: int = 0,
) -> Candidate:
    """Draw one candidate from `space`; families in `excluded_families` are never offered."""
    values: dict[str, Any] = {}
    for name, param, single, names in _applying(space, values, excluded_families):
        for trial_name in names:
            values[trial_name] = _suggest(trial, trial_name, single)
        if isinstance(param, ByOption):
            values[name] = values[names[0]]
    return to_candidate(values, seed)


def _applying(space: SpaceConfig, values: Mapping[str, Any], excluded_families: Mapping[str, str] | None,
              ) -> Iterator[tuple[str, Param, Single, list[str]]]:
    """The space's parameters in sampling order that apply to the values drawn so far (the caller
    fills `values` as it goes), each with its single form and the trial names it is drawn under."""
    for name, param in space.items():
        rule = RULES[name]
        if rule.applies is not None and not rule.applies(values):
            continue
        if name == "family":
            param = restrict_families(param, excluded_families or {})
        single, names = _sampled_as(name, param, values)
        yield name, param, single, names


def layer_name(index: int | str, name: str) -> str:
    """The trial parameter of hidden layer `index` (1-based): `layer2.width`."""
    return f"layer{index}.{name}"


def option_name(option: str, name: str) -> str:
    """The trial parameter of `name` when the option `option` of another one was chosen: `sgd.lr`."""
    return f"{option}.{name}"


def trial_names(name: str, values: Mapping[str, Any], param: Param | None = None) -> list[str]:
    """The trial parameters a vocabulary parameter is sampled as, given the values before it.

    `width` in per_layer mode becomes one `layer{i}.width` per hidden layer; a parameter given per
    option of another (`param` a ByOption) is sampled under that option's name; the rest keep
    their name.
    """
    if isinstance(param, ByOption):
        return [option_name(_option(param, values), name)]
    if name == "width" and values.get("width_mode") == "per_layer":
        return [layer_name(i, name) for i in range(1, int(values["depth"]) + 1)]
    return [name]


def _option(param: ByOption, values: Mapping[str, Any]) -> str:
    return str(values.get(param.key, _default(param.key)))


def _sampled_as(name: str, param: Param, values: Mapping[str, Any]) -> tuple[Single, list[str]]:
    """The plain parameter `param` is at this point of sampling, and its trial names."""
    if not isinstance(param, ByOption):
        return param, trial_names(name, values)
    option = _option(param, values)
    if option not in dict(param.options):
        raise ConfigError(f"space.{name}: gives values per {param.key} for "
                          f"{', '.join(o for o, _ in param.options)}, but {param.key} is {option}. "
                          f"Add an entry for {option}.")
    return param.get(option), trial_names(name, values, param)


def restrict_families(param: Param, excluded: Mapping[str, str]) -> Param:
    """The family parameter without the families that cannot apply to the data."""
    options = param.options if isinstance(param, Choice) else (param.to_raw(),)
    kept = tuple(o for o in options if o not in excluded)
    if not kept:
        reasons = "; ".join(f"{name} {why}" for name, why in excluded.items())
        raise ConfigError(f"space.family: no requested family applies to this data ({reasons}). "
                          "Add a family that fits, such as linear.")
    return Choice(kept) if len(kept) > 1 else Fixed(kept[0])


def _suggest(trial: optuna.trial.BaseTrial, name: str, param: Single) -> Any:
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
    """Per-layer widths, or one width grown by `width_growth` from each layer to the next."""
    names = trial_names("width", values)
    if names != ["width"]:
        return tuple(int(values[name]) for name in names)
    width = int(values.get("width", _default("width")))
    growth = float(values.get("width_growth", _default("width_growth")))
    return tuple(max(1, round(width * growth ** i)) for i in range(depth))


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
        if isinstance(param, ByOption):
            for option, part in param.options:
                if _grid_values(part):
                    out[option_name(option, name)] = _grid_values(part)
            continue
        values = _grid_values(param)
        if not values:
            continue
        if name == "width" and "per_layer" in _options(space["width_mode"]):
            for i in range(1, _max_depth(space) + 1):
                out[layer_name(i, "width")] = values
        out[name] = values
    return out


def _grid_values(param: Single) -> list[Any]:
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

    In per_layer width mode, `width` is shown as the `layer{i}.width` parameters it is sampled as;
    a parameter given per option of another as one row per option (`adamw.lr`, `sgd.lr`).
    """
    rows = []
    for name, param in space.items():
        rule = RULES[name]
        row = {"name": name, "type": rule.kind.__name__, "values": param.describe(),
               "applies": f"when {rule.condition}" if rule.condition else "always", "help": rule.help}
        if isinstance(param, ByOption):
            also = f" and {rule.condition}" if rule.condition else ""
            rows += [{**row, "name": option_name(option, name), "values": part.describe(),
                      "applies": f"when {param.key} is {option}{also}"}
                     for option, part in param.options]
            continue
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


# ---- the warm-start portfolio -------------------------------------------------------------------


def fit_point(space: SpaceConfig, point: Point,
              excluded_families: Mapping[str, str] | None = None) -> dict[str, Any] | None:
    """The trial parameters that place `point` inside `space`; None when its family is not offered.

    Walks the space as `sample` does, so only parameters that apply are given, under their trial
    names. A value outside a range is clipped into it (onto its step); a number that is not one of
    a choice's options becomes the nearest option, any other value the choice's first; a fixed
    parameter keeps its own value. What the point leaves out is left to the sampler.
    """
    values: dict[str, Any] = {}
    params: dict[str, Any] = {}
    for name, param, single, names in _applying(space, values, excluded_families):
        wanted = point.values.get(name)
        for trial_name in names:
            value = _inside(single, wanted, strict=name == "family")
            if value is None:
                return None
            values[trial_name] = value
            if wanted is not None and not isinstance(single, Fixed):
                params[trial_name] = value
        if isinstance(param, ByOption):
            values[name] = values[names[0]]
    return params


def _inside(param: Single, wanted: Any, *, strict: bool) -> Any:
    """`wanted` moved into `param` (see `fit_point`); None when `strict` and it is not offered.

    With nothing wanted, a stand-in (the first option, the low end) for the conditions of later
    parameters: the sampler picks the real value.
    """
    if isinstance(param, Fixed):
        return None if strict and wanted is not None and wanted != param.value else param.value
    if isinstance(param, Choice):
        if wanted is None or wanted in param.options:
            return param.options[0] if wanted is None else wanted
        if _numeric(wanted) and all(_numeric(o) for o in param.options):
            return min(param.options, key=lambda o: abs(float(o) - float(wanted)))
        return None if strict else param.options[0]
    if wanted is None or not _numeric(wanted):
        wanted = param.low
    value = min(max(float(wanted), param.low), param.high)
    if param.step:
        value = min(param.low + round((value - param.low) / param.step) * param.step, param.high)
    return round(value) if param.integer else value


def _numeric(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def portfolio(space: SpaceConfig, points: Sequence[Point],
              excluded_families: Mapping[str, str] | None = None) -> list[tuple[str, dict[str, Any]]]:
    """The points that fit `space` (`fit_point`), by name, each distinct set of parameters once."""
    out: list[tuple[str, dict[str, Any]]] = []
    for point in points:
        params = fit_point(space, point, excluded_families)
        if params and all(params != kept for _, kept in out):
            out.append((point.name, params))
    return out
