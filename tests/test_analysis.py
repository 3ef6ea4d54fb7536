"""Cross-trial analysis: each of seed 000's questions on hand-built predictions with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from automl_nn.analysis import questions as an

# 3 trials x 6 samples, 3 classes. Samples 0, 1 and 3 are easy (every trial right); sample 2 is
# weird (every trial answers 0, label 2); sample 4 is confusing (answers 0, 1, 2: no majority).
LABELS = np.array([0, 1, 2, 0, 1, 2])
FINAL = np.array([[0, 1, 0, 0, 0, 2],   # trial 0: 4/6
                  [0, 1, 0, 0, 1, 2],   # trial 1: 5/6
                  [0, 1, 0, 0, 2, 1]])  # trial 2: 3/6
CONF = np.full(FINAL.shape, 0.4)
CONF[:, 2] = 0.95  # sure of the wrong answer: a possible label error
CONF[1, 4] = 0.9  # trial 1, the only one right on sample 4, is sure of it


def _trials(val: list[float], params: list[float]) -> list[an.TrialInfo]:
    return [an.TrialInfo(number=10 + i, family=["linear", "conv2d", "linear"][i],
                         activation=["relu", "tanh", "tanh"][i],
                         costs={"params": p, "memory": 2 * p, "train_time": 1.0, "ops": 3.0},
                         val_curve=[v - 0.1, v], val_accuracy=v)
            for i, (v, p) in enumerate(zip(val, params, strict=True))]


def _predictions() -> an.Predictions:
    first = np.where(np.arange(6) < 3, FINAL, (FINAL + 1) % 3)  # epoch 1: half the answers shifted
    pred = np.stack([first, FINAL], axis=1).astype(np.int16)
    conf = np.stack([CONF, CONF], axis=1).astype(np.float32)
    return an.Predictions(rows=[0, 1, 2], pred=pred, conf=conf, labels=LABELS, n_classes=3)


def test_attempt_counts_use_at_least_and_count_each_trials_last_attempt() -> None:
    acc = np.array([[0.79, 0.80], [0.95, 1.0], [0.9, np.nan]])  # trial 2 trained one epoch
    rows = an.attempt_counts(acc)
    assert rows[0] == {"attempt": "1", "trials": 3, "80%": 2, "90%": 2, "95%": 1, "99%": 0, "100%": 0}
    assert rows[1] == {"attempt": "2", "trials": 2, "80%": 2, "90%": 1, "95%": 1, "99%": 1, "100%": 1}
    assert rows[2]["attempt"] == "last" and rows[2]["trials"] == 3 and rows[2]["90%"] == 2


def test_leaders_order_groups_by_median_with_spread() -> None:
    result = an.leaders(["a", "a", "b", "b", "b"], ["x", "y", "x", "y", "y"], [0.5, 0.7, 0.9, 0.8, 1.0])
    assert [r["group"] for r in result["family"]] == ["b", "a"]
    assert result["family"][0]["median"] == pytest.approx(0.9)
    assert result["family"][1]["spread"] == pytest.approx(0.1)  # q3 0.65 - q1 0.55
    assert result["activation"][0]["group"] == "y" and result["activation"][0]["n"] == 3


def test_gold_stars_need_the_floor_every_time_and_the_top_at_the_end() -> None:
    acc = np.array([[0.85, 0.99], [0.75, 0.99], [0.9, 0.95], [0.81, np.nan]])
    assert an.gold_stars(acc, 0.8, 0.98).tolist() == [True, False, False, False]
    assert an.gold_stars(acc, 0.8, 0.81).tolist() == [True, False, True, True]


def test_costs_by_family_list_gold_star_values() -> None:
    costs = {"params": np.array([100.0, 10.0, 30.0])}
    out = an.costs_by_family(["a", "b", "a"], costs, np.array([False, True, False]), [5, 6, 7])
    assert [r["group"] for r in out["params"]["by_family"]] == ["b", "a"]  # cheapest median first
    assert out["params"]["by_family"][1]["median"] == 65.0
    assert out["params"]["gold"] == [{"trial": 6, "family": "b", "value": 10.0}]


def test_late_bloomer_is_poor_early_and_good_late() -> None:
    acc = np.array([[0.5, 0.5, 0.9, 0.95],   # the late bloomer
                    [0.8, 0.85, 0.86, 0.87],
                    [0.9, 0.91, 0.92, 0.93],
                    [0.7, 0.72, 0.74, 0.75]])
    out = an.epoch_changes(acc, [1, 2, 3, 4])
    assert [b["trial"] for b in out["late_bloomers"]] == [1]
    assert out["late_bloomers"][0]["early"] == pytest.approx(0.5)
    assert out["biggest_gains"][0] == {"trial": 1, "first": 0.5, "last": 0.95, "gain": pytest.approx(0.45)}
    assert out["per_attempt"][2]["median"] == pytest.approx(0.88)  # of .74 .86 .90 .92
    assert an.epoch_changes(acc[:, :1], [1, 2, 3, 4])["late_bloomers"] == []


def test_easy_weird_and_confusing_samples() -> None:
    out = an.sample_difficulty(FINAL, CONF, LABELS, 3)
    assert (out["easy"], out["weird"], out["confusing"]) == (3, 1, 1)
    weird = out["weird_samples"][0]
    assert weird == {"index": 2, "label": 2, "common_wrong": 0, "share": 1.0,
                     "confidence": pytest.approx(0.95), "possible_label_error": True}
    confusing = out["confusing_samples"][0]
    assert confusing["index"] == 4 and confusing["label"] == 1
    assert confusing["right"] == pytest.approx(1 / 3) and len(confusing["answers"]) == 3
    assert out["possible_label_errors"] == 1
    unsure = an.sample_difficulty(FINAL, np.full(FINAL.shape, 0.5), LABELS, 3)
    assert unsure["possible_label_errors"] == 0 and unsure["weird"] == 1


def test_weird_needs_more_than_ninety_percent_agreeing() -> None:
    labels = np.array([0])
    nine_of_ten = np.array([[1]] * 9 + [[2]])
    assert an.sample_difficulty(nine_of_ten, np.ones((10, 1)), labels, 3)["weird"] == 0  # 90% is not > 90%
    assert an.sample_difficulty(np.array([[1]] * 10), np.ones((10, 1)), labels, 3)["weird"] == 1


def test_best_trial_percentile_per_class() -> None:
    labels = np.array([0, 0, 1, 1])
    final = np.array([[0, 0, 1, 0],    # best overall (3/4), 100% on class 0, 50% on class 1
                      [0, 1, 1, 1],    # 3/4, but 100% on class 1
                      [1, 1, 0, 0]])   # 0/4
    best = an.best_row(np.array([0.9, 0.8, 0.1]), np.array([0.75, 0.75, 0.0]), [0, 1, 2])
    out = an.best_per_class(final, labels, 2, best, [0, 1, 2], ["zero", "one"])
    assert out["trial"] == 0 and not out["best_everywhere"]
    assert out["classes"][0] == {"class": "zero", "accuracy": 1.0, "percentile": 100.0,
                                 "best_accuracy": 1.0, "best_trial": 0}
    assert out["classes"][1]["percentile"] == pytest.approx(200 / 3)  # matches itself, beats trial 2
    assert out["classes"][1]["best_trial"] == 1


def test_ensembles_majority_and_confidence_weighted_votes() -> None:
    # smallest first: trial 2 (1 param), trial 0 (10), trial 1 (100)
    out = an.ensembles(FINAL, CONF, LABELS, 3, [0, 1, 2], np.array([0.6, 0.9, 0.5]),
                       {"params": np.array([10.0, 100.0, 1.0]), "memory": np.array([1.0, 1.0, 1.0]),
                        "train_time": np.array([2.0, 3.0, 4.0])}, best=1)
    assert out["best"] == {"trial": 1, "accuracy": pytest.approx(5 / 6), "params": 100.0, "memory": 1.0,
                           "train_time": 3.0}
    rows = {r["k"]: r for r in out["orders"]["smallest"]["rows"]}
    assert rows[1]["members"] == [2] and rows[1]["majority"] == pytest.approx(3 / 6)
    assert rows[2]["majority"] == pytest.approx(3 / 6)  # ties go to the lowest class: both wrong
    assert rows[3]["majority"] == pytest.approx(4 / 6)  # sample 4 still a three-way tie
    assert rows[3]["weighted"] == pytest.approx(5 / 6)  # trial 1's confidence settles sample 4
    assert rows[3]["params"] == 111.0 and rows[3]["train_time"] == 9.0
    match = out["orders"]["smallest"]["first_to_match"]
    assert match["majority"] is None and match["weighted"]["k"] == 3


def test_pareto_layers_put_the_front_first_cheapest_first() -> None:
    acc = np.array([0.9, 0.8, 0.95, 0.7, 0.85])
    cost = np.array([10.0, 5.0, 100.0, 1.0, 50.0])
    assert an.pareto_layers(acc, cost) == [3, 1, 0, 2, 4]


def test_answer_covers_every_question_with_predictions() -> None:
    out = an.answer(_trials([0.6, 0.9, 0.5], [10.0, 100.0, 1.0]), _predictions(), split="val",
                    class_names=["a", "b", "c"], gold_top=0.8)
    assert out["needs_predictions"] == [] and out["with_predictions"] == 3
    assert out["q1_attempts"][1]["80%"] == 1  # only trial 1 reaches 5/6 at the last attempt
    assert out["gold_stars"]["trials"] == []  # trial 1 was below 80% at attempt 1
    assert out["q2_leaders"]["family"][0]["group"] == "conv2d"
    assert out["q8_samples"]["weird_samples"][0]["index"] == 2
    assert out["q9_best_per_class"]["trial"] == 11
    assert set(out["q3_6_costs"]) == set(an.COSTS)


def test_answer_without_predictions_says_which_questions_need_them() -> None:
    out = an.answer(_trials([0.85, 0.99, 0.5], [10.0, 100.0, 1.0]), None, split="test",
                    class_names=[])
    assert out["needs_predictions"] == ["q8_samples", "q9_best_per_class", "q10_ensembles"]
    assert out["accuracy_source"].startswith("validation")
    assert out["q1_attempts"][0]["trials"] == 3 and out["q1_attempts"][0]["80%"] == 1
    assert out["gold_stars"]["trials"] == [11]  # 0.89 then 0.99
    assert "q8_samples" not in out and math.isnan(_trials([0.5], [1.0])[0].split_accuracy)


def test_final_model_test_predictions_answer_from_validation_attempts() -> None:
    """Test predictions kept for the final model only: attempts are the per-epoch validation
    accuracy, the final answers (questions 2, 8-10) the test split's."""
    final_only = _predictions()
    final_only = an.Predictions(rows=final_only.rows, pred=final_only.pred[:, -1:],
                                conf=final_only.conf[:, -1:], labels=LABELS, n_classes=3,
                                per_epoch=False)
    trials = [an.TrialInfo(**{**t.__dict__, "split_accuracy": a})
              for t, a in zip(_trials([0.85, 0.99, 0.5], [10.0, 100.0, 1.0]), (4 / 6, 5 / 6, 3 / 6),
                              strict=True)]
    out = an.answer(trials, final_only, split="test", class_names=["a", "b", "c"])
    assert (out["attempts_split"], out["final_split"]) == ("val", "test")
    assert out["accuracy_source"].startswith("validation accuracy stored per epoch (test predictions")
    assert [r["attempt"] for r in out["q1_attempts"]] == ["1", "2", "last"]  # two validation epochs
    assert out["gold_stars"]["trials"] == [11]  # from validation: 0.89 then 0.99
    assert out["q8_samples"]["weird_samples"][0]["index"] == 2  # from the final test answers
    assert out["q10_ensembles"]["best"]["accuracy"] == pytest.approx(5 / 6)  # trial 1 on test
