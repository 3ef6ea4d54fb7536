"""The `automl-nn` command: thin commands that parse, call one function each, and render.

Heavy modules (torch, optuna) are imported inside commands so `--help` stays instant.
Exit codes: 0 ok, 1 runtime failure (or damage `verify` found), 2 bad input, 130 interrupted
(143 SIGTERM, 129 SIGHUP).
"""

from __future__ import annotations

import csv
import functools
import io
import json
import logging
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from automl_nn.errors import StorageUnavailable, UsageError, WorkerFailure

app = typer.Typer(
    name="automl-nn",
    help="Which network, and what does it cost? Architecture and hyperparameter search on Optuna.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)
# Piped output (files, CI logs) gets wide tables instead of 80 folded columns.
out = Console(width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 200)

P = ParamSpec("P")
R = TypeVar("R")


class Format(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"


def handled(command: Callable[P, R]) -> Callable[P, R]:
    """Bad input -> message + exit 2; interrupts -> exit 128 + signal number."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except (UsageError, WorkerFailure, StorageUnavailable) as exc:
            err.print(Text("error: ", style="red") + Text(str(exc)), highlight=False)
            raise typer.Exit(code=exc.exit_code) from None
        except KeyboardInterrupt as exc:
            signum = getattr(exc, "signum", signal.SIGINT)
            err.print(f"interrupted ({signal.Signals(signum).name}): the running trial was closed "
                      "as failed; run the same command again to resume.")
            raise typer.Exit(code=128 + signum) from None

    return wrapper


StorageOpt = Annotated[str | None, typer.Option(
    "--storage", help="Optuna storage URL (default: sqlite:///automl-nn.db in the working "
    "directory), or journal:PATH for a journal file.")]


DeviceOpt = Annotated[str, typer.Option(
    help="auto (CUDA when present), cpu, cuda (every GPU) or a list such as cuda:0,cuda:1.")]
WorkersOpt = Annotated[int, typer.Option(
    help="Worker processes on this machine sharing the study (CPU: cores are split between them).")]
PerDeviceOpt = Annotated[int, typer.Option(
    help="Worker processes per GPU, for small models that leave a GPU idle.")]


@app.callback()
def _setup(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log debug details.")] = False,
) -> None:
    logging.basicConfig(level=logging.DEBUG if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")


@app.command()
@handled
def search(
    study_file: Annotated[Path | None, typer.Argument(
        help="YAML study file; flags given on the command line override it.")] = None,
    dataset: Annotated[str | None, typer.Option(
        help="Dataset name (see `automl-nn datasets`), NAME?key=value&... or a .npz/.csv file.")] = None,
    target: Annotated[str | None, typer.Option(help="CSV column to predict.")] = None,
    categorical: Annotated[str | None, typer.Option(
        metavar="COLS", help="CSV columns to one-hot encode, comma-separated (default: text columns "
        "and integer columns with few distinct values).")] = None,
    numeric: Annotated[str | None, typer.Option(
        metavar="COLS", help="CSV columns to read as numbers, comma-separated.")] = None,
    task: Annotated[str | None, typer.Option(
        help="classification or regression (default: inferred from the targets).")] = None,
    data_option: Annotated[list[str] | None, typer.Option(
        help="Dataset option KEY=VALUE, e.g. dim=12 (repeatable).")] = None,
    oversample: Annotated[bool | None, typer.Option(
        "--oversample/--no-oversample", help="Resample minority classes of the training split.",
        show_default=False)] = None,
    pca: Annotated[int | None, typer.Option(help="Project features on N principal components.")] = None,
    objective: Annotated[str | None, typer.Option(
        help="Comma-separated objectives, e.g. accuracy,params (1 to 4).")] = None,
    trials: Annotated[int | None, typer.Option(
        help="Total finished trials the study should hold (re-running resumes up to it).")] = None,
    max_failures: Annotated[int | None, typer.Option(
        help="Failed trials (diverged ones included) the study may hold before the search stops "
        "with exit 2. [default: --trials, at least 20]", show_default=False)] = None,
    timeout: Annotated[float | None, typer.Option(help=(
        "Wall-clock budget in seconds, counted from the command's start. Without --trials the "
        "search runs until it; a trial still training then stops as pruned, and candidates "
        "predicted not to finish in the time left are skipped."))] = None,
    epochs: Annotated[str | None, typer.Option(help="Epochs per trial: N, a,b or low:high.")] = None,
    family: Annotated[str | None, typer.Option(help="Layer families, e.g. linear,conv2d.")] = None,
    depth: Annotated[str | None, typer.Option(help="Hidden layers: N, a,b or low:high.")] = None,
    width: Annotated[str | None, typer.Option(help="Units/channels: N, a,b, low:high[:log].")] = None,
    activation: Annotated[str | None, typer.Option(help="Activations, e.g. relu,tanh.")] = None,
    optimizer: Annotated[str | None, typer.Option(help="Optimizers, e.g. adam,sgd.")] = None,
    lr: Annotated[str | None, typer.Option(help="Learning rate: X or low:high:log.")] = None,
    batch_size: Annotated[str | None, typer.Option(help="Batch size: N, a,b or low:high.")] = None,
    param: Annotated[list[str] | None, typer.Option(
        "--param", help="Any space parameter KEY=VALUE (repeatable): a scalar, a choice a,b or a "
        "range low:high[:log|:STEP], e.g. --param pool=max,none --param kernel_size=3:7:2.")] = None,
    defaults: Annotated[str | None, typer.Option(
        help="What fills the space keys left unset: auto (a default space chosen from the data: "
        "image, volume, signal or table), one of those by name, or plain (the vocabulary's own "
        "defaults, no default pruner or portfolio). [default: auto]")] = None,
    portfolio: Annotated[bool | None, typer.Option(
        "--portfolio/--no-portfolio", help="Start a new study with known-good configurations of "
        "its data's kind (default: on).", show_default=False)] = None,
    study_name: Annotated[str | None, typer.Option(help="Study name (default automl-nn).")] = None,
    storage: StorageOpt = None,
    sampler: Annotated[str | None, typer.Option(help="tpe, nsga2, random, qmc, grid or gp.")] = None,
    pruner: Annotated[str | None, typer.Option(
        help="none; one objective: median, percentile, hyperband, sha, patient, wilcoxon; "
        "several objectives: pareto.")] = None,
    max_params: Annotated[float | None, typer.Option(
        help="Hard limit on parameters: larger candidates are recorded infeasible, never trained.")] = None,
    max_flops: Annotated[float | None, typer.Option(help="Hard limit on forward FLOPs per input.")] = None,
    max_memory: Annotated[float | None, typer.Option(
        help="Hard limit on activation bytes per input.")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed: a sequential CPU search repeats.")] = None,
    data_dir: Annotated[str | None, typer.Option(help="Where datasets are stored.")] = None,
    keep_weights: Annotated[str | None, typer.Option(
        help="Keep trained weights for export: pareto (front trials, default), all or none.")] = None,
    keep_predictions: Annotated[bool | None, typer.Option(
        "--keep-predictions/--no-keep-predictions",
        help="Keep every trial's predictions for `automl-nn analyze`: validation after each epoch, "
        "test for the final model (default: keep).")] = None,
    test_each_epoch: Annotated[bool | None, typer.Option(
        "--test-each-epoch/--no-test-each-epoch",
        help="Also keep test predictions after every epoch (questions about test attempts); "
        "evaluated only for trials that complete. [default: off]", show_default=False)] = None,
    device: DeviceOpt = "auto",
    workers: WorkersOpt = 1,
    trials_per_device: PerDeviceOpt = 1,
    amp: Annotated[str | None, typer.Option(
        help="Mixed precision: auto (bf16 on CUDA GPUs with native bf16, else off), off, bf16, or "
        "fp16 (with loss scaling). Stored with the study. [default: auto]")] = None,
    channels_last: Annotated[str | None, typer.Option(
        help="channels_last memory layout for 2-d/3-d conv families: auto (on CUDA), on or off. "
        "[default: auto]")] = None,
    compile_: Annotated[bool | None, typer.Option(
        "--compile/--no-compile", help="torch.compile every trial's model (off by default: "
        "compiling takes longer than a short trial saves).", show_default=False)] = None,
    smoke: Annotated[bool, typer.Option(
        "--smoke", help="Check a study end to end fast: 2 trials of 1 epoch on 512 training samples, "
        "in a fresh study NAME-smoke (replaced on every smoke run; the real study is untouched).")]
    = False,
) -> None:
    """Search architectures and hyperparameters; re-running the same command resumes the study."""
    started = time.time()  # --timeout counts from here: loading the data is part of the budget
    from automl_nn import config as cfg
    from automl_nn import progress, search
    from automl_nn import workers as parallel
    from automl_nn.data import catalog as data
    from automl_nn.results import summary
    from automl_nn.storage import backends

    raw = cfg.load_file(study_file) if study_file is not None else {}
    overrides = {
        "dataset": dataset, "objectives": objective, "trials": trials,
        "max_failures": max_failures, "timeout": timeout,
        "study_name": study_name, "storage": storage, "sampler": sampler, "pruner": pruner,
        "seed": seed, "data_dir": data_dir, "keep_weights": keep_weights,
        "keep_predictions": keep_predictions, "test_each_epoch": test_each_epoch, "epochs": epochs,
        "family": family, "depth": depth,
        "width": width, "activation": activation, "optimizer": optimizer, "lr": lr,
        "batch_size": batch_size, "max_params": max_params, "max_flops": max_flops,
        "max_memory": max_memory, "target": target, "task": task, "oversample": oversample,
        "pca": pca, "data_options": _column_options(data_option, categorical=categorical, numeric=numeric),
        "amp": amp, "channels_last": channels_last, "compile": compile_,
        "defaults": defaults, "portfolio": portfolio,
    }
    overrides.update(cfg.param_flags(param or [], overrides))
    config = cfg.resolve(raw, overrides)
    if config.timeout is not None:
        config = replace(config, deadline=started + config.timeout)
    slots = parallel.plan_slots(device, workers, trials_per_device)
    bundle = data.load(config.dataset, config.data_dir)
    if smoke:  # one process: worker processes would load the full data set
        config, slots = cfg.smoke(config), slots[:1]
        bundle = data.subsample(bundle, cfg.SMOKE_SAMPLES)
    config = cfg.for_data(config, bundle)
    if smoke:
        backends.delete_smoke_study(config.study_name, config.storage)
    _quiet_optuna()
    for warning in parallel.storage_warnings(config.storage, len(slots)):
        err.print(Text("warning: ", style="yellow") + Text(warning), highlight=False)
    if len(slots) > 1:
        err.print(f"{len(slots)} workers on {slots[0].device}, {slots[0].threads} torch thread(s) each")
        result = parallel.run_parallel(config, slots)
    else:
        result = search.run_search(config, bundle, progress.make_reporter(err), slots[0].device)
    _print_rows(summary.front_rows(result), Format.table, title=f"Pareto front of {config.study_name}")


def _column_options(data_options: list[str] | None, **columns: str | None) -> list[str] | None:
    """--categorical / --numeric as the dataset options they are (so they enter the dataset spec)."""
    extra = [f"{key}={value}" for key, value in columns.items() if value is not None]
    return [*(data_options or []), *extra] or None


@app.command()
@handled
def worker(
    study_name: Annotated[str, typer.Argument(help="Study to join (created by `automl-nn search`).")],
    storage: Annotated[str, typer.Option(
        "--storage", help="The study's storage, e.g. postgresql+psycopg2://user@host/db.")],
    device: DeviceOpt = "auto",
    workers: WorkersOpt = 1,
    trials_per_device: PerDeviceOpt = 1,
    data_dir: Annotated[str | None, typer.Option(help="Where datasets are stored here.")] = None,
) -> None:
    """Join a running study from any machine; its config is read from the storage (no YAML)."""
    from automl_nn import progress, study
    from automl_nn import workers as parallel
    from automl_nn.results import summary

    _quiet_optuna()
    result = parallel.join_study(study_name, storage, device=device, workers=workers,
                                 trials_per_device=trials_per_device, data_dir=data_dir,
                                 reporter=progress.make_reporter(err))
    err.print(f"study {study_name}: {study.count_done(result)} finished trials")
    _print_rows(summary.front_rows(result), Format.table, title=f"Pareto front of {study_name}")


@app.command()
@handled
def pareto(
    study_name: Annotated[str, typer.Argument(help="Study name.")],
    storage: StorageOpt = None,
    format: Annotated[Format, typer.Option("--format", help="table, json or csv.")] = Format.table,
    pick: Annotated[str | None, typer.Option(
        "--pick", help="Name one front trial to export: knee, max-acc, min-params, min-flops, "
        "min-memory, min-latency, ... (knee: the best trade-off; see docs/architecture.md).")] = None,
) -> None:
    """Print the Pareto front (the best trial for single-objective studies), or the trial --pick names."""
    from automl_nn import study
    from automl_nn.results import decide, summary
    from automl_nn.storage import backends, record

    loaded = backends.load_existing(study_name, backends.open_storage(storage, must_exist=True))
    if pick is None:
        trials = record.read_summaries(loaded)
        _print_rows(summary.front_rows(loaded, trials), format, title=f"Pareto front of {study_name}")
        if format is Format.table:  # json and csv stay pure rows for scripts
            out.print(summary.pruning_line(summary.pruning_summary(loaded, trials)), highlight=False)
        return
    chosen = decide.pick(loaded, pick)
    row = {"pick": pick, **summary.trial_row(chosen, study.objective_names(loaded))}
    _print_rows([row], format, title=f"{pick} of {study_name}: trial {chosen.number}")
    err.print(f"export it with: automl-nn export {study_name} --trial {chosen.number} --out DIR",
              highlight=False)


@app.command()
@handled
def show(study_name: Annotated[str, typer.Argument(help="Study name.")],
         storage: StorageOpt = None) -> None:
    """Summarize a study: objectives, trial states, best trials and range-edge warnings."""
    from automl_nn.results import summary
    from automl_nn.storage import backends

    loaded = backends.load_existing(study_name, backends.open_storage(storage, must_exist=True))
    info = summary.study_summary(loaded)
    out.print(f"[bold]study[/bold] {info['study']}   dataset {info['dataset']}")
    out.print("objectives: " + ", ".join(
        f"{o['name']} ({o['direction']}, {o['unit']})" for o in info["objectives"]))
    out.print("trials: " + ", ".join(f"{k} {v}" for k, v in info["states"].items() if v))
    out.print(summary.counts_line(info["counts"]), highlight=False)
    if info["portfolio"]:
        out.print("warm-start portfolio: " + ", ".join(
            f"trial {p['trial']} {p['point']} ({p['state']})" for p in info["portfolio"]), highlight=False)
    out.print(summary.pruning_line(info["pruning"]), highlight=False)
    time_line = summary.time_line(info["time"])
    if time_line is not None:
        out.print(time_line, highlight=False)
    if info["fail_reasons"]:
        out.print("failures: " + ", ".join(f"{k} {v}" for k, v in info["fail_reasons"].items()))
    _print_rows(info["front"], Format.table, title="best trials")
    searched = _searched_space(loaded.user_attrs.get("config", {}).get("space", {}))
    if searched:
        _print_rows(searched, Format.table, title=f"search space ({_defaults_line(info['defaults'])})")
    if info["knee"] is not None and len(info["front"]) > 1:
        out.print(f"knee point (best trade-off): trial {info['knee']}; "
                  f"`automl-nn pareto {study_name} --pick knee` prints it")
    for warning in info["warnings"]:
        out.print(Text("warning: ", style="yellow") + Text(warning), highlight=False)


@app.command()
@handled
def studies(storage: StorageOpt = None) -> None:
    """List the studies in a storage with their trial counts."""
    from automl_nn.storage import listing

    rows = listing.rows(storage)
    if rows is None:  # a journal: replayed by Optuna
        from automl_nn.results import summary
        from automl_nn.storage import backends

        rows = summary.studies_table(backends.open_storage(storage, must_exist=True))
    if not rows:
        out.print("no studies in this storage yet; run `automl-nn search` to start one.")
        return
    _print_rows(rows, Format.table, title="studies")


@app.command("verify")
@handled
def verify_cmd(
    storage: Annotated[str, typer.Argument(
        help="journal:PATH, sqlite:///PATH, or the path of a journal or SQLite file.")],
    repair: Annotated[bool, typer.Option(
        "--repair", help="Journal files: back the file up (PATH.bak-<time>), then drop the lines "
        "Optuna cannot read and a torn last record. Stop every search on it first.")] = False,
) -> None:
    """Check a storage file for damage: unreadable journal lines and a torn last record, or
    SQLite's integrity_check. Exit 0 sound (or repaired), 1 damaged, 2 bad input."""
    from automl_nn.storage import verify

    verdict = verify.verify(storage, repair=repair)
    for line in verdict.lines:
        out.print(line, highlight=False, markup=False)
    if not verdict.sound:
        raise typer.Exit(code=1)


@app.command()
@handled
def check(
    study_file: Annotated[Path | None, typer.Argument(help="YAML study file (default: none).")] = None,
    dataset: Annotated[str | None, typer.Option(help="Dataset, over the study file's.")] = None,
    defaults: Annotated[str | None, typer.Option(
        help="auto, image, volume, signal, table or plain, over the study file's.")] = None,
) -> None:
    """Validate a study file without running it and print the resolved search space, with the
    default space of the data's kind filling in every key the file leaves unset."""
    from automl_nn import config as cfg
    from automl_nn import space

    raw = cfg.load_file(study_file) if study_file is not None else {}
    config = cfg.resolve(raw, {"dataset": dataset, "defaults": defaults})
    facts = cfg.facts_for(config)
    config = cfg.with_defaults(config, facts)
    settings = {k: v for k, v in config.to_raw().items() if k != "space"}
    out.print(f"[green]ok[/green] {study_file or 'no study file'}: "
              + ", ".join(f"{k}={v}" for k, v in settings.items()), highlight=False)
    out.print(f"defaults: {_defaults_line(config.defaults)}; the data: {facts.describe()}",
              highlight=False)
    _print_rows(space.describe(config.space), Format.table, title="search space")


def _defaults_line(mode: str) -> str:
    if mode == "plain":
        return "plain (unset keys take the vocabulary's own defaults)"
    return f"the {mode} default space fills every key the study does not set"


@app.command()
@handled
def export(
    study_name: Annotated[str, typer.Argument(help="Study name.")],
    out: Annotated[Path, typer.Option("--out", help="Directory to write the export into.")],
    trial: Annotated[int | None, typer.Option(help="Export this trial number.")] = None,
    pareto: Annotated[bool, typer.Option("--pareto", help="Export every trial on the front.")] = False,
    retrain: Annotated[bool, typer.Option(
        help="Train again from the trial's seed instead of using its kept weights.")] = False,
    onnx: Annotated[bool, typer.Option(help="Also write model.onnx (needs onnx).")] = False,
    storage: StorageOpt = None,
) -> None:
    """Write model.py (plain PyTorch), weights, arch.json and meta.json for trials of a study."""
    from automl_nn.results import export as exp
    from automl_nn.storage import backends

    if (trial is None) == (not pareto):
        raise UsageError("export: give exactly one of --trial N or --pareto.")
    url = backends.storage_url(storage)
    loaded = backends.load_existing(study_name, backends.open_storage(url, must_exist=True))
    if pareto:
        done = exp.export_front(loaded, out, url, retrain=retrain, onnx=onnx)
    else:
        assert trial is not None
        done = [exp.export_trial(loaded, trial, out, url, retrain=retrain, onnx=onnx)]
    rows = [{"trial": e.trial, "directory": str(e.directory), **e.values} for e in done]
    _print_rows(rows, Format.table, title=f"exported from {study_name}")


@app.command("train")
@handled
def train_cmd(
    source: Annotated[Path, typer.Argument(help="An export directory or an arch.json file.")],
    dataset: Annotated[str | None, typer.Option(help="Dataset (default: the export's).")] = None,
    epochs: Annotated[int | None, typer.Option(help="Epochs (default: the export's).")] = None,
    seed: Annotated[int | None, typer.Option(help="Training seed (default: the export's).")] = None,
    init_weights: Annotated[bool, typer.Option(
        help="Start from the export's weights (fine-tune) instead of from scratch.")] = False,
    data_dir: Annotated[str | None, typer.Option(help="Where datasets are stored.")] = None,
) -> None:
    """Retrain an exported architecture and print the same metrics a trial records."""
    from automl_nn.results import export as exp
    from automl_nn.train import EpochResult
    from automl_nn.trial import train_candidate

    job = exp.retrain_job(source, dataset=dataset, epochs=epochs, seed=seed,
                          init_weights=init_weights)
    def progress(r: EpochResult) -> None:
        err.print(f"epoch {r.epoch}: val_accuracy={r.val_accuracy:.4f} val_loss={r.val_loss:.4f}")

    result = train_candidate(job.candidate, job.dataset, data_dir, init_state=job.init_state,
                             on_epoch=progress)
    _print_rows([{**result.values, "test_accuracy": result.test_accuracy}], Format.table,
                title=f"{source} trained on {job.dataset}")


@app.command()
@handled
def ablate(
    study_name: Annotated[str, typer.Argument(help="Study name.")],
    trial: Annotated[int | None, typer.Option(
        help="Baseline trial (default: the knee of the front; the best trial for one objective).")]
    = None,
    out_dir: Annotated[Path, typer.Option("--out", help="Directory for ablate.html and ablate.json.")]
    = Path("ablate"),
    factors: Annotated[str | None, typer.Option(
        help="Comma-separated parameters to vary (default: every one the baseline sampled).")] = None,
    points: Annotated[int, typer.Option(help="Values per numeric range (log-spaced when log).")] = 5,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="Change the baseline: NAME=VALUE (repeatable), e.g. --set lr=0.01.")] = None,
    storage: StorageOpt = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
) -> None:
    """Vary one factor at a time from a baseline trial; learning curves per factor in one HTML page."""
    from automl_nn import search
    from automl_nn.results import ablate as abl
    from automl_nn.storage import backends

    loaded = backends.load_existing(study_name, backends.open_storage(storage, must_exist=True))
    names = [f.strip() for f in factors.split(",") if f.strip()] if factors else None
    result = abl.run_ablation(
        loaded, trial=trial, factors=names, points=points, overrides=_assignments(set_ or []),
        device=str(search.resolve_device(device)),
        on_variant=lambda f, v: err.print(f"{f}={v.value}: " + (
            f"val_accuracy={v.accuracy:.4f}" if v.accuracy is not None else f"failed ({v.error})"),
            highlight=False))
    html_path, json_path = abl.write(result, out_dir)
    rows = [{"factor": f, "value": v.value, "baseline": v.baseline, "accuracy": v.accuracy,
             "test_accuracy": v.test_accuracy} for f, vs in result.factors.items() for v in vs]
    _print_rows(rows, Format.table, title=f"{study_name}: one factor at a time from trial {result.trial}")
    out.print(f"wrote {html_path} and {json_path}", highlight=False)


