"""Faults inside the storage layer: kill -9 in the middle of a write, and transient write errors.

The kill tests run `automl-nn search` in a child process through a small runner script that
patches the storage in that child only: it calls os._exit(137) right after the k-th write
statement (or the first statement of the k-th set_trial_state_values) reached the database, inside
its transaction, before COMMIT; for a journal file it writes half of the k-th record and dies
holding the journal's lock. Then the same search runs again, as a user would, and the reliability
plan's invariants are checked: finished trials are never changed (I1), nothing is left RUNNING
(I2), trial numbers are unique and contiguous (I3), and the SQLite file passes integrity_check.
"""

from __future__ import annotations

import contextlib
import os
import random
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
import sqlalchemy.engine
import sqlalchemy.event
import sqlalchemy.exc
from optuna.exceptions import StorageInternalError
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState
from typer.testing import CliRunner

from automl_nn.storage import record, recovery
from automl_nn.storage.backends import open_storage
from tests.conftest import run

ROOT = Path(__file__).resolve().parents[1]
TRIALS = 2
SEARCH = ["search", "--dataset", "digits", "--family", "linear", "--depth", "1", "--width", "4",
          "--epochs", "1", "--batch-size", "64", "--seed", "0", "--no-keep-predictions",
          "--keep-weights", "none", "--study-name", "w", "--trials", str(TRIALS)]

RUNNER = '''\
"""automl-nn, dying with os._exit(137) inside the k-th storage write (argv: mode k args...)."""
import json
import os
import sys

import sqlalchemy.engine
import sqlalchemy.event

mode, k = sys.argv[1], int(sys.argv[2])
calls = 0
armed = False


def after_statement(conn, cursor, statement, parameters, context, executemany):
    """Runs after a statement reached the database, inside its transaction (before COMMIT)."""
    global calls
    if not statement.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE")):
        return
    if mode == "write":
        calls += 1
        if calls == k:
            os._exit(137)
    elif armed:
        os._exit(137)


sqlalchemy.event.listen(sqlalchemy.engine.Engine, "after_cursor_execute", after_statement)

if mode == "state":
    from optuna.storages import RDBStorage

    original_state = RDBStorage.set_trial_state_values

    def set_trial_state_values(self, *args, **kwargs):
        global calls, armed
        calls += 1
        armed = calls == k
        return original_state(self, *args, **kwargs)

    RDBStorage.set_trial_state_values = set_trial_state_values

if mode == "append":
    from automl_nn.storage.verify import SafeJournalFileBackend

    original_append = SafeJournalFileBackend.append_logs

    def append_logs(self, logs):
        global calls
        calls += 1
        if calls < k:
            return original_append(self, logs)
        text = "\\n".join(json.dumps(r, separators=(",", ":")) for r in logs) + "\\n"
        self._lock.acquire()  # and never released: the process dies holding it
        with open(self._file_path, "ab") as handle:
            handle.write(text.encode()[: len(text) // 2])
            handle.flush()
            os.fsync(handle.fileno())
        os._exit(137)

    SafeJournalFileBackend.append_logs = append_logs

from automl_nn.cli import main

sys.argv = ["automl-nn", *sys.argv[3:]]
main()
'''


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), recovery.INTERVAL_ENV: "1",
            recovery.GRACE_ENV: "2"}


