"""`automl-nn verify` and damaged storage files: torn journal records, corrupt lines, SQLite.

What Optuna 5.0 does with a damaged journal (see automl_nn/storage/verify.py): a torn last record is
skipped (the trial it would have finished stays RUNNING), but its next append merges with the torn
line and is lost; a corrupt line in the middle stops every read. The tool heals a torn tail before
appending, refuses a journal with corrupt lines naming them, and `verify --repair` drops them after
a backup.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.storages.journal import JournalFileSymlinkLock, JournalStorage
from optuna.storages.journal._storage import JournalOperation
from optuna.trial import TrialState
from typer.testing import CliRunner

from automl_nn.search import GracefulStop, Interrupted
from automl_nn.storage import recovery, verify
from automl_nn.storage.backends import open_storage
from tests.conftest import file_hash, run

SEARCH = ["search", "--dataset", "digits", "--family", "linear", "--depth", "1", "--width", "4",
          "--epochs", "1", "--batch-size", "64", "--seed", "0", "--no-keep-predictions",
          "--keep-weights", "none", "--study-name", "j", "--trials", "2"]
GARBAGE = [b"\x00\xffnot json at all", b'{"hello": "valid JSON, but no journal record"}']


@pytest.fixture
def short_heartbeat(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(recovery.INTERVAL_ENV, "1")
    monkeypatch.setenv(recovery.GRACE_ENV, "2")


@pytest.fixture(scope="module")
def journal_bytes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[bytes]:
    """A finished two-trial search in a journal file, as the CLI writes it."""
    folder = tmp_path_factory.mktemp("journal")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        patch.setenv(recovery.INTERVAL_ENV, "1")
        patch.setenv(recovery.GRACE_ENV, "2")
        code, output = run(CliRunner(), *SEARCH, "--storage", f"journal:{folder / 'j.log'}")
    assert code == 0, output
    yield (folder / "j.log").read_bytes()


def _lines(data: bytes) -> list[bytes]:
    return data.split(b"\n")[:-1]


def _cut_last_finish(data: bytes) -> tuple[list[bytes], bytes]:
    """The whole lines before the last trial's final state record, and that record cut in half:
    the file a crash in the middle of writing it leaves."""
    lines = _lines(data)
    last = max(i for i, line in enumerate(lines)
               if json.loads(line)["op_code"] == JournalOperation.SET_TRIAL_STATE_VALUES)
    return lines[:last], lines[last][: len(lines[last]) // 2]


def _states(url: str) -> list[TrialState]:
    return [t.state for t in optuna.load_study(study_name="j", storage=open_storage(url)).trials]


def test_journal_torn_tail_and_corruption(journal_bytes: bytes, tmp_path: Path, cli: CliRunner,
                                          short_heartbeat: None) -> None:
    path, url = tmp_path / "j.log", f"journal:{tmp_path / 'j.log'}"
    whole, torn = _cut_last_finish(journal_bytes)
    damaged = [*whole[:3], GARBAGE[0], *whole[3:8], GARBAGE[1], *whole[8:]]  # lines 4 and 10
    path.write_bytes(b"\n".join(damaged) + b"\n" + torn)
    before = file_hash(path)

    code, output = run(cli, "verify", url)
    assert code == 1
    assert "corrupt lines: 2 (lines 4, 10)" in output
    assert f"torn tail: line {len(damaged) + 1}, {len(torn)} bytes" in output
    for command in (["show", "j", "--storage", url], [*SEARCH, "--storage", url]):
        code, output = run(cli, *command)
        assert code == 2, output
        assert "lines 4, 10" in output and f"automl-nn verify {path} --repair" in output
        assert "Traceback" not in output
    assert file_hash(path) == before  # refused, untouched

    code, output = run(cli, "verify", url, "--repair")
    assert code == 0, output
    backups = list(tmp_path.glob("j.log.bak-*"))
    assert len(backups) == 1 and file_hash(backups[0]) == before
    assert path.read_bytes() == b"\n".join(whole) + b"\n"  # exactly the records before the crash
    assert _states(url) == [TrialState.COMPLETE, TrialState.RUNNING]  # the torn finish never happened

    time.sleep(2.2)  # the running trial's lease (held by this process) is now older than its grace
    code, output = run(cli, *SEARCH, "--storage", url)
    assert code == 0, output
    assert _states(url) == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    assert run(cli, "verify", url)[0] == 0


def test_torn_tail_is_healed_by_the_next_search(journal_bytes: bytes, tmp_path: Path,
                                                cli: CliRunner, short_heartbeat: None) -> None:
    path, url = tmp_path / "j.log", f"journal:{tmp_path / 'j.log'}"
    whole, torn = _cut_last_finish(journal_bytes)
    path.write_bytes(b"\n".join(whole) + b"\n" + torn)
    assert _states(url) == [TrialState.COMPLETE, TrialState.RUNNING]  # read-only: left as it is
    assert path.read_bytes().endswith(torn)

    time.sleep(2.2)
    code, output = run(cli, *SEARCH, "--storage", url)
    assert code == 0, output
    trials = optuna.load_study(study_name="j", storage=open_storage(url)).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    assert trials[1].user_attrs["fail_reason"] == "stale"
    assert trials[2].system_attrs["failed_trial"] == 1 and trials[2].params == trials[1].params
    assert verify.scan_journal(path).healthy


def test_append_after_a_torn_record_keeps_both_sides(tmp_path: Path) -> None:
    path = tmp_path / "t.log"
    study = optuna.create_study(storage=JournalStorage(verify.SafeJournalFileBackend(str(path))))
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    with path.open("ab") as handle:
        handle.write(b'{"op_code":6,"worker_id":"dead","trial_id":1,"st')  # a writer died here
    study = optuna.load_study(study_name=study.study_name,
                              storage=JournalStorage(verify.SafeJournalFileBackend(str(path))))
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    reread = optuna.load_study(study_name=study.study_name,
                               storage=JournalStorage(verify.SafeJournalFileBackend(str(path))))
    assert [t.state for t in reread.trials] == [TrialState.COMPLETE] * 4
    assert verify.scan_journal(path).healthy


class _SignalledLock(JournalFileSymlinkLock):
    """Optuna's journal lock, with SIGTERM arriving the moment it is taken."""

    def acquire(self) -> bool:
        taken = super().acquire()
        signal.raise_signal(signal.SIGTERM)
        return taken


