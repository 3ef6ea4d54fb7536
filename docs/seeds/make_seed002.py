"""Figures and tables of docs/seeds/seed002.md from the studies docs/seeds/run_seed002.sh ran.

    python docs/seeds/make_seed002.py sqlite:///seed002.db

Writes PNGs to docs/seeds/img/ and prints the Markdown tables. One-off glue: the generic part
(a metric against one factor, one line per value of another) is `automl_nn.factors`, which
`automl-nn plot` also uses; what is specific to the seed's plots (fitted curves, decision
boundaries, weight statistics) lives here.
"""

from __future__ import annotations

import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import plotly.graph_objects as go
import plotly.io as pio
import torch
from plotly.subplots import make_subplots

from automl_nn import weights
from automl_nn.data import catalog as data
from automl_nn.nn import activation, build
from automl_nn.results import plot as factors
from automl_nn.results.report import Point, collect_points
from automl_nn.spec import Candidate
from automl_nn.storage import artifacts
from automl_nn.train import prepared

IMG = Path(__file__).parent / "img"
FUNCTIONS = ("sin", "polynomial", "abs")
RATIOS = (1, 2, 5, 10, 20, 50, 100)


class Studies:
    """The seed 002 studies of one storage, their points, and trained models from kept weights."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.storage = optuna.storages.get_storage(url)
        self.store = artifacts.open_store(url)

    def study(self, name: str) -> optuna.Study:
        return optuna.load_study(study_name=name, storage=self.storage)

    def points(self, name: str, **extra: Any) -> list[Point]:
        """The study's points, with `extra` added to their parameters (e.g. the function)."""
        return [replace(p, params={**p.params, **extra}) for p in collect_points(self.study(name))]

    def model(self, name: str, number: int) -> tuple[torch.nn.Module, data.DataBundle, Candidate]:
        """Trial `number`'s trained network (kept weights), its data and its candidate."""
        study = self.study(name)
        trial = study.trials[number]
        candidate = Candidate.from_dict(trial.user_attrs["candidate"])
        bundle = data.load(study.user_attrs["config"]["dataset"])
        model = build(candidate.arch, bundle.input_shape, bundle.n_outputs)
        with tempfile.TemporaryDirectory() as tmp:
            path = artifacts.fetch_weights(trial, self.store, Path(tmp) / "w.pt")
            model.load_state_dict(weights.load_state(path))
        return model.eval(), prepared(bundle, candidate.train), candidate