def _searched_space(raw: dict[str, Any]) -> list[dict[str, Any]]:
    """The parameters a stored space searches (not the fixed ones), as `check` describes them."""
    from automl_nn import config as cfg
    from automl_nn import space

    rows = space.describe(cfg.parse_space(raw))
    return [{k: row[k] for k in ("name", "values", "applies")} for row in rows
            if not row["values"].startswith("fixed")]


def _assignments(items: list[str]) -> dict[str, Any]:
    """NAME=VALUE pairs, the values read as YAML scalars (0.01, true, relu)."""
    import yaml

    pairs: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise UsageError(f"--set: expected NAME=VALUE such as lr=0.01, but got {item!r}.")
        pairs[name.strip()] = yaml.safe_load(value)
    return pairs


@app.command()
@handled
def datasets(
    data_dir: Annotated[str | None, typer.Option(
        help="Where datasets are stored (default: the per-user cache).")] = None,
    format: Annotated[Format, typer.Option("--format", help="table, json or csv.")] = Format.table,
) -> None:
    """List the datasets that can be searched on: shape, size, task, and whether they are here."""
    from automl_nn.data import catalog as data

    _print_rows(data.listing(data_dir), format, title="datasets")


class ReportFormat(StrEnum):
    html = "html"
    png = "png"


