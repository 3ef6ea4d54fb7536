"""Out of the box: the default search against a plain Optuna script and random search, at fixed wall budgets.

Each arm searches (accuracy, params) on one dataset for the largest wall-clock budget; the figures
at a smaller budget are read off the same run's history (the trials finished by then). The arms:

- `defaults`: what `automl-nn search --dataset D` does with no space (the modality's default space,
  the warm-start portfolio, the default pruner);
- `random`: the default space with random search and no portfolio;
- `optuna-script`: `benchmarks/optuna_script.py`, a plain Optuna script in the style of
  optuna-examples' multi_objective/pytorch_simple.py (define-by-run MLP, DataLoader), on the same
  training, validation and test tensors;
- `defaults-unpruned`, `defaults-cold` (not run unless named): the defaults with `--pruner none`
  and with `--no-portfolio`.

Per run and budget: the front chosen on validation (val accuracy, params) and read on test; its
hypervolume on (test error, log10 params) up to REFERENCE; the best test accuracy among front
trials of at most 5k and 20k params; trials finished and median seconds per trial.

Studies are kept in `--workdir` (SQLite) and resumed: running the command again continues each
run up to the largest budget and prints the tables again, so an interrupted run loses nothing
(the time between two sittings is not counted). It takes hours; figures go to docs/benchmarks.md.

    python -m benchmarks.bench_defaults --dataset digits --budgets 120
    python -m benchmarks.bench_defaults --dataset mnist --data-dir ../shared/data/mnist/raw \\
        --budgets 600 1800 --seeds 0 1 2 --baseline-seeds 0
"""

from __future__ import annotations

import argparse
import statistics
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
from automl_nn.storage import record
from automl_nn.storage.record import TrialRecord
from automl_nn.trial import NullReporter
from benchmarks import bench_pruning, optuna_script
from benchmarks.common import hypervolume, machine, mean_std

SCRIPT = "optuna-script"
UNPRUNED = "defaults-unpruned"  # compared with "defaults" at an equal number of trained trials
ARMS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "random": {"sampler": "random", "portfolio": False},
    UNPRUNED: {"pruner": "none"},
    "defaults-cold": {"portfolio": False},
}
DEFAULT_ARMS = ("defaults", "random", SCRIPT)
BASELINES = ("random", SCRIPT)  # run on --baseline-seeds; the others on --seeds
REFERENCE = (1.0, 7.0)  # (error, log10 params): beyond the largest network of every arm's space
SIZES = (5_000, 20_000)  # params: the best test accuracy at or below each
# A gap this long between one trial's end and the next one's start is a pause between two sittings.
PAUSE_SECONDS = 120.0


@dataclass(frozen=True)
class Point:
    """One finished trial as the benchmark reads it."""

    number: int
    elapsed: float  # search seconds from the run's start to this trial's end (pauses left out)
    seconds: float  # the trial's own wall time
    val: float | None  # validation accuracy (None: pruned, or never trained)
    test: float | None
    params: float | None
    epochs: int = 0  # epochs it trained (0: skipped or infeasible, never trained)
    stopped: bool = False  # stopped by the deadline, not by the pruner


@dataclass
class Run:
    arm: str
    seed: int
    points: list[Point]

    def within(self, seconds: float) -> list[Point]:
        return [p for p in self.points if p.elapsed <= seconds]

    def front(self, seconds: float) -> list[Point]:
        """The validation front (accuracy up, params down) of the trials finished by `seconds`."""
        return front_of(self.within(seconds))

    def hv(self, seconds: float) -> float:
        return hv_of(self.within(seconds))

    def trained(self, count: int | None = None) -> list[Point]:
        """The first `count` trials, by number, that trained at least one epoch and were not
        stopped by the deadline (all of them when `count` is None)."""
        done = sorted((p for p in self.points if p.epochs > 0 and not p.stopped), key=lambda p: p.number)
        return done if count is None else done[:count]

    def best_test(self, seconds: float, size: float) -> float:
        tests = [p.test for p in self.front(seconds)
                 if p.test is not None and p.params is not None and p.params <= size]
        return max(tests, default=0.0)


