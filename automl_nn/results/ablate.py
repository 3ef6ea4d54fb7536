"""One factor at a time from a baseline (the MNIST parameters study's method): `automl-nn ablate STUDY`.

The baseline is a trial of the study: the one `--trial` names, else the knee of the front (the
best trial of a single-objective study). Each factor is a parameter the baseline trial sampled;
it is varied alone over the range the study gave it (every option of a choice; `points` values of
a range, log-spaced when the range is log) while every other parameter keeps the baseline's value,
and each variant is trained as a trial would be (`trial.train_candidate`: same seed, same data).
A parameter that only applies at a variant (momentum once the optimizer is sgd) takes a neutral
value: the vocabulary default when the study's range holds it, else the middle of the range.

Results: one HTML page with the learning curves of every factor (plotly, self-contained) and a
JSON summary with each variant's final validation and test accuracy.
"""

from __future__ import annotations

import html
import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import plotly.colors
import plotly.graph_objects as go
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import FrozenTrial
from plotly.subplots import make_subplots

from automl_nn import space
from automl_nn.accel import AccelConfig
from automl_nn.config import RULES, ByOption, Choice, Range, SpaceConfig, parse_space
from automl_nn.errors import TrialFailure, UsageError, unknown_name
from automl_nn.results import decide
from automl_nn.results.page import page
from automl_nn.spec import Candidate
from automl_nn.storage import record
from automl_nn.storage.record import TrialRecord
from automl_nn.trial import train_candidate

log = logging.getLogger(__name__)

DEFAULT_POINTS = 5
_LAYER = "layer"


class AblateError(UsageError):
    """A baseline, factor or point count that cannot be ablated."""


@dataclass(frozen=True)
class Variant:
    """One training run: the baseline with one factor set to `value`."""

    value: Any
    baseline: bool  # the baseline's own value of this factor
    accuracy: float | None  # final validation accuracy (None when training failed)
    test_accuracy: float | None
    curve: list[dict[str, float]] = field(default_factory=list)  # per-epoch validation metrics
    error: str | None = None


@dataclass
class Ablation:
    """The baseline and, per factor, its variants in the order of their values."""

    study: str
    dataset: str
    trial: int
    params: dict[str, Any]
    factors: dict[str, list[Variant]]

    def to_dict(self) -> dict[str, Any]:
        return {"study": self.study, "dataset": self.dataset,
                "baseline": {"trial": self.trial, "params": self.params},
                "factors": {name: [asdict(v) for v in variants]
                            for name, variants in self.factors.items()}}


# ---- the baseline and its factors ----------------------------------------------------------------


def baseline_trial(study: optuna.Study, number: int | None) -> FrozenTrial:
    """Trial `number`, or the knee of the front; it must be a complete, trained trial."""
    if number is None:
        chosen = decide.knee(study)
        if chosen is None:
            raise AblateError(f'study "{study.study_name}" has no complete trial to start from; '
                              "run `automl-nn search` first.")
        return chosen
    return record.trained_trial(study.get_trials(deepcopy=False), number, study.study_name)


def choose_factors(trial: FrozenTrial, names: Sequence[str] | None) -> list[str]:
    """The factors to vary: `names`, or every parameter the baseline trial sampled."""
    searched = list(trial.distributions)
    if not names:
        if not searched:
            raise AblateError(f"trial {trial.number} sampled no parameter: its study searches "
                              "nothing, so there is no factor to vary.")
        return searched
    for name in names:
        if name not in trial.distributions:
            raise unknown_name(f"factor of trial {trial.number}", name, searched, "--factors",
                               error=AblateError)
    return list(names)


def factor_values(distribution: BaseDistribution, points: int) -> list[Any]:
    """Every option of a choice; `points` values spread over a range (log-spaced when log)."""
    if isinstance(distribution, CategoricalDistribution):
        return list(distribution.choices)
    if not isinstance(distribution, IntDistribution | FloatDistribution):
        raise AblateError(f"cannot vary a parameter of kind {type(distribution).__name__}.")
    low, high = float(distribution.low), float(distribution.high)
    spread = np.geomspace(low, high, points) if distribution.log else np.linspace(low, high, points)
    step = distribution.step
    if step is not None:  # stay on the range's grid
        spread = low + np.round((spread - low) / step) * step
    if isinstance(distribution, IntDistribution):
        return sorted({int(np.rint(v)) for v in spread})
    return sorted({float(v) for v in spread})


def _neutral(name: str, param: Choice | Range) -> Any:
    """A value for a parameter the baseline never sampled (it did not apply there)."""
    if isinstance(param, Choice):
        return param.options[0]
    default = RULES[name].default
    if isinstance(default, int | float) and not isinstance(default, bool) \
            and param.low <= default <= param.high:
        return default
    middle = math.sqrt(param.low * param.high) if param.log else (param.low + param.high) / 2
    return round(middle) if param.integer else middle


