"""`automl-nn analyze`: the answers of `automl_nn.analysis` as plotly figures, HTML and JSON.

The figure builders read only the answers (plain data) and the images of the few samples question 8
shows, so they are tested without a study. `write` puts every figure into one HTML page with
plotly.js inlined (it works offline) beside `analysis.json`; `analyze_study` is the glue from a study.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from automl_nn.analysis.questions import COSTS, ENSEMBLE_COSTS
from automl_nn.errors import UsageError
from automl_nn.results.page import figure_div, page

GRID_LIMIT = 32  # images in question 8's grid (weird ones first)
GRID_COLUMNS = 8
TABLE_LIMIT = 30  # rows per HTML table
GOLD = "gold stars"  # trace name the browser test reads back
COST_LABELS = {"train_time": "training time (s)", "params": "parameters", "memory": "memory (bytes)",
               "ops": "ops per forward pass"}
SECTIONS = (  # figure id, heading: the page's order, the study's question numbers
    ("q1-attempts", "1. How did the trials do over their attempts (epochs)?"),
    ("q2-leaders", "2. Which family and which activation lead?"),
    ("q3-6-costs", "3-6. Training time, parameters, memory and ops per family"),
    ("q7-epochs", "7. How did accuracy change across epochs?"),
    ("q8-samples", "8. Easy, weird and confusing samples"),
    ("q8-grid", "8. The weird and confusing samples"),
    ("q9-best-per-class", "9. Is the best trial the best at every class?"),
    ("q10-ensembles", "10. Ensembles of small networks against the best one"),
)


class AnalysisError(UsageError):
    """A study that cannot be analysed (not classification, no trials) or an unusable --out."""


@dataclass(frozen=True)
class SampleImages:
    """Images of the samples question 8 shows, by index in the analysed split (C x H x W)."""

    images: dict[int, np.ndarray]
    class_names: tuple[str, ...]

    def name(self, cls: int) -> str:
        return self.class_names[cls] if 0 <= cls < len(self.class_names) else str(cls)


# ---- figures -------------------------------------------------------------------------------------


def attempts_figure(rows: Sequence[dict[str, Any]]) -> go.Figure:
    """Question 1: trials at or above each threshold, per attempt."""
    thresholds = [k for k in rows[0] if k.endswith("%")]
    fig = go.Figure()
    for t in thresholds:
        fig.add_trace(go.Bar(x=[f"attempt {r['attempt']}" for r in rows], y=[r[t] for r in rows],
                             name=f">= {t}"))
    fig.update_layout(title="Trials at or above each accuracy threshold, per attempt",
                      barmode="group", yaxis_title="trials")
    return fig


def _box(x: str, s: dict[str, Any], name: str, show: bool, color: str | None = None) -> go.Box:
    """A box drawn from precomputed statistics (the answers keep no raw values)."""
    return go.Box(x=[x], q1=[s["q1"]], median=[s["median"]], q3=[s["q3"]], lowerfence=[s["min"]],
                  upperfence=[s["max"]], mean=[s["mean"]], name=name, showlegend=show,
                  marker_color=color, legendgroup=name)


def leaders_figure(leaders: dict[str, list[dict[str, Any]]]) -> go.Figure:
    """Question 2: final accuracy by family and by activation (best median first)."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=["by family", "by activation"])
    for col, key in enumerate(("family", "activation"), start=1):
        for s in leaders[key]:
            if s["n"]:
                fig.add_trace(_box(f"{s['group']} (n={s['n']})", s, s["group"], False), row=1, col=col)
    fig.update_yaxes(title_text="final accuracy")
    fig.update_layout(title="Which strategy leads: final accuracy distributions")
    return fig


