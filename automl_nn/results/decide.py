"""Pareto decision support: the knee of the front, and one named trial to export.

The knee point. Each objective is min-max normalized over the front and oriented so that 0 is the
best value on the front and 1 the worst. On a two-objective front the two extremes then sit at
(0, 1) and (1, 0), and the knee is the front point farthest below the line through them, i.e. the
point that maximizes (1 - sum of its normalized values) / sqrt(m). For m > 2 objectives the same
formula measures the distance to the hyperplane through the normalized extremes (Das 1999;
Branke et al. 2004). It is the trade-off where giving up a little of one objective buys the most of
the others. Ties go to the better first objective, then to the lower trial number.

Picks. `knee`, or `max-<metric>` / `min-<metric>` in the metric's own direction (`max-accuracy`,
`max-acc`, `min-params`, `min-flops`, ...): the front trial with the best value of that metric.
A metric that is not an objective is read from the trials' user attributes, so `min-flops` works on
an accuracy-vs-params study and returns the front trial with the fewest FLOPs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import optuna
from optuna.trial import FrozenTrial

from automl_nn import vocab
from automl_nn.errors import UsageError, unknown_name
from automl_nn.storage import record
from automl_nn.storage.record import TrialRecord
from automl_nn.study import objective_names

KNEE = "knee"


class PickError(UsageError):
    """A `--pick` that names no known rule, or that no front trial can answer."""


def normalized(points: Sequence[Sequence[float]], maximize: Sequence[bool]) -> list[list[float]]:
    """Min-max normalize each objective over `points`, oriented so 0 is best and 1 is worst.

    An objective that takes one value on the whole front contributes 0 everywhere (it decides nothing).
    """
    columns = list(zip(*points, strict=True)) if points else []
    out: list[list[float]] = [[] for _ in points]
    for column, is_max in zip(columns, maximize, strict=True):
        low, high = min(column), max(column)
        span = high - low
        for row, value in zip(out, column, strict=True):
            share = (value - low) / span if span > 0 else 0.0
            row.append(1.0 - share if is_max else share)
    return out


def knee_distances(points: Sequence[Sequence[float]], maximize: Sequence[bool]) -> list[float]:
    """Signed distance of each point below the hyperplane through the normalized extremes."""
    scaled = normalized(points, maximize)
    return [(1.0 - sum(row)) / math.sqrt(len(row)) if row else 0.0 for row in scaled]


def knee_index(points: Sequence[Sequence[float]], maximize: Sequence[bool]) -> int:
    """Index of the knee among `points` (the objective vectors of a front); see the module docstring."""
    if not points:
        raise ValueError("the knee of an empty front is undefined")
    distances = knee_distances(points, maximize)
    first = [row[0] if maximize[0] else -row[0] for row in points]
    return max(range(len(points)), key=lambda i: (round(distances[i], 12), first[i], -i))


def _maximize(study: optuna.Study) -> list[bool]:
    return [d == optuna.study.StudyDirection.MAXIMIZE for d in study.directions]


def knee(study: optuna.Study, best: Sequence[FrozenTrial] | None = None) -> FrozenTrial | None:
    """The knee trial of the study's front (the best trial when there is one objective), or None.
    `best`: the front, when it has been read already."""
    best = record.read_front(study) if best is None else best
    if not best:
        return None
    return best[knee_index([list(t.values) for t in best], _maximize(study))]


def valid_picks() -> list[str]:
    """Every name `pick` accepts: knee, then one max-/min- rule per metric (aliases included)."""
    names = [KNEE]
    for name, info in vocab.METRICS.items():
        names.append(f"{info.direction[:3]}-{name}")
    names.append("max-acc")  # the alias users type; `accuracy` is registered with alias `acc`
    return names


def _rule_key(rule: str) -> str:
    """`min-train-time` and `min-train_time` are the same rule."""
    head, _, tail = rule.strip().lower().partition("-")
    return f"{head}-{tail.replace('-', '_')}" if tail else head


def metric_value(trial: FrozenTrial, metric: str, names: Sequence[str]) -> float | None:
    """The trial's value of `metric`: its objective value if it is one, else its user attribute."""
    if metric in names and trial.values is not None:
        return float(trial.values[list(names).index(metric)])
    return TrialRecord.of(trial).metrics.get(metric)


def pick(study: optuna.Study, rule: str) -> FrozenTrial:
    """The front trial that `rule` (knee, max-accuracy, min-params, ...) names."""
    valid = valid_picks()
    key = _rule_key(rule)
    if key not in valid:
        raise unknown_name("pick", rule, valid, "--pick", error=PickError)
    best = record.read_front(study)
    if not best:
        raise PickError(f'study "{study.study_name}" has no completed trials yet, so there is no '
                        "front to pick from. Run `automl-nn search` first.")
    if key == KNEE:
        return best[knee_index([list(t.values) for t in best], _maximize(study))]
    return _best_by_metric(study, best, key)


def _best_by_metric(study: optuna.Study, best: list[FrozenTrial], rule: str) -> FrozenTrial:
    metric = vocab.METRICS.canonical(rule.split("-", 1)[1])
    names = objective_names(study)
    scored = [(value, t) for t in best if (value := metric_value(t, metric, names)) is not None]
    if not scored:
        raise PickError(f'--pick {rule}: no trial on the front of "{study.study_name}" recorded '
                        f'"{metric}". Pick by one of its objectives ({", ".join(names)}) or knee.')
    sign = 1.0 if rule.startswith("min-") else -1.0
    return min(scored, key=lambda pair: (sign * pair[0], pair[1].number))[1]
