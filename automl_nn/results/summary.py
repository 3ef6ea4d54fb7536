"""Plain-data summaries of a study for `show`, `pareto` and `studies` (the CLI renders them)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from automl_nn import vocab
from automl_nn.config import RULES, ByOption, Range, failure_budget, parse_param
from automl_nn.results import decide
from automl_nn.storage import record
from automl_nn.storage.record import TrialRecord
from automl_nn.study import objective_names

ARCH_COLUMNS = ("family", "depth", "widths", "activation", "optimizer", "lr", "batch_size", "epochs")
EDGE_FRACTION = 0.05  # within 5% of a range's span (on its own scale) counts as "at the edge"


def trial_row(trial: FrozenTrial, names: list[str]) -> dict[str, Any]:
    """A flat record of one trial: number, objective values, test accuracy and its architecture."""
    rec = TrialRecord.of(trial)
    row: dict[str, Any] = {"trial": trial.number}
    for name, value in zip(names, trial.values or [], strict=False):
        row[name] = value
    if "mse" in rec.test:  # a regression study reports its test error instead
        row["test_mse"] = rec.test["mse"]
    else:
        row["test_accuracy"] = rec.test.get("accuracy")
    flat = {**rec.arch, **rec.train}
    for column in ARCH_COLUMNS:
        value = flat.get(column)
        row[column] = "x".join(map(str, value)) if isinstance(value, list) else value
    return row


Trials = Sequence[FrozenTrial] | None  # trials already read (at least record.SUMMARY_KEYS); None reads them


def _summaries(study: optuna.Study, trials: Trials) -> Sequence[FrozenTrial]:
    return record.read_summaries(study) if trials is None else trials


def front_rows(study: optuna.Study, trials: Trials = None) -> list[dict[str, Any]]:
    """The Pareto front (best trial for single-objective studies) as flat records."""
    names = objective_names(study)
    return [trial_row(t, names) for t in record.read_front(study, trials)]


def state_counts(study: optuna.Study, trials: Trials = None) -> dict[str, int]:
    counts = Counter(t.state.name.lower() for t in _summaries(study, trials))
    return {state.name.lower(): counts.get(state.name.lower(), 0) for state in TrialState}


def trial_counts(study: optuna.Study, trials: Trials = None) -> dict[str, int]:
    """What the trials count as: `trained` ones toward --trials; `failed` ones (FAIL, and diverged:
    COMPLETE with placeholder values) and `infeasible` ones not; `budget_used` of `failure_budget`
    failed trials (stale and interrupted ones are run again and do not count)."""
    trials = _summaries(study, trials)
    config = study.user_attrs.get("config", {})
    stored = config.get("max_failures")
    return {
        "trained": sum(1 for t in trials if record.counts_toward_budget(t)),
        "failed": sum(1 for t in trials if record.is_failed(t)),
        "diverged": sum(1 for t in trials if record.is_diverged(t)),
        "infeasible": sum(1 for t in trials if record.is_infeasible(t)),
        "budget_used": sum(1 for t in trials if record.counts_as_failure(t)),
        "failure_budget": failure_budget(int(config.get("trials", 0)),
                                         None if stored is None else int(stored)),
    }


def counts_line(counts: dict[str, int]) -> str:
    """One line for `show` and `report`: which trials count toward --trials and which do not."""
    return (f"trained {counts['trained']} (these count toward --trials); not counted: failed "
            f"{counts['failed']} ({counts['diverged']} of them diverged), infeasible "
            f"{counts['infeasible']}; failure budget {counts['budget_used']} of "
            f"{counts['failure_budget']} used")


def study_summary(study: optuna.Study) -> dict[str, Any]:
    """Everything `show` prints: identity, objectives with units, trial states, front, warnings."""
    config = study.user_attrs.get("config", {})
    names = objective_names(study)
    trials = record.read_summaries(study)
    failures = Counter(rec.failure for rec in map(TrialRecord.of, trials) if rec.failure is not None)
    best = record.read_front(study, trials)
    warm = portfolio_trials(study, trials)
    rows = [trial_row(t, names) for t in best]
    if warm:  # which of the best came from the warm-start portfolio
        rows = [{**row, "portfolio": warm.get(row["trial"], {}).get("point")} for row in rows]
    return {
        "study": study.study_name,
        "dataset": config.get("dataset"),
        "defaults": config.get("defaults", "plain"),
        "objectives": [_objective_info(name, d) for name, d in zip(names, study.directions,
                                                                   strict=True)],
        "states": state_counts(study, trials),
        "counts": trial_counts(study, trials),
        "fail_reasons": dict(failures),
        "front": rows,
        "knee": None if (knee := decide.knee(study, best)) is None else knee.number,
        "portfolio": list(warm.values()),
        "pruning": pruning_summary(study, trials),
        "time": time_summary(study, trials),
        "warnings": edge_warnings(config.get("space", {}), best),
    }


TIME_LABELS = {"train": "training steps", "eval": "evaluation", "metrics": "static metrics",
               "sampling": "sampling", "storage": "storage", "artifacts": "artifacts", "other": "other"}


def time_summary(study: optuna.Study, trials: Trials = None) -> dict[str, Any]:
    """Seconds per part of the trials (record.TIME_PARTS), summed over those that recorded them:
    every trial that ran, failed, infeasible and skipped ones included."""
    timed = [rec for t in _summaries(study, trials) if (rec := TrialRecord.of(t)).time]
    return {"trials": len(timed), "seconds": record.time_totals(timed)}


def time_line(summary: dict[str, Any]) -> str | None:
    """One line for `show`: where the trials' time went (None when no trial recorded it)."""
    if not summary["trials"]:
        return None
    seconds = summary["seconds"]
    total = seconds["trial"]
    parts = ", ".join(f"{label} {seconds[part]:.1f} s ({seconds[part] / total:.0%})" if total else
                      f"{label} {seconds[part]:.1f} s" for part, label in TIME_LABELS.items())
    return f"time of {summary['trials']} trial(s): {total:.1f} s; {parts}"


