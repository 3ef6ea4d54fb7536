"""Open and resume studies: storage URLs, samplers, the search loop, signals.

Storage defaults to an SQLite file in the working directory with a 60 s busy timeout. A study
keeps its resolved config and the config's hash in its user attributes; running the same search
again resumes it (`trials` is the study's total), and a search whose data, objectives or space
differ from the stored ones is refused rather than mixed in.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Protocol
from urllib.parse import quote

import optuna
import sqlalchemy.exc
import torch
from optuna.artifacts import FileSystemArtifactStore
from optuna.storages import BaseStorage
from optuna.storages.journal import JournalStorage
from optuna.trial import FrozenTrial, TrialState

from automl_nn import accel, pruning, space
from automl_nn.analysis import predictions
from automl_nn.config import ACCEL_KEYS, SMOKE_SUFFIX, StudyConfig
from automl_nn.data.catalog import DataBundle, on_device
from automl_nn.errors import ConfigError, StorageError, suggest
from automl_nn.storage import artifacts as weights
from automl_nn.storage import recovery, verify
from automl_nn.storage.verify import journal_path
from automl_nn.trial import Reporter, TrialRunner, mark_failed

log = logging.getLogger(__name__)

DEFAULT_STORAGE = "sqlite:///automl-nn.db"
SAME_FAILURE_LIMIT = 3  # identical failures in a row that stop a search instead of burning it
# Infeasible candidates cost no training and do not count toward --trials, so a space that is
# (nearly) all over the constraints would loop; this many in a row stops the search instead.
INFEASIBLE_LIMIT = 100
# Failures that say nothing about the configuration: they never trip the breaker.
CIRCUMSTANTIAL = ("oom", "stale", "interrupted")
DONE_STATES = (TrialState.COMPLETE, TrialState.PRUNED)


class Interrupted(KeyboardInterrupt):
    """SIGINT, SIGTERM or SIGHUP: the running trial is closed as FAIL and the search stops."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


# ---- storage -------------------------------------------------------------------------------------


def storage_url(url: str | None) -> str:
    """The storage URL to use: the given one, or the SQLite file in the working directory."""
    return url or DEFAULT_STORAGE


def artifact_dir(url: str | None) -> Path:
    """Where per-trial artifacts (exported code, weights, plots) of a storage live.

    Next to a file storage: `runs/study.db` -> `runs/study-artifacts/`. A server database
    (PostgreSQL, ...) has no file to sit beside, so its artifacts go to `automl-nn-artifacts/` in
    the working directory. The dashboard serves this folder; export writes into it.
    """
    return weights.artifact_dir(storage_url(url))


def open_storage(url: str | None, *, must_exist: bool = False) -> BaseStorage:
    """An Optuna storage for `url`; files that are not databases are refused without being touched.

    `journal:PATH`, `journal:///PATH` or a bare path ending in .log / .jsonl / .journal opens a
    journal file; anything else is an SQLAlchemy URL (sqlite:///..., postgresql://...). RDB storage
    gets heartbeats, stale-trial retries and retried writes (recovery.rdb_storage). `must_exist`
    refuses to create a new SQLite or journal file (read commands).
    """
    url = storage_url(url)
    journal = journal_path(url)
    if journal is not None:
        return _open_journal(journal, must_exist)
    if url.startswith("sqlite:///"):
        _check_sqlite_file(Path(url.removeprefix("sqlite:///")), must_exist)
    try:
        storage = recovery.rdb_storage(url)
    except (sqlalchemy.exc.SQLAlchemyError, RuntimeError, ValueError, ImportError) as exc:
        raise StorageError(f"storage {url}: cannot be opened ({_first_line(exc)}). Check the URL, "
                           "or run `optuna storage upgrade --storage URL` if it was made by an "
                           "older Optuna.") from None
    return storage


def is_sqlite(url: str | None) -> bool:
    return storage_url(url).startswith("sqlite")


