"""Trials per hour with `--workers 2` against `--workers 1`, measured side by side in one run.

Each round runs the same search (fresh study) once per worker count, alternating so that load from
other processes on the machine hits both alike; the figures are medians over rounds. Throughput is
finished trials over the span from the first trial's start to the last trial's end (steady state);
the wall time of the whole command, with its process start-up, is printed beside it.

    python benchmarks/bench_workers.py [--rounds 3] [--trials 16] [--dataset digits|mnist] [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna

ROOT = Path(__file__).resolve().parents[1]
COMMON = ["--objective", "accuracy,params", "--seed", "0"]
# Per dataset, small models with enough work per trial (a second or more on one core) that the
# per-trial storage and sampler overhead does not dominate.
SPACES = {
    "digits": ["--family", "conv2d,linear", "--depth", "1:2", "--width", "32:64", "--epochs", "30",
               "--batch-size", "16"],
    "mnist": ["--family", "linear", "--depth", "1:2", "--width", "32:128", "--epochs", "2",
              "--batch-size", "64"],
}


def run_once(workers: int, trials: int, dataset: str, data_dir: str | None) -> tuple[float, float]:
    """(trials per hour in steady state, wall seconds) for one search."""
    with tempfile.TemporaryDirectory() as tmp:
        url = f"journal:{tmp}/bench.log"
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "automl_nn", "search", "--dataset", dataset,
                        *SPACES[dataset], *COMMON, *(["--data-dir", data_dir] if data_dir else []),
                        "--trials", str(trials), "--workers", str(workers), "--storage", url,
                        "--study-name", "bench"],
                       env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wall = time.perf_counter() - started
        from automl_nn.storage.backends import open_storage

        done = [t for t in optuna.load_study(study_name="bench", storage=open_storage(url)).trials
                if t.datetime_complete is not None and t.datetime_start is not None]
        span = (max(t.datetime_complete for t in done)  # type: ignore[type-var]
                - min(t.datetime_start for t in done)).total_seconds()  # type: ignore[type-var]
        return len(done) * 3600 / span, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--dataset", default="digits", choices=sorted(SPACES))
    parser.add_argument("--data-dir", default=None, help="where the dataset's files are (MNIST .gz)")
    args = parser.parse_args()
    rates: dict[int, list[float]] = {1: [], 2: []}
    walls: dict[int, list[float]] = {1: [], 2: []}
    for _ in range(args.rounds):
        for workers in (1, 2):
            rate, wall = run_once(workers, args.trials, args.dataset, args.data_dir)
            rates[workers].append(rate)
            walls[workers].append(wall)
            print(f"workers={workers}: {rate:.0f} trials/h, wall {wall:.1f} s", flush=True)
    print(f"machine: {platform.processor() or platform.machine()}, {len(os.sched_getaffinity(0))} "
          f"cores, Python {platform.python_version()}; dataset {args.dataset}, "
          f"{args.trials} trials, {args.rounds} rounds")
    for workers in (1, 2):
        print(f"workers={workers}: median {statistics.median(rates[workers]):.0f} trials/h, "
              f"median wall {statistics.median(walls[workers]):.1f} s")
    ratio = statistics.median(rates[2]) / statistics.median(rates[1])
    wall_ratio = statistics.median(walls[1]) / statistics.median(walls[2])
    print(f"speed-up workers 2 / 1: {ratio:.2f}x trials/h (steady state), "
          f"{wall_ratio:.2f}x on wall time incl. start-up (target >= 1.6x)")


if __name__ == "__main__":
    main()
