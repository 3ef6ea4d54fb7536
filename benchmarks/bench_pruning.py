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

With `--workdir DIR` the studies are kept there (one SQLite file per seed), and a rerun with the
same settings resumes them instead of training again: the unpruned arm, which costs the most, is
trained once and reused when only the pruner's settings change. `--replay` adds a third column
set: the pruner's rule applied offline to the unpruned arm's recorded learning curves, trial by
trial in the order they ran (what pruning would have saved on exactly those trials, without the
sampler's divergence), which makes comparing pruner settings cheap.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import platform
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState

from automl_nn import config as cfg
from automl_nn import pruning
from automl_nn.config import PrunerConfig
from automl_nn.data import catalog as data
from automl_nn.search import run_search
from automl_nn.storage import record
from automl_nn.storage.record import TrialRecord
from automl_nn.study import front
from automl_nn.trial import NullReporter
from benchmarks.common import hypervolume, mean_std

SPACE: dict[str, Any] = {"family": ["linear", "conv2d"], "depth": {"low": 1, "high": 3},
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
    missed: list[int] = field(default_factory=list)  # replay: pruned trials then on the front


def pruner_settings(args: argparse.Namespace) -> PrunerConfig:
    return PrunerConfig(startup_trials=args.startup_trials, warmup_epochs=args.warmup_epochs,
                        margin=args.margin)


def arm_name(pruner: str, seed: int, settings: PrunerConfig, families: list[str]) -> str:
    """The study's name: the unpruned arm is shared by every pruner setting of a seed."""
    space = "" if families == SPACE["family"] else "-" + "+".join(families)
    if pruner == "none":
        return f"none-{seed}{space}"
    return (f"{pruner}-{seed}{space}-s{settings.startup_trials}-w{settings.warmup_epochs}"
            f"-m{settings.margin:g}")


def run_arm(args: argparse.Namespace, bundle: data.DataBundle, pruner: str, seed: int,
            workdir: Path) -> tuple[Arm, optuna.Study]:
    raw: dict[str, Any] = {
        "dataset": args.dataset, "objectives": ["accuracy", "params"], "trials": args.trials,
        "study_name": arm_name(pruner, seed, pruner_settings(args), args.families),
        "storage": f"sqlite:///{workdir / f'bench-{seed}.db'}",
        "sampler": args.sampler, "seed": seed, "data_dir": args.data_dir,
        "pruner": {"name": pruner, "startup_trials": args.startup_trials, "margin": args.margin,
                   "warmup_epochs": args.warmup_epochs},
        "space": {**SPACE, "family": args.families, "width": {**SPACE["width"], "high": args.max_width},
                  "epochs": args.epochs},
    }
    config = cfg.resolve(raw)
    start = time.perf_counter()
    study = run_search(config, bundle, NullReporter(), device="cpu")
    finished = study.get_trials(deepcopy=False, states=record.FINISHED)
    seconds = sum((t.datetime_complete - t.datetime_start).total_seconds() for t in finished
                  if t.datetime_complete and t.datetime_start) or time.perf_counter() - start
    return Arm(
        epochs=sum(TrialRecord.of(t).trained_epochs for t in finished),
        planned=sum(TrialRecord.of(t).planned_epochs for t in finished),
        pruned=sum(1 for t in finished if t.state == TrialState.PRUNED),
        front=[(1.0 - t.values[0], t.values[1]) for t in front(study)],
        max_params=max(float(t.user_attrs["params"]) for t in finished),
        seconds=seconds,
    ), study


def replay(study: optuna.Study, rule: pruning.ParetoPruner) -> Arm:
    """The pruner's decisions on an unpruned study's recorded curves, trial by trial in order.

    Each trial meets the trials before it as they would have been: those the replay pruned keep
    their epochs up to the one they were pruned at, and count as PRUNED. `missed` lists the pruned
    trials whose final values would have put them on the front of the trials finished before
    them: what the sampler loses when pruning is wrong at the time, even where the final front
    is kept.
    """
    seen: list[FrozenTrial] = []
    epochs = pruned = 0
    missed: list[int] = []
    truth = sorted(study.get_trials(deepcopy=False, states=record.FINISHED), key=lambda t: t.number)
    for index, trial in enumerate(truth):
        planned = TrialRecord.of(trial).planned_epochs
        stop = next((k for k in range(rule.settings.warmup_epochs + 1, planned)
                     if (point := rule.point(TrialRecord.of(trial), k)) is not None
                     and rule.decide(point, seen, k) is not None), None)
        if stop is None:
            seen.append(trial)
            epochs += TrialRecord.of(trial).trained_epochs
            continue
        pruned += 1
        epochs += stop
        then = record.front(truth[:index + 1], study.directions)
        if trial.number in {t.number for t in then}:
            missed.append(trial.number)
        attrs = {k: v for k, v in trial.user_attrs.items() if (record.epoch_number(k) or 0) <= stop}
        seen.append(optuna.trial.create_trial(state=TrialState.PRUNED, params=trial.params,
                                              distributions=trial.distributions, user_attrs=attrs))
        seen[-1].number = trial.number
    completed = [t for t in seen if t.state == TrialState.COMPLETE and not record.is_infeasible(t)]
    return Arm(epochs=epochs, planned=sum(TrialRecord.of(t).planned_epochs for t in seen), pruned=pruned,
               front=[(1.0 - t.values[0], t.values[1]) for t in completed],
               max_params=max(float(t.user_attrs["params"]) for t in seen), seconds=0.0,
               missed=missed)


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
    parser.add_argument("--families", nargs="+", default=SPACE["family"],
                        help="layer families searched")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="keep the studies here and resume them (default: a temporary folder)")
    parser.add_argument("--replay", action="store_true",
                        help="also apply the pruner offline to the unpruned arm's curves")
    parser.add_argument("--arms", nargs="+", default=["none", "pareto"], choices=["none", "pareto"],
                        help="which arms to train (replay needs only none)")
    parser.add_argument("--train-size", type=int, default=None,
                        help="train on a fixed random subset of this many samples (the dataset's "
                             "train_size option); validation stays full")
    args = parser.parse_args()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    torch.set_num_threads(1)  # a shared machine; and both arms see the same conditions
    if args.train_size is not None:
        args.dataset = f"{args.dataset}?train_size={args.train_size}"
    bundle = data.load(args.dataset, args.data_dir)
    print(f"# {args.dataset}, {args.trials} trials x {args.epochs} epochs, {'/'.join(args.families)}, "
          f"width <= {args.max_width}, "
          f"sampler {args.sampler}, "
          f"pareto(startup {args.startup_trials}, warmup {args.warmup_epochs}, margin {args.margin})")
    print(f"# torch {torch.__version__}, optuna {optuna.__version__}, {platform.processor() or 'cpu'}")
    replay_columns = " | replay: epochs | saved | pruned | HV | HV ratio | missed"
    print("seed | epochs none | epochs pareto | saved | pruned | HV none | HV pareto | HV ratio | "
          "s none | s pareto" + (replay_columns if args.replay else ""))
    saved, ratios, replay_saved, replay_ratios = [], [], [], []
    with contextlib.ExitStack() as stack:
        workdir = args.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory()))
        workdir.mkdir(parents=True, exist_ok=True)
        for seed in args.seeds:
            base, study = run_arm(args, bundle, "none", seed, workdir)
            arms = [run_arm(args, bundle, "pareto", seed, workdir)[0]] if "pareto" in args.arms else []
            if args.replay:
                arms.append(replay(study, pruning.ParetoPruner(("accuracy", "params"),
                                                               pruner_settings(args))))
            reference = (1.0, math.log10(1.1 * max(a.max_params for a in [base, *arms])))
            hv_base = hypervolume(base.front, reference)
            row = f"{seed} | {base.epochs}"
            if "pareto" in args.arms:
                real = arms[0]
                saved.append(1.0 - real.epochs / base.epochs)
                ratios.append(hypervolume(real.front, reference) / hv_base)
                row += (f" | {real.epochs} | {saved[-1]:.1%} | {real.pruned} | {hv_base:.4f} | "
                        f"{ratios[-1] * hv_base:.4f} | {ratios[-1]:.4f} | {base.seconds:.0f} | "
                        f"{real.seconds:.0f}")
            else:
                row += f" | - | - | - | {hv_base:.4f} | - | - | {base.seconds:.0f} | -"
            if args.replay:
                offline = arms[-1]
                replay_saved.append(1.0 - offline.epochs / base.epochs)
                replay_ratios.append(hypervolume(offline.front, reference) / hv_base)
                row += (f" | {offline.epochs} | {replay_saved[-1]:.1%} | {offline.pruned} | "
                        f"{replay_ratios[-1] * hv_base:.4f} | {replay_ratios[-1]:.4f} | "
                        f"{' '.join(map(str, offline.missed)) or '-'}")
            print(row, flush=True)
    if saved:
        print(f"mean ± std over {len(args.seeds)} seeds: epochs saved {mean_std(saved)}, "
              f"hypervolume ratio (pareto / none) {mean_std(ratios)}")
    if replay_saved:
        print(f"replay, mean ± std: epochs saved {mean_std(replay_saved)}, "
              f"hypervolume ratio {mean_std(replay_ratios)}")

if __name__ == "__main__":
    main()
