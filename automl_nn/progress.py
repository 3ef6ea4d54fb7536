"""Search progress for the terminal: a live bar on a TTY, plain log lines otherwise."""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from typing import TextIO

import optuna
from optuna.trial import FrozenTrial, TrialState
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from automl_nn.config import UNTIL_DEADLINE
from automl_nn.spec import Candidate
from automl_nn.storage import record
from automl_nn.storage.record import TrialRecord, describe_pruning
from automl_nn.train import EpochResult


def describe_candidate(candidate: Candidate) -> str:
    arch, train = candidate.arch, candidate.train
    widths = "x".join(str(w) for w in arch.widths)
    return (f"{arch.family} {arch.depth}x[{widths}] {arch.activation} "
            f"{train.optimizer} lr={train.lr:.2g} bs={train.batch_size}")


def describe_outcome(trial: FrozenTrial, study: optuna.Study) -> str:
    """One line: the trial's state and its objective values (or why it failed)."""
    rec = TrialRecord.of(trial)
    if trial.state == TrialState.COMPLETE and trial.values is not None:
        names = study.metric_names or [str(i) for i in range(len(trial.values))]
        values = " ".join(f"{n}={_fmt(v)}" for n, v in zip(names, trial.values, strict=True))
        if rec.infeasible is not None:
            kind = "skipped" if record.is_skipped(trial) else "infeasible"
            return f"trial {trial.number} {kind}, not trained ({rec.infeasible})"
        if rec.diverged is not None:
            return f"trial {trial.number} diverged ({rec.diverged}); the sampler learns to avoid it"
        return f"trial {trial.number} complete: {values}"
    if trial.state == TrialState.PRUNED and rec.pruned_by is not None:
        return f"trial {trial.number} pruned ({describe_pruning(rec.pruned_by)})"
    reason = rec.fail_reason or ""
    message = rec.fail_message.splitlines()
    detail = f" ({reason}: {message[0]})" if message else (f" ({reason})" if reason else "")
    return f"trial {trial.number} {trial.state.name.lower()}{detail}"


def _fmt(value: float) -> str:
    return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.3e}"


def best_text(study: optuna.Study, best: Sequence[FrozenTrial]) -> str:
    """The front's size (the best value for one objective), from the front already found."""
    if not best:
        return "no complete trial yet"
    if len(study.directions) > 1:
        return f"front: {len(best)} trials"
    name = (study.metric_names or ["value"])[0]
    return f"best {name}={_fmt(best[0].values[0])}"


class LogReporter:
    """Plain lines on a stream (for logs, CI and pipes)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.done = 0
        self.total = 0

    def start(self, study_name: str, done: int, total: int) -> None:
        self.done, self.total = done, total
        if total >= UNTIL_DEADLINE:
            self._say(f"study {study_name}: {done} trials done; searching until the deadline")
        else:
            self._say(f"study {study_name}: {done} of {total} trials done")

    def stop(self) -> None:
        pass

    def trial_started(self, number: int, candidate: Candidate) -> None:
        self._say(f"trial {number} started: {describe_candidate(candidate)}")

    def epoch_done(self, number: int, result: EpochResult, epochs: int) -> None:
        accuracy = "" if math.isnan(result.val_accuracy) else f"val_accuracy={result.val_accuracy:.4f} "
        self._say(f"trial {number} epoch {result.epoch}/{epochs}: {accuracy}val_loss={result.val_loss:.4f}")

    def trial_finished(self, trial: FrozenTrial, study: optuna.Study,
                       best: Sequence[FrozenTrial]) -> None:
        if record.counts_toward_budget(trial):
            self.done += 1
        total = "" if self.total >= UNTIL_DEADLINE else f"/{self.total}"
        self._say(f"{describe_outcome(trial, study)} [{self.done}{total}, {best_text(study, best)}]")

    def _say(self, line: str) -> None:
        print(line, file=self.stream, flush=True)


class BarReporter(LogReporter):
    """A live bar: trials done / total, best so far, and the running trial's epoch."""

    def __init__(self, console: Console) -> None:
        super().__init__()
        self.console = console
        self.progress = Progress(
            TextColumn("[bold]{task.fields[name]}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[best]}"), TextColumn("[dim]{task.description}"),
            TimeElapsedColumn(), console=console, transient=False,
        )
        self.task = self.progress.add_task("", total=1, name="", best="")

    def start(self, study_name: str, done: int, total: int) -> None:
        self.done, self.total = done, total
        self.progress.update(self.task, total=None if total >= UNTIL_DEADLINE else total, completed=done,
                             name=study_name)
        self.progress.start()

    def stop(self) -> None:
        self.progress.stop()

    def trial_started(self, number: int, candidate: Candidate) -> None:
        self.progress.update(self.task, description=f"trial {number}: {describe_candidate(candidate)}")

    def epoch_done(self, number: int, result: EpochResult, epochs: int) -> None:
        self.progress.update(self.task, description=(
            f"trial {number} epoch {result.epoch}/{epochs} "
            + (f"val_loss={result.val_loss:.3f}" if math.isnan(result.val_accuracy)
               else f"val_acc={result.val_accuracy:.3f}")))

    def trial_finished(self, trial: FrozenTrial, study: optuna.Study,
                       best: Sequence[FrozenTrial]) -> None:
        if record.counts_toward_budget(trial):
            self.done += 1
        self.progress.console.print(describe_outcome(trial, study))
        self.progress.update(self.task, completed=self.done, best=best_text(study, best))


def make_reporter(console: Console) -> LogReporter:
    """A bar on a terminal, log lines elsewhere."""
    return BarReporter(console) if console.is_terminal else LogReporter()