def costs_figure(costs: dict[str, dict[str, Any]]) -> go.Figure:
    """Questions 3-6: each cost per family, gold-star trials as stars."""
    names = [c for c in COSTS if c in costs]
    fig = make_subplots(rows=len(names), cols=1, subplot_titles=[COST_LABELS[c] for c in names],
                        vertical_spacing=0.08)
    for row, name in enumerate(names, start=1):
        for s in sorted(costs[name]["by_family"], key=lambda s: s["group"]):  # same order in every row
            if s["n"]:
                fig.add_trace(_box(s["group"], s, s["group"], False, "#7f8fa6"), row=row, col=1)
        gold = costs[name]["gold"]
        fig.add_trace(go.Scatter(
            x=[g["family"] for g in gold], y=[g["value"] for g in gold], mode="markers", name=GOLD,
            text=[f"trial {g['trial']}" for g in gold], showlegend=row == 1, legendgroup=GOLD,
            marker={"symbol": "star", "size": 14, "color": "gold", "line": {"width": 1, "color": "black"}}),
            row=row, col=1)
        if _spans_decades([s["max"] for s in costs[name]["by_family"]] +
                          [s["min"] for s in costs[name]["by_family"]]):
            fig.update_yaxes(type="log", row=row, col=1)
    fig.update_layout(title="What the trials cost, per family (stars: gold-star trials)",
                      height=300 * len(names))
    return fig


def _spans_decades(values: Sequence[float | None]) -> bool:
    v = [x for x in values if x is not None and x > 0]
    return bool(v) and max(v) / min(v) >= 100


def epochs_figure(q7: dict[str, Any]) -> go.Figure:
    """Question 7: every trial's accuracy per attempt; late bloomers highlighted."""
    bloomers = {b["trial"] for b in q7["late_bloomers"]}
    x: list[float | None] = []
    y: list[float | None] = []
    for curve in q7["curves"]:
        if curve["trial"] not in bloomers and curve["accuracy"]:
            x += [*range(1, len(curve["accuracy"]) + 1), None]
            y += [*curve["accuracy"], None]
    fig = go.Figure(go.Scattergl(x=x, y=y, mode="lines", name="trials",
                                 line={"color": "rgba(90,90,90,0.25)", "width": 1}))
    for curve in q7["curves"]:
        if curve["trial"] in bloomers:
            fig.add_trace(go.Scatter(x=list(range(1, len(curve["accuracy"]) + 1)), y=curve["accuracy"],
                                     mode="lines+markers", name=f"trial {curve['trial']} (late bloomer)"))
    medians = [a["median"] for a in q7["per_attempt"]]
    fig.add_trace(go.Scatter(x=list(range(1, len(medians) + 1)), y=medians, mode="lines+markers",
                             name="median", line={"color": "black", "width": 3}))
    fig.update_layout(title="Accuracy across attempts (epochs)", xaxis_title="attempt (epoch)",
                      yaxis_title="accuracy", xaxis={"dtick": 1})
    return fig


def samples_figure(q8: dict[str, Any]) -> go.Figure:
    """Question 8: how many samples are easy, weird, confusing, or possible label errors."""
    kinds = ["easy", "weird", "confusing", "possible_label_errors"]
    fig = go.Figure(go.Bar(x=[k.replace("_", " ") for k in kinds], y=[q8[k] for k in kinds],
                           text=[q8[k] for k in kinds], textposition="outside"))
    fig.update_layout(title=f"{q8['samples']} samples judged by {q8['trials']} trials",
                      yaxis_title="samples")
    return fig


