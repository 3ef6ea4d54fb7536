"""Stale trials (journal leases, RDB heartbeats, retries with the same params) and retried writes."""

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
import sqlalchemy.event
import sqlalchemy.exc
from optuna.exceptions import StorageInternalError, UpdateFinishedTrialError
from optuna.storages import RDBStorage
from optuna.trial import TrialState

from automl_nn.config import resolve
from automl_nn.errors import ConfigError, StorageUnavailable
from automl_nn.storage import recovery
from automl_nn.storage.backends import open_storage
from automl_nn.study import open_study

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


def _quick_heartbeat_study(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> optuna.Study:
    """An SQLite study whose heartbeat is 1 s and grace 2 s, so staleness shows in seconds."""
    monkeypatch.setenv(recovery.INTERVAL_ENV, "1")
    monkeypatch.setenv(recovery.GRACE_ENV, "2")
    return open_study(CONFIG, open_storage(f"sqlite:///{tmp_path / 's.db'}"))


def test_rdb_stale_trial_is_tagged_failed_and_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    study = _quick_heartbeat_study(tmp_path, monkeypatch)
    trial = _running_trial(study)
    study._storage.record_heartbeat(trial._trial_id)
    assert recovery.reap_stale(study, recovery.heartbeat_settings()) == []  # fresh heartbeat
    time.sleep(3.2)
    # between trials the heartbeat check is optimize()'s own; only the start of a run makes it here
    assert recovery.reap_stale(study, recovery.heartbeat_settings(), heartbeats=False) == []
    assert recovery.reap_stale(study, recovery.heartbeat_settings()) == [trial.number]
    dead, retry = study.trials
    assert dead.state == TrialState.FAIL and dead.user_attrs["fail_reason"] == "stale"
    assert retry.state == TrialState.WAITING and retry.params == dead.params
    assert retry.system_attrs["failed_trial"] == dead.number


@pytest.mark.parametrize(("holder", "reaped"), [
    ("gone", True),    # its process on this machine ended: reaped at once, no grace to wait out
    ("self", False),   # this very process: alive
    ("other", False),  # another machine: only its heartbeat can tell
])
def test_rdb_trial_of_an_ended_process_is_reaped_without_waiting(
    holder: str, reaped: bool, tmp_path: Path
) -> None:
    study = open_study(CONFIG, open_storage(f"sqlite:///{tmp_path / 's.db'}"))  # 120 s grace
    trial = _running_trial(study)
    study._storage.record_heartbeat(trial._trial_id)
    lease = {**recovery.lease_now(), "pid": _dead_pid() if holder == "gone" else os.getpid()}
    if holder == "other":
        lease = {**lease, "host": "elsewhere.example", "pid": _dead_pid()}
    study._storage.set_trial_system_attr(trial._trial_id, recovery.LEASE_KEY, lease)

    assert recovery.reap_stale(study, recovery.heartbeat_settings()) == ([trial.number] if reaped else [])
    states = [t.state for t in study.trials]
    assert states == ([TrialState.FAIL, TrialState.WAITING] if reaped else [TrialState.RUNNING])
    if reaped:
        assert study.trials[0].user_attrs["fail_reason"] == "stale"
        assert recovery.reap_stale(study, recovery.heartbeat_settings()) == []  # exactly one retry


def test_lease_of_a_rebooted_or_namesake_machine_is_left_to_the_heartbeat() -> None:
    lease = {**recovery.lease_now(), "pid": _dead_pid()}
    assert recovery.holder_is_gone(lease)
    assert not recovery.holder_is_gone({**lease, "boot": "another-boot"})


def test_rdb_lease_is_written_once_naming_the_process(tmp_path: Path) -> None:
    study = open_study(CONFIG, open_storage(f"sqlite:///{tmp_path / 's.db'}"))
    trial = _running_trial(study)
    with recovery.hold_lease(study._storage, trial._trial_id, interval=0.2):
        first = study._storage.get_trial(trial._trial_id).system_attrs[recovery.LEASE_KEY]
        time.sleep(0.5)
        assert study._storage.get_trial(trial._trial_id).system_attrs[recovery.LEASE_KEY] == first
    assert first["pid"] == os.getpid() and first["host"] == socket.gethostname()


def test_heartbeat_defaults_are_safe_and_env_is_validated(monkeypatch: pytest.MonkeyPatch) -> None:
    beat = recovery.heartbeat_settings()
    assert beat.safe and beat.grace >= recovery.BUSY_TIMEOUT_S + 2 * beat.interval
    monkeypatch.setenv(recovery.INTERVAL_ENV, "zero")
    with pytest.raises(ConfigError, match="whole number of seconds"):
        recovery.heartbeat_settings()


def test_trial_without_a_heartbeat_is_stale_after_grace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A worker killed between creating its trial and the first heartbeat leaves exactly this.
    study = _quick_heartbeat_study(tmp_path, monkeypatch)
    trial = _running_trial(study)
    assert recovery.reap_stale(study, recovery.heartbeat_settings()) == []  # young: may be alive
    time.sleep(2.2)
    assert recovery.reap_stale(study, recovery.heartbeat_settings()) == [trial.number]
    dead, retry = study.trials
    assert dead.user_attrs["fail_reason"] == "stale" and retry.params == dead.params


def test_study_whose_creator_died_before_describing_it_is_completed(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    optuna.create_study(study_name="r", storage=open_storage(url), direction="maximize")
    study = open_study(CONFIG, open_storage(url))
    assert study.user_attrs["config"] == CONFIG.to_raw()
    assert study.user_attrs["config_hash"] == CONFIG.identity_hash()
    assert study.metric_names == ["accuracy"]


# ---- retried storage writes -----------------------------------------------------------------------


def _locked() -> StorageInternalError:
    """What Optuna raises when SQLite stays locked past the busy timeout."""
    cause = sqlalchemy.exc.OperationalError("UPDATE trials", {}, Exception("database is locked"))
    error = StorageInternalError("An exception is raised during the commit.")
    error.__cause__ = cause
    return error


class _Flaky:
    """A write that fails with `errors` in turn, then returns "written"."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors, self.calls = list(errors), 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "written"


def test_retry_policy_backs_off_exponentially_up_to_a_cap() -> None:
    assert recovery.RetryPolicy().delays() == [0.5, 1.0, 2.0, 4.0, 8.0]
    assert recovery.RetryPolicy(attempts=7, base=1.0, cap=5.0).delays() == [1, 2, 4, 5, 5, 5]


def test_transient_failures_are_retried_with_jittered_backoff() -> None:
    write, sleeps = _Flaky(_locked(), _locked()), []
    assert recovery.retrying("w", write, sleep=sleeps.append) == "written"
    assert write.calls == 3
    assert 0.25 <= sleeps[0] <= 0.5 and 0.5 <= sleeps[1] <= 1.0


def _pending_rollback(handling: BaseException) -> StorageInternalError:
    """What Optuna raises when a connection drops during a query's follow-up loads: SQLAlchemy
    raises PendingRollbackError while handling the error that killed the transaction."""
    try:
        try:
            raise handling
        except type(handling):
            try:
                raise sqlalchemy.exc.PendingRollbackError("Can't reconnect until invalid transaction "
                                                          "is rolled back.", None, None)
            except sqlalchemy.exc.PendingRollbackError as pending:
                raise StorageInternalError("An exception is raised during the commit.") from pending
    except StorageInternalError as error:
        return error


def test_a_connection_lost_under_a_pending_rollback_is_transient() -> None:
    lost = sqlalchemy.exc.OperationalError("SELECT", {}, Exception("server closed the connection"))
    write, sleeps = _Flaky(_pending_rollback(lost)), []
    assert recovery.retrying("w", write, sleep=sleeps.append) == "written" and write.calls == 2
    # what decides is the error being handled: a constraint is still raised at once
    assert not recovery.is_transient(
        _pending_rollback(sqlalchemy.exc.IntegrityError("INSERT", {}, Exception("UNIQUE"))))


@pytest.mark.parametrize("error", [
    StorageInternalError("constraint"),                          # no transient cause
    ValueError("bad value"),
    UpdateFinishedTrialError("finished"),
    sqlalchemy.exc.IntegrityError("INSERT", {}, Exception("UNIQUE constraint failed")),
    sqlalchemy.exc.OperationalError("SELECT", {}, Exception("no such table: trials")),
])
def test_errors_that_would_fail_again_are_raised_at_once(error: Exception) -> None:
    write, sleeps = _Flaky(error), []
    with pytest.raises(type(error)):
        recovery.retrying("w", write, sleep=sleeps.append)
    assert write.calls == 1 and sleeps == []


def test_retries_give_up_with_a_clear_error() -> None:
    write, sleeps = _Flaky(*[_locked() for _ in range(4)]), []
    with pytest.raises(StorageUnavailable) as raised:
        recovery.retrying("set_trial_state_values(trial id 3, COMPLETE)", write,
                          recovery.RetryPolicy(attempts=4, base=0.1), sleep=sleeps.append)
    assert write.calls == 4 and len(sleeps) == 3
    message = str(raised.value)
    assert "set_trial_state_values(trial id 3, COMPLETE) failed 4 times" in message
    assert "database is locked" in message and "run the same command again" in message


def test_a_final_state_committed_by_a_failed_try_counts_as_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = RDBStorage.set_trial_state_values
    failures: list[int] = []

    def commit_then_fail(self: RDBStorage, *args: Any, **kwargs: Any) -> bool:
        done = original(self, *args, **kwargs)
        if not failures:  # the connection dropped after COMMIT: the caller sees an error
            failures.append(1)
            raise _locked()
        return done

    monkeypatch.setattr(RDBStorage, "set_trial_state_values", commit_then_fail)
    study = open_study(CONFIG, open_storage(f"sqlite:///{tmp_path / 's.db'}"))
    trial = _running_trial(study)
    study.tell(trial, 0.5)
    assert failures and study.trials[0].state == TrialState.COMPLETE


def test_a_heartbeat_that_cannot_be_written_is_logged_not_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def down(self: RDBStorage, trial_id: int) -> None:
        raise _locked()

    monkeypatch.setattr(recovery, "WRITE_RETRY", recovery.RetryPolicy(attempts=2, base=0.01))
    monkeypatch.setattr(RDBStorage, "record_heartbeat", down)
    study = open_study(CONFIG, open_storage(f"sqlite:///{tmp_path / 's.db'}"))
    trial = _running_trial(study)
    study._storage.record_heartbeat(trial._trial_id)  # type: ignore[attr-defined]
    assert any("record_heartbeat" in r.getMessage() and "next heartbeat tries again" in r.getMessage()
               for r in caplog.records if r.levelname == "ERROR")


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_several_attributes_are_written_in_one_commit(kind: str, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}" if kind == "sqlite" else f"journal:{tmp_path / 'j.log'}"
    study = open_study(CONFIG, open_storage(url))
    trial = study.ask()
    commits: list[object] = []
    count = commits.append
    if kind == "sqlite":
        engine = study._storage._backend.engine
        sqlalchemy.event.listen(engine, "commit", count)
    attrs = {"epoch1": {"val_accuracy": 0.5, "seconds": 1.5}, "epochs_trained": 1, "params": 42}
    recovery.set_user_attrs(trial, attrs)
    if kind == "sqlite":
        assert len(commits) == 1
        sqlalchemy.event.remove(engine, "commit", count)
    assert trial.user_attrs == attrs  # what later epochs (and the pruner) read back at once
    study.tell(trial, 0.5)
    assert study.trials[0].user_attrs == attrs


def test_attributes_of_a_finished_trial_are_refused_whole(tmp_path: Path) -> None:
    study = open_study(CONFIG, open_storage(f"sqlite:///{tmp_path / 's.db'}"))
    trial = study.ask()
    study.tell(trial, 0.5)
    with pytest.raises(UpdateFinishedTrialError):
        study._storage._backend.set_trial_user_attrs(trial._trial_id, {"a": 1, "b": 2})
    assert study.trials[0].user_attrs == {}


@pytest.mark.parametrize("committed", [True, False])
def test_a_retried_trial_creation_never_leaves_a_second_trial(
    committed: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    original = recovery.TaggingRDBStorage._insert_trial
    failures: list[int] = []

    def fail_once(self: recovery.TaggingRDBStorage, *args: Any, **kwargs: Any) -> Any:
        if failures:
            return original(self, *args, **kwargs)
        failures.append(1)
        if committed:  # the COMMIT went through, then the connection dropped
            original(self, *args, **kwargs)
        raise _locked()

    monkeypatch.setattr(recovery.TaggingRDBStorage, "_insert_trial", fail_once)
    monkeypatch.setattr(recovery, "WRITE_RETRY", recovery.RetryPolicy(base=0.01))
    study = open_study(CONFIG, open_storage(f"sqlite:///{tmp_path / 's.db'}"))
    first, second = study.ask(), study.ask()
    assert failures == [1]
    assert (first.number, second.number) == (0, 1)
    trials = study.trials
    assert [t.number for t in trials] == [0, 1] and trials[0]._trial_id == first._trial_id
    assert len({t.system_attrs[recovery.CREATION_KEY] for t in trials}) == 2
    found = any("not creating it twice" in r.getMessage() for r in caplog.records)
    assert found is committed


def test_an_enqueued_trial_is_created_once_with_its_own_token(tmp_path: Path) -> None:
    study = open_study(CONFIG, open_storage(f"sqlite:///{tmp_path / 's.db'}"))
    study.enqueue_trial({"lr": 0.01})
    trial = study.ask()
    trial.suggest_float("lr", 1e-4, 1e-1, log=True)
    study.tell(trial, 0.5)
    # a finished trial copied as a template gets a token of its own, not the original's
    study.add_trial(study.trials[0])
    first, copied = study.trials
    assert first.params == {"lr": 0.01} and copied.params == first.params
    assert first.system_attrs[recovery.CREATION_KEY] != copied.system_attrs[recovery.CREATION_KEY]


def _user_attr_rows(url: str) -> list[tuple[int, str, str]]:
    engine = sqlalchemy.create_engine(url)
    with engine.connect() as connection:
        rows = connection.execute(sqlalchemy.text(
            "SELECT trial_id, key, value_json FROM trial_user_attributes ORDER BY trial_id, key")).all()
    engine.dispose()
    return [tuple(row) for row in rows]


def _write_both_ways(url: str) -> None:
    """The same attributes through Optuna's per-attribute writes (trial 0) and our multi-row
    statement (trial 1), more of them than one statement holds, one key written twice."""
    study = open_study(CONFIG, open_storage(url))
    keys = range(1, 2 * recovery.UPSERT_ROWS + 7)
    attrs = {f"epoch{k}": {"val_loss": 1.0 / k, "seconds": 0.01} for k in keys}
    plain, batched = study.ask(), study.ask()
    for key, value in {"params": 1, **attrs}.items():
        plain.set_user_attr(key, value)
    plain.set_user_attr("params", 2)
    recovery.set_user_attrs(batched, {"params": 1})
    recovery.set_user_attrs(batched, {**attrs, "params": 2})
    study.tell(plain, 0.5)
    study.tell(batched, 0.5)
    trials = optuna.load_study(study_name="r", storage=url).trials
    assert trials[0].user_attrs == trials[1].user_attrs == {**attrs, "params": 2}


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_batch_of_attributes_leaves_the_rows_optuna_would(kind: str, tmp_path: Path,
                                                            request: pytest.FixtureRequest) -> None:
    url = (f"sqlite:///{tmp_path / 's.db'}" if kind == "sqlite"
           else request.getfixturevalue("postgres_url"))
    _write_both_ways(url)
    rows = _user_attr_rows(url)
    by_trial = {trial: [(key, value) for t, key, value in rows if t == trial]
                for trial in {r[0] for r in rows}}
    first, second = sorted(by_trial)
    assert by_trial[first] == by_trial[second]  # the same keys, values and JSON text, one row per key


def test_epoch_records_are_stored_in_batches_and_read_back_at_once(tmp_path: Path) -> None:
    """A trial of many short epochs commits them at most every EPOCH_WRITE_SECONDS; this process
    (the pruner, the deadline's partial history) sees each epoch at once, and flush stores the rest."""
    from automl_nn.storage import record

    url = f"sqlite:///{tmp_path / 's.db'}"
    study = open_study(CONFIG, open_storage(url))
    trial = study.ask()
    commits: list[object] = []
    count = commits.append
    engine = study._storage._backend.engine
    sqlalchemy.event.listen(engine, "commit", count)
    log = record.EpochLog(trial, seconds=3600.0)
    for k in (1, 2, 3):
        log.add(k, {"epoch": k, "val_loss": 1.0 / k})
    assert commits == []
    assert len(record.TrialRecord.running(trial).epochs) == 3
    elsewhere = optuna.load_study(study_name="r", storage=url).trials[0]
    assert "epoch1" not in elsewhere.user_attrs  # not stored yet
    log.flush()
    log.flush()  # nothing left: no second commit
    assert len(commits) == 1
    sqlalchemy.event.remove(engine, "commit", count)
    stored = optuna.load_study(study_name="r", storage=url).trials[0].user_attrs
    assert stored["epochs_trained"] == 3 and stored["epoch3"] == {"epoch": 3, "val_loss": 1.0 / 3}
    every = record.EpochLog(study.ask(), seconds=0.0)
    every.add(1, {"epoch": 1, "val_loss": 0.5})
    assert optuna.load_study(study_name="r", storage=url).trials[1].user_attrs["epochs_trained"] == 1
