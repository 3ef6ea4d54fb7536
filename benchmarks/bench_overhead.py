"""Per-trial overhead: the share of a search's wall time spent outside `fit`.

A 50-trial search of tiny models runs through the real CLI (`python -m automl_nn search`) in a
subprocess, with SQLite storage in a fresh directory; the wall time of the command is compared with
the sum of the trials' `train_time` (the epochs' own time in `fit`: training and validation). The
runs are repeated and the medians printed. Target (issue #11): outside-fit share <= 10%.

A further run of the same command, in a child process that times the stages of a trial, breaks the
outside-fit time down: interpreter start, imports, data load, sampling (the sampler's own work),
storage (every call into the storage, wherever it comes from), model build, static metrics,
evaluation after fit, kept predictions and weights. Time inside nested stages counts for the
innermost one, so `fit` there excludes the storage writes its per-epoch hook makes.

    python -m benchmarks.bench_overhead [--trials 50] [--repeats 3] [--storage-dir DIR] [--code CHECKOUT]

Further arguments go to the search and override the defaults above, e.g. tiny models on MNIST:
`... -- --dataset "mnist?train_size=10000" --data-dir ../shared/data/mnist/raw --epochs 1`.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# Tiny models on digits: one hidden layer of 8-32 units, 3 epochs, no pruning.
TINY = ["--dataset", "digits", "--objective", "accuracy,params", "--family", "linear",
        "--depth", "1", "--width", "8:32", "--activation", "relu,tanh", "--optimizer", "adam",
        "--lr", "0.001:0.1:log", "--batch-size", "64", "--epochs", "3", "--seed", "0"]
STAGES = ("start", "imports", "data load", "sampling", "storage", "model build", "static metrics",
          "fit", "evaluation", "predictions", "weights", "other")


def command(trials: int, storage: Path, extra: list[str]) -> list[str]:
    return ["search", *TINY, *extra, "--trials", str(trials),
            "--storage", f"sqlite:///{storage / 'bench.db'}", "--study-name", "bench"]


def train_seconds(storage: Path) -> tuple[float, int]:
    """Sum of `train_time` over the study's finished trials, and how many there are."""
    import optuna

    from automl_nn.storage.backends import open_storage

    study = optuna.load_study(study_name="bench", storage=open_storage(f"sqlite:///{storage / 'bench.db'}"))
    done = [t for t in study.trials if t.state.is_finished() and "train_time" in t.user_attrs]
    return sum(float(t.user_attrs["train_time"]) for t in done), len(done)


def plain_run(trials: int, base: Path | None, extra: list[str], code: Path) -> tuple[float, float, int]:
    """(wall seconds of the command, seconds in fit, finished trials) for one fresh search."""
    with tempfile.TemporaryDirectory(dir=base) as tmp:
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "automl_nn", *command(trials, Path(tmp), extra)],
                       cwd=tmp, env={**os.environ, "PYTHONPATH": str(code)}, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wall = time.perf_counter() - started
        fit, n = train_seconds(Path(tmp))
    return wall, fit, n


