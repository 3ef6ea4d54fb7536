"""optuna-dashboard: served on a free port, lists the study, shows the Pareto plot; binding rules."""

from __future__ import annotations

import json
import socket
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.artifacts import FileSystemArtifactStore, upload_artifact
from typer.testing import CliRunner

from automl_nn.results import dashboard
from automl_nn.storage import backends
from tests.browser import browser_context, is_real_png, needs_browser
from tests.conftest import run
from tests.fake_study import make_study

DB = "sqlite:///board.db"


@pytest.fixture(scope="module")
def page_context() -> Iterator[Any]:
    yield from browser_context()


@pytest.fixture
def board(tmp_path: Path) -> Iterator[dashboard.Dashboard]:
    made = make_study(DB, name="fake", n=12)
    code = tmp_path / "model.py"
    code.write_text("import torch\n")
    artifacts = backends.artifact_dir(DB)
    artifacts.mkdir()
    # Optuna attaches artifacts to running trials (a finished trial's attributes are frozen).
    trial = made.ask()
    upload_artifact(artifact_store=FileSystemArtifactStore(artifacts), file_path=str(code),
                    study_or_trial=trial)
    made.tell(trial, [0.5, 100.0])
    running = dashboard.start(backends.open_storage(DB), host="127.0.0.1", port=0, artifacts=artifacts)
    yield running
    running.stop()


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.load(response)


def test_artifacts_sit_next_to_the_storage_file() -> None:
    assert backends.artifact_dir("sqlite:///runs/x.db") == Path("runs/x-artifacts")
    assert backends.artifact_dir("journal:runs/j.log") == Path("runs/j-artifacts")
    assert backends.artifact_dir("postgresql://u@h/db") == Path("automl-nn-artifacts")


def test_api_lists_the_study_with_units_and_artifacts(board: dashboard.Dashboard) -> None:
    base = f"http://127.0.0.1:{board.port}"
    studies = _get(f"{base}/api/studies")["study_summaries"]
    assert [s["study_name"] for s in studies] == ["fake"]
    detail = _get(f"{base}/api/studies/{studies[0]['study_id']}")
    assert detail["objective_names"] == ["accuracy (fraction)", "params (count)"]
    assert {"params", "flops", "memory"} <= {a["key"] for a in detail["union_user_attrs"]}
    first = next(t for t in detail["trials"] if t["number"] == 13)
    assert [a["filename"] for a in first["artifacts"]] == ["model.py"]
    # the stored names are untouched: only the dashboard's view carries units
    assert optuna.load_study(study_name="fake", storage=DB).metric_names == ["accuracy", "params"]


def test_stop_is_quick(tmp_path: Path) -> None:
    running = dashboard.start(backends.open_storage(DB), host="127.0.0.1", port=0,
                              artifacts=tmp_path / "a")
    started = time.perf_counter()
    running.stop()
    assert time.perf_counter() - started < 2
    assert not running.thread.is_alive()


@needs_browser
def test_study_page_shows_the_pareto_plot(board: dashboard.Dashboard, page_context: Any,
                                          tmp_path: Path) -> None:
    page = page_context.new_page()
    page.goto(f"{board.url}/studies/1", timeout=60_000)
    page.get_by_text("Pareto Front", exact=False).first.wait_for(timeout=60_000)
    page.wait_for_selector(".js-plotly-plot .scatterlayer .point", timeout=60_000)
    # the first plot on the page is the Pareto front: a trace of the front, one of the other
    # completed trials (and a one-point trace that only carries the colour bar)
    sizes = page.evaluate("() => document.querySelector('.js-plotly-plot').data"
                          ".map(t => (t.x || []).length)")
    text = page.inner_text("body")
    shot = tmp_path / "dashboard.png"
    page.screenshot(path=str(shot), full_page=True)
    front = len(optuna.load_study(study_name="fake", storage=DB).best_trials)
    assert front in sizes and 13 - front in sizes  # 12 made + 1 with an artifact; not the failed one
    assert "params (count)" in text and "accuracy (fraction)" in text  # objective names with units
    assert is_real_png(shot)


def test_non_loopback_host_needs_acknowledging() -> None:
    assert dashboard.is_loopback("127.0.0.1") and dashboard.is_loopback("::1")
    assert dashboard.is_loopback("localhost") and not dashboard.is_loopback("0.0.0.0")
    assert not dashboard.is_loopback("example.org")
    with pytest.raises(dashboard.DashboardError, match="no authentication.*--i-know-no-auth"):
        dashboard.check_host("0.0.0.0", acknowledged=False)
    dashboard.check_host("0.0.0.0", acknowledged=True)


def test_cli_refuses_exposed_host_and_busy_port(cli: CliRunner) -> None:
    make_study(DB, n=2)
    code, output = run(cli, "dashboard", "--storage", DB, "--host", "0.0.0.0")
    assert code == 2 and "no authentication" in output and "--i-know-no-auth" in output
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        busy = holder.getsockname()[1]
        code, output = run(cli, "dashboard", "--storage", DB, "--port", str(busy))
    assert code == 2 and f"port {busy}" in output and "already in use" in output
    assert "--port " in output  # suggests another port


def test_cli_warns_when_exposed_and_acknowledged(cli: CliRunner,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    make_study(DB, n=2)
    monkeypatch.setattr(dashboard.Dashboard, "wait", dashboard.Dashboard.stop)  # do not block
    code, output = run(cli, "dashboard", "--storage", DB, "--host", "0.0.0.0", "--port", "0",
                       "--i-know-no-auth")
    assert code == 0, output
    assert "NO authentication" in output and "polls board.db" in output
    assert "/dashboard" in output
