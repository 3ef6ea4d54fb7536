"""A trial's time goes into training: the test split once on the final model, no test pass for a
pruned trial, per-epoch test predictions only when asked, and where the seconds went."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
import torch
from optuna.artifacts import FileSystemArtifactStore
from optuna.trial import TrialState
from typer.testing import CliRunner

from automl_nn import trial as objectives
from automl_nn.analysis import predictions
from automl_nn.config import resolve
from automl_nn.data.catalog import load
from automl_nn.errors import NonFiniteError
from automl_nn.results import summary
from automl_nn.spec import Candidate
from automl_nn.storage import record
from automl_nn.storage.record import TrialRecord
from automl_nn.train import EpochResult
from tests.conftest import run

SPACE = {"family": "linear", "width": 8, "depth": 1, "epochs": 2, "batch_size": 64, "lr": 0.01,
         "optimizer": "adam"}


class _Events(objectives.NullReporter):
    def __init__(self, events: list[str]) -> None:
        self.events = events

    def epoch_done(self, number: int, result: EpochResult, epochs: int) -> None:
        self.events.append("epoch")


def _run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, each: bool = False,
         prune: bool = False) -> tuple[optuna.trial.FrozenTrial, list[str]]:
    """One trial through TrialRunner; the events: each epoch's end and each evaluation it asks for."""
    bundle = load("digits")
    events: list[str] = []
    real = objectives.evaluate

    def counted(model: Any, b: Any, x: torch.Tensor, y: torch.Tensor, *args: Any, **kw: Any) -> Any:
        events.append("test" if x is bundle.x_test else "val" if x is bundle.x_val else "other")
        return real(model, b, x, y, *args, **kw)

    monkeypatch.setattr(objectives, "evaluate", counted)
    monkeypatch.setattr(predictions, "evaluate", counted)
    config = resolve({"objectives": ["accuracy", "params"], "seed": 0, "test_each_epoch": each,
                      "space": SPACE})
    runner = objectives.TrialRunner(config, bundle, torch.device("cpu"), _Events(events),
                                    predictions_store=FileSystemArtifactStore(str(tmp_path)))
    if prune:
        runner.prune = lambda _trial, epoch, _epochs: {"pruner": "always", "epoch": epoch}
    study = optuna.create_study(directions=config.directions())
    study.optimize(runner, n_trials=1)
    return study.trials[0], events


def _arrays(trial: optuna.trial.FrozenTrial, tmp_path: Path) -> dict[str, np.ndarray]:
    where = record.artifact_of(trial, record.PREDICTIONS)
    assert where is not None
    return predictions.fetch(*where, FileSystemArtifactStore(str(tmp_path)), "predictions")