class Split(StrEnum):
    val = "val"
    test = "test"


@app.command()
@handled
def analyze(
    study_name: Annotated[str, typer.Argument(help="Study name.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Directory for analysis.html and analysis.json.")]
    = Path("analysis"),
    split: Annotated[Split, typer.Option(help="Which split's predictions to analyse.")] = Split.test,
    gold_star: Annotated[float, typer.Option(
        min=0.0, max=1.0, help="Accuracy a trial needs at its last epoch for a gold star.")] = 0.98,
    data_dir: Annotated[str | None, typer.Option(help="Where datasets are stored (image grid).")] = None,
    storage: StorageOpt = None,
) -> None:
    """Answer the ten cross-network questions of the 1001-networks study (docs/seeds/seed000.md).

    For a classification study: an HTML page and JSON.
    """
    from automl_nn.results import analysis_page
    from automl_nn.storage import backends

    url = backends.storage_url(storage)
    loaded = backends.load_existing(study_name, backends.open_storage(url, must_exist=True))
    paths = analysis_page.analyze_study(loaded, url, split.value, out_dir, gold_star, data_dir)
    answers = json.loads(paths["json"].read_text())
    out.print(f"wrote {paths['html']} and {paths['json']}: {answers['trials']} trials, "
              f"{answers['with_predictions']} with stored predictions", highlight=False)
    out.print(analysis_page.splits_line(answers), highlight=False)
    for question in answers["needs_predictions"]:
        out.print(Text("note: ", style="yellow") + Text(
            f"{analysis_page.PREDICTION_QUESTIONS[question]} needs stored predictions; none were kept."),
            highlight=False)


