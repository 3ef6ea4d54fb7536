"""Pruning decisions on hand-built histories (ask/tell, no training), constraints, and the front."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
from optuna.trial import FrozenTrial, TrialState
from typer.testing import CliRunner

from automl_nn import pruning
from automl_nn.config import SINGLE_OBJECTIVE_PRUNERS, PrunerConfig, resolve
from automl_nn.errors import ConfigError
from automl_nn.results.summary import pruning_summary
from automl_nn.storage import record
from automl_nn.storage.backends import open_storage
from automl_nn.study import count_done, front, open_study
from tests.conftest import run

MO = ["maximize", "minimize"]  # accuracy, params


def _record(trial: optuna.Trial, params: float, curve: Sequence[float], epochs: int) -> None:
    """What TrialRunner stores: static metrics first, then one `epoch{k}` record per epoch."""
    record.write_candidate(trial, {"train": {"epochs": epochs}}, trial.number)
    record.write_metrics(trial, {"params": params})
    for k, acc in enumerate(curve, start=1):
        record.write_epoch(trial, k, {"epoch": k, "train_loss": 1.0, "val_loss": 1.0 - acc,
                                      "val_accuracy": acc, "seconds": 0.5})


def _finished(study: optuna.Study, params: float, curve: Sequence[float], *, epochs: int = 4,
              pruned: bool = False) -> None:
    trial = study.ask()
    _record(trial, params, curve, epochs)
    if pruned:
        study.tell(trial, state=TrialState.PRUNED)
    else:
        study.tell(trial, [curve[-1], params])


def _decide(study: optuna.Study, params: float, curve: Sequence[float], *, epochs: int = 4,
            **settings: Any) -> dict[str, Any] | None:
    """Ask a new trial with this history and let the pareto pruner judge its last epoch."""
    trial = study.ask()
    _record(trial, params, curve, epochs)
    pruner = pruning.ParetoPruner(("accuracy", "params"), PrunerConfig(**settings))
    return pruner(trial, len(curve), epochs)


@pytest.fixture
def study() -> optuna.Study:
    """Two finished trials: a small net (100 params) and a big accurate one (1000 params)."""
    study = optuna.create_study(directions=MO)
    _finished(study, 100.0, [0.80, 0.85, 0.88, 0.90])
    _finished(study, 1000.0, [0.90, 0.95, 0.97, 0.98])
    return study


def test_a_trial_dominated_at_equal_fidelity_is_pruned_and_told_why(study: optuna.Study) -> None:
    # more params than trial 0 and far less accurate after 1 epoch
    reason = _decide(study, 500.0, [0.50], startup_trials=2)
    assert reason is not None
    assert (reason["trial"], reason["epoch"]) == (0, 1)
    assert reason["dominator"] == {"accuracy": 0.80, "params": 100.0}
    assert reason["pruned"] == {"accuracy": 0.50, "params": 500.0}


def test_the_comparison_uses_the_same_epoch_not_final_values(study: optuna.Study) -> None:
    # 0.82 after 1 epoch beats trial 0's 0.80 then (though not its final 0.90): equal fidelity keeps it
    assert _decide(study, 500.0, [0.82], startup_trials=2) is None
    # after 2 epochs it is still at 0.82 while trial 0 reached 0.85: now it is dominated
    reason = _decide(study, 500.0, [0.82, 0.82], startup_trials=2)
    assert reason is not None and (reason["trial"], reason["epoch"]) == (0, 2)


@pytest.mark.parametrize(("params", "curve"), [
    (50.0, [0.10]),    # cheaper than every finished trial: a new point of the front, however weak
    (500.0, [0.85]),   # costlier than trial 0 but more accurate, cheaper than trial 1
    (2000.0, [0.95]),  # the most expensive, but the most accurate at epoch 1
])
def test_a_trial_not_dominated_goes_on(study: optuna.Study, params: float, curve: list[float]) -> None:
    assert _decide(study, params, curve, startup_trials=2) is None


def test_equal_values_or_a_lead_within_the_margin_do_not_prune(study: optuna.Study) -> None:
    assert _decide(study, 100.0, [0.80], startup_trials=2) is None  # identical to trial 0
    assert _decide(study, 100.0, [0.795], startup_trials=2, margin=0.01) is None  # lead 0.005 < 0.01
    assert _decide(study, 100.0, [0.785], startup_trials=2, margin=0.01) is not None
    assert _decide(study, 100.0, [0.785], startup_trials=2, margin=0.05) is None


def test_warm_up_in_trials_and_in_epochs(study: optuna.Study) -> None:
    assert _decide(study, 500.0, [0.50], startup_trials=3) is None  # only 2 trials completed
    assert _decide(study, 500.0, [0.50], startup_trials=2, warmup_epochs=1) is None
    assert _decide(study, 500.0, [0.50, 0.50], startup_trials=2, warmup_epochs=1) is not None


def test_the_last_epoch_is_never_pruned(study: optuna.Study) -> None:
    # finishing costs nothing more, and its final values are the ones that count
    assert _decide(study, 500.0, [0.5, 0.5, 0.5, 0.5], startup_trials=2) is None


def test_pruned_trials_are_evidence_but_not_startup_trials(study: optuna.Study) -> None:
    _finished(study, 10.0, [0.95], pruned=True)  # stopped after epoch 1, yet a fact at epoch 1
    reason = _decide(study, 50.0, [0.60], startup_trials=2)
    assert reason is not None and reason["trial"] == 2
    assert _decide(study, 50.0, [0.60], startup_trials=3) is None  # 2 completed, 1 pruned


def test_the_decision_comes_from_storage_so_it_holds_across_workers(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'w.db'}"
    worker_a = optuna.create_study(study_name="w", storage=url, directions=MO)
    _finished(worker_a, 100.0, [0.9, 0.95])
    worker_b = optuna.load_study(study_name="w", storage=url)
    reason = _decide(worker_b, 200.0, [0.5], startup_trials=1, epochs=2)
    assert reason is not None and reason["trial"] == 0


def _constrained(trial: optuna.Trial, violation: float) -> None:
    """What the runner stores for a limit: the constraint, and the infeasible record when over it."""
    trial.set_constraint("max_params", violation)
    if violation > 0:
        record.write_infeasible(trial, [f"params over max_params by {violation:.0%}"])


def test_pruned_and_infeasible_trials_are_never_on_the_front(tmp_path: Path) -> None:
    study = open_study(resolve({"study_name": "f", "max_params": 1000}),
                       open_storage(f"sqlite:///{tmp_path / 'f.db'}"))
    good = study.ask()
    _constrained(good, -0.5)
    _record(good, 500.0, [0.7, 0.8], epochs=2)
    study.tell(good, [0.8, 500.0])
    pruned = study.ask()  # would dominate everything at epoch 1, but has no final values
    _constrained(pruned, -0.9)
    _record(pruned, 100.0, [0.99], epochs=2)
    study.tell(pruned, state=TrialState.PRUNED)
    infeasible = study.ask()  # placeholder values that would dominate, but over max_params
    record.write_candidate(infeasible, {"train": {"epochs": 2}}, infeasible.number)
    _constrained(infeasible, 1.0)
    study.tell(infeasible, [1.0, 1.0])
    assert [t.number for t in front(study)] == [0]
    assert count_done(study) == 2  # infeasible candidates do not use up --trials
    assert pruning_summary(study) == {"pruned": 1, "infeasible": 1, "epochs_planned": 6,
                                      "epochs_trained": 3, "epochs_saved": 3,
                                      "epochs_saved_by_pruning": 1, "epochs_saved_by_constraints": 2}


def test_front_is_empty_when_no_single_objective_trial_is_feasible(tmp_path: Path) -> None:
    study = open_study(resolve({"study_name": "s", "objectives": ["accuracy"], "max_params": 10}),
                       open_storage(f"sqlite:///{tmp_path / 's.db'}"))
    trial = study.ask()
    _constrained(trial, 3.0)
    study.tell(trial, [0.0])
    assert front(study) == []


def test_single_objective_pruners_see_the_reported_epoch_metric() -> None:
    config = resolve({"objectives": ["accuracy"], "pruner": {"name": "median", "startup_trials": 2}})
    study = optuna.create_study(direction="maximize", pruner=pruning.make_pruner(config))
    hook = pruning.make_epoch_pruning(config)
    for curve in ([0.8, 0.9], [0.7, 0.85]):
        trial = study.ask()
        _record(trial, 100.0, curve, epochs=2)
        assert all(hook(trial, k, 2) is None for k in (1, 2))
        study.tell(trial, curve[-1])
    weak = study.ask()
    _record(weak, 100.0, [0.3], epochs=2)
    assert hook(weak, 1, 2) == {"pruner": "median", "epoch": 1, "accuracy": 0.3}
    assert weak.storage.get_trial(weak._trial_id).intermediate_values == {1: 0.3}
    strong = study.ask()
    _record(strong, 100.0, [0.95], epochs=2)
    assert hook(strong, 1, 2) is None


EPOCHS = 9
# The epochs at which each pruner stops a trial that is clearly worse than every finished one.
# median, percentile and successive halving judge the first epoch; hyperband the first rung of the
# trial's bracket (epoch 1 or 3 of 9; these trials of study "curves" miss the bracket whose only
# rung is the last epoch); patient waits until the trial has also got worse for an epoch
# (patience 1: the third epoch); wilcoxon until 4 epochs all below the best trial make the
# difference significant (one-sided p = 1/16 < 0.1).
PRUNED_AT = {"median": {1}, "percentile": {1}, "hyperband": {1, 3}, "sha": {1}, "patient": {3},
             "wilcoxon": {4}}


def _train_through_hook(study: optuna.Study, hook: pruning.EpochPruning,
                        curve: list[float]) -> tuple[FrozenTrial, dict[str, Any] | None]:
    """What TrialRunner does with one trial: record each epoch, ask the hook, stop when it says."""
    trial = study.ask()
    for epoch in range(1, len(curve) + 1):
        _record(trial, 100.0, curve[:epoch], len(curve))
        reason = hook(trial, epoch, len(curve))
        if reason is not None:
            study.tell(trial, state=TrialState.PRUNED)
            return study.trials[trial.number], reason
    study.tell(trial, curve[-1])
    return study.trials[trial.number], None


@pytest.mark.parametrize("name", SINGLE_OBJECTIVE_PRUNERS)
def test_every_single_objective_pruner_prunes_a_clearly_worse_trial(name: str) -> None:
    config = resolve({"objectives": ["accuracy"], "space": {"epochs": EPOCHS},
                      "pruner": {"name": name, "startup_trials": 2}})
    # a fixed name: hyperband assigns trials to its brackets by a hash of study name and number
    study = optuna.create_study(study_name="curves", direction="maximize",
                                pruner=pruning.make_pruner(config))
    hook = pruning.make_epoch_pruning(config)
    rising = [[0.5 + 0.01 * i + 0.04 * k for k in range(EPOCHS)] for i in range(6)]
    assert [_train_through_hook(study, hook, curve)[1] for curve in rising] == [None] * 6
    diverging = [0.2 - 0.01 * k for k in range(EPOCHS)]
    for _ in range(3):
        trial, reason = _train_through_hook(study, hook, diverging)
        assert trial.state == TrialState.PRUNED and reason is not None
        epoch = reason["epoch"]
        assert epoch in PRUNED_AT[name]
        assert reason == {"pruner": name, "epoch": epoch, "accuracy": diverging[epoch - 1]}
        assert trial.intermediate_values == {k: diverging[k - 1] for k in range(1, epoch + 1)}
    best = [0.62 + 0.04 * k for k in range(EPOCHS)]  # ahead of every trial at every epoch
    trial, reason = _train_through_hook(study, hook, best)
    assert reason is None and trial.state == TrialState.COMPLETE
    assert study.best_trial.number == trial.number


@pytest.mark.parametrize("name", ["median", "sha"])
def test_a_real_single_objective_search_prunes_its_bad_trials(cli: CliRunner, tmp_path: Path,
                                                              name: str) -> None:
    """Learning rates from 1e-5 to 1: the slow and the diverging ones fall behind and are cut."""
    study_file = tmp_path / "p.yaml"
    study_file.write_text(f"objectives: [accuracy]\npruner: {{name: {name}, startup_trials: 2}}\n")
    code, output = run(cli, "search", str(study_file), "--dataset", "digits", "--family", "linear",
                       "--depth", "1", "--width", "16", "--batch-size", "64", "--epochs", "4",
                       "--lr", "1e-5:1:log", "--trials", "10", "--seed", "0", "--study-name", "p")
    assert code == 0, output
    study = optuna.load_study(study_name="p", storage="sqlite:///automl-nn.db")
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
    assert pruned, "some of ten trials over five decades of learning rate fall behind"
    assert len(pruned) + sum(t.state == TrialState.COMPLETE for t in study.trials) == 10
    for t in pruned:
        epoch = t.user_attrs["epochs_trained"]
        assert epoch < 4 and t.user_attrs["pruned_by"] == {
            "pruner": name, "epoch": epoch, "accuracy": t.intermediate_values[epoch]}
        earlier = [u.intermediate_values[epoch] for u in study.trials[:t.number]
                   if epoch in u.intermediate_values]
        if name == "median":  # below the median of the trials before it at the same epoch
            assert t.intermediate_values[epoch] < float(np.median(earlier))
        else:  # successive halving: outside the top third of the trials at its rung
            better = sum(v > t.intermediate_values[epoch] for v in earlier)
            assert better >= max(1, (len(earlier) + 1) // 3)
    assert study.best_trial.state == TrialState.COMPLETE
    assert f"pruned ({name} pruner at epoch" in output
    code, output = run(cli, "show", "p")
    assert code == 0 and f"pruned {len(pruned)}, infeasible 0" in output


@pytest.mark.parametrize(("raw", "message"), [
    ({"objectives": ["accuracy", "params"], "pruner": "median"}, "Use --pruner pareto"),
    ({"objectives": ["accuracy"], "pruner": "pareto"}, "has one objective"),
    ({"objectives": ["params", "flops"], "pruner": "pareto"}, "known before training"),
    ({"pruner": {"name": "pareto", "margin": 2}}, "0 <= margin < 1"),
    ({"pruner": {"name": "pareto", "patience": 2}}, "pruner.patience: unknown key"),
    ({"constraints": {"max_param": 10}}, "constraints.max_param: unknown key"),
    ({"max_flops": -1}, "max_flops: must be a positive number"),
])
def test_pruner_and_constraint_config_errors(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        resolve(raw)


def test_constraints_from_either_form_are_part_of_the_study_identity() -> None:
    nested = resolve({"constraints": {"max_params": 1e5, "max_memory": 4096}})
    flat = resolve({"max_params": 100000, "max_memory": "4096"})
    assert nested.limits() == flat.limits() == {"params": 1e5, "memory": 4096.0}
    assert nested.identity_hash() == flat.identity_hash()
    assert nested.identity_hash() != resolve({}).identity_hash()
    assert "constraints" not in resolve({}).identity()  # older studies keep their hash
    assert resolve(nested.to_raw()) == nested
    tuned = resolve({"pruner": {"name": "pareto", "margin": 0.05}})
    assert resolve(tuned.to_raw()) == tuned


def test_a_candidate_over_a_constraint_costs_no_training_step(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from automl_nn import trial as objectives
    from automl_nn.data.catalog import load

    def no_training(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("an infeasible candidate was trained")

    monkeypatch.setattr(objectives, "fit", no_training)
    monkeypatch.setattr(objectives, "evaluate", no_training)
    config = resolve({"objectives": ["accuracy", "params"], "max_params": 10, "seed": 0,
                      "space": {"family": "linear", "width": 8, "depth": 1, "epochs": 3}})
    study = optuna.create_study(directions=config.directions())
    runner = objectives.TrialRunner(config, load("digits"), torch.device("cpu"), objectives.NullReporter())
    study.optimize(runner, n_trials=2)
    for trial in study.trials:
        assert trial.state == TrialState.COMPLETE
        assert trial.user_attrs["infeasible"] == "params 610 > max_params 10"  # 64*8+8 + 8*10+10
        assert trial.user_attrs["epochs_trained"] == 0
        assert trial.constraints["max_params"] > 0
        assert trial.values[1] == trial.user_attrs["params"]  # real static costs for the sampler
        assert "accuracy" not in trial.user_attrs  # nothing trained, nothing claimed
    assert front(study) == [] and count_done(study) == 0


@pytest.mark.parametrize("directions", [["maximize", "minimize"], ["minimize"]])
def test_front_from_read_trials_is_optunas_best(directions: list[str]) -> None:
    study = optuna.create_study(directions=directions, sampler=optuna.samplers.RandomSampler(seed=3))
    rng = np.random.default_rng(0)
    for number in range(40):
        trial = study.ask()
        _constrained(trial, float(rng.uniform(-1.0, 0.3)))
        values = [float(v) for v in rng.integers(0, 6, len(directions))]  # ties on purpose
        study.tell(trial, values if number % 7 else None,
                   state=TrialState.COMPLETE if number % 7 else TrialState.PRUNED)
    best = record.front(study.get_trials(deepcopy=False), study.directions)
    if len(directions) > 1:
        assert sorted(t.number for t in best) == sorted(t.number for t in study.best_trials)
    else:
        assert [t.values for t in best] == [study.best_trial.values]
    assert not any(record.is_infeasible(t) for t in best)


def test_constraints_on_a_regression_study_close_trials_with_regression_placeholders(cli: CliRunner) -> None:
    """`--max-params 5` on `sin`: every candidate is over the limit, none fails (no KeyError 'mse')."""
    code, output = run(cli, "search", "--dataset", "sin?size=64", "--max-params", "5", "--trials", "2",
                       "--epochs", "1", "--study-name", "r", "--seed", "0")
    assert code == 2 and "were all over the constraints" in output, output
    trials = optuna.load_study(study_name="r", storage="sqlite:///automl-nn.db").trials
    assert trials and all(t.state == TrialState.COMPLETE and record.is_infeasible(t) for t in trials)
    mse, params = trials[0].values
    assert params > 5 and mse > 0 and math.isfinite(mse)  # the error of predicting the mean


@pytest.mark.parametrize("objective", ["mse", "mse,params"])
def test_default_pruners_leave_a_regression_search_running(cli: CliRunner, objective: str) -> None:
    """A regression's epochs record no accuracy (nor mse): the pruners must go on, not fail."""
    code, output = run(cli, "search", "--dataset", "sin?size=128", "--objective", objective, "--trials", "3",
                       "--epochs", "3", "--width", "4:16", "--study-name", "reg", "--seed", "0")
    assert code == 0, output
    trials = optuna.load_study(study_name="reg", storage="sqlite:///automl-nn.db").trials
    assert not [t for t in trials if t.state == TrialState.FAIL], output


