"""The stored trial record: every user-attribute key a trial writes, its writers and one reader.

A trial stores, as Optuna user attributes, in one commit per step:
- `candidate` (ArchSpec + TrainSpec as dicts) and `seed`, before training;
- its static costs (`params`, `flops`, `memory`, `ops`, `latency`), measured before training;
- `epoch{k}` (that epoch's validation metrics and seconds) with `epochs_trained`, after each epoch;
- the trained metrics (`accuracy`, `loss`, ..., `train_time`) and their `test_*` values, at the end;
  a gated network adds `start_params` and `effective_widths` (the widths it was cut to);
- `infeasible` (the violated constraints) instead of training, for a candidate over a hard limit;
- `pruned_by` (the pruner's reason) or `fail_reason` / `fail_message` when it ends early;
- `diverged` (why), with `fail_reason` `nonfinite`, for a trial whose loss or objective became NaN
  or infinite: it is closed COMPLETE with the `diverged` constraint violated (see `write_diverged`);
- `time`: where the trial's seconds went (TIME_PARTS), last, for trials that trained (complete or pruned).
- `portfolio` (the name of the known-good point it trains), set when it was enqueued as one of a
  new study's first trials (`enqueue_portfolio`).

Infeasible and diverged trials are COMPLETE only so that samplers learn from them (Optuna's samplers
learn constraints from complete trials alone); their trained values are placeholders, so they are no
networks: never on the front, never counted toward `--trials`, never exported.

Everything that reads trials goes through `TrialRecord.of`, `is_infeasible`, `is_diverged`,
`is_failed`, `counts_toward_budget`, `counts_as_failure` and `front`, so the keys are written and
parsed here only.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna
import sqlalchemy
from optuna.distributions import BaseDistribution, json_to_distribution
from optuna.storages import BaseStorage, RDBStorage
from optuna.storages._cached_storage import _CachedStorage
from optuna.storages._rdb import models
from optuna.storages._rdb.storage import _create_scoped_session
from optuna.study._multi_objective import _get_pareto_front_trials_by_trials
from optuna.trial import FrozenTrial, TrialState

from automl_nn import vocab
from automl_nn.errors import StorageError
from automl_nn.storage.recovery import STALE, retrying, set_user_attrs

CANDIDATE = "candidate"
SEED = "seed"
EPOCHS_TRAINED = "epochs_trained"
INFEASIBLE = "infeasible"
SKIPPED = "skipped"  # infeasible because of the time left, not a limit on the network
DIVERGED = "diverged"  # the user attribute and the name of its constraint (`constraints:diverged`)
NONFINITE = "nonfinite"  # the fail_reason of a NaN or infinite loss or objective value
PRUNED_BY = "pruned_by"
FAIL_REASON = "fail_reason"
FAIL_MESSAGE = "fail_message"
START_PARAMS = "start_params"
EFFECTIVE_WIDTHS = "effective_widths"
PORTFOLIO = "portfolio"
TEST_PREFIX = "test_"
_EPOCH_PREFIX = "epoch"
TIME = "time"
# Where a trial's seconds go: the optimization steps; evaluation (validation every epoch, the test
# split once, kept predictions); static metrics; sampling (the sampler's own work, every
# suggest); storage (the record's writes and the pruner's reads); artifacts (weights,
# predictions); and the rest of the trial function (building the model, progress). `trial` is the
# whole trial function, the parts included.
TIME_PARTS = ("train", "eval", "metrics", "sampling", "storage", "artifacts", "other")


@dataclass(frozen=True)
class ArtifactKeys:
    """The two attributes that say where an artifact is and what its bytes hash to."""

    id_key: str
    hash_key: str


WEIGHTS = ArtifactKeys("weights_artifact", "weights_sha256")
PREDICTIONS = ArtifactKeys("predictions_artifact", "predictions_sha256")
LABELS = ArtifactKeys("labels_artifact", "labels_sha256")  # a study attribute: the split labels
FAIL_MESSAGE_CHARS = 2000
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
# A trial a worker on another machine created beyond the study's target (it raced another worker
# to the last trial): closed FAIL before sampling, never run.
SURPLUS = "surplus"
# Failures of the run, not of the candidate: the trial is run again (a resumed search, the stale
# trial's retry) or was never run (surplus), so they do not use up the failure budget.
RUN_FAILURES = (STALE, "interrupted", SURPLUS)


def epoch_key(epoch: int) -> str:
    """The attribute that holds epoch `epoch`'s validation record (epochs count from 1)."""
    return f"{_EPOCH_PREFIX}{epoch}"