@app.command()
@handled
def report(
    study_name: Annotated[str, typer.Argument(help="Study name.")],
    out_path: Annotated[Path, typer.Option("--out", help="HTML file to write.")] = Path("report.html"),
    storage: StorageOpt = None,
    format: Annotated[ReportFormat, typer.Option(
        "--format", help="html, or png: the HTML plus one PNG per plot in <out>-images/ "
        "(kaleido, needs chromium).")] = ReportFormat.html,
) -> None:
    """Write one self-contained HTML report (plotly inline, works offline) of a study."""
    import time

    from automl_nn.results import report as report_mod
    from automl_nn.storage import backends

    started = time.perf_counter()
    loaded = backends.load_existing(study_name, backends.open_storage(storage, must_exist=True))
    figs = report_mod.write_report(loaded, out_path)
    size = out_path.stat().st_size / 1e6
    out.print(f"wrote {out_path} ({size:.1f} MB, {len(figs)} plots, "
              f"{time.perf_counter() - started:.1f} s)", highlight=False)
    if format is ReportFormat.png:
        folder = report_mod.image_dir(out_path)
        paths = report_mod.write_images(figs, folder)
        out.print(f"wrote {len(paths)} PNG images to {folder}/", highlight=False)


@app.command()
@handled
def plot(
    study_name: Annotated[str, typer.Argument(help="Study name.")],
    x: Annotated[str, typer.Option(
        "--x", help="A sampled parameter (width, loss, ...), a metric, or epoch for learning "
        "curves.")],
    y: Annotated[str, typer.Option(
        "--y", help="A metric (accuracy, mse, test_accuracy, train_time, ...); with --x epoch a "
        "per-epoch value (val_accuracy, val_loss, train_loss).")],
    by: Annotated[str | None, typer.Option(
        help="Parameter(s) whose values get one line each, comma-separated (init,init_std).")] = None,
    out_path: Annotated[Path | None, typer.Option(
        "--out", help="Write the figure: .html (plotly inline) or .png (kaleido, needs chromium).")]
    = None,
    storage: StorageOpt = None,
    format: Annotated[Format, typer.Option("--format", help="table, json or csv.")] = Format.table,
) -> None:
    """Mean and std of a metric against one factor, one line per value of others (grid studies)."""
    from automl_nn.results import plot as factors
    from automl_nn.results import report as report_mod
    from automl_nn.storage import backends

    if out_path is not None and out_path.suffix not in (".html", ".png"):
        raise report_mod.ReportError(f"--out {out_path}: expected a .html or .png file name, but got "
                                     f"{out_path.suffix or 'no suffix'}.")
    loaded = backends.load_existing(study_name, backends.open_storage(storage, must_exist=True))
    points = report_mod.collect_points(loaded)
    names = [n.strip() for n in by.split(",") if n.strip()] if by else []
    found = (factors.curve_cells(points, y, names) if x == factors.EPOCH
             else factors.cells(points, x, y, names))
    _print_rows(factors.rows(found, x, y, names), format, title=f"{y} by {x} in {study_name}")
    if out_path is not None:
        fig = factors.factor_figure(points, x, y, names)
        factors.write_figure(fig, out_path)
        err.print(f"wrote {out_path}", highlight=False)


