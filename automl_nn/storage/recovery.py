"""Crash safety: heartbeats, leases, and the reaper that fails and retries trials of dead workers.

A worker killed with SIGKILL (or a machine that loses power) leaves its trial RUNNING forever:
Optuna only cleans up after SIGINT. Two mechanisms find such trials:

- RDB storage (SQLite, PostgreSQL): Optuna's heartbeat. Each running trial's heartbeat row is
  refreshed every `interval` seconds; a trial whose heartbeat is older than `grace` is stale.
- Journal storage has no heartbeat, so each running trial holds a lease in its system attributes
  (host, boot, pid, time), refreshed from a thread. A lease is dead when its process is gone (same
  host) or when it has not been refreshed for `grace` seconds (any host).
- On RDB storage the lease is written once, naming the trial's process: a run on the same machine
  then reaps a killed worker's trial at once instead of waiting out the heartbeat's grace, so
  re-running a crashed command picks up its lost trial straight away.

Either way a stale trial is marked FAIL with `fail_reason = "stale"` and re-enqueued once per
failure, with the same parameters, up to MAX_RETRY times; the retry records the original trial
number in `system_attrs["failed_trial"]` exactly as Optuna's RetryHeartbeatStaleTrialCallback does.

A live worker must not die of a passing storage error either: RDB calls that fail transiently (a
lock held past the busy timeout, a dropped connection) are retried with bounded exponential backoff
(`RetryPolicy`); errors that would fail again the same way are raised at once. That covers every
write a search makes, trial and study creation included, and the reads between them. Creating a
trial is the one write that is not idempotent, so each creation carries a token in the same
transaction, and a retry first looks for a trial that an earlier try committed with it.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import random
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Container, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import optuna
import sqlalchemy.dialects.postgresql
import sqlalchemy.dialects.sqlite
import sqlalchemy.engine
import sqlalchemy.event
import sqlalchemy.exc
import sqlalchemy.orm
from optuna._typing import JSONSerializable
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages._rdb import models
from optuna.storages._rdb.storage import _create_scoped_session
from optuna.storages.journal import JournalStorage
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

from automl_nn.errors import ConfigError, StorageUnavailable
from automl_nn.storage.urls import BUSY_TIMEOUT_S

log = logging.getLogger(__name__)
T = TypeVar("T")

HEARTBEAT_INTERVAL_S = 30
MAX_RETRY = 2
LEASE_KEY = "automl_nn:lease"
# A trial's creation token (system attribute): tells a retried creation whether an earlier try,
# whose commit went through before its connection dropped, already made the trial.
CREATION_KEY = "automl_nn:created"
STALE = "stale"
# Tests shorten these so a kill -9 test takes seconds; production keeps the safe defaults.
INTERVAL_ENV = "AUTOMLNN_HEARTBEAT_INTERVAL"
GRACE_ENV = "AUTOMLNN_HEARTBEAT_GRACE"


@dataclass(frozen=True)
class Heartbeat:
    """How often a live trial proves it is alive, and how long silence is tolerated."""

    interval: int = HEARTBEAT_INTERVAL_S
    grace: int = max(4 * HEARTBEAT_INTERVAL_S, BUSY_TIMEOUT_S + 2 * HEARTBEAT_INTERVAL_S)

    @property
    def safe(self) -> bool:
        """A heartbeat write can wait a whole busy timeout; grace must outlast that plus two beats."""
        return self.grace >= max(4 * self.interval, BUSY_TIMEOUT_S + 2 * self.interval)


def heartbeat_settings() -> Heartbeat:
    """The defaults, or the values of AUTOMLNN_HEARTBEAT_INTERVAL / _GRACE (whole seconds)."""
    default = Heartbeat()
    interval = _env_seconds(INTERVAL_ENV, default.interval)
    grace = _env_seconds(GRACE_ENV, max(default.grace, 4 * interval))
    settings = Heartbeat(interval, grace)
    if not settings.safe:
        log.warning("heartbeat interval %d s with grace %d s: live trials may be marked stale while "
                    "the storage is busy (safe: grace >= max(4 x interval, %d + 2 x interval))",
                    interval, grace, BUSY_TIMEOUT_S)
    return settings


def _env_seconds(name: str, default: int) -> int:
    text = os.environ.get(name)
    if not text:
        return default
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ConfigError(f"environment variable {name}: must be a whole number of seconds >= 1, but "
                          f"got {text!r}. Set it to e.g. 30, or unset it for the default.")
    return value


# ---- retry ---------------------------------------------------------------------------------------


class RetryStale(RetryHeartbeatStaleTrialCallback):
    """Re-enqueue a stale trial with its parameters, without its half-written results.

    Optuna's callback copies every user attribute into the retry, which would carry the dead
    trial's `fail_reason` and partial epochs into a trial that may well complete.
    """

    def __init__(self, max_retry: int = MAX_RETRY) -> None:
        with no_experimental_warnings():
            super().__init__(max_retry=max_retry)
        self.max_retry = max_retry

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        history = [*trial.system_attrs.get("retry_history", []), trial.number]
        if len(history) > self.max_retry:
            log.warning("trial %d was stale %d times; not retried again", trial.number, len(history))
            return
        system_attrs: dict[str, Any] = {
            "failed_trial": trial.system_attrs.get("failed_trial", trial.number),
            "retry_history": history,
        }
        study.add_trial(optuna.create_trial(
            state=TrialState.WAITING, params=trial.params, distributions=trial.distributions,
            system_attrs=system_attrs,
        ))
        log.warning("trial %d lost its worker; retrying it with the same parameters", trial.number)


# SQLite allows 32,766 bound values per statement (999 before 3.32): three per row.
UPSERT_ROWS = 300
_UPSERT_DIALECTS: dict[str, Any] = {"sqlite": sqlalchemy.dialects.sqlite,
                                    "postgresql": sqlalchemy.dialects.postgresql}


class TaggingRDBStorage(RDBStorage):
    """RDBStorage that tags stale trials, finds silent ones, and retries transient write failures.

    Optuna fails stale trials itself (before each new trial, in `fail_stale_trials`), and a
    finished trial's attributes can no longer be written, so `fail_reason = "stale"` is set while
    it is still RUNNING. A trial that never recorded a heartbeat (its worker died between creating
    it and the first beat) is stale too once it is older than the grace period; Optuna skips those.

    Every storage call a search makes goes through `retrying`: the writes below, trial and study
    creation, and the reads. Optuna's `_CachedStorage` (the wrapper a study puts around RDB
    storage) calls `_create_new_trial`, `_set_trial_param` and `_get_trials`, so those are the
    methods overridden.
    """

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        found = retrying(f"_get_stale_trial_ids(study id {study_id})",
                         lambda: super(TaggingRDBStorage, self)._get_stale_trial_ids(study_id),
                         kind="read")
        silent = retrying(f"_silent_trial_ids(study id {study_id})",
                          lambda: self._silent_trial_ids(study_id), kind="read")
        stale = [*found, *silent]
        for trial_id in stale:
            with contextlib.suppress(UpdateFinishedTrialError):  # another worker got there first
                _tag_stale(self, trial_id, f"no heartbeat for {self.grace_period} s")
        return stale

    def _silent_trial_ids(self, study_id: int) -> list[int]:
        cutoff = datetime.now() - timedelta(seconds=self.grace_period or 0)
        # As Optuna's own _get_stale_trial_ids reads them; its private ORM models are untyped here.
        model: Any = models.TrialModel
        with _create_scoped_session(self.scoped_session, True) as session:
            running = (session.query(model).options(sqlalchemy.orm.selectinload(model.heartbeats))
                       .filter(model.state == TrialState.RUNNING, model.study_id == study_id).all())
            # datetime_start reads back as naive local time, like datetime.now()
            return [int(t.trial_id) for t in running if not t.heartbeats
                    and t.datetime_start is not None and t.datetime_start < cutoff]

    # ---- writes, retried on transient errors ----

    def set_trial_state_values(self, trial_id: int, state: TrialState,
                               values: Sequence[float] | None = None) -> bool:
        failed: list[BaseException] = []

        def write() -> bool:
            try:
                return super(TaggingRDBStorage, self).set_trial_state_values(trial_id, state, values)
            except UpdateFinishedTrialError:
                # A try that failed may have committed anyway (connection lost after COMMIT).
                if failed and state.is_finished() and self.get_trial(trial_id).state == state:
                    return True
                raise
            except Exception as exc:
                failed.append(exc)
                raise

        return retrying(f"set_trial_state_values(trial id {trial_id}, {state.name})", write)

    def record_heartbeat(self, trial_id: int) -> None:
        try:
            retrying(f"record_heartbeat(trial id {trial_id})",
                     lambda: super(TaggingRDBStorage, self).record_heartbeat(trial_id))
        except StorageUnavailable as exc:
            # Raising would end Optuna's heartbeat thread for good; the next beat tries again.
            log.error("%s The next heartbeat tries again; if none gets through for %s s the trial "
                      "is marked stale.", exc, self.grace_period)

    def _set_trial_param(self, trial_id: int, param_name: str, param_value_internal: float,
                         distribution: optuna.distributions.BaseDistribution,
                         previous_distribution: optuna.distributions.BaseDistribution | None) -> None:
        # set_trial_param and _CachedStorage.set_trial_param both come here
        retrying(f"set_trial_param(trial id {trial_id}, {param_name})",
                 lambda: super(TaggingRDBStorage, self)._set_trial_param(
                     trial_id, param_name, param_value_internal, distribution, previous_distribution))

    def set_trial_intermediate_value(self, trial_id: int, step: int,
                                     intermediate_value: float) -> None:
        retrying(f"set_trial_intermediate_value(trial id {trial_id}, step {step})",
                 lambda: super(TaggingRDBStorage, self).set_trial_intermediate_value(
                     trial_id, step, intermediate_value))

    def set_trial_user_attr(self, trial_id: int, key: str, value: Any) -> None:
        retrying(f"set_trial_user_attr(trial id {trial_id}, {key})",
                 lambda: super(TaggingRDBStorage, self).set_trial_user_attr(trial_id, key, value))

    def set_trial_user_attrs(self, trial_id: int, attrs: Mapping[str, Any]) -> None:
        """Several user attributes in one transaction: one commit instead of one per attribute."""
        def write() -> None:
            with _create_scoped_session(self.scoped_session, True) as session:
                self._upsert_user_attrs(session, trial_id, attrs)

        retrying(f"set_trial_user_attrs(trial id {trial_id}, {', '.join(attrs)})", write)

    def _upsert_user_attrs(self, session: sqlalchemy.orm.Session, trial_id: int,
                           attrs: Mapping[str, Any]) -> None:
        """Optuna's per-attribute upsert, as one multi-row statement on SQLite and PostgreSQL (a
        trial's buffered epoch records are hundreds of attributes); attribute by attribute
        elsewhere. The same rows either way: one per (trial, key), the value as JSON."""
        dialect = _UPSERT_DIALECTS.get(self.engine.name)
        if dialect is None or (self.engine.name == "sqlite" and sqlite3.sqlite_version_info < (3, 24)):
            for key, value in attrs.items():
                self._set_trial_attr_without_commit(session, models.TrialUserAttributeModel,
                                                    trial_id, key, value)
            return
        trial = models.TrialModel.find_or_raise_by_id(trial_id, session)
        self.check_trial_is_updatable(trial_id, trial.state)  # type: ignore[arg-type,unused-ignore]
        model = models.TrialUserAttributeModel
        rows = [{"trial_id": trial_id, "key": key, "value_json": json.dumps(value)}
                for key, value in attrs.items()]
        for start in range(0, len(rows), UPSERT_ROWS):
            insert = dialect.insert(model).values(rows[start:start + UPSERT_ROWS])
            session.execute(insert.on_conflict_do_update(
                index_elements=[model.trial_id, model.key],
                set_={"value_json": insert.excluded.value_json}))

    def set_trial_system_attr(self, trial_id: int, key: str, value: JSONSerializable) -> None:
        retrying(f"set_trial_system_attr(trial id {trial_id}, {key})",
                 lambda: super(TaggingRDBStorage, self).set_trial_system_attr(trial_id, key, value))

    def set_study_user_attr(self, study_id: int, key: str, value: Any) -> None:
        retrying(f"set_study_user_attr({key})",
                 lambda: super(TaggingRDBStorage, self).set_study_user_attr(study_id, key, value))

    def set_study_system_attr(self, study_id: int, key: str, value: JSONSerializable) -> None:
        retrying(f"set_study_system_attr({key})",
                 lambda: super(TaggingRDBStorage, self).set_study_system_attr(study_id, key, value))

    def create_new_study(self, directions: Sequence[StudyDirection],
                         study_name: str | None = None) -> int:
        """Retried like any write. A try whose commit went through makes the next one find the name
        taken (DuplicatedStudyError, not retried): `study.open_study` then loads that study."""
        return retrying(f"create_new_study({study_name})",
                        lambda: super(TaggingRDBStorage, self).create_new_study(directions, study_name))

    def delete_study(self, study_id: int) -> None:
        tried: list[BaseException] = []

        def delete() -> None:
            try:
                super(TaggingRDBStorage, self).delete_study(study_id)
            except KeyError:
                if not tried:
                    raise  # gone already, and not by an earlier try of ours
            except Exception as exc:
                tried.append(exc)
                raise

        retrying(f"delete_study(study id {study_id})", delete)

    # ---- trial creation: retried, and never twice ----

    def _create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> FrozenTrial:
        """Create a trial (every ask(), every enqueued or retried trial), retried on transient errors.

        Replaces Optuna's own loop (5 tries on any StorageInternalError, no check): a try whose
        COMMIT went through but whose answer was lost would leave a second trial. Each creation
        writes a fresh token (`CREATION_KEY`) in its own transaction, and a retry first looks for
        a trial of the study holding that token.
        """
        token = uuid.uuid4().hex
        tried: list[BaseException] = []

        def create() -> FrozenTrial:
            if tried:
                found = self._trial_created_with(study_id, token)
                if found is not None:
                    log.warning("trial %d was created by a try that seemed to fail; not creating "
                                "it twice", found.number)
                    return found
            try:
                return self._insert_trial(study_id, template_trial, token)
            except Exception as exc:
                tried.append(exc)
                raise

        return retrying(f"create_new_trial(study id {study_id})", create)

    def _insert_trial(self, study_id: int, template_trial: FrozenTrial | None,
                      token: str) -> FrozenTrial:
        """One try: what Optuna's `_create_new_trial` does in one transaction, plus the token."""
        model: Any = models  # Optuna's ORM models are untyped here
        if template_trial is not None and CREATION_KEY in template_trial.system_attrs:
            template_trial = copy.copy(template_trial)  # a copied trial: its token is not ours
            template_trial.system_attrs = {k: v for k, v in template_trial.system_attrs.items()
                                           if k != CREATION_KEY}
        with _create_scoped_session(self.scoped_session) as session:
            # the row lock serialises trial numbers, as in Optuna
            model.StudyModel.find_or_raise_by_id(study_id, session, for_update=True)
            trial = self._get_prepared_new_trial(study_id, template_trial, session)
            session.add(model.TrialSystemAttributeModel(trial_id=trial.trial_id, key=CREATION_KEY,
                                                        value_json=json.dumps(token)))
            frozen = _new_frozen_trial(trial, template_trial)  # before COMMIT expires the row
        frozen.system_attrs = {**frozen.system_attrs, CREATION_KEY: token}
        return frozen

    def _trial_created_with(self, study_id: int, token: str) -> FrozenTrial | None:
        model: Any = models
        attr = model.TrialSystemAttributeModel
        with _create_scoped_session(self.scoped_session) as session:
            row = (session.query(attr.trial_id)
                   .join(model.TrialModel, model.TrialModel.trial_id == attr.trial_id)
                   .filter(model.TrialModel.study_id == study_id, attr.key == CREATION_KEY,
                           attr.value_json == json.dumps(token))
                   .one_or_none())
        return None if row is None else self.get_trial(int(row[0]))

    # ---- reads, retried on the same transient errors (a dropped connection) ----

    def _get_trials(self, study_id: int, states: Container[TrialState] | None,
                    included_trial_ids: set[int], trial_id_greater_than: int) -> list[FrozenTrial]:
        return retrying(f"get_all_trials(study id {study_id})",
                        lambda: super(TaggingRDBStorage, self)._get_trials(
                            study_id, states, included_trial_ids, trial_id_greater_than), kind="read")



