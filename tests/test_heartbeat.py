"""No false positives: live trials are never failed as stale while their workers are alive.

Many worker processes share one SQLite file through the tool's RDB storage
(`recovery.rdb_storage`: busy timeout, heartbeat, retried writes, the stale-trial reaper). Each
trial runs at least 3 heartbeat intervals and past the grace period, writing a user attribute
every half second as a training trial writes its epochs, so writers contend for the file. While
they run, this process reaps stale trials every second, as a resuming search or another worker
does. Not one trial may be reaped.
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

from automl_nn.storage import recovery

ROOT = Path(__file__).resolve().parents[1]

WORKER = '''\
"""One worker: its trials run `seconds`, writing an attribute every half second."""
import sys
import time

import optuna

from automl_nn.storage import recovery

url, name, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
optuna.logging.set_verbosity(optuna.logging.ERROR)
study = optuna.load_study(study_name=name, storage=recovery.rdb_storage(url))
recovery.reap_stale(study, recovery.heartbeat_settings())


def objective(trial):
    started, epoch = time.time(), 0
    while time.time() - started < seconds:
        epoch += 1
        trial.set_user_attr(f"epoch{epoch}", {"val_accuracy": 0.5})
        time.sleep(0.5)
    return 1.0


study.optimize(objective, n_trials=1)
'''


def _no_false_positive(tmp_path: Path, processes: int) -> None:
    beat = recovery.heartbeat_settings()
    seconds = max(3 * beat.interval, beat.grace + beat.interval)
    url = f"sqlite:///{tmp_path / 'hb.db'}"
    study = optuna.create_study(study_name="hb", storage=recovery.rdb_storage(url),
                                direction="maximize")  # tables exist before any worker starts
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    workers = [subprocess.Popen([sys.executable, str(script), url, "hb", str(seconds)], env=env,
                                stderr=subprocess.PIPE, text=True) for _ in range(processes)]
    reaped: list[int] = []
    started = time.time()
    while any(w.poll() is None for w in workers) and time.time() - started < seconds + 600:
        reaped += recovery.reap_stale(study, beat)
        time.sleep(1)
    errors = [w.communicate(timeout=60)[1] for w in workers]
    print(f"\n{processes} workers, heartbeat {beat.interval} s, grace {beat.grace} s, trials of "
          f"{seconds} s: {time.time() - started:.0f} s")

    assert [w.returncode for w in workers] == [0] * processes, "\n".join(errors)[-3000:]
    assert reaped == []
    trials = study.trials
    assert [t.user_attrs.get("fail_reason") for t in trials if t.state == TrialState.FAIL] == []
    assert [t.state for t in trials] == [TrialState.COMPLETE] * processes
    assert not any("Cannot tell" in e or "Traceback" in e for e in errors)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_heartbeat_no_false_positive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """16 processes with the tool's own defaults (30 s beats, 120 s grace): trials of 150 s."""
    monkeypatch.delenv(recovery.INTERVAL_ENV, raising=False)
    monkeypatch.delenv(recovery.GRACE_ENV, raising=False)
    _no_false_positive(tmp_path, 16)


def test_heartbeat_no_false_positive_short(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """4 processes, 1 s beats and a 4 s grace (4 x interval): trials of 5 s outlast the grace, so
    a heartbeat that stopped, or a reaper that misjudged a live trial, fails it."""
    monkeypatch.setenv(recovery.INTERVAL_ENV, "1")
    monkeypatch.setenv(recovery.GRACE_ENV, "4")
    _no_false_positive(tmp_path, 4)