def predict(model: torch.nn.Module, bundle: data.DataBundle, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        out: np.ndarray = model(bundle.normalize(torch.from_numpy(x.astype(np.float32)))).numpy()
    return out


def first(points: list[Point], **params: Any) -> Point:
    """The first-run trial (repeat 0) whose parameters match `params`."""
    return next(p for p in sorted(points, key=lambda p: p.number)
                if all(p.params.get(k) == v for k, v in params.items()) and p.params.get("repeat", 0) == 0)


def markdown(rows: list[dict[str, Any]]) -> str:
    def cell(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    head = list(rows[0])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(cell(r[k]) for k in head) + " |" for r in rows]
    return "\n".join(lines)


def table(title: str, points: list[Point], x: str, y: str, by: tuple[str, ...] = ()) -> None:
    found = factors.curve_cells(points, y, by) if x == factors.EPOCH else factors.cells(points, x, y, by)
    if x == factors.EPOCH:  # the last epoch only: the table is the end of each curve
        last = max(c.x for c in found)
        found = [c for c in found if c.x == last]
    print(f"\n### {title}\n\n{markdown(factors.rows(found, x, y, by))}")


# ---- the experiments -----------------------------------------------------------------------------


def width(s: Studies, figs: dict[str, go.Figure]) -> None:
    points = [p for fn in FUNCTIONS for p in s.points(f"seed002-width-{fn}", function=fn)]
    figs["width-error"] = factors.factor_figure(points, "width", "mse", ("function",),
                                                title="Validation MSE against hidden units")
    figs["width-error"].update_yaxes(type="log")
    table("Width: validation MSE", points, "width", "mse", ("function",))
    table("Width: test MSE", points, "width", "test_mse", ("function",))
    widths = (2, 4, 16)
    fig = make_subplots(rows=3, cols=3, subplot_titles=[str(k) for k in range(9)], vertical_spacing=0.08)
    titles = []
    grid = np.linspace(-1, 1, 400)[:, None]
    for row, fn in enumerate(FUNCTIONS, start=1):
        for col, w in enumerate(widths, start=1):
            p = first([q for q in points if q.params["function"] == fn], width=w)
            model, bundle, _ = s.model(f"seed002-width-{fn}", p.number)
            x_train = bundle.x_train.numpy()[:, 0]
            fig.add_trace(go.Scatter(x=x_train, y=bundle.y_train.numpy()[:, 0], mode="markers",
                                     marker={"size": 5, "color": "#1f77b4"}, name="training points",
                                     showlegend=row == col == 1), row=row, col=col)
            fig.add_trace(go.Scatter(x=grid[:, 0], y=predict(model, bundle, grid)[:, 0], mode="lines",
                                     line={"color": "#ff7f0e", "dash": "dash"}, name="network",
                                     showlegend=row == col == 1), row=row, col=col)
            titles.append(f"{fn}, {w} units, val MSE={p.metrics['mse']:.4f}")
    _finish(fig, titles, "One hidden layer fitted to 50 points (first run of each width)", 900)
    figs["width-fits"] = fig


def depth(s: Studies, figs: dict[str, go.Figure]) -> None:
    points = s.points("seed002-depth")
    figs["depth-params"] = factors.factor_figure(
        points, "params", "accuracy", ("depth",),
        title="Alternating points: validation accuracy against parameters, one line per depth")
    table("Depth: validation accuracy by parameter count", points, "params", "accuracy", ("depth",))
    picks = {1: 32, 2: 8, 3: 8}  # 130, 106 and 178 parameters
    fig = make_subplots(rows=1, cols=3, subplot_titles=[str(k) for k in range(3)])
    grid = np.linspace(-1, 1, 800)[:, None]
    titles = []
    for col, (d, w) in enumerate(picks.items(), start=1):
        p = first(points, depth=d, width=w)
        model, bundle, _ = s.model("seed002-depth", p.number)
        out = predict(model, bundle, grid)
        x_val = bundle.x_val.numpy()[:, 0]
        fig.add_trace(go.Scatter(x=x_val, y=bundle.y_val.numpy() * 2 - 1, mode="markers",
                                 marker={"size": 4, "color": bundle.y_val.numpy(),
                                         "colorscale": "Bluered"},
                                 name="validation points (class -1 / +1)", showlegend=col == 1),
                      row=1, col=col)
        score = np.tanh(out[:, 1] - out[:, 0])
        fig.add_trace(go.Scatter(x=grid[:, 0], y=score, mode="lines", line={"color": "black"},
                                 name="tanh(logit 1 - logit 0)", showlegend=col == 1), row=1, col=col)
        titles.append(f"{d} layer(s) x {w}: {int(p.metrics['params'])} params, "
                      f"acc {p.metrics['accuracy']:.3f}")
    for annotation, text in zip(fig.layout.annotations, titles, strict=True):
        annotation.text = text
        annotation.font = {"size": 12}
    fig.update_layout(title="What each depth learns at 106-178 parameters (first run)", height=420)
    figs["depth-fits"] = fig


def curves(s: Studies, figs: dict[str, go.Figure], name: str, by: tuple[str, ...], title: str) -> None:
    points = s.points(f"seed002-{name}")
    figs[name] = factors.factor_figure(points, factors.EPOCH, "val_accuracy", by, title=title)
    table(f"{name}: validation accuracy after the last epoch", points, factors.EPOCH,
          "val_accuracy", by)
    table(f"{name}: test accuracy", points, by[0], "test_accuracy", by[1:])


def activation_shapes(figs: dict[str, go.Figure]) -> None:
    names = ("relu", "tanh", "square", "sin", "sign", "identity")
    x = torch.linspace(-3, 3, 301)
    fig = make_subplots(rows=1, cols=len(names), subplot_titles=names)
    for col, name in enumerate(names, start=1):
        fig.add_trace(go.Scatter(x=x.numpy(), y=activation(name)(x).numpy(), mode="lines",
                                 showlegend=False), row=1, col=col)
    fig.update_layout(title="The activations", height=260)
    figs["activation-shapes"] = fig


def regularization(s: Studies, figs: dict[str, go.Figure]) -> None:
    points = s.points("seed002-regularization")
    table("Regularization: test accuracy over l1 x l2", points, "l2", "test_accuracy", ("l1",))
    strengths = (0.0, 0.01, 0.1, 1.0)
    fig = make_subplots(rows=1, cols=3, subplot_titles=["test accuracy", "mean |w| (first layer)",
                                                        "share of |w| < 1e-3 (first layer)"])
    rows = []
    for kind, other in (("l1", "l2"), ("l2", "l1")):
        stats: dict[float, list[tuple[float, float, float]]] = {v: [] for v in strengths}
        for p in points:
            if p.params[other] != 0.0:
                continue
            model, _, _ = s.model("seed002-regularization", p.number)
            w = next(m for m in model.modules() if isinstance(m, torch.nn.Linear)).weight.detach().abs()
            stats[p.params[kind]].append((p.metrics["test_accuracy"], float(w.mean()),
                                          float((w < 1e-3).float().mean())))
        for col in range(3):
            fig.add_trace(go.Scatter(x=[str(v) for v in strengths],
                                     y=[float(np.mean([t[col] for t in stats[v]])) for v in strengths],
                                     mode="lines+markers", name=kind.upper(), showlegend=col == 0,
                                     line={"color": "#1f77b4" if kind == "l1" else "#d62728"}),
                          row=1, col=col + 1)
        rows += [{"penalty": kind.upper(), "strength": v, "runs": len(stats[v]),
                  "test accuracy": float(np.mean([t[0] for t in stats[v]])),
                  "mean abs w": float(np.mean([t[1] for t in stats[v]])),
                  "share abs w < 1e-3": float(np.mean([t[2] for t in stats[v]]))} for v in strengths]
    fig.update_xaxes(title_text="strength")
    fig.update_layout(title="L1 or L2 alone: accuracy, weight size and sparsity after 30 epochs",
                      height=420)
    figs["regularization"] = fig
    print(f"\n### Regularization: L1 or L2 alone, weights of the first layer\n\n{markdown(rows)}")


def batch_size(s: Studies, figs: dict[str, go.Figure], threshold: float = 0.8) -> None:
    points = s.points("seed002-batch-size")
    curves_fig = factors.factor_figure(points, factors.EPOCH, "val_accuracy", ("batch_size",),
                                       title="Validation accuracy per epoch, one line per batch size")
    table("Batch size: validation accuracy after the last epoch", points, factors.EPOCH,
          "val_accuracy", ("batch_size",))
    table("Batch size: test accuracy", points, "batch_size", "test_accuracy")
    table("Batch size: training time (s)", points, "batch_size", "train_time")
    reached = []
    for p in points:
        seconds = np.cumsum([e["seconds"] for e in p.curve])
        hit = [k for k, e in enumerate(p.curve) if e["val_accuracy"] >= threshold]
        if hit:
            reached.append(replace(p, metrics={**p.metrics, "time_to_0.8": float(seconds[hit[0]])}))
    table(f"Batch size: seconds until validation accuracy >= {threshold}", reached, "batch_size",
          "time_to_0.8")
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    for name, color, secondary, pts in (("train_time", "black", False, points),
                                        ("time_to_0.8", "red", True, reached)):
        found = factors.cells(pts, "batch_size", name)
        fig.add_trace(go.Scatter(x=[c.x for c in found], y=[c.mean for c in found],
                                 error_y={"type": "data", "array": [c.std for c in found]},
                                 mode="lines+markers", line={"color": color},
                                 name="total training time (30 epochs)" if name == "train_time"
                                 else f"time until val accuracy >= {threshold}"),
                      secondary_y=secondary)
    fig.update_xaxes(title_text="batch size", type="log")
    fig.update_yaxes(title_text="seconds", secondary_y=False)
    fig.update_yaxes(title_text="seconds", secondary_y=True)
    fig.update_layout(title="Run time against batch size", height=420)
    figs["batch-size-curves"], figs["batch-size-time"] = curves_fig, fig


def imbalance(s: Studies, figs: dict[str, go.Figure]) -> None:
    points = [p for r in RATIOS for over in (False, True) for p in s.points(
        f"seed002-imbalance-{r}{'-oversampled' if over else ''}", ratio=r,
        resampling="with oversampling" if over else "without")]
    figs["imbalance"] = factors.factor_figure(
        points, "ratio", "test_accuracy", ("resampling",),
        title="Balanced test accuracy against the training class ratio (X:1)")
    table("Imbalance: balanced test accuracy", points, "ratio", "test_accuracy", ("resampling",))
    table("Imbalance: validation accuracy (imbalanced like training)", points, "ratio", "accuracy",
          ("resampling",))
    fig = make_subplots(rows=1, cols=2, subplot_titles=["0", "1"])
    titles = []
    for col, over in enumerate((False, True), start=1):
        name = f"seed002-imbalance-100{'-oversampled' if over else ''}"
        p = first(s.points(name))
        model, bundle, _ = s.model(name, p.number)
        xs = np.linspace(-3.5, 4.5, 120)
        xx, yy = np.meshgrid(xs, xs)
        out = predict(model, bundle, np.stack([xx.ravel(), yy.ravel()], axis=1))
        prob = torch.from_numpy(out).softmax(dim=1).numpy()[:, 1].reshape(xx.shape)
        fig.add_trace(go.Contour(x=xs, y=xs, z=prob, colorscale="RdBu", reversescale=True,
                                 contours={"start": 0, "end": 1, "size": 0.1}, opacity=0.6,
                                 showscale=col == 2), row=1, col=col)
        x_test, y_test = bundle.x_test.numpy(), bundle.y_test.numpy()
        fig.add_trace(go.Scatter(x=x_test[:, 0], y=x_test[:, 1], mode="markers",
                                 marker={"size": 4, "color": y_test, "colorscale": "Bluered",
                                         "line": {"width": 0.5, "color": "white"}},
                                 showlegend=False), row=1, col=col)
        titles.append(f"{'with' if over else 'no'} oversampling: test acc {p.metrics['test_accuracy']:.3f}")
    _finish(fig, titles, "Ratio 100:1: P(minority class) over the plane, balanced test points", 480)
    figs["imbalance-boundary"] = fig


def _finish(fig: go.Figure, titles: list[str], title: str, height: int) -> None:
    """Subplot titles written after the traces (they quote results), then the figure's own."""
    for annotation, text in zip(fig.layout.annotations, titles, strict=True):
        annotation.text = text
    fig.update_layout(title=title, height=height)


def main(url: str) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    s = Studies(url)
    figs: dict[str, go.Figure] = {}
    width(s, figs)
    depth(s, figs)
    activation_shapes(figs)
    curves(s, figs, "activations", ("activation",), "Two moons: validation accuracy per epoch")
    curves(s, figs, "losses", ("loss",), "12-d Gaussians: validation accuracy per epoch, by loss")
    curves(s, figs, "initializers", ("init", "init_std"),
           "12-d Gaussians: validation accuracy per epoch, by initializer")
    regularization(s, figs)
    batch_size(s, figs)
    imbalance(s, figs)
    IMG.mkdir(parents=True, exist_ok=True)
    paths = [IMG / f"{name}.png" for name in figs]
    pio.write_images(list(figs.values()), paths, format="png", width=1400,
                     height=[fig.layout.height or 500 for fig in figs.values()])
    print("\n" + "\n".join(str(p) for p in paths), file=sys.stderr)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "sqlite:///seed002.db")
