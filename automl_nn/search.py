"""The search loop: the trial budget, signals, the failure breaker, and `run_search`.

`run_search` opens (or resumes) the study, reaps trials whose worker died, and runs Optuna's
optimize() with the trial runner until the study holds `trials` finished trials. SIGINT, SIGTERM
and SIGHUP close the running trial as FAIL and stop the search; a resumed run picks it up again.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from types import FrameType
from typing import Protocol

import optuna
import torch
from optuna.artifacts import FileSystemArtifactStore
from optuna.trial import FrozenTrial, TrialState

from automl_nn import accel
from automl_nn.analysis import predictions
from automl_nn.config import StudyConfig
from automl_nn.data import DataBundle, on_device
from automl_nn.errors import ConfigError
from automl_nn.storage import artifacts, record, recovery
from automl_nn.storage.backends import open_storage, storage_url
from automl_nn.storage.record import TrialRecord
from automl_nn.study import count_done, front, open_study, resume_config
from automl_nn.trial import Reporter, TrialRunner, mark_failed

log = logging.getLogger(__name__)

SAME_FAILURE_LIMIT = 3  # identical failures in a row that stop a search instead of burning it
# Infeasible candidates cost no training and do not count toward --trials, so a space that is
# (nearly) all over the constraints would loop; this many in a row stops the search instead.
INFEASIBLE_LIMIT = 100
# Candidates in a row skipped because they would not finish before the deadline: the search ends.
SKIP_LIMIT = 3
# Failures that say nothing about the configuration: they never trip the breaker.
CIRCUMSTANTIAL = ("oom", "stale", "interrupted")


class Interrupted(KeyboardInterrupt):
    """SIGINT, SIGTERM or SIGHUP: the running trial is closed as FAIL and the search stops."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class Budget(Protocol):
    """Decides whether this process starts another trial.

    Called before the first trial (`trial` None) and after each one. Several processes sharing a
    study each hold their own Budget; see automl_nn.workers for the shared one.
    """

    def more(self, study: optuna.Study, trial: FrozenTrial | None) -> bool: ...


@dataclass
class StudyBudget:
    """Run while the study holds fewer than `target` finished trials.

    `count_running` also counts other workers' running trials, for workers on other machines that
    share nothing but the storage (they may overshoot by a trial or two when they race).
    """

    target: int
    count_running: bool = False

    def more(self, study: optuna.Study, trial: FrozenTrial | None) -> bool:
        done = count_done(study)
        if self.count_running:
            done += len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)))
        return done < self.target