def variant_params(base: Mapping[str, Any], factor: str, value: Any,
                   space_config: SpaceConfig) -> dict[str, Any]:
    """The baseline's parameters with `factor` set to `value`, plus values for any that newly apply.

    A per-layer width that newly applies (depth grew) copies the deepest layer the baseline had.
    """
    return _completed({**base, factor: value}, base, space_config)


def _completed(params: dict[str, Any], base: Mapping[str, Any], space_config: SpaceConfig) -> dict[str, Any]:
    for name, param in space_config.items():
        if isinstance(param, Choice | Range) and name not in params:
            params[name] = _neutral(name, param)
        if isinstance(param, ByOption):  # a variant may switch option (adamw -> sgd: sgd.lr)
            for option, part in param.options:
                if isinstance(part, Choice | Range):
                    params.setdefault(space.option_name(option, name), _neutral(name, part))
    depths = [int(k[len(_LAYER):].split(".")[0]) for k in base if k.startswith(_LAYER)]
    width = space_config["width"]
    if depths and isinstance(width, Choice | Range):
        deepest = base[space.layer_name(max(depths), "width")]
        for i in range(max(depths) + 1, _max_depth(space_config) + 1):
            params.setdefault(space.layer_name(i, "width"), deepest)
    return params


def _max_depth(space_config: SpaceConfig) -> int:
    depth = space_config["depth"]
    if isinstance(depth, Range):
        return int(depth.high)
    if isinstance(depth, Choice):
        return max(int(v) for v in depth.options)
    assert not isinstance(depth, ByOption)  # depth is never given per option of another parameter
    return int(depth.value)


def applying(base: Mapping[str, Any], space_config: SpaceConfig, seed: int) -> set[str]:
    """The parameters the baseline's candidate samples: a `--set` can switch some off (dropout 0
    leaves no dropout placement to vary), and varying those would train the same network again."""
    trial = optuna.trial.FixedTrial(_completed(dict(base), base, space_config))
    space.sample(trial, space_config, seed=seed)
    return set(trial.params)


def candidate_of(params: Mapping[str, Any], space_config: SpaceConfig, seed: int) -> Candidate:
    """The candidate a trial with these parameters trains (sampling replayed with a FixedTrial)."""
    return space.sample(optuna.trial.FixedTrial(dict(params)), space_config, seed=seed)


# ---- running -------------------------------------------------------------------------------------


def run_ablation(
    study: optuna.Study, *, trial: int | None = None, factors: Sequence[str] | None = None,
    points: int = DEFAULT_POINTS, overrides: Mapping[str, Any] | None = None, device: str = "cpu",
    on_variant: Callable[[str, Variant], None] | None = None,
) -> Ablation:
    """Train every one-factor variant of the baseline; identical candidates are trained once."""
    if points < 2:
        raise AblateError(f"--points: a range needs at least 2 points, but got {points}.")
    base_trial = baseline_trial(study, trial)
    config = study.user_attrs.get("config", {})
    space_config = parse_space(config.get("space", {}))
    base = {**base_trial.params, **(overrides or {})}
    seed = TrialRecord.of(base_trial).seed or 0
    dataset, data_dir = str(config.get("dataset", "digits")), config.get("data_dir")
    job = _Job(dataset, data_dir, device, stored_accel(config))
    done: dict[str, Variant] = {}
    result = Ablation(study.study_name, dataset, base_trial.number, base, {})
    applied = applying(base, space_config, seed)
    for factor in choose_factors(base_trial, factors):
        if factor not in applied:
            log.warning("%s does not apply at the baseline (%s); not varied.", factor,
                        ", ".join(f"{k}={_label(v)}" for k, v in (overrides or {}).items()))
            continue
        variants = []
        for value in _values_with_baseline(base_trial.distributions[factor], points, base.get(factor)):
            candidate = candidate_of(variant_params(base, factor, value, space_config), space_config, seed)
            key = candidate.to_json()
            if key not in done:
                done[key] = _train(candidate, value, job)
            variant = Variant(**{**asdict(done[key]), "value": value,
                                 "baseline": value == base.get(factor)})
            variants.append(variant)
            if on_variant is not None:
                on_variant(factor, variant)
        result.factors[factor] = variants
    return result


def _values_with_baseline(distribution: BaseDistribution, points: int, baseline: Any) -> list[Any]:
    values = factor_values(distribution, points)
    if baseline is not None and baseline not in values:
        values.append(baseline)
        if not isinstance(distribution, CategoricalDistribution):
            values.sort()
    return values