def _check_sqlite_file(path: Path, must_exist: bool) -> None:
    where = f"storage file {path}"
    if path.is_dir():
        raise StorageError(f"{where}: is a directory, but a database file was expected. "
                           "Pass a file path, e.g. --storage sqlite:///studies.db.")
    if not path.exists():
        if must_exist:
            raise StorageError(f"{where}: no such file, so there are no studies to read. "
                               "Run `automl-nn search` first, or pass --storage.")
        if not path.parent.exists():
            raise StorageError(f"{where}: the directory {path.parent} does not exist. "
                               "Create it first or choose another path.")
        return
    problem = _not_sqlite(path)
    if problem is not None:
        raise StorageError(f"{where}: {problem}")


def _not_sqlite(path: Path) -> str | None:
    """Why `path` cannot be opened as an SQLite database, asking SQLite itself; None when it can.

    The file is never opened with open(): closing any descriptor of a file drops every POSIX lock
    this process holds on it, including those of SQLite connections still open here, and in WAL
    mode that lets another process checkpoint under them and corrupt the database.
    """
    uri = f"file:{quote(str(path.resolve()))}?mode=ro"
    try:
        connection = sqlite3.connect(uri, uri=True, timeout=recovery.BUSY_TIMEOUT_S)
        try:
            connection.execute("PRAGMA schema_version").fetchone()
        finally:
            connection.close()
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc):
            return None  # a database another process is writing
        return f"cannot be read ({exc}). Check its permissions."
    except sqlite3.DatabaseError:
        return ("is not an SQLite database (it may be corrupt or another kind of file). It was "
                "left untouched; pass another --storage.")
    return None


def _open_journal(path: Path, must_exist: bool) -> BaseStorage:
    """Optuna's journal storage over `verify.SafeJournalFileBackend` (it heals a torn tail).

    Corrupt lines are refused up front with their numbers: Optuna would stop on them with a
    bare JSONDecodeError or, for the last line, only once something is appended after it.
    """
    if must_exist and not path.is_file():
        raise StorageError(f"journal file {path}: no such file. Run `automl-nn search` first.")
    if not path.parent.exists():
        raise StorageError(f"journal file {path}: the directory {path.parent} does not exist.")
    if path.is_file():
        report = verify.scan_journal(path)
        if report.corrupt:
            raise StorageError(verify.corrupt_message(report))
    try:
        return JournalStorage(verify.SafeJournalFileBackend(str(path)))
    except Exception as exc:
        raise StorageError(f"journal file {path}: cannot be read ({_first_line(exc)}). Run "
                           f"`automl-nn verify {path}` to look for damage.") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


# ---- studies -------------------------------------------------------------------------------------


def study_names(storage: BaseStorage) -> list[str]:
    try:
        return [s.study_name for s in storage.get_all_studies()]
    except sqlalchemy.exc.SQLAlchemyError as exc:
        raise StorageError(f"storage cannot be read ({_first_line(exc)}). It was left untouched; "
                           "check that it is an automl-nn / Optuna database.") from None


def load_existing(name: str, storage: BaseStorage) -> optuna.Study:
    """An existing study; an unknown name lists the studies that exist."""
    names = study_names(storage)
    if name not in names:
        listing = ", ".join(names) if names else "none"
        raise StorageError(f'study "{name}" does not exist in this storage.{suggest(name, names)} '
                           f"Studies here: {listing}.")
    return optuna.load_study(study_name=name, storage=storage)


def delete_smoke_study(name: str, url: str | None) -> bool:
    """Delete the smoke study `name` (`...-smoke`) if it exists, so a smoke run starts over.

    Returns whether there was one. Refuses any other name: real studies are never deleted here.
    """
    if not name.endswith(SMOKE_SUFFIX):
        raise ValueError(f"only smoke studies (*{SMOKE_SUFFIX}) are deleted, not {name!r}")
    storage = open_storage(url)
    if name not in study_names(storage):
        return False
    optuna.delete_study(study_name=name, storage=storage)
    log.info("deleted the previous smoke study %s", name)
    return True