def grid_figure(q8: dict[str, Any], images: SampleImages) -> go.Figure | None:
    """Question 8: the weird and confusing samples, with their label and the common wrong answer."""
    shown = [(r, "weird") for r in q8["weird_samples"]] + [(r, "confusing") for r in q8["confusing_samples"]]
    shown = [(r, kind) for r, kind in shown if r["index"] in images.images][:GRID_LIMIT]
    if not shown:
        return None
    rows = math.ceil(len(shown) / GRID_COLUMNS)
    fig = make_subplots(rows=rows, cols=GRID_COLUMNS,
                        subplot_titles=[_caption(r, k, images) for r, k in shown],
                        horizontal_spacing=0.02, vertical_spacing=0.12 / rows)
    for n, (record, _) in enumerate(shown):
        image = images.images[record["index"]]
        trace = (go.Image(z=np.moveaxis(image, 0, -1)) if image.ndim == 3 and image.shape[0] == 3
                 else go.Heatmap(z=image.reshape(-1, image.shape[-1]) if image.ndim > 1 else image[None],
                                 colorscale="gray_r", showscale=False))
        fig.add_trace(trace, row=n // GRID_COLUMNS + 1, col=n % GRID_COLUMNS + 1)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False, autorange="reversed", scaleanchor=None)
    fig.update_annotations(font_size=10)
    fig.update_layout(title="Weird (most trials agree on a wrong answer) and confusing (no majority) samples",
                      height=170 * rows + 80)
    return fig


def _caption(record: dict[str, Any], kind: str, images: SampleImages) -> str:
    label = images.name(record["label"])
    if kind == "weird":
        flag = " ⚑" if record["possible_label_error"] else ""
        return f"#{record['index']} {label}→{images.name(record['common_wrong'])}{flag}"
    return f"#{record['index']} {label}?"


def best_per_class_figure(q9: dict[str, Any]) -> go.Figure:
    """Question 9: the best trial's percentile on each class (100: no trial does better there)."""
    classes = q9["classes"]
    fig = go.Figure(go.Bar(x=[c["class"] for c in classes], y=[c["percentile"] for c in classes],
                           text=[f"{c['percentile']:.1f}" for c in classes], textposition="outside",
                           hovertext=[f"accuracy {c['accuracy']:.4f}; best {c['best_accuracy']:.4f} "
                                      f"(trial {c['best_trial']})" for c in classes]))
    fig.update_layout(title=f"Trial {q9['trial']}'s percentile among all trials, per class",
                      xaxis_title="class", yaxis_title="percentile", yaxis_range=[0, 105],
                      xaxis={"type": "category"})
    return fig


def ensembles_figure(q10: dict[str, Any]) -> go.Figure:
    """Question 10: ensemble accuracy against total params, memory and training time."""
    costs = [c for c in ENSEMBLE_COSTS if c in q10["best"]]
    fig = make_subplots(rows=1, cols=len(costs), subplot_titles=[COST_LABELS[c] for c in costs],
                        shared_yaxes=True)
    for col, cost in enumerate(costs, start=1):
        for order, data in q10["orders"].items():
            for vote, dash in (("majority", "solid"), ("weighted", "dot")):
                name = f"{order.replace('_', ' ')}, {vote} vote"
                fig.add_trace(go.Scatter(
                    x=[r[cost] for r in data["rows"]], y=[r[vote] for r in data["rows"]],
                    mode="lines+markers", name=name, legendgroup=name, showlegend=col == 1,
                    text=[f"k={r['k']}" for r in data["rows"]], line={"dash": dash}), row=1, col=col)
        best = q10["best"]
        fig.add_trace(go.Scatter(x=[best[cost]], y=[best["accuracy"]], mode="markers",
                                 name=f"best trial {best['trial']}", legendgroup="best",
                                 showlegend=col == 1,
                                 marker={"symbol": "star", "size": 16, "color": "gold",
                                         "line": {"width": 1, "color": "black"}}), row=1, col=col)
        fig.update_xaxes(type="log", title_text=f"total {COST_LABELS[cost]}", row=1, col=col)
    fig.update_yaxes(title_text="accuracy", row=1, col=1)
    fig.update_layout(title="Ensembles (k smallest; k best per cost) against the single best trial",
                      height=480)
    return fig


def figures(answers: dict[str, Any], images: SampleImages | None = None) -> dict[str, go.Figure]:
    """Every figure the answers allow, by section id."""
    figs = {"q1-attempts": attempts_figure(answers["q1_attempts"]),
            "q2-leaders": leaders_figure(answers["q2_leaders"]),
            "q3-6-costs": costs_figure(answers["q3_6_costs"]),
            "q7-epochs": epochs_figure(answers["q7_epochs"])}
    if "q8_samples" in answers:
        figs["q8-samples"] = samples_figure(answers["q8_samples"])
        grid = grid_figure(answers["q8_samples"], images) if images is not None else None
        if grid is not None:
            figs["q8-grid"] = grid
        figs["q9-best-per-class"] = best_per_class_figure(answers["q9_best_per_class"])
        figs["q10-ensembles"] = ensembles_figure(answers["q10_ensembles"])
    return figs


# ---- the page ------------------------------------------------------------------------------------

PREDICTION_QUESTIONS = {"q8_samples": "8 (easy, weird and confusing samples)",
                        "q9_best_per_class": "9 (the best trial per class)",
                        "q10_ensembles": "10 (ensembles)"}


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return "-" if value is None else str(value)


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None,
          limit: int = TABLE_LIMIT) -> str:
    """An HTML table of the first `limit` records (escaped); the JSON keeps the rest."""
    if not rows:
        return '<p class="note">none</p>'
    more = (f'<p class="note">... and {len(rows) - limit} more in analysis.json.</p>'
            if len(rows) > limit else "")
    rows = rows[:limit]
    columns = list(columns or rows[0])
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(r.get(c)))}</td>" for c in columns) + "</tr>"
                   for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>{more}"


