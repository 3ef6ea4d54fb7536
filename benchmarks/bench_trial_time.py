"""Where a trial's time goes: trial wall time against the bare training steps it took (issue #17).

Each run is a search in this process (`search.run_search`, as the CLI runs it) on a fresh SQLite
storage, keeping weights for the front and predictions, as a search does by default:

  search   the 10-trial default search on full MNIST, 2-epoch trials
  seed000  1 trial of one fixed conv2d_linear network (depth 2, width 32, relu, kernel 3) with the
           seed 000 study's settings (studies/seed000-1001-networks.yaml: 4 epochs, batch 64,
           Adam 1e-3, test predictions after every epoch)
  subset   1 trial of the 3 x 121-channel conv2d (no pooling, relu, batch 64, Adam 1e-3) on
           mnist?train_size=3840, 1 epoch (the issue's profile)

A trial's wall time runs from its start to the next trial's start (the last one's: to the end of
the search), so the sampler, every storage write, the artifacts and the search's callbacks count.
The reference is each trial's network built again from its seed and trained, after the search, in
the same process, on the same device tensors, for the same epochs and batches, in a bare loop
(randperm batches; forward, loss, backward, step; no validation, no hooks). "Outside" is
1 - bare / wall. The evaluation reference is a bare forward pass without grad over what the
issue allows (the test split once, or each epoch where the study asks for it, and the validation
split each epoch), at the training batch. Before the first run the process counts one FLOP and
takes one optimizer step: torch imports its compiler stack on the first of either (about 2 s), a
cost of the process, not of whichever trial comes first.

Targets: search and seed000, outside <= 15% (median over trials) and <= 25% for every trial whose
bare training takes at least 5 s; subset, wall <= 2.3 x bare.

    python -m benchmarks.bench_trial_time --data-dir ../shared/data/mnist/raw
    python -m benchmarks.bench_trial_time --data-dir ../shared/data/mnist/raw --runs subset
    python -m benchmarks.bench_trial_time --smoke     # the same code on digits, in seconds
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import FrozenTrial

from automl_nn import config as cfg
from automl_nn.data import catalog as data
from automl_nn.data import on_device
from automl_nn.nn import build
from automl_nn.nn.losses import make_loss
from automl_nn.nn.optim import make_optimizer
from automl_nn.search import resolve_device, run_search
from automl_nn.spec import Candidate
from automl_nn.storage import record
from automl_nn.storage.record import TrialRecord
from automl_nn.train import prepared, seed_everything
from automl_nn.trial import NullReporter

ROOT = Path(__file__).resolve().parents[1]
SEED000 = ROOT / "studies" / "seed000-1001-networks.yaml"
MEDIAN_LIMIT = 0.15  # outside training, median over trials
LONG_TRIAL_LIMIT = 0.25  # outside training, every trial whose bare training takes >= LONG_TRIAL_S
LONG_TRIAL_S = 5.0
SUBSET_LIMIT = 2.3  # subset: wall / bare
# plain defaults: the image defaults would make the widths grow per stage and downsample each layer
FIXED_CONV = {"defaults": "plain", "family": "conv2d", "depth": 3, "width": 121, "pool": "none",
              "activation": "relu", "kernel_size": 3, "batch_size": 64, "optimizer": "adam", "lr": 1e-3}
SEED000_NET = {"family": "conv2d_linear", "depth": 2, "width": 32, "activation": "relu",
               "kernel_size": 3}


@dataclass(frozen=True)
class Run:
    """One search to time: a study file's mapping, CLI-style overrides, and the target it checks."""

    name: str
    raw: dict[str, Any]
    overrides: dict[str, Any]
    target: str  # "share" (median and long-trial limits) or "ratio" (wall / bare)


def runs(smoke: bool) -> dict[str, Run]:
    """The three runs; with `smoke`, the same shapes on digits, small enough for a test."""
    seed000 = cfg.load_file(SEED000)
    if smoke:
        return {
            "search": Run("search", {}, {"dataset": "digits", "trials": 2, "epochs": 1, "seed": 0,
                                         "width": "4:16", "depth": "1:2", "batch_size": 64}, "share"),
            "seed000": Run("seed000", {**seed000, "dataset": "digits"},
                           {"trials": 1, "epochs": 2, **SEED000_NET, "width": 8, "depth": 1}, "share"),
            "subset": Run("subset", {}, {"dataset": "digits?train_size=200", "trials": 1, "epochs": 1,
                                         "seed": 0, **FIXED_CONV, "width": 8, "depth": 1}, "ratio"),
        }
    return {
        "search": Run("search", {}, {"dataset": "mnist", "trials": 10, "epochs": 2, "seed": 0}, "share"),
        "seed000": Run("seed000", seed000, {"trials": 1, **SEED000_NET}, "share"),
        "subset": Run("subset", {}, {"dataset": "mnist?train_size=3840", "trials": 1, "epochs": 1,
                                     "seed": 0, **FIXED_CONV}, "ratio"),
    }


