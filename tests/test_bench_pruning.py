"""The pruning benchmark's offline replay: the pruner's decisions on an unpruned study's curves."""

from __future__ import annotations

import optuna

from automl_nn import pruning
from automl_nn.config import PrunerConfig
from benchmarks.bench_pruning import replay
from tests.test_pruning import MO, _finished


def test_replay_prunes_as_the_rule_would_and_names_the_trials_it_got_wrong() -> None:
    study = optuna.create_study(directions=MO)
    _finished(study, 100.0, [0.50, 0.60, 0.70, 0.80])
    _finished(study, 200.0, [0.30, 0.50, 0.75, 0.90])  # slow start: behind at epoch 1, best at the end
    _finished(study, 300.0, [0.20, 0.30, 0.40, 0.50])  # behind all the way
    rule = pruning.ParetoPruner(("accuracy", "params"), PrunerConfig(startup_trials=1))

    arm = replay(study, rule)

    assert (arm.epochs, arm.planned, arm.pruned) == (4 + 1 + 1, 12, 2)
    assert arm.front == [(1.0 - 0.80, 100.0)]  # the pruned trials never reach the front
    assert arm.missed == [1]  # trial 1 would have joined the front of trials 0-1; trial 2 would not


def test_replay_with_warm_up_epochs_prunes_later() -> None:
    study = optuna.create_study(directions=MO)
    _finished(study, 100.0, [0.50, 0.60, 0.70, 0.80])
    _finished(study, 300.0, [0.20, 0.30, 0.40, 0.50])
    rule = pruning.ParetoPruner(("accuracy", "params"), PrunerConfig(startup_trials=1, warmup_epochs=1))

    arm = replay(study, rule)

    assert (arm.epochs, arm.pruned, arm.missed) == (4 + 2, 1, [])
