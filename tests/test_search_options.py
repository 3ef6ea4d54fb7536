"""Search options end to end on tiny digits runs: the qmc and gp samplers, --timeout, the stop after
100 infeasible candidates in a row, --device / --workers / --trials-per-device on the CPU, and
join_study with local worker processes."""

from __future__ import annotations

import inspect
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState
from typer.testing import CliRunner

from automl_nn import workers
from automl_nn.storage import recovery
from automl_nn.storage.backends import open_storage
from tests.conftest import TINY, run, study_with_raised_target

ROOT = Path(__file__).resolve().parents[1]
# One parameter searched (lr, on a log scale), the rest fixed and cheap.
LR_ONLY = ["--dataset", "digits", "--objective", "accuracy", "--family", "linear", "--depth", "1",
           "--width", "4", "--activation", "relu", "--optimizer", "adam", "--batch-size", "256",
           "--epochs", "1", "--lr", "1e-4:1e-1:log", "--seed", "0"]
# one fixed tiny network, its epochs given by the test
TINY_ARGS = [*LR_ONLY[:LR_ONLY.index("--epochs")], "--lr", "0.01", "--seed", "0", "--defaults", "plain"]


def _trials(name: str, storage: str = "sqlite:///automl-nn.db") -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=open_storage(storage)).trials


def test_qmc_sampler_spreads_trials_evenly_over_the_range(cli: CliRunner) -> None:
    code, output = run(cli, "search", *LR_ONLY, "--sampler", "qmc", "--trials", "9",
                       "--study-name", "q")
    assert code == 0, output
    trials = _trials("q")
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 9
    # The first trial fixes the search space (sampled independently); the next eight are the first
    # eight points of a scrambled Sobol sequence: one in each eighth of the log range. Independent
    # random draws do that with probability 8!/8^8 (0.24%).
    eighths = sorted(int(8 * math.log(t.params["lr"] / 1e-4) / math.log(1e3)) for t in trials[1:])
    assert eighths == list(range(8))


