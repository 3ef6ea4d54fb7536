"""Stale trials: the journal lease reaper, RDB heartbeat tagging, and retries with the same params."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from automl_nn import recovery
from automl_nn.config import resolve
from automl_nn.study import open_storage, open_study

CONFIG = resolve({"study_name": "r", "objectives": ["accuracy"]})


def _dead_pid() -> int:
    """The pid of a process that has just ended (not reused this quickly)."""
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    return int(done.stdout)


def _running_trial(study: optuna.Study) -> optuna.trial.Trial:
    trial = study.ask()
    trial.suggest_float("lr", 1e-4, 1e-1, log=True)
    trial.set_user_attr("epoch1", {"val_accuracy": 0.5})
    return trial


def _journal_study(tmp_path: Path) -> optuna.Study:
    return open_study(CONFIG, open_storage(f"journal:{tmp_path / 'j.log'}"))


def test_dead_lease_is_failed_stale_and_retried_once(tmp_path: Path) -> None:
    study = _journal_study(tmp_path)
    trial = _running_trial(study)
    lease = {"host": socket.gethostname(), "pid": _dead_pid(), "time": time.time()}
    study._storage.set_trial_system_attr(trial._trial_id, recovery.LEASE_KEY, lease)

    assert recovery.reap_stale(study, recovery.Heartbeat()) == [trial.number]
    assert recovery.reap_stale(study, recovery.Heartbeat()) == []  # exactly one retry
    dead, retry = study.trials
    assert dead.state == TrialState.FAIL and dead.user_attrs["fail_reason"] == "stale"
    assert retry.state == TrialState.WAITING
    assert retry.params == dead.params
    assert retry.system_attrs["failed_trial"] == dead.number
    assert "fail_reason" not in retry.user_attrs and "epoch1" not in retry.user_attrs


@pytest.mark.parametrize(("host", "pid", "age", "dead"), [
    ("self", "self", 0.0, False),       # this very process, fresh: alive
    ("self", "gone", 0.0, True),        # same host, process ended
    ("other", 1, 10.0, False),          # another machine, refreshed recently
    ("other", 1, 1000.0, True),         # another machine, silent past grace
    ("self", "self", 1000.0, True),     # alive but silent past grace: hung or pid reused
])
def test_lease_liveness(host: str, pid: object, age: float, dead: bool) -> None:
    lease = {"host": socket.gethostname() if host == "self" else "elsewhere.example",
             "pid": os.getpid() if pid == "self" else _dead_pid() if pid == "gone" else pid,
             "time": time.time() - age}
    assert recovery.lease_is_dead(lease, None, grace=120) is dead


def test_trial_without_lease_is_stale_only_after_grace() -> None:
    now = time.time()
    assert not recovery.lease_is_dead(None, now - 10, grace=120, now=now)
    assert recovery.lease_is_dead(None, now - 500, grace=120, now=now)


def test_lease_is_held_and_refreshed(tmp_path: Path) -> None:
    study = _journal_study(tmp_path)
    trial = _running_trial(study)
    with recovery.hold_lease(study._storage, trial._trial_id, interval=0.2):
        first = study._storage.get_trial(trial._trial_id).system_attrs[recovery.LEASE_KEY]
        time.sleep(0.7)
        later = study._storage.get_trial(trial._trial_id).system_attrs[recovery.LEASE_KEY]
        assert first["pid"] == os.getpid() and later["time"] > first["time"]
        assert recovery.reap_stale(study, recovery.Heartbeat()) == []


def test_retries_stop_after_max_retry(tmp_path: Path) -> None:
    study = _journal_study(tmp_path)
    retry = recovery.RetryStale(max_retry=2)
    trial = _running_trial(study)
    study.tell(trial, state=TrialState.FAIL)
    frozen = study.trials[-1]
    for _ in range(3):
        retry(study, frozen)
        frozen = study.trials[-1]
        frozen.system_attrs.setdefault("retry_history", [])
    waiting = [t for t in study.trials if t.state == TrialState.WAITING]
    assert [t.system_attrs["retry_history"] for t in waiting] == [[0], [0, 1]]


def test_rdb_stale_trial_is_tagged_failed_and_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(recovery.INTERVAL_ENV, "1")
    monkeypatch.setenv(recovery.GRACE_ENV, "2")
    study = open_study(CONFIG, open_storage(f"sqlite:///{tmp_path / 's.db'}"))
    trial = _running_trial(study)
    study._storage.record_heartbeat(trial._trial_id)
    assert recovery.reap_stale(study, recovery.heartbeat_settings()) == []  # fresh heartbeat
    time.sleep(3.2)
    assert recovery.reap_stale(study, recovery.heartbeat_settings()) == [trial.number]
    dead, retry = study.trials
    assert dead.state == TrialState.FAIL and dead.user_attrs["fail_reason"] == "stale"
    assert retry.state == TrialState.WAITING and retry.params == dead.params
    assert retry.system_attrs["failed_trial"] == dead.number


def test_heartbeat_defaults_are_safe_and_env_is_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    beat = recovery.heartbeat_settings()
    assert beat.safe and beat.grace >= recovery.BUSY_TIMEOUT_S + 2 * beat.interval
    monkeypatch.setenv(recovery.INTERVAL_ENV, "zero")
    with pytest.raises(ValueError, match="whole number of seconds"):
        recovery.heartbeat_settings()
