"""The report: figure builders on plain data, the HTML file, and the page rendered in headless chromium."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest

from automl_nn.results import report
from automl_nn.storage import record
from automl_nn.study import front as study_front
from tests.browser import browser_context, is_real_png, needs_browser
from tests.fake_study import DISTRIBUTIONS, make_study

PLOTS = ("pareto", "hypervolume", "history", "importance", "family-activation", "costs", "curves")


@pytest.fixture(scope="module")
def study() -> optuna.Study:
    return make_study(optuna.storages.InMemoryStorage(), n=24)


@pytest.fixture(scope="module")
def page_context() -> Iterator[Any]:
    yield from browser_context()


def _point(number: int, acc: float, params: float) -> report.Point:
    return report.Point(number, (acc, params), {"accuracy": acc, "params": params},
                        {"family": "linear", "activation": "relu", "widths": "8x16"})


def test_pareto_figure_splits_front_others_and_knee() -> None:
    objectives = [report.Objective("accuracy", True, "fraction"), report.Objective("params", False, "count")]
    points = [_point(0, 0.9, 1000), _point(1, 0.8, 100), _point(2, 0.7, 500)]
    fig = report.pareto_figure(points, objectives, front_numbers=[0, 1], knee=1)
    traces = {t.name: t for t in fig.data}
    assert list(traces[report.FRONT].x) == [100, 1000]  # sorted along the cost axis
    assert list(traces[report.OTHERS].x) == [500]
    assert list(traces[report.KNEE].y) == [0.8]
    assert fig.layout.xaxis.title.text == "params (count)"
    assert fig.layout.yaxis.title.text == "accuracy (fraction)"
    hover = traces[report.FRONT].hovertext[0]
    assert "trial 1" in hover and "family=linear" in hover and "params: 100 count" in hover


def test_reference_point_lies_beyond_the_worst_values() -> None:
    ref = report.reference_point([(0.9, 100.0), (0.5, 300.0)], [True, False])
    assert ref == pytest.approx([0.5 - 0.04, 300.0 + 20.0])


def test_hypervolume_is_a_fraction_of_the_reference_box() -> None:
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.set_metric_names(["accuracy", "params"])
    for values in ([0.5, 100.0], [1.0, 200.0]):
        study.add_trial(optuna.trial.create_trial(values=values))
    data = report.read_report(study)
    # reference (0.45, 210), ideal (1.0, 100): box 0.55 * 110; front covers
    # (1.0-0.45)*(210-200) + (0.5-0.45)*(200-100) by hand
    expected = (0.55 * 10 + 0.05 * 100) / (0.55 * 110)
    assert data.hypervolume is not None
    assert data.hypervolume[1][-1] == pytest.approx(expected)
    assert "importance" in data.notes  # too few trials: a note, not a crash


def test_hypervolume_history_is_optunas_at_every_trial(study: optuna.Study) -> None:
    import warnings

    data = report.read_report(study)
    maximize = [o.maximize for o in data.objectives]
    assert data.reference_point is not None and data.hypervolume is not None
    numbers, volumes = report.hypervolume_history(data.points, maximize, data.reference_point)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        trace = optuna.visualization.plot_hypervolume_history(study, data.reference_point).data[0]
    assert numbers == list(trace.x)
    assert volumes == pytest.approx(list(trace.y))
    assert len(set(volumes)) > 3, "the front moved several times"


def test_a_large_study_draws_webgl_with_short_hovers_and_a_sampled_importance(
        monkeypatch: pytest.MonkeyPatch) -> None:
    big = make_study(optuna.storages.InMemoryStorage(), n=30)
    monkeypatch.setattr(report, "LARGE", 10)
    monkeypatch.setattr(report, "IMPORTANCE_SAMPLE", 12)
    data = report.read_report(big)
    figs = report.figures(data)
    traces = {t.name: t for t in figs["pareto"].data}
    assert traces[report.OTHERS].type == "scattergl"
    assert all(re.fullmatch(r"trial \d+", text) for text in traces[report.OTHERS].hovertext)
    assert "family=" in traces[report.FRONT].hovertext[0]  # the front keeps its whole text
    assert all(t.type == "scattergl" for t in figs["history"].data if t.mode == "markers")
    assert all(t.boxpoints is False for t in figs["family-activation"].data)
    assert "sample of 12 of the 30" in data.notes["importance"] and data.importances
    sample = report.importance_sample(big.directions, big.get_trials()[:30]).trials
    assert len(sample) == 12 and len({tuple(t.values) for t in sample}) == 12  # 12 distinct trials


def test_infeasible_trials_are_left_out_of_every_plot() -> None:
    """A trial over a hard constraint was never trained: its accuracy 0 is a placeholder, so it must
    not show as a network in the figures (nor pull its family's accuracy down)."""
    study = make_study(optuna.storages.InMemoryStorage(), n=12)
    trial = study.ask(DISTRIBUTIONS)
    trial.set_constraint("max_flops", 3.0)
    record.write_infeasible(trial, ["flops 4e+06 > max_flops 1e+06"])
    study.tell(trial, [0.0, 10.0])  # the cheapest trial: on the front if it counted
    data = report.read_report(study)
    assert trial.number not in [p.number for p in data.points]
    assert len(data.points) == 12 and trial.number not in data.front
    figs = report.figures(data)
    assert all(0.0 not in list(t.y) for t in figs["pareto"].data)
    assert data.importances  # fANOVA still runs on the trained trials


def test_single_objective_study_gets_notes_not_plots() -> None:
    study = optuna.create_study(direction="maximize")
    study.set_metric_names(["accuracy"])
    study.add_trial(optuna.trial.create_trial(value=0.7, user_attrs={"accuracy": 0.7}))
    data = report.read_report(study)
    figs = report.figures(data)
    assert "pareto" not in figs and "hypervolume" not in figs and "history" in figs
    page = report.render_html(data, figs)
    assert "needs two or more objectives" in page


def test_report_file_is_self_contained(study: optuna.Study, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    report.write_report(study, out)
    page = out.read_text()
    assert not re.search(r'<script[^>]+src=', page)  # no CDN: plotly.js is inline
    assert "Plotly" in page.split("</head>")[0]  # the library itself sits in the head
    for plot in PLOTS:
        assert f'id="{plot}"' in page, plot
    assert "lr: " in page and "upper edge" in page  # the range-edge warning
    assert 'id="front-table"' in page and "(knee)" in page


@needs_browser
def test_report_renders_in_chromium(study: optuna.Study, page_context: Any, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    report.write_report(study, out)
    page = page_context.new_page()
    outside: list[str] = []  # works offline: any request that leaves the file fails the test
    page.route("**/*", lambda route: route.continue_() if route.request.url.startswith("file:")
               else (outside.append(route.request.url), route.abort()))
    started = time.perf_counter()
    page.goto(out.as_uri())
    page.wait_for_function("() => window.Plotly && document.querySelectorAll('.js-plotly-plot')"
                           f".length === {len(PLOTS)}", timeout=60_000)
    counts = page.evaluate("""() => Object.fromEntries(
        [...document.querySelectorAll('.js-plotly-plot')].map(d => [d.id,
            d.data.map(t => [t.name, (t.x || t.y || []).length])]))""")
    shot = tmp_path / "report.png"
    page.screenshot(path=str(shot), full_page=True)
    print(f"report rendered in {time.perf_counter() - started:.1f} s")
    assert outside == []
    assert sorted(counts) == sorted(PLOTS)
    front_sizes = [n for name, n in counts["pareto"] if name == report.FRONT]
    others = [n for name, n in counts["pareto"] if name == report.OTHERS]
    assert front_sizes == [len(study_front(study))]
    assert front_sizes[0] + others[0] == 24  # every completed trial, the failed one left out
    assert [n for name, n in counts["pareto"] if name == report.KNEE] == [1]
    assert is_real_png(shot, min_bytes=100_000)