def front_of(points: Sequence[Point]) -> list[Point]:
    """The validation front (accuracy up, params down) of these trials."""
    done = [p for p in points if p.val is not None and p.params is not None]
    return [p for p in done if not any(_dominates(q, p) for q in done)]


def hv_of(points: Sequence[Point]) -> float:
    """The hypervolume on test of these trials' validation front."""
    return hypervolume([(1.0 - p.test, p.params) for p in front_of(points)
                        if p.test is not None and p.params is not None], REFERENCE)


def _dominates(a: Point, b: Point) -> bool:
    assert a.val is not None and b.val is not None and a.params is not None and b.params is not None
    return a.val >= b.val and a.params <= b.params and (a.val > b.val or a.params < b.params)


def points_of(trials: Sequence[FrozenTrial]) -> list[Point]:
    """Finished trials in order of their end, with the run's elapsed time at each (a trial that
    starts more than PAUSE_SECONDS after the previous one ended opens a new sitting)."""
    done = sorted((t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
                   and t.datetime_start and t.datetime_complete), key=lambda t: t.datetime_complete)
    points, elapsed, last_end = [], 0.0, None
    for t in done:
        assert t.datetime_start is not None and t.datetime_complete is not None
        seconds = (t.datetime_complete - t.datetime_start).total_seconds()
        since = None if last_end is None else (t.datetime_complete - last_end).total_seconds()
        gap = None if last_end is None else (t.datetime_start - last_end).total_seconds()
        elapsed += seconds if since is None or gap is None or gap > PAUSE_SECONDS else max(since, 0.0)
        last_end = t.datetime_complete
        trained = t.state == TrialState.COMPLETE and bool(t.values) and _trained(t)
        rec = TrialRecord.of(t)
        points.append(Point(t.number, elapsed, seconds,
                            val=float(t.values[0]) if trained else None,
                            test=_number(t.user_attrs.get("test_accuracy")) if trained else None,
                            params=float(t.values[1]) if trained else None,
                            epochs=rec.trained_epochs, stopped=_deadline_stopped(rec)))
    return points


def _trained(trial: FrozenTrial) -> bool:
    """Not infeasible, skipped or diverged: those hold placeholder values."""
    return not any(trial.user_attrs.get(key) for key in (record.INFEASIBLE, record.DIVERGED))


def _deadline_stopped(trial: TrialRecord) -> bool:
    return isinstance(trial.pruned_by, dict) and trial.pruned_by.get("pruner") == "deadline"


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) else None


def _trials(name: str, storage: str) -> list[FrozenTrial]:
    try:
        return optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
    except KeyError:
        return []


def _left(name: str, storage: str, budget: float) -> float:
    points = points_of(_trials(name, storage))
    return budget - (points[-1].elapsed if points else 0.0)


def tool_config(args: argparse.Namespace, bundle: data.DataBundle, arm: str, seed: int) -> cfg.StudyConfig:
    """The search one automl-nn arm runs, as the CLI would resolve it."""
    raw: dict[str, Any] = {
        "dataset": args.dataset, "objectives": ["accuracy", "params"], "trials": 1_000_000,
        "study_name": f"{arm}-{seed}", "storage": args.storage, "seed": seed,
        "data_dir": args.data_dir, "keep_weights": "none", "keep_predictions": False, **ARMS[arm],
    }
    return cfg.for_data(cfg.resolve(raw), bundle)


def run_tool(args: argparse.Namespace, bundle: data.DataBundle, arm: str, seed: int) -> Run:
    """Continue one automl-nn arm's study until the largest budget is spent."""
    name, storage = f"{arm}-{seed}", args.storage
    left = _left(name, storage, max(args.budgets))
    if left > 5.0:
        config = replace(tool_config(args, bundle, arm, seed), timeout=left)
        search.run_search(config, bundle, NullReporter(), device=args.device)
    return Run(arm, seed, points_of(_trials(name, storage)))


