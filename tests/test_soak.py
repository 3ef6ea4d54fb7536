"""Soak: many worker processes on one study, per storage backend (slow; `make soak`).

Exactly N x M trials, numbers unique and contiguous, every trial COMPLETE, no worker crash.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from automl_nn.storage.backends import open_storage

ROOT = Path(__file__).resolve().parents[1]
M = 25  # trials per worker


def _soak(url: str, workers: int) -> None:
    started = time.time()
    done = subprocess.run(
        [sys.executable, "-m", "automl_nn", "search", "--dataset", "digits", "--epochs", "1",
         "--family", "linear,conv2d", "--width", "4:8", "--depth", "1", "--batch-size", "128",
         "--trials", str(workers * M), "--workers", str(workers), "--storage", url,
         "--study-name", "soak"],
        env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "ended abnormally" not in done.stderr and "Traceback" not in done.stderr
    trials = optuna.load_study(study_name="soak", storage=open_storage(url)).trials
    assert len(trials) == workers * M
    assert sorted(t.number for t in trials) == list(range(workers * M))
    assert all(t.state == TrialState.COMPLETE for t in trials)
    print(f"\nsoak {url.split(':')[0]} {workers}x{M}: {len(trials)} trials in "
          f"{time.time() - started:.0f} s")


@pytest.mark.slow
def test_soak_sqlite_8_workers(tmp_path: Path) -> None:
    _soak(f"sqlite:///{tmp_path / 'soak.db'}", 8)


@pytest.mark.slow
def test_soak_journal_8_workers(tmp_path: Path) -> None:
    _soak(f"journal:{tmp_path / 'soak.log'}", 8)


@pytest.mark.slow
def test_soak_postgresql_4_workers(postgres_url: str) -> None:
    _soak(postgres_url, 4)
