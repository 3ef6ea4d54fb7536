"""Search quality: hypervolume after 20, 40 and 80 trials for tpe, nsga2 and random search.

One search of the largest budget per (sampler, seed); the hypervolume after n trials is that of the
first n completed trials (by trial number), so the budgets of one run are prefixes of one another.
Hypervolume is taken on (validation error, log10 params), both minimized, against a reference point
fixed per dataset (`REFERENCES`; `--reference-params` overrides it): error 1 (worse than chance
for every class count here) and a parameter count above the largest network the space can build.

The question (issue #11): does the default sampler (`tpe`) reach random search's 80-trial
hypervolume within 40 trials? The script prints the table for docs/benchmarks.md and the answer,
per seed and on the mean over seeds. `--out FILE` also writes every trial's (error, params) as JSON.

    python -m benchmarks.bench_search_quality --dataset digits
    python -m benchmarks.bench_search_quality --dataset mnist --data-dir DIR --train-size 10000

Storage is SQLite on /dev/shm when it exists: the figure is about the sampler, not the disk.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch

from automl_nn import config as cfg
from automl_nn import search, study
from automl_nn.data import catalog as data
from automl_nn.trial import NullReporter
from benchmarks.common import hypervolume, machine, mean_std

# Per dataset, a space whose 720 trials (3 samplers x 3 seeds x 80) fit in minutes on 2 CPU cores.
SPACES: dict[str, dict[str, Any]] = {
    "digits": {"family": ["linear", "conv2d"], "depth": {"low": 1, "high": 3},
               "width": {"low": 8, "high": 128, "log": True},
               "activation": ["relu", "tanh", "sigmoid", "selu"], "optimizer": ["adam", "sgd"],
               "lr": {"low": 1e-4, "high": 1e-1, "log": True}, "batch_size": [32, 64, 128],
               "epochs": 4},
    "mnist": {"family": "linear", "depth": {"low": 1, "high": 2},
              "width": {"low": 16, "high": 256, "log": True},
              "activation": ["relu", "tanh", "sigmoid", "selu"], "optimizer": ["adam", "sgd"],
              "lr": {"low": 1e-4, "high": 1e-1, "log": True}, "batch_size": [64, 128, 256],
              "epochs": 2},
}
# (error, log10 params): above the largest network of each space (digits: conv2d 3 x 128 channels
# on 8x8 with a dense head, about 3.5e5; mnist: 784-256-256-10, about 2.7e5).
REFERENCES = {"digits": (1.0, 6.0), "mnist": (1.0, 6.0)}
# Sampler variants for looking into a missed target: name -> TPESampler keyword arguments.
TPE_VARIANTS: dict[str, dict[str, Any]] = {
    "tpe-multivariate": {"multivariate": True},
    "tpe-startup5": {"n_startup_trials": 5},
    "tpe-no-liar": {"constant_liar": False},
    "tpe-multivariate-startup5": {"multivariate": True, "n_startup_trials": 5},
}


@dataclass
class Run:
    """One search: its completed trials' (error, params) in trial order, and its wall time."""

    sampler: str
    seed: int
    points: list[tuple[float, float]]
    seconds: float

    def hv(self, budget: int, reference: tuple[float, float]) -> float:
        return hypervolume(self.points[:budget], reference)


@contextmanager
def sampler_variant(name: str) -> Iterator[str]:
    """The config's sampler name; for a TPE variant, make_sampler builds that variant meanwhile."""
    if name not in TPE_VARIANTS:
        yield name
        return
    original: Callable[..., optuna.samplers.BaseSampler] = study.make_sampler

    def variant(config: cfg.StudyConfig, worker_index: int = 0) -> optuna.samplers.BaseSampler:
        return optuna.samplers.TPESampler(seed=config.seed, **TPE_VARIANTS[name])

    study.make_sampler = variant
    try:
        yield "tpe"
    finally:
        study.make_sampler = original