@dataclass
class _Stopper:
    """Stops optimize() at the target count, on a deferred signal, and after repeated failures."""

    target: int
    reporter: Reporter
    budget: Budget
    graceful: GracefulStop
    heartbeat: recovery.Heartbeat
    front_store: FileSystemArtifactStore | None = None  # drop weights of trials off the front
    streak: list[tuple[str, str]] = field(default_factory=list)
    infeasible: int = 0
    skipped: int = 0
    tripped: str | None = None

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.reporter.trial_finished(trial, study)
        self._track_failures(study, trial)
        if self.graceful.pending is not None or self.tripped is not None:
            study.stop()
            return
        # A sibling may have died: journal leases, and on RDB storage the trials of processes gone
        # from this machine, are ours to check (Optuna checks RDB heartbeats before each trial).
        trials = study.get_trials(deepcopy=False)  # one read for the checks below
        if recovery.reap_stale(study, self.heartbeat, trials=trials, heartbeats=False):
            trials = study.get_trials(deepcopy=False)
        if self.front_store is not None and trial.state == TrialState.COMPLETE:
            artifacts.drop_off_front(trials, self.front_store, {t.number for t in front(study, trials)})
        self._track_infeasible(study, trial)
        if count_done(study, trials) >= self.target or not self.budget.more(study, trial):
            study.stop()

    def _track_infeasible(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.skipped = self.skipped + 1 if record.is_skipped(trial) else 0
        if self.skipped >= SKIP_LIMIT:  # the time left fits no candidate the sampler proposes
            log.info("%d candidates in a row would not finish before the deadline: stopping", self.skipped)
            study.stop()
        self.infeasible = self.infeasible + 1 if record.is_infeasible(trial) else 0
        if self.infeasible >= INFEASIBLE_LIMIT:
            self.tripped = (f"the last {INFEASIBLE_LIMIT} candidates were all over the constraints "
                            f"({TrialRecord.of(trial).infeasible}). Loosen --max-params / "
                            "--max-flops / --max-memory or shrink the space (width, depth)")
            study.stop()

    def _track_failures(self, study: optuna.Study, trial: FrozenTrial) -> None:
        rec = TrialRecord.of(trial)
        reason = rec.fail_reason or ""
        if trial.state != TrialState.FAIL or not reason or reason in CIRCUMSTANTIAL:
            self.streak.clear()
            return
        key = (reason, (rec.fail_message.splitlines() or [""])[0][:200])
        if self.streak and self.streak[-1] != key:
            self.streak.clear()
        self.streak.append(key)
        if len(self.streak) >= SAME_FAILURE_LIMIT:
            self.tripped = (f"the search stopped after {SAME_FAILURE_LIMIT} trials in a row failed "
                            f"the same way ({key[0]}: {key[1]}). Fix the space or data")
            study.stop()


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@dataclass
class GracefulStop:
    """SIGINT, SIGTERM and SIGHUP end the running trial like Ctrl-C, never leaving it RUNNING.

    Inside a trial the signal raises Interrupted at once, so the trial is closed as FAIL
    (`interrupted`). Outside a trial (a storage write, the sampler) raising could leave a trial
    half-written, so the signal is remembered and the search stops before the next trial. A second
    signal while the first is being handled is remembered, not raised again.
    """

    armed: bool = False
    pending: int | None = None
    study: optuna.Study | None = None

    def handler(self, signum: int, _frame: FrameType | None) -> None:
        if self.pending is None:
            self.pending = signum
        if self.armed:
            self.armed = False
            raise Interrupted(signum)
        if self.study is not None:
            with contextlib.suppress(RuntimeError):  # outside optimize() there is nothing to stop
                self.study.stop()

    @contextlib.contextmanager
    def installed(self) -> Iterator[GracefulStop]:
        previous = {s: signal.signal(s, self.handler) for s in STOP_SIGNALS}
        try:
            yield self
        finally:
            for sig, old in previous.items():
                signal.signal(sig, old)

    @contextlib.contextmanager
    def in_trial(self) -> Iterator[None]:
        self.armed = True
        try:
            yield
        finally:
            self.armed = False

    def raise_if_pending(self) -> None:
        if self.pending is not None:
            raise Interrupted(self.pending)


@dataclass
class _GuardedTrial:
    """The trial function as optimize() sees it: signals armed, and a lease naming its process."""

    runner: TrialRunner
    graceful: GracefulStop
    heartbeat: recovery.Heartbeat

    def __call__(self, trial: optuna.Trial) -> Sequence[float]:
        with recovery.hold_lease(trial.storage, trial._trial_id, self.heartbeat.interval):
            if self.graceful.pending is not None:  # the signal came between ask() and here
                mark_failed(trial, "interrupted", f"stopped by {signal.Signals(self.graceful.pending).name}")
                self.graceful.raise_if_pending()
            with self.graceful.in_trial():
                return self.runner(trial)


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` picks CUDA when present, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device: {name} was asked for, but no CUDA device is available. "
                          "Use --device cpu or auto.")
    return torch.device(name)


def prepare(config: StudyConfig, worker_index: int = 0) -> optuna.Study:
    """Open (or create) the study and reap trials whose worker died, before anything is counted."""
    study = open_study(config, open_storage(config.storage), worker_index)
    reaped = recovery.reap_stale(study, recovery.heartbeat_settings())
    if reaped:
        log.warning("trials %s were left running by a worker that is gone: failed (stale) and "
                    "queued again with the same parameters", reaped)
    return study


def run_search(
    config: StudyConfig, bundle: DataBundle, reporter: Reporter, device: str = "auto",
    *, budget: Budget | None = None, worker_index: int = 0,
) -> optuna.Study:
    """Run (or resume) the search until the study holds `config.trials` finished trials."""
    torch_device = resolve_device(device)
    if config.timeout is not None and config.deadline is None:  # the command sets it at its start
        config = replace(config, deadline=time.time() + config.timeout)
    accel.amp_dtype(config.accel().amp, torch_device)  # bf16 on a GPU without it: before storage
    recovery.heartbeat_settings()  # a bad AUTOMLNN_HEARTBEAT_* variable: refused before storage
    graceful = GracefulStop()
    with graceful.installed():
        study = prepare(config, worker_index)
        config = resume_config(study, config)  # a stored study keeps the space it was created with
        graceful.study = study
        if "data" not in study.user_attrs:  # export needs the input shape, classes and statistics
            study.set_user_attr("data", bundle.describe())
        budget = budget or StudyBudget(config.trials)
        if count_done(study) >= config.trials or not budget.more(study, None):
            graceful.raise_if_pending()
            return study
        accel.setup(torch_device)
        store = None if config.keep_weights == "none" else artifacts.open_store(storage_url(config.storage))
        runner = TrialRunner(config, on_device(bundle, torch_device), torch_device, reporter, store,
                             predictions_store=prediction_store(study, config, bundle))
        beat = recovery.heartbeat_settings()
        stopper = _Stopper(config.trials, reporter, budget, graceful, beat,
                           front_store=store if config.keep_weights == "pareto" else None)
        reporter.start(config.study_name, count_done(study), config.trials)
        try:
            graceful.raise_if_pending()
            left = None if config.deadline is None else max(0.0, config.deadline - time.time())
            study.optimize(_GuardedTrial(runner, graceful, beat), timeout=left,
                           catch=(Exception,), callbacks=[stopper])
        except AssertionError as exc:  # Optuna's own check, raised over a failed final write
            failure = recovery.storage_failure(exc)
            if failure is None:
                raise
            raise failure from None
        finally:
            reporter.stop()
        graceful.raise_if_pending()
    if stopper.tripped is not None:
        raise ConfigError(f"{stopper.tripped}; the study keeps its finished trials.")
    return study


def prediction_store(study: optuna.Study, config: StudyConfig,
                     bundle: DataBundle) -> FileSystemArtifactStore | None:
    """Where trials keep per-sample predictions (classification only); the labels go there once."""
    if not config.keep_predictions or bundle.task != "classification":
        return None
    store = artifacts.open_store(storage_url(config.storage))
    if record.LABELS.id_key not in study.user_attrs:  # a racing worker writes the same labels
        predictions.save_labels(study, bundle, store)
    return store