# Reads retry as writes do: a search reads its trials and study between writes, and a connection
# lost there would end it as surely as one lost in a write. Each is RDBStorage's own read, retried.
RETRIED_READS = ("get_trial", "get_trial_id_from_study_id_trial_number", "get_trial_param",
                 "get_trial_user_attrs", "get_trial_system_attrs", "get_study_id_from_name",
                 "get_study_name_from_id", "get_study_directions", "get_study_user_attrs",
                 "get_study_system_attrs", "get_all_studies", "_get_best_trial_id")


def _retried_read(name: str) -> Callable[..., Any]:
    def method(self: RDBStorage, *args: Any) -> Any:
        read = getattr(RDBStorage, name)  # looked up per call, as super() would
        return retrying(f"{name.lstrip('_')}({', '.join(map(str, args))})", lambda: read(self, *args),
                        kind="read")

    method.__name__ = method.__qualname__ = name
    method.__doc__ = getattr(RDBStorage, name).__doc__
    return method


for _name in RETRIED_READS:
    setattr(TaggingRDBStorage, _name, _retried_read(_name))


def _new_frozen_trial(trial: Any, template_trial: FrozenTrial | None) -> FrozenTrial:
    """The FrozenTrial of a trial row just created, as Optuna's `_create_new_trial` builds it."""
    if template_trial is not None:
        frozen = copy.deepcopy(template_trial)
        frozen.number = trial.number
        frozen.datetime_start = trial.datetime_start
        frozen._trial_id = trial.trial_id
        return frozen
    return FrozenTrial(number=trial.number, state=trial.state, value=None, values=None,
                       datetime_start=trial.datetime_start, datetime_complete=None, params={},
                       distributions={}, user_attrs={}, system_attrs={}, intermediate_values={},
                       trial_id=trial.trial_id)