def test_gp_sampler_proposes_the_trials_after_its_random_start(
    cli: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    proposed: dict[int, dict[str, Any]] = {}
    real = optuna.samplers.GPSampler.sample_relative

    def recorded(self: Any, study: Any, trial: Any, search_space: Any) -> dict[str, Any]:
        params: dict[str, Any] = real(self, study, trial, search_space)
        proposed[trial.number] = params
        return params

    monkeypatch.setattr(optuna.samplers.GPSampler, "sample_relative", recorded)
    code, output = run(cli, "search", *LR_ONLY, "--sampler", "gp", "--trials", "12",
                       "--study-name", "g")
    assert code == 0, output
    trials = _trials("g")
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 12
    startup = inspect.signature(optuna.samplers.GPSampler).parameters["n_startup_trials"].default
    assert startup < 12
    assert all(proposed[n] == {} for n in range(startup))  # random start: nothing from the GP
    for number in range(startup, 12):  # then the Gaussian process picks the learning rate
        assert proposed[number] and proposed[number]["lr"] == trials[number].params["lr"]


def test_timeout_stops_the_search_between_trials(cli: CliRunner) -> None:
    started = time.perf_counter()
    code, output = run(cli, "search", *LR_ONLY, "--sampler", "random", "--trials", "10000",
                       "--timeout", "2", "--study-name", "t")
    elapsed = time.perf_counter() - started
    assert code == 0, output
    trials = _trials("t")
    assert 1 <= len(trials) < 10000 and elapsed < 120
    # none left running: a trial still training at the deadline stops as pruned, with its reason
    assert all(t.state == TrialState.COMPLETE or (t.state == TrialState.PRUNED
                                                  and t.user_attrs["pruned_by"]["pruner"] == "deadline")
               for t in trials)
    # no trial starts once the timeout has passed
    first, last = trials[0].datetime_start, trials[-1].datetime_start
    assert first is not None and last is not None and (last - first).total_seconds() < 2


def test_a_hundred_infeasible_candidates_in_a_row_stop_the_search(cli: CliRunner) -> None:
    # random sampling keeps the hundred asks cheap; the stop does not depend on the sampler
    code, output = run(cli, "search", *TINY, "--max-params", "1", "--trials", "5",
                       "--sampler", "random", "--study-name", "inf")
    assert code == 2, output
    assert "error: the last 100 candidates were all over the constraints" in output
    assert "Loosen --max-params" in output
    trials = _trials("inf")
    assert len(trials) == 100
    assert all(t.state == TrialState.COMPLETE and t.user_attrs["epochs_trained"] == 0
               and "> max_params 1" in t.user_attrs["infeasible"] for t in trials)


def test_cpu_device_with_two_workers_shares_the_study(tmp_path: Path) -> None:
    url = f"journal:{tmp_path / 'w.log'}"
    done = subprocess.run(
        [sys.executable, "-m", "automl_nn", "search", *TINY, "--trials", "6", "--device", "cpu",
         "--workers", "2", "--storage", url, "--study-name", "w"],
        env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    threads = max(1, workers.available_cores() // 2)
    assert f"2 workers on cpu, {threads} torch thread(s) each" in done.stderr
    trials = _trials("w", url)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 6  # the shared budget, exactly
    for index in (0, 1):
        assert f"[worker {index}] trial" in done.stderr  # both processes trained trials


def test_trials_per_device_on_the_cpu_is_refused(cli: CliRunner) -> None:
    code, output = run(cli, "search", *TINY, "--trials", "2", "--device", "cpu",
                       "--trials-per-device", "2")
    assert code == 2, output
    assert "--trials-per-device 2 applies to CUDA devices" in output and "--workers N" in output
    assert not Path("automl-nn.db").exists()  # refused before any storage is touched


def test_join_study_with_local_workers_finishes_the_stored_target(cli: CliRunner,
                                                                  tmp_path: Path) -> None:
    url = f"journal:{tmp_path / 'shared.log'}"
    study_with_raised_target(cli, url, "j", 6)
    result = workers.join_study("j", url, device="cpu", workers=2)
    trials = result.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    # independent workers count running trials too; when they race one may add a trial more
    assert 6 <= len(complete) <= 7 and len(complete) == len(trials)
    joined = {t.system_attrs[recovery.LEASE_KEY]["pid"] for t in trials[2:]}
    assert len(joined) == 2 and os.getpid() not in joined  # two worker processes, not this one
    assert {t.params["width"] for t in trials} <= set(range(4, 17))  # the stored space


def test_a_lone_timeout_searches_until_the_deadline(cli: CliRunner) -> None:
    """No --trials: the search runs until the deadline (not the default 20), counted from the
    command's start, and ends within the promised slack after it."""
    started = time.perf_counter()
    code, output = run(cli, "search", *LR_ONLY, "--sampler", "random", "--timeout", "12",
                       "--study-name", "lone")
    elapsed = time.perf_counter() - started
    assert code == 0, output
    assert 10 <= elapsed <= 12 + 30, elapsed
    assert "searching until the deadline" in output
    trials = _trials("lone")
    assert trials and not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.FAIL)]


def test_a_trial_training_at_the_deadline_stops_as_pruned_with_its_history(
        cli: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("automl_nn.trial.Pace.predict", lambda *_: 0.0)  # never skipped: it starts
    monkeypatch.setattr("automl_nn.trial.Pace.probe", lambda *_: 0.0)
    started = time.perf_counter()
    code, output = run(cli, "search", *TINY_ARGS, "--epochs", "100000", "--trials", "1", "--timeout", "10",
                       "--study-name", "late", "--no-portfolio")
    elapsed = time.perf_counter() - started
    assert code == 0, output
    assert elapsed <= 10 + 30, elapsed
    (trial,) = _trials("late")
    assert trial.state == TrialState.PRUNED and trial.user_attrs["pruned_by"]["pruner"] == "deadline"
    trained = trial.user_attrs["epochs_trained"]
    assert 1 <= trained < 100000 and trial.user_attrs["pruned_by"]["epoch"] == trained
    assert f"epoch{trained}" in trial.user_attrs  # the partial history is kept


def test_candidates_that_cannot_finish_in_the_time_left_are_skipped(cli: CliRunner) -> None:
    """A candidate predicted to train longer than the time left is not started: it is closed as
    skipped under a violated max_time constraint (the sampler learns from it), never counted, and a
    run of skips ends the search instead of spinning."""
    code, output = run(cli, "search", *TINY_ARGS, "--epochs", "200000", "--trials", "5", "--timeout", "20",
                       "--study-name", "skip", "--no-portfolio")
    assert code == 0, output
    trials = _trials("skip")
    assert len(trials) == 3  # SKIP_LIMIT in a row, then the search ends
    for t in trials:
        assert t.state == TrialState.COMPLETE and t.user_attrs["skipped"] is True
        assert t.user_attrs["epochs_trained"] == 0 and t.constraints["max_time"] > 0
        assert "left to the deadline" in t.user_attrs["infeasible"]
    code, output = run(cli, "pareto", "skip", "--format", "json")
    assert code == 0 and output.strip() in ("[]", "")  # never trained: never on the front


def test_a_warm_start_point_too_slow_for_the_budget_is_skipped_and_the_search_goes_on(
        cli: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    """A portfolio point predicted to take more than PORTFOLIO_SHARE of the time left is skipped
    (a mid-size network on a large data set would take most of a short budget); its skip does not
    count toward the run of skips that ends a search, and sampled candidates still train."""
    from automl_nn import trial as objectives

    calls: list[int] = []

    def probe(*_: Any) -> float:  # trials 1 and 2, the second and third warm-start points, are slow
        calls.append(1)
        return 10.0 if len(calls) in (2, 3) else 0.0
    monkeypatch.setattr(objectives.Pace, "probe", probe)
    code, output = run(cli, "search", "--dataset", "digits", "--epochs", "1", "--timeout", "25",
                       "--trials", "6", "--width", "4:8", "--depth", "1:2", "--study-name", "warm")
    assert code == 0, output
    trials = _trials("warm")
    skipped = [t for t in trials if t.user_attrs.get("skipped")]
    assert [t.number for t in skipped] == [1, 2] and all("portfolio" in t.user_attrs for t in skipped)
    assert all("warm-start point predicted" in t.user_attrs["infeasible"] for t in skipped)
    trained = [t for t in trials if t.state == TrialState.COMPLETE and not t.user_attrs.get("skipped")]
    assert len(trained) == 6, output


def test_time_predictions_scale_the_candidates_own_steps_by_what_trials_took() -> None:
    """A candidate's probed steps, times how the trials trained so far compared with their own
    probes: a tiny network's slow FLOPs do not make a larger one look slow."""
    from automl_nn.trial import MAX_RATIO, START_RATIO, Pace

    pace = Pace()
    assert pace.predict(100.0) == pytest.approx(100.0 * START_RATIO)
    pace.observe(40.0, 50.0)  # a trial probed at 40 s trained and validated in 50 s
    pace.observe(60.0, 90.0)
    assert pace.predict(100.0) == pytest.approx(140.0)  # (50 + 90) / (40 + 60)
    pace.observe(1.0, 1000.0)  # one pathological trial caps, not wrecks, every later prediction
    assert pace.predict(100.0) == pytest.approx(100.0 * MAX_RATIO)
    fast = Pace()
    fast.observe(10.0, 5.0)
    assert fast.predict(100.0) == pytest.approx(100.0), "never below the probe itself"
