"""Storage health: the damage a crash or a disk leaves in a storage file, found and repaired.

A journal file (Optuna's JournalFileBackend) holds one JSON record per line, appended under a lock
file (`PATH.lock`). What Optuna 5.0's `read_logs` does with damage:

- A *torn tail* (the last record cut off: its writer was killed mid-append) is skipped, so the
  operation never happened; a trial whose COMPLETE record was cut stays RUNNING, and the reaper
  fails and retries it. But Optuna's next append lands on the same line: the merged line is
  unreadable and the appended record is lost with it (a new trial's record: `create_new_trial`
  fails with AttributeError). `SafeJournalFileBackend` cuts a torn tail off, under the lock,
  before it appends.
- A *corrupt line* (garbage, or JSON that is no record) stops every read that passes it with a
  JSONDecodeError or KeyError; as the very last line it is skipped until something is appended
  after it. Opening such a journal is refused naming the lines (`corrupt_message`), and
  `automl-nn verify PATH --repair` backs the file up and drops them.

An SQLite file is checked with `PRAGMA integrity_check` over a read-only connection.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sqlite3
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote

from optuna.storages.journal import JournalFileBackend, JournalFileSymlinkLock
from optuna.storages.journal._storage import JournalOperation

from automl_nn.errors import StorageError
from automl_nn.storage import critical
from automl_nn.storage.urls import journal_path

log = logging.getLogger(__name__)

SQLITE_HEADER = b"SQLite format 3\x00"
RECORD_START = b'{"op_code":'  # how Optuna's compact json.dumps begins every record
OPERATIONS = frozenset(int(op) for op in JournalOperation)
SHOWN_LINES = 10  # line numbers listed in a message before "..."


# ---- journal files -------------------------------------------------------------------------------


@dataclass(frozen=True)
class JournalReport:
    """What a scan of a journal file found; line numbers count from 1, as editors do."""

    path: Path
    records: int = 0
    corrupt: tuple[int, ...] = ()
    salvaged: tuple[int, ...] = ()  # corrupt lines that end with a whole record --repair keeps
    torn_line: int | None = None
    torn_bytes: int = 0

    @property
    def healthy(self) -> bool:
        return not self.corrupt and self.torn_line is None

    def describe(self) -> list[str]:
        lines = [f"journal {self.path}: {self.records} readable records"]
        if self.corrupt:
            lines.append(f"corrupt lines: {len(self.corrupt)} ({_numbers(self.corrupt)})")
        if self.salvaged:
            lines.append(f"  of which {len(self.salvaged)} hold a whole record after a cut one "
                         f"(--repair keeps it): {_numbers(self.salvaged)}")
        if self.torn_line is not None:
            lines.append(f"torn tail: line {self.torn_line}, {self.torn_bytes} bytes of a record "
                         "cut off mid-write (a writer died while appending, or is appending now); "
                         "the next search removes it")
        return lines


def _numbers(lines: tuple[int, ...]) -> str:
    shown = ", ".join(str(n) for n in lines[:SHOWN_LINES])
    return f"line{'s' if len(lines) > 1 else ''} {shown}{', ...' if len(lines) > SHOWN_LINES else ''}"


def scan_journal(path: Path) -> JournalReport:
    """Every line Optuna cannot read, and a torn tail, in one pass over the file."""
    return _scan(path, path.read_bytes())


def _scan(path: Path, data: bytes) -> JournalReport:
    lines, tail = _split(data)
    corrupt = tuple(i for i, line in enumerate(lines, 1) if _record(line) is None)
    salvaged = tuple(i for i in corrupt if _salvage(lines[i - 1]) is not None)
    return JournalReport(path, records=len(lines) - len(corrupt), corrupt=corrupt,
                         salvaged=salvaged, torn_line=len(lines) + 1 if tail else None,
                         torn_bytes=len(tail))


def _split(data: bytes) -> tuple[list[bytes], bytes]:
    """Whole lines (each with its newline) and the torn tail (the bytes after the last newline).

    Only b"\\n" ends a line, as in Optuna's binary-mode reader.
    """
    end = data.rfind(b"\n") + 1
    return [line + b"\n" for line in data[:end].split(b"\n")[:-1]], data[end:]


def _record(line: bytes) -> dict[str, Any] | None:
    """The journal record a line holds, or None where Optuna's replay would fail on it."""
    try:
        value = json.loads(line)
    except ValueError:  # JSONDecodeError, and UnicodeDecodeError for bytes that are not UTF-8
        return None
    if not isinstance(value, dict):
        return None
    op = value.get("op_code")
    if type(op) is not int or op not in OPERATIONS or not isinstance(value.get("worker_id"), str):
        return None
    return value


def _salvage(line: bytes) -> bytes | None:
    """The whole record at the end of a line where an append ran into a cut record, if any."""
    start = line.rfind(RECORD_START)
    if start <= 0 or _record(line[start:]) is None:
        return None
    return line[start:]


def _kept(data: bytes) -> bytes:
    lines, _tail = _split(data)
    kept = []
    for line in lines:
        whole = line if _record(line) is not None else _salvage(line)
        if whole is not None:
            kept.append(whole)
    return b"".join(kept)


def repair_journal(path: Path, now: datetime | None = None) -> tuple[JournalReport, Path | None]:
    """Back the file up, then keep only its readable records (and records salvaged from lines a
    torn write ran into). Returns what was found and the backup (None when nothing was wrong).

    Runs under the journal's lock, so no worker appends meanwhile; a search still running keeps
    line positions in memory, so stop every search on the file first.
    """
    lock = JournalFileSymlinkLock(str(path))
    lock.acquire()
    try:
        data = path.read_bytes()
        report = _scan(path, data)
        if report.healthy:
            return report, None
        backup = _backup_path(path, now or datetime.now())
        shutil.copy2(path, backup)
        staged = path.with_name(path.name + ".repairing")
        with staged.open("wb") as handle:
            handle.write(_kept(data))
            _sync(handle)
        shutil.copymode(path, staged)
        os.replace(staged, path)
        return report, backup
    finally:
        lock.release()


def _backup_path(path: Path, now: datetime) -> Path:
    stem = f"{path.name}.bak-{now:%Y%m%d-%H%M%S}"
    candidate, n = path.with_name(stem), 1
    while candidate.exists():
        candidate, n = path.with_name(f"{stem}-{n}"), n + 1
    return candidate


def cut_torn_tail(path: Path) -> int:
    """Cut a torn last record off a journal file; returns the bytes removed.

    Call it holding the journal's lock: a live writer finishes its line (newline included) before
    it lets go of the lock, so a line without one is a dead writer's.
    """
    with path.open("rb+") as handle:
        size = handle.seek(0, os.SEEK_END)
        if size == 0:
            return 0
        handle.seek(size - 1)
        if handle.read(1) == b"\n":
            return 0
        end = _end_of_last_line(handle, size)
        handle.truncate(end)
        _sync(handle)
        return size - end


def _end_of_last_line(handle: BinaryIO, size: int, block: int = 1 << 16) -> int:
    """The offset just past the last newline of a file (0 when it has none)."""
    stop = size
    while stop > 0:
        start = max(0, stop - block)
        handle.seek(start)
        found = handle.read(stop - start).rfind(b"\n")
        if found >= 0:
            return start + found + 1
        stop = start
    return 0


def _sync(handle: BinaryIO) -> None:
    handle.flush()
    os.fsync(handle.fileno())


class SafeJournalFileBackend(JournalFileBackend):
    """Optuna's journal file backend, except that an append first cuts off a torn last record, and
    a stop signal never interrupts it while it holds the lock (`critical.section`).

    The records are written exactly as Optuna writes them (compact JSON, one per line, fsync'd).
    """

    def append_logs(self, logs: list[dict[str, Any]]) -> None:
        text = "\n".join(json.dumps(record, separators=(",", ":")) for record in logs) + "\n"
        with critical.section():  # a stop signal waits until the lock is released
            self._lock.acquire()
            try:
                removed = cut_torn_tail(Path(self._file_path))
                if removed:
                    log.warning("journal %s: its last record was cut off mid-write by a crash (%d "
                                "bytes, never readable); removed it before appending",
                                self._file_path, removed)
                with open(self._file_path, "ab") as handle:
                    handle.write(text.encode("utf-8"))
                    _sync(handle)
            finally:
                self._lock.release()


def corrupt_message(report: JournalReport) -> str:
    """The error for opening a journal with corrupt lines: which ones, and the way out."""
    count = len(report.corrupt)
    what = f"{count} lines are not journal records" if count > 1 else "1 line is not a journal record"
    return (f"journal file {report.path}: {what} ({_numbers(report.corrupt)}), so Optuna cannot "
            "read the study. "
            f"Nothing was changed. Stop every search that uses it, then run `automl-nn verify "
            f"{report.path} --repair`: it backs the file up ({report.path.name}.bak-<time>) and "
            "drops those lines.")


# ---- SQLite files --------------------------------------------------------------------------------


def check_sqlite(path: Path) -> list[str]:
    """Problems `PRAGMA integrity_check` finds over a read-only connection; [] when it says ok."""
    uri = f"file:{quote(str(path.resolve()))}?mode=ro"
    try:
        connection = sqlite3.connect(uri, uri=True, timeout=60)
        try:
            rows = connection.execute("PRAGMA integrity_check").fetchall()
        finally:
            connection.close()
    except sqlite3.Error as exc:
        return [f"{type(exc).__name__}: {exc}"]
    problems = [str(row[0]) for row in rows]
    return [] if problems == ["ok"] else problems


# ---- the verify command --------------------------------------------------------------------------


@dataclass
class Verdict:
    """What `automl-nn verify` prints, and whether the storage is (now) sound."""

    lines: list[str] = field(default_factory=list)
    sound: bool = True


def storage_file(storage: str) -> tuple[str, Path]:
    """("journal" | "sqlite", path) for a storage URL or a bare file path; servers are refused."""
    journal = journal_path(storage)
    if journal is not None:
        kind, path = "journal", journal
    elif storage.startswith("sqlite:///"):
        kind, path = "sqlite", Path(storage.removeprefix("sqlite:///"))
    elif "://" in storage:
        raise StorageError(f"verify checks storage files (journal:PATH, sqlite:///PATH), but got "
                           f"{storage}. A database server has its own checks (PostgreSQL: "
                           "pg_amcheck).")
    else:
        path = Path(storage)
        kind = "sqlite" if _header(path) == SQLITE_HEADER else "journal"
    if not path.is_file():
        raise StorageError(f"{kind} file {path}: no such file. Pass the --storage of a search.")
    return kind, path


def _header(path: Path) -> bytes:
    try:
        with path.open("rb") as handle:
            return handle.read(len(SQLITE_HEADER))
    except OSError:
        return b""


def verify(storage: str, repair: bool = False) -> Verdict:
    """Check a journal or SQLite file; with `repair`, rewrite a damaged journal (after a backup)."""
    kind, path = storage_file(storage)
    if kind == "sqlite":
        if repair:
            raise StorageError(f"--repair rewrites journal files only; {path} is SQLite, which "
                               "cannot be repaired in place. Restore a backup, or copy out what "
                               f"is readable: sqlite3 {path} .recover | sqlite3 rescued.db")
        return _verify_sqlite(path)
    if not repair:
        report = scan_journal(path)
        verdict = Verdict(report.describe(), report.healthy)
        if report.corrupt:
            verdict.lines.append(f"damaged: stop every search that uses it, then run `automl-nn "
                                 f"verify {path} --repair` (it backs the file up first)")
        return verdict
    report, backup = repair_journal(path)
    verdict = Verdict(report.describe())
    if backup is not None:
        dropped = len(report.corrupt) - len(report.salvaged)
        verdict.lines.append(
            f"repaired: backup {backup}; dropped {dropped} corrupt line(s)"
            f"{' and the torn tail' if report.torn_line is not None else ''}; "
            f"{report.records + len(report.salvaged)} records kept")
    return verdict


def _verify_sqlite(path: Path) -> Verdict:
    problems = check_sqlite(path)
    if not problems:
        return Verdict([f"sqlite {path}: integrity_check ok"])
    return Verdict([f"sqlite {path}: integrity_check found {len(problems)} problem(s):",
                    *(f"  {p}" for p in problems[:50]),
                    "damaged: SQLite cannot be repaired in place. Restore a backup, or copy out "
                    f"what is readable: sqlite3 {path} .recover | sqlite3 rescued.db"], sound=False)
