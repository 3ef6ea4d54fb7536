"""Pruning: Optuna's pruners for one objective, our Pareto pruner for several, and hard constraints.

Each epoch, TrialRunner hands the trial's validation metrics to an `EpochPruning` hook; a hook that
returns a reason ends the trial as PRUNED, with the reason stored as `pruned_by`.

- Single objective: the trained objective is reported to Optuna (`trial.report`) and the study's
  pruner (median, hyperband, ...) decides.
- Several objectives: Optuna refuses `trial.report` there, so `ParetoPruner` decides from storage
  alone. The static objectives (params, flops, memory, ops, latency) are exact before training;
  only the trained ones evolve. At epoch k a trial is pruned when a finished trial was, at the same
  epoch k, better on every trained objective by more than a margin, at no higher static cost: it is
  dominated at equal fidelity. Every trial stores its epochs as `epoch{k}` user attributes, so the
  rule needs nothing beyond storage and holds across workers.
- Constraints (`max_params`, ...) are checked on the static metrics before any training and set
  through `trial.set_constraint`, so samplers learn the boundary and the front skips the trial.
- Divergence is a constraint too (`diverged`: 1 for a trial whose loss became NaN or infinite, 0
  for any other complete trial), so samplers learn where training blows up.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import optuna
from optuna.trial import FrozenTrial, TrialState

from automl_nn import vocab
from automl_nn.config import PrunerConfig, StudyConfig
from automl_nn.storage import record
from automl_nn.storage.record import TrialRecord

# ---- Optuna's pruners ----------------------------------------------------------------------------


def make_pruner(config: StudyConfig) -> optuna.pruners.BasePruner:
    """The pruner the study object carries; pareto and none need none from Optuna."""
    s = config.pruning
    median = optuna.pruners.MedianPruner(n_startup_trials=s.startup_trials,
                                         n_warmup_steps=s.warmup_epochs)
    if config.pruner == "median":
        return median
    if config.pruner == "percentile":
        return optuna.pruners.PercentilePruner(25.0, n_startup_trials=s.startup_trials,
                                               n_warmup_steps=s.warmup_epochs)
    if config.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=config.max_epochs(),
                                              reduction_factor=3)
    if config.pruner == "sha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=3)
    with warnings.catch_warnings():  # both are "experimental" in Optuna; we pin its major version
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if config.pruner == "patient":
            # median's verdict, but only for a trial that has also stopped improving for an epoch
            return optuna.pruners.PatientPruner(median, patience=1)
        if config.pruner == "wilcoxon":
            return optuna.pruners.WilcoxonPruner(p_threshold=0.1,
                                                 n_startup_steps=max(2, s.warmup_epochs))
    return optuna.pruners.NopPruner()


# ---- the hook TrialRunner calls ------------------------------------------------------------------


class EpochPruning(Protocol):
    """Decides after each epoch whether a trial stops; returns why (a JSON-safe mapping) or None."""

    def __call__(self, trial: optuna.Trial, epoch: int, epochs: int) -> dict[str, Any] | None: ...


def no_pruning(trial: optuna.Trial, epoch: int, epochs: int) -> dict[str, Any] | None:
    """The hook for `--pruner none`."""
    return None


@dataclass(frozen=True)
class OptunaPruning:
    """Reports the trained objective to Optuna each epoch and asks the study's pruner."""

    name: str
    objective: str

    def __call__(self, trial: optuna.Trial, epoch: int, epochs: int) -> dict[str, Any] | None:
        values = TrialRecord.running(trial).epoch_values(epoch)
        if values is None or self.objective not in values:
            return None  # not reached, or not recorded per epoch (a regression's mse)
        # The raw metric: the study's direction (maximize accuracy, minimize loss) orients it.
        trial.report(values[self.objective], step=epoch)
        if epoch >= epochs or not trial.should_prune():
            return None  # after the last epoch, stopping saves nothing
        return {"pruner": self.name, "epoch": epoch, self.objective: values[self.objective]}


def make_epoch_pruning(config: StudyConfig) -> EpochPruning:
    """The per-epoch hook for the configured pruner."""
    if config.pruner == "pareto":
        return ParetoPruner(objectives=config.objectives, settings=config.pruning)
    if config.pruner == "none":
        return no_pruning
    trained = [n for n in config.objectives if not vocab.METRICS.get(n).static]
    return OptunaPruning(config.pruner, trained[0])


# ---- the multi-objective pruner ------------------------------------------------------------------


@dataclass(frozen=True)
class EpochValues:
    """One trial's objective values at one epoch, split into trained and static ones."""

    number: int
    trained: dict[str, float]
    static: dict[str, float]