@dataclass(frozen=True)
class _Job:
    """Where and how every variant trains: the study's data, the device and its acceleration."""

    dataset: str
    data_dir: str | None
    device: str
    acceleration: AccelConfig


def stored_accel(config: Mapping[str, Any]) -> AccelConfig:
    """The acceleration options of a stored study config (defaults for studies made before them)."""
    defaults = AccelConfig()
    return AccelConfig(str(config.get("amp", defaults.amp)),
                       str(config.get("channels_last", defaults.channels_last)),
                       bool(config.get("compile", defaults.compile)))


def _train(candidate: Candidate, value: Any, job: _Job) -> Variant:
    try:
        trained = train_candidate(candidate, job.dataset, job.data_dir, device=job.device,
                                  acceleration=job.acceleration)
    except (TrialFailure, UsageError) as exc:  # a diverging lr, a loss that does not fit: a result too
        log.info("variant %s failed: %s", value, exc)
        return Variant(value, False, None, None, [], str(exc).splitlines()[0])
    return Variant(value, False, trained.values["accuracy"], trained.test_accuracy,
                   [e.to_dict() for e in trained.history])


# ---- the page ------------------------------------------------------------------------------------


def _label(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def curves_figure(ablation: Ablation) -> go.Figure:
    """Validation accuracy and loss per epoch, one row per factor, one line per value."""
    names = list(ablation.factors)
    titles = [f"{name}: validation {metric}" for name in names for metric in ("accuracy", "loss")]
    fig = make_subplots(rows=len(names), cols=2, subplot_titles=titles, vertical_spacing=0.3 / len(names))
    palette = plotly.colors.qualitative.Plotly
    for row, name in enumerate(names, start=1):
        for k, v in enumerate(ablation.factors[name]):
            label = f"{name}={_label(v.value)}" + (" (baseline)" if v.baseline else "")
            line = {"color": "black", "dash": "dash"} if v.baseline else {"color": palette[k % len(palette)]}
            epochs = list(range(1, len(v.curve) + 1))
            for col, key in ((1, "val_accuracy"), (2, "val_loss")):
                fig.add_trace(go.Scatter(x=epochs, y=[e[key] for e in v.curve], mode="lines+markers",
                                         name=label, legendgroup=f"{row}-{k}", showlegend=col == 1,
                                         line=line), row=row, col=col)
    fig.update_xaxes(title_text="epoch", dtick=1)
    fig.update_layout(title=f"One factor at a time from trial {ablation.trial}", height=340 * len(names),
                      legend={"groupclick": "togglegroup"})
    return fig


def summary_table(ablation: Ablation) -> str:
    """Final accuracies per factor and value, with the change against the baseline."""
    rows = []
    for name, variants in ablation.factors.items():
        base = next((v.accuracy for v in variants if v.baseline), None)
        for v in variants:
            delta = (f"{v.accuracy - base:+.4f}" if v.accuracy is not None and base is not None
                     else "-")
            cells = [name, _label(v.value) + (" (baseline)" if v.baseline else ""),
                     "-" if v.accuracy is None else f"{v.accuracy:.4f}", delta,
                     "-" if v.test_accuracy is None else f"{v.test_accuracy:.4f}", v.error or ""]
            rows.append("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    head = "".join(f"<th>{h}</th>" for h in ("factor", "value", "val accuracy", "vs baseline",
                                            "test accuracy", "failure"))
    return f'<table id="ablation-table"><tr>{head}</tr>{"".join(rows)}</table>'


def write(ablation: Ablation, out: Path) -> tuple[Path, Path]:
    """`out/ablate.html` (curves and table) and `out/ablate.json`; returns both paths."""
    if out.exists() and not out.is_dir():
        raise AblateError(f"--out {out}: expected a directory, but it is a file. Pass a directory.")
    out.mkdir(parents=True, exist_ok=True)
    params = ", ".join(f"{k}={_label(v)}" for k, v in ablation.params.items())
    body = (f"<h1>automl-nn ablate: {html.escape(ablation.study)}</h1>"
            f"<p>dataset {html.escape(ablation.dataset)}; baseline: trial {ablation.trial} "
            f"({html.escape(params)}). Each factor varies alone; the dashed line is the "
            "baseline.</p>"
            + curves_figure(ablation).to_html(full_html=False, include_plotlyjs=False, div_id="curves")
            + f"<section><h2>Final accuracy per value</h2>{summary_table(ablation)}</section>")
    html_path, json_path = out / "ablate.html", out / "ablate.json"
    html_path.write_text(page(f"automl-nn ablate: {ablation.study}", body), encoding="utf-8")
    json_path.write_text(json.dumps(ablation.to_dict(), indent=2, default=str) + "\n")
    return html_path, json_path
