"""Cross-trial analysis: the ten questions of the 1001-networks study, answered for any classification study.

the 1001-networks study treats trained networks as students sitting an exam several times (once per epoch) and
asks questions across all of them. Every function here is pure: it takes numpy arrays (predicted
class per trial x epoch x sample, labels, per-trial metadata) and returns plain data (dicts, lists
of numbers), so each answer is tested on hand-built arrays and serialized to JSON as it is.
`automl_nn.predictions` reads a study into these arrays; `automl_nn.analysis_page` draws them.

Conventions. "Accuracy at attempt k" is the accuracy after epoch k. A trial's final answers are
those of its last trained epoch. The best trial is chosen by validation accuracy (the search
objective) even when the test split is analysed, so the test split never picks what it judges.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

THRESHOLDS = (0.80, 0.90, 0.95, 0.99, 1.00)  # The 1001-networks study's table of attempts
GOLD_FLOOR = 0.80  # a "good student": at least this at every attempt
GOLD_TOP = 0.98  # a gold star: good, and at least this at the last attempt
WEIRD_SHARE = 0.9  # more than this share of trials give the same wrong answer
LABEL_ERROR_CONFIDENCE = 0.8  # ...with at least this mean confidence: the label may be wrong
EARLY_QUANTILE = 0.25  # "poor early": early accuracy in the bottom quarter of trials
LATE_QUANTILE = 0.75  # "good late": last accuracy in the top quarter
LIST_LIMIT = 200  # samples listed per kind in the JSON (the counts are always complete)
COSTS = ("train_time", "params", "memory", "ops")  # questions 3 to 6, in the study's order
ENSEMBLE_COSTS = ("params", "memory", "train_time")
MISSING = -1  # predicted class of an epoch a trial did not train
EPS = 1e-9  # accuracies are ratios of counts; 0.8 must count as >= 80%


@dataclass(frozen=True)
class TrialInfo:
    """A trial's metadata: identity, architecture labels, costs, and its stored accuracies."""

    number: int
    family: str
    activation: str
    costs: dict[str, float] = field(default_factory=dict)  # params, memory, ops, flops, train_time
    val_curve: list[float] = field(default_factory=list)  # validation accuracy after each epoch
    val_accuracy: float = math.nan  # the search objective's accuracy (last epoch, validation)
    split_accuracy: float = math.nan  # the analysed split's final accuracy, as the trial stored it


@dataclass(frozen=True)
class Predictions:
    """Stored predictions of the trials that kept them, on one split."""

    rows: list[int]  # index into the trial list for each row below
    pred: np.ndarray  # (trials, epochs, samples) class index; MISSING for epochs not trained
    conf: np.ndarray  # (trials, epochs, samples) top-class probability; NaN where missing
    labels: np.ndarray  # (samples,) true class
    n_classes: int
    # False: one row per trial, its final model's answers (test predictions not kept per epoch);
    # the attempts (questions 1 and 7) then come from the per-epoch validation accuracy
    per_epoch: bool = True


# ---- shared helpers ------------------------------------------------------------------------------


