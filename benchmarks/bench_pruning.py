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
sampler's divergence), which makes comparing pruner settings cheap. `--rules` replays several
rules on the same unpruned trials, stricter ones included (see `Rule`), and prints one row per rule:

    python -m benchmarks.bench_pruning ... --workdir DIR --arms none \
        --rules default margin=0.02 dominators=2 dominators=3 gain=0.5 gain=0.9
"""

from __future__ import annotations

import argparse
import contextlib
import math
import platform
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np
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
        max_params=max(TrialRecord.of(t).metrics["params"] for t in finished),
        seconds=seconds,
    ), study


class ReplayRule(Protocol):
    """What `replay` asks of a rule: the Pareto pruner's settings, points and decisions."""

    @property
    def settings(self) -> PrunerConfig: ...

    def point(self, trial: TrialRecord, epoch: int) -> pruning.EpochValues | None: ...

    def decide(self, current: pruning.EpochValues, finished: Sequence[FrozenTrial],
               epoch: int) -> dict[str, Any] | None: ...


@dataclass(frozen=True)
class Rule:
    """The Pareto pruner's rule, made stricter for the replay (benchmark only, not a `--pruner`).

    A finished trial that dominates the current one at equal fidelity (the pruner's own test,
    margin included) is a dominator. The trial is pruned when at least `dominators` of them exist
    (1: the pruner's rule; more: MO-ASHA-like). With `gain` set, a dominator counts only if its
    final accuracy beats the current trial's epoch-k accuracy plus the `gain` quantile (0.5: the
    median) of the epoch-k-to-final accuracy gains of the complete trials so far: only a lead the
    current trial is not expected to make up counts. A pruned dominator's last recorded accuracy
    stands for its final one. Start-up trials and warm-up epochs are the pruner's.
    """

    pruner: pruning.ParetoPruner
    dominators: int = 1
    gain: float | None = None

    @property
    def settings(self) -> PrunerConfig:
        return self.pruner.settings

    def point(self, trial: TrialRecord, epoch: int) -> pruning.EpochValues | None:
        return self.pruner.point(trial, epoch)

    def decide(self, current: pruning.EpochValues, finished: Sequence[FrozenTrial],
               epoch: int) -> dict[str, Any] | None:
        """Why `current` is pruned at `epoch`, or None to go on (see the class docstring)."""
        if self.dominators == 1 and self.gain is None:
            return self.pruner.decide(current, finished, epoch)
        feasible = [TrialRecord.of(t) for t in finished if not record.is_infeasible(t)]
        complete = [t for t in feasible if t.state == TrialState.COMPLETE]
        if len(complete) < self.settings.startup_trials:
            return None
        bar = None if self.gain is None else current.trained["accuracy"] + gain_quantile(
            complete, epoch, self.gain)
        found = []
        for other in sorted(feasible, key=lambda t: t.number):
            point = self.point(other, epoch)
            if point is None or point.number == current.number or not self.pruner.dominates(point, current):
                continue
            if bar is None or last_accuracy(other) > bar:
                found.append(point.number)
        if len(found) < self.dominators:
            return None
        return {"pruner": "replay", "trials": found, "epoch": epoch}


def last_accuracy(trial: TrialRecord) -> float:
    """Validation accuracy after the last epoch a trial recorded (0 if it recorded none)."""
    return float(trial.epochs[-1]["val_accuracy"]) if trial.epochs else 0.0


def gain_quantile(complete: Sequence[TrialRecord], epoch: int, q: float) -> float:
    """The `q` quantile of final minus epoch-`epoch` accuracy over `complete` (0 if none has one)."""
    gains = [last_accuracy(t) - float(t.epochs[epoch - 1]["val_accuracy"])
             for t in complete if len(t.epochs) >= epoch]
    return float(np.quantile(gains, q)) if gains else 0.0


RULE_KEYS = ("margin", "warmup", "startup", "dominators", "gain")


