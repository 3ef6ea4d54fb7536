"""Searches that fail instead of training: diverged trials teach the sampler, the breaker counts
failures by kind over a window, the failure budget, and a diverging regression search that stops
by itself (and resumes)."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
from optuna.trial import FrozenTrial, TrialState, create_trial
from typer.testing import CliRunner

from automl_nn import pruning, search
from automl_nn.config import MIN_FAILURE_BUDGET, resolve
from automl_nn.errors import ConfigError, StorageError
from automl_nn.results import report, summary
from automl_nn.storage import record
from automl_nn.storage.backends import open_storage
from automl_nn.storage.record import TrialRecord
from automl_nn.study import count_done, front, open_study
from tests.conftest import run
from tests.fake_study import DISTRIBUTIONS, make_study


def _diverges(lr: float, optimizer: str) -> bool:
    """Where a made-up training blows up: lr above 1, or above 0.1 with sgd."""
    return lr > 1.0 or (optimizer == "sgd" and lr > 0.1)


def _tpe_in_diverging_region(diverged_as: str, seed: int = 0, n: int = 60) -> float:
    """The share of TPE's proposals after its random start (20 trials) that land where training
    diverges, when diverged trials are told as `constraint` (our way) or as FAIL (before)."""
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    hits = 0
    for number in range(n):
        trial = study.ask()
        lr = trial.suggest_float("lr", 1e-3, 50.0, log=True)
        optimizer = trial.suggest_categorical("optimizer", ["adam", "sgd"])
        bad = _diverges(lr, optimizer)
        hits += bad and number >= 20
        if diverged_as == "fail" and bad:
            study.tell(trial, state=TrialState.FAIL)
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pruning.set_divergence(trial, bad)
        study.tell(trial, 0.0 if bad else 1.0 - abs(math.log10(lr) + 2.0) / 5.0)
    return hits / (n - 20)


def test_diverged_trials_teach_tpe_to_leave_their_region() -> None:
    # Failed trials are invisible to TPE: it kept proposing the region (the reported search: 4,151
    # NaN trials). Complete trials under a violated constraint rank below every feasible one.
    assert _tpe_in_diverging_region("fail") > 0.9
    assert _tpe_in_diverging_region("constraint") < 0.3


def test_gp_sampler_takes_a_study_of_diverged_and_trained_trials() -> None:
    # The GP sampler refuses complete trials with different constraints: every complete trial
    # carries the limits, then `diverged`, in the same order.
    study = optuna.create_study(direction="maximize",
                                sampler=optuna.samplers.GPSampler(seed=0, n_startup_trials=3))
    for _ in range(6):
        trial = study.ask()
        lr = trial.suggest_float("lr", 1e-3, 50.0, log=True)
        pruning.apply_constraints(trial, {"params": 100.0}, {"params": 50.0})
        pruning.set_divergence(trial, lr > 1.0)
        study.tell(trial, 0.0 if lr > 1.0 else 1.0 - abs(math.log10(lr) + 2.0) / 5.0)
    assert {tuple(t.constraints) for t in study.trials} == {("max_params", record.DIVERGED)}


def _frozen(number: int, state: TrialState = TrialState.FAIL, reason: str | None = "nonfinite",
            lr: float = 1.0, optimizer: str = "sgd", activation: str = "selu",
            diverged: bool = False) -> FrozenTrial:
    attrs: dict[str, Any] = {record.CANDIDATE: {
        "arch": {"family": "linear", "activation": activation},
        "train": {"optimizer": optimizer, "lr": lr}}}
    if reason is not None:
        attrs.update({record.FAIL_REASON: reason, record.FAIL_MESSAGE: f"loss nan (lr={lr})"})
    if diverged:
        attrs[record.DIVERGED] = f"loss nan (lr={lr})"
    trial = create_trial(state=state, values=[0.0] if state == TrialState.COMPLETE else None,
                         user_attrs=attrs)
    trial.number = number
    return trial


def _stopper() -> search._Stopper:
    return search._Stopper(target=100, reporter=None, budget=None, graceful=None,  # type: ignore[arg-type]
                           heartbeat=None)  # type: ignore[arg-type]


def test_the_breaker_counts_failures_by_kind_not_by_message() -> None:
    stopper = _stopper()
    # every message carries its own lr; they are one kind all the same
    trained = [_frozen(n, TrialState.COMPLETE, None) for n in range(20)]
    failed = [_frozen(n, lr=10.0 + n, diverged=True, state=TrialState.COMPLETE) for n in range(20)]
    for trial in [x for pair in zip(trained, failed, strict=True) for x in pair][:20]:
        stopper._track_failures(TrialRecord.of(trial))  # half of the window: not more than half
    assert stopper.tripped is None
    for trial in (_frozen(90, reason="oom"), _frozen(91, reason="stale"),
                  _frozen(92, reason="interrupted")):  # say nothing of the candidate: not counted
        stopper._track_failures(TrialRecord.of(trial))
    assert stopper.tripped is None and len(stopper.window) == 20
    stopper._track_failures(TrialRecord.of(_frozen(93, reason="ValueError")))
    assert stopper.tripped is None  # another kind
    stopper._track_failures(TrialRecord.of(_frozen(94, lr=40.0, optimizer="adam")))
    stopper._track_failures(TrialRecord.of(_frozen(95, lr=45.0)))
    message = stopper.tripped
    assert message is not None and message.startswith(
        "the search stopped: 11 of the last 20 trials failed the same way (nonfinite: loss nan")
    assert "optimizer sgd in 10 of 11" in message and "activation selu in 11 of 11" in message
    assert "lr 11 to 45" in message and "lower the top of the lr range (below 11" in message


def test_the_failure_budget_counts_the_candidates_failures() -> None:
    trials = [_frozen(0, TrialState.COMPLETE, None), _frozen(1, reason="stale"),
              _frozen(2, reason="interrupted"), _frozen(3, reason="config"),
              _frozen(4, TrialState.COMPLETE, diverged=True, lr=12.0),
              _frozen(5, TrialState.COMPLETE, diverged=True, lr=30.0)]
    assert search.failure_budget_spent(trials, 4) is None  # 3 count: stale and interrupted rerun
    message = search.failure_budget_spent(trials, 3)
    assert message is not None
    assert message.startswith("the study holds 3 failed trials (nonfinite 2, config 1), its "
                              "failure budget (max_failures 3)")
    assert "of the nonfinite ones they share optimizer sgd in 2 of 2" in message
    assert "lr 12 to 30" in message and "Raise --max-failures" in message


def test_max_failures_is_a_validated_budget_outside_the_identity() -> None:
    assert resolve({}).failure_budget() == MIN_FAILURE_BUDGET
    assert resolve({"trials": 500}).failure_budget() == 500
    config = resolve({"trials": 500, "max_failures": 7})
    assert config.failure_budget() == 7 and config.to_raw()["max_failures"] == 7
    assert config.identity_hash() == resolve({"trials": 500}).identity_hash()
    with pytest.raises(ConfigError, match="max_failures: must be at least 1, but got 0"):
        resolve({"max_failures": 0})


def test_a_diverged_trial_is_no_network_anywhere() -> None:
    study = make_study(optuna.storages.InMemoryStorage(), n=12)
    trial = study.ask(DISTRIBUTIONS)
    record.write_candidate(trial, {"train": {"epochs": 3}}, trial.number)
    record.write_epoch(trial, 1, {"val_accuracy": 0.5, "val_loss": 1.0, "seconds": 0.1})
    record.write_diverged(trial, "training loss became nan in epoch 2 (lr=30, optimizer=sgd)")
    pruning.set_divergence(trial, True)
    study.tell(trial, [1.0, 1.0])  # placeholder values that would dominate every trial
    trials = study.get_trials(deepcopy=False)
    diverged = trials[trial.number]
    assert record.is_diverged(diverged) and record.is_failed(diverged)
    assert not record.is_infeasible(diverged) and not record.counts_toward_budget(diverged)
    assert record.counts_as_failure(diverged)
    assert trial.number not in [t.number for t in front(study)]
    assert trial.number not in [t.number for t in study.best_trials]  # Optuna's front agrees
    assert count_done(study) == 12
    assert trial.number not in [p.number for p in report.read_report(study).points]
    with pytest.raises(StorageError, match="diverged .* no trained model"):
        record.trained_trial(trials, trial.number, "fake")
    counts = summary.trial_counts(study)
    assert (counts["trained"], counts["failed"], counts["diverged"]) == (12, 2, 1)
    assert summary.study_summary(study)["fail_reasons"] == {"nonfinite": 2}
    assert summary.pruning_summary(study)["epochs_planned"] == 36  # the 12 trained ones only


def _search(cli: CliRunner, *args: str) -> tuple[int, str]:
    """The CLI's exit code and output, with the console's line wrapping undone."""
    code, output = run(cli, *args)
    return code, " ".join(output.split())


def _write_csv(path: Path, rows: int = 300) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, 4))
    y = 3 * x[:, 0] - 2 * x[:, 1] + 0.5 * x[:, 2] * x[:, 3] + rng.normal(scale=0.1, size=rows)
    lines = ["a,b,c,d,price"] + [",".join(f"{v:.5f}" for v in (*row, t)) for row, t in zip(x, y,
                                                                                             strict=True)]
    path.write_text("\n".join(lines) + "\n")


# SGD at a learning rate of 10 to 50 diverges on any data, standardized targets included.
DIVERGING = ["--dataset", "houses.csv", "--target", "price", "--optimizer", "sgd",
             "--lr", "10:50:log", "--activation", "selu", "--depth", "1:2", "--width", "4:16",
             "--epochs", "2", "--seed", "0", "--study-name", "div", "--keep-weights", "none"]


def test_a_diverging_regression_search_stops_by_itself(cli: CliRunner) -> None:
    _write_csv(Path("houses.csv"))
    code, output = _search(cli, "search", *DIVERGING, "--trials", "20")
    assert code == 2, output
    assert "11 of the last 11 trials failed the same way (nonfinite" in output
    assert "optimizer sgd in 11 of 11" in output and "activation selu in 11 of 11" in output
    assert "lower the top of the lr range" in output
    trials = optuna.load_study(study_name="div", storage="sqlite:///automl-nn.db").trials
    assert len(trials) == search.SAME_FAILURE_LIMIT  # stopped by itself, nothing left running
    for trial in trials:  # COMPLETE, under a violated constraint, with placeholder values
        assert trial.state == TrialState.COMPLETE and trial.constraints[record.DIVERGED] == 1.0
        assert trial.user_attrs[record.FAIL_REASON] == record.NONFINITE and record.is_diverged(trial)
        assert all(math.isfinite(v) for v in trial.values)
    code, output = _search(cli, "show", "div")
    assert code == 0 and "trained 0 (these count toward --trials)" in output
    assert "failed 11 (11 of them diverged)" in output and "failure budget 11 of 20 used" in output
    assert "best trials: none" in output

    # resumed with a smaller budget: three more failures spend it, and the search stops on it
    code, output = _search(cli, "search", *DIVERGING, "--trials", "20", "--max-failures", "14")
    assert code == 2, output
    assert "the study holds 14 failed trials (nonfinite 14), its failure budget (max_failures 14)" \
        in output
    trials = optuna.load_study(study_name="div", storage="sqlite:///automl-nn.db").trials
    assert [t.number for t in trials] == list(range(14))
    # a spent budget refuses to start, and adds nothing
    code, output = _search(cli, "search", *DIVERGING, "--trials", "20", "--max-failures", "14")
    assert code == 2 and "Raise --max-failures" in output
    assert len(optuna.load_study(study_name="div", storage="sqlite:///automl-nn.db").trials) == 14


def test_a_study_made_before_the_constraint_keeps_failing_diverged_trials(
    cli: CliRunner, tmp_path: Path
) -> None:
    space = {"family": "linear", "depth": 2, "width": 8, "epochs": 1, "optimizer": "sgd",
             "activation": "none", "lr": [1.0e12, 0.05]}
    config = resolve({"study_name": "old", "objectives": ["accuracy"], "space": space})
    study = open_study(config, open_storage("sqlite:///automl-nn.db"))
    old = study.ask()  # a complete trial of an older version: no `diverged` constraint
    study.tell(old, 0.5)
    study.enqueue_trial({"lr": 1.0e12})
    code, output = run(cli, "search", "--study-name", "old", "--objective", "accuracy",
                       "--family", "linear", "--depth", "2", "--width", "8", "--epochs", "1",
                       "--optimizer", "sgd", "--lr", "1e12,0.05", "--activation", "none",
                       "--trials", "2", "--sampler", "random", "--seed", "0")
    trials = optuna.load_study(study_name="old", storage="sqlite:///automl-nn.db").trials
    assert trials[1].state == TrialState.FAIL
    assert trials[1].user_attrs[record.FAIL_REASON] == record.NONFINITE
    assert all(record.DIVERGED not in t.constraints for t in trials)
    assert code == 0, output