def accuracy_by_epoch(pred: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(trials, epochs) accuracy; NaN for epochs a trial did not train."""
    trained = pred[:, :, 0] != MISSING
    acc = (pred == labels[None, None, :]).mean(axis=2)
    return np.where(trained, acc, np.nan)


def curve_matrix(curves: Sequence[Sequence[float]]) -> np.ndarray:
    """Per-trial accuracy curves of different lengths as one NaN-padded (trials, epochs) array."""
    width = max((len(c) for c in curves), default=0)
    out = np.full((len(curves), max(width, 1)), np.nan)
    for i, curve in enumerate(curves):
        out[i, :len(curve)] = curve
    return out


def last_index(acc: np.ndarray) -> np.ndarray:
    """Index of each row's last trained epoch (-1 for a row with none)."""
    out: np.ndarray = np.sum(~np.isnan(acc), axis=1) - 1
    return out


def last_value(acc: np.ndarray) -> np.ndarray:
    """Each row's accuracy at its last trained epoch (NaN for a row with none)."""
    idx = last_index(acc)
    values = acc[np.arange(acc.shape[0]), np.maximum(idx, 0)]
    return np.where(idx >= 0, values, np.nan)


def final_answers(preds: Predictions) -> tuple[np.ndarray, np.ndarray]:
    """(trials, samples) predicted class and confidence at each trial's last trained epoch."""
    idx = np.sum(preds.pred[:, :, 0] != MISSING, axis=1) - 1
    rows = np.arange(preds.pred.shape[0])
    return preds.pred[rows, idx].astype(np.int64), preds.conf[rows, idx].astype(np.float64)


def _num(value: float) -> float | None:
    """A JSON-safe number: NaN becomes None."""
    return None if value is None or not math.isfinite(float(value)) else float(value)


def _label(threshold: float) -> str:
    return f"{threshold * 100:g}%"


def stats(values: Sequence[float] | np.ndarray) -> dict[str, Any]:
    """Count, median, quartiles, spread (inter-quartile range), min, max and mean of finite values."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return {"n": 0, "median": None, "q1": None, "q3": None, "spread": None,
                "min": None, "max": None, "mean": None}
    q1, median, q3 = np.percentile(v, [25, 50, 75])
    return {"n": int(v.size), "median": float(median), "q1": float(q1), "q3": float(q3),
            "spread": float(q3 - q1), "min": float(v.min()), "max": float(v.max()),
            "mean": float(v.mean())}


def group_stats(groups: Sequence[str], values: Sequence[float] | np.ndarray,
                descending: bool = True) -> list[dict[str, Any]]:
    """`stats` per group, ordered by median (best first when `descending`); empty groups last."""
    v = np.asarray(values, dtype=float)
    rows = [{"group": g, **stats(v[[x == g for x in groups]])} for g in sorted(set(groups))]
    sign = -1.0 if descending else 1.0
    return sorted(rows, key=lambda r: (r["median"] is None, sign * (r["median"] or 0.0), r["group"]))


# ---- 1. how did the students do over the attempts? -----------------------------------------------


def attempt_counts(acc: np.ndarray, thresholds: Sequence[float] = THRESHOLDS) -> list[dict[str, Any]]:
    """Per attempt (epoch): trials that took it, and how many scored at least each threshold.

    A last row, "last", counts each trial at its own last attempt (trials may train different
    numbers of epochs).
    """
    columns = [(str(e + 1), acc[:, e]) for e in range(acc.shape[1])] + [("last", last_value(acc))]
    rows = []
    for attempt, col in columns:
        col = col[~np.isnan(col)]
        rows.append({"attempt": attempt, "trials": int(col.size),
                     **{_label(t): int(np.sum(col >= t - EPS)) for t in thresholds}})
    return rows


# ---- 2. which strategy leads? --------------------------------------------------------------------


def leaders(families: Sequence[str], activations: Sequence[str],
            accuracy: Sequence[float] | np.ndarray) -> dict[str, list[dict[str, Any]]]:
    """Final accuracy by family and by activation: distributions, best median first."""
    return {"family": group_stats(families, accuracy), "activation": group_stats(activations, accuracy)}


# ---- gold stars, and 3-6. what did it cost? ------------------------------------------------------


def gold_stars(acc: np.ndarray, floor: float = GOLD_FLOOR, top: float = GOLD_TOP) -> np.ndarray:
    """Trials at or above `floor` at every attempt they took and at or above `top` at the last."""
    trained = ~np.isnan(acc)
    every = np.all(np.where(trained, acc >= floor - EPS, True), axis=1) & trained.any(axis=1)
    out: np.ndarray = every & (np.nan_to_num(last_value(acc), nan=-1.0) >= top - EPS)
    return out


def costs_by_family(families: Sequence[str], costs: dict[str, np.ndarray], gold: np.ndarray,
                    numbers: Sequence[int]) -> dict[str, dict[str, Any]]:
    """Each cost's distribution per family (cheapest median first), with the gold stars' values."""
    out = {}
    for name, values in costs.items():
        stars = [{"trial": int(numbers[i]), "family": families[i], "value": _num(values[i])}
                 for i in map(int, np.flatnonzero(gold)) if math.isfinite(values[i])]
        out[name] = {"by_family": group_stats(families, values, descending=False), "gold": stars}
    return out


# ---- 7. how did the scores change over the attempts? ---------------------------------------------


def early_accuracy(acc: np.ndarray) -> np.ndarray:
    """Mean accuracy over the first half of each trial's attempts (at least the first one)."""
    n = np.sum(~np.isnan(acc), axis=1)
    out = np.full(acc.shape[0], np.nan)
    for i, epochs in enumerate(n):
        if epochs >= 2:  # a one-epoch trial has no "early" distinct from its last
            out[i] = float(np.mean(acc[i, :max(1, int(epochs) // 2)]))
    return out


def epoch_changes(acc: np.ndarray, numbers: Sequence[int], early_q: float = EARLY_QUANTILE,
                  late_q: float = LATE_QUANTILE, top: int = 10) -> dict[str, Any]:
    """Accuracy per attempt, the biggest gains, and trials poor early but good late.

    Poor early: mean accuracy over the first half of its attempts in the bottom `early_q` of trials.
    Good late: last accuracy in the top `late_q` of trials, and better than early.
    """
    per_attempt = [{"attempt": e + 1, **stats(acc[:, e])} for e in range(acc.shape[1])]
    early, last = early_accuracy(acc), last_value(acc)
    first = acc[:, 0]
    gain = last - first
    has = np.isfinite(early)
    result: dict[str, Any] = {"per_attempt": per_attempt, "late_bloomers": [], "biggest_gains": []}
    if not has.any():
        result["note"] = "every trial trained a single epoch: there is no change across attempts."
        return result
    poor_below = float(np.quantile(early[has], early_q))
    good_above = float(np.quantile(last[has], late_q))
    bloom = has & (early <= poor_below + EPS) & (last >= good_above - EPS) & (last > early)
    order = np.argsort(-np.where(bloom, last - early, -np.inf), kind="stable")
    result["late_bloomers"] = [
        {"trial": int(numbers[i]), "early": float(early[i]), "last": float(last[i]),
         "gain": float(last[i] - early[i])} for i in order if bloom[i]]
    by_gain = [i for i in np.argsort(-np.nan_to_num(gain, nan=-np.inf), kind="stable") if has[i]][:top]
    result["biggest_gains"] = [{"trial": int(numbers[i]), "first": float(first[i]),
                                "last": float(last[i]), "gain": float(gain[i])} for i in by_gain]
    result["thresholds"] = {"poor_early_at_most": poor_below, "good_last_at_least": good_above}
    return result


# ---- 8. easy, weird and confusing questions ------------------------------------------------------


def votes(final_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """(samples, classes): how many trials gave each answer to each sample."""
    n = final_pred.shape[1]
    flat = (np.arange(n)[None, :] * n_classes + final_pred).ravel()
    return np.bincount(flat, minlength=n * n_classes).reshape(n, n_classes)


def sample_difficulty(final_pred: np.ndarray, final_conf: np.ndarray, labels: np.ndarray,
                      n_classes: int, weird_share: float = WEIRD_SHARE,
                      label_error_confidence: float = LABEL_ERROR_CONFIDENCE) -> dict[str, Any]:
    """Easy samples (every trial right), weird ones, confusing ones, and possible label errors.

    Weird: more than `weird_share` of the trials give the same wrong answer. Confusing: no answer
    (right or wrong) has a majority, i.e. more than half of the trials. A weird sample whose common
    wrong answer comes with a mean confidence of at least `label_error_confidence` is flagged as a
    possible label error: many networks, sure of themselves, agree against the label.
    """
    n_trials = final_pred.shape[0]
    count = votes(final_pred, n_classes)
    samples = np.arange(labels.shape[0])
    right = count[samples, labels]
    wrong = count.copy()
    wrong[samples, labels] = 0
    common_wrong, common_n = wrong.argmax(axis=1), wrong.max(axis=1)
    easy = right == n_trials
    weird = common_n > weird_share * n_trials
    confusing = count.max(axis=1) * 2 <= n_trials
    weird_rows = [_weird_row(j, final_pred, final_conf, labels, common_wrong, common_n, n_trials,
                             label_error_confidence) for j in map(int, np.flatnonzero(weird))]
    confusing_rows = [_confusing_row(j, count, labels, n_trials)
                      for j in map(int, np.flatnonzero(confusing))]
    return {
        "trials": n_trials, "samples": int(labels.shape[0]), "easy": int(easy.sum()),
        "weird": len(weird_rows), "confusing": len(confusing_rows),
        "possible_label_errors": sum(r["possible_label_error"] for r in weird_rows),
        "weird_samples": weird_rows[:LIST_LIMIT], "confusing_samples": confusing_rows[:LIST_LIMIT],
    }


def _weird_row(j: int, final_pred: np.ndarray, final_conf: np.ndarray, labels: np.ndarray,
               common_wrong: np.ndarray, common_n: np.ndarray, n_trials: int,
               threshold: float) -> dict[str, Any]:
    agreeing = final_pred[:, j] == common_wrong[j]
    confidence = float(np.nanmean(final_conf[agreeing, j]))
    return {"index": int(j), "label": int(labels[j]), "common_wrong": int(common_wrong[j]),
            "share": float(common_n[j] / n_trials), "confidence": _num(confidence),
            "possible_label_error": bool(confidence >= threshold)}


def _confusing_row(j: int, count: np.ndarray, labels: np.ndarray, n_trials: int) -> dict[str, Any]:
    order = np.argsort(-count[j], kind="stable")[:3]
    return {"index": int(j), "label": int(labels[j]), "right": float(count[j, labels[j]] / n_trials),
            "answers": [{"class": int(c), "share": float(count[j, c] / n_trials)}
                        for c in order if count[j, c] > 0]}


# ---- 9. is the best student the best at every class? ---------------------------------------------


def best_row(val_accuracy: np.ndarray, split_accuracy: np.ndarray, numbers: Sequence[int]) -> int:
    """The best trial: highest validation accuracy; ties go to the analysed split, then the lower number."""
    val = np.nan_to_num(np.asarray(val_accuracy, dtype=float), nan=-np.inf)
    split = np.nan_to_num(np.asarray(split_accuracy, dtype=float), nan=-np.inf)
    return int(np.lexsort((np.asarray(numbers), -split, -val))[0])


def per_class_accuracy(final_pred: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """(trials, classes) accuracy on each class's samples; NaN for a class with no sample."""
    correct = final_pred == labels[None, :]
    out = np.full((final_pred.shape[0], n_classes), np.nan)
    for c in range(n_classes):
        members = labels == c
        if members.any():
            out[:, c] = correct[:, members].mean(axis=1)
    return out


def best_per_class(final_pred: np.ndarray, labels: np.ndarray, n_classes: int, best: int,
                   numbers: Sequence[int], class_names: Sequence[str]) -> dict[str, Any]:
    """The best trial's percentile on each class: the share of trials it matches or beats there.

    100 means no trial is better on that class; the best overall is the best everywhere only if
    every class reads 100.
    """
    acc = per_class_accuracy(final_pred, labels, n_classes)
    rows: list[dict[str, Any]] = []
    for c in range(n_classes):
        column = acc[:, c]
        if np.isnan(column[best]):
            continue
        leader = int(np.nanargmax(column))
        rows.append({"class": class_names[c] if c < len(class_names) else str(c),
                     "accuracy": float(column[best]),
                     "percentile": float(100.0 * np.mean(column <= column[best] + EPS)),
                     "best_accuracy": float(column[leader]), "best_trial": int(numbers[leader])})
    return {"trial": int(numbers[best]), "classes": rows,
            "best_everywhere": all(r["percentile"] >= 100.0 - EPS for r in rows)}


# ---- 10. ensembles of small networks against the best one ----------------------------------------


def ensemble_sizes(n: int) -> list[int]:
    """1, 2, 3, 5, 7, 10, 15, 20, 30, 50, 70, 100, ... up to n, and n itself."""
    sizes, decade = {n}, 1
    while decade <= n:
        sizes |= {int(s * decade) for s in (1, 1.5, 2, 3, 5, 7) if s * decade <= n}
        decade *= 10
    return sorted(sizes)


def vote_accuracy(members_pred: np.ndarray, members_conf: np.ndarray, labels: np.ndarray,
                  n_classes: int, sizes: Sequence[int]) -> dict[int, tuple[float, float]]:
    """Accuracy of the first k members' majority vote and confidence-weighted vote, per k in sizes.

    Majority vote: the most frequent answer (ties to the lowest class index). Confidence-weighted
    vote: the class with the largest sum of top-class probabilities: what "mean probability" means
    here, since only each member's top-class probability is stored.
    """
    samples = np.arange(labels.shape[0])
    count = np.zeros((labels.shape[0], n_classes))
    weight = np.zeros_like(count)
    out = {}
    wanted = set(sizes)
    for k in range(members_pred.shape[0]):
        count[samples, members_pred[k]] += 1.0
        weight[samples, members_pred[k]] += np.nan_to_num(members_conf[k])
        if k + 1 in wanted:
            out[k + 1] = (float(np.mean(count.argmax(axis=1) == labels)),
                          float(np.mean(weight.argmax(axis=1) == labels)))
    return out


def pareto_layers(accuracy: np.ndarray, cost: np.ndarray) -> list[int]:
    """Indices in non-dominated layers of (accuracy up, cost down); cheapest first within a layer."""
    acc = np.nan_to_num(np.asarray(accuracy, dtype=float), nan=-np.inf)
    cst = np.nan_to_num(np.asarray(cost, dtype=float), nan=np.inf)
    left = list(np.lexsort((-acc, cst)))  # by cost, then best accuracy first
    order: list[int] = []
    while left:
        layer: list[int] = []
        rest: list[int] = []
        best = -np.inf
        for i in left:
            (layer if acc[i] > best else rest).append(int(i))
            best = max(best, acc[i])
        order += layer
        left = rest
    return order


def ensembles(final_pred: np.ndarray, final_conf: np.ndarray, labels: np.ndarray, n_classes: int,
              numbers: Sequence[int], val_accuracy: np.ndarray, costs: dict[str, np.ndarray],
              best: int) -> dict[str, Any]:
    """Ensembles of the k smallest trials and of the k best-per-cost, against the single best trial.

    Smallest: by parameter count. Best per cost: Pareto layers of validation accuracy against
    parameters. Each row gives both votes' accuracy and the members' total params, memory and
    training time; `first_to_match` is the smallest ensemble that reaches the best trial's accuracy.
    """
    split_acc = (final_pred == labels[None, :]).mean(axis=1)
    params = costs.get("params", np.full(len(numbers), np.nan))
    orders = {"smallest": [int(i) for i in np.lexsort((np.asarray(numbers), np.nan_to_num(
                  params, nan=np.inf)))],
              "best_per_cost": pareto_layers(val_accuracy, params)}
    sizes = ensemble_sizes(len(numbers))
    target = float(split_acc[best])
    best_row_info: dict[str, Any] = {"trial": int(numbers[best]), "accuracy": target,
                     **{c: _num(costs[c][best]) for c in ENSEMBLE_COSTS if c in costs}}
    result: dict[str, Any] = {"best": best_row_info, "sizes": sizes, "orders": {}}
    for name, order in orders.items():
        accs = vote_accuracy(final_pred[order], final_conf[order], labels, n_classes, sizes)
        rows: list[dict[str, Any]] = [{"k": k, "majority": accs[k][0], "weighted": accs[k][1],
                 "members": [int(numbers[i]) for i in order[:k]][:20],
                 **{c: _num(np.nansum(costs[c][order[:k]])) for c in ENSEMBLE_COSTS if c in costs}}
                for k in sizes]
        result["orders"][name] = {"rows": rows, "first_to_match": {
            vote: next((r for r in rows if r[vote] >= target - EPS), None)
            for vote in ("majority", "weighted")}}
    return result


# ---- all questions -------------------------------------------------------------------------------


def epoch_accuracy(trials: Sequence[TrialInfo], preds: Predictions | None,
                   split: str) -> tuple[np.ndarray, str]:
    """Per-epoch accuracy for questions 1 and 7, and where it comes from.

    From stored predictions on the analysed split where trials kept them per epoch; from the
    trials' own per-epoch validation accuracy otherwise (for the test split when no trial kept
    test predictions per epoch).
    """
    if preds is None:
        return curve_matrix([t.val_curve for t in trials]), "validation accuracy stored per epoch"
    if not preds.per_epoch:
        return (curve_matrix([t.val_curve for t in trials]),
                f"validation accuracy stored per epoch ({split} predictions were kept for the final "
                "model only; a study with test_each_epoch: true keeps them per epoch)")
    from_preds = accuracy_by_epoch(preds.pred, preds.labels)
    curves: list[list[float]] = [[] for _ in trials]
    if split == "val":
        curves = [list(t.val_curve) for t in trials]
    for row, i in enumerate(preds.rows):
        curves[i] = [float(a) for a in from_preds[row] if not math.isnan(a)]
    return curve_matrix(curves), f"{split} accuracy from stored predictions"


def answer(trials: Sequence[TrialInfo], preds: Predictions | None, *, split: str,
           class_names: Sequence[str], gold_top: float = GOLD_TOP) -> dict[str, Any]:
    """Every question's answer as plain data; questions 8-10 say so when predictions are missing."""
    numbers = [t.number for t in trials]
    acc, source = epoch_accuracy(trials, preds, split)
    final = np.array([t.split_accuracy for t in trials])
    if source.startswith(split):  # the curves are on the analysed split: their end is exact
        final = np.where(np.isnan(last_value(acc)), final, last_value(acc))
    gold = gold_stars(acc, GOLD_FLOOR, gold_top)
    families = [t.family for t in trials]
    costs = {c: np.array([t.costs.get(c, np.nan) for t in trials]) for c in COSTS}
    out: dict[str, Any] = {
        "split": split, "trials": len(trials), "with_predictions": 0 if preds is None else len(preds.rows),
        "accuracy_source": source,
        # the split behind the attempts (questions 1, 7 and the gold stars) and behind the final
        # answers (questions 2 and 8-10): they differ when the split kept no per-epoch predictions
        "attempts_split": split if source.startswith(split) else "val",
        "final_split": split,
        "q1_attempts": attempt_counts(acc),
        "q2_leaders": leaders(families, [t.activation for t in trials], final),
        "gold_stars": {"floor": GOLD_FLOOR, "top": gold_top,
                       "trials": [n for n, g in zip(numbers, gold, strict=True) if g]},
        "q3_6_costs": costs_by_family(families, costs, gold, numbers),
        "q7_epochs": {**epoch_changes(acc, numbers), "curves": [
            {"trial": n, "accuracy": [float(a) for a in row if not math.isnan(a)]}
            for n, row in zip(numbers, acc, strict=True)]},
        "needs_predictions": [],
    }
    if preds is None or not preds.rows:
        out["needs_predictions"] = ["q8_samples", "q9_best_per_class", "q10_ensembles"]
        return out
    out.update(prediction_answers(trials, preds, class_names))
    return out


def prediction_answers(trials: Sequence[TrialInfo], preds: Predictions,
                       class_names: Sequence[str]) -> dict[str, Any]:
    """Questions 8-10, over the trials that kept predictions."""
    subset = [trials[i] for i in preds.rows]
    numbers = [t.number for t in subset]
    final_pred, final_conf = final_answers(preds)
    split_acc = (final_pred == preds.labels[None, :]).mean(axis=1)
    val_acc = np.array([t.val_accuracy for t in subset])
    best = best_row(val_acc, split_acc, numbers)
    costs = {c: np.array([t.costs.get(c, np.nan) for t in subset]) for c in ENSEMBLE_COSTS}
    return {
        "q8_samples": sample_difficulty(final_pred, final_conf, preds.labels, preds.n_classes),
        "q9_best_per_class": best_per_class(final_pred, preds.labels, preds.n_classes, best, numbers,
                                            class_names),
        "q10_ensembles": ensembles(final_pred, final_conf, preds.labels, preds.n_classes, numbers,
                                   val_acc, costs, best),
    }