def make_sampler(config: StudyConfig, worker_index: int = 0) -> optuna.samplers.BaseSampler:
    """The sampler the config names, seeded with --seed (offset per worker, so that parallel
    workers do not all propose the same first candidates)."""
    seed = None if config.seed is None else config.seed + worker_index
    if config.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if config.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    if config.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if config.sampler == "qmc":
        return optuna.samplers.QMCSampler(seed=seed, scramble=True, warn_independent_sampling=False)
    if config.sampler == "grid":
        return optuna.samplers.GridSampler(space.grid(config.space), seed=seed)
    if config.sampler == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    raise ConfigError(f"sampler: unknown sampler {config.sampler!r}.")


def open_study(config: StudyConfig, storage: BaseStorage, worker_index: int = 0) -> optuna.Study:
    """Create the study, or resume it after checking it asks the same question.

    On resume the stored config takes the new trial budget and acceleration options, so
    `automl-nn worker`, which reads its config from storage, works toward the target of the latest
    search and trains as it does.
    """
    sampler = make_sampler(config, worker_index)
    pruner = pruning.make_pruner(config)
    if config.study_name in study_names(storage):
        study = optuna.load_study(study_name=config.study_name, storage=storage, sampler=sampler,
                                  pruner=pruner)
        check_compatible(study, config)
        if "config" not in study.user_attrs:  # its creator died before describing it
            _describe(study, config)
            return study
        stored = study.user_attrs["config"]
        latest = config.to_raw()
        updated = {key: latest[key] for key in ("trials", "timeout", *ACCEL_KEYS)}
        if any(stored.get(key) != value for key, value in updated.items()):
            study.set_user_attr("config", {**stored, **updated})
        return study
    try:
        study = optuna.create_study(storage=storage, study_name=config.study_name,
                                    directions=config.directions(), sampler=sampler,  # type: ignore[arg-type]
                                    pruner=pruner)
    except optuna.exceptions.DuplicatedStudyError:  # another process created it just now
        return open_study(config, storage, worker_index)
    _describe(study, config)
    return study


def _describe(study: optuna.Study, config: StudyConfig) -> None:
    """Store what the study asks: objective names, the config, its identity and hash.

    In this order, a study whose creator died part way is always resumable: without an identity
    check_compatible accepts it, and a study with a config was described completely.
    """
    with recovery.no_experimental_warnings():
        study.set_metric_names(list(config.objectives))
    study.set_user_attr("config_hash", config.identity_hash())
    study.set_user_attr("identity", config.identity())
    study.set_user_attr("config", config.to_raw())


def check_compatible(study: optuna.Study, config: StudyConfig) -> None:
    """Refuse to resume a study whose directions, data, objectives or space differ."""
    stored = [d.name.lower() for d in study.directions]
    if stored != config.directions():
        raise StorageError(
            f'study "{study.study_name}" exists with directions [{", ".join(stored)}], but this '
            f'search asks for [{", ".join(config.directions())}] ({", ".join(config.objectives)}). '
            "Use another --study-name, or the original objectives."
        )
    old = study.user_attrs.get("identity")
    if old is None or study.user_attrs.get("config_hash") == config.identity_hash():
        return
    diffs = identity_diff(old, config.identity())
    raise StorageError(
        f'study "{study.study_name}" was created with a different search: {"; ".join(diffs)}. '
        "Resuming would mix two searches. Use another --study-name for the new one, or repeat "
        "the original settings."
    )