@dataclass
class TrialTime:
    """One trial: its wall time, the bare loop's, and the parts the trial recorded."""

    number: int
    arch: str
    epochs: int
    wall: float
    bare: float
    bare_eval: float
    parts: dict[str, float] = field(default_factory=dict)

    @property
    def outside(self) -> float:
        """Share of the wall time outside the (bare) training steps."""
        return 1.0 - self.bare / self.wall if self.wall > 0 else 0.0


# ---- timing ----------------------------------------------------------------------------------------


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def batch_starts(n: int, batch_size: int) -> list[int]:
    """The batches fit takes: a last batch of one sample is dropped (unless every batch is one)."""
    return [b for b in range(0, n, batch_size) if min(batch_size, n - b) > 1 or batch_size == 1 or n == 1]


def bare_training(candidate: Candidate, bundle: data.DataBundle, epochs: int, device: torch.device) -> float:
    """Seconds of `epochs` epochs of plain optimization steps on `bundle` (already on `device`)."""
    spec = candidate.train
    seed_everything(spec.seed)
    model = build(candidate.arch, bundle.input_shape, bundle.n_outputs).to(device)
    optimizer = make_optimizer(list(model.parameters()), spec)
    loss_fn = make_loss(spec.loss, spec.label_smoothing)
    seen = prepared(bundle, spec)
    x, y, n = seen.x_train, seen.y_train, seen.n_train
    generator = torch.Generator().manual_seed(spec.seed)
    model.train()
    _sync(device)
    start = time.perf_counter()
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator).to(device)
        for begin in batch_starts(n, spec.batch_size):
            idx = order[begin:begin + spec.batch_size]
            loss = loss_fn(model(seen.normalize(x[idx])), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            optimizer.step()
    _sync(device)
    return time.perf_counter() - start


def bare_evaluation(candidate: Candidate, bundle: data.DataBundle, epochs: int, test_passes: int,
                    device: torch.device) -> float:
    """Seconds of forward passes without grad over the validation split `epochs` times and the test
    split `test_passes` times, at the training batch: what the issue allows evaluation to cost."""
    seed_everything(candidate.train.seed)
    model = build(candidate.arch, bundle.input_shape, bundle.n_outputs).to(device).eval()
    seen, batch = prepared(bundle, candidate.train), candidate.train.batch_size
    passes = [seen.x_val] * epochs + [seen.x_test] * test_passes
    _sync(device)
    start = time.perf_counter()
    with torch.no_grad():
        for x in passes:
            for begin in range(0, x.shape[0], batch):
                model(seen.normalize(x[begin:begin + batch]))
    _sync(device)
    return time.perf_counter() - start


def trial_walls(trials: Sequence[FrozenTrial], end: float) -> list[float]:
    """Each trial's start to the next one's (the last: to `end`, a time.time() value)."""
    starts = [t.datetime_start.timestamp() if t.datetime_start else end for t in trials]
    return [b - a for a, b in zip(starts, [*starts[1:], end], strict=True)]


def time_run(run: Run, workdir: Path, data_dir: str | None, device: str) -> dict[str, Any]:
    """Search as `run` says, then time every trial's bare reference; plain data for the summary."""
    overrides = {**run.overrides, "data_dir": data_dir, "study_name": run.name,
                 "storage": f"sqlite:///{workdir / run.name}.db"}
    config = cfg.resolve(run.raw, overrides)
    bundle = data.load(config.dataset, config.data_dir)
    config = cfg.for_data(config, bundle)
    torch_device = resolve_device(device)
    study = run_search(config, bundle, NullReporter(), device)
    end = time.time()
    trials = sorted(study.get_trials(deepcopy=False, states=record.FINISHED), key=lambda t: t.number)
    on = on_device(bundle, torch_device)  # the tensors the search trained on
    rows = []
    for trial, wall in zip(trials, trial_walls(trials, end), strict=True):
        rec = TrialRecord.of(trial)
        if rec.is_infeasible:
            continue
        candidate = Candidate.from_dict(rec.candidate)
        epochs = rec.trained_epochs
        test_passes = epochs if config.test_each_epoch and trial.state.name == "COMPLETE" else int(
            trial.state.name == "COMPLETE")
        rows.append(TrialTime(
            number=trial.number, arch=_arch(rec), epochs=epochs, wall=wall,
            bare=bare_training(candidate, on, epochs, torch_device),
            bare_eval=bare_evaluation(candidate, on, epochs, test_passes, torch_device),
            parts=dict(rec.time)))
    return {"run": run.name, "dataset": config.dataset, "target": run.target,
            "splits": {"train": bundle.n_train, "val": int(bundle.x_val.shape[0]),
                       "test": int(bundle.x_test.shape[0])},
            "test_each_epoch": config.test_each_epoch, "trials": [_row(r) for r in rows],
            **summarize(rows, run.target)}


def _arch(rec: TrialRecord) -> str:
    arch, train = rec.arch, rec.train
    widths = "x".join(map(str, arch.get("widths", [])))
    return (f"{arch.get('family')} d{arch.get('depth')} w{widths or '-'} {arch.get('activation')}, "
            f"batch {train.get('batch_size')}")


def _row(r: TrialTime) -> dict[str, Any]:
    return {"trial": r.number, "arch": r.arch, "epochs": r.epochs, "wall_s": r.wall, "bare_s": r.bare,
            "outside": r.outside, "bare_eval_s": r.bare_eval, "recorded": r.parts}


def summarize(rows: Sequence[TrialTime], target: str) -> dict[str, Any]:
    """The figures the targets are about, and whether each is met."""
    if not rows:
        return {"met": False, "checks": {}}
    shares = [r.outside for r in rows]
    long = [r.outside for r in rows if r.bare >= LONG_TRIAL_S]
    out: dict[str, Any] = {"median_outside": statistics.median(shares),
                           "worst_long_outside": max(long) if long else None, "long_trials": len(long)}
    evals = [r.parts.get("eval", 0.0) / r.bare_eval for r in rows if r.bare_eval > 0 and r.parts]
    out["eval_vs_reference"] = statistics.median(evals) if evals else None
    if target == "ratio":
        out["wall_over_bare"] = max(r.wall / r.bare for r in rows)
        checks = {f"wall <= {SUBSET_LIMIT} x bare": out["wall_over_bare"] <= SUBSET_LIMIT}
    else:
        checks = {f"median outside <= {MEDIAN_LIMIT:.0%}": out["median_outside"] <= MEDIAN_LIMIT,
                  f"outside <= {LONG_TRIAL_LIMIT:.0%} when bare >= {LONG_TRIAL_S:g} s":
                      all(s <= LONG_TRIAL_LIMIT for s in long)}
    return {**out, "checks": checks, "met": all(checks.values())}


def markdown(result: dict[str, Any]) -> str:
    """A run's table for docs/benchmarks.md: one row per trial, then the checks."""
    parts = record.TIME_PARTS
    lines = [f"{result['run']}: {result['dataset']} (train {result['splits']['train']}, validation "
             f"{result['splits']['val']}, test {result['splits']['test']})", "",
             "| trial | network | epochs | wall s | bare s | outside | " + " | ".join(parts) + " |",
             "|---:|---|---:|---:|---:|---:|" + "---:|" * len(parts)]
    for row in result["trials"]:
        recorded = row["recorded"]
        lines.append(f"| {row['trial']} | {row['arch']} | {row['epochs']} | {row['wall_s']:.1f} | "
                     f"{row['bare_s']:.1f} | {row['outside']:.1%} | "
                     + " | ".join(f"{recorded.get(p, 0.0):.2f}" for p in parts) + " |")
    lines.append("")
    lines += [f"- {name}: {'met' if ok else 'NOT met'}" for name, ok in result["checks"].items()]
    return "\n".join(lines)


def warm_up() -> None:
    """Import what torch loads on a process's first FLOP count and first optimizer step."""
    from automl_nn.metrics import count_flops

    layer = torch.nn.Linear(2, 2)
    count_flops(layer, torch.zeros(1, 2))
    optimizer = torch.optim.Adam(layer.parameters())
    layer(torch.zeros(1, 2)).sum().backward()
    optimizer.step()


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--runs", nargs="+", default=["search", "seed000", "subset"],
                        choices=["search", "seed000", "subset"])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--workdir", type=Path, default=None, help="where the SQLite files go (fresh)")
    parser.add_argument("--smoke", action="store_true", help="the same runs on digits, tiny")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    from benchmarks.common import machine

    chosen = runs(args.smoke)
    warm_up()
    results: dict[str, Any] = {"machine": machine(), "threads": args.threads, "smoke": args.smoke,
                               "runs": {}}
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        for name in args.runs:
            results["runs"][name] = time_run(chosen[name], Path(tmp), args.data_dir, args.device)
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    print(f"# {results['machine']}, {args.threads} torch thread(s)")
    for result in results["runs"].values():
        print("\n" + markdown(result))
    return results


if __name__ == "__main__":
    main()