def _regression_trial(study: optuna.Study, params: float, mse: Sequence[float]) -> optuna.Trial:
    trial = study.ask()
    record.write_candidate(trial, {"train": {"epochs": len(mse) + 2}}, trial.number)
    record.write_metrics(trial, {"params": params})
    for k, value in enumerate(mse, start=1):  # what train.EpochResult.to_dict stores for a regression
        record.write_epoch(trial, k, {"epoch": k, "train_loss": value, "val_loss": value / 49.0,
                                      "val_mse": value, "val_mae": value ** 0.5, "val_r2": 0.5,
                                      "seconds": 0.1})
    return trial


def test_a_regression_is_pruned_on_its_mse_at_equal_fidelity() -> None:
    """A regression's epochs keep its metrics in target units, so (mse, params) prunes as
    (accuracy, params) does; before, its epochs had no mse and no trial was ever pruned."""
    study = optuna.create_study(directions=["minimize", "minimize"])
    done = _regression_trial(study, 100.0, [30.0, 20.0, 10.0])
    study.tell(done, [10.0, 100.0])
    pruner = pruning.ParetoPruner(("mse", "params"), PrunerConfig(startup_trials=1))
    worse = _regression_trial(study, 500.0, [40.0, 35.0])
    reason = pruner(worse, 2, 5)
    assert reason is not None and reason["trial"] == 0 and reason["dominator"]["mse"] == 20.0
    better = _regression_trial(study, 500.0, [40.0, 19.0])
    assert pruner(better, 2, 5) is None


def test_a_trial_finished_elsewhere_is_seen_by_the_next_trial_at_once(tmp_path: Path) -> None:
    """The pruner reads the finished trials at each trial's first check, then at most every
    READ_SECONDS: a trial another worker finishes meanwhile is seen by the next trial at once."""
    url = f"sqlite:///{tmp_path / 'w.db'}"
    here = optuna.create_study(study_name="w", storage=url, directions=MO)
    _finished(here, 1000.0, [0.5, 0.6, 0.7, 0.8])
    pruner = pruning.ParetoPruner(("accuracy", "params"), PrunerConfig(startup_trials=1))
    first = here.ask()
    _record(first, 500.0, [0.4, 0.5], 4)
    assert pruner(first, 2, 4) is None
    elsewhere = optuna.load_study(study_name="w", storage=url)
    _finished(elsewhere, 100.0, [0.9, 0.95, 0.97, 0.98])
    nxt = here.ask()
    _record(nxt, 500.0, [0.4, 0.5], 4)
    reason = pruner(nxt, 2, 4)
    assert reason is not None and reason["trial"] == 2
