"""`automl-nn analyze` end to end: trials keep predictions, analysis reads them back, and the edge cases."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.artifacts import FileSystemArtifactStore
from typer.testing import CliRunner

from automl_nn.analysis import predictions
from automl_nn.data.catalog import load
from automl_nn.storage import record
from tests.conftest import run

SEARCH = ["search", "--dataset", "digits", "--epochs", "2", "--width", "8", "--depth", "1",
          "--family", "linear", "--batch-size", "64", "--seed", "0", "--trials", "3"]
STORE = FileSystemArtifactStore("automl-nn-artifacts")


@pytest.fixture
def searched(cli: CliRunner) -> optuna.Study:
    code, output = run(cli, *SEARCH, "--study-name", "s")
    assert code == 0, output
    return optuna.load_study(study_name="s", storage="sqlite:///automl-nn.db")


def test_trials_keep_compact_predictions_that_match_their_metrics(searched: optuna.Study) -> None:
    labels = predictions.fetch(searched.user_attrs[record.LABELS.id_key],
                               searched.user_attrs[record.LABELS.hash_key], STORE, "labels")
    for trial in searched.trials:
        arrays = predictions.fetch(trial.user_attrs[record.PREDICTIONS.id_key],
                                   trial.user_attrs[record.PREDICTIONS.hash_key], STORE, "predictions")
        assert arrays["val_pred"].dtype == np.uint8 and arrays["test_conf"].dtype == np.float16
        assert arrays["val_pred"].shape == (2, labels["val_labels"].shape[0])
        for epoch in (1, 2):  # the stored answers give the accuracies the trial recorded
            acc = np.mean(arrays["val_pred"][epoch - 1] == labels["val_labels"])
            assert acc == pytest.approx(trial.user_attrs[f"epoch{epoch}"]["val_accuracy"])
        # the test split once, on the final model (a study asks for more with test_each_epoch)
        assert arrays["test_pred"].shape == (1, labels["test_labels"].shape[0])
        assert arrays["test_epochs"].tolist() == [2]
        test_acc = np.mean(arrays["test_pred"][-1] == labels["test_labels"])
        assert test_acc == pytest.approx(trial.user_attrs["test_accuracy"])


def test_analyze_writes_page_and_json(cli: CliRunner, searched: optuna.Study, tmp_path: Path) -> None:
    code, output = run(cli, "analyze", "s", "--out", "out", "--split", "val")
    assert code == 0, output
    answers = json.loads((tmp_path / "out" / "analysis.json").read_text())
    assert answers["with_predictions"] == 3 and answers["needs_predictions"] == []
    assert [r["attempt"] for r in answers["q1_attempts"]] == ["1", "2", "last"]
    q8 = answers["q8_samples"]
    # recounted from the kept predictions: easy = every trial's last epoch right; weird = all
    # three trials give the same wrong answer (more than 90% of them)
    labels = predictions.fetch(searched.user_attrs[record.LABELS.id_key],
                               searched.user_attrs[record.LABELS.hash_key], STORE,
                               "labels")["val_labels"]
    last = np.stack([predictions.fetch(t.user_attrs[record.PREDICTIONS.id_key],
                                       t.user_attrs[record.PREDICTIONS.hash_key], STORE,
                                       "predictions")["val_pred"][-1] for t in searched.trials])
    assert q8["samples"] == load("digits").y_val.shape[0] == labels.shape[0]
    assert q8["easy"] == int((last == labels).all(axis=0).sum())
    assert q8["weird"] == int(((last == last[0]).all(axis=0) & (last[0] != labels)).sum())
    assert 0 < q8["easy"] < q8["samples"]
    best = max(searched.trials, key=lambda t: (t.user_attrs["accuracy"], -t.number))
    assert answers["q9_best_per_class"]["trial"] == best.number
    assert (tmp_path / "out" / "analysis.html").stat().st_size > 1_000_000


def test_analyze_states_which_split_and_attempts_it_used(cli: CliRunner, searched: optuna.Study,
                                                         tmp_path: Path) -> None:
    code, output = run(cli, "analyze", "s", "--out", "out")  # --split test, the default
    assert code == 0, output
    answers = json.loads((tmp_path / "out" / "analysis.json").read_text())
    # test predictions of the final model only: attempts come from the per-epoch validation
    assert (answers["final_split"], answers["attempts_split"]) == ("test", "val")
    assert "final model only" in answers["accuracy_source"]
    assert "final answers (questions 2, 8-10): test split" in output
    assert "attempts (questions 1, 7, gold stars): validation accuracy stored per epoch" in output
    assert answers["q8_samples"]["samples"] == load("digits").y_test.shape[0]
    best = max(searched.trials, key=lambda t: (t.user_attrs["accuracy"], -t.number))
    assert answers["q9_best_per_class"]["trial"] == best.number
    # the ensembles' single best is judged on the final model's test answers
    assert answers["q10_ensembles"]["best"]["accuracy"] == pytest.approx(best.user_attrs["test_accuracy"])


def test_test_each_epoch_keeps_test_attempts_for_analyze(cli: CliRunner, tmp_path: Path) -> None:
    code, output = run(cli, *SEARCH, "--trials", "2", "--study-name", "each", "--test-each-epoch")
    assert code == 0, output
    code, output = run(cli, "analyze", "each", "--out", "out")
    assert code == 0, output
    answers = json.loads((tmp_path / "out" / "analysis.json").read_text())
    assert (answers["final_split"], answers["attempts_split"]) == ("test", "test")
    assert answers["accuracy_source"] == "test accuracy from stored predictions"
    assert [r["attempt"] for r in answers["q1_attempts"]] == ["1", "2", "last"]


def test_study_without_predictions_answers_what_it_can(cli: CliRunner, tmp_path: Path) -> None:
    code, output = run(cli, *SEARCH, "--trials", "2", "--study-name", "bare", "--no-keep-predictions")
    assert code == 0, output
    code, output = run(cli, "analyze", "bare", "--out", "out")
    assert code == 0, output
    assert "needs stored predictions" in output
    answers = json.loads((tmp_path / "out" / "analysis.json").read_text())
    assert answers["needs_predictions"] == ["q8_samples", "q9_best_per_class", "q10_ensembles"]
    assert answers["q1_attempts"][0]["trials"] == 2


def test_regression_study_is_refused(cli: CliRunner) -> None:
    study = optuna.create_study(storage="sqlite:///automl-nn.db", study_name="reg")
    study.set_user_attr("data", {"dataset": "functions", "task": "regression"})
    code, output = run(cli, "analyze", "reg")
    assert code == 2 and "regression study" in output and "classification" in output


def test_tampered_predictions_are_refused(cli: CliRunner, searched: optuna.Study) -> None:
    artifact = Path("automl-nn-artifacts") / searched.trials[0].user_attrs[record.PREDICTIONS.id_key]
    data = bytearray(artifact.read_bytes())
    data[len(data) // 2] ^= 0xFF
    artifact.write_bytes(bytes(data))
    code, output = run(cli, "analyze", "s")
    assert code == 2 and "SHA-256" in output
