"""The analysis page: figures from hand-built answers, a self-contained file, and chromium rendering it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from automl_nn.analysis import questions as analysis
from automl_nn.results import analysis_page
from tests.browser import browser_context, needs_browser
from tests.test_analysis import _predictions, _trials

ALL_FIGURES = ("q1-attempts", "q2-leaders", "q3-6-costs", "q7-epochs", "q8-samples", "q8-grid",
               "q9-best-per-class", "q10-ensembles")


@pytest.fixture(scope="module")
def page_context() -> Iterator[Any]:
    yield from browser_context()


def _answers(with_predictions: bool = True) -> dict[str, Any]:
    answers = analysis.answer(_trials([0.6, 0.9, 0.99], [10.0, 100.0, 1.0]),
                              _predictions() if with_predictions else None, split="test",
                              class_names=["zero", "one", "two"], gold_top=0.8)
    return {"study": "hand-built", "dataset": "none", **answers}


def _images() -> analysis_page.SampleImages:
    grid = np.arange(16, dtype=np.uint8).reshape(1, 4, 4)
    return analysis_page.SampleImages({2: grid, 4: grid[::-1]}, ("zero", "one", "two"))


def test_figures_cover_every_question_and_mark_gold_stars() -> None:
    answers = _answers()
    answers["gold_stars"]["trials"] = [11]
    answers["q3_6_costs"] = analysis.costs_by_family(["linear", "conv2d", "linear"], {
        c: np.array([1.0, 2.0, 3.0]) for c in analysis.COSTS}, np.array([False, True, False]), [10, 11, 12])
    figs = analysis_page.figures(answers, _images())
    assert sorted(figs) == sorted(ALL_FIGURES)
    stars = [t for t in figs["q3-6-costs"].data if t.name == analysis_page.GOLD]
    assert len(stars) == len(analysis.COSTS) and all(list(t.x) == ["conv2d"] for t in stars)
    grid_titles = [a.text for a in figs["q8-grid"].layout.annotations]
    assert grid_titles == ["#2 two→zero ⚑", "#4 one?"]  # label, common wrong answer, label-error flag


def test_page_is_self_contained_with_json(tmp_path: Path) -> None:
    paths = analysis_page.write(tmp_path / "out", _answers(), _images())
    page = paths["html"].read_text()
    assert "<head>" in page and "plotly.js v" in page  # plotly.js inline (chromium checks offline)
    assert all(f'id="{div}"' in page for div in ALL_FIGURES)
    assert "confidence-weighted vote" in page
    stored = json.loads(paths["json"].read_text())
    assert stored["q8_samples"]["weird"] == 1 and stored["needs_predictions"] == []


def test_page_without_predictions_says_which_questions_need_them(tmp_path: Path) -> None:
    paths = analysis_page.write(tmp_path, _answers(with_predictions=False))
    page = paths["html"].read_text()
    assert "need stored predictions" in page and "10 (ensembles)" in page
    assert 'id="q1-attempts"' in page and 'id="q8-samples"' not in page


def test_out_must_be_a_directory(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(analysis_page.AnalysisError, match="expected a directory"):
        analysis_page.write(tmp_path / "file", _answers())


@needs_browser
def test_page_renders_in_chromium(page_context: Any, tmp_path: Path) -> None:
    paths = analysis_page.write(tmp_path, _answers(), _images())
    page = page_context.new_page()
    outside: list[str] = []  # works offline: any request that leaves the file fails the test
    page.route("**/*", lambda route: route.continue_() if route.request.url.startswith("file:")
               else (outside.append(route.request.url), route.abort()))
    page.goto(paths["html"].as_uri())
    page.wait_for_function("() => window.Plotly && document.querySelectorAll('.js-plotly-plot')"
                           f".length === {len(ALL_FIGURES)}", timeout=60_000)
    traces = page.evaluate("""() => Object.fromEntries(
        [...document.querySelectorAll('.js-plotly-plot')].map(d => [d.id, d.data.length]))""")
    assert outside == []
    assert sorted(traces) == sorted(ALL_FIGURES)
    assert traces["q8-grid"] == 2 and traces["q9-best-per-class"] == 1
    assert traces["q10-ensembles"] == 3 * (2 * 2 + 1)  # 3 costs x (2 orders x 2 votes + best)