def _p(text: str, cls: str = "") -> str:
    return f'<p class="{cls}">{html.escape(text)}</p>' if cls else f"<p>{html.escape(text)}</p>"


def section_texts(a: dict[str, Any], names: SampleImages | None) -> dict[str, str]:
    """The answers in words and tables, by section id."""
    fam, act = a["q2_leaders"]["family"], a["q2_leaders"]["activation"]
    gold = a["gold_stars"]
    texts = {
        "q1-attempts": table(a["q1_attempts"]) + _p(f"Accuracy per attempt: {a['accuracy_source']}.", "note"),
        "q2-leaders": (_p(f"Leading family: {fam[0]['group']} (median {_fmt(fam[0]['median'])}, "
                          f"spread {_fmt(fam[0]['spread'])}); leading activation: {act[0]['group']} "
                          f"(median {_fmt(act[0]['median'])}, spread {_fmt(act[0]['spread'])}).")
                       + table(fam, ["group", "n", "median", "q1", "q3", "spread", "min", "max"])
                       + table(act, ["group", "n", "median", "q1", "q3", "spread", "min", "max"])),
        "q3-6-costs": _p(f"{len(gold['trials'])} gold-star trial(s) (at least {gold['floor']:.0%} at every "
                         f"attempt and {gold['top']:.0%} at the last): {_fmt(gold['trials']) or 'none'}."),
        "q7-epochs": _q7_text(a["q7_epochs"]),
    }
    if "q8_samples" in a:
        texts["q8-samples"] = _q8_text(a["q8_samples"], names)
        q9 = a["q9_best_per_class"]
        texts["q9-best-per-class"] = (
            _p(f"Trial {q9['trial']} (best by validation accuracy) is "
               + ("the best at every class." if q9["best_everywhere"] else "not the best at every class."))
            + table(q9["classes"]))
        texts["q10-ensembles"] = _q10_text(a["q10_ensembles"])
    return texts


def _q7_text(q7: dict[str, Any]) -> str:
    text = table(q7["per_attempt"], ["attempt", "n", "median", "q1", "q3", "min", "max"])
    if "note" in q7:
        return text + _p(q7["note"], "note")
    th = q7["thresholds"]
    return (text + _p(f"Poor early and good late (mean accuracy over the first half of the attempts at "
                      f"most {th['poor_early_at_most']:.4g}, last at least {th['good_last_at_least']:.4g}): "
                      f"{len(q7['late_bloomers'])} trial(s).") + table(q7["late_bloomers"])
            + _p("Biggest gains from the first attempt to the last:") + table(q7["biggest_gains"]))