def set_user_attrs(trial: optuna.Trial, attrs: Mapping[str, Any]) -> None:
    """Record several user attributes of a running trial, in one commit where the storage allows.

    Exactly what `trial.set_user_attr` for each would leave, the trial's own cached copy included.
    """
    _store_user_attrs(trial.storage, trial._trial_id, attrs)
    trial._cached_frozen_trial.user_attrs.update(attrs)  # as Trial.set_user_attr does


def _store_user_attrs(storage: BaseStorage, trial_id: int, attrs: Mapping[str, Any]) -> None:
    """One transaction on our RDB storage (one commit, all or nothing); one write each elsewhere."""
    # A study wraps RDB storage in Optuna's _CachedStorage, which passes attribute writes through.
    backend = getattr(storage, "_backend", storage)
    if isinstance(backend, TaggingRDBStorage) and len(attrs) > 1:
        backend.set_trial_user_attrs(trial_id, attrs)
        return
    for key, value in attrs.items():
        storage.set_trial_user_attr(trial_id, key, value)


def _tag_stale(storage: BaseStorage, trial_id: int, why: str) -> None:
    _store_user_attrs(storage, trial_id, {"fail_reason": STALE,
                                          "fail_message": f"worker lost ({why}); trial retried"})


def engine_kwargs(url: str) -> dict[str, Any]:
    """SQLAlchemy engine settings: SQLite waits BUSY_TIMEOUT_S for a lock; servers ping pooled links."""
    if url.startswith("sqlite"):
        return {"connect_args": {"timeout": BUSY_TIMEOUT_S}}
    return {"pool_pre_ping": True}


