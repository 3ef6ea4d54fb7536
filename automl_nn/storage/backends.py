"""Storage URLs: open an Optuna storage (SQLite, PostgreSQL, journal file) without harming a file.

SQLite is the default (`automl-nn.db` in the working directory). A file that is not a database is
refused untouched; read commands never create one (`must_exist`). RDB storages get heartbeats,
stale-trial retries and retried writes (`recovery.rdb_storage`); journal files are scanned for
damage first and opened over `verify.SafeJournalFileBackend`, which heals a torn tail.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from urllib.parse import quote

import optuna
import sqlalchemy.exc
from optuna.storages import BaseStorage
from optuna.storages.journal import JournalStorage

from automl_nn.config import SMOKE_SUFFIX
from automl_nn.errors import StorageError, unknown_name
from automl_nn.storage import artifacts, recovery, verify
from automl_nn.storage.verify import journal_path

log = logging.getLogger(__name__)

DEFAULT_STORAGE = "sqlite:///automl-nn.db"


def storage_url(url: str | None) -> str:
    """The storage URL to use: the given one, or the SQLite file in the working directory."""
    return url or DEFAULT_STORAGE


def artifact_dir(url: str | None) -> Path:
    """Where per-trial artifacts (exported code, weights, plots) of a storage live.

    Next to a file storage: `runs/study.db` -> `runs/study-artifacts/`. A server database
    (PostgreSQL, ...) has no file to sit beside, so its artifacts go to `automl-nn-artifacts/` in
    the working directory. The dashboard serves this folder; export writes into it.
    """
    return artifacts.artifact_dir(storage_url(url))


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
        raise unknown_name("study", name, names, "storage", error=StorageError)
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
