"""Trials per hour with `--workers 2` against `--workers 1`, measured side by side in one run.

Each round runs the same search (fresh study) once per arm, alternating so that load from other
processes on the machine hits every arm alike; the figures are medians over rounds. The arms: one
worker at each of `--baseline-threads` torch threads (OMP_NUM_THREADS / MKL_NUM_THREADS; default 1
and 2), and `--workers 2` (each worker at cores // 2 threads, as the CLI sets them). The speed-up is
taken against the best single-worker arm (the highest median trials/h), and printed against each.
Throughput is finished trials over the span from the first trial's start to the last trial's end
(steady state); the wall time of the whole command, with its process start-up, is printed beside
it, and so is their difference (start-up, study creation and the summary).

    python benchmarks/bench_workers.py [--rounds 3] [--trials 16] [--dataset digits|mnist] [--data-dir DIR]
    python benchmarks/bench_workers.py --smoke    # 1 round of 2 one-epoch trials: checks the script runs
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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
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
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


@dataclass(frozen=True)
class Arm:
    """One way to run the search: worker processes, and torch threads when there is one worker."""

    workers: int
    threads: int | None = None  # None: as the CLI sets them (cores // workers per worker)

    @property
    def label(self) -> str:
        if self.threads is None:
            return f"workers={self.workers}"
        return f"workers={self.workers}, {self.threads} thread{'s' if self.threads > 1 else ''}"


def space(dataset: str, epochs: int | None) -> list[str]:
    """The dataset's search space, with its epochs replaced when `epochs` is given."""
    args = list(SPACES[dataset])
    if epochs is not None:
        args[args.index("--epochs") + 1] = str(epochs)
    return args


def run_once(arm: Arm, trials: int, dataset: str, data_dir: str | None,
             epochs: int | None = None) -> tuple[float, float, float]:
    """(trials per hour in steady state, wall seconds, wall minus the trials' span) for one search."""
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES}
    if arm.threads is not None:  # read by torch at import: the single process trains at this count
        env |= dict.fromkeys(THREAD_VARIABLES, str(arm.threads))
    with tempfile.TemporaryDirectory() as tmp:
        url = f"journal:{tmp}/bench.log"
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "automl_nn", "search", "--dataset", dataset,
                        *space(dataset, epochs), *COMMON, *(["--data-dir", data_dir] if data_dir else []),
                        "--trials", str(trials), "--workers", str(arm.workers), "--storage", url,
                        "--study-name", "bench"],
                       env={**env, "PYTHONPATH": str(ROOT)}, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wall = time.perf_counter() - started
        from automl_nn.storage.backends import open_storage

        trials_run = optuna.load_study(study_name="bench", storage=open_storage(url)).trials
        times = [(t.datetime_start, t.datetime_complete) for t in trials_run
                 if t.datetime_start is not None and t.datetime_complete is not None]
        span = (max(end for _, end in times) - min(start for start, _ in times)).total_seconds()
        return len(times) * 3600 / span, wall, wall - span


def best_baseline(rates: Mapping[Arm, Sequence[float]]) -> Arm:
    """The single-worker arm with the highest median trials per hour."""
    return max((arm for arm in rates if arm.workers == 1), key=lambda arm: statistics.median(rates[arm]))


def report(rates: Mapping[Arm, Sequence[float]], walls: Mapping[Arm, Sequence[float]],
           parallel: Arm) -> list[str]:
    """The summary lines: each arm's medians, then the speed-up against each single-worker arm."""
    lines = [f"{arm.label}: trials/h per round {', '.join(f'{r:.0f}' for r in rates[arm])}; median "
             f"{statistics.median(rates[arm]):.0f} trials/h, median wall "
             f"{statistics.median(walls[arm]):.1f} s" for arm in rates]
    best = best_baseline(rates)
    for arm in (a for a in rates if a.workers == 1):
        ratio = statistics.median(rates[parallel]) / statistics.median(rates[arm])
        wall_ratio = statistics.median(walls[arm]) / statistics.median(walls[parallel])
        lines.append(f"speed-up {parallel.label} / {arm.label}{' (best baseline)' if arm == best else ''}: "
                     f"{ratio:.2f}x trials/h (steady state), {wall_ratio:.2f}x on wall time incl. start-up")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--trials", type=int, default=16)
    parser.add_argument("--dataset", default="digits", choices=sorted(SPACES))
    parser.add_argument("--data-dir", default=None, help="where the dataset's files are (MNIST .gz)")
    parser.add_argument("--baseline-threads", type=int, nargs="+", default=[1, 2],
                        help="torch thread counts for the --workers 1 baseline; the best one is used")
    parser.add_argument("--smoke", action="store_true",
                        help="1 round of 2 trials of 1 epoch: checks the script, measures nothing")
    args = parser.parse_args()
    epochs = None
    if args.smoke:
        args.rounds, args.trials, epochs = 1, 2, 1
    parallel = Arm(2)
    arms = [*(Arm(1, threads) for threads in args.baseline_threads), parallel]
    rates: dict[Arm, list[float]] = {arm: [] for arm in arms}
    walls: dict[Arm, list[float]] = {arm: [] for arm in arms}
    for _ in range(args.rounds):
        for arm in arms:
            rate, wall, outside = run_once(arm, args.trials, args.dataset, args.data_dir, epochs)
            rates[arm].append(rate)
            walls[arm].append(wall)
            print(f"{arm.label}: {rate:.0f} trials/h, wall {wall:.1f} s ({outside:.1f} s of it outside "
                  "the trials' span)", flush=True)
    print(f"machine: {platform.processor() or platform.machine()}, {len(os.sched_getaffinity(0))} "
          f"cores, load {os.getloadavg()[0]:.2f}, Python {platform.python_version()}; dataset "
          f"{args.dataset}, {args.trials} trials, {args.rounds} rounds{' (smoke)' if args.smoke else ''}")
    print("\n".join(report(rates, walls, parallel)))
    print("target: >= 1.6x trials/h against the best baseline")


if __name__ == "__main__":
    main()