def test_a_stop_signal_during_a_journal_append_waits_for_the_lock_to_be_released(
        tmp_path: Path) -> None:
    # SIGTERM to a search raises in the running trial; raised while an append held Optuna's
    # symlink lock it left the lock file behind (every later append waits 30 s for its grace
    # period) or failed the trial with FileNotFoundError from the lock's release
    path = tmp_path / "t.log"
    backend = verify.SafeJournalFileBackend(str(path), _SignalledLock(str(path)))
    graceful = GracefulStop()
    with graceful.installed(), graceful.in_trial(), pytest.raises(Interrupted):
        backend.append_logs([{"op_code": 0, "worker_id": "w", "study_name": "s"}])
    assert graceful.pending == signal.SIGTERM
    assert not list(tmp_path.glob("t.log.lock*"))  # released, no rename left over
    assert [json.loads(line) for line in path.read_bytes().splitlines()] == [
        {"op_code": 0, "worker_id": "w", "study_name": "s"}]  # the record went in whole
    outside = verify.SafeJournalFileBackend(str(path))
    outside.append_logs([{"op_code": 0, "worker_id": "v", "study_name": "t"}])
    assert len(path.read_bytes().splitlines()) == 2


def _record(n: int) -> bytes:
    return json.dumps({"op_code": 4, "worker_id": f"w{n}", "study_id": 0},
                      separators=(",", ":")).encode()


def test_scan_finds_each_kind_of_damage_and_repair_salvages_whole_records(tmp_path: Path) -> None:
    path = tmp_path / "x.log"
    lines = [_record(1), _record(2)[:20] + _record(3), b"", b"[1, 2]", b"\xff\xfe", _record(4)]
    path.write_bytes(b"\n".join(lines) + b"\n" + _record(5)[:9])
    report = verify.scan_journal(path)
    assert report.corrupt == (2, 3, 4, 5) and report.salvaged == (2,)
    assert report.records == 2 and (report.torn_line, report.torn_bytes) == (7, 9)

    report, backup = verify.repair_journal(path)
    assert backup is not None and backup.name.startswith("x.log.bak-")
    assert path.read_bytes() == b"\n".join([_record(1), _record(3), _record(4)]) + b"\n"
    assert verify.repair_journal(path) == (verify.scan_journal(path), None)  # sound: left alone


def _sqlite_file(path: Path) -> None:
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, text TEXT)")
        connection.execute("CREATE INDEX t_text ON t (text)")
        connection.executemany("INSERT INTO t (text) VALUES (?)", [(f"row {i}" * 5,) for i in range(3000)])
    connection.close()


def test_verify_sqlite_runs_integrity_check(tmp_path: Path, cli: CliRunner) -> None:
    path = tmp_path / "s.db"
    _sqlite_file(path)
    code, output = run(cli, "verify", f"sqlite:///{path}")
    assert (code, output.strip()) == (0, f"sqlite {path}: integrity_check ok")

    data = bytearray(path.read_bytes())
    page = 4096
    data[5 * page + 100: 5 * page + 400] = b"\x07" * 300  # scribble over a b-tree page
    path.write_bytes(bytes(data))
    before = file_hash(path)
    code, output = run(cli, "verify", str(path))  # a bare path: recognised by its header
    assert code == 1, output
    assert "integrity_check found" in output and "cannot be repaired in place" in output
    assert file_hash(path) == before


@pytest.mark.parametrize(("args", "fragment"), [
    (["postgresql+psycopg2://u@h/db"], "pg_amcheck"),
    (["journal:missing.log"], "no such file"),
    (["sqlite:///s.db", "--repair"], "journal files only"),
])
def test_verify_refuses_what_it_cannot_check(args: list[str], fragment: str, tmp_path: Path,
                                             cli: CliRunner) -> None:
    _sqlite_file(tmp_path / "s.db")
    code, output = run(cli, "verify", *args)
    assert code == 2 and fragment in output
