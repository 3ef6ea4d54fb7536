"""The trial-time benchmark: its smoke mode end to end, and its summary checked by hand."""

from __future__ import annotations

import datetime
from types import SimpleNamespace
from typing import Any

import pytest

from benchmarks.bench_trial_time import TrialTime, batch_starts, main, summarize, trial_walls


def test_smoke_mode_times_every_run(capsys: pytest.CaptureFixture[str]) -> None:
    results = main(["--smoke", "--threads", "1"])
    assert set(results["runs"]) == {"search", "seed000", "subset"}
    for run in results["runs"].values():
        assert run["trials"] and set(run["checks"]) and isinstance(run["met"], bool)
        for row in run["trials"]:
            assert row["wall_s"] > row["bare_s"] > 0 and row["bare_eval_s"] > 0
            assert row["recorded"]["train"] > 0 and row["recorded"]["trial"] <= row["wall_s"]
    subset = results["runs"]["subset"]
    # 200 of digits' 1079 training samples: validation in proportion (359 x 200 / 1079, about 67,
    # at least one per class), the test split whole
    assert subset["splits"]["train"] == 200 and 67 <= subset["splits"]["val"] <= 70
    assert subset["splits"]["test"] == results["runs"]["search"]["splits"]["test"]
    assert results["runs"]["seed000"]["test_each_epoch"] is True
    assert "| trial | network |" in capsys.readouterr().out


def _row(wall: float, bare: float, eval_s: float = 1.0, bare_eval: float = 1.0) -> TrialTime:
    return TrialTime(0, "net", 1, wall=wall, bare=bare, bare_eval=bare_eval, parts={"eval": eval_s})


def test_summary_takes_the_median_and_holds_long_trials_to_their_own_limit() -> None:
    # outside shares 0.1 (bare 9 s), 0.4 (bare 6 s) and 0.5 (bare 1 s: short, no own limit)
    out: dict[str, Any] = summarize([_row(10, 9), _row(10, 6), _row(2, 1)], "share")
    assert out["median_outside"] == pytest.approx(0.4) and out["long_trials"] == 2
    assert out["worst_long_outside"] == pytest.approx(0.4) and out["met"] is False
    out = summarize([_row(10, 9), _row(10, 8.8), _row(2, 1)], "share")  # 0.1, 0.12, 0.5
    assert out["median_outside"] == pytest.approx(0.12) and out["met"] is True
    assert summarize([_row(10, 9, eval_s=3.0, bare_eval=2.0)], "share")["eval_vs_reference"] == 1.5


def test_summary_of_the_subset_run_is_wall_over_bare() -> None:
    assert summarize([_row(23, 10)], "ratio")["met"] is True
    out = summarize([_row(24, 10)], "ratio")
    assert out["wall_over_bare"] == pytest.approx(2.4) and out["met"] is False


def test_a_trial_wall_runs_to_the_next_trials_start() -> None:
    t0 = datetime.datetime(2025, 1, 1, 12, 0, 0)
    trials = [SimpleNamespace(datetime_start=t0 + datetime.timedelta(seconds=s)) for s in (0, 4, 10)]
    walls = trial_walls(trials, end=(t0 + datetime.timedelta(seconds=13)).timestamp())  # type: ignore[arg-type]
    assert walls == pytest.approx([4.0, 6.0, 3.0])


def test_bare_batches_are_fits_batches() -> None:
    assert batch_starts(129, 64) == [0, 64]  # the last batch of one sample is dropped, as fit does
    assert batch_starts(130, 64) == [0, 64, 128] and batch_starts(3, 1) == [0, 1, 2]
