"""The search loop: the trial budget, signals, the failure breaker, and `run_search`.

`run_search` opens (or resumes) the study, reaps trials whose worker died, and runs Optuna's
optimize() with the trial runner until the study holds `trials` finished trials. SIGINT, SIGTERM
and SIGHUP close the running trial as FAIL and stop the search; a resumed run picks it up again.

Two things stop a search that fails instead of training (exit 2, the study keeps every trial):
- the breaker: more than half of the last FAILURE_WINDOW trials this process ran failed the same
  way (the same fail_reason). The message names what the failed trials share (optimizer,
  activation, family, the lr range they span) and what to change;
- the failure budget: the study holds `max_failures` failed trials (by default as many as
  `trials`, at least 20), diverged ones included; stale and interrupted trials are run again and
  do not count.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from types import FrameType
from typing import Any, Protocol

import optuna
import torch
from optuna.artifacts import FileSystemArtifactStore
from optuna.trial import FrozenTrial, TrialState

from automl_nn import accel
from automl_nn.analysis import predictions
from automl_nn.config import StudyConfig
from automl_nn.data import DataBundle, on_device
from automl_nn.errors import ConfigError
from automl_nn.storage import artifacts, critical, record, recovery
from automl_nn.storage.backends import open_storage, storage_url
from automl_nn.storage.record import TrialRecord
from automl_nn.study import count_done, open_study, resume_config
from automl_nn.trial import Reporter, TrialRunner, mark_failed

log = logging.getLogger(__name__)

# The breaker: the last FAILURE_WINDOW trials of this process (infeasible and circumstantial ones
# aside); SAME_FAILURE_LIMIT of them failing the same way, more than half, stop the search. A kind
# is a fail_reason alone: messages carry per-trial numbers (the lr), so no two would match.
FAILURE_WINDOW = 20
SAME_FAILURE_LIMIT = FAILURE_WINDOW // 2 + 1
# Infeasible candidates cost no training and do not count toward --trials, so a space that is
# (nearly) all over the constraints would loop; this many since the last trained trial stop the
# search instead (failed trials in between neither count nor break the run).
INFEASIBLE_LIMIT = 100
# Candidates in a row skipped because they would not finish before the deadline: the search ends.
SKIP_LIMIT = 3
# Failures that say nothing about the configuration: they never enter the breaker's window.
CIRCUMSTANTIAL = ("oom", "stale", "interrupted", record.SURPLUS)


class Surplus(Exception):
    """A trial created beyond the study's target by a racing worker; closed FAIL (`surplus`)."""


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

    def more(self, study: optuna.Study, trial: FrozenTrial | None,
             trials: Sequence[FrozenTrial] | None = None) -> bool:
        """`trials`: the study's trials as the caller just read them (None: read them)."""

    def admits(self, study: optuna.Study, trial: optuna.Trial) -> bool:
        """Whether a trial just created (RUNNING, nothing sampled yet) is within the target; one
        that is not is closed unrun (`surplus`)."""


@dataclass
class StudyBudget:
    """Run while the study holds fewer than `target` finished trials.

    `count_running` also counts other workers' running trials, for workers on other machines that
    share nothing but the storage (they may overshoot by a trial or two when they race).
    """

    target: int
    count_running: bool = False

    tally: record.Tally | None = field(default=None, repr=False)

    def more(self, study: optuna.Study, trial: FrozenTrial | None,
             trials: Sequence[FrozenTrial] | None = None) -> bool:
        trials = study.get_trials(deepcopy=False) if trials is None else trials
        self.tally = self.tally or record.Tally(study.directions)
        done = self.tally.update(trials).done
        if self.count_running:
            done += sum(1 for t in trials if t.state == TrialState.RUNNING)
        return done < self.target

    def admits(self, study: optuna.Study, trial: optuna.Trial) -> bool:
        """With `count_running`, exact under races: workers that checked `more` at the same moment
        each create a trial, and only those whose rank (trained trials, plus running ones created
        before it) is below the target go on; the others close theirs unrun. Trial numbers come from
        the storage, so every worker ranks the same way."""
        if not self.count_running:
            return True
        trials = study.get_trials(deepcopy=False)
        self.tally = self.tally or record.Tally(study.directions)
        ahead = sum(1 for t in trials if t.state == TrialState.RUNNING and t.number < trial.number)
        return self.tally.update(trials).done + ahead < self.target


