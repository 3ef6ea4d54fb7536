"""A grid study read by factor: a metric against one parameter, one line per value of another.

the atomic experiments' atomic experiments vary one or two factors over a grid and train every point several
times (`repeat`). These functions turn such trials (`report.Point`s, so no study is needed to
test them) into that study's plots: the mean and standard deviation of a metric against a factor
(`factor_figure`, e.g. error against width, one line per function), and mean learning curves,
one per factor value (`epoch_figure`, e.g. validation accuracy per epoch, one line per loss).
`cells` holds the same numbers as plain records for tables. `automl-nn plot` is the command.

A name is looked up as a sampled parameter first (`width`, `loss`, `repeat`), then as a metric
(`accuracy`, `mse`, `test_accuracy`, `train_time`), then as an architecture column; a point that
lacks it is left out (for `by`: it gets no value in its label).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import plotly.colors
import plotly.graph_objects as go

from automl_nn.errors import UsageError
from automl_nn.results.page import page
from automl_nn.results.report import Point, write_images

EPOCH = "epoch"  # as x: per-epoch values of the trials' learning curves
LOG_SPAN = 20.0  # numeric x values spanning this factor or more get a log axis


class FactorError(UsageError):
    """A factor or metric that no trial of the study has."""


@dataclass(frozen=True)
class Cell:
    """The trials of one (line, x) pair: the mean and standard deviation of y over them."""

    line: str
    x: Any
    mean: float
    std: float  # sample standard deviation; 0 for a single trial
    n: int


def value(point: Point, name: str) -> Any:
    """The point's sampled parameter, metric or architecture column `name`; None if it has none."""
    for source in (point.params, point.metrics, point.arch):
        if name in source:
            return source[name]
    return None


def label(point: Point, by: Sequence[str]) -> str:
    """The line a point belongs to: its value of one factor, or `name=value` pairs of several."""
    if not by:
        return ""
    values = [(name, value(point, name)) for name in by]
    if len(by) == 1:
        return "" if values[0][1] is None else _text(values[0][1])
    return ", ".join(f"{name}={_text(v)}" for name, v in values if v is not None)


def cells(points: Sequence[Point], x: str, y: str, by: Sequence[str] = ()) -> list[Cell]:
    """Mean and std of `y` per (line, x value), lines and x values in sorted order."""
    groups: dict[tuple[str, Any], list[float]] = {}
    for point in points:
        xv, yv = value(point, x), value(point, y)
        if xv is None or not _finite(yv):
            continue
        groups.setdefault((label(point, by), xv), []).append(float(yv))
    _require(groups, points, x, y)
    return [_cell(line, xv, ys) for (line, xv), ys in sorted(groups.items(), key=_order)]


def curve_cells(points: Sequence[Point], y: str, by: Sequence[str] = ()) -> list[Cell]:
    """Mean and std of the per-epoch value `y` (e.g. val_accuracy) per (line, epoch)."""
    groups: dict[tuple[str, Any], list[float]] = {}
    for point in points:
        for epoch, record in enumerate(point.curve, start=1):
            if _finite(record.get(y)):
                groups.setdefault((label(point, by), epoch), []).append(float(record[y]))
    _require(groups, points, EPOCH, y)
    return [_cell(line, epoch, ys) for (line, epoch), ys in sorted(groups.items(), key=_order)]


def factor_figure(points: Sequence[Point], x: str, y: str, by: Sequence[str] = (),
                  title: str | None = None) -> go.Figure:
    """`y` against `x` (mean, with the std as error bars), one line per value of `by`.

    `x` = "epoch" draws the learning curves of the per-epoch value `y` instead.
    """
    found = curve_cells(points, y, by) if x == EPOCH else cells(points, x, y, by)
    fig = go.Figure()
    palette = plotly.colors.qualitative.Plotly
    for k, line in enumerate(dict.fromkeys(c.line for c in found)):
        mine = [c for c in found if c.line == line]
        fig.add_trace(go.Scatter(
            x=[c.x for c in mine], y=[c.mean for c in mine], name=line or y, mode="lines+markers",
            error_y={"type": "data", "array": [c.std for c in mine], "visible": x != EPOCH},
            line={"color": palette[k % len(palette)]},
            hovertext=[f"{line} {x}={_text(c.x)}: {c.mean:.4g} ± {c.std:.2g} (n={c.n})" for c in mine],
            hoverinfo="text"))
    numeric = [c.x for c in found if isinstance(c.x, int | float) and not isinstance(c.x, bool)]
    log = len(numeric) == len(found) and min(numeric) > 0 and max(numeric) / min(numeric) >= LOG_SPAN
    fig.update_xaxes(title_text=x, type="log" if log and x != EPOCH else None)
    fig.update_yaxes(title_text=y)
    by_text = f", one line per {' and '.join(by)}" if by else ""
    fig.update_layout(title=title or f"{y} against {x}{by_text} (mean ± std over trials)",
                      legend_title_text=", ".join(by), height=480)
    return fig


def write_figure(fig: go.Figure, out: Path) -> None:
    """`fig` as a self-contained HTML page (plotly inline) or, for a .png name, as an image."""
    if out.suffix == ".png":
        written = write_images({out.stem: fig}, out.parent)
        if written[0] != out:
            written[0].replace(out)
        return
    out.write_text(page(str(fig.layout.title.text or out.stem),
                        fig.to_html(full_html=False, include_plotlyjs=False)), encoding="utf-8")


def rows(found: Sequence[Cell], x: str, y: str, by: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Cells as table rows: the line's factor, x, mean, std and trial count."""
    line_name = ", ".join(by) or "line"
    return [{**({line_name: c.line} if by else {}), x: c.x, f"{y} mean": c.mean, f"{y} std": c.std,
             "trials": c.n} for c in found]


def _cell(line: str, x: Any, ys: list[float]) -> Cell:
    std = statistics.stdev(ys) if len(ys) > 1 else 0.0
    return Cell(line, x, statistics.fmean(ys), std, len(ys))


def _order(item: tuple[tuple[str, Any], list[float]]) -> tuple[Any, ...]:
    (line, x), _ = item
    numeric = isinstance(x, int | float) and not isinstance(x, bool)
    return (_line_key(line), 0 if numeric else 1, x if numeric else str(x))


def _line_key(line: str) -> tuple[Any, ...]:
    """Lines whose labels are numbers sort numerically (batch 4 before batch 16)."""
    try:
        return (0, float(line), "")
    except ValueError:
        return (1, 0.0, line)


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)


def _text(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)


def _require(groups: dict[Any, Any], points: Sequence[Point], x: str, y: str) -> None:
    if groups:
        return
    names = sorted({n for p in points for n in (*p.params, *p.metrics, *p.arch)})
    epoch_keys = sorted({k for p in points for record in p.curve for k in record})
    known = f"per-epoch values: {', '.join(epoch_keys)}" if x == EPOCH else f"names: {', '.join(names)}"
    raise FactorError(f"no completed trial has both {x} and {y}"
                      f"{' (' + str(len(points)) + ' trials)' if points else ' (no completed trials)'}."
                      f" Pick from the study's {known}.")
