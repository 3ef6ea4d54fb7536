"""The trial function: sample a candidate, measure its static costs, train it, return objectives.

Every trial stores all metrics as user attributes (whether or not they are objectives), its
candidate, seed, and per-epoch validation history; a failed trial stores `fail_reason`.
"""

from __future__ import annotations

import logging
import math
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import optuna
import torch

from automl_nn import metrics, space
from automl_nn.config import StudyConfig
from automl_nn.data import DataBundle
from automl_nn.errors import NonFiniteError, TrialFailure, UsageError
from automl_nn.losses import LOSSES
from automl_nn.model import applicable_families, build
from automl_nn.spec import Candidate
from automl_nn.train import EpochResult, Evaluation, History, evaluate, fit, seed_everything

log = logging.getLogger(__name__)


class Reporter(Protocol):
    """Receives progress events; the CLI renders them (a live bar on a TTY, log lines otherwise)."""

    def start(self, study_name: str, done: int, total: int) -> None: ...

    def stop(self) -> None: ...

    def trial_started(self, number: int, candidate: Candidate) -> None: ...

    def epoch_done(self, number: int, result: EpochResult, epochs: int) -> None: ...

    def trial_finished(self, trial: optuna.trial.FrozenTrial, study: optuna.Study) -> None: ...


class NullReporter:
    """A reporter that ignores every event."""

    def start(self, study_name: str, done: int, total: int) -> None:
        pass

    def stop(self) -> None:
        pass

    def trial_started(self, number: int, candidate: Candidate) -> None:
        pass

    def epoch_done(self, number: int, result: EpochResult, epochs: int) -> None:
        pass

    def trial_finished(self, trial: optuna.trial.FrozenTrial, study: optuna.Study) -> None:
        pass


def trial_seed(base: int | None, number: int) -> int:
    """Per-trial training seed: fixed by --seed and the trial number, random without --seed."""
    if base is None:
        return int(torch.randint(0, 2**31 - 1, ()).item())
    return (base * 1_000_003 + number) % (2**31 - 1)


@dataclass
class TrialRunner:
    """Callable for `study.optimize`: one full trial, from sampling to objective values."""

    config: StudyConfig
    bundle: DataBundle
    device: torch.device
    reporter: Reporter

    def __post_init__(self) -> None:
        self.excluded = applicable_families(_family_names(self.config), self.bundle.input_shape)
        for name, reason in self.excluded.items():
            log.info("family %s excluded from sampling: %s", name, reason)

    def __call__(self, trial: optuna.Trial) -> Sequence[float]:
        try:
            return self._run(trial)
        except KeyboardInterrupt as exc:
            _mark_failed(trial, "interrupted", f"stopped by {exc or 'Ctrl-C'}")
            raise
        except UsageError as exc:
            _mark_failed(trial, "config", str(exc))
            raise
        except TrialFailure as exc:
            _mark_failed(trial, exc.reason, str(exc))
            raise
        except Exception as exc:
            _mark_failed(trial, type(exc).__name__, f"{exc}\n{traceback.format_exc(limit=3)}")
            raise

    def _run(self, trial: optuna.Trial) -> Sequence[float]:
        seed = trial_seed(self.config.seed, trial.number)
        candidate = space.sample(trial, self.config.space, excluded_families=self.excluded,
                                 seed=seed)
        trial.set_user_attr("candidate", candidate.to_dict())
        trial.set_user_attr("seed", seed)
        self.reporter.trial_started(trial.number, candidate)
        seed_everything(seed)
        model = build(candidate.arch, self.bundle.input_shape, self.bundle.n_outputs)
        values = metrics.static_metrics(model, self.bundle.input_shape,
                                        static_signature(candidate))
        _store(trial, values)
        model.to(self.device)
        history = fit(model, self.bundle, candidate.train,
                      on_epoch=lambda r: self._on_epoch(trial, r, candidate.train.epochs))
        loss_fn = LOSSES.get(candidate.train.loss)
        val = evaluate(model, self.bundle, self.bundle.x_val, self.bundle.y_val, loss_fn)
        values.update(_trained_metrics(history, val))
        test = evaluate(model, self.bundle, self.bundle.x_test, self.bundle.y_test, loss_fn)
        _store(trial, values)
        for name, value in test.scores.items():
            trial.set_user_attr(f"test_{name}", value)
        return objective_values(self.config.objectives, values)

    def _on_epoch(self, trial: optuna.Trial, result: EpochResult, epochs: int) -> None:
        # NaN (val_accuracy of a regression) is not valid JSON for the dashboard: leave it out.
        record = {k: v for k, v in result.to_dict().items() if math.isfinite(v)}
        trial.set_user_attr(f"epoch{result.epoch}", record)
        self.reporter.epoch_done(trial.number, result, epochs)


def _family_names(config: StudyConfig) -> list[str]:
    raw = config.space["family"].to_raw()
    return [str(v) for v in raw] if isinstance(raw, list) else [str(raw)]


def _trained_metrics(history: History, val: Evaluation) -> dict[str, float]:
    """The task's validation metrics (accuracy/error/loss, or mse/mae/r2/loss) and training time."""
    return {**val.scores, "train_time": history.train_seconds}


def _store(trial: optuna.Trial, values: dict[str, float]) -> None:
    for name, value in values.items():
        trial.set_user_attr(name, value)


def objective_values(objectives: Sequence[str], values: dict[str, float]) -> list[float]:
    """The objectives' values in order; a NaN or infinite one fails the trial (never a best value)."""
    out = [float(values[name]) for name in objectives]
    bad = [f"{name}={value}" for name, value in zip(objectives, out, strict=True)
           if not math.isfinite(value)]
    if bad:
        raise NonFiniteError(f"objective value(s) not finite: {', '.join(bad)}")
    return out


def _mark_failed(trial: optuna.Trial, reason: str, message: str) -> None:
    trial.set_user_attr("fail_reason", reason)
    trial.set_user_attr("fail_message", message[:2000])
    log.warning("trial %d failed (%s): %s", trial.number, reason, message.splitlines()[0])


def static_signature(candidate: Candidate) -> str:
    """Key under which a candidate's static metrics are cached."""
    return repr(sorted(candidate.arch.to_dict().items()))


def attrs_of(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """Metrics stored on a trial, by name (only those present)."""
    return {name: trial.user_attrs[name] for name in metrics.METRICS if name in trial.user_attrs}
