"""bench_defaults: a wall budget keeps the trials that finished within it, in trial order."""

from __future__ import annotations

import datetime

from optuna.trial import FrozenTrial, TrialState

from benchmarks.bench_defaults import ARMS, Run, within_budget

START = datetime.datetime(2030, 1, 1)


def _trial(number: int, seconds: float, error: float, params: float) -> FrozenTrial:
    return FrozenTrial(number=number, state=TrialState.COMPLETE, value=None,
                       values=[1.0 - error, params], datetime_start=START,
                       datetime_complete=START + datetime.timedelta(seconds=seconds), params={},
                       distributions={}, user_attrs={}, system_attrs={}, intermediate_values={},
                       trial_id=number)


def test_a_budget_keeps_the_trials_finished_within_it() -> None:
    trials = [_trial(1, 20.0, 0.1, 1e4), _trial(0, 10.0, 0.5, 100.0), _trial(2, 30.0, 0.05, 1e5)]
    assert [t.number for t in within_budget(trials, 35.0)] == [0, 1]  # 10 + 20 <= 35 < 60
    run = Run("defaults", 0, trials)
    assert run.hv(5.0) == 0.0 and run.hv(15.0) < run.hv(35.0) < run.hv(60.0)


def test_the_arms_differ_from_the_defaults_only_where_they_say() -> None:
    assert ARMS["defaults"] == {} and ARMS["defaults-unpruned"] == {"pruner": "none"}
    assert ARMS["optuna-example"]["defaults"] == "plain"
