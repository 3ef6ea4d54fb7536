"""The looking-at-results commands end to end: a real tiny search, report (HTML + PNG), --pick, show."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.browser import is_real_png, needs_chromium
from tests.conftest import TINY, run
from tests.fake_study import make_study


def _json_rows(output: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads(output[output.index("["): output.rindex("]") + 1])
    return rows  # hints go to stderr, which the runner mixes in after the rows


def _hand_knee(rows: list[dict[str, Any]]) -> int:
    """The knee of an accuracy-vs-params front, worked out here: each point in the unit square
    (0 = the front's best accuracy / fewest params), the one farthest below the line x + y = 1."""
    accs, params = [r["accuracy"] for r in rows], [r["params"] for r in rows]

    def below_line(r: dict[str, Any]) -> float:
        x = (max(accs) - r["accuracy"]) / (max(accs) - min(accs))
        y = (r["params"] - min(params)) / (max(params) - min(params))
        return 1.0 - x - y

    return int(max(rows, key=lambda r: (round(below_line(r), 9), r["accuracy"]))["trial"])


def test_real_search_then_report_pick_and_show(cli: CliRunner, tmp_path: Path) -> None:
    code, output = run(cli, "search", *TINY, "--trials", "5", "--study-name", "tiny")
    assert code == 0, output

    code, output = run(cli, "report", "tiny", "--out", "tiny.html")
    assert code == 0, output
    page = (tmp_path / "tiny.html").read_text()
    assert 'id="pareto"' in page and 'id="curves"' in page and 'id="front-table"' in page

    code, output = run(cli, "pareto", "tiny", "--format", "json")
    assert code == 0, output
    front = _json_rows(output)
    assert len(front) > 1, "five seeded trials of two objectives leave a front with a knee"
    knee = _hand_knee(front)

    code, output = run(cli, "pareto", "tiny", "--pick", "knee", "--format", "json")
    assert code == 0, output
    rows = _json_rows(output)
    assert len(rows) == 1 and rows[0]["pick"] == "knee" and rows[0]["trial"] == knee
    assert f"--trial {knee}" in output  # the hint names the export command

    code, output = run(cli, "show", "tiny")
    assert code == 0, output
    assert f"knee point (best trade-off): trial {knee};" in output
    assert "`automl-nn pareto tiny --pick knee` prints it" in output


@needs_chromium
def test_report_png_writes_one_real_image_per_plot(cli: CliRunner, tmp_path: Path) -> None:
    make_study("sqlite:///automl-nn.db", name="fake", n=12)
    code, output = run(cli, "report", "fake", "--out", "r.html", "--format", "png")
    assert code == 0, output
    images = sorted((tmp_path / "r-images").glob("*.png"))
    plots = int(re.search(r"(\d+) plots", output).group(1))  # type: ignore[union-attr]
    assert len(images) == plots and "pareto.png" in [p.name for p in images]
    assert f"wrote {plots} PNG images" in output
    assert all(is_real_png(p, min_bytes=10_000) for p in images)


def test_report_png_without_chromium_is_an_error_not_a_silent_skip(
    cli: CliRunner, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from choreographer.browsers.chromium import Chromium

    # no browser anywhere: not on PATH, not downloaded by plotly_get_chrome, not in BROWSER_PATH
    monkeypatch.setattr(Chromium, "find_browser", classmethod(lambda cls, **_: None))
    monkeypatch.delenv("BROWSER_PATH", raising=False)
    make_study("sqlite:///automl-nn.db", name="fake", n=6)
    code, output = run(cli, "report", "fake", "--out", "r.html", "--format", "png")
    assert code == 2, output
    assert "error: static images: kaleido could not render them" in output
    assert "needs chromium" in output and "The HTML report was written." in output
    assert (tmp_path / "r.html").stat().st_size > 0
    assert not list(tmp_path.glob("r-images/*.png"))


def test_show_warns_when_best_trials_sit_at_the_edge_of_a_range(cli: CliRunner) -> None:
    study = make_study("sqlite:///automl-nn.db", name="edge", n=24)
    at_edge = [t for t in study.best_trials if t.params["lr"] == 1.0e-1]
    assert at_edge, "the planted top-edge learning rate reaches the front"
    code, output = run(cli, "show", "edge")
    assert code == 0, output
    assert (f"warning: lr: {len(at_edge)} of {len(study.best_trials)} best trials sit at the upper "
            "edge (0.1) of its range [0.0001, 0.1]") in output


def test_show_prints_no_edge_warning_when_the_best_trials_are_inside(cli: CliRunner) -> None:
    make_study("sqlite:///automl-nn.db", name="inside", n=24, inside=True)
    code, output = run(cli, "show", "inside")
    assert code == 0, output
    assert "best trials" in output and "warning" not in output


def test_pick_and_report_bad_input_exit_2(cli: CliRunner) -> None:
    make_study("sqlite:///automl-nn.db", name="fake", n=6)
    code, output = run(cli, "pareto", "fake", "--pick", "min-weights")
    assert code == 2 and "Valid pick names: knee" in output and "min-params" in output
    code, output = run(cli, "pareto", "fake", "--pick", "min-flops")
    assert code == 0 and "min-flops of fake" in output
    code, output = run(cli, "report", "fake", "--out", "no/such/dir/r.html")
    assert code == 2 and "does not exist" in output
