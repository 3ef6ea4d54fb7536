"""Pareto pruning against no pruning: training epochs spent and final hypervolume.

For each seed, the same search (sampler, seed, space, number of trained trials) runs twice, with
`--pruner none` and `--pruner pareto`; the script prints, per seed and as mean ± std over seeds,
the epochs each arm trained, the share pruning saved, and the hypervolume of each final front.

Hypervolume is measured on (validation error, log10 params), both minimized, against a reference
point shared by the two arms of a seed: error 1 (chance is worse than any trained net's error on
balanced data) and 1.1 x the largest parameter count either arm saw. log10 keeps one huge network
from dominating the area.

    python -m benchmarks.bench_pruning --dataset digits --trials 40 --seeds 0 1 2
    python -m benchmarks.bench_pruning --dataset mnist --data-dir DIR --trials 40 --epochs 4 \
        --train-size 10000 --max-width 32
"""

from __future__ import annotations

import argparse
import math
import platform
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch

from automl_nn import config as cfg
from automl_nn import data, pruning
from automl_nn.objectives import NullReporter
from automl_nn.study import front, run_search
from benchmarks.common import hypervolume, mean_std

SPACE = {"family": ["linear", "conv2d"], "depth": {"low": 1, "high": 3},
         "width": {"low": 8, "high": 128, "log": True},
         "activation": ["relu", "tanh", "sigmoid", "selu"], "optimizer": ["adam", "sgd"],
         "lr": {"low": 1e-4, "high": 1e-1, "log": True}, "batch_size": [32, 64, 128]}


@dataclass
class Arm:
    """One finished search: its epochs, its front and its wall time."""

    epochs: int
    planned: int
    pruned: int
    front: list[tuple[float, float]]  # (error, params)
    max_params: float
    seconds: float


def run_arm(args: argparse.Namespace, bundle: data.DataBundle, pruner: str, seed: int,
            workdir: Path) -> Arm:
    raw: dict[str, Any] = {
        "dataset": args.dataset, "objectives": ["accuracy", "params"], "trials": args.trials,
        "study_name": f"{pruner}-{seed}", "storage": f"sqlite:///{workdir / 'bench.db'}",
        "sampler": args.sampler, "seed": seed, "data_dir": args.data_dir,
        "pruner": {"name": pruner, "startup_trials": args.startup_trials, "margin": args.margin,
                   "warmup_epochs": args.warmup_epochs},
        "space": {**SPACE, "width": {**SPACE["width"], "high": args.max_width}, "epochs": args.epochs},
    }
    config = cfg.resolve(raw)
    start = time.perf_counter()
    study = run_search(config, bundle, NullReporter(), device="cpu")
    seconds = time.perf_counter() - start
    finished = study.get_trials(deepcopy=False, states=pruning.FINISHED)
    return Arm(
        epochs=sum(pruning.trained_epochs(t) for t in finished),
        planned=sum(pruning.planned_epochs(t) for t in finished),
        pruned=sum(1 for t in finished if t.state == optuna.trial.TrialState.PRUNED),
        front=[(1.0 - t.values[0], t.values[1]) for t in front(study)],
        max_params=max(float(t.user_attrs["params"]) for t in finished),
        seconds=seconds,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--sampler", default="tpe")
    parser.add_argument("--startup-trials", type=int, default=5)
    parser.add_argument("--warmup-epochs", type=int, default=0)
    parser.add_argument("--margin", type=float, default=0.01)
    parser.add_argument("--max-width", type=int, default=128, help="upper end of the width range")
    parser.add_argument("--train-size", type=int, default=None,
                        help="train on a fixed random subset of this many samples (the dataset's "
                             "train_size option); validation stays full")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    torch.set_num_threads(1)  # a shared machine; and both arms see the same conditions
    if args.train_size is not None:
        args.dataset = f"{args.dataset}?train_size={args.train_size}"
    bundle = data.load(args.dataset, args.data_dir)
    print(f"# {args.dataset}, {args.trials} trials x {args.epochs} epochs, width <= {args.max_width}, "
          f"sampler {args.sampler}, "
          f"pareto(startup {args.startup_trials}, warmup {args.warmup_epochs}, margin {args.margin})")
    print(f"# torch {torch.__version__}, optuna {optuna.__version__}, {platform.processor() or 'cpu'}")
    print("seed | epochs none | epochs pareto | saved | pruned | HV none | HV pareto | HV ratio | "
          "s none | s pareto")
    saved, ratios = [], []
    for seed in args.seeds:
        with tempfile.TemporaryDirectory() as tmp:
            base = run_arm(args, bundle, "none", seed, Path(tmp))
            pruned = run_arm(args, bundle, "pareto", seed, Path(tmp))
        reference = (1.0, math.log10(1.1 * max(base.max_params, pruned.max_params)))
        hv_base, hv_pruned = hypervolume(base.front, reference), hypervolume(pruned.front, reference)
        saved.append(1.0 - pruned.epochs / base.epochs)
        ratios.append(hv_pruned / hv_base)
        print(f"{seed} | {base.epochs} | {pruned.epochs} | {saved[-1]:.1%} | {pruned.pruned} | "
              f"{hv_base:.4f} | {hv_pruned:.4f} | {ratios[-1]:.4f} | {base.seconds:.0f} | "
              f"{pruned.seconds:.0f}", flush=True)
    print(f"mean ± std over {len(args.seeds)} seeds: epochs saved {mean_std(saved)}, "
          f"hypervolume ratio (pareto / none) {mean_std(ratios)}")


if __name__ == "__main__":
    main()
