"""Faults from outside, on real processes: kill -9, SIGTERM and SIGINT in the middle of a trial.

Each test runs `python -m automl_nn` as a user would and checks the reliability plan's invariants:
finished trials are never changed (I1), nothing is left RUNNING (I2), numbers are unique (I3), a
lost trial is FAIL(stale) with exactly one retry (I6).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import FrozenTrial, TrialState

from automl_nn.config import resolve
from automl_nn.storage import recovery
from automl_nn.storage.backends import open_storage
from automl_nn.study import open_study

ROOT = Path(__file__).resolve().parents[1]
LONG = 600  # epochs of a trial long enough (several seconds) to be caught in the middle
SPACE = ["--dataset", "digits", "--objective", "accuracy", "--family", "linear", "--depth", "1",
         "--width", "8", "--batch-size", "64", "--seed", "0", "--epochs", f"1,{LONG}"]


def _env() -> dict[str, str]:
    # Heartbeat and lease tuned down so a lost trial is detected in seconds. One torch thread: these
    # tiny networks train no faster on two, and on a busy machine spinning threads slow them down
    # several times (100 epochs: 18 s with one thread, 48 s with two, at load average 4).
    return {**os.environ, "PYTHONPATH": str(ROOT), recovery.INTERVAL_ENV: "1",
            recovery.GRACE_ENV: "2", "OMP_NUM_THREADS": "1"}


def _start(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "automl_nn", "search", *SPACE, *args],
                            env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _prepare(url: str, name: str, epochs: list[int]) -> None:
    """The study as the CLI would create it, with the epochs of its first trials queued."""
    config = resolve({"study_name": name, "dataset": "digits", "objectives": ["accuracy"],
                      "seed": 0, "space": {"family": "linear", "depth": 1, "width": 8,
                                           "batch_size": 64, "epochs": [1, LONG]}})
    study = open_study(config, open_storage(url))
    for n in epochs:
        study.enqueue_trial({"epochs": n})


def _trials(url: str, name: str) -> list[FrozenTrial]:
    return optuna.load_study(study_name=name, storage=open_storage(url)).trials


def _wait_in_training(url: str, name: str, count: int, process: subprocess.Popen[str]) -> None:
    """Until `count` long trials are RUNNING and past their first epoch.

    Only the long ones: a one-epoch trial seen with its epoch done may be complete a moment later.
    """
    deadline = time.time() + 120
    while time.time() < deadline:
        assert process.poll() is None, process.communicate()[0]
        running = [t for t in _trials(url, name) if t.state == TrialState.RUNNING
                   and t.params.get("epochs") == LONG and "epoch1" in t.user_attrs]
        if len(running) >= count:
            return
        time.sleep(0.2)
    raise AssertionError("no trial reached training in time")


def _url(kind: str, tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 's.db'}" if kind == "sqlite" else f"journal:{tmp_path / 's.log'}"


@pytest.mark.parametrize("kind", ["sqlite", "journal"])
def test_kill9_mid_trial_then_rerun_retries_it_once(kind: str, tmp_path: Path) -> None:
    url, name = _url(kind, tmp_path), "k"
    _prepare(url, name, [1, 1, LONG, 1])
    args = ("--storage", url, "--study-name", name, "--trials", "4")
    process = _start(*args)
    _wait_in_training(url, name, 1, process)
    before = {t.number: (t.params, t.values) for t in _trials(url, name)
              if t.state == TrialState.COMPLETE}
    process.send_signal(signal.SIGKILL)
    process.wait(30)
    killed = next(t.number for t in _trials(url, name) if t.state == TrialState.RUNNING)
    time.sleep(3)  # past the grace period of the dead trial's heartbeat / lease

    rerun = subprocess.run([sys.executable, "-m", "automl_nn", "search", *SPACE, *args],
                           env=_env(), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    trials = _trials(url, name)
    after = {t.number: (t.params, t.values) for t in trials if t.state == TrialState.COMPLETE}
    assert before == {n: after[n] for n in before}  # I1: finished trials unchanged
    assert trials[killed].state == TrialState.FAIL
    assert trials[killed].user_attrs["fail_reason"] == "stale"
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == killed]
    assert len(retries) == 1 and retries[0].params == trials[killed].params  # I6
    assert retries[0].state == TrialState.COMPLETE
    assert len(after) == 4
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert [t.number for t in trials] == list(range(len(trials)))  # I3


def _assert_closed(url: str, name: str, minimum: int) -> None:
    trials = _trials(url, name)
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    interrupted = [t for t in trials if t.user_attrs.get("fail_reason") == "interrupted"]
    assert len(interrupted) >= minimum, [(t.number, t.state, t.user_attrs.get("fail_reason"),
                                          t.user_attrs.get("fail_message")) for t in trials]
    assert all(t.state == TrialState.FAIL for t in interrupted)


def test_sigterm_to_a_parallel_search_closes_every_trial(tmp_path: Path) -> None:
    url, name = _url("journal", tmp_path), "t"
    _prepare(url, name, [LONG, LONG])
    process = _start("--storage", url, "--study-name", name, "--trials", "4", "--workers", "2")
    _wait_in_training(url, name, 2, process)
    process.send_signal(signal.SIGTERM)  # to the parent only: it forwards to its workers
    output = process.communicate(timeout=120)[0]
    assert process.returncode == 143, output
    assert "SIGTERM" in output
    _assert_closed(url, name, 2)


@pytest.mark.parametrize(("kind", "sig", "code"), [
    ("sqlite", signal.SIGINT, 130),
    # a closed terminal (or ssh session) hangs up: the trial is closed, the rerun resumes it
    ("journal", signal.SIGHUP, 129),
])
def test_a_signal_closes_the_running_trial_with_its_exit_code(tmp_path: Path, kind: str,
                                                              sig: signal.Signals, code: int) -> None:
    url, name = _url(kind, tmp_path), "s"
    _prepare(url, name, [LONG])
    process = _start("--storage", url, "--study-name", name, "--trials", "2")
    _wait_in_training(url, name, 1, process)
    process.send_signal(sig)
    output = process.communicate(timeout=120)[0]
    assert process.returncode == code, output
    assert f"interrupted ({sig.name})" in output
    _assert_closed(url, name, 1)
    closed = next(t for t in _trials(url, name) if t.user_attrs.get("fail_reason") == "interrupted")
    assert closed.params["epochs"] == LONG and sig.name in closed.user_attrs["fail_message"]


def test_finished_parallel_search_rerun_three_times_adds_nothing(tmp_path: Path) -> None:
    url = _url("journal", tmp_path)
    command = [sys.executable, "-m", "automl_nn", "search", "--dataset", "digits", "--epochs", "1",
               "--width", "4:8", "--depth", "1", "--seed", "0", "--trials", "4", "--workers", "2",
               "--storage", url, "--study-name", "p"]
    for attempt in range(4):
        done = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        trials = _trials(url, "p")
        assert len(trials) == 4, attempt
        assert [t.state for t in trials] == [TrialState.COMPLETE] * 4