def parse_rule(spec: str, base: PrunerConfig) -> Rule:
    """`default`, or comma-separated overrides of the pruner settings and `Rule`'s own fields.

    e.g. `margin=0.02`, `warmup=1`, `dominators=2`, `gain=0.9,margin=0.02`.
    """
    settings, dominators, gain = base, 1, None
    for item in ([] if spec == "default" else spec.split(",")):
        key, _, value = item.partition("=")
        try:
            if key == "margin":
                settings = replace(settings, margin=float(value))
            elif key in ("warmup", "startup"):
                field_name = "warmup_epochs" if key == "warmup" else "startup_trials"
                settings = replace(settings, **{field_name: int(value)})
            elif key == "dominators":
                dominators = int(value)
            elif key == "gain":
                gain = float(value)
            else:
                raise ValueError
        except ValueError:
            raise ValueError(f"rule {spec!r}: expected 'default' or KEY=VALUE items with KEY one of "
                             f"{', '.join(RULE_KEYS)}, but got {item!r}.") from None
    if dominators < 1 or (gain is not None and not 0.0 <= gain <= 1.0):
        raise ValueError(f"rule {spec!r}: dominators must be >= 1 and gain a quantile in [0, 1], but "
                         f"got {dominators=}, {gain=}.")
    return Rule(pruning.ParetoPruner(("accuracy", "params"), settings), dominators, gain)


def replay(study: optuna.Study, rule: ReplayRule) -> Arm:
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
               max_params=max(TrialRecord.of(t).metrics["params"] for t in seen), seconds=0.0,
               missed=missed)


@dataclass
class Replayed:
    """One rule replayed on one seed's unpruned trials, against that seed's reference point."""

    saved: float
    ratio: float
    missed: list[int]


def replay_rules(study: optuna.Study, rules: Mapping[str, ReplayRule], base: Arm,
                 reference: tuple[float, float]) -> dict[str, Replayed]:
    hv_base = hypervolume(base.front, reference)
    results = {}
    for name, rule in rules.items():
        arm = replay(study, rule)
        results[name] = Replayed(1.0 - arm.epochs / base.epochs,
                                 hypervolume(arm.front, reference) / hv_base, arm.missed)
    return results


def print_rules(results: Mapping[str, Sequence[Replayed]], seeds: Sequence[int]) -> None:
    """One row per rule: mean ± std over seeds, missed trials summed, then each seed's figures."""
    print(f"\nrule (replay) | epochs saved, mean ± std | HV ratio, mean ± std | missed, sum | "
          f"{' | '.join(f'seed {s}: saved / HV ratio / missed' for s in seeds)}")
    for name, rows in results.items():
        cells = [f"{r.saved:.1%} / {r.ratio:.4f} / {len(r.missed)}" for r in rows]
        mean, spread = mean_std([100 * r.saved for r in rows], 1).split(" ± ")
        print(f"{name} | {mean}% ± {spread}% | "
              f"{mean_std([r.ratio for r in rows], 4)} | {sum(len(r.missed) for r in rows)} | "
              f"{' | '.join(cells)}", flush=True)


def parse_args() -> argparse.Namespace:
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
    parser.add_argument("--rules", nargs="+", default=[], metavar="RULE",
                        help="replay these rules on the unpruned arm's curves, one row each: 'default' "
                             "(the pruner as set by --startup-trials, --warmup-epochs, --margin) or "
                             f"comma-separated KEY=VALUE overrides, KEY one of {', '.join(RULE_KEYS)} "
                             "(e.g. dominators=2, gain=0.9; see Rule)")
    parser.add_argument("--arms", nargs="+", default=["none", "pareto"], choices=["none", "pareto"],
                        help="which arms to train (replay needs only none)")
    parser.add_argument("--train-size", type=int, default=None,
                        help="train on a fixed random subset of this many samples (the dataset's "
                             "train_size option); validation stays full")
    args = parser.parse_args()
    try:
        args.rule_set = {spec: parse_rule(spec, pruner_settings(args)) for spec in args.rules}
    except ValueError as exc:
        parser.error(str(exc))
    return args


def main() -> None:
    args = parse_args()
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
    by_rule: dict[str, list[Replayed]] = {spec: [] for spec in args.rule_set}
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
            for spec, result in replay_rules(study, args.rule_set, base, reference).items():
                by_rule[spec].append(result)
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
    if by_rule:
        print_rules(by_rule, args.seeds)


if __name__ == "__main__":
    main()