def profiled_run(trials: int, base: Path | None, extra: list[str], code: Path) -> dict[str, float]:
    """Seconds per stage of one fresh search run by `--child` (see `child`)."""
    with tempfile.TemporaryDirectory(dir=base) as tmp:
        out = Path(tmp) / "stages.json"
        started = time.time()
        subprocess.run([sys.executable, "-m", "benchmarks.bench_overhead", "--child", str(out),
                        "--", *command(trials, Path(tmp), extra)],
                       cwd=tmp, env={**os.environ, "PYTHONPATH": f"{code}{os.pathsep}{ROOT}"},
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wall = time.time() - started
        stages: dict[str, float] = json.loads(out.read_text())
    stages["start"] = stages.pop("entered") - started  # interpreter start, up to our first line
    stages["other"] = wall - sum(stages.values())  # exit, CLI parsing, study creation, the summary
    stages["wall"] = wall
    return stages


# ---- the child: the CLI with timed stages ---------------------------------------------------------


class Stages:
    """Seconds per stage; time inside nested stages counts for the innermost one only.

    Only the main thread is timed: the heartbeat thread's storage writes overlap the trial.
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.stack: list[list[Any]] = []  # [stage, start of its current exclusive span]
        self.thread = threading.get_ident()

    def wrap(self, stage: str, func: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(func)
        def timed(*args: Any, **kwargs: Any) -> Any:
            if threading.get_ident() != self.thread:
                return func(*args, **kwargs)
            now = time.perf_counter()
            if self.stack:
                outer = self.stack[-1]
                self._add(outer[0], now - outer[1])
            self.stack.append([stage, now])
            try:
                return func(*args, **kwargs)
            finally:
                inner = self.stack.pop()
                now = time.perf_counter()
                self._add(inner[0], now - inner[1])
                if self.stack:
                    self.stack[-1][1] = now

        return timed

    def _add(self, stage: str, seconds: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds


def _patch(stages: Stages, owner: Any, name: str, stage: str) -> None:
    setattr(owner, name, stages.wrap(stage, getattr(owner, name)))


def instrument(stages: Stages) -> None:
    """Wrap the functions of each stage where the search looks them up."""
    import optuna

    from automl_nn import metrics, space, study
    from automl_nn import trial as objectives
    from automl_nn.analysis import predictions
    from automl_nn.data import catalog as data
    from automl_nn.storage import artifacts
    from automl_nn.storage.recovery import TaggingRDBStorage

    _patch(stages, data, "load", "data load")
    _patch(stages, study, "open_storage", "storage")  # engine, tables, version check
    for sampler in (optuna.samplers.TPESampler, optuna.samplers.RandomSampler,
                    optuna.samplers.NSGAIISampler):
        for name in ("infer_relative_search_space", "sample_relative", "sample_independent",
                     "before_trial", "after_trial"):
            _patch(stages, sampler, name, "sampling")
    _patch(stages, space, "sample", "sampling")
    for name in dir(optuna.storages.RDBStorage):
        if not name.startswith("_") and callable(getattr(optuna.storages.RDBStorage, name)):
            _patch(stages, TaggingRDBStorage, name, "storage")
    _patch(stages, objectives, "build", "model build")
    _patch(stages, metrics, "static_metrics", "static metrics")
    _patch(stages, objectives, "fit", "fit")
    _patch(stages, objectives, "evaluate", "evaluation")
    _patch(stages, predictions.Recorder, "record", "predictions")
    _patch(stages, predictions, "save_predictions", "predictions")
    _patch(stages, predictions, "save_labels", "predictions")  # study.py calls it by module
    _patch(stages, artifacts, "keep_weights", "weights")
    _patch(stages, artifacts, "drop_off_front", "weights")


def child(out: Path, argv: list[str]) -> None:
    """Run the CLI with `argv`, timing its stages; write the seconds per stage to `out`."""
    entered = time.time()
    start = time.perf_counter()
    # torch imports its compiler stack on the first optimizer step (or FLOP count) of any process
    import torch._dynamo  # noqa: F401

    from automl_nn import cli, config, progress, study, workers  # noqa: F401

    stages = Stages()
    stages.seconds["imports"] = time.perf_counter() - start
    instrument(stages)
    sys.argv = ["automl-nn", *argv]
    try:
        cli.main()
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise
    out.write_text(json.dumps({**stages.seconds, "entered": entered}))


# ---- the driver ----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--storage-dir", type=Path, default=None,
                        help="where the fresh SQLite files go (default: the system's temp dir)")
    parser.add_argument("--code", type=Path, default=ROOT,
                        help="the checkout whose automl_nn runs (e.g. another branch, for a before/after)")
    parser.add_argument("--child", type=Path, default=None, help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    rest = [a for a in rest if a != "--"]
    if args.child is not None:
        child(args.child, rest)
        return
    from benchmarks.common import machine

    print(f"# {machine()}; {args.trials} trials: {' '.join(TINY)}; storage under "
          f"{args.storage_dir or tempfile.gettempdir()}; automl_nn from {args.code}")
    shares, walls = [], []
    for _ in range(args.repeats):
        wall, fit, n = plain_run(args.trials, args.storage_dir, rest, args.code.resolve())
        shares.append(1 - fit / wall)
        walls.append(wall)
        print(f"wall {wall:.1f} s, in fit {fit:.1f} s over {n} trials, outside fit {shares[-1]:.1%} "
              f"({(wall - fit) / max(n, 1) * 1000:.0f} ms per trial)", flush=True)
    print(f"median over {args.repeats}: wall {statistics.median(walls):.1f} s, outside fit "
          f"{statistics.median(shares):.1%} (target <= 10%)")
    stages = profiled_run(args.trials, args.storage_dir, rest, args.code.resolve())
    wall = stages.pop("wall")
    print(f"\nstage | seconds | share of wall ({wall:.1f} s, one timed run)")
    for name in STAGES:
        print(f"{name} | {stages.get(name, 0.0):.2f} | {stages.get(name, 0.0) / wall:.1%}")


if __name__ == "__main__":
    main()
