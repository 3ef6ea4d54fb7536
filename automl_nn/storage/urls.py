"""Storage URLs and the files they name, without Optuna: what read commands check before opening.

The default storage is `automl-nn.db` in the working directory. A journal is named `journal:PATH`,
`journal:///PATH` or a bare path ending in .log / .jsonl / .journal; anything else is an
SQLAlchemy URL. A file that is not an SQLite database is refused untouched, and read commands
never create one (`must_exist`).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from urllib.parse import quote

from automl_nn.errors import StorageError

DEFAULT_STORAGE = "sqlite:///automl-nn.db"
JOURNAL_SUFFIXES = (".log", ".jsonl", ".journal")
SQLITE_PREFIX = "sqlite:///"
BUSY_TIMEOUT_S = 60  # 16 SQLite writers with the 5 s default lost trials; 60 s lost none


def storage_url(url: str | None) -> str:
    """The storage URL to use: the given one, or the SQLite file in the working directory."""
    return url or DEFAULT_STORAGE


def journal_path(url: str) -> Path | None:
    """The journal file a storage URL names, or None for a database URL."""
    if url.startswith("journal:"):
        rest = url.removeprefix("journal:")
        return Path(rest.removeprefix("//") if rest.startswith("///") else rest)
    if "://" not in url and url.endswith(JOURNAL_SUFFIXES):
        return Path(url)
    return None


def sqlite_path(url: str) -> Path | None:
    """The SQLite file an `sqlite:///PATH` URL names (None for other URLs and in-memory ones)."""
    if not url.startswith(SQLITE_PREFIX):
        return None
    rest = url.removeprefix(SQLITE_PREFIX)
    return None if rest in ("", ":memory:") else Path(rest)


def check_sqlite_file(path: Path, must_exist: bool) -> None:
    """Refuse a path that cannot hold an SQLite database, without creating or touching the file."""
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
        connection = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S)
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


def first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