def _q8_text(q8: dict[str, Any], names: SampleImages | None) -> str:
    def name(c: int) -> str:
        return names.name(c) if names is not None else str(c)

    weird = [{**r, "label": name(r["label"]), "common_wrong": name(r["common_wrong"])}
             for r in q8["weird_samples"]]
    confusing = [{"index": r["index"], "label": name(r["label"]), "right": r["right"],
                  "answers": ", ".join(f"{name(x['class'])} {x['share']:.0%}" for x in r["answers"])}
                 for r in q8["confusing_samples"]]
    return (_p(f"Of {q8['samples']} samples, {q8['easy']} are easy (every trial right), {q8['weird']} weird "
               f"(more than 90% of trials give the same wrong answer) and {q8['confusing']} confusing (no "
               f"answer has a majority); {q8['possible_label_errors']} weird sample(s) may be mislabelled "
               "(the agreeing trials' mean confidence is at least 80%).")
            + "<h3>weird</h3>" + table(weird) + "<h3>confusing</h3>" + table(confusing))


def _q10_text(q10: dict[str, Any]) -> str:
    best = q10["best"]
    rows = []
    for order, data in q10["orders"].items():
        for vote, row in data["first_to_match"].items():
            rows.append({"ensemble": f"{order.replace('_', ' ')}, {vote} vote",
                         "members to match the best": row["k"] if row else "never",
                         **{f"total {c}": row.get(c) if row else None for c in ENSEMBLE_COSTS}})
    return (_p(f"Best trial {best['trial']}: accuracy {best['accuracy']:.4f}, "
               + ", ".join(f"{c} {_fmt(best.get(c))}" for c in ENSEMBLE_COSTS) + ".")
            + table(rows)
            + _p("Majority vote is exact. Only each member's top-class probability is stored, so "
                 "\"mean probability\" is a confidence-weighted vote: the class with the largest sum of "
                 "top-class probabilities. Best per cost: Pareto layers of validation accuracy against "
                 "parameters, cheapest first. Memory is summed over members.", "note"))


def splits_line(answers: dict[str, Any]) -> str:
    """Which split and which attempts the answers used (`analyze` prints it, the page states it)."""
    return (f"final answers (questions 2, 8-10): {answers.get('final_split', answers['split'])} split; "
            f"attempts (questions 1, 7, gold stars): {answers['accuracy_source']}")


def render_html(answers: dict[str, Any], figs: dict[str, go.Figure],
                names: SampleImages | None = None) -> str:
    """One self-contained page: plotly.js inline, a section per question, notes on what is missing."""

    texts = section_texts(answers, names)
    parts = [f"<h1>Cross-trial analysis: {html.escape(str(answers.get('study', '')))}</h1>",
             _p(f"dataset {answers.get('dataset')}; split {answers['split']}; {answers['trials']} trained "
                f"trials, {answers['with_predictions']} with stored predictions."),
             _p(splits_line(answers) + ".", "note")]
    if answers["needs_predictions"]:
        missing = ", ".join(PREDICTION_QUESTIONS[q] for q in answers["needs_predictions"])
        parts.append(_p(f"Questions {missing} need stored predictions, and no trial of this study kept "
                        "any. Search with --keep-predictions (the default) to answer them.", "missing"))
    parts += [_p(note, "note") for note in answers.get("notes", [])]
    for div_id, title in SECTIONS:
        body = figure_div(figs, div_id)
        if body or div_id in texts:
            parts.append(f'<section id="s-{div_id}"><h2>{html.escape(title)}</h2>{body}'
                         f"{texts.get(div_id, '')}</section>")
    return page(f"automl-nn analysis: {answers.get('study', '')}", "".join(parts))


