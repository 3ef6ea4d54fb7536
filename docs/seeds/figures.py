"""The PNG figures of docs/seeds/, drawn from the studies and ablations the pages describe.

    python docs/seeds/figures.py seed001 --storage sqlite:///runs/seed001.db \
        --study seed001-sparsifier-mnist --study seed001-sparsifier-digits \
        --out docs/seeds/img/seed001-front.png
    python docs/seeds/figures.py seed001 --storage sqlite:///runs/seed001.db \
        --study seed001-sparsifier-digits --out docs/seeds/img/seed001-digits.png
    python docs/seeds/figures.py ablate-bars runs/seed003-ablate/ablate.json \
        --out docs/seeds/img/seed003-tricks.png
    python docs/seeds/figures.py ablate-curves runs/seed004-ablate/ablate.json \
        --out docs/seeds/img/seed004-curves.png
    python docs/seeds/figures.py analysis runs/seed000-analysis/analysis.json --out docs/seeds/img/seed000
    python docs/seeds/figures.py seed000-front --storage sqlite:///runs/seed000.db \
        --study seed000-mo-10k-1mflops --out docs/seeds/img/seed000-front.png

Figures reuse the package's own builders where one exists (`ablate.curves_figure`,
`analysis_page.figures`) and are written through `report.write_images` (kaleido + chromium).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import optuna
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from automl_nn.results import ablate, analysis_page, report


def sparsifier_figure(studies: list[optuna.Study]) -> go.Figure:
    """Validation accuracy against parameters after shrinking: gated trials against plain widths."""
    fig = make_subplots(rows=1, cols=len(studies), subplot_titles=[s.study_name for s in studies])
    for col, study in enumerate(studies, start=1):
        for mode, symbol in (("uniform", "circle"), ("gated", "x")):
            trials = [t for t in study.trials if t.state.name == "COMPLETE"
                      and t.params.get("width_mode") == mode]
            text = [_sparsifier_label(t) for t in trials]
            fig.add_trace(go.Scatter(
                x=[t.user_attrs["params"] for t in trials], y=[t.user_attrs["accuracy"] for t in trials],
                mode="markers", marker={"symbol": symbol, "size": 9}, name=f"{mode} ({study.study_name})",
                text=text, hovertext=text), row=1, col=col)
    fig.update_xaxes(type="log", title_text="parameters (after cutting gated neurons)")
    fig.update_yaxes(title_text="validation accuracy")
    fig.update_layout(height=450, title="Seed 001: gated widths against searched widths")
    return fig


def _sparsifier_label(trial: optuna.trial.FrozenTrial) -> str:
    width = trial.params.get("width")
    if trial.params.get("width_mode") != "gated":
        return f"width {width}"
    return (f"start {width} -> {trial.user_attrs.get('effective_widths')}, "
            f"gate_l1 {trial.params.get('gate_l1', 0):.2g}")


# seed 000's own networks (test accuracy after 4 epochs on the full training set) and our Basic
SEED000_REFERENCES = (("seed Basic (test)", 7850, 0.912), ("seed ResNetStyle_75 (test)", 531605, 0.991),
                      ("our Basic, full train set (val)", 7850, 0.9145))


def seed000_front(study: optuna.Study) -> go.Figure:
    """The report's front figure, with seed 000's Basic and best networks on the params panel."""
    data = report.read_report(study)
    fig = report.pareto_figure(data.points, data.objectives, data.front, data.knee)
    for (name, params, acc), symbol in zip(SEED000_REFERENCES, ("diamond", "square", "cross"), strict=True):
        fig.add_trace(go.Scatter(x=[params], y=[acc], mode="markers",
                                 name=name,
                                 marker={"symbol": symbol, "size": 11, "color": "#1f77b4"}), row=1, col=1)
    fig.update_xaxes(type="log", row=1, col=1)
    fig.update_layout(title=f"Seed 000 as a multi-objective search: {study.study_name} "
                            f"({len(data.points)} trained trials, {data.dataset})", width=1400, height=520)
    return fig


def _ablation(path: Path) -> ablate.Ablation:
    data: dict[str, Any] = json.loads(path.read_text())
    factors = {name: [ablate.Variant(**v) for v in variants] for name, variants in data["factors"].items()}
    base = data["baseline"]
    return ablate.Ablation(data["study"], data["dataset"], base["trial"], base["params"], factors)


def ablation_bars(ablation: ablate.Ablation) -> go.Figure:
    """Final validation and test accuracy of every variant, baseline first (seed 003's bar chart)."""
    labels, val, test = ["baseline"], [0.0], [0.0]
    for name, variants in ablation.factors.items():
        for v in variants:
            if v.baseline:
                val[0], test[0] = v.accuracy or 0.0, v.test_accuracy or 0.0
            elif v.accuracy is not None:
                labels.append(f"{name}={ablate._label(v.value)}")
                val.append(v.accuracy)
                test.append(v.test_accuracy or 0.0)
    fig = go.Figure([go.Bar(x=labels, y=val, name="validation accuracy"),
                     go.Bar(x=labels, y=test, name="test accuracy")])
    low = min(val + test)
    fig.update_layout(barmode="group", height=450, yaxis={"range": [max(0.0, low - 0.02), 1.0]},
                      title=f"One trick at a time from the baseline ({ablation.dataset})")
    return fig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kind", choices=["seed001", "seed000-front", "ablate-bars", "ablate-curves",
                                         "analysis"])
    parser.add_argument("source", nargs="?", type=Path)
    parser.add_argument("--storage")
    parser.add_argument("--study", action="append", default=[])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.kind == "seed001":
        studies = [optuna.load_study(study_name=s, storage=args.storage) for s in args.study]
        figs = {args.out.stem: sparsifier_figure(studies)}
    elif args.kind == "seed000-front":
        study = optuna.load_study(study_name=args.study[0], storage=args.storage)
        figs = {args.out.stem: seed000_front(study)}
    elif args.kind == "ablate-bars":
        figs = {args.out.stem: ablation_bars(_ablation(args.source))}
    elif args.kind == "ablate-curves":
        figs = {args.out.stem: ablate.curves_figure(_ablation(args.source))}
    else:
        answers = json.loads(args.source.read_text())
        figs = {f"{args.out.stem}-{k}": f for k, f in analysis_page.figures(answers).items()}
    for path in report.write_images(figs, args.out.parent):
        print(path)


if __name__ == "__main__":
    main()