def identity_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Human-readable differences between two study identities."""
    diffs = [f"{key}: stored {old.get(key)!r}, now {new[key]!r}"
             for key in ("dataset", "objectives", "constraints") if old.get(key) != new.get(key)]
    old_space, new_space = old.get("space", {}), new["space"]
    for key in sorted(set(old_space) | set(new_space)):
        if old_space.get(key) != new_space.get(key):
            diffs.append(f"space.{key}: stored {old_space.get(key)!r}, now {new_space.get(key)!r}")
    return diffs or ["(stored config hash differs)"]


def count_done(study: optuna.Study, trials: Sequence[FrozenTrial] | None = None) -> int:
    """Trials that count toward the target: COMPLETE and PRUNED ones that trained.

    Failed trials are re-run. Infeasible candidates (over a hard constraint) are not counted: they
    cost no training, and `--trials` asks for that many trained candidates. `trials`: a snapshot
    of the study's trials already read, to spare a storage read.
    """
    trials = study.get_trials(deepcopy=False) if trials is None else trials
    return sum(1 for t in trials if t.state in DONE_STATES and not pruning.is_infeasible(t))


def front(study: optuna.Study, trials: Sequence[FrozenTrial] | None = None) -> list[FrozenTrial]:
    """The Pareto front (or the best trial of a single-objective study), by the first objective.

    Only COMPLETE, feasible trials qualify: pruned trials have no values and infeasible ones
    violate a constraint (Optuna's best_trial(s) skip both). `trials`: as for `count_done`.
    """
    trials = study.get_trials(deepcopy=False) if trials is None else trials
    sign = 1 if study.directions[0] == optuna.study.StudyDirection.MINIMIZE else -1
    best = pruning.pareto_front(trials, study.directions)
    return sorted(best, key=lambda t: (sign * t.values[0], t.number))


def objective_names(study: optuna.Study) -> list[str]:
    return list(study.metric_names or [f"objective{i}" for i in range(len(study.directions))])


# ---- the search loop -----------------------------------------------------------------------------


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
            weights.drop_off_front(trials, self.front_store, {t.number for t in front(study, trials)})
        self._track_infeasible(study, trial)
        if count_done(study, trials) >= self.target or not self.budget.more(study, trial):
            study.stop()

    def _track_infeasible(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.infeasible = self.infeasible + 1 if pruning.is_infeasible(trial) else 0
        if self.infeasible >= INFEASIBLE_LIMIT:
            self.tripped = (f"the last {INFEASIBLE_LIMIT} candidates were all over the constraints "
                            f"({trial.user_attrs.get('infeasible', '')}). Loosen --max-params / "
                            "--max-flops / --max-memory or shrink the space (width, depth)")
            study.stop()

    def _track_failures(self, study: optuna.Study, trial: FrozenTrial) -> None:
        reason = str(trial.user_attrs.get("fail_reason", ""))
        if trial.state != TrialState.FAIL or not reason or reason in CIRCUMSTANTIAL:
            self.streak.clear()
            return
        key = (reason, str(trial.user_attrs.get("fail_message", "")).splitlines()[0][:200])
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
    accel.amp_dtype(config.accel().amp, torch_device)  # bf16 on a GPU without it: before storage
    graceful = GracefulStop()
    with graceful.installed():
        study = prepare(config, worker_index)
        graceful.study = study
        if "data" not in study.user_attrs:  # export needs the input shape, classes and statistics
            study.set_user_attr("data", bundle.describe())
        budget = budget or StudyBudget(config.trials)
        if count_done(study) >= config.trials or not budget.more(study, None):
            graceful.raise_if_pending()
            return study
        accel.setup(torch_device)
        store = None if config.keep_weights == "none" else weights.open_store(storage_url(config.storage))
        runner = TrialRunner(config, on_device(bundle, torch_device), torch_device, reporter, store,
                             predictions_store=prediction_store(study, config, bundle))
        beat = recovery.heartbeat_settings()
        stopper = _Stopper(config.trials, reporter, budget, graceful, beat,
                           front_store=store if config.keep_weights == "pareto" else None)
        reporter.start(config.study_name, count_done(study), config.trials)
        try:
            graceful.raise_if_pending()
            study.optimize(_GuardedTrial(runner, graceful, beat), timeout=config.timeout,
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
    store = weights.open_store(storage_url(config.storage))
    if predictions.LABELS_ATTR not in study.user_attrs:  # a racing worker writes the same labels
        predictions.save_labels(study, bundle, store)
    return store
