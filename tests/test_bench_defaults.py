"""bench_defaults: a run's history read at a budget, its front chosen on validation and read on test."""

from __future__ import annotations

import datetime

import optuna
import pytest
import torch
from optuna.trial import FrozenTrial, TrialState

from benchmarks import optuna_script
from benchmarks.bench_defaults import ARMS, DEFAULT_ARMS, SCRIPT, Run, points_of, pruning_rows

START = datetime.datetime(2030, 1, 1)


def _trial(number: int, start: float, seconds: float, val: float, test: float, params: float,
           state: TrialState = TrialState.COMPLETE, **attrs: object) -> FrozenTrial:
    return FrozenTrial(number=number, state=state, value=None,
                       values=[val, params] if state == TrialState.COMPLETE else None,
                       datetime_start=START + datetime.timedelta(seconds=start),
                       datetime_complete=START + datetime.timedelta(seconds=start + seconds),
                       params={}, distributions={}, user_attrs={"test_accuracy": test, **attrs},
                       system_attrs={}, intermediate_values={}, trial_id=number)


def test_a_budget_keeps_the_trials_finished_within_it_and_leaves_out_pauses() -> None:
    trials = [_trial(0, 0, 10, 0.5, 0.5, 100), _trial(1, 11, 20, 0.9, 0.88, 1e4),
              # a second sitting an hour later: the pause is not search time
              _trial(2, 3600, 30, 0.95, 0.94, 1e5)]
    points = points_of(trials)
    assert [round(p.elapsed) for p in points] == [10, 31, 61]
    run = Run("defaults", 0, points)
    assert [p.number for p in run.within(35.0)] == [0, 1]
    assert run.hv(5.0) == 0.0 and run.hv(15.0) < run.hv(35.0) < run.hv(61.0)


def test_the_front_is_chosen_on_validation_and_read_on_test() -> None:
    trials = [_trial(0, 0, 1, 0.99, 0.90, 4000),  # best on validation, worse on test
              _trial(1, 1, 1, 0.98, 0.985, 4500),  # dominated on validation: not on the front
              _trial(2, 2, 1, 0.995, 0.991, 15000),
              _trial(3, 3, 1, 0.0, 0.0, 0, state=TrialState.PRUNED),
              _trial(4, 4, 1, 0.1, 0.1, 10, infeasible="max_params")]  # placeholder values
    run = Run("defaults", 0, points_of(trials))
    assert sorted(p.number for p in run.front(10.0)) == [0, 2]
    assert run.best_test(10.0, 5000) == pytest.approx(0.90)
    assert run.best_test(10.0, 20000) == pytest.approx(0.991)
    assert len(run.within(10.0)) == 5, "pruned and infeasible trials still count as trials run"


def test_the_arms_differ_from_the_defaults_only_where_they_say() -> None:
    assert ARMS["defaults"] == {} and ARMS["defaults-unpruned"] == {"pruner": "none"}
    assert ARMS["random"] == {"sampler": "random", "portfolio": False}
    assert DEFAULT_ARMS == ("defaults", "random", SCRIPT)


def test_the_plain_optuna_script_trains_and_records_test_accuracy(tmp_path) -> None:
    torch.manual_seed(0)
    x = torch.randn(300, 1, 4, 4)
    y = (x.flatten(1).sum(1) > 0).long()
    splits = ((x[:200], y[:200]), (x[200:250], y[200:250]), (x[250:], y[250:]))
    study = optuna_script.create_study("script", f"sqlite:///{tmp_path / 's.db'}", seed=0)
    study.optimize(optuna_script.Objective(*splits, seed=0), n_trials=3)
    done = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert len(done) == 3
    assert all(0.0 <= t.values[0] <= 1.0 and t.values[1] >= 16 * 4 + 4 for t in done)
    assert all(0.0 <= t.user_attrs["test_accuracy"] <= 1.0 for t in done)
    best = max(t.values[0] for t in done)
    assert best > 0.6, "an MLP separates a linear boundary"
    again = optuna.load_study(study_name="script", storage=f"sqlite:///{tmp_path / 's.db'}")
    assert len(again.trials) == 3, "the study is kept, so a second sitting resumes it"


def test_pruning_is_compared_at_an_equal_number_of_trained_trials() -> None:
    stopped = {"pruned_by": {"pruner": "deadline", "epoch": 1}}
    plain = [_trial(0, 0, 1, 0.9, 0.9, 1000, epochs_trained=4),
             _trial(1, 1, 1, 0.95, 0.95, 5000, epochs_trained=4),
             _trial(2, 2, 1, 0.0, 0.0, 0, state=TrialState.PRUNED, epochs_trained=1, **stopped)]
    pruned = [_trial(0, 0, 1, 0.9, 0.9, 1000, epochs_trained=4),
              _trial(1, 1, 1, 0.0, 0.0, 0, state=TrialState.PRUNED, epochs_trained=1,
                     pruned_by={"pruner": "pareto", "epoch": 1}),
              _trial(2, 2, 1, 0.1, 0.1, 10, epochs_trained=0, infeasible="time", skipped=True),
              _trial(3, 3, 1, 0.97, 0.96, 2000, epochs_trained=4)]  # beyond the unpruned count
    runs = [Run("defaults-unpruned", 0, points_of(plain)), Run("defaults", 0, points_of(pruned))]
    [row] = pruning_rows(runs)
    cells = [c.strip() for c in row.split("|")]
    # 2 trained trials each (the deadline-stopped and the skipped one left out): 8 epochs against 5
    assert cells[:6] == ["0", "2", "8", "5", "37.5%", "1"]
    assert float(cells[6]) > float(cells[7]) > 0, "the pruned run's first two trials hold only trial 0"