def test_the_test_split_is_evaluated_once_on_the_final_model(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    trial, events = _run(tmp_path, monkeypatch)
    # fit validates each epoch itself; the trial adds one test pass, after the last epoch
    assert events == ["epoch", "epoch", "test"]
    arrays = _arrays(trial, tmp_path)
    bundle = load("digits")
    assert arrays["val_pred"].shape == (2, len(bundle.y_val))
    assert arrays["test_pred"].shape == (1, len(bundle.y_test)) and arrays["test_epochs"].tolist() == [2]
    accuracy = np.mean(arrays["test_pred"][0] == bundle.y_test.numpy())
    assert accuracy == pytest.approx(trial.user_attrs["test_accuracy"])


def test_a_completed_trial_records_where_its_time_went(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    trial, _ = _run(tmp_path, monkeypatch)
    seconds = TrialRecord.of(trial).time
    assert set(seconds) == {*record.TIME_PARTS, "trial"}
    parts = sum(seconds[p] for p in record.TIME_PARTS)
    assert parts == pytest.approx(seconds["trial"], abs=1e-3)
    assert seconds["train"] > 0 and seconds["eval"] > 0 and seconds["storage"] > 0
    assert seconds["artifacts"] > 0  # the predictions artifact
    # train_time (an objective) is the epochs' steps and validation; `eval` holds that validation
    # and the test pass besides, so the two parts cover it
    assert seconds["train"] < trial.user_attrs["train_time"] <= seconds["train"] + seconds["eval"] + 1e-3


def test_a_pruned_trial_gets_no_test_pass(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for each in (False, True):
        trial, events = _run(tmp_path, monkeypatch, each=each, prune=True)
        assert trial.state == TrialState.PRUNED and events == ["epoch"]
        assert record.artifact_of(trial, record.PREDICTIONS) is None
        rec = TrialRecord.of(trial)
        assert rec.pruned_by is not None and rec.time["train"] > 0 and rec.time["trial"] > 0


def test_test_each_epoch_keeps_test_attempts_evaluated_after_the_trial(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    trial, events = _run(tmp_path, monkeypatch, each=True)
    assert events == ["epoch", "epoch", "test", "test"]  # both after training: epoch 1's weights, final
    arrays = _arrays(trial, tmp_path)
    assert arrays["test_pred"].shape[0] == 2 and arrays["test_epochs"].tolist() == [1, 2]
    y = load("digits").y_test.numpy()
    assert np.mean(arrays["test_pred"][1] == y) == pytest.approx(trial.user_attrs["test_accuracy"])
    # epoch 1's row is what the same candidate trained for one epoch scores (same seed, same batches)
    one = Candidate.from_dict(trial.user_attrs["candidate"])
    one = replace(one, train=replace(one.train, epochs=1))
    assert np.mean(arrays["test_pred"][0] == y) == pytest.approx(
        objectives.train_candidate(one, "digits").test_accuracy)


def test_time_record_fills_other_and_totals_add_up() -> None:
    rec = record.time_record({"train": 2.0, "eval": 0.5, "storage": 0.25, "trial": 3.0})
    assert rec == {"train": 2.0, "eval": 0.5, "metrics": 0.0, "sampling": 0.0, "storage": 0.25,
                   "artifacts": 0.0, "other": 0.25, "trial": 3.0}
    assert record.time_record({"train": 1.0, "trial": 0.5})["other"] == 0.0  # never negative
    records = [TrialRecord._parse(n, TrialState.COMPLETE, None, {}, {record.TIME: rec}) for n in (0, 1)]
    assert record.time_totals(records)["train"] == 4.0 and record.time_totals(records)["trial"] == 6.0
    assert set(summary.TIME_LABELS) == set(record.TIME_PARTS)
    line = summary.time_line({"trials": 2, "seconds": record.time_totals(records)})
    assert line is not None and line.startswith("time of 2 trial(s): 6.0 s; training steps 4.0 s (67%)")


def test_show_prints_where_the_search_time_went(cli: CliRunner) -> None:
    code, output = run(cli, "search", "--dataset", "digits", "--epochs", "1", "--width", "8",
                       "--depth", "1", "--family", "linear", "--seed", "0", "--trials", "2",
                       "--study-name", "t")
    assert code == 0, output
    code, output = run(cli, "show", "t")
    assert code == 0, output
    assert "time of 2 trial(s):" in output and "training steps" in output and "evaluation" in output


def test_test_rows_are_per_epoch_only_when_they_cover_every_epoch() -> None:
    val = np.zeros((2, 5))
    assert predictions._test_per_epoch({"val_pred": val})  # recorded before test_epochs existed
    assert predictions._test_per_epoch({"val_pred": val, "test_epochs": np.array([1, 2])})
    assert not predictions._test_per_epoch({"val_pred": val, "test_epochs": np.array([2])})


@pytest.mark.parametrize("ending", ["failed", "diverged", "infeasible"])
def test_every_way_a_trial_ends_records_where_its_time_went(ending: str, tmp_path: Path) -> None:
    """A failed trial's training, a diverged one's epochs (the one it did not finish included) and
    an infeasible one's metrics cost time too: `show` counts them with the rest."""
    bundle = load("digits")
    raw: dict[str, Any] = {"objectives": ["accuracy", "params"], "seed": 0, "space": SPACE}
    if ending == "infeasible":
        raw["constraints"] = {"max_params": 10}
    runner = objectives.TrialRunner(resolve(raw), bundle, torch.device("cpu"), objectives.NullReporter())
    failure = {"failed": RuntimeError("the epoch hook broke"),
               "diverged": NonFiniteError("training loss became nan in epoch 1")}.get(ending)

    def broken(trial: optuna.Trial, epoch: int, epochs: int) -> None:
        if failure is not None:
            raise failure
    runner.prune = broken
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.optimize(runner, n_trials=1, catch=(RuntimeError,))
    trial = study.trials[0]
    rec = TrialRecord.of(trial)
    assert {"failed": rec.is_failed, "diverged": bool(rec.diverged),
            "infeasible": rec.is_infeasible}[ending], trial
    assert rec.time["trial"] > 0, rec.time
    if ending != "infeasible":
        assert rec.time["train"] > 0
    assert summary.time_summary(study)["trials"] == 1


def test_an_epoch_cut_short_counts_its_steps_as_training_not_its_timed_parts() -> None:
    clock = objectives.Clock()
    clock.start_epoch()
    with clock.timing("storage"):  # the previous epoch's hook, timed on its own
        time.sleep(0.03)
    time.sleep(0.05)  # steps of the epoch that then raised
    clock.close_epoch()
    clock.close_epoch()  # once only
    total = clock.total()
    assert total["train"] >= 0.05
    assert total["train"] + total["storage"] <= total["trial"] + 1e-6