def rdb_storage(url: str) -> TaggingRDBStorage:
    """An RDB storage with this tool's settings: busy timeout, heartbeat, stale-trial retries.

    SQLite files are opened in WAL mode with `synchronous=NORMAL`: a commit no longer waits for
    the disk (a trial makes some 25 commits; at about 12 ms of fsync each they were the largest
    cost outside training), readers do not block the writer, and a killed process loses nothing
    it committed (only a power cut can lose the last commits, never the file's consistency).
    WAL needs a local disk: for a database shared by several machines use PostgreSQL.
    """
    if url.startswith("sqlite") and not sqlalchemy.event.contains(sqlalchemy.engine.Engine,
                                                                  "connect", _sqlite_wal):
        sqlalchemy.event.listen(sqlalchemy.engine.Engine, "connect", _sqlite_wal)
    beat = heartbeat_settings()
    with no_experimental_warnings():
        return TaggingRDBStorage(url, engine_kwargs=engine_kwargs(url),
                                 heartbeat_interval=beat.interval, grace_period=beat.grace,
                                 heartbeat_stale_trial_callback=RetryStale(max_retry=MAX_RETRY))


def _sqlite_wal(connection: Any, _record: Any) -> None:
    """Each new SQLite connection (of any engine in this process): WAL, synchronous=NORMAL."""
    if not isinstance(connection, sqlite3.Connection):
        return
    cursor = connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
    finally:
        cursor.close()


