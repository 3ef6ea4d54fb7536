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

import os
import random
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
import sqlalchemy.exc
from optuna.exceptions import StorageInternalError
from optuna.storages import RDBStorage
from optuna.trial import FrozenTrial, TrialState
from typer.testing import CliRunner

from automl_nn.storage import recovery
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


def test_worker_survives_storage_error(tmp_path: Path, cli: CliRunner,
                                       monkeypatch: pytest.MonkeyPatch,
                                       caplog: pytest.LogCaptureFixture) -> None:
    injected: list[str] = []
    for name in ("set_trial_state_values", "record_heartbeat"):
        _fail_once(monkeypatch, name, injected)
    url = f"sqlite:///{tmp_path / 's.db'}"
    code, output = run(cli, *SEARCH, "--storage", url)
    assert code == 0, output
    assert sorted(injected) == ["record_heartbeat", "set_trial_state_values"]
    retried = [r.getMessage() for r in caplog.records if "retry 1 of" in r.getMessage()]
    assert any("set_trial_state_values" in m and "database is locked" in m for m in retried)
    assert any("record_heartbeat" in m for m in retried)
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