def run_one(args: argparse.Namespace, bundle: data.DataBundle, sampler: str, seed: int,
            workdir: Path) -> Run:
    with sampler_variant(sampler) as name:
        raw: dict[str, Any] = {
            "dataset": args.dataset, "objectives": ["accuracy", "params"],
            "trials": max(args.budgets), "study_name": f"{sampler}-{seed}",
            "storage": f"sqlite:///{workdir / 'bench.db'}", "sampler": name, "seed": seed,
            "data_dir": args.data_dir, "keep_weights": "none", "keep_predictions": False,
            "space": SPACES[args.space],
        }
        start = time.perf_counter()
        result = search.run_search(cfg.resolve(raw), bundle, NullReporter(), device="cpu")
        seconds = time.perf_counter() - start
    done = sorted(result.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)),
                  key=lambda t: t.number)
    return Run(sampler, seed, [(1.0 - t.values[0], t.values[1]) for t in done], seconds)


def print_table(runs: list[Run], budgets: list[int], reference: tuple[float, float]) -> None:
    print(f"\nsampler | {' | '.join(f'HV@{b}' for b in budgets)}")
    print(f"---|{'---|' * len(budgets)}")
    for sampler in dict.fromkeys(r.sampler for r in runs):
        mine = [r for r in runs if r.sampler == sampler]
        cells = [mean_std([r.hv(b, reference) for r in mine]) for b in budgets]
        print(f"{sampler} | {' | '.join(cells)}")


def print_target(runs: list[Run], reference: tuple[float, float], default: str = "tpe",
                 at: int = 40, baseline: str = "random", baseline_at: int = 80) -> None:
    """Whether `default`@`at` >= `baseline`@`baseline_at`, per seed and on the mean over seeds."""
    ours = {r.seed: r.hv(at, reference) for r in runs if r.sampler == default}
    theirs = {r.seed: r.hv(baseline_at, reference) for r in runs if r.sampler == baseline}
    seeds = sorted(set(ours) & set(theirs))
    if not seeds:
        return
    print(f"\nseed | {default}@{at} | {baseline}@{baseline_at} | met")
    for seed in seeds:
        print(f"{seed} | {ours[seed]:.4f} | {theirs[seed]:.4f} | {ours[seed] >= theirs[seed]}")
    mean_ours = statistics.mean(ours[s] for s in seeds)
    mean_theirs = statistics.mean(theirs[s] for s in seeds)
    print(f"mean | {mean_ours:.4f} | {mean_theirs:.4f} | {mean_ours >= mean_theirs}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="digits", help="dataset spec, e.g. mnist")
    parser.add_argument("--space", default=None, choices=sorted(SPACES),
                        help="space preset (default: the dataset's name)")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--train-size", type=int, default=None,
                        help="train on a fixed random subset of this many samples")
    parser.add_argument("--samplers", nargs="+", default=["tpe", "nsga2", "random"],
                        help=f"sampler names, or TPE variants: {', '.join(TPE_VARIANTS)}")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--budgets", type=int, nargs="+", default=[20, 40, 80])
    parser.add_argument("--reference-params", type=float, default=None,
                        help="log10 params of the reference point (default: per dataset)")
    parser.add_argument("--out", type=Path, default=None, help="write every run's points as JSON")
    args = parser.parse_args()
    args.space = args.space or args.dataset.split("?")[0]
    reference = REFERENCES[args.space]
    if args.reference_params is not None:
        reference = (1.0, args.reference_params)
    if args.train_size is not None:
        args.dataset = f"{args.dataset}?train_size={args.train_size}"
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    torch.set_num_threads(1)  # a shared machine; every run sees the same conditions
    bundle = data.load(args.dataset, args.data_dir)
    print(f"# {args.dataset}: space {json.dumps(SPACES[args.space])}")
    print(f"# reference (error, log10 params) = {reference}; {machine()}")
    runs = []
    shm = Path("/dev/shm")
    with tempfile.TemporaryDirectory(dir=shm if shm.is_dir() else None) as tmp:
        for sampler in args.samplers:
            for seed in args.seeds:
                run = run_one(args, bundle, sampler, seed, Path(tmp))
                runs.append(run)
                hvs = " ".join(f"HV@{b}={run.hv(b, reference):.4f}" for b in args.budgets)
                print(f"{sampler} seed {seed}: {len(run.points)} trials, {run.seconds:.0f} s, "
                      f"{hvs}", flush=True)
    print_table(runs, args.budgets, reference)
    print_target(runs, reference)
    if args.out is not None:
        args.out.write_text(json.dumps([r.__dict__ for r in runs]))


if __name__ == "__main__":
    main()