# ---- transient storage errors --------------------------------------------------------------------

# Errors that say "try again later": a lock held past the busy timeout, a lost connection, a pool
# timeout. Everything else (a constraint, bad data, a finished trial) fails again the same way.
_TRANSIENT = (sqlalchemy.exc.OperationalError, sqlalchemy.exc.DisconnectionError,
              sqlalchemy.exc.TimeoutError, ConnectionError, TimeoutError)
# OperationalErrors that are mistakes in the schema or the SQL, not passing conditions.
_PERMANENT_TEXT = ("no such table", "no such column", "syntax error")


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded exponential backoff: `attempts` tries in all, waiting base, 2 x base, ... <= cap.

    Each wait is scaled by a random factor in [0.5, 1] so that workers that failed together do
    not retry together. The defaults wait at most 15.5 s in all (0.5 + 1 + 2 + 4 + 8), on top of
    SQLite's own busy timeout inside each try.
    """

    attempts: int = 6
    base: float = 0.5
    cap: float = 8.0

    def delays(self) -> list[float]:
        """The waits between tries, before jitter."""
        return [min(self.cap, self.base * 2**i) for i in range(self.attempts - 1)]


WRITE_RETRY = RetryPolicy()


def is_transient(exc: BaseException) -> bool:
    """Whether a storage error may succeed if tried again; follows the explicit `raise ... from`.

    SQLAlchemy reports a connection lost in the middle of a query's follow-up loads as a
    PendingRollbackError raised while handling the real error: there the error it was handling
    decides.
    """
    current: BaseException | None = exc
    for _ in range(10):  # a cause chain is short; never loop on a cycle
        if current is None:
            return False
        if isinstance(current, sqlalchemy.exc.DBAPIError) and current.connection_invalidated:
            return True
        if isinstance(current, _TRANSIENT):
            return not any(text in str(current).lower() for text in _PERMANENT_TEXT)
        if isinstance(current, sqlalchemy.exc.PendingRollbackError):
            current = current.__cause__ or current.__context__
            continue
        current = current.__cause__
    return False


def retrying(what: str, write: Callable[[], T], policy: RetryPolicy | None = None,
             sleep: Callable[[float], None] = time.sleep, *, kind: str = "write") -> T:
    """Run a storage call (`kind`: write or read); retry transient failures with backoff, then give
    up clearly.

    Raises StorageUnavailable once `policy.attempts` tries have failed transiently; any other
    error is raised unchanged at its first occurrence, and so is a StorageUnavailable from a call
    inside `write` that used up its own tries.
    """
    policy = policy or WRITE_RETRY
    delays = policy.delays()
    waited = 0.0
    for attempt in range(policy.attempts):
        try:
            return write()
        except StorageUnavailable:
            raise  # retried already, inside: never multiply the tries
        except Exception as exc:
            if not is_transient(exc):
                raise
            if attempt >= len(delays):
                raise StorageUnavailable(
                    f"storage {kind} {what} failed {policy.attempts} times over {waited:.1f} s "
                    f"({root_message(exc)}). The database stays busy or unreachable: check that "
                    "it is up and that no other program holds a long lock on it, then run the "
                    "same command again (a trial left running is failed and retried once its "
                    "heartbeat is stale).") from exc
            wait = delays[attempt] * random.uniform(0.5, 1.0)
            log.warning("storage %s %s failed (%s); retry %d of %d in %.1f s", kind, what,
                        root_message(exc), attempt + 1, len(delays), wait)
            sleep(wait)
            waited += wait
    raise AssertionError("unreachable: the last attempt returns or raises")


def root_message(exc: BaseException) -> str:
    """The first line of the innermost cause: `(sqlite3.OperationalError) database is locked`."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def storage_failure(exc: BaseException) -> StorageUnavailable | None:
    """The StorageUnavailable behind `exc`, if any.

    Optuna's optimize() checks the trial's state in a `finally` after a failed tell and raises
    AssertionError("Should not reach.") over our error; the original is still its context.
    """
    current: BaseException | None = exc
    for _ in range(10):
        if current is None or isinstance(current, StorageUnavailable):
            return current
        current = current.__cause__ or current.__context__
    return None


