"""The pruning benchmark's offline replay: the pruner's decisions on an unpruned study's curves."""

from __future__ import annotations

import optuna
import pytest

from automl_nn import pruning
from automl_nn.config import PrunerConfig
from automl_nn.storage.record import TrialRecord
from benchmarks.bench_pruning import Rule, gain_quantile, parse_rule, replay
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


def _rule(dominators: int = 1, gain: float | None = None) -> Rule:
    pruner = pruning.ParetoPruner(("accuracy", "params"), PrunerConfig(startup_trials=1))
    return Rule(pruner, dominators, gain)


def test_a_rule_that_needs_more_dominators_prunes_less() -> None:
    study = optuna.create_study(directions=MO)
    _finished(study, 100.0, [0.50, 0.60, 0.70, 0.80])
    _finished(study, 150.0, [0.55, 0.65, 0.75, 0.85])  # ahead of trial 0 all the way: never pruned
    _finished(study, 300.0, [0.20, 0.30, 0.40, 0.50])  # behind trials 0 and 1 at epoch 1
    _finished(study, 120.0, [0.45, 0.55, 0.65, 0.75])  # behind trial 0; trial 1 costs more

    # one dominator: trials 2 and 3 stop after epoch 1; two: trial 2 only; three: none
    assert [(a.epochs, a.pruned) for a in (replay(study, _rule(n)) for n in (1, 2, 3))] == [
        (4 + 4 + 1 + 1, 2), (4 + 4 + 1 + 4, 1), (16, 0)]
    # the one-dominator rule is the pruner's own
    assert replay(study, _rule(1)) == replay(study, _rule().pruner)


def test_the_gain_rule_keeps_a_trial_whose_dominator_ends_within_the_usual_gain() -> None:
    study = optuna.create_study(directions=MO)
    _finished(study, 100.0, [0.50, 0.55, 0.58, 0.60])  # fast start, small gain (0.10 after epoch 1)
    _finished(study, 50.0, [0.20, 0.50, 0.70, 0.90])   # cheapest: never dominated; gain 0.70
    _finished(study, 300.0, [0.45, 0.60, 0.75, 0.90])  # dominated by trial 0 at epoch 1 only

    # median gain at epoch 1: (0.10 + 0.70) / 2 = 0.40; trial 0 ends at 0.60 < 0.45 + 0.40: kept
    assert (replay(study, _rule(gain=0.5)).pruned, replay(study, _rule(gain=0.9)).pruned) == (0, 0)
    # the smallest gain (0.10): 0.60 > 0.45 + 0.10, trial 0 still counts and trial 2 stops
    assert (replay(study, _rule(gain=0.0)).epochs, replay(study, _rule()).epochs) == (9, 9)


def test_gain_quantile_is_taken_over_complete_trials_at_that_epoch() -> None:
    study = optuna.create_study(directions=MO)
    _finished(study, 100.0, [0.50, 0.60, 0.70, 0.80])  # gains after epoch 1: 0.30, after 3: 0.10
    _finished(study, 100.0, [0.20, 0.40, 0.60, 0.90])  # 0.70 and 0.30
    trials = [TrialRecord.of(t) for t in study.get_trials()]
    assert gain_quantile(trials, 1, 0.5) == pytest.approx(0.50)
    assert gain_quantile(trials, 1, 0.9) == pytest.approx(0.30 + 0.9 * 0.40)  # linear, as numpy
    assert gain_quantile(trials, 3, 0.0) == pytest.approx(0.10)
    assert gain_quantile(trials, 5, 0.5) == 0.0  # no trial has a fifth epoch


def test_rule_specs_override_the_base_settings() -> None:
    base = PrunerConfig(startup_trials=5, warmup_epochs=0, margin=0.01)
    assert parse_rule("default", base) == Rule(pruning.ParetoPruner(("accuracy", "params"), base))
    rule = parse_rule("margin=0.02,warmup=1,dominators=2,gain=0.9", base)
    assert (rule.settings, rule.dominators, rule.gain) == (
        PrunerConfig(startup_trials=5, warmup_epochs=1, margin=0.02), 2, 0.9)
    for bad in ("dominator=2", "margin=wide", "gain=90", "dominators=0"):
        with pytest.raises(ValueError, match="rule"):
            parse_rule(bad, base)
