"""The looking-at-results commands end to end: a real tiny search, report (HTML + PNG), --pick, show."""

from __future__ import annotations

import json
import time
from pathlib import Path

from typer.testing import CliRunner

from tests.browser import CHROMIUM, is_real_png
from tests.conftest import TINY, run
from tests.fake_study import make_study


def test_real_search_then_report_pick_and_show(cli: CliRunner, tmp_path: Path) -> None:
    code, output = run(cli, "search", *TINY, "--trials", "5", "--study-name", "tiny")
    assert code == 0, output

    started = time.perf_counter()
    want_png = Path(CHROMIUM).exists()
    code, output = run(cli, "report", "tiny", "--out", "tiny.html",
                       *(["--format", "png"] if want_png else []))
    print(f"report{' + png' if want_png else ''}: {time.perf_counter() - started:.1f} s")
    assert code == 0, output
    page = (tmp_path / "tiny.html").read_text()
    assert 'id="pareto"' in page and 'id="curves"' in page and 'id="front-table"' in page
    if want_png:
        images = sorted((tmp_path / "tiny-images").glob("*.png"))
        assert "pareto.png" in [p.name for p in images]
        assert all(is_real_png(p, min_bytes=10_000) for p in images)

    code, output = run(cli, "pareto", "tiny", "--pick", "knee", "--format", "json")
    assert code == 0, output
    rows = json.loads(output[output.index("["): output.rindex("]") + 1])  # the hint is on stderr
    assert len(rows) == 1 and rows[0]["pick"] == "knee" and isinstance(rows[0]["trial"], int)
    assert f"--trial {rows[0]['trial']}" in output  # the hint names the export command

    code, output = run(cli, "show", "tiny")
    assert code == 0 and ("knee point" in output or "best trials" in output)


def test_pick_and_report_bad_input_exit_2(cli: CliRunner) -> None:
    make_study("sqlite:///automl-nn.db", name="fake", n=6)
    code, output = run(cli, "pareto", "fake", "--pick", "min-weights")
    assert code == 2 and "Valid pick names: knee" in output and "min-params" in output
    code, output = run(cli, "pareto", "fake", "--pick", "min-flops")
    assert code == 0 and "min-flops of fake" in output
    code, output = run(cli, "report", "fake", "--out", "no/such/dir/r.html")
    assert code == 2 and "does not exist" in output