def epoch_number(key: str) -> int | None:
    """The epoch an attribute key holds (`epoch3` -> 3), or None for any other key."""
    digits = key.removeprefix(_EPOCH_PREFIX)
    return int(digits) if key.startswith(_EPOCH_PREFIX) and digits.isdigit() else None


# ---- writers: what the trial runner calls ------------------------------------------------------


def write_candidate(trial: optuna.Trial, candidate: Mapping[str, Any], seed: int) -> None:
    set_user_attrs(trial, {CANDIDATE: dict(candidate), SEED: seed})


def write_metrics(trial: optuna.Trial, values: Mapping[str, Any]) -> None:
    """Metric values by name (static costs, trained metrics, `test_*`, a gated net's cut)."""
    set_user_attrs(trial, values)


def write_epoch(trial: optuna.Trial, epoch: int, values: Mapping[str, float]) -> None:
    set_user_attrs(trial, {epoch_key(epoch): dict(values), EPOCHS_TRAINED: epoch})


# A trial of many short epochs (a table of a few hundred rows trains 200 of them in seconds) would
# spend most of its time committing epoch records: they are stored at most this often.
EPOCH_WRITE_SECONDS = 1.0


class EpochLog:
    """A running trial's epoch records, stored at most every EPOCH_WRITE_SECONDS (one commit for
    all the epochs since the last), and by `flush` before the trial ends.

    The trial's own cached copy has each epoch at once, so this process (the pruner, the deadline's
    partial history) reads it as if it were stored. Only finished trials are read by other workers
    and by the pruner, so what they see is unchanged; a worker killed between two writes loses at
    most that second of a trial that is retried anyway.
    """

    def __init__(self, trial: optuna.Trial, seconds: float = EPOCH_WRITE_SECONDS) -> None:
        self.trial = trial
        self.seconds = seconds
        self._pending: dict[str, Any] = {}
        self._written = time.monotonic()

    def add(self, epoch: int, values: Mapping[str, float]) -> None:
        attrs = {epoch_key(epoch): dict(values), EPOCHS_TRAINED: epoch}
        self._pending.update(attrs)
        self.trial._cached_frozen_trial.user_attrs.update(attrs)  # as Trial.set_user_attr does
        if time.monotonic() - self._written >= self.seconds:
            self.flush()

    def flush(self) -> None:
        """Store the epochs not stored yet (a no-op when there are none)."""
        if self._pending:
            pending, self._pending = self._pending, {}
            set_user_attrs(self.trial, pending)
        self._written = time.monotonic()


def _timed(values: dict[str, Any], seconds: Mapping[str, float] | None) -> dict[str, Any]:
    """`values` with where the trial's time went (`time`), when it is given: one commit for both."""
    return values if seconds is None else {**values, TIME: time_record(seconds)}


def write_infeasible(trial: optuna.Trial, violations: Sequence[str],
                     seconds: Mapping[str, float] | None = None) -> None:
    set_user_attrs(trial, _timed({INFEASIBLE: "; ".join(violations), EPOCHS_TRAINED: 0}, seconds))


def write_skipped(trial: optuna.Trial, reason: str, seconds: Mapping[str, float] | None = None) -> None:
    """Not started: its predicted training time exceeded the time left (closed like an infeasible
    candidate, never trained)."""
    set_user_attrs(trial, _timed({INFEASIBLE: reason, SKIPPED: True, EPOCHS_TRAINED: 0}, seconds))


def write_pruned(trial: optuna.Trial, reason: Mapping[str, Any],
                 seconds: Mapping[str, float] | None = None) -> None:
    """The pruner's reason, with where the trial's time went so far (one commit)."""
    set_user_attrs(trial, _timed({PRUNED_BY: dict(reason)}, seconds))


