"""The `automl-nn` command: thin commands that parse, call one function each, and render.

Heavy modules (torch, optuna) are imported inside commands so `--help` stays instant.
Exit codes: 0 ok, 1 runtime failure, 2 bad input, 130 interrupted (143 SIGTERM, 129 SIGHUP).
"""

from __future__ import annotations

import csv
import functools
import io
import json
import logging
import signal
import sys
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from automl_nn.errors import UsageError

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
        except UsageError as exc:
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
    timeout: Annotated[float | None, typer.Option(help="Stop after this many seconds.")] = None,
    epochs: Annotated[str | None, typer.Option(help="Epochs per trial: N, a,b or low:high.")] = None,
    family: Annotated[str | None, typer.Option(help="Layer families, e.g. linear,conv2d.")] = None,
    depth: Annotated[str | None, typer.Option(help="Hidden layers: N, a,b or low:high.")] = None,
    width: Annotated[str | None, typer.Option(help="Units/channels: N, a,b, low:high[:log].")] = None,
    activation: Annotated[str | None, typer.Option(help="Activations, e.g. relu,tanh.")] = None,
    optimizer: Annotated[str | None, typer.Option(help="Optimizers, e.g. adam,sgd.")] = None,
    lr: Annotated[str | None, typer.Option(help="Learning rate: X or low:high:log.")] = None,
    batch_size: Annotated[str | None, typer.Option(help="Batch size: N, a,b or low:high.")] = None,
    study_name: Annotated[str | None, typer.Option(help="Study name (default automl-nn).")] = None,
    storage: StorageOpt = None,
    sampler: Annotated[str | None, typer.Option(help="tpe, nsga2, random, qmc, grid or gp.")] = None,
    pruner: Annotated[str | None, typer.Option(help="Pruner (none).")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed: a sequential CPU search repeats.")] = None,
    data_dir: Annotated[str | None, typer.Option(help="Where datasets are stored.")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
) -> None:
    """Search architectures and hyperparameters; re-running the same command resumes the study."""
    from automl_nn import config as cfg
    from automl_nn import data, progress, study, summary

    raw = cfg.load_file(study_file) if study_file is not None else {}
    overrides = {
        "dataset": dataset, "objectives": objective, "trials": trials, "timeout": timeout,
        "study_name": study_name, "storage": storage, "sampler": sampler, "pruner": pruner,
        "seed": seed, "data_dir": data_dir, "epochs": epochs, "family": family, "depth": depth,
        "width": width, "activation": activation, "optimizer": optimizer, "lr": lr,
        "batch_size": batch_size, "target": target, "task": task, "oversample": oversample,
        "pca": pca, "data_options": data_option,
    }
    config = cfg.resolve(raw, overrides)
    bundle = data.load(config.dataset, config.data_dir)
    config = cfg.for_data(config, bundle)
    _quiet_optuna()
    result = study.run_search(config, bundle, progress.make_reporter(err), device)
    _print_rows(summary.front_rows(result), Format.table, title=f"Pareto front of {config.study_name}")


@app.command()
@handled
def pareto(
    study_name: Annotated[str, typer.Argument(help="Study name.")],
    storage: StorageOpt = None,
    format: Annotated[Format, typer.Option("--format", help="table, json or csv.")] = Format.table,
) -> None:
    """Print the Pareto front (the best trial for single-objective studies)."""
    from automl_nn import study, summary

    loaded = study.load_existing(study_name, study.open_storage(storage, must_exist=True))
    _print_rows(summary.front_rows(loaded), format, title=f"Pareto front of {study_name}")


@app.command()
@handled
def show(study_name: Annotated[str, typer.Argument(help="Study name.")],
         storage: StorageOpt = None) -> None:
    """Summarize a study: objectives, trial states, best trials and range-edge warnings."""
    from automl_nn import study, summary

    loaded = study.load_existing(study_name, study.open_storage(storage, must_exist=True))
    info = summary.study_summary(loaded)
    out.print(f"[bold]study[/bold] {info['study']}   dataset {info['dataset']}")
    out.print("objectives: " + ", ".join(
        f"{o['name']} ({o['direction']}, {o['unit']})" for o in info["objectives"]))
    out.print("trials: " + ", ".join(f"{k} {v}" for k, v in info["states"].items() if v))
    if info["fail_reasons"]:
        out.print("failures: " + ", ".join(f"{k} {v}" for k, v in info["fail_reasons"].items()))
    _print_rows(info["front"], Format.table, title="best trials")
    for warning in info["warnings"]:
        out.print(Text("warning: ", style="yellow") + Text(warning), highlight=False)


@app.command()
@handled
def studies(storage: StorageOpt = None) -> None:
    """List the studies in a storage with their trial counts."""
    from automl_nn import study, summary

    rows = summary.studies_table(study.open_storage(storage, must_exist=True))
    if not rows:
        out.print("no studies in this storage yet; run `automl-nn search` to start one.")
        return
    _print_rows(rows, Format.table, title="studies")


@app.command()
@handled
def check(study_file: Annotated[Path, typer.Argument(help="YAML study file.")]) -> None:
    """Validate a study file without running it and print the resolved search space."""
    from automl_nn import config as cfg
    from automl_nn import space

    config = cfg.resolve(cfg.load_file(study_file))
    settings = {k: v for k, v in config.to_raw().items() if k != "space"}
    out.print(f"[green]ok[/green] {study_file}: " + ", ".join(f"{k}={v}" for k, v in settings.items()),
              highlight=False)
    _print_rows(space.describe(config.space), Format.table, title="search space")


@app.command()
@handled
def datasets(
    data_dir: Annotated[str | None, typer.Option(
        help="Where datasets are stored (default: the per-user cache).")] = None,
    format: Annotated[Format, typer.Option("--format", help="table, json or csv.")] = Format.table,
) -> None:
    """List the datasets that can be searched on: shape, size, task, and whether they are here."""
    from automl_nn import data

    _print_rows(data.listing(data_dir), format, title="datasets")


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
