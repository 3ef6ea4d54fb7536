"""The trial function: sample a candidate, measure its static costs, train it, return objectives.

Every trial stores all metrics as user attributes (whether or not they are objectives), its
candidate, seed, per-epoch validation history (`epoch{k}`) and `epochs_trained`; a failed trial
stores `fail_reason`. A candidate over a hard constraint is never trained: it is recorded COMPLETE
with `infeasible` (what it violates), its real static costs and placeholder trained values, and
Optuna's constraint keeps it off the front. A pruned trial stores `pruned_by` (the pruner's reason).
"""

from __future__ import annotations

import copy
import gc
import logging
import math
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import optuna
import torch
from optuna.artifacts import FileSystemArtifactStore
from torch import nn

from automl_nn import accel, metrics, pruning, space
from automl_nn.analysis import predictions
from automl_nn.config import StudyConfig
from automl_nn.data.catalog import DataBundle
from automl_nn.errors import NonFiniteError, TrialFailure, UsageError
from automl_nn.nn.blocks import effective_widths, shrink
from automl_nn.nn.losses import make_loss
from automl_nn.nn.model import applicable_families, build
from automl_nn.spec import ArchSpec, Candidate
from automl_nn.storage import recovery
from automl_nn.storage.artifacts import save_weights
from automl_nn.train import EpochResult, Evaluation, History, evaluate, fit, prepared, seed_everything

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
    store: FileSystemArtifactStore | None = None  # where trained weights go; None keeps none
    # where per-sample predictions go (`automl-nn analyze`); None keeps none
    predictions_store: FileSystemArtifactStore | None = None

    def __post_init__(self) -> None:
        self.prune = pruning.make_epoch_pruning(self.config)
        self.excluded = applicable_families(_family_names(self.config), self.bundle.input_shape)
        for name, reason in self.excluded.items():
            log.info("family %s excluded from sampling: %s", name, reason)

    def __call__(self, trial: optuna.Trial) -> Sequence[float]:
        try:
            return self._run(trial)
        except optuna.TrialPruned:
            raise  # Optuna records it PRUNED; `pruned_by` is already stored
        except KeyboardInterrupt as exc:
            mark_failed(trial, "interrupted", f"stopped by {exc or 'Ctrl-C'}")
            raise
        except UsageError as exc:
            mark_failed(trial, "config", str(exc))
            raise
        except TrialFailure as exc:
            mark_failed(trial, exc.reason, str(exc))
            raise
        except Exception as exc:
            if not is_out_of_memory(exc):
                mark_failed(trial, type(exc).__name__, f"{exc}\n{traceback.format_exc(limit=3)}")
                raise
            failure = TrialFailure("oom", f"out of memory: {str(exc).strip().splitlines()[0][:300]}")
        # Out of the handler, the exception's traceback and the frames holding the model, the
        # optimizer and their tensors are gone; only now can their memory be given back.
        release_memory(self.device)
        mark_failed(trial, failure.reason, str(failure))
        raise failure

    def _run(self, trial: optuna.Trial) -> Sequence[float]:
        # A retry of a lost trial trains with the original trial's seed, so it repeats that trial.
        seed = trial_seed(self.config.seed, original_number(trial))
        candidate = space.sample(trial, self.config.space, excluded_families=self.excluded,
                                 seed=seed)
        recovery.set_user_attrs(trial, {"candidate": candidate.to_dict(), "seed": seed})
        self.reporter.trial_started(trial.number, candidate)
        seed_everything(seed)
        model = build(candidate.arch, self.bundle.input_shape, self.bundle.n_outputs)
        values = metrics.static_metrics(model, self.bundle.input_shape,
                                        static_signature(candidate))
        recovery.set_user_attrs(trial, values)
        violations = pruning.apply_constraints(trial, self.config.limits(), values)
        if violations:
            return self._infeasible(trial, values, violations)
        model.to(self.device)
        runtime = accel.resolve(self.config.accel(), self.device, candidate.arch.family)
        recorder = (None if self.predictions_store is None else
                    predictions.Recorder(model, prepared(self.bundle, candidate.train), runtime))
        history = fit(model, self.bundle, candidate.train,
                      on_epoch=lambda r: self._on_epoch(trial, r, candidate.train.epochs, recorder),
                      runtime=runtime)
        start_params = values["params"]  # before a gated network's cut
        done = finish(model, candidate, self.bundle, history, runtime)
        model, test = done.model, done.test
        values.update(done.values)  # train_time leaves out on_epoch (the recorder included)
        # the static costs are stored already, unless the cut changed them
        results: dict[str, Any] = {**done.values, **{f"test_{n}": v for n, v in test.scores.items()}}
        if candidate.arch.gated:
            results.update(start_params=start_params, effective_widths=list(done.arch.widths))
        recovery.set_user_attrs(trial, results)
        objective = objective_values(self.config.objectives, values)
        if self.store is not None:
            save_weights(trial, model, self.store)
        if recorder is not None and self.predictions_store is not None:
            predictions.save_predictions(trial, recorder, self.predictions_store)
        return objective

    def _infeasible(self, trial: optuna.Trial, static: dict[str, float],
                    violations: list[str]) -> list[float]:
        """Close a candidate over a constraint without training it (it costs no epoch)."""
        recovery.set_user_attrs(trial, {"infeasible": "; ".join(violations), "epochs_trained": 0})
        log.info("trial %d infeasible, not trained: %s", trial.number, "; ".join(violations))
        return pruning.infeasible_values(self.config.objectives, static, self.bundle.n_outputs)

    def _on_epoch(self, trial: optuna.Trial, result: EpochResult, epochs: int,
                  recorder: predictions.Recorder | None = None) -> None:
        if recorder is not None:
            recorder.record(result)
        # NaN (val_accuracy of a regression) is not valid JSON for the dashboard: leave it out.
        record = {k: v for k, v in result.to_dict().items() if math.isfinite(v)}
        recovery.set_user_attrs(trial, {f"epoch{result.epoch}": record,
                                        "epochs_trained": result.epoch})
        self.reporter.epoch_done(trial.number, result, epochs)
        reason = self.prune(trial, result.epoch, epochs)
        if reason is not None:
            trial.set_user_attr("pruned_by", reason)
            raise optuna.TrialPruned(_describe_pruning(reason))


