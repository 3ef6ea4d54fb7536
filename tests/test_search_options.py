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
from automl_nn.config import resolve
from automl_nn.storage import recovery
from automl_nn.storage.backends import open_storage
from automl_nn.study import open_study
from tests.conftest import TINY, run

ROOT = Path(__file__).resolve().parents[1]
# One parameter searched (lr, on a log scale), the rest fixed and cheap.
LR_ONLY = ["--dataset", "digits", "--objective", "accuracy", "--family", "linear", "--depth", "1",
           "--width", "4", "--activation", "relu", "--optimizer", "adam", "--batch-size", "256",
           "--epochs", "1", "--lr", "1e-4:1e-1:log", "--seed", "0"]


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
    assert all(t.state == TrialState.COMPLETE for t in trials)  # none cut off or left running
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
    code, output = run(cli, "search", *TINY, "--trials", "2", "--study-name", "j", "--storage", url)
    assert code == 0, output
    # another search raises the target to 6; joining workers read it (and the space) from storage
    config = resolve({"study_name": "j", "dataset": "digits", "trials": 6, "seed": 0,
                      "space": {"epochs": 1, "width": {"low": 4, "high": 16},
                                "depth": {"low": 1, "high": 2}, "batch_size": 64}})
    open_study(config, open_storage(url))
    result = workers.join_study("j", url, device="cpu", workers=2)
    trials = result.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    # independent workers count running trials too; when they race one may add a trial more
    assert 6 <= len(complete) <= 7 and len(complete) == len(trials)
    joined = {t.system_attrs[recovery.LEASE_KEY]["pid"] for t in trials[2:]}
    assert len(joined) == 2 and os.getpid() not in joined  # two worker processes, not this one
    assert {t.params["width"] for t in trials} <= set(range(4, 17))  # the stored space
