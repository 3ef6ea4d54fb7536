"""Plotly figures of a study and the self-contained HTML report (`automl-nn report`).

Two layers. `collect()` reads a study into plain records (`ReportData`); the figure builders take
those records and return plotly Figures, so they are tested without a study or a browser.
`render_html()` puts every figure in one HTML file with plotly.js embedded (no CDN: the file works
offline and can be mailed); `write_images()` writes the same figures as PNG through kaleido, which
drives the system's chromium.

Hypervolume. Computed incrementally (`hypervolume_history`, Optuna's exact WFG computation each
time the front moves) with a reference point derived from the data: for each objective, the worst
value among completed trials pushed 10% of that objective's range further out (so the worst trials
still add volume). The curve is shown as a fraction of the box between that reference point and
the ideal point (the best value of each objective over all trials), so 1.0 would mean one trial is
best at everything.

Large studies. The study is read once as summaries (`record.read_summaries`), the front in full.
Beyond LARGE trained trials the scatter plots use WebGL, the other trials' hover texts shrink to
their trial number, box plots drop their points and importances come from a fixed random sample
(IMPORTANCE_SAMPLE), so a 10,000-trial report stays a few MB and is written in seconds.
"""

from __future__ import annotations

import html
import logging
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import plotly.colors
import plotly.graph_objects as go
from optuna._hypervolume import compute_hypervolume
from optuna.trial import FrozenTrial, TrialState
from plotly.subplots import make_subplots

from automl_nn import vocab
from automl_nn.analysis.questions import COSTS  # the cost distributions, in the 1001-networks order
from automl_nn.errors import UsageError
from automl_nn.results import decide, summary
from automl_nn.results.page import figure_div, page
from automl_nn.storage import record
from automl_nn.storage.record import TrialRecord
from automl_nn.study import objective_names

log = logging.getLogger(__name__)

MIN_TRIALS_FOR_IMPORTANCE = 5  # fANOVA on fewer trials ranks noise
IMPORTANCE_SAMPLE = 2000  # fANOVA's forest on more trials costs minutes and ranks the same
REFERENCE_MARGIN = 0.1  # reference point: 10% of each objective's range beyond its worst value
FRONT = "Pareto front"  # trace names the browser test reads back
OTHERS = "other trials"
KNEE = "knee"
LARGE = 2000  # above this many points: WebGL scatter, short hover texts, box plots without points


@dataclass(frozen=True)
class Objective:
    """One objective of the study: its name, direction and unit (from the metric registry)."""

    name: str
    maximize: bool
    unit: str

    @property
    def label(self) -> str:
        return f"{self.name} ({self.unit})" if self.unit else self.name


@dataclass(frozen=True)
class Point:
    """One completed trial as plain data: objective values, every metric, architecture, curve."""

    number: int
    values: tuple[float, ...]
    metrics: dict[str, float]
    arch: dict[str, Any]
    curve: tuple[dict[str, float], ...] = ()
    params: dict[str, Any] = field(default_factory=dict)  # the trial's sampled parameters


@dataclass
class ReportData:
    """Everything the report shows, read once from the study."""

    study: str
    dataset: str | None
    objectives: list[Objective]
    points: list[Point]
    front: list[int]
    knee: int | None
    states: dict[str, int]
    warnings: list[str]
    counts: dict[str, int] = field(default_factory=dict)  # summary.trial_counts
    hypervolume: tuple[list[int], list[float]] | None = None
    reference_point: list[float] | None = None
    importances: dict[str, dict[str, float]] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)


# ---- reading a study -----------------------------------------------------------------------------


def point_of(trial: FrozenTrial) -> Point:
    """A completed trial as a Point (metrics from user attributes, epochs in order)."""
    rec = TrialRecord.of(trial)
    stored = {**rec.metrics, **{record.TEST_PREFIX + n: v for n, v in rec.test.items()}}
    row = summary.trial_row(trial, [])
    arch = {k: row[k] for k in summary.ARCH_COLUMNS if row.get(k) is not None}
    return Point(trial.number, rec.values, stored, arch, rec.epochs, rec.params)


# What the report needs of every trial: the summary keys, every metric and its test value. The
# learning curves (the front's only) and the params (the importance sample's) come on top.
REPORT_KEYS = (*record.SUMMARY_KEYS, *vocab.METRICS, *(record.TEST_PREFIX + m for m in vocab.METRICS))