@app.command()
@handled
def dashboard(
    storage: StorageOpt = None,
    host: Annotated[str, typer.Option(help="Address to listen on; loopback unless acknowledged.")]
    = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on (0: any free port).", min=0,
                                      max=65535)] = 8080,
    i_know_no_auth: Annotated[bool, typer.Option(
        "--i-know-no-auth", help="Allow a non-loopback --host although the dashboard has no "
        "authentication (anyone who reaches it can read the studies).")] = False,
) -> None:
    """Serve optuna-dashboard for the storage (with its artifacts) until Ctrl-C."""
    from automl_nn.results import dashboard as dash
    from automl_nn.storage import backends

    dash.check_host(host, i_know_no_auth)  # before the slow storage open
    url = backends.storage_url(storage)
    artifacts = backends.artifact_dir(storage)
    board = dash.start(backends.open_storage(storage, must_exist=True), host=host, port=port,
                       artifacts=artifacts, acknowledged=i_know_no_auth)
    if not dash.is_loopback(host):
        err.print(Text("warning: ", style="yellow") + Text(
            f"the dashboard listens on {host}:{board.port} and has NO authentication: anyone who "
            "reaches this port can read every study and write notes."), highlight=False)
    if url.startswith("sqlite"):
        err.print(f"note: the dashboard polls {url.removeprefix('sqlite:///')} every few seconds; a "
                  "search may keep writing to the same file meanwhile.", highlight=False)
    out.print(f"optuna-dashboard for {url} at {board.url} (artifacts: {artifacts}/); "
              "Ctrl-C stops it.", highlight=False)
    board.wait()


def _quiet_optuna() -> None:
    import optuna

    # Our reporter prints each trial's outcome and failure reason; optuna's own lines would repeat it.
    optuna.logging.set_verbosity(optuna.logging.ERROR)


def _print_rows(rows: list[dict[str, Any]], fmt: Format, title: str = "") -> None:
    if fmt is Format.json:
        sys.stdout.write(json.dumps(rows, indent=2, default=str) + "\n")
    elif fmt is Format.csv:
        sys.stdout.write(_csv(rows))
    elif not rows:
        out.print(f"{title}: none")
    else:
        table = Table(title=title or None)
        for column in rows[0]:
            table.add_column(str(column), overflow="fold")
        for row in rows:
            table.add_row(*(_cell(v) for v in row.values()))
        out.print(table)


def _csv(rows: list[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return buffer.getvalue()


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def main() -> None:
    """Entry point of the `automl-nn` script."""
    app()
