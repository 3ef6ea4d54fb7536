"""Knee point and --pick: against hand-worked fronts."""

from __future__ import annotations

import math

import optuna
import pytest

from automl_nn.results import decide
from automl_nn.study import front as study_front
from tests.fake_study import make_study


def test_normalized_orients_every_objective_so_zero_is_best() -> None:
    points = [[0.9, 100.0], [0.7, 300.0], [0.8, 100.0]]
    scaled = decide.normalized(points, [True, False])
    assert scaled == [pytest.approx(row) for row in ([0.0, 0.0], [1.0, 1.0], [0.5, 0.0])]


def test_knee_is_farthest_below_the_line_through_the_extremes() -> None:
    # accuracy up, params down; normalized: A (0, 1), B (0.1, 0.2), C (0.6, 0.1), D (1, 0)
    front = [[1.0, 1000.0], [0.95, 280.0], [0.7, 190.0], [0.5, 100.0]]
    distances = decide.knee_distances(front, [True, False])
    assert distances[1] == pytest.approx((1 - 0.1 - 0.2) / math.sqrt(2))
    assert decide.knee_index(front, [True, False]) == 1


def test_knee_of_one_or_two_points_prefers_the_better_first_objective() -> None:
    assert decide.knee_index([[0.5, 10.0]], [True, False]) == 0
    assert decide.knee_index([[0.5, 10.0], [0.9, 20.0]], [True, False]) == 1


def test_knee_works_for_three_objectives() -> None:
    front = [[1.0, 9.0, 9.0], [0.9, 2.0, 2.0], [0.1, 1.0, 1.0]]
    assert decide.knee_index(front, [True, False, False]) == 1


def test_picks_on_a_study() -> None:
    study = make_study(optuna.storages.InMemoryStorage())
    best = study_front(study)
    assert decide.pick(study, "max-acc").number == max(best, key=lambda t: t.values[0]).number
    assert decide.pick(study, "min-params").number == min(best, key=lambda t: t.values[1]).number
    cheapest = min(best, key=lambda t: (t.user_attrs["flops"], t.number))
    assert decide.pick(study, "min-flops").number == cheapest.number  # not an objective: user attrs
    assert decide.pick(study, "min-train-time").number == decide.pick(study, "min-train_time").number


def test_knee_pick_of_a_study_is_the_hand_worked_knee() -> None:
    """The front of the knee test above, as trials (plus a dominated one): trial 1 is the knee."""
    study = optuna.create_study(directions=["maximize", "minimize"])
    for values in ([1.0, 1000.0], [0.95, 280.0], [0.7, 190.0], [0.5, 100.0], [0.6, 900.0]):
        study.tell(study.ask(), values)
    # normalized: A (0, 1), B (0.1, 0.2), C (0.6, 0.1), D (1, 0); B is farthest below x + y = 1
    assert decide.pick(study, "knee").number == 1
    assert decide.knee(study).number == 1
    study.tell(study.ask(), [0.97, 250.0])  # dominates B: now it is the knee (0.06, 0.167)
    assert decide.pick(study, "knee").number == 5


def test_unknown_pick_lists_the_valid_ones() -> None:
    study = make_study(optuna.storages.InMemoryStorage(), n=3)
    with pytest.raises(decide.PickError, match=r'Did you mean "min-params"\?.*knee, max-accuracy'):
        decide.pick(study, "min-param")
    with pytest.raises(decide.PickError, match="unknown pick"):
        decide.pick(study, "max-params")  # params only get better downwards