def portfolio_trials(study: optuna.Study, trials: Trials = None) -> dict[int, dict[str, Any]]:
    """The trials enqueued from the warm-start portfolio: number -> trial, point name, state."""
    out = {}
    for trial in _summaries(study, trials):
        point = TrialRecord.of(trial).portfolio
        if point is not None:
            out[trial.number] = {"trial": trial.number, "point": point,
                                 "state": trial.state.name.lower()}
    return out


def pruning_summary(study: optuna.Study, trials: Trials = None) -> dict[str, int]:
    """Pruned and infeasible trials, and the training epochs they saved.

    `epochs_planned` is what the finished trials' candidates asked for; `epochs_trained` what they
    ran; the difference is what pruning and constraints saved, split into the epochs pruned trials
    did not finish and those of infeasible candidates, which never trained. Diverged trials are
    failures, left out as failed ones are.
    """
    finished = [rec for t in _summaries(study, trials)
                if t.state in record.FINISHED and not (rec := TrialRecord.of(t)).is_diverged]
    planned = sum(t.planned_epochs for t in finished)
    trained = sum(t.trained_epochs for t in finished)
    by_constraints = sum(t.planned_epochs - t.trained_epochs for t in finished if t.is_infeasible)
    return {
        "pruned": sum(1 for t in finished if t.state == TrialState.PRUNED),
        "infeasible": sum(1 for t in finished if t.is_infeasible),
        "epochs_planned": planned,
        "epochs_trained": trained,
        "epochs_saved": planned - trained,
        "epochs_saved_by_pruning": planned - trained - by_constraints,
        "epochs_saved_by_constraints": by_constraints,
    }


def pruning_line(counts: dict[str, int]) -> str:
    """One line for `show` and `pareto`: what pruning and constraints saved."""
    planned, saved = counts["epochs_planned"], counts["epochs_saved"]
    share = f" ({saved / planned:.0%})" if planned else ""
    return (f"pruned {counts['pruned']}, infeasible {counts['infeasible']}; epochs trained "
            f"{counts['epochs_trained']} of {planned}, saved {saved}{share}: "
            f"{counts['epochs_saved_by_pruning']} by pruning, "
            f"{counts['epochs_saved_by_constraints']} by constraints (never trained)")


def _objective_info(name: str, direction: optuna.study.StudyDirection) -> dict[str, str]:
    unit = vocab.METRICS.get(name).unit if name in vocab.METRICS else ""
    return {"name": name, "direction": direction.name.lower(), "unit": unit}


def edge_warnings(space_raw: dict[str, Any], best: list[FrozenTrial]) -> list[str]:
    """Ranges whose best values sit at an edge: the optimum may lie outside the range."""
    warnings = []
    for name, raw in space_raw.items():
        if not isinstance(raw, dict) or name not in RULES:
            continue
        param = parse_param(name, raw, RULES[name])
        # a range per option (adamw.lr, sgd.lr): each is sampled, and judged, under its own name
        ranges = ([(f"{option}.{name}", part) for option, part in param.options]
                  if isinstance(param, ByOption) else [(name, param)])
        for trial_name, part in ranges:
            if isinstance(part, Range):
                warnings += _edge_warnings(trial_name, part, RULES[name].minimum, best)
    return warnings


def _edge_warnings(name: str, param: Range, floor: float | None, best: list[FrozenTrial]) -> list[str]:
    values = [t.params[name] for t in best if name in t.params]
    warnings = []
    for edge, label in ((param.low, "lower"), (param.high, "upper")):
        if label == "lower" and floor is not None and edge <= floor + 1:
            continue  # nothing lies below the smallest allowed value (depth 1, width 1)
        hits = sum(1 for v in values if _near(v, edge, param))
        if hits:
            warnings.append(f"{name}: {hits} of {len(values)} best trials sit at the {label} "
                            f"edge ({edge:g}) of its range [{param.low:g}, {param.high:g}]; "
                            "the optimum may lie beyond it, consider widening the range.")
    return warnings


def _near(value: float, edge: float, param: Range) -> bool:
    scale = math.log if param.log else (lambda x: x)
    span = scale(param.high) - scale(param.low)
    return span > 0 and abs(scale(value) - scale(edge)) <= EDGE_FRACTION * span


def studies_table(storage: optuna.storages.BaseStorage) -> list[dict[str, Any]]:
    """One record per study in `storage`: name, objectives, dataset and trial counts by state."""
    rows = []
    for frozen in storage.get_all_studies():
        counts = record.state_counts(storage, frozen._study_id)
        names = frozen.system_attrs.get("study:metric_names") or [
            f"objective{i}" for i in range(len(frozen.directions))]
        rows.append({
            "study": frozen.study_name,
            "dataset": frozen.user_attrs.get("config", {}).get("dataset"),
            "objectives": ",".join(names),
            "trials": sum(counts.values()),
            **{state.name.lower(): counts.get(state, 0)
               for state in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL, TrialState.RUNNING)},
        })
    return rows