def write(out_dir: Path, answers: dict[str, Any], images: SampleImages | None = None) -> dict[str, Path]:
    """Write analysis.html and analysis.json into `out_dir` (created if missing)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise AnalysisError(f"--out {out_dir}: expected a directory, but it is a file. "
                            "Pass a directory, e.g. --out analysis.")
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"html": out_dir / "analysis.html", "json": out_dir / "analysis.json"}
    paths["html"].write_text(render_html(answers, figures(answers, images), images), encoding="utf-8")
    paths["json"].write_text(json.dumps(answers, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    return paths


# ---- from a study --------------------------------------------------------------------------------

REGRESSION_METRICS = ("mse", "mae", "r2")


def check_classification(study: Any) -> dict[str, Any]:
    """The study's data description; a regression study is refused (the questions need classes)."""
    data = dict(study.user_attrs.get("data", {}))
    objectives = study.user_attrs.get("config", {}).get("objectives", [])
    task = data.get("task") or ("regression" if set(objectives) & set(REGRESSION_METRICS)
                                else "classification")
    if task != "classification":
        raise AnalysisError(f'study "{study.study_name}" is a {task} study, but the cross-trial questions '
                            "(right and wrong answers, votes, per-class percentiles) need a classification "
                            "study. Use `automl-nn report` for regression studies.")
    return data


def analyze_study(study: Any, storage_url: str, split: str, out_dir: Path,
                  gold_top: float, data_dir: str | None = None) -> dict[str, Path]:
    """Answer the questions for a study and write the page and the JSON; returns their paths."""
    from optuna.artifacts import FileSystemArtifactStore

    from automl_nn.analysis import predictions
    from automl_nn.analysis import questions as analysis
    from automl_nn.storage import artifacts

    data = check_classification(study)
    folder = artifacts.artifact_dir(storage_url)
    store = FileSystemArtifactStore(str(folder)) if folder.is_dir() else None
    trials, preds = predictions.read_predictions(study, store, split)
    if not trials:
        raise AnalysisError(f'study "{study.study_name}" has no complete, trained trial to analyse. '
                            "Run `automl-nn search` until some trials finish.")
    n_classes = int(data.get("n_outputs") or (preds.n_classes if preds else 0))
    class_names = tuple(str(c) for c in data.get("class_names") or range(n_classes))
    answers = {"study": study.study_name, "dataset": data.get("dataset"),
               **analysis.answer(trials, preds, split=split, class_names=class_names, gold_top=gold_top),
               "notes": _notes(trials, preds, store)}
    images = None
    if preds is not None and "q8_samples" in answers:
        images = sample_images(answers, preds.labels, split, data_dir, class_names)
    return write(out_dir, answers, images)


def _notes(trials: Sequence[Any], preds: Any, store: Any) -> list[str]:
    notes = ["The best trial is the one with the highest validation accuracy (the search objective); "
             "the analysed split only reports on it."]
    if preds is not None and len(preds.rows) < len(trials):
        notes.append(f"Questions 8-10 use the {len(preds.rows)} of {len(trials)} trials that kept "
                     "predictions (the others ran with --no-keep-predictions, or before predictions "
                     "were kept).")
    if preds is None and store is None:
        notes.append("No artifact store was found beside the storage; predictions live in "
                     "`<storage stem>-artifacts/`.")
    return notes


def sample_images(answers: dict[str, Any], labels: np.ndarray, split: str, data_dir: str | None,
                  class_names: tuple[str, ...]) -> SampleImages | None:
    """Images of question 8's samples from the dataset (cached, fast), or None when it cannot be read.

    The splits are deterministic (data.SPLIT_SEED); the labels are checked against the stored ones
    before any image is shown under them.
    """
    from automl_nn.data import catalog as data

    q8 = answers["q8_samples"]
    wanted = [r["index"] for r in q8["weird_samples"] + q8["confusing_samples"]][:GRID_LIMIT]
    if not wanted or not answers.get("dataset"):
        return None
    try:
        bundle = data.load(str(answers["dataset"]), data_dir)
    except UsageError as exc:
        answers.setdefault("notes", []).append(f"No image grid: the dataset could not be loaded ({exc}).")
        return None
    x, y = (bundle.x_val, bundle.y_val) if split == "val" else (bundle.x_test, bundle.y_test)
    if y.shape[0] != labels.shape[0] or not np.array_equal(y.cpu().numpy(), labels):
        answers.setdefault("notes", []).append(
            "No image grid: the dataset's split no longer matches the stored labels.")
        return None
    if x.dim() < 3:  # feature vectors, not images
        return None
    return SampleImages({i: x[i].cpu().numpy() for i in wanted}, class_names)