def write_time(trial: optuna.Trial, seconds: Mapping[str, float]) -> None:
    """Where the trial's time went: seconds per TIME_PARTS and `trial` (their total)."""
    set_user_attrs(trial, {TIME: time_record(seconds)})


def time_record(seconds: Mapping[str, float]) -> dict[str, float]:
    """Seconds per part (missing parts 0), `other` what the total leaves, and `trial` the total."""
    parts = {part: round(float(seconds.get(part, 0.0)), 4) for part in TIME_PARTS if part != "other"}
    total = float(seconds.get("trial", sum(parts.values())))
    parts["other"] = round(max(total - sum(parts.values()), 0.0), 4)
    return {**parts, "trial": round(total, 4)}


def write_failure(trial: optuna.Trial, reason: str, message: str,
                  seconds: Mapping[str, float] | None = None) -> None:
    set_user_attrs(trial, _timed({FAIL_REASON: reason, FAIL_MESSAGE: message[:FAIL_MESSAGE_CHARS]},
                                 seconds))


def write_diverged(trial: optuna.Trial, message: str, seconds: Mapping[str, float] | None = None) -> None:
    """A trial whose training diverged, about to close COMPLETE with placeholder values.

    It keeps the epochs it trained and gets the failure's reason and message, as a failed trial
    does; `diverged` is what tells it from a trained one.
    """
    text = message[:FAIL_MESSAGE_CHARS]
    set_user_attrs(trial, _timed({DIVERGED: text.splitlines()[0] if text else NONFINITE,
                                  FAIL_REASON: NONFINITE, FAIL_MESSAGE: text}, seconds))


def write_artifact(trial: optuna.Trial, keys: ArtifactKeys, artifact_id: str, sha256: str) -> None:
    set_user_attrs(trial, {keys.id_key: artifact_id, keys.hash_key: sha256})


def write_gated(trial: optuna.Trial, start_params: float, widths: Sequence[int]) -> None:
    set_user_attrs(trial, {START_PARAMS: start_params, EFFECTIVE_WIDTHS: list(widths)})


