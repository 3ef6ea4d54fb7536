"""Grid studies read by factor: cells against a hand computation, figures, missing names."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import optuna
import pytest
from typer.testing import CliRunner

from automl_nn.results import plot as factors
from automl_nn.results.report import Point, point_of
from automl_nn.storage import record
from tests.conftest import run


def _point(number: int, width: int, fn: str, mse: float, curve: tuple[float, ...] = ()) -> Point:
    return Point(number, (mse,), {"mse": mse}, {"widths": str(width)},
                 tuple({"val_loss": v} for v in curve), {"width": width, "fn": fn})


POINTS = [_point(0, 16, "sin", 0.2), _point(1, 2, "sin", 0.5), _point(2, 16, "sin", 0.1),
          _point(3, 2, "abs", 0.3), _point(4, 2, "sin", 0.7), _point(5, 16, "abs", 0.01)]


def test_cells_average_the_runs_of_each_line_and_x() -> None:
    found = factors.cells(POINTS, "width", "mse", by=["fn"])
    assert [(c.line, c.x, c.n) for c in found] == [("abs", 2, 1), ("abs", 16, 1), ("sin", 2, 2),
                                                   ("sin", 16, 2)]
    sin2 = found[2]
    assert sin2.mean == pytest.approx(0.6)
    assert sin2.std == pytest.approx(statistics.stdev([0.5, 0.7]))
    assert found[0].std == 0.0, "one run has no spread"


def test_numeric_lines_sort_as_numbers() -> None:
    points = [_point(i, w, "sin", 0.1) for i, w in enumerate((64, 4, 16))]
    assert [c.line for c in factors.cells(points, "fn", "mse", by=["width"])] == ["4", "16", "64"]


def test_several_factors_label_each_line_by_name() -> None:
    point = Point(0, (0.9,), {"accuracy": 0.9}, {}, (), {"init": "normal", "init_std": 0.01})
    other = Point(1, (0.5,), {"accuracy": 0.5}, {}, (), {"init": "zeros"})
    assert factors.label(point, ["init", "init_std"]) == "init=normal, init_std=0.01"
    assert factors.label(other, ["init", "init_std"]) == "init=zeros"


def test_learning_curves_average_per_epoch() -> None:
    points = [_point(0, 2, "sin", 0.0, (1.0, 0.5)), _point(1, 2, "sin", 0.0, (0.8, 0.3, 0.1)),
              _point(2, 16, "sin", 0.0, (0.4,))]
    found = factors.curve_cells(points, "val_loss", by=["width"])
    assert [(c.line, c.x, c.n) for c in found] == [("2", 1, 2), ("2", 2, 2), ("2", 3, 1), ("16", 1, 1)]
    assert found[0].mean == pytest.approx(0.9)


def test_factor_figure_draws_one_line_per_value_with_error_bars() -> None:
    fig = factors.factor_figure(POINTS, "width", "mse", by=["fn"])
    traces = {t.name: t for t in fig.data}
    assert set(traces) == {"abs", "sin"}
    assert list(traces["sin"].x) == [2, 16]
    assert list(traces["sin"].y) == pytest.approx([0.6, 0.15])
    assert traces["sin"].error_y.array[0] == pytest.approx(statistics.stdev([0.5, 0.7]))
    assert fig.layout.xaxis.type is None, "2 to 16 is not wide enough for a log axis"
    wide = [_point(0, 1, "sin", 0.1), _point(1, 64, "sin", 0.2)]
    assert factors.factor_figure(wide, "width", "mse").layout.xaxis.type == "log"


def test_unknown_names_are_refused_with_the_known_ones() -> None:
    with pytest.raises(factors.FactorError, match="both depth and mse.*names: fn, mse, width"):
        factors.cells(POINTS, "depth", "mse")
    with pytest.raises(factors.FactorError, match="per-epoch values: val_loss"):
        factors.curve_cells([_point(0, 2, "sin", 0.0, (1.0,))], "val_accuracy")


def test_points_from_trials_carry_their_sampled_parameters() -> None:
    study = optuna.create_study()
    trial = study.ask()
    trial.suggest_categorical("loss", ["mse", "hinge"])
    trial.set_user_attr("test_accuracy", 0.75)
    study.tell(trial, 0.5)
    point = point_of(study.trials[0])
    assert factors.value(point, "loss") in ("mse", "hinge")
    assert factors.value(point, "test_accuracy") == 0.75
    assert factors.value(point, "depth") is None



def _grid_study(storage: str) -> None:
    """Three finished trials: two with loss mse (accuracy 0.8, 0.9), one with hinge (0.6)."""
    study = optuna.create_study(study_name="g", storage=storage, direction="maximize")
    for loss, acc in (("mse", 0.8), ("mse", 0.9), ("hinge", 0.6)):
        study.enqueue_trial({"loss": loss})
        trial = study.ask()
        trial.suggest_categorical("loss", ["mse", "hinge"])
        record.write_epoch(trial, 1, {"val_accuracy": acc / 2})
        record.write_epoch(trial, 2, {"val_accuracy": acc})
        record.write_metrics(trial, {"accuracy": acc})
        study.tell(trial, acc)


def test_plot_command_prints_the_table_and_writes_the_figure(cli: CliRunner, tmp_path: Path) -> None:
    _grid_study("sqlite:///g.db")
    code, output = run(cli, "plot", "g", "--x", "loss", "--y", "accuracy", "--storage",
                       "sqlite:///g.db", "--format", "json", "--out", "g.html")
    assert code == 0, output
    table = json.loads(output[output.index("["): output.rindex("]") + 1])
    assert [(r["loss"], r["trials"]) for r in table] == [("hinge", 1), ("mse", 2)]
    assert table[1]["accuracy mean"] == pytest.approx(0.85)
    page = (tmp_path / "g.html").read_text()
    assert "<script>" in page and "accuracy against loss" in page
    code, output = run(cli, "plot", "g", "--x", "epoch", "--y", "val_accuracy", "--by", "loss",
                       "--storage", "sqlite:///g.db", "--format", "csv")
    assert code == 0, output
    assert "mse,2,0.85" in output.replace("0.8500000000000001", "0.85")


def test_plot_command_refuses_unknown_names_and_suffixes(cli: CliRunner) -> None:
    _grid_study("sqlite:///g.db")
    code, output = run(cli, "plot", "g", "--x", "width", "--y", "accuracy", "--storage", "sqlite:///g.db")
    assert code == 2 and "no completed trial has both width and accuracy" in output
    assert "loss" in output, "the message lists the names the study has"
    code, output = run(cli, "plot", "g", "--x", "loss", "--y", "accuracy", "--out", "g.pdf",
                       "--storage", "sqlite:///g.db")
    assert code == 2 and ".html or .png" in output