def run_script(args: argparse.Namespace, bundle: data.DataBundle, seed: int) -> Run:
    """Continue the plain Optuna script's study until the largest budget is spent."""
    name = f"{SCRIPT}-{seed}"
    left = _left(name, args.storage, max(args.budgets))
    if left > 5.0:
        splits = [(bundle.normalize(x), y) for x, y in ((bundle.x_train, bundle.y_train),
                                                        (bundle.x_val, bundle.y_val),
                                                        (bundle.x_test, bundle.y_test))]
        study = optuna_script.create_study(name, args.storage, seed)
        study.optimize(optuna_script.Objective(*splits, seed=seed), timeout=left)
    return Run(SCRIPT, seed, points_of(_trials(name, args.storage)))


def print_tables(runs: list[Run], budgets: list[float]) -> None:
    print("\narm | seed | budget | HV (test) | best test <=5k | best test <=20k | trials | s/trial (median)")
    print("---|---:|---:|---:|---:|---:|---:|---:")
    for run in runs:
        for b in budgets:
            done = run.within(b)
            per = statistics.median(p.seconds for p in done) if done else 0.0
            print(f"{run.arm} | {run.seed} | {b:g} s | {run.hv(b):.4f} | {run.best_test(b, SIZES[0]):.4f} | "
                  f"{run.best_test(b, SIZES[1]):.4f} | {len(done)} | {per:.1f}")
    print("\narm | " + " | ".join(f"HV@{b:g}s" for b in budgets))
    print("---|" + "---:|" * len(budgets))
    for arm in dict.fromkeys(r.arm for r in runs):
        mine = [r for r in runs if r.arm == arm]
        print(f"{arm} ({len(mine)} seeds) | " + " | ".join(mean_std([r.hv(b) for r in mine], 4)
                                                       for b in budgets))
    script = [r for r in runs if r.arm == SCRIPT]
    if script:
        print(f"\nHV ratio of each run to the optuna script's (seed {script[0].seed}):")
        for run in runs:
            if run.arm != SCRIPT:
                cells = [f"{run.hv(b) / max(script[0].hv(b), 1e-12):.3f}x @ {b:g}s" for b in budgets]
                print(f"  {run.arm} seed {run.seed}: " + ", ".join(cells))


def pruning_rows(runs: list[Run]) -> list[str]:
    """Per seed run unpruned too: epochs and hypervolume at an equal number of trained trials,
    the unpruned run's count (a deadline-stopped trial left out of both)."""
    rows = []
    for plain in (r for r in runs if r.arm == UNPRUNED):
        pruning = next((r for r in runs if r.arm == "defaults" and r.seed == plain.seed), None)
        if pruning is None:
            continue
        count = min(len(plain.trained()), len(pruning.trained()))
        mine, theirs = pruning.trained(count), plain.trained(count)
        epochs, base = sum(p.epochs for p in mine), sum(p.epochs for p in theirs)
        hv, hv_base = hv_of(mine), hv_of(theirs)
        rows.append(f"{plain.seed} | {count} | {base} | {epochs} | {1 - epochs / max(base, 1):.1%} | "
                    f"{sum(p.val is None for p in mine)} | {hv_base:.4f} | {hv:.4f} | "
                    f"{hv / max(hv_base, 1e-12):.3f}")
    return rows


def print_pruning(runs: list[Run]) -> None:
    rows = pruning_rows(runs)
    if rows:
        print("\nseed | trained trials | epochs unpruned | epochs pruned | saved | pruned | "
              "HV unpruned | HV pruned | HV ratio")
        print("---:|---:|---:|---:|---:|---:|---:|---:|---:")
        print("\n".join(rows))