def trained_trials(study: optuna.Study) -> list[FrozenTrial]:
    """The completed trials that were trained: infeasible ones (over a hard constraint) and
    diverged ones carry placeholder values (accuracy 0) and would read as real, terrible networks."""
    return record.trained(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


def collect_points(study: optuna.Study) -> list[Point]:
    """Every completed, trained trial of `study` as a Point."""
    return [point_of(t) for t in trained_trials(study)]


def read_report(study: optuna.Study) -> ReportData:
    """Read `study` into a ReportData: points, front, knee, warnings, hypervolume, importances.

    One summary read of every trial (values, metrics, params: no learning curves, no system
    attributes), then the front's trials in full for their curves, so a 10,000-trial study is
    read in a fraction of Optuna's full load and memory.
    """
    names = objective_names(study)
    objectives = [Objective(n, d == optuna.study.StudyDirection.MAXIMIZE,
                            vocab.METRICS.get(n).unit if n in vocab.METRICS else "")
                  for n, d in zip(names, study.directions, strict=True)]
    trials = record.read_summaries(study, REPORT_KEYS, params=True)
    done = record.trained(trials)
    best = record.read_front(study, trials)
    knee = decide.knee(study, best)
    full = {t.number: t for t in best}
    config = study.user_attrs.get("config", {})
    data = ReportData(
        study=study.study_name, dataset=config.get("dataset"), objectives=objectives,
        points=[point_of(full.get(t.number, t)) for t in done], front=[t.number for t in best],
        knee=knee.number if knee else None, states=summary.state_counts(study, trials),
        warnings=summary.edge_warnings(config.get("space", {}), best),
        counts=summary.trial_counts(study, trials),
    )
    _add_hypervolume(data)
    _add_importances(study.directions, done, data)
    return data


def reference_point(points: Sequence[Sequence[float]], maximize: Sequence[bool]) -> list[float]:
    """Each objective's worst value pushed REFERENCE_MARGIN of its range further out."""
    ref = []
    for column, is_max in zip(zip(*points, strict=True), maximize, strict=True):
        worst = min(column) if is_max else max(column)
        span = max(column) - min(column)
        margin = REFERENCE_MARGIN * (span if span > 0 else max(abs(worst), 1.0))
        ref.append(worst - margin if is_max else worst + margin)
    return ref


def hypervolume_history(points: Sequence[Point], maximize: Sequence[bool],
                        reference: Sequence[float]) -> tuple[list[int], list[float]]:
    """The hypervolume of the trials' front after each trial, in trial order, up to `reference`.

    Incremental: a trial the front already dominates (weakly) changes nothing; any other joins
    the front, evicts what it dominates, and the front's volume is computed again (Optuna's exact
    WFG algorithm). A 10,000-trial study recomputes it only as often as its front moves.
    """
    sign = np.array([-1.0 if m else 1.0 for m in maximize])
    ref = sign * np.array(reference, dtype=float)
    front = np.empty((0, len(maximize)))
    volume = 0.0
    numbers, volumes = [], []
    for point in sorted(points, key=lambda p: p.number):
        loss = sign * np.array(point.values, dtype=float)
        if (loss < ref).all() and not (front <= loss).all(axis=1).any():
            front = np.vstack([front[~(loss <= front).all(axis=1)], loss])
            volume = float(compute_hypervolume(front, ref, assume_pareto=True))
        numbers.append(point.number)
        volumes.append(volume)
    return numbers, volumes


def _add_hypervolume(data: ReportData) -> None:
    values = [p.values for p in data.points]
    if len(data.objectives) < 2:
        data.notes["hypervolume"] = "Hypervolume needs two or more objectives; this study has one."
        return
    if not values:
        data.notes["hypervolume"] = "No completed trials yet."
        return
    maximize = [o.maximize for o in data.objectives]
    ref = reference_point(values, maximize)
    ideal = [max(c) if m else min(c) for c, m in zip(zip(*values, strict=True), maximize, strict=True)]
    box = math.prod(abs(r - i) for r, i in zip(ref, ideal, strict=True)) or 1.0
    numbers, volumes = hypervolume_history(data.points, maximize, ref)
    data.hypervolume = (numbers, [v / box for v in volumes])
    data.reference_point = ref


def _add_importances(directions: Sequence[optuna.study.StudyDirection], trained: Sequence[FrozenTrial],
                     data: ReportData) -> None:
    if len(trained) < MIN_TRIALS_FOR_IMPORTANCE:
        data.notes["importance"] = (f"Parameter importances need at least {MIN_TRIALS_FOR_IMPORTANCE} "
                                    f"trained trials; this study has {len(trained)}.")
        return
    sample = importance_sample(directions, trained)
    if len(trained) > IMPORTANCE_SAMPLE:
        data.notes["importance"] = (f"Importances from a random sample of {IMPORTANCE_SAMPLE:,} of the "
                                    f"{len(trained):,} trained trials (seed 0).")
    for index, objective in enumerate(data.objectives):
        try:
            data.importances[objective.label] = optuna.importance.get_param_importances(
                sample, target=lambda t, i=index: t.values[i],  # type: ignore[misc]
                evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
        except (ValueError, RuntimeError) as exc:  # e.g. every parameter took a single value
            data.notes["importance"] = f"Parameter importances could not be computed: {exc}"
            log.info("importance of %s failed: %s", objective.name, exc)


def importance_sample(directions: Sequence[optuna.study.StudyDirection],
                      trained: Sequence[FrozenTrial]) -> optuna.Study:
    """An in-memory study of the trained trials (fANOVA reads every completed trial and knows
    nothing of constraints), at most IMPORTANCE_SAMPLE of them, drawn with seed 0."""
    chosen = list(trained)
    if len(chosen) > IMPORTANCE_SAMPLE:
        chosen = sorted(random.Random(0).sample(chosen, IMPORTANCE_SAMPLE), key=lambda t: t.number)
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # no "new study created" line in the output
    try:
        copy = optuna.create_study(directions=list(directions))
    finally:
        optuna.logging.set_verbosity(verbosity)
    copy.add_trials(chosen)
    return copy


# ---- figures -------------------------------------------------------------------------------------


def _fmt(value: float) -> str:
    if float(value).is_integer() and abs(value) >= 1:
        return f"{int(value):,}"
    return f"{value:.4g}"


def hover_text(point: Point) -> str:
    """Architecture and every metric with its unit, as plotly hover HTML."""
    arch = point.arch
    lines = [f"<b>trial {point.number}</b>",
             " ".join(f"{k}={arch[k]}" for k in ("family", "depth", "widths", "activation") if k in arch),
             " ".join(f"{k}={_fmt(arch[k]) if isinstance(arch[k], float) else arch[k]}"
                      for k in ("optimizer", "lr", "batch_size", "epochs") if k in arch)]
    for name, value in point.metrics.items():
        unit = vocab.METRICS.get(name).unit if name in vocab.METRICS else "fraction"
        lines.append(f"{name}: {_fmt(value)} {unit}")
    return "<br>".join([lines[0], *(html.escape(line, quote=False) for line in lines[1:] if line)])


def _scatter(count: int, **kwargs: Any) -> go.Scatter | go.Scattergl:
    """A scatter trace; WebGL beyond LARGE points, which SVG draws slowly and a browser struggles
    to pan."""
    return go.Scattergl(**kwargs) if count > LARGE else go.Scatter(**kwargs)


def hover_texts(points: Sequence[Point], total: int) -> list[str]:
    """Each point's hover text: the whole architecture and metrics, or just its trial number when
    the figure holds more than LARGE points (the full text for 10,000 trials alone is 3 MB a
    trace; the front's trials keep it, and the front table lists them)."""
    if total > LARGE:
        return [f"trial {p.number}" for p in points]
    return [hover_text(p) for p in points]


def _log_scale(values: Sequence[float]) -> bool:
    """Costs spanning orders of magnitude read better on a log axis."""
    return bool(values) and min(values) > 0 and max(values) / min(values) >= 100


def pareto_figure(points: Sequence[Point], objectives: Sequence[Objective], front_numbers: Sequence[int],
                  knee: int | None) -> go.Figure:
    """The first objective against each other one: all trials, the front as a line, the knee."""
    pairs = range(1, len(objectives))
    fig = make_subplots(rows=1, cols=len(pairs), horizontal_spacing=0.08)
    on_front = set(front_numbers)
    for col, j in enumerate(pairs, start=1):
        others = [p for p in points if p.number not in on_front]
        best = sorted((p for p in points if p.number in on_front), key=lambda p: p.values[j])
        knees = [p for p in points if p.number == knee]
        for trace_points, name, style in ((others, OTHERS, {"mode": "markers", "marker": {
                "color": "#9aa5b1", "size": 7, "opacity": 0.6}}),
                (best, FRONT, {"mode": "lines+markers", "marker": {"color": "#d62728", "size": 9},
                               "line": {"shape": "hv", "color": "#d62728"}}),
                (knees, KNEE, {"mode": "markers", "marker": {
                    "symbol": "star", "size": 18, "color": "#ffbf00",
                    "line": {"color": "black", "width": 1}}})):
            total = len(points) if name == OTHERS else 0  # the front and knee keep their full text
            fig.add_trace(_scatter(
                len(trace_points), x=[p.values[j] for p in trace_points],
                y=[p.values[0] for p in trace_points], hovertext=hover_texts(trace_points, total),
                hoverinfo="text", name=name, legendgroup=name, showlegend=col == 1, **style),
                row=1, col=col)
        fig.update_xaxes(title_text=objectives[j].label, row=1, col=col,
                         type="log" if _log_scale([p.values[j] for p in points]) else "linear")
        fig.update_yaxes(title_text=objectives[0].label, row=1, col=col)
    fig.update_layout(title="Pareto front (hover a point for its architecture and metrics; "
                            "the star is the knee)", height=480)
    return fig


def hypervolume_figure(numbers: Sequence[int], fractions: Sequence[float]) -> go.Figure:
    """Hypervolume of the front after each trial, as a fraction of the reference box."""
    fig = go.Figure(go.Scatter(x=list(numbers), y=list(fractions), mode="lines+markers",
                               name="hypervolume", line={"shape": "hv"}))
    fig.update_layout(title="Hypervolume over trials", xaxis_title="trial",
                      yaxis_title="hypervolume (fraction of the reference box)", height=380)
    return fig


def history_figure(points: Sequence[Point], objectives: Sequence[Objective]) -> go.Figure:
    """Each objective per trial, with the best value so far."""
    fig = make_subplots(rows=1, cols=len(objectives), horizontal_spacing=0.08)
    ordered = sorted(points, key=lambda p: p.number)
    for col, (i, objective) in enumerate(enumerate(objectives), start=1):
        values = [p.values[i] for p in ordered]
        best: list[float] = []
        for value in values:
            pick = max if objective.maximize else min
            best.append(pick(best[-1], value) if best else value)
        numbers = [p.number for p in ordered]
        fig.add_trace(_scatter(len(ordered), x=numbers, y=values, mode="markers", name=objective.name,
                               hovertext=hover_texts(ordered, len(ordered)), hoverinfo="text"),
                      row=1, col=col)
        fig.add_trace(go.Scatter(x=numbers, y=best, mode="lines", name=f"best {objective.name}",
                                 line={"shape": "hv"}), row=1, col=col)
        fig.update_xaxes(title_text="trial", row=1, col=col)
        fig.update_yaxes(title_text=objective.label, row=1, col=col,
                         type="log" if _log_scale(values) else "linear")
    fig.update_layout(title="Optimization history", height=400)
    return fig


def importance_figure(importances: dict[str, dict[str, float]]) -> go.Figure:
    """Parameter importances (fANOVA), one bar group per objective."""
    params = sorted({p for per in importances.values() for p in per},
                    key=lambda p: -max(per.get(p, 0.0) for per in importances.values()))
    fig = go.Figure([go.Bar(y=params, x=[per.get(p, 0.0) for p in params], name=label,
                            orientation="h") for label, per in importances.items()])
    fig.update_layout(title="Parameter importances per objective (fANOVA)", barmode="group",
                      xaxis_title="importance (share of variance)", height=150 + 28 * len(params),
                      yaxis={"autorange": "reversed"})
    return fig


def family_activation_figure(points: Sequence[Point], metric: str = "accuracy") -> go.Figure:
    """Box plots of `metric` by layer family, one box per activation (the 1001-networks study's figure)."""
    activations = sorted({str(p.arch.get("activation")) for p in points})
    fig = go.Figure()
    for activation in activations:
        group = [p for p in points if str(p.arch.get("activation")) == activation and metric in p.metrics]
        many = len(points) > LARGE
        fig.add_trace(go.Box(x=[str(p.arch.get("family")) for p in group],
                             y=[p.metrics[metric] for p in group], name=activation,
                             boxpoints=False if many else "all", jitter=0.3,
                             hovertext=None if many else [hover_text(p) for p in group],
                             hoverinfo=None if many else "text"))
    unit = vocab.METRICS.get(metric).unit if metric in vocab.METRICS else ""
    fig.update_layout(title=f"{metric} by layer family and activation", boxmode="group",
                      xaxis_title="family", yaxis_title=f"{metric} ({unit})",
                      legend_title="activation", height=440)
    return fig


def cost_figure(points: Sequence[Point], front_numbers: Sequence[int]) -> go.Figure:
    """Distributions of the costs by family; front trials are gold stars (as in the 1001-networks study)."""
    fig = make_subplots(rows=2, cols=2, subplot_titles=[
        f"{c} ({vocab.METRICS.get(c).unit})" for c in COSTS], vertical_spacing=0.14)
    on_front = set(front_numbers)
    for k, cost in enumerate(COSTS):
        row, col = divmod(k, 2)
        have = [p for p in points if cost in p.metrics]
        stars = [p for p in have if p.number in on_front]
        fig.add_trace(go.Box(x=[str(p.arch.get("family")) for p in have],
                             y=[p.metrics[cost] for p in have], name=cost, showlegend=False,
                             marker_color="#1f77b4"), row=row + 1, col=col + 1)
        fig.add_trace(go.Scatter(x=[str(p.arch.get("family")) for p in stars],
                                 y=[p.metrics[cost] for p in stars], mode="markers",
                                 name=FRONT, legendgroup=FRONT, showlegend=k == 0,
                                 marker={"symbol": "star", "size": 13, "color": "#ffbf00",
                                         "line": {"color": "black", "width": 1}},
                                 hovertext=[hover_text(p) for p in stars], hoverinfo="text"),
                      row=row + 1, col=col + 1)
        fig.update_yaxes(type="log" if _log_scale([p.metrics[cost] for p in have]) else "linear",
                         row=row + 1, col=col + 1)
    fig.update_layout(title="What the networks cost, by family (stars: the Pareto front)", height=700)
    return fig


def curves_figure(points: Sequence[Point]) -> go.Figure:
    """Validation accuracy and loss per epoch for the given (front) trials."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=["validation accuracy", "validation loss"])
    palette = plotly.colors.qualitative.Plotly  # one colour per trial in both panels
    for k, p in enumerate(points):
        epochs = list(range(1, len(p.curve) + 1))
        for col, key in ((1, "val_accuracy"), (2, "val_loss")):
            fig.add_trace(go.Scatter(x=epochs, y=[e.get(key) for e in p.curve], mode="lines+markers",
                                     name=f"trial {p.number}", legendgroup=str(p.number),
                                     line={"color": palette[k % len(palette)]},
                                     showlegend=col == 1), row=1, col=col)
    fig.update_xaxes(title_text="epoch", dtick=1)
    fig.update_layout(title="Learning curves of the front's trials", height=420)
    return fig


def figures(data: ReportData) -> dict[str, go.Figure]:
    """Every figure the data supports, by div id; what cannot be drawn gets a note instead."""
    out: dict[str, go.Figure] = {}
    if len(data.objectives) >= 2 and data.points:
        out["pareto"] = pareto_figure(data.points, data.objectives, data.front, data.knee)
    else:
        data.notes.setdefault("pareto", "A Pareto front needs two or more objectives and a "
                                        "completed trial; the best trial is in the table below.")
    if data.hypervolume:
        out["hypervolume"] = hypervolume_figure(*data.hypervolume)
    if data.points:
        out["history"] = history_figure(data.points, data.objectives)
    if data.importances:
        out["importance"] = importance_figure(data.importances)
    metric = "accuracy" if any("accuracy" in p.metrics for p in data.points) else None
    if metric:
        out["family-activation"] = family_activation_figure(data.points, metric)
    if any(c in p.metrics for p in data.points for c in COSTS):
        out["costs"] = cost_figure(data.points, data.front)
    front_points = [p for p in data.points if p.number in set(data.front) and p.curve]
    if front_points:
        out["curves"] = curves_figure(front_points)
    return out


# ---- the HTML file -------------------------------------------------------------------------------

SECTIONS = (("pareto", "Pareto front"), ("hypervolume", "Hypervolume"),
            ("history", "Optimization history"), ("importance", "Which choices matter"),
            ("family-activation", "Accuracy by family and activation"),
            ("costs", "Cost distributions"), ("curves", "Learning curves"))

def front_table(data: ReportData) -> str:
    """The front as an HTML table: objectives, every metric, architecture; the knee highlighted."""
    by_number = {p.number: p for p in data.points}
    rows = [by_number[n] for n in data.front if n in by_number]
    metric_names = [m for m in (*vocab.METRICS, "test_accuracy") if any(m in p.metrics for p in rows)]
    arch_names = [a for a in summary.ARCH_COLUMNS if any(a in p.arch for p in rows)]
    head = "".join(f"<th>{html.escape(h)}</th>" for h in ("trial", *metric_names, *arch_names))
    body = []
    for p in rows:
        cells = [str(p.number) + (" (knee)" if p.number == data.knee else "")]
        cells += [_fmt(p.metrics[m]) if m in p.metrics else "-" for m in metric_names]
        cells += [_fmt(v) if isinstance(v := p.arch.get(a, "-"), float) else str(v) for a in arch_names]
        css = ' class="knee"' if p.number == data.knee else ""
        body.append(f"<tr{css}>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    return f'<table id="front-table"><tr>{head}</tr>{"".join(body)}</table>'


def render_html(data: ReportData, figs: dict[str, go.Figure]) -> str:
    """One self-contained HTML page: plotly.js inline, every figure, the front table, warnings."""
    objectives = ", ".join(f"{o.label}, {'max' if o.maximize else 'min'}imized" for o in data.objectives)
    states = ", ".join(f"{k} {v}" for k, v in data.states.items() if v)
    counted = f"<br>{html.escape(summary.counts_line(data.counts))}" if data.counts else ""
    parts = [f"<h1>automl-nn report: {html.escape(data.study)}</h1>",
             f"<p>dataset {html.escape(str(data.dataset))}; objectives: {html.escape(objectives)}; "
             f"trials: {html.escape(states)}{counted}</p>"]
    if data.warnings:
        parts.append('<section id="warnings"><h2>Warnings</h2><ul>' + "".join(
            f'<li class="warn">{html.escape(w)}</li>' for w in data.warnings) + "</ul></section>")
    for div_id, title in SECTIONS:
        body = figure_div(figs, div_id)
        note = data.notes.get(div_id)
        if body or note:
            parts.append(f"<section><h2>{title}</h2>{body}"
                         + (f'<p class="note">{html.escape(note)}</p>' if note else "") + "</section>")
    parts.append(f"<section><h2>The front</h2>{front_table(data)}</section>")
    parts.append(f'<section class="note"><p>{html.escape(_method_note(data))}</p></section>')
    return page(f"automl-nn: {data.study}", "".join(parts))


def _method_note(data: ReportData) -> str:
    ref = (", ".join(f"{o.name}={_fmt(r)}" for o, r in zip(data.objectives, data.reference_point,
                                                           strict=True))
           if data.reference_point else "n/a")
    return ("Knee: the front point farthest below the hyperplane through the front's extremes after "
            "min-max normalizing each objective (0 best, 1 worst). Hypervolume reference point: each "
            f"objective's worst value pushed 10% of its range outward ({ref}); shown as a fraction of the "
            "box between it and the ideal point. Importances: fANOVA (seed 0).")


class ReportError(UsageError):
    """An output path that cannot be written, or static images that cannot be made here."""


def write_report(study: optuna.Study, out: Path) -> dict[str, go.Figure]:
    """Write the HTML report of `study` to `out`; returns the figures (for `write_images`)."""
    if out.is_dir() or not out.parent.is_dir():
        raise ReportError(f"--out {out}: expected a file path in an existing directory, but "
                          f"{'it is a directory' if out.is_dir() else f'{out.parent} does not exist'}. "
                          "Pass e.g. --out report.html.")
    data = read_report(study)
    figs = figures(data)
    out.write_text(render_html(data, figs), encoding="utf-8")
    return figs


def image_dir(out: Path) -> Path:
    """Where `--format png` puts its images: `report.html` -> `report-images/`."""
    return out.with_name(f"{out.stem}-images")


def write_images(figs: dict[str, go.Figure], folder: Path) -> list[Path]:
    """Each figure as PNG in `folder` (kaleido with the system chromium; one browser for all)."""
    import plotly.io as pio

    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{name}.png" for name in figs]
    if figs:
        try:
            pio.write_images(list(figs.values()), paths, format="png", width=1400, height=None)
        except Exception as exc:  # kaleido's errors vary with what is missing (chromium, its deps)
            raise ReportError(f"static images: kaleido could not render them ({exc}). It needs "
                              "chromium: `make system-deps` or `apt-get install chromium`. The HTML "
                              "report was written.") from None
    return paths