def _describe_pruning(reason: dict[str, Any]) -> str:
    if "trial" in reason:
        return f"dominated by trial {reason['trial']} at epoch {reason['epoch']}"
    return f"{reason['pruner']} pruner at epoch {reason['epoch']}"


def _family_names(config: StudyConfig) -> list[str]:
    raw = config.space["family"].to_raw()
    return [str(v) for v in raw] if isinstance(raw, list) else [str(raw)]


def trained_metrics(history: History, val: Evaluation) -> dict[str, float]:
    """The task's validation metrics (accuracy/error/loss, or mse/mae/r2/loss) and training time."""
    return {**val.scores, "train_time": history.train_seconds}


@dataclass(frozen=True)
class Shrunk:
    """A gated network after training, cut to its effective widths."""

    arch: ArchSpec  # the plain architecture it shrank to (gated=False, the effective widths)
    values: dict[str, float]  # its static metrics and validation accuracy, error and loss


def shrink_trained(model: nn.Module, candidate: Candidate, bundle: DataBundle) -> tuple[nn.Module, Shrunk]:
    """Cut a trained gated network to its effective widths and measure the static costs of the cut.

    Static costs are those of the shrunk network (what export writes and what a user deploys);
    the gates at or below the threshold count as zero there.
    """
    if not isinstance(model, nn.Sequential):
        raise TypeError(f"a gated network is an nn.Sequential, but got {type(model).__name__}")
    threshold = candidate.arch.gate_threshold
    arch = candidate.arch.shrunk(effective_widths(model, threshold))
    small = shrink(model, threshold)
    # static metrics measure one input on the CPU, on a copy so the trained model stays put
    values = metrics.static_metrics(copy.deepcopy(small).cpu(), bundle.input_shape,
                                    static_signature(Candidate(arch, candidate.train)))
    return small, Shrunk(arch, values)


@dataclass
class Finished:
    """A trained network as a trial records it: shrunk when gated, measured on val and test."""

    model: nn.Module
    arch: ArchSpec
    values: dict[str, float]  # validation metrics and train time (+ the cut's static costs)
    test: Evaluation


def finish(model: nn.Module, candidate: Candidate, bundle: DataBundle, history: History,
           runtime: accel.Runtime = accel.PLAIN) -> Finished:
    """After fit: shrink a gated network, then evaluate validation and test as training saw inputs.

    The last epoch's validation is reused when the network is unchanged since (not gated).
    """
    arch, values = candidate.arch, {}
    if arch.gated:
        model, shrunk = shrink_trained(model, candidate, bundle)
        arch, values = shrunk.arch, dict(shrunk.values)
    seen = prepared(bundle, candidate.train)  # normalized or not, as in training
    loss_fn = make_loss(candidate.train.loss, candidate.train.label_smoothing)
    last = history.last.val if history.epochs else None
    val = (last if last is not None and not arch.gated
           else evaluate(model, seen, bundle.x_val, bundle.y_val, loss_fn, runtime))
    values.update(trained_metrics(history, val))
    test = evaluate(model, seen, bundle.x_test, bundle.y_test, loss_fn, runtime)
    return Finished(model, arch, values, test)


def objective_values(objectives: Sequence[str], values: dict[str, float]) -> list[float]:
    """The objectives' values in order; a NaN or infinite one fails the trial (never a best value)."""
    out = [float(values[name]) for name in objectives]
    bad = [f"{name}={value}" for name, value in zip(objectives, out, strict=True)
           if not math.isfinite(value)]
    if bad:
        raise NonFiniteError(f"objective value(s) not finite: {', '.join(bad)}")
    return out


def original_number(trial: optuna.Trial) -> int:
    """The trial's number, or for a retry of a lost trial the number of the trial it repeats."""
    system_attrs = trial.storage.get_trial(trial._trial_id).system_attrs
    return int(system_attrs.get("failed_trial", trial.number))


def is_out_of_memory(exc: BaseException) -> bool:
    """A CUDA (or other accelerator) allocation failure: the trial was too big, not wrong."""
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def release_memory(device: torch.device) -> None:
    """Give a failed trial's memory back before the next trial starts."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def mark_failed(trial: optuna.Trial, reason: str, message: str) -> None:
    """Record why a trial failed (`fail_reason`, `fail_message`) while it can still be written."""
    recovery.set_user_attrs(trial, {"fail_reason": reason, "fail_message": message[:2000]})
    log.warning("trial %d failed (%s): %s", trial.number, reason, message.splitlines()[0])


def static_signature(candidate: Candidate) -> str:
    """Key under which a candidate's static metrics are cached."""
    return repr(sorted(candidate.arch.to_dict().items()))


def attrs_of(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """Metrics stored on a trial, by name (only those present)."""
    return {name: trial.user_attrs[name] for name in metrics.METRICS if name in trial.user_attrs}