@pytest.fixture
def short_heartbeat(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(recovery.INTERVAL_ENV, "1")
    monkeypatch.setenv(recovery.GRACE_ENV, "2")


def _die_in_write(tmp_path: Path, url: str, mode: str, k: int) -> subprocess.CompletedProcess[str]:
    runner = tmp_path / "faulty_search.py"
    runner.write_text(RUNNER)
    return subprocess.run([sys.executable, str(runner), mode, str(k), *SEARCH, "--storage", url],
                          env=_env(), capture_output=True, text=True, timeout=300)


def _trials(url: str) -> list[FrozenTrial]:
    storage = open_storage(url, must_exist=True)
    names = [s.study_name for s in storage.get_all_studies()]
    return optuna.load_study(study_name="w", storage=storage).trials if "w" in names else []


def _finished(trials: list[FrozenTrial]) -> dict[int, tuple[dict[str, Any], list[float] | None]]:
    return {t.number: (t.params, t.values) for t in trials if t.state == TrialState.COMPLETE}


def _integrity(path: Path) -> str:
    with sqlite3.connect(path) as connection:
        return str(connection.execute("PRAGMA integrity_check").fetchone()[0])


def _kill_then_rerun(tmp_path: Path, url: str, mode: str, k: int, cli: CliRunner) -> None:
    """One fault run, its checks, the rerun and the invariants after it."""
    died = _die_in_write(tmp_path, url, mode, k)
    assert died.returncode == 137, f"{mode} k={k} did not die:\n{died.stderr[-2000:]}"
    if url.startswith("sqlite"):
        assert _integrity(Path(url.removeprefix("sqlite:///"))) == "ok"
    trials = _trials(url)
    assert len([t for t in trials if not t.state.is_finished()]) <= 1, (mode, k)
    before = _finished(trials)
    # A trial holding a lease is reaped at once (its process is gone). One killed before its lease
    # was written waits out the 2 s grace; SQLite stores heartbeats to the whole second.
    time.sleep(3.2)

    code, output = run(cli, *SEARCH, "--storage", url)
    assert code == 0, f"{mode} k={k}: rerun failed\n{output[-2000:]}"
    trials = _trials(url)
    assert sum(t.state == TrialState.COMPLETE for t in trials) == TRIALS  # the target
    after = _finished(trials)
    assert before == {n: after[n] for n in before}  # I1
    assert all(t.state.is_finished() for t in trials)  # I2
    assert [t.number for t in trials] == list(range(len(trials)))  # I3
    if url.startswith("sqlite"):
        assert _integrity(Path(url.removeprefix("sqlite:///"))) == "ok"


@pytest.mark.parametrize(("mode", "k"), [
    ("state", 2),   # inside the 2nd trial's COMPLETE: it stays RUNNING, the 1st must survive
    ("write", 8),   # while the new study is being described: resumed with its description
])
def test_kill9_during_storage_write(mode: str, k: int, tmp_path: Path, cli: CliRunner,
                                    short_heartbeat: None) -> None:
    _kill_then_rerun(tmp_path, f"sqlite:///{tmp_path / 's.db'}", mode, k, cli)
    study = optuna.load_study(study_name="w", storage=open_storage(f"sqlite:///{tmp_path / 's.db'}"))
    assert {"config", "identity", "config_hash"} <= set(study.user_attrs)


@pytest.mark.slow
@pytest.mark.timeout(7200)
def test_kill9_during_storage_write_at_random_points(tmp_path: Path, cli: CliRunner,
                                                     short_heartbeat: None) -> None:
    """50 runs (AUTOMLNN_FAULT_RUNS), each killed in a random one of the first 60 writes; a
    two-trial search makes 62 or more (about 10 for the study and 26 per trial, plus heartbeats)."""
    rng = random.Random(int(os.environ.get("AUTOMLNN_FAULT_SEED", "0")))
    for attempt in range(int(os.environ.get("AUTOMLNN_FAULT_RUNS", "50"))):
        k = rng.randint(1, 60)
        folder = tmp_path / f"run{attempt}"
        folder.mkdir()
        try:
            _kill_then_rerun(folder, f"sqlite:///{folder / 's.db'}", "write", k, cli)
        except AssertionError as exc:
            raise AssertionError(f"run {attempt}, killed in write {k}: {exc}") from exc


@pytest.mark.slow  # the dead writer keeps the journal's lock: the next one waits its 30 s grace
@pytest.mark.parametrize("k", [3, 12])
def test_kill9_during_journal_append(k: int, tmp_path: Path, cli: CliRunner,
                                     short_heartbeat: None) -> None:
    _kill_then_rerun(tmp_path, f"journal:{tmp_path / 's.log'}", "append", k, cli)


# ---- transient storage errors ---------------------------------------------------------------------


def _locked() -> StorageInternalError:
    """What Optuna raises when SQLite stays locked past the busy timeout."""
    try:
        try:
            raise sqlalchemy.exc.OperationalError("UPDATE trials", {}, Exception("database is locked"))
        except sqlalchemy.exc.OperationalError as exc:
            raise StorageInternalError("An exception is raised during the commit.") from exc
    except StorageInternalError as error:
        return error


def _fail_once(monkeypatch: pytest.MonkeyPatch, name: str, injected: list[str]) -> None:
    original = getattr(RDBStorage, name)

    def flaky(self: RDBStorage, *args: Any, **kwargs: Any) -> Any:
        if name not in injected:
            injected.append(name)
            raise _locked()
        return original(self, *args, **kwargs)

    monkeypatch.setattr(RDBStorage, name, flaky)


# Each RDBStorage method fails once; the name the retry log gives it.
FLAKY = {"set_trial_state_values": "set_trial_state_values", "record_heartbeat": "record_heartbeat",
         "create_new_study": "create_new_study", "set_study_system_attr": "set_study_system_attr",
         "_get_prepared_new_trial": "create_new_trial", "_get_trials": "get_all_trials",
         "_set_trial_param": "set_trial_param", "get_study_user_attrs": "get_study_user_attrs"}


def test_worker_survives_storage_error(tmp_path: Path, cli: CliRunner,
                                       monkeypatch: pytest.MonkeyPatch,
                                       caplog: pytest.LogCaptureFixture) -> None:
    injected: list[str] = []
    for name in FLAKY:
        _fail_once(monkeypatch, name, injected)
    monkeypatch.setattr(recovery, "WRITE_RETRY", recovery.RetryPolicy(base=0.05))
    url = f"sqlite:///{tmp_path / 's.db'}"
    code, output = run(cli, *SEARCH, "--storage", url)
    assert code == 0, output
    assert sorted(injected) == sorted(FLAKY)
    retried = [r.getMessage() for r in caplog.records if "retry 1 of" in r.getMessage()]
    assert any("set_trial_state_values" in m and "database is locked" in m for m in retried)
    for logged in FLAKY.values():
        assert any(logged in m for m in retried), logged
    trials = _trials(url)
    assert [t.state for t in trials] == [TrialState.COMPLETE] * TRIALS  # final, none RUNNING (I2)


def test_storage_that_stays_down_fails_clearly(tmp_path: Path, cli: CliRunner,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    def down(self: RDBStorage, *args: Any, **kwargs: Any) -> bool:
        raise _locked()

    monkeypatch.setattr(recovery, "WRITE_RETRY", recovery.RetryPolicy(attempts=3, base=0.01))
    monkeypatch.setattr(RDBStorage, "set_trial_state_values", down)
    code, output = run(cli, *SEARCH, "--storage", f"sqlite:///{tmp_path / 's.db'}")
    assert code == 1
    assert "set_trial_state_values" in output and "failed 3 times" in output
    assert "database is locked" in output and "run the same command again" in output
    assert "Traceback" not in output and "Should not reach" not in output


# ---- a PostgreSQL server that drops connections -----------------------------------------------

# Write statements after which the search's own connection is terminated, inside its transaction;
# irregular gaps, so that no retried batch of attributes is hit at the same place every try.
INSIDE_AT = frozenset({4, 11, 19, 30, 43, 58, 75, 94})
KILL_ALL = ("SELECT pg_terminate_backend(pid, 2000) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()")


class _Killer:
    """Terminates the search's PostgreSQL backends: inside open transactions (after the write
    statements INSIDE_AT counts, from the search's own thread) and, once trials are being created,
    every 0.3 s from a thread of its own, whatever they are doing."""

    def __init__(self, url: str) -> None:
        import psycopg2

        parsed = sqlalchemy.engine.make_url(url)
        self.database = parsed.database
        self.admin = psycopg2.connect(host=parsed.host, port=parsed.port, user=parsed.username,
                                      dbname="postgres")
        self.admin.autocommit = True
        self.lock = threading.Lock()
        self.trials_started, self.done = threading.Event(), threading.Event()
        self.writes = 0
        self.killed = {"inside": 0, "outside": 0}

    def _terminate(self, query: str, args: tuple[Any, ...]) -> int:
        with self.lock, self.admin.cursor() as cursor:
            cursor.execute(query, args)
            return sum(1 for (ok,) in cursor.fetchall() if ok)

    def after_statement(self, conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        """SQLAlchemy's after_cursor_execute: the statement ran, its transaction is still open."""
        if conn.engine.url.database != self.database:
            return
        if statement.lstrip().upper().startswith("INSERT INTO TRIALS"):
            self.trials_started.set()
        if not statement.lstrip().upper().startswith(("INSERT", "UPDATE")):
            return
        self.writes += 1
        if self.writes in INSIDE_AT:
            pid = cursor.connection.get_backend_pid()
            self.killed["inside"] += self._terminate("SELECT pg_terminate_backend(%s, 2000)", (pid,))

    def run(self) -> None:
        self.trials_started.wait(120)
        while not self.done.wait(0.3):
            self.killed["outside"] += self._terminate(KILL_ALL, (self.database,))

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        sqlalchemy.event.listen(sqlalchemy.engine.Engine, "after_cursor_execute", self.after_statement)
        thread = threading.Thread(target=self.run, daemon=True)
        thread.start()
        try:
            yield
        finally:
            self.done.set()
            self.trials_started.set()
            thread.join()
            sqlalchemy.event.remove(sqlalchemy.engine.Engine, "after_cursor_execute",
                                    self.after_statement)
            self.admin.close()


def test_search_goes_on_when_postgresql_drops_its_connections(
    postgres_url: str, cli: CliRunner, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    target = 4
    monkeypatch.setattr(recovery, "WRITE_RETRY", recovery.RetryPolicy(base=0.1))
    killer = _Killer(postgres_url)
    with killer.active():
        code, output = run(cli, *SEARCH, "--trials", str(target), "--storage", postgres_url)
    assert code == 0, output
    assert killer.killed["inside"] >= 3 and killer.killed["outside"] >= 1, killer.killed
    retried = [r.getMessage() for r in caplog.records if "retry 1 of" in r.getMessage()]
    assert retried, "no storage call was retried: the kills missed every transaction"
    trials = _trials(postgres_url)
    # nothing lost: the target reached, every trial complete with its record
    assert [t.state for t in trials] == [TrialState.COMPLETE] * target, [
        t.user_attrs.get(record.FAIL_MESSAGE) for t in trials if t.state == TrialState.FAIL]
    kept = {record.CANDIDATE, record.epoch_key(1), "accuracy"}
    assert all(kept <= set(t.user_attrs) for t in trials)
    # nothing duplicated: one trial per number, one per creation
    assert [t.number for t in trials] == list(range(target))
    assert len({t.system_attrs[recovery.CREATION_KEY] for t in trials}) == target
