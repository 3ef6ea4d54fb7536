"""Crash safety: heartbeats, leases, and the reaper that fails and retries trials of dead workers.

A worker killed with SIGKILL (or a machine that loses power) leaves its trial RUNNING forever:
Optuna only cleans up after SIGINT. Two mechanisms find such trials:

- RDB storage (SQLite, PostgreSQL): Optuna's heartbeat. Each running trial's heartbeat row is
  refreshed every `interval` seconds; a trial whose heartbeat is older than `grace` is stale.
- Journal storage has no heartbeat, so each running trial holds a lease in its system attributes
  (host, pid, time), refreshed from a thread. A lease is dead when its process is gone (same host)
  or when it has not been refreshed for `grace` seconds (any host).

Either way a stale trial is marked FAIL with `fail_reason = "stale"` and re-enqueued once per
failure, with the same parameters, up to MAX_RETRY times; the retry records the original trial
number in `system_attrs["failed_trial"]` exactly as Optuna's RetryHeartbeatStaleTrialCallback does.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import BaseStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalStorage
from optuna.trial import FrozenTrial, TrialState

log = logging.getLogger(__name__)

BUSY_TIMEOUT_S = 60  # 16 SQLite writers with the 5 s default lost trials; 60 s lost none
HEARTBEAT_INTERVAL_S = 30
MAX_RETRY = 2
LEASE_KEY = "automl_nn:lease"
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
        raise ValueError(f"{name} must be a whole number of seconds >= 1, but got {text!r}.")
    return value


# ---- retry ---------------------------------------------------------------------------------------


class RetryStale(RetryHeartbeatStaleTrialCallback):
    """Re-enqueue a stale trial with its parameters, without its half-written results.

    Optuna's callback copies every user attribute into the retry, which would carry the dead
    trial's `fail_reason` and partial epochs into a trial that may well complete.
    """

    def __init__(self, max_retry: int = MAX_RETRY) -> None:
        with _no_experimental_warnings():
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


class TaggingRDBStorage(RDBStorage):
    """RDBStorage that records `fail_reason = "stale"` on a stale trial before Optuna fails it.

    Optuna fails stale trials itself (before each new trial, in `fail_stale_trials`), and a
    finished trial's attributes can no longer be written, so the reason is set while it is RUNNING.
    """

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        stale = super()._get_stale_trial_ids(study_id)
        for trial_id in stale:
            with contextlib.suppress(UpdateFinishedTrialError):  # another worker got there first
                _tag_stale(self, trial_id, f"no heartbeat for {self.grace_period} s")
        return stale


def _tag_stale(storage: BaseStorage, trial_id: int, why: str) -> None:
    storage.set_trial_user_attr(trial_id, "fail_reason", STALE)
    storage.set_trial_user_attr(trial_id, "fail_message", f"worker lost ({why}); trial retried")


# ---- journal leases ------------------------------------------------------------------------------


def lease_now() -> dict[str, Any]:
    """This process's lease: who holds the trial, and when it last said so."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "time": time.time()}


@contextlib.contextmanager
def hold_lease(storage: BaseStorage, trial_id: int, interval: float) -> Iterator[None]:
    """Keep a lease on a running journal trial, refreshed every `interval` seconds from a thread."""
    if not isinstance(storage, JournalStorage):
        yield
        return
    storage.set_trial_system_attr(trial_id, LEASE_KEY, lease_now())
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
    if lease.get("host") == socket.gethostname() and not _pid_alive(int(lease.get("pid", -1))):
        return True
    return now - float(lease.get("time", 0.0)) > grace


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


def reap_stale(study: optuna.Study, settings: Heartbeat, retry: RetryStale | None = None) -> list[int]:
    """Fail the study's trials whose worker is gone and enqueue their retries; returns their numbers.

    Runs before a resumed search counts its trials, and between trials. With RDB storage it is
    Optuna's heartbeat check; with journal storage it checks the leases.
    """
    storage = study._storage
    if isinstance(storage, JournalStorage):
        return _reap_leases(study, settings.grace, retry or RetryStale())
    running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    if running:
        with _no_experimental_warnings():
            optuna.storages.fail_stale_trials(study)
    return [t.number for t in running if study._storage.get_trial(t._trial_id).state == TrialState.FAIL]


def _reap_leases(study: optuna.Study, grace: float, retry: RetryStale) -> list[int]:
    storage = study._storage
    reaped = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        started = trial.datetime_start.timestamp() if trial.datetime_start else None
        if not lease_is_dead(trial.system_attrs.get(LEASE_KEY), started, grace):
            continue
        try:
            _tag_stale(storage, trial._trial_id, "its lease expired")
            storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        except UpdateFinishedTrialError:  # finished, or reaped by another worker just now
            continue
        retry(study, storage.get_trial(trial._trial_id))
        reaped.append(trial.number)
    return reaped


@contextlib.contextmanager
def _no_experimental_warnings() -> Iterator[None]:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield
