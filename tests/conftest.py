"""Shared fixtures: every test runs in its own working directory (where the default storage lives)."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from automl_nn.cli import app

# Small and fast: one epoch, narrow nets. Enough to exercise the whole path on CPU.
TINY = ["--dataset", "digits", "--epochs", "1", "--width", "4:16", "--depth", "1:2",
        "--batch-size", "64", "--seed", "0"]


@pytest.fixture(autouse=True)
def _workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def cli() -> CliRunner:
    return CliRunner()


def run(runner: CliRunner, *args: str) -> tuple[int, str]:
    """Invoke the CLI in-process; returns (exit code, stdout + stderr)."""
    result = runner.invoke(app, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---- PostgreSQL: a private throwaway cluster on loopback (or TEST_DB_URL) -------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pg_bin() -> Path | None:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name)
                   if p.parent.name.isdigit() else 0)
    return found[-1] if found else None


def _as_postgres(args: list[str]) -> list[str]:
    # initdb refuses to run as root; the cluster runs as the postgres user there.
    return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """Base URL of a PostgreSQL server: TEST_DB_URL, or a private cluster started for this session."""
    if os.environ.get("TEST_DB_URL"):
        yield os.environ["TEST_DB_URL"].rsplit("/", 1)[0]
        return
    binary = _pg_bin()
    if binary is None:
        pytest.skip("PostgreSQL is not installed (`make system-deps` as root installs it)")
    root = Path(tempfile.mkdtemp(prefix="automl-nn-pg-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    port = _free_port()
    data, logfile = root / "data", root / "pg.log"
    steps = [
        [str(binary / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
         "--no-sync"],
        [str(binary / "pg_ctl"), "-D", str(data), "-l", str(logfile), "-w", "-t", "60", "-o",
         f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off -c max_connections=60",
         "start"],
    ]
    for step in steps:
        done = subprocess.run(_as_postgres(step), capture_output=True, text=True)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            shutil.rmtree(root, ignore_errors=True)
            pytest.skip(f"PostgreSQL could not start: {' / '.join(tail)}")
    try:
        yield f"postgresql+psycopg2://postgres@127.0.0.1:{port}"
    finally:
        subprocess.run(_as_postgres([str(binary / "pg_ctl"), "-D", str(data), "-m", "immediate",
                                     "-w", "stop"]), capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server: str) -> str:
    """A fresh, empty database on the test server."""
    import sqlalchemy

    name = f"t{uuid.uuid4().hex[:12]}"
    engine = sqlalchemy.create_engine(f"{postgres_server}/postgres", isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sqlalchemy.text(f"CREATE DATABASE {name}"))
    engine.dispose()
    return f"{postgres_server}/{name}"


def study_with_raised_target(cli: CliRunner, url: str, name: str, target: int) -> None:
    """A 2-trial TINY search stored at `url`, whose target another search then raises to `target`
    (joining workers read the target and the space from storage)."""
    from automl_nn.config import resolve
    from automl_nn.storage.backends import open_storage
    from automl_nn.study import open_study

    code, output = run(cli, "search", *TINY, "--trials", "2", "--study-name", name, "--storage", url)
    assert code == 0, output
    config = resolve({"study_name": name, "dataset": "digits", "trials": target, "seed": 0,
                      "space": {"epochs": 1, "width": {"low": 4, "high": 16},
                                "depth": {"low": 1, "high": 2}, "batch_size": 64}})
    open_study(config, open_storage(url))