# ---- journal leases ------------------------------------------------------------------------------


def lease_now() -> dict[str, Any]:
    """This process's lease: who holds the trial, and when it last said so."""
    return {"host": socket.gethostname(), "boot": _boot_id(), "pid": os.getpid(),
            "time": time.time()}


def _boot_id() -> str | None:
    """This machine's boot id (Linux): tells apart two machines that share a host name."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip() or None
    except OSError:
        return None


@contextlib.contextmanager
def hold_lease(storage: BaseStorage, trial_id: int, interval: float) -> Iterator[None]:
    """Name this process as the trial's holder; on journal storage, refresh that every `interval` s.

    RDB storage has Optuna's heartbeat for the time; there the lease only says which process runs
    the trial, so one write per trial.
    """
    storage.set_trial_system_attr(trial_id, LEASE_KEY, lease_now())
    if not isinstance(storage, JournalStorage):
        yield
        return
    stop = threading.Event()
    thread = threading.Thread(target=_refresh, args=(storage, trial_id, interval, stop),
                              name="automl-nn-lease", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def _refresh(storage: BaseStorage, trial_id: int, interval: float, stop: threading.Event) -> None:
    while not stop.wait(interval):
        try:
            storage.set_trial_system_attr(trial_id, LEASE_KEY, lease_now())
        except UpdateFinishedTrialError:
            return
        except Exception as exc:  # a missed refresh is not fatal; grace covers several
            log.warning("lease refresh of trial %d failed: %s", trial_id, exc)


def lease_is_dead(lease: dict[str, Any] | None, started: float | None, grace: float,
                  now: float | None = None) -> bool:
    """Whether a running trial's holder is gone: its process ended here, or it fell silent."""
    now = time.time() if now is None else now
    if lease is None:  # killed between ask() and the first lease write
        return started is not None and now - started > grace
    return holder_is_gone(lease) or now - float(lease.get("time", 0.0)) > grace