class _Table:
    """The finished, trained trials' values at one epoch, as arrays oriented lower-is-better, in the
    order the trials were seen; `completed` counts the COMPLETE ones (with or without that epoch)."""

    def __init__(self) -> None:
        self.ids: set[int] = set()
        self.points: list[EpochValues] = []
        self.completed = 0
        self._numbers = np.empty(0, dtype=int)
        self._static = np.empty((0, 0))
        self._trained = np.empty((0, 0))

    def extend(self, pruner: ParetoPruner, epoch: int, finished: Sequence[FrozenTrial],
               parsed: dict[int, TrialRecord] | None = None) -> _Table:
        """Add the finished trials not in the table yet (a finished trial's record never changes);
        `parsed`: records by trial id already parsed for another epoch's table (filled in here).
        New rows are appended, so a table of 10,000 trials grows by the new trials' rows only."""
        new = [t for t in finished if t._trial_id not in self.ids]
        if not new:
            return self
        self.ids.update(t._trial_id for t in new)
        parsed = {} if parsed is None else parsed
        records = [parsed.get(t._trial_id) or parsed.setdefault(t._trial_id, TrialRecord.of(t))
                   for t in new if record.counts_toward_budget(t)]
        self.completed += sum(1 for t in records if t.state == TrialState.COMPLETE)
        found = [p for t in records if (p := pruner.point(t, epoch)) is not None]
        if found:
            self.points += found
            self._numbers = np.concatenate([self._numbers, [p.number for p in found]])
            self._static = _stack(self._static, [[_loss(n, p.static[n]) for n in sorted(p.static)]
                                                 for p in found])
            self._trained = _stack(self._trained, [[_loss(n, p.trained[n]) for n in sorted(p.trained)]
                                                   for p in found])
        return self

    def first_dominator(self, pruner: ParetoPruner, current: EpochValues) -> EpochValues | None:
        """The lowest-numbered point that dominates `current` (`ParetoPruner.dominates`), if any."""
        if not self.points or not current.trained:
            return None
        static = np.array([_loss(n, current.static[n]) for n in sorted(current.static)])
        names = sorted(current.trained)
        trained = np.array([_loss(n, current.trained[n]) for n in names])
        gaps = np.array([_gap(n, current.trained[n], pruner.settings.margin) for n in names])
        cheaper = (self._static <= static).all(axis=1) if static.size else np.ones(len(self.points), bool)
        better = (self._trained < trained - gaps).all(axis=1)
        hits = np.flatnonzero(cheaper & better & (self._numbers != current.number))
        if not hits.size:
            return None
        return self.points[int(hits[np.argmin(self._numbers[hits])])]


def _stack(table: np.ndarray, rows: list[list[float]]) -> np.ndarray:
    block = np.array(rows, dtype=float)  # (len(rows), objectives of that kind); 0 columns is fine
    return block if table.shape[0] == 0 else np.vstack([table, block])


# How often a trial's checks read the finished trials again (see ParetoPruner._finished).
READ_SECONDS = 1.0


@dataclass(frozen=True)
class ParetoPruner:
    """Prunes a trial dominated at equal fidelity by a finished trial (see the module docstring).

    The finished trials are parsed once per process and study (their records never change), so an
    epoch's check at 10,000 finished trials costs a few array comparisons, not 10,000 parses.
    """

    objectives: tuple[str, ...]
    settings: PrunerConfig = field(default_factory=PrunerConfig)
    _tables: dict[tuple[int, int, int], _Table] = field(default_factory=dict, compare=False, repr=False)
    _parsed: dict[tuple[int, int], dict[int, TrialRecord]] = field(default_factory=dict, compare=False,
                                                                  repr=False)
    # per study: (the trial that read, when, the finished trials it read)
    _reads: dict[tuple[int, int], tuple[int, float, list[FrozenTrial]]] = field(
        default_factory=dict, compare=False, repr=False)

    def __call__(self, trial: optuna.Trial, epoch: int, epochs: int) -> dict[str, Any] | None:
        if epoch >= epochs or epoch <= self.settings.warmup_epochs:
            return None  # the last epoch costs nothing more to finish; warm-up epochs are noise
        current = self.point(TrialRecord.running(trial), epoch)
        if current is None:
            return None
        study = (id(trial.study._storage), trial.study._study_id)
        finished = self._finished(trial, study)
        table = self._tables.setdefault((*study, epoch), _Table()).extend(
            self, epoch, finished, self._parsed.setdefault(study, {}))
        return self._decide(current, table, epoch)

    def _finished(self, trial: optuna.Trial, study: tuple[int, int]) -> list[FrozenTrial]:
        """The study's finished trials, read at each trial's first check and then at most every
        READ_SECONDS: a trial of many short epochs would otherwise spend most of its time reading
        the storage. A trial another worker finishes is seen up to that much later."""
        last = self._reads.get(study)
        now = time.monotonic()
        if last is None or last[0] != trial.number or now - last[1] >= READ_SECONDS:
            last = (trial.number, now, trial.study.get_trials(deepcopy=False, states=record.FINISHED))
            self._reads[study] = last
        return last[2]

    def decide(self, current: EpochValues, finished: Sequence[FrozenTrial],
               epoch: int) -> dict[str, Any] | None:
        """Why `current` is pruned at `epoch` given the finished trials, or None to go on."""
        return self._decide(current, _Table().extend(self, epoch, finished), epoch)

    def _decide(self, current: EpochValues, table: _Table, epoch: int) -> dict[str, Any] | None:
        # trained ones only: infeasible and diverged trials hold placeholder values (the table's)
        if table.completed < self.settings.startup_trials:
            return None
        point = table.first_dominator(self, current)
        if point is None:
            return None
        return {"pruner": "pareto", "trial": point.number, "epoch": epoch,
                "margin": self.settings.margin, "dominator": {**point.trained, **point.static},
                "pruned": {**current.trained, **current.static}}

    def point(self, trial: TrialRecord, epoch: int) -> EpochValues | None:
        """The objective values a trial had after `epoch` epochs."""
        per_epoch = trial.epoch_values(epoch)
        if per_epoch is None:
            return None
        static_names = [n for n in self.objectives if vocab.METRICS.get(n).static]
        trained_names = [n for n in self.objectives if n not in static_names]
        missing = [n for n in static_names if n not in trial.metrics] + \
            [n for n in trained_names if n not in per_epoch]
        if missing:
            return None  # a value is missing: nothing safe to compare
        return EpochValues(trial.number, {n: per_epoch[n] for n in trained_names},
                           {n: trial.metrics[n] for n in static_names})

    def dominates(self, a: EpochValues, b: EpochValues) -> bool:
        """`a` is no costlier than `b` and beats it by more than the margin on every trained metric.

        Requiring the margin on *every* trained objective (not just one) is deliberate: a pruned
        trial is lost for good, so only a clear lead counts, and noise in one metric cannot do it.
        """
        cheaper = all(_loss(n, a.static[n]) <= _loss(n, b.static[n]) for n in b.static)
        better = all(_beats(n, a.trained[n], b.trained[n], self.settings.margin) for n in b.trained)
        return cheaper and better and bool(b.trained)


