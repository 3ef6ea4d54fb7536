"""Out of the box: the default search against an optuna-examples MLP script and random search.

Each arm searches (accuracy, params) on one dataset for a fixed wall-clock budget; the hypervolume
at each budget is that of the trials finished within that much search time (trial seconds summed
in trial order, so a resumed study counts only the time its trials took). The arms:

- `defaults`: what `automl-nn search --dataset D` does with no space (the modality's default space,
  the warm-start portfolio, the default pruner);
- `defaults-unpruned`: the same with `--pruner none` (what the default pruner saves);
- `defaults-cold`: the same with `--no-portfolio` (what the portfolio buys);
- `random`: the default space with random search and no portfolio;
- `optuna-example`: the space of optuna-examples' pytorch_simple.py (1-3 linear layers of 4-128
  units each, dropout 0.2-0.5, Adam / RMSprop / SGD, lr 1e-5-1e-1 log, batch 128, 10 epochs),
  trained by the same loop, so that only the space and the defaults differ.

Studies are kept in `--workdir` (SQLite) and resumed: running the command again continues each
arm up to the largest budget and prints the table again, so an interrupted run loses nothing.
It takes hours (arms x seeds x the largest budget); figures go to docs/benchmarks.md.

    python -m benchmarks.bench_defaults --dataset digits --budgets 60 180 600
    python -m benchmarks.bench_defaults --dataset mnist --data-dir ../shared/data/mnist/raw \\
        --budgets 300 900 1800 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

from automl_nn import config as cfg
from automl_nn import search
from automl_nn.data import catalog as data
from automl_nn.trial import NullReporter
from benchmarks.common import hypervolume, machine, mean_std

# optuna-examples/pytorch/pytorch_simple.py, in this vocabulary
OPTUNA_EXAMPLE: dict[str, Any] = {
    "defaults": "plain",
    "space": {"family": "linear", "depth": {"low": 1, "high": 3}, "width_mode": "per_layer",
              "width": {"low": 4, "high": 128}, "activation": "relu",
              "dropout": {"low": 0.2, "high": 0.5}, "optimizer": ["adam", "rmsprop", "sgd"],
              "lr": {"low": 1e-5, "high": 1e-1, "log": True}, "batch_size": 128, "epochs": 10},
}
ARMS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "defaults-unpruned": {"pruner": "none"},
    "defaults-cold": {"portfolio": False},
    "random": {"sampler": "random", "portfolio": False},
    "optuna-example": OPTUNA_EXAMPLE,
}
REFERENCE = (1.0, 7.0)  # (error, log10 params): beyond the largest network of every arm's space


@dataclass
class Run:
    """One arm's study: its finished trials in trial order."""

    arm: str
    seed: int
    trials: list[FrozenTrial]

    def within(self, seconds: float) -> list[FrozenTrial]:
        return within_budget(self.trials, seconds)

    def hv(self, seconds: float) -> float:
        done = [t for t in self.within(seconds) if t.state == TrialState.COMPLETE and t.values]
        return hypervolume([(1.0 - t.values[0], t.values[1]) for t in done], REFERENCE)


def trial_seconds(trial: FrozenTrial) -> float:
    if trial.datetime_start is None or trial.datetime_complete is None:
        return 0.0
    return (trial.datetime_complete - trial.datetime_start).total_seconds()


def within_budget(trials: Sequence[FrozenTrial], seconds: float) -> list[FrozenTrial]:
    """The trials (in trial order) that finished within `seconds` of summed trial time."""
    out, spent = [], 0.0
    for trial in sorted(trials, key=lambda t: t.number):
        spent += trial_seconds(trial)
        if spent > seconds:
            break
        out.append(trial)
    return out


def run_arm(args: argparse.Namespace, bundle: data.DataBundle, arm: str, seed: int) -> Run:
    """Continue one arm's study until its trials have used the largest budget; return its trials."""
    raw: dict[str, Any] = {
        "dataset": args.dataset, "objectives": ["accuracy", "params"], "trials": 100_000,
        "study_name": f"{arm}-{seed}", "storage": f"sqlite:///{args.workdir / 'bench-defaults.db'}",
        "seed": seed, "data_dir": args.data_dir, "keep_weights": "none", "keep_predictions": False,
        **ARMS[arm],
    }
    config = cfg.for_data(cfg.resolve(raw), bundle)
    spent = sum(trial_seconds(t) for t in _finished(config))
    if spent < max(args.budgets):
        config = replace(config, timeout=max(args.budgets) - spent)
        search.run_search(config, bundle, NullReporter(), device=args.device)
    return Run(arm, seed, _finished(config))


def _finished(config: cfg.StudyConfig) -> list[FrozenTrial]:
    try:
        study = optuna.load_study(study_name=config.study_name, storage=config.storage)
    except KeyError:
        return []
    return [t for t in study.get_trials(deepcopy=False) if t.state in (TrialState.COMPLETE,
                                                                        TrialState.PRUNED)]


def print_table(runs: list[Run], budgets: list[float]) -> None:
    print(f"\narm | {' | '.join(f'HV@{b:g}s' for b in budgets)} | trials@{budgets[-1]:g}s | "
          f"epochs trained@{budgets[-1]:g}s")
    print(f"---|{'---|' * (len(budgets) + 2)}")
    for arm in dict.fromkeys(r.arm for r in runs):
        mine = [r for r in runs if r.arm == arm]
        cells = [mean_std([r.hv(b) for r in mine]) for b in budgets]
        counts = mean_std([float(len(r.within(budgets[-1]))) for r in mine], 1)
        epochs = mean_std([float(sum(int(t.user_attrs.get("epochs_trained", 0))
                                     for t in r.within(budgets[-1]))) for r in mine], 0)
        print(f"{arm} | {' | '.join(cells)} | {counts} | {epochs}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="digits", help="dataset spec, e.g. mnist")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--budgets", type=float, nargs="+", default=[60.0, 180.0, 600.0],
                        help="wall-clock seconds of search per arm and seed")
    parser.add_argument("--workdir", type=Path, default=Path("bench-defaults"),
                        help="where the studies are kept (and resumed from)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    args.budgets = sorted(args.budgets)
    args.workdir.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    bundle = data.load(args.dataset, args.data_dir)
    print(f"# {args.dataset}, budgets {args.budgets} s, reference {REFERENCE}; {machine()}; "
          f"torch threads {torch.get_num_threads()}")
    runs = []
    for arm in args.arms:
        for seed in args.seeds:
            start = time.perf_counter()
            run = run_arm(args, bundle, arm, seed)
            runs.append(run)
            print(f"{arm} seed {seed}: {len(run.trials)} trials, HV@{args.budgets[-1]:g}s="
                  f"{run.hv(args.budgets[-1]):.4f} ({time.perf_counter() - start:.0f} s this run)",
                  flush=True)
    print_table(runs, args.budgets)


if __name__ == "__main__":
    main()