@dataclass
class _Stopper:
    """Stops optimize() at the target count, on a deferred signal, and when trials keep failing."""

    target: int
    reporter: Reporter
    budget: Budget
    graceful: GracefulStop
    heartbeat: recovery.Heartbeat
    front_store: FileSystemArtifactStore | None = None  # drop weights of trials off the front
    max_failures: int | None = None  # the study's failure budget; None: none
    window: deque[TrialRecord] = field(default_factory=lambda: deque(maxlen=FAILURE_WINDOW))
    infeasible: int = 0
    skipped: int = 0
    tripped: str | None = None
    tally: record.Tally | None = field(default=None, repr=False)
    weights: artifacts.FrontWeights | None = field(default=None, repr=False)

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        # One read for everything below; the tally looks only at trials it has not seen.
        trials = study.get_trials(deepcopy=False)
        tally = self._tally(study).update(trials)
        self.reporter.trial_finished(trial, study, tally.best)
        self._track_failures(TrialRecord.of(trial))
        if self.graceful.pending is not None or self.tripped is not None:
            study.stop()
            return
        # A sibling may have died: journal leases, and on RDB storage the trials of processes gone
        # from this machine, are ours to check (Optuna checks RDB heartbeats before each trial).
        if recovery.reap_stale(study, self.heartbeat, trials=trials, heartbeats=False):
            trials = study.get_trials(deepcopy=False)
            tally.update(trials)
        if self.front_store is not None and trial.state == TrialState.COMPLETE:
            self.weights = self.weights or artifacts.FrontWeights(self.front_store)
            self.weights.update(trials, tally.best)
        self._track_infeasible(trial)
        if self.tripped is None and self.max_failures is not None:
            self.tripped = budget_spent_message(tally.failures, self.max_failures)
        if self.skipped >= SKIP_LIMIT:  # the time left fits no candidate the sampler proposes
            log.info("%d candidates in a row would not finish before the deadline: stopping", self.skipped)
        ended = self.tripped is not None or self.skipped >= SKIP_LIMIT
        if ended or tally.done >= self.target or not self.budget.more(study, trial, trials):
            study.stop()

    def _tally(self, study: optuna.Study) -> record.Tally:
        self.tally = self.tally or record.Tally(study.directions)
        return self.tally

    def _track_infeasible(self, trial: FrozenTrial) -> None:
        if record.is_skipped(trial) and record.PORTFOLIO in trial.user_attrs:
            return  # a warm-start point too slow for the budget says nothing of the sampled ones
        self.skipped = self.skipped + 1 if record.is_skipped(trial) else 0
        if record.is_infeasible(trial) and not record.is_skipped(trial):
            self.infeasible += 1
        elif record.counts_toward_budget(trial):
            self.infeasible = 0  # failed trials pass over: they neither count nor break the run
        if self.infeasible >= INFEASIBLE_LIMIT:
            self.tripped = (f"the last {INFEASIBLE_LIMIT} candidates were all over the constraints "
                            f"({TrialRecord.of(trial).infeasible}). Loosen --max-params / "
                            "--max-flops / --max-memory or shrink the space (width, depth)")

    def _track_failures(self, rec: TrialRecord) -> None:
        kind = rec.failure
        if rec.is_infeasible or kind in CIRCUMSTANTIAL or (rec.is_failed and not rec.fail_reason):
            return  # no training to judge, or nothing said about the candidate
        self.window.append(rec)
        if kind is None:
            return
        same = [r for r in self.window if r.failure == kind]
        if len(same) >= SAME_FAILURE_LIMIT:
            self.tripped = (f"the search stopped: {len(same)} of the last {len(self.window)} trials "
                            f"failed the same way ({kind}: {_first_line(rec.fail_message)}); "
                            f"{failure_pattern(same)}. {advice(kind, same)}")


def failure_pattern(failed: Sequence[TrialRecord]) -> str:
    """What failed trials share: the most common optimizer, activation and family among them (with
    how many had it), and the range of learning rates they span."""
    sampled = [_sampled(r) for r in failed]
    parts = []
    for name in ("optimizer", "activation", "family"):
        counts = Counter(str(values[name]) for values in sampled if name in values)
        if counts:
            value, n = counts.most_common(1)[0]
            parts.append(f"{name} {value} in {n} of {len(failed)}")
    lrs = [float(values["lr"]) for values in sampled if "lr" in values]
    if lrs:
        parts.append(f"lr {min(lrs):.3g} to {max(lrs):.3g}")
    return "they share " + ", ".join(parts) if parts else "they share no sampled parameters"


