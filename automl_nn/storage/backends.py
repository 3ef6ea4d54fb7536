"""Storage URLs: open an Optuna storage (SQLite, PostgreSQL, journal file) without harming a file.

SQLite is the default (`automl-nn.db` in the working directory). A file that is not a database is
refused untouched; read commands never create one (`must_exist`). RDB storages get heartbeats,
stale-trial retries and retried writes (`recovery.rdb_storage`); journal files are scanned for
damage first and opened over `verify.SafeJournalFileBackend`, which heals a torn tail.
"""

from __future__ import annotations

import logging
from pathlib import Path

import optuna
import sqlalchemy.exc
from optuna.storages import BaseStorage
from optuna.storages.journal import JournalStorage

from automl_nn.config import SMOKE_SUFFIX
from automl_nn.errors import StorageError, unknown_name
from automl_nn.storage import artifacts, recovery, verify
from automl_nn.storage.urls import DEFAULT_STORAGE, check_sqlite_file, first_line, journal_path, storage_url

__all__ = ["DEFAULT_STORAGE", "journal_path", "storage_url"]  # the URL rules live in urls.py

log = logging.getLogger(__name__)


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
        check_sqlite_file(Path(url.removeprefix("sqlite:///")), must_exist)
    try:
        storage = recovery.rdb_storage(url)
    except (sqlalchemy.exc.SQLAlchemyError, RuntimeError, ValueError, ImportError) as exc:
        raise StorageError(f"storage {url}: cannot be opened ({first_line(exc)}). Check the URL, "
                           "or run `optuna storage upgrade --storage URL` if it was made by an "
                           "older Optuna.") from None
    return storage


def is_sqlite(url: str | None) -> bool:
    return storage_url(url).startswith("sqlite")


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
        raise StorageError(f"journal file {path}: cannot be read ({first_line(exc)}). Run "
                           f"`automl-nn verify {path}` to look for damage.") from None


def study_names(storage: BaseStorage) -> list[str]:
    try:
        return [s.study_name for s in storage.get_all_studies()]
    except sqlalchemy.exc.SQLAlchemyError as exc:
        raise StorageError(f"storage cannot be read ({first_line(exc)}). It was left untouched; "
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
