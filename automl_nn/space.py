"""sample(trial, SpaceConfig) -> Candidate: the only place that talks to optuna.Trial.

Parameter names are stable (`family`, `width`, `lr`, ...) so studies stay comparable across
versions; a parameter that does not apply (kernel_size for a linear net, momentum for Adam) is not
sampled at all.
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
    trial: optuna.Trial, space: SpaceConfig, *, excluded_families: Mapping[str, str] | None = None,
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
        values[name] = _suggest(trial, name, param)
    return to_candidate(values, seed)


def restrict_families(param: Param, excluded: Mapping[str, str]) -> Param:
    """The family parameter without the families that cannot apply to the data."""
    options = param.options if isinstance(param, Choice) else (param.to_raw(),)
    kept = tuple(o for o in options if o not in excluded)
    if not kept:
        reasons = "; ".join(f"{name} {why}" for name, why in excluded.items())
        raise ConfigError(f"space.family: no requested family applies to this data ({reasons}). "
                          "Add a family that fits, such as linear.")
    return Choice(kept) if len(kept) > 1 else Fixed(kept[0])


def _suggest(trial: optuna.Trial, name: str, param: Param) -> Any:
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
        family=str(get("family")), depth=depth, widths=(int(get("width")),) * depth,
        activation=str(get("activation")), kernel_size=int(get("kernel_size")),
    )
    train = TrainSpec(
        optimizer=str(get("optimizer")), lr=float(get("lr")), batch_size=int(get("batch_size")),
        epochs=int(get("epochs")), loss=str(get("loss")), momentum=float(get("momentum")), seed=seed,
    )
    return Candidate(arch, train)


def _default(name: str) -> Any:
    default = RULES[name].default
    if isinstance(default, list):
        return default[0]
    if isinstance(default, dict):
        return default["low"]
    return default


def grid(space: SpaceConfig) -> dict[str, list[Any]]:
    """Every searched parameter's values, for optuna's GridSampler."""
    out: dict[str, list[Any]] = {}
    for name, param in space.items():
        if isinstance(param, Choice):
            out[name] = list(param.options)
        elif isinstance(param, Range):
            step = param.step or 1.0
            points = np.arange(param.low, param.high + step / 2, step)
            out[name] = [int(p) for p in points] if param.integer else [float(p) for p in points]
    return out


def describe(space: SpaceConfig) -> list[dict[str, str]]:
    """One row per parameter: name, type, what is searched, when it applies, what it means."""
    rows = []
    for name, param in space.items():
        rule = RULES[name]
        rows.append({"name": name, "type": rule.kind.__name__, "values": param.describe(),
                     "applies": rule.condition or "always", "help": rule.help})
    return rows