def enqueue_portfolio(study: optuna.Study, points: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
    """Queue known-good points (name, trial parameters) as the next trials, each marked with its name."""
    for name, params in points:
        study.enqueue_trial(dict(params), user_attrs={PORTFOLIO: name})


# ---- the reader --------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrialRecord:
    """One stored trial, parsed: what every reader of trials needs, from one place."""

    number: int
    state: TrialState
    values: tuple[float, ...]
    params: dict[str, Any]
    candidate: dict[str, Any]
    seed: int | None
    epochs: tuple[dict[str, float], ...]  # epoch 1, 2, ... in order, up to the first gap
    metrics: dict[str, float]  # metric name -> value (vocab.METRICS names only)
    test: dict[str, float]  # metric name -> value on the test split
    infeasible: str | None
    diverged: str | None
    pruned_by: dict[str, Any] | None
    fail_reason: str | None
    fail_message: str
    effective_widths: tuple[int, ...] | None
    time: dict[str, float]  # seconds per TIME_PARTS and `trial`; empty for trials before it existed
    portfolio: str | None = None  # the known-good point it trains, when it came from the portfolio
    epochs_trained: int = 0  # the `epochs_trained` attribute (what a summary read carries), else len(epochs)

    @classmethod
    def of(cls, trial: FrozenTrial) -> TrialRecord:
        """A stored trial's record."""
        return cls._parse(trial.number, trial.state, trial.values, trial.params, trial.user_attrs)

    @classmethod
    def running(cls, trial: optuna.Trial) -> TrialRecord:
        """The record of the trial this process is running, as written so far."""
        # the trial's own cached copy, read without the deep copies `trial.user_attrs` makes (a
        # trial of 200 epochs would copy its whole history at every epoch); read only, never changed
        frozen = trial._cached_frozen_trial
        return cls._parse(trial.number, TrialState.RUNNING, None, frozen.params, frozen.user_attrs)

    @classmethod
    def _parse(cls, number: int, state: TrialState, values: Sequence[float] | None,
               params: Mapping[str, Any], attrs: Mapping[str, Any]) -> TrialRecord:
        seed = attrs.get(SEED)
        widths = attrs.get(EFFECTIVE_WIDTHS)
        epochs = _epochs(attrs)
        return cls(
            number=number, state=state, values=tuple(values or ()),
            params=dict(params), candidate=dict(attrs.get(CANDIDATE) or {}),
            seed=int(seed) if seed is not None else None, epochs=epochs,
            metrics=_numbers(attrs, ""), test=_numbers(attrs, TEST_PREFIX),
            infeasible=_text(attrs.get(INFEASIBLE)), diverged=_text(attrs.get(DIVERGED)),
            pruned_by=attrs.get(PRUNED_BY),
            fail_reason=_text(attrs.get(FAIL_REASON)), fail_message=str(attrs.get(FAIL_MESSAGE, "")),
            effective_widths=tuple(int(w) for w in widths) if widths is not None else None,
            time=_seconds(attrs.get(TIME)),
            portfolio=_text(attrs.get(PORTFOLIO)),
            epochs_trained=_count(attrs.get(EPOCHS_TRAINED), len(epochs)),
        )

    @property
    def arch(self) -> dict[str, Any]:
        return dict(self.candidate.get("arch", {}))

    @property
    def train(self) -> dict[str, Any]:
        return dict(self.candidate.get("train", {}))

    @property
    def is_infeasible(self) -> bool:
        """Over a hard constraint: closed COMPLETE with placeholder values, never trained."""
        return self.infeasible is not None

    @property
    def is_diverged(self) -> bool:
        """Its loss or objective became NaN or infinite: closed COMPLETE with placeholder values."""
        return self.diverged is not None

    @property
    def is_trained(self) -> bool:
        """Finished (COMPLETE or PRUNED) after training: what `--trials` counts."""
        return self.state in FINISHED and not (self.is_infeasible or self.is_diverged)

    @property
    def is_failed(self) -> bool:
        """FAIL, or diverged (COMPLETE with placeholder values)."""
        return self.state == TrialState.FAIL or self.is_diverged

    @property
    def failure(self) -> str | None:
        """Why a failed trial failed (its fail_reason, "unknown" without one); None otherwise."""
        return (self.fail_reason or "unknown") if self.is_failed else None

    @property
    def planned_epochs(self) -> int:
        """Epochs the candidate asked for."""
        return int(self.train.get("epochs", 0))

    @property
    def trained_epochs(self) -> int:
        """Epochs the trial actually trained (0 for an infeasible one)."""
        return self.epochs_trained

    def epoch_values(self, epoch: int) -> dict[str, float] | None:
        """Trained metrics after `epoch` epochs (None if not reached).

        train_time is the training seconds spent up to that epoch, so it compares at equal
        fidelity too.
        """
        if not 1 <= epoch <= len(self.epochs):
            return None
        record = self.epochs[epoch - 1]
        seconds = sum(float(e.get("seconds", 0.0)) for e in self.epochs[:epoch])
        values = {"loss": float(record["val_loss"]), "train_time": seconds}
        if "val_accuracy" in record:  # a regression's epochs carry no accuracy
            values.update(accuracy=float(record["val_accuracy"]), error=1.0 - float(record["val_accuracy"]))
        # a regression's metrics in target units (epochs stored before they were kept have none)
        values.update({name: float(record[f"val_{name}"]) for name in vocab.REGRESSION_EPOCH_METRICS
                       if f"val_{name}" in record})
        return values


def _epochs(attrs: Mapping[str, Any]) -> tuple[dict[str, float], ...]:
    epochs: list[dict[str, float]] = []
    while isinstance(record := attrs.get(epoch_key(len(epochs) + 1)), dict):
        epochs.append(record)
    return tuple(epochs)


def _numbers(attrs: Mapping[str, Any], prefix: str) -> dict[str, float]:
    out = {}
    for name in vocab.METRICS:
        value = attrs.get(prefix + name)
        if isinstance(value, int | float) and not isinstance(value, bool):
            out[name] = float(value)
    return out


def _seconds(value: Any) -> dict[str, float]:
    if not isinstance(value, Mapping):
        return {}
    return {str(k): float(v) for k, v in value.items()
            if isinstance(v, int | float) and not isinstance(v, bool)}


def time_totals(records: Iterable[TrialRecord]) -> dict[str, float]:
    """Seconds per TIME_PARTS and `trial`, summed over the trials that recorded their time."""
    totals = dict.fromkeys((*TIME_PARTS, "trial"), 0.0)
    for rec in records:
        for part in totals:
            totals[part] += rec.time.get(part, 0.0)
    return totals


def _count(value: Any, default: int) -> int:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else default


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


def artifact_of(trial: FrozenTrial, keys: ArtifactKeys) -> tuple[str, str] | None:
    """Where a trial's artifact is and the SHA-256 it must have, or None when it kept none."""
    artifact_id = trial.user_attrs.get(keys.id_key)
    if artifact_id is None:
        return None
    return str(artifact_id), str(trial.user_attrs.get(keys.hash_key, ""))


def describe_pruning(reason: Mapping[str, Any]) -> str:
    """A `pruned_by` record in words."""
    if "trial" in reason:
        return f"dominated by trial {reason['trial']} at epoch {reason['epoch']}"
    return f"{reason.get('pruner')} pruner at epoch {reason.get('epoch')}"


# ---- questions about many trials -----------------------------------------------------------------


def is_infeasible(trial: FrozenTrial) -> bool:
    """True for a trial over a hard constraint (it was never trained)."""
    return INFEASIBLE in trial.user_attrs


def is_skipped(trial: FrozenTrial) -> bool:
    """True for a candidate not started because the time left was too short (`write_skipped`)."""
    return bool(trial.user_attrs.get(SKIPPED))


def is_diverged(trial: FrozenTrial) -> bool:
    """True for a trial whose training diverged (closed COMPLETE with placeholder values)."""
    return DIVERGED in trial.user_attrs


def is_failed(trial: FrozenTrial) -> bool:
    """FAIL, or diverged: a trial that produced no network."""
    return trial.state == TrialState.FAIL or is_diverged(trial)


def counts_toward_budget(trial: FrozenTrial) -> bool:
    """COMPLETE and PRUNED trials that trained; failed ones (diverged ones included) are made up
    for, infeasible ones cost nothing."""
    return trial.state in FINISHED and not is_infeasible(trial) and not is_diverged(trial)


def counts_as_failure(trial: FrozenTrial) -> bool:
    """A failed trial that uses up the failure budget: any but those the run itself lost (stale,
    interrupted), which are run again."""
    return is_failed(trial) and trial.user_attrs.get(FAIL_REASON) not in RUN_FAILURES


def constrains_divergence(complete: Iterable[FrozenTrial]) -> bool:
    """Whether a study closes diverged trials COMPLETE with the `diverged` constraint.

    True unless some complete trial lacks the constraint: a study made before it existed keeps
    failing such trials, since Optuna's GP sampler needs the same constraints on every complete
    trial.
    """
    return all(DIVERGED in t.constraints for t in complete)


def trained_trial(trials: Sequence[FrozenTrial], number: int, study_name: str) -> FrozenTrial:
    """Trial `number` of a study, refused unless it is COMPLETE and was trained."""
    if not 0 <= number < len(trials):
        raise StorageError(f'study "{study_name}" has trials 0..{len(trials) - 1}, but trial {number} '
                           "was asked for.")
    trial = trials[number]
    if is_infeasible(trial):
        raise StorageError(f"trial {number} was over a constraint ({trial.user_attrs[INFEASIBLE]}) and "
                           "was never trained. Pick a complete, trained trial (see `automl-nn pareto`).")
    if is_diverged(trial):
        raise StorageError(f"trial {number} diverged ({trial.user_attrs[DIVERGED]}): its values are "
                           "placeholders and it has no trained model. Pick a complete, trained trial "
                           "(see `automl-nn pareto`).")
    if trial.state != TrialState.COMPLETE or CANDIDATE not in trial.user_attrs:
        raise StorageError(f"trial {number} is {trial.state.name.lower()}, not complete: it has no "
                           "trained model. Pick a complete trial (see `automl-nn pareto`).")
    return trial


def state_counts(storage: BaseStorage, study_id: int) -> dict[TrialState, int]:
    """How many trials of a study are in each state, without reading a trial.

    On an RDB storage one GROUP BY query (a 10,000-trial study answers in milliseconds); other
    storages (a journal replays every record anyway) count the trials they hold.
    """
    if isinstance(storage, RDBStorage):
        model: Any = models.TrialModel
        with _create_scoped_session(storage.scoped_session) as session:
            rows = (session.query(model.state, sqlalchemy.func.count(model.trial_id))
                    .filter(model.study_id == study_id).group_by(model.state).all())
        return {TrialState(state): int(count) for state, count in rows}
    counts: dict[TrialState, int] = {}
    for trial in storage.get_all_trials(study_id, deepcopy=False):
        counts[trial.state] = counts.get(trial.state, 0) + 1
    return counts


def count_done(trials: Iterable[FrozenTrial]) -> int:
    return sum(1 for t in trials if counts_toward_budget(t))


def trained(trials: Iterable[FrozenTrial]) -> list[FrozenTrial]:
    """The COMPLETE trials that trained (infeasible and diverged ones carry placeholder values)."""
    return [t for t in trials if t.state == TrialState.COMPLETE and counts_toward_budget(t)]


def front(trials: Sequence[FrozenTrial],
          directions: Sequence[optuna.study.StudyDirection]) -> list[FrozenTrial]:
    """The trained COMPLETE trials no other one dominates (one objective: the best), sorted by the
    first objective, best first.

    What Optuna's `study.best_trials` / `best_trial` return, from trials already read: those
    properties read and deep-copy every trial of the study on each call.
    """
    feasible = trained(trials)
    if not feasible:
        return []
    sign = 1 if directions[0] == optuna.study.StudyDirection.MINIMIZE else -1
    if len(directions) == 1:
        return [min(feasible, key=lambda t: (sign * t.values[0], t.number))]
    best = _get_pareto_front_trials_by_trials(feasible, directions)
    return sorted(best, key=lambda t: (sign * t.values[0], t.number))


@dataclass
class Tally:
    """What a search asks of its study after every trial (how many count toward --trials, which
    failed, the front), kept up to date incrementally.

    A finished trial (COMPLETE, PRUNED or FAIL) never changes, so each is looked at once per
    process, and the front of the new ones is taken together with the last front (a trial off the
    front stays off it). After every trial of a 10,000-trial study that costs a set lookup per
    trial, not a pass of every trial through every question.
    """

    directions: Sequence[optuna.study.StudyDirection]
    done: int = 0
    failures: list[TrialRecord] = field(default_factory=list)  # counts_as_failure, in order seen
    best: list[FrozenTrial] = field(default_factory=list)
    _seen: set[int] = field(default_factory=set, repr=False)

    def update(self, trials: Iterable[FrozenTrial]) -> Tally:
        new = [t for t in trials if t.state.is_finished() and t._trial_id not in self._seen]
        if new:
            self._seen.update(t._trial_id for t in new)
            self.done += count_done(new)
            self.failures += [TrialRecord.of(t) for t in new if counts_as_failure(t)]
            self.best = front([*self.best, *new], self.directions)
        return self


# ---- summary reads: every trial's state and values, and a few attributes -------------------------

# What `show`, `pareto` and `report`'s counts need of every trial; the front's few trials are then
# read in full (`reread`).
SUMMARY_KEYS = (INFEASIBLE, SKIPPED, DIVERGED, FAIL_REASON, PORTFOLIO, TIME, EPOCHS_TRAINED, CANDIDATE)


def read_summaries(study: optuna.Study, keys: Iterable[str] = SUMMARY_KEYS, *,
                   params: bool = False) -> list[FrozenTrial]:
    """Every trial of `study`, by number, with its state, values, start and end times and only the
    user attributes named in `keys`; its params and their distributions with `params`; never its
    system attributes or intermediate values.

    On an RDB storage three plain SQL reads in one transaction, about a tenth of Optuna's full
    load, which builds an ORM object for every attribute row. States are read first: a trial
    finished by then already has its values and attributes (Optuna writes a trial's values with its
    final state, in one commit), and rows of trials that start later are ignored, so concurrent
    writers never yield a finished trial without its values. Other storages (a journal is replayed
    in full anyway) return their full trials.
    """
    backend = _rdb_backend(study)
    if backend is None:
        return study.get_trials(deepcopy=False)
    wanted = tuple(dict.fromkeys(keys))
    return retrying(f"trial summaries of study {study.study_name}",
                    lambda: _summaries(backend, study._study_id, wanted, params), kind="read")


def reread(study: optuna.Study, trials: Iterable[FrozenTrial]) -> list[FrozenTrial]:
    """The full records of a few trials (the front, after `read_summaries`), in the same order."""
    return [study._storage.get_trial(t._trial_id) for t in trials]


def read_front(study: optuna.Study, summaries: Sequence[FrozenTrial] | None = None) -> list[FrozenTrial]:
    """`front` of the study's trials, read fast: every trial's summary (`summaries`, when read
    already), then the front's trials in full."""
    summaries = read_summaries(study) if summaries is None else summaries
    return reread(study, front(summaries, study.directions))


def _rdb_backend(study: optuna.Study) -> RDBStorage | None:
    storage = study._storage
    backend = storage._backend if isinstance(storage, _CachedStorage) else storage
    return backend if isinstance(backend, RDBStorage) else None


def _summaries(storage: RDBStorage, study_id: int, keys: tuple[str, ...],
               with_params: bool) -> list[FrozenTrial]:
    model: Any = models
    trials, values, attrs, params = (model.TrialModel.__table__, model.TrialValueModel.__table__,
                                     model.TrialUserAttributeModel.__table__,
                                     model.TrialParamModel.__table__)
    of_study = trials.c.study_id == study_id
    with storage.engine.connect() as connection, connection.begin():
        rows = connection.execute(sqlalchemy.select(
            trials.c.trial_id, trials.c.number, trials.c.state, trials.c.datetime_start,
            trials.c.datetime_complete).where(of_study)).all()
        value_rows = connection.execute(sqlalchemy.select(
            values.c.trial_id, values.c.objective, values.c.value, values.c.value_type)
            .join(trials, trials.c.trial_id == values.c.trial_id).where(of_study)).all()
        attr_rows = connection.execute(sqlalchemy.select(
            attrs.c.trial_id, attrs.c.key, attrs.c.value_json)
            .join(trials, trials.c.trial_id == attrs.c.trial_id)
            .where(of_study, attrs.c.key.in_(keys))).all() if keys else []
        param_rows = connection.execute(sqlalchemy.select(
            params.c.trial_id, params.c.param_name, params.c.param_value, params.c.distribution_json)
            .join(trials, trials.c.trial_id == params.c.trial_id).where(of_study)
            .order_by(params.c.param_id)).all() if with_params else []
    objectives: dict[int, dict[int, float]] = {}
    for trial_id, objective, value, kind in value_rows:
        objectives.setdefault(trial_id, {})[objective] = \
            model.TrialValueModel.stored_repr_to_value(value, kind)
    user_attrs: dict[int, dict[str, Any]] = {}
    for trial_id, key, value_json in attr_rows:
        user_attrs.setdefault(trial_id, {})[key] = json.loads(value_json)
    sampled: dict[int, tuple[dict[str, Any], dict[str, BaseDistribution]]] = {}
    parsed: dict[str, BaseDistribution] = {}  # a search's trials share a few distributions
    for trial_id, name, value, text in param_rows:
        distribution = parsed.get(text) or parsed.setdefault(text, json_to_distribution(text))
        chosen, spaces = sampled.setdefault(trial_id, ({}, {}))
        chosen[name], spaces[name] = distribution.to_external_repr(value), distribution
    out = []
    for trial_id, number, state, started, completed in sorted(rows, key=lambda r: r[1]):
        state = TrialState(state)
        found = objectives.get(trial_id, {})  # values come with the final state, in one commit
        out.append(FrozenTrial(
            number=number, state=state, value=None,
            values=[found[i] for i in sorted(found)] or None,
            datetime_start=started, datetime_complete=completed,
            params=sampled.get(trial_id, ({}, {}))[0], distributions=sampled.get(trial_id, ({}, {}))[1],
            user_attrs=user_attrs.get(trial_id, {}), system_attrs={}, intermediate_values={},
            trial_id=trial_id))
    return out