def advice(kind: str, failed: Sequence[TrialRecord]) -> str:
    """What to change, for failures of one kind."""
    new_study = ("The space is part of the study's identity: search the changed space under "
                 "another --study-name")
    if kind == record.NONFINITE:
        lrs = [float(v["lr"]) for r in failed if "lr" in (v := _sampled(r))]
        below = f" (below {min(lrs):.3g}, the lowest lr that diverged)" if lrs else ""
        return (f"Training diverges there: lower the top of the lr range{below}, or leave that "
                f"optimizer or activation out of the space. {new_study}")
    if kind == "config":
        return ("The space draws candidates this data cannot take: fix the space or the data. "
                f"{new_study}")
    return f"Fix the space or the data; each failed trial keeps its traceback. {new_study}"


def _sampled(rec: TrialRecord) -> dict[str, Any]:
    """A trial's parameters: its candidate where it got that far, else what was sampled."""
    return {**rec.params, **rec.arch, **rec.train}


def failure_budget_spent(trials: Sequence[FrozenTrial], max_failures: int) -> str | None:
    """The stop message once the study holds `max_failures` failed trials, else None."""
    return budget_spent_message([TrialRecord.of(t) for t in trials if record.counts_as_failure(t)],
                                max_failures)


def budget_spent_message(failed: Sequence[TrialRecord], max_failures: int) -> str | None:
    """The stop message once `failed` (the trials that use up the budget) reaches `max_failures`."""
    if len(failed) < max_failures:
        return None
    kinds = Counter(str(r.failure) for r in failed)
    common = kinds.most_common(1)[0][0]
    by_kind = ", ".join(f"{kind} {n}" for kind, n in kinds.most_common())
    same = [r for r in failed if r.failure == common]
    return (f"the study holds {len(failed)} failed trials ({by_kind}), its failure budget "
            f"(max_failures {max_failures}); of the {common} ones {failure_pattern(same)}. Raise "
            f"--max-failures to go on with this study. {advice(common, same)}")


def _first_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[0][:200] if lines else "no message"


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


@dataclass
class GracefulStop:
    """SIGINT, SIGTERM and SIGHUP end the running trial like Ctrl-C, never leaving it RUNNING.

    Inside a trial the signal raises Interrupted at once (inside a journal append that holds the
    file's lock, when the append ends: `storage.critical`), so the trial is closed as FAIL
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
            if critical.defer(lambda: self._interrupt(signum)):
                return  # in a storage write holding a lock: raised when the write ends
            self._interrupt(signum)
        if self.study is not None:
            with contextlib.suppress(RuntimeError):  # outside optimize() there is nothing to stop
                self.study.stop()

    def _interrupt(self, signum: int) -> None:
        if self.armed:  # the trial may have ended while a deferred raise waited
            self.armed = False
            raise Interrupted(signum)

    @contextlib.contextmanager
    def installed(self) -> Iterator[GracefulStop]:
        """The handlers, for the duration of a search. Off the main thread (a joblib task on a
        Dask or Ray worker) Python allows no signal handlers: the host process owns its signals,
        and a worker it kills leaves a stale trial that the heartbeat fails and retries."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
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
    budget: Budget

    def __call__(self, trial: optuna.Trial) -> Sequence[float]:
        with recovery.hold_lease(trial.storage, trial._trial_id, self.heartbeat.interval):
            if self.graceful.pending is not None:  # the signal came between ask() and here
                mark_failed(trial, "interrupted", f"stopped by {signal.Signals(self.graceful.pending).name}")
                self.graceful.raise_if_pending()
            if not self.budget.admits(trial.study, trial):
                record.write_failure(trial, record.SURPLUS, "the study reached its target while this "
                                     "trial was being created (another worker took the last one); not run")
                raise Surplus(f"trial {trial.number} is beyond the study's target: not run")
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
        spent = failure_budget_spent(study.get_trials(deepcopy=False), config.failure_budget())
        if spent is not None:
            raise ConfigError(f"{spent}; the study keeps its finished trials.")
        accel.setup(torch_device)
        store = None if config.keep_weights == "none" else artifacts.open_store(storage_url(config.storage))
        runner = TrialRunner(config, on_device(bundle, torch_device), torch_device, reporter, store,
                             predictions_store=prediction_store(study, config, bundle))
        beat = recovery.heartbeat_settings()
        stopper = _Stopper(config.trials, reporter, budget, graceful, beat,
                           front_store=store if config.keep_weights == "pareto" else None,
                           max_failures=config.failure_budget())
        reporter.start(config.study_name, count_done(study), config.trials)
        try:
            graceful.raise_if_pending()
            left = None if config.deadline is None else max(0.0, config.deadline - time.time())
            study.optimize(_GuardedTrial(runner, graceful, beat, budget), timeout=left,
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