def holder_is_gone(lease: dict[str, Any] | None) -> bool:
    """Whether the lease names a process of this very machine that no longer exists."""
    if lease is None or lease.get("host") != socket.gethostname():
        return False
    boot = lease.get("boot")
    if boot is not None and _boot_id() is not None and boot != _boot_id():
        return False  # another machine with this host name (or this one before a reboot: grace)
    return not _pid_alive(int(lease.get("pid", -1)))


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


# ---- the reaper ----------------------------------------------------------------------------------


def reap_stale(study: optuna.Study, settings: Heartbeat, retry: RetryStale | None = None,
               trials: Sequence[FrozenTrial] | None = None, heartbeats: bool = True) -> list[int]:
    """Fail the study's trials whose worker is gone and enqueue their retries; returns their numbers.

    Runs before a resumed search counts its trials, and between trials. Journal storage: the
    leases. RDB storage: trials whose process on this machine has ended, then Optuna's heartbeat
    check for the rest, unless `heartbeats` is False (between trials: optimize() makes that check
    itself before each trial). `trials`: the study's trials, if just read.
    """
    retry = retry or RetryStale()
    trials = study.get_trials(deepcopy=False) if trials is None else trials
    running = [t for t in trials if t.state == TrialState.RUNNING]
    if isinstance(study._storage, JournalStorage):
        return _reap_leases(study, running, settings.grace, retry)
    gone = [t for t in running if holder_is_gone(t.system_attrs.get(LEASE_KEY))]
    reaped = [t.number for t in gone
              if _fail_stale(study, t, f"its process {t.system_attrs[LEASE_KEY]['pid']} ended", retry)]
    if heartbeats and len(gone) < len(running):
        with no_experimental_warnings():
            optuna.storages.fail_stale_trials(study)
    reaped_ids = {t._trial_id for t in gone}
    return [*reaped, *(t.number for t in running if t._trial_id not in reaped_ids
                       and study._storage.get_trial(t._trial_id).state == TrialState.FAIL)]


def _reap_leases(study: optuna.Study, running: Sequence[FrozenTrial], grace: float,
                 retry: RetryStale) -> list[int]:
    reaped = []
    for trial in running:
        started = trial.datetime_start.timestamp() if trial.datetime_start else None
        if lease_is_dead(trial.system_attrs.get(LEASE_KEY), started, grace) and \
                _fail_stale(study, trial, "its lease expired", retry):
            reaped.append(trial.number)
    return reaped


def _fail_stale(study: optuna.Study, trial: FrozenTrial, why: str, retry: RetryStale) -> bool:
    """Tag, fail and retry one lost trial; False when it finished, or another worker reaped it."""
    storage = study._storage
    try:
        _tag_stale(storage, trial._trial_id, why)
        if not storage.set_trial_state_values(trial._trial_id, TrialState.FAIL):
            return False
    except UpdateFinishedTrialError:
        return False
    retry(study, storage.get_trial(trial._trial_id))
    return True


@contextlib.contextmanager
def no_experimental_warnings() -> Iterator[None]:
    """Heartbeats, stale-trial retries and metric names are "experimental" in Optuna; we rely on them."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield
