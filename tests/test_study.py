import sqlite3
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from automl_nn.config import resolve
from automl_nn.errors import StorageError
from automl_nn.results.summary import studies_table
from automl_nn.storage.backends import open_storage
from automl_nn.study import count_done, front, open_study
from tests.fake_study import make_study


def _url(path: Path) -> str:
    return f"sqlite:///{path}"


def test_sqlite_storage_has_a_long_busy_timeout(tmp_path: Path) -> None:
    storage = open_storage(_url(tmp_path / "s.db"))
    assert isinstance(storage, optuna.storages.RDBStorage)
    assert storage.engine_kwargs["connect_args"]["timeout"] >= 60


def test_sqlite_storage_commits_through_a_write_ahead_log(tmp_path: Path) -> None:
    # WAL: a commit does not wait for the disk, and readers never block the writing worker
    open_study(resolve({"study_name": "s"}), open_storage(_url(tmp_path / "s.db")))
    with sqlite3.connect(tmp_path / "s.db") as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_checking_a_storage_file_keeps_this_process_s_sqlite_locks(tmp_path: Path) -> None:
    """Opening the file again (as every command does) must not drop the locks of open connections.

    A plain open()/close() of the file releases them all (POSIX); another process closing its
    connection then believes it is the last one and deletes the write-ahead log under this one.
    """
    path = tmp_path / "s.db"
    open_study(resolve({"study_name": "s"}), open_storage(_url(path)))
    reader = sqlite3.connect(path)
    reader.execute("SELECT count(*) FROM studies").fetchone()
    open_storage(_url(path))  # the check every command makes
    subprocess.run([sys.executable, "-c", "import sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
                    "c.execute('UPDATE studies SET study_name = study_name'); c.commit(); c.close()",
                    str(path)], check=True, timeout=60)
    assert Path(f"{path}-wal").exists()  # this process still holds the database: WAL kept
    reader.close()


@pytest.mark.parametrize("content", [b"\x00\x01garbage" * 100, b"id,name\n1,two\n"])
def test_a_file_that_is_not_a_database_is_refused_untouched(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "x.db"
    path.write_bytes(content)
    with pytest.raises(StorageError, match="not an SQLite database"):
        open_storage(_url(path))
    assert path.read_bytes() == content


def test_missing_directory_and_directory_paths(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="does not exist"):
        open_storage(_url(tmp_path / "nope" / "s.db"))
    with pytest.raises(StorageError, match="is a directory"):
        open_storage(_url(tmp_path))


def test_read_commands_do_not_create_storage(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="no such file"):
        open_storage(_url(tmp_path / "s.db"), must_exist=True)
    assert not (tmp_path / "s.db").exists()


def test_journal_storage_keeps_the_study_in_its_file(tmp_path: Path) -> None:
    path = tmp_path / "j.log"
    storage = open_storage(f"journal:{path}")
    assert isinstance(storage, optuna.storages.JournalStorage)
    config = resolve({"study_name": "j", "objectives": ["accuracy"]})
    study = open_study(config, storage)
    trial = study.ask({"lr": optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)})
    study.tell(trial, 0.75)
    # read back by plain Optuna from the file alone: the study, its config and the trial are there
    reread = optuna.load_study(study_name="j", storage=optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(path))))
    assert reread.user_attrs["config_hash"] == config.identity_hash()
    assert reread.direction == optuna.study.StudyDirection.MAXIMIZE
    assert [(t.state, t.value, t.params) for t in reread.trials] == [
        (optuna.trial.TrialState.COMPLETE, 0.75, trial.params)]
    # and a second open resumes it rather than starting over
    assert len(open_study(config, open_storage(f"journal:{path}")).trials) == 1


def test_open_study_records_config_and_metric_names(tmp_path: Path) -> None:
    config = resolve({"study_name": "s", "objectives": ["acc", "params"]})
    study = open_study(config, open_storage(_url(tmp_path / "s.db")))
    assert study.metric_names == ["accuracy", "params"]
    assert study.user_attrs["config_hash"] == config.identity_hash()
    assert study.user_attrs["config"]["objectives"] == ["accuracy", "params"]


def test_resume_refuses_other_direction_or_space(tmp_path: Path) -> None:
    storage = open_storage(_url(tmp_path / "s.db"))
    open_study(resolve({"study_name": "s", "objectives": ["loss"]}), storage)
    with pytest.raises(StorageError, match=r"exists with directions \[minimize\]"):
        open_study(resolve({"study_name": "s", "objectives": ["accuracy"]}), storage)
    with pytest.raises(StorageError, match="space.epochs: stored 5, now 9"):
        open_study(resolve({"study_name": "s", "objectives": ["loss"],
                            "space": {"epochs": 9}}), storage)
    same = open_study(resolve({"study_name": "s", "objectives": ["loss"], "trials": 99}), storage)
    assert same.study_name == "s"


def test_front_and_count_done_use_finished_trials_only(tmp_path: Path) -> None:
    config = resolve({"study_name": "f"})
    study = open_study(config, open_storage(_url(tmp_path / "s.db")))
    for acc, params in [(0.9, 100.0), (0.8, 50.0), (0.7, 200.0)]:
        trial = study.ask()
        study.tell(trial, [acc, params])
    failed = study.ask()
    study.tell(failed, state=optuna.trial.TrialState.FAIL)
    pruned = study.ask()
    study.tell(pruned, state=optuna.trial.TrialState.PRUNED)
    assert count_done(study) == 4
    assert [t.values for t in front(study)] == [[0.9, 100.0], [0.8, 50.0]]


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_studies_table_counts_states_without_reading_trials(tmp_path: Path, kind: str) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}" if kind == "sqlite" else f"journal:{tmp_path / 's.log'}"
    storage = open_storage(url)
    make_study(storage, "a", n=7)  # 7 complete and 1 failed
    other = open_study(resolve({"study_name": "b", "objectives": ["accuracy"]}), storage)
    other.tell(other.ask(), state=optuna.trial.TrialState.PRUNED)
    other.ask()  # left running
    rows = {row["study"]: row for row in studies_table(storage)}
    assert rows["a"] == {"study": "a", "dataset": "digits", "objectives": "accuracy,params", "trials": 8,
                         "complete": 7, "pruned": 0, "fail": 1, "running": 0}
    assert (rows["b"]["trials"], rows["b"]["pruned"], rows["b"]["running"]) == (2, 1, 1)
    assert rows["b"]["objectives"] == "accuracy"
