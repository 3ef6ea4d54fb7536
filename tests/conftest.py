"""Shared fixtures: every test runs in its own working directory (where the default storage lives)."""

from __future__ import annotations

import hashlib
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