def _loss(name: str, value: float) -> float:
    """A metric oriented so that lower is better."""
    return value if vocab.METRICS.get(name).direction == "minimize" else -value


def _gap(name: str, b: float, margin: float) -> float:
    """How far a value must beat `b` to count: `margin`, absolute for fractions, else relative."""
    return margin if vocab.METRICS.get(name).unit == "fraction" else margin * abs(b)


def _beats(name: str, a: float, b: float, margin: float) -> bool:
    """`a` is better than `b` by more than `margin` (absolute for fractions, else relative)."""
    return _loss(name, a) < _loss(name, b) - _gap(name, b, margin)


# ---- hard constraints ----------------------------------------------------------------------------


def apply_constraints(trial: optuna.Trial, limits: Mapping[str, float],
                      static: Mapping[str, float]) -> list[str]:
    """Record each limit on the trial; returns the violations (empty when feasible).

    The value stored is the relative excess `value / limit - 1` (<= 0 feasible): dimensionless, so
    samplers that add violations up (TPE) weigh params and FLOPs alike.
    """
    violations = []
    for name, limit in limits.items():
        excess = static[name] / limit - 1.0
        trial.set_constraint(f"max_{name}", excess if math.isfinite(excess) else 1e30)
        if excess > 0:
            violations.append(f"{name} {static[name]:.6g} > max_{name} {limit:.6g}")
    return violations


def set_divergence(trial: optuna.Trial, diverged: bool) -> None:
    """The `diverged` constraint, once a trial's outcome is known: violated (1) when its training
    diverged, met (0) otherwise. Set on every complete trial of a study that uses it, after the
    limits, so that every complete trial has the same constraints in the same order (Optuna's GP
    sampler refuses mixed ones)."""
    trial.set_constraint(record.DIVERGED, 1.0 if diverged else 0.0)


def infeasible_values(objectives: Sequence[str], measured: Mapping[str, float],
                      untrained: Mapping[str, float]) -> list[float]:
    """Objective values for a candidate that was never trained, or whose training diverged.

    Static objectives are real (from `measured`). Trained ones are what a network that learned
    nothing scores (`untrained`: see `untrained_scores`), whatever `measured` holds for them. They
    exist only because Optuna needs values for a COMPLETE trial; the constraint keeps the trial
    off the front.
    """
    return [float(measured[n]) if vocab.METRICS.get(n).static else float(untrained[n])
            for n in objectives]


def untrained_scores(task: str, n_outputs: int,
                     target_spread: tuple[float, float] = (1.0, 1.0)) -> dict[str, float]:
    """What a network that learned nothing scores on each trained metric, and no training time.

    Classification: accuracy 0 (the worst), error 1, the cross-entropy of a uniform guess.
    Regression: the errors of predicting the training mean, `target_spread` = (mean squared,
    mean absolute deviation of the training targets), and r2 0; its loss is that mse.
    """
    if task == "regression":
        mse, mae = target_spread
        return {"mse": mse, "mae": mae, "r2": 0.0, "loss": mse, "train_time": 0.0}
    return {"accuracy": 0.0, "error": 1.0, "loss": math.log(max(n_outputs, 2)), "train_time": 0.0}