def print_replays(args: argparse.Namespace, bundle: data.DataBundle, runs: list[Run]) -> None:
    """`--rules`: each rule replayed offline on the unpruned runs' recorded curves (the defaults'
    own pruner settings, with the rule's overrides): the epochs it would have saved on exactly
    those trials, and the pruned trials that were on the front when they finished (`missed`)."""
    plain = [r for r in runs if r.arm == UNPRUNED]
    if not args.rules or not plain:
        return
    base = tool_config(args, bundle, "defaults", plain[0].seed).pruning
    rules = {spec: bench_pruning.parse_rule(spec, base) for spec in args.rules}
    print(f"\nreplayed on the unpruned runs (base: {base}); per rule: epochs saved, missed trials")
    for spec, rule in rules.items():
        cells = []
        for run in plain:
            study = optuna.load_study(study_name=f"{run.arm}-{run.seed}", storage=args.storage)
            arm = bench_pruning.replay(study, rule)
            spent = sum(p.epochs for p in run.points)
            cells.append(f"seed {run.seed}: {1 - arm.epochs / max(spent, 1):.1%} saved, "
                         f"{arm.pruned} pruned, missed {arm.missed}")
        print(f"{spec} | " + " | ".join(cells))


def print_fronts(runs: list[Run], budget: float) -> None:
    for run in runs:
        front = sorted(run.front(budget), key=lambda p: p.params or 0.0)
        cells = ", ".join(f"#{p.number} {p.params:,.0f}p val {p.val:.4f} test {p.test:.4f}"
                          for p in front if p.params is not None and p.val is not None
                          and p.test is not None)
        print(f"front {run.arm} seed {run.seed} @{budget:g}s: {cells}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="digits", help="dataset spec, e.g. mnist")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--arms", nargs="+", default=list(DEFAULT_ARMS), choices=[*ARMS, SCRIPT])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--baseline-seeds", type=int, nargs="+", default=[0],
                        help="seeds of the random and optuna-script arms")
    parser.add_argument("--budgets", type=float, nargs="+", default=[120.0],
                        help="wall-clock seconds of search; the largest is run, the others read off it")
    parser.add_argument("--workdir", type=Path, default=Path("bench-defaults"),
                        help="where the studies are kept (and resumed from)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--report-only", action="store_true", help="print the tables, run nothing")
    parser.add_argument("--rules", nargs="*", default=[], metavar="RULE",
                        help="pruning rules to replay on the defaults-unpruned runs "
                             "(bench_pruning.parse_rule: default, margin=0, warmup=1, ...)")
    args = parser.parse_args()
    args.budgets = sorted(args.budgets)
    args.workdir.mkdir(parents=True, exist_ok=True)
    args.storage = f"sqlite:///{args.workdir / 'bench-defaults.db'}"
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    bundle = data.load(args.dataset, args.data_dir)
    print(f"# {args.dataset}: train {bundle.n_train}, val {len(bundle.y_val)}, test {len(bundle.y_test)}; "
          f"budgets {args.budgets} s; reference {REFERENCE}; {machine()}; torch threads "
          f"{torch.get_num_threads()}")
    runs = []
    for arm in args.arms:
        for seed in (args.baseline_seeds if arm in BASELINES else args.seeds):
            start = time.perf_counter()
            if args.report_only:
                run = Run(arm, seed, points_of(_trials(f"{arm}-{seed}", args.storage)))
            elif arm == SCRIPT:
                run = run_script(args, bundle, seed)
            else:
                run = run_tool(args, bundle, arm, seed)
            runs.append(run)
            print(f"{arm} seed {seed}: {len(run.points)} trials, HV@{args.budgets[-1]:g}s="
                  f"{run.hv(args.budgets[-1]):.4f} ({time.perf_counter() - start:.0f} s this sitting)",
                  flush=True)
    print_tables(runs, args.budgets)
    print_pruning(runs)
    print_replays(args, bundle, runs)
    print_fronts(runs, args.budgets[-1])


if __name__ == "__main__":
    main()
