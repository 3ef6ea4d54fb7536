"""One trial end to end: sample a candidate, measure its static costs, train it, return objectives.

What a trial stores (every metric, its candidate and seed, each epoch, why it stopped) is written
through `storage.record`, which names every key. A candidate over a hard constraint is never
trained: it is recorded COMPLETE as infeasible, with its real static costs and placeholder trained
values, and Optuna's constraint keeps it off the front. A trial whose loss or objective becomes
NaN or infinite is closed the same way, as diverged, with the `diverged` constraint violated, so
that samplers learn to avoid where training blows up.

`measure` and `train_measured` are the one way to train a candidate as a trial does; the runner
calls them between its storage writes, and `train_candidate` (`export --retrain`, `train`,
`ablate`) calls them on a data set of its own.
Complete and pruned trials store `time`: where their seconds went (storage.record.TIME_PARTS).
"""

from __future__ import annotations

import contextlib
import copy
import gc
import logging
import math
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import optuna
import torch
from optuna.artifacts import FileSystemArtifactStore
from optuna.trial import TrialState
from torch import nn

from automl_nn import accel, metrics, pruning, space
from automl_nn.analysis import predictions
from automl_nn.config import StudyConfig
from automl_nn.data import DataBundle, on_device
from automl_nn.data import load as load_dataset
from automl_nn.errors import DeadlineReached, NonFiniteError, TrialFailure, UsageError
from automl_nn.nn import build, cut, effective_widths
from automl_nn.nn.losses import make_loss
from automl_nn.spec import ArchSpec, Candidate
from automl_nn.storage import artifacts, record
from automl_nn.storage.record import TrialRecord
from automl_nn.train import (
    EpochResult,
    Evaluation,
    History,
    eval_batch,
    evaluate,
    fit,
    prepared,
    seed_everything,
)
from automl_nn.vocab import excluded_families
from automl_nn.weights import state_bytes

log = logging.getLogger(__name__)


class Reporter(Protocol):
    """Receives progress events; the CLI renders them (a live bar on a TTY, log lines otherwise)."""

    def start(self, study_name: str, done: int, total: int) -> None: ...

    def stop(self) -> None: ...

    def trial_started(self, number: int, candidate: Candidate) -> None: ...

    def epoch_done(self, number: int, result: EpochResult, epochs: int) -> None: ...

    def trial_finished(self, trial: optuna.trial.FrozenTrial, study: optuna.Study,
                       best: Sequence[optuna.trial.FrozenTrial]) -> None:
        """`best`: the study's front (`record.front`) with this trial counted."""


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

    def trial_finished(self, trial: optuna.trial.FrozenTrial, study: optuna.Study,
                       best: Sequence[optuna.trial.FrozenTrial]) -> None:
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
    # whether diverged trials close COMPLETE under the `diverged` constraint (read once per study)
    _divergence: bool | None = field(default=None, init=False, repr=False)
    # the running trial's probed seconds per epoch (searches with a deadline; None otherwise)
    _probed_epoch: float | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.pace = Pace()
        self.prune = pruning.make_epoch_pruning(self.config)
        self.excluded = excluded_families(_family_names(self.config), self.bundle.input_shape)
        for name, reason in self.excluded.items():
            log.info("family %s excluded from sampling: %s", name, reason)

    def __call__(self, trial: optuna.Trial) -> Sequence[float]:
        clock = Clock()  # every way a trial ends records where its time went
        try:
            return self._run(trial, clock)
        except optuna.TrialPruned:
            raise  # Optuna records it PRUNED; `pruned_by` is already stored
        except DeadlineReached as exc:  # stopped with its partial history, as a pruned trial
            reason = {"pruner": "deadline", "epoch": TrialRecord.running(trial).trained_epochs}
            record.write_pruned(trial, reason, clock.total())
            raise optuna.TrialPruned(f"{exc} (after epoch {reason['epoch']})") from None
        except KeyboardInterrupt as exc:
            mark_failed(trial, "interrupted", f"stopped by {exc or 'Ctrl-C'}", clock)
            raise
        except UsageError as exc:
            mark_failed(trial, "config", str(exc), clock)
            raise
        except NonFiniteError as exc:
            if self._constrains_divergence(trial):
                return self._diverged(trial, str(exc), clock)
            mark_failed(trial, exc.reason, str(exc), clock)
            raise
        except TrialFailure as exc:
            mark_failed(trial, exc.reason, str(exc), clock)
            raise
        except Exception as exc:
            if not is_out_of_memory(exc):
                mark_failed(trial, type(exc).__name__, f"{exc}\n{traceback.format_exc(limit=3)}", clock)
                raise
            failure = TrialFailure("oom", f"out of memory: {str(exc).strip().splitlines()[0][:300]}")
        # Out of the handler, the exception's traceback and the frames holding the model, the
        # optimizer and their tensors are gone; only now can their memory be given back.
        release_memory(self.device)
        mark_failed(trial, failure.reason, str(failure), clock)
        raise failure

    def _run(self, trial: optuna.Trial, clock: Clock) -> Sequence[float]:
        # A retry of a lost trial trains with the original trial's seed, so it repeats that trial.
        seed = trial_seed(self.config.seed, original_number(trial))
        with clock.timing("sampling"):
            candidate = space.sample(trial, self.config.space, excluded_families=self.excluded,
                                     seed=seed)
        with clock.timing("storage"):
            record.write_candidate(trial, candidate.to_dict(), seed)
        self.reporter.trial_started(trial.number, candidate)
        built = measure(candidate, self.bundle)
        clock.add("metrics", built.seconds)
        with clock.timing("storage"):
            record.write_metrics(trial, built.static)
            violations = pruning.apply_constraints(trial, self.config.limits(), built.static)
        if violations:
            return self._infeasible(trial, built.static, violations, clock)
        self._probed_epoch = None
        skip = self._over_time(trial, built, candidate, clock)
        if skip is not None:
            return skip
        runtime = accel.runtime_for(self.config.accel(), self.device, candidate.arch.family)
        batch = eval_batch_for(built, candidate, self.device)
        recorder = (None if self.predictions_store is None else
                    predictions.Recorder(built.model, prepared(self.bundle, candidate.train), runtime,
                                         test_each_epoch=self.config.test_each_epoch, batch_size=batch))
        epochs = record.EpochLog(trial)
        clock.start_epoch()
        try:
            done = train_measured(built, candidate, self.bundle, self.device, runtime,
                                  eval_batch_size=batch, deadline=self.config.deadline,
                                  on_epoch=lambda r: self._on_epoch(trial, r, candidate.train.epochs,
                                                                    recorder, clock, epochs))
        except BaseException:
            clock.close_epoch()  # the steps of the epoch it did not finish
            raise
        finally:  # however training ends, every epoch it finished is stored
            with clock.timing("storage"):
                epochs.flush()
        clock.fit = dict(done.seconds)  # every epoch's, and the evaluation after the last
        if self._probed_epoch is not None:
            self.pace.observe(self._probed_epoch * len(done.history), sum(done.seconds.values()))
        # the static costs are stored already, unless a gated network's cut changed them
        results: dict[str, Any] = {**done.trained,
                                   **{record.TEST_PREFIX + n: v for n, v in done.test.scores.items()}}
        if candidate.arch.gated:
            results.update({record.START_PARAMS: built.static["params"],
                            record.EFFECTIVE_WIDTHS: list(done.arch.widths)})
        with clock.timing("storage"):
            record.write_metrics(trial, results)
        objective = objective_values(self.config.objectives, done.values)
        self._keep(trial, done, recorder, clock)
        with clock.timing("storage"):
            if self._constrains_divergence(trial):
                pruning.set_divergence(trial, False)
        record.write_time(trial, clock.total())
        return objective

    def _keep(self, trial: optuna.Trial, done: Trained, recorder: predictions.Recorder | None,
              clock: Clock) -> None:
        """Upload a completed trial's weights and predictions (test attempts evaluated first)."""
        with clock.timing("artifacts"):
            if self.store is not None:
                artifacts.keep_weights(trial, state_bytes(done.model), self.store)
        if recorder is not None and self.predictions_store is not None:
            with clock.timing("eval"):
                recorder.finish(done.test)
            with clock.timing("artifacts"):
                predictions.save_predictions(trial, recorder, self.predictions_store)

    def _over_time(self, trial: optuna.Trial, built: Built, candidate: Candidate,
                   clock: Clock) -> list[float] | None:
        """Skip a candidate whose predicted training time exceeds the time left before the deadline.

        The sampler is told through a violated `max_time` constraint (predicted / left - 1), so it
        learns which candidates are too slow for the budget; the trial closes COMPLETE and skipped,
        never trained, off the front and not counted toward --trials.
        """
        if self.config.deadline is None:
            return None
        left = self.config.deadline - time.time()
        with clock.timing("metrics"):  # a measurement of the candidate, not of its training
            step = self.pace.probe(built.model, self.bundle, candidate.train.batch_size, self.device)
        self._probed_epoch = step * math.ceil(self.bundle.n_train / candidate.train.batch_size)
        predicted = self.pace.predict(self._probed_epoch * candidate.train.epochs)
        warm_start = record.PORTFOLIO in trial.user_attrs
        allowed = (PORTFOLIO_SHARE if warm_start else SKIP_MARGIN) * left
        if predicted <= allowed:
            return None
        trial.set_constraint("max_time", predicted / max(left, 1e-3) - 1.0)
        left_s = f"{max(left, 0.0):.0f} s"
        if warm_start:
            reason = (f"warm-start point predicted to train {predicted:.0f} s, more than "
                      f"{PORTFOLIO_SHARE:.0%} of the {left_s} left")
        else:
            reason = f"predicted training time {predicted:.0f} s > {left_s} left to the deadline"
        record.write_skipped(trial, reason, clock.total())
        log.info("trial %d skipped: %s", trial.number, reason)
        return self._placeholders(built.static)

    def _infeasible(self, trial: optuna.Trial, static: dict[str, float],
                    violations: list[str], clock: Clock) -> list[float]:
        """Close a candidate over a constraint without training it (it costs no epoch)."""
        record.write_infeasible(trial, violations, clock.total())
        if self._constrains_divergence(trial):
            pruning.set_divergence(trial, False)
        log.info("trial %d infeasible, not trained: %s", trial.number, "; ".join(violations))
        return self._placeholders(static)

    def _diverged(self, trial: optuna.Trial, message: str, clock: Clock) -> list[float]:
        """Close a trial whose training diverged as COMPLETE, under a violated constraint.

        Failed trials teach samplers nothing, so a region where training blows up would be
        proposed again and again; a violated constraint on a complete trial is what TPE, NSGA-II
        and the GP sampler learn from. Its values are placeholders, as an infeasible trial's.
        """
        record.write_diverged(trial, message, clock.total())
        pruning.set_divergence(trial, True)
        log.warning("trial %d diverged: %s", trial.number, message.splitlines()[0] if message else "")
        return self._placeholders(record.TrialRecord.running(trial).metrics)

    def _placeholders(self, measured: dict[str, float]) -> list[float]:
        """Objective values of a trial that trained nothing usable: its static costs, and what a
        network that learned nothing scores."""
        bundle = self.bundle
        untrained = pruning.untrained_scores(bundle.task, bundle.n_outputs, target_spread(bundle))
        return pruning.infeasible_values(self.config.objectives, measured, untrained)

    def _constrains_divergence(self, trial: optuna.Trial) -> bool:
        if self._divergence is None:
            complete = trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            self._divergence = record.constrains_divergence(complete)
            if not self._divergence:
                log.info("study %s has complete trials without the diverged constraint (made by an "
                         "older version): diverged trials stay failed", trial.study.study_name)
        return self._divergence

    def _on_epoch(self, trial: optuna.Trial, result: EpochResult, epochs: int,
                  recorder: predictions.Recorder | None, clock: Clock,
                  epoch_log: record.EpochLog) -> None:
        clock.epoch(result)
        if recorder is not None:
            with clock.timing("eval"):
                recorder.record(result)
        # NaN (val_accuracy of a regression) is not valid JSON for the dashboard: leave it out.
        values = {k: v for k, v in result.to_dict().items() if math.isfinite(v)}
        with clock.timing("storage"):
            epoch_log.add(result.epoch, values)
        self.reporter.epoch_done(trial.number, result, epochs)
        with clock.timing("storage"):  # the pruners read the other trials from storage
            reason = self.prune(trial, result.epoch, epochs)
        if reason is not None:
            record.write_pruned(trial, reason, clock.total())
            raise optuna.TrialPruned(record.describe_pruning(reason))
        if self.config.deadline is not None and time.time() > self.config.deadline and result.epoch < epochs:
            raise DeadlineReached("the search's time ran out")


PROBE_STEPS = 5
# A trial's training and validation against its probed steps: the ratio assumed before any trial
# has trained, and the most that slow trials can make it. On 2 cores (MNIST, five networks from
# 3k to 390k parameters) a probed step took 0.77-1.10x a real one with its optimizer step, and
# validation adds a few percent.
START_RATIO, MAX_RATIO = 1.3, 3.0
# A candidate is skipped only when predicted to need this many times the time left: the prediction
# is rough (FLOPs do not tell a tiny network's per-step overhead), and a trial that overruns is
# stopped at the deadline anyway, so only clearly hopeless candidates are not started.
SKIP_MARGIN = 2.0
# A warm-start point is a head start, not a bet: one predicted to take more than this share of the
# time left is skipped (a mid-size network on a large data set can take most of a short budget).
PORTFOLIO_SHARE = 0.25


@dataclass
class Pace:
    """How long this process's trials take against what their probes predicted.

    A candidate's training time is predicted from its own training steps: `probe` times a few
    steps of the network on one batch, times the steps it will take. The probe leaves out the
    optimizer's step, the batches' indexing and each epoch's validation, so the prediction is
    scaled by what the trials trained so far took against their probes (START_RATIO before any).
    FLOPs alone mispredict by several times: a tiny network's steps are all per-call overhead
    (on 2 cores, 7 GFLOP/s for a 3k-parameter CNN against 110 for an 80k one).
    """

    probed: float = 0.0  # the trained trials' probed seconds (step x steps they trained)
    seconds: float = 0.0  # what their training and validation took

    @property
    def ratio(self) -> float:
        if self.probed <= 0:
            return START_RATIO
        return min(max(self.seconds / self.probed, 1.0), MAX_RATIO)

    def observe(self, probed: float, seconds: float) -> None:
        if probed > 0 and seconds > 0:
            self.probed += probed
            self.seconds += seconds

    def predict(self, probed: float) -> float:
        """Seconds a candidate whose probe says `probed` seconds will train and validate."""
        return probed * self.ratio

    @staticmethod
    def probe(model: nn.Module, bundle: DataBundle, batch_size: int, device: torch.device) -> float:
        """Seconds of a training step (forward and backward) of `model` on one batch, timed on a
        copy: the fastest of PROBE_STEPS (the first pays for allocation and kernel choice)."""
        probe = copy.deepcopy(model).to(device).train()
        x = bundle.normalize(bundle.x_train[:batch_size].to(device))
        times = []
        for _ in range(PROBE_STEPS):
            start = time.perf_counter()
            probe(x).float().sum().backward()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - start)
        return min(times) * batch_size / int(x.shape[0])


@dataclass
class Clock:
    """Where one trial's seconds go, by part (storage.record.TIME_PARTS), and its total so far.

    `fit` holds the training steps and validation, epoch by epoch while training runs (a pruned
    trial's record), then the whole fit and the evaluation after it; `seconds` what the runner
    times around it (storage, artifacts, static metrics, kept predictions).
    """

    seconds: dict[str, float] = field(default_factory=dict)
    fit: dict[str, float] = field(default_factory=dict)
    start: float = field(default_factory=time.perf_counter)
    # when the epoch under way began, and what the timed parts held then
    _mark: float | None = field(default=None, repr=False)
    _marked: float = field(default=0.0, repr=False)

    @contextlib.contextmanager
    def timing(self, part: str) -> Iterator[None]:
        begin = time.perf_counter()
        try:
            yield
        finally:
            self.add(part, time.perf_counter() - begin)

    def add(self, part: str, seconds: float) -> None:
        self.seconds[part] = self.seconds.get(part, 0.0) + seconds

    def epoch(self, result: EpochResult) -> None:
        """One epoch's training steps and validation, as fit timed them; the next one begins."""
        self.fit["train"] = self.fit.get("train", 0.0) + result.seconds - result.eval_seconds
        self.fit["eval"] = self.fit.get("eval", 0.0) + result.eval_seconds
        self.start_epoch()

    def start_epoch(self) -> None:
        self._mark, self._marked = time.perf_counter(), sum(self.seconds.values())

    def close_epoch(self) -> None:
        """Training stopped inside an epoch (a NaN loss, an error, the deadline): its steps so far
        count as training, less what the parts timed since it began (the last epoch's hook)."""
        if self._mark is None:
            return
        timed = sum(self.seconds.values()) - self._marked
        steps = time.perf_counter() - self._mark - timed
        self.fit["train"] = self.fit.get("train", 0.0) + max(steps, 0.0)
        self._mark = None

    def total(self) -> dict[str, float]:
        """Seconds per part, and `trial`: everything since the clock started."""
        parts = dict(self.seconds)
        for part, seconds in self.fit.items():
            parts[part] = parts.get(part, 0.0) + seconds
        return {**parts, "trial": time.perf_counter() - self.start}


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


def cut_trained(model: nn.Module, candidate: Candidate, bundle: DataBundle) -> tuple[nn.Module, Shrunk]:
    """Cut a trained gated network to its effective widths and measure the static costs of the cut.

    Static costs are those of the shrunk network (what export writes and what a user deploys);
    the gates at or below the threshold count as zero there.
    """
    if not isinstance(model, nn.Sequential):
        raise TypeError(f"a gated network is an nn.Sequential, but got {type(model).__name__}")
    threshold = candidate.arch.gate_threshold
    arch = candidate.arch.shrunk(effective_widths(model, threshold))
    small = cut(model, threshold)
    # static metrics measure one input on the CPU, on a copy so the trained model stays put
    values = metrics.static_metrics(copy.deepcopy(small).cpu(), bundle.input_shape,
                                    static_signature(Candidate(arch, candidate.train)))
    return small, Shrunk(arch, values)


@dataclass
class Built:
    """A candidate's untrained network, built from its seed, and its static costs."""

    model: nn.Module
    static: dict[str, float]
    seconds: float = 0.0  # what measuring the static costs took (0 when they were cached)


@dataclass
class Trained:
    """A trained network as a trial records it: shrunk when gated, measured on val and test.

    For a gated candidate, `model` is the cut network and `arch` its plain architecture.
    """

    model: nn.Module
    arch: ArchSpec
    trained: dict[str, float]  # validation metrics and train time (+ a gated cut's static costs)
    values: dict[str, float]  # every metric: the static costs, updated by `trained`
    test: Evaluation
    history: list[EpochResult]
    # seconds of the training steps (`train`), of every evaluation (`eval`: validation each epoch,
    # the test split once) and of a gated network's static costs after the cut (`metrics`)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def test_accuracy(self) -> float:
        return self.test.accuracy


def measure(candidate: Candidate, bundle: DataBundle) -> Built:
    """Seed, build the candidate's network for the data and measure its static costs."""
    seed_everything(candidate.train.seed)
    model = build(candidate.arch, bundle.input_shape, bundle.n_outputs)
    start = time.perf_counter()
    static = metrics.static_metrics(model, bundle.input_shape, static_signature(candidate))
    return Built(model, static, time.perf_counter() - start)


def eval_batch_for(built: Built, candidate: Candidate, device: torch.device) -> int:
    """The evaluation batch of a built candidate: from its activation memory per input (the
    `memory` static metric) and the device, never below its training batch (train.eval_batch)."""
    return eval_batch(built.static["memory"], device, candidate.train.batch_size)


def train_measured(built: Built, candidate: Candidate, bundle: DataBundle, device: torch.device,
                   runtime: accel.Runtime = accel.PLAIN, *,
                   on_epoch: Callable[[EpochResult], None] | None = None,
                   init_state: dict[str, torch.Tensor] | None = None,
                   eval_batch_size: int | None = None, deadline: float | None = None) -> Trained:
    """Train a built candidate as a trial does, then cut a gated network and evaluate it.

    The last epoch's validation is reused when the network is unchanged since (not gated), and
    the test split is evaluated once, on the final model. The training time leaves out
    `on_epoch` (a predictions recorder included). Evaluation batches: `eval_batch_for`.
    """
    model, train = built.model, candidate.train
    if init_state is not None:
        model.load_state_dict(init_state)
        # fit() first applies the spec's initializer, which would overwrite the starting weights
        train = replace(train, init="default")
    model.to(device)
    batch = eval_batch_size or eval_batch_for(built, candidate, device)
    history = fit(model, bundle, train, on_epoch=on_epoch, runtime=runtime, eval_batch_size=batch,
                  deadline=deadline)
    after = time.perf_counter()
    arch, trained, cut_seconds = candidate.arch, {}, 0.0
    if arch.gated:
        model, shrunk = cut_trained(model, candidate, bundle)
        arch, trained, cut_seconds = shrunk.arch, dict(shrunk.values), time.perf_counter() - after
    seen = prepared(bundle, candidate.train)  # normalized or not, as in training
    loss_fn = make_loss(candidate.train.loss, candidate.train.label_smoothing)
    last = history.last.val if history.epochs else None
    val = (last if last is not None and not arch.gated
           else evaluate(model, seen, bundle.x_val, bundle.y_val, loss_fn, runtime, batch))
    trained.update(trained_metrics(history, val))
    test = evaluate(model, seen, bundle.x_test, bundle.y_test, loss_fn, runtime, batch)
    seconds = {"train": history.step_seconds, "metrics": cut_seconds,
               "eval": history.eval_seconds + time.perf_counter() - after - cut_seconds}
    return Trained(model, arch, trained, {**built.static, **trained}, test, history.epochs, seconds)


def train_candidate(
    candidate: Candidate, dataset: str, data_dir: str | None = None, *,
    device: str = "cpu", init_state: dict[str, torch.Tensor] | None = None,
    on_epoch: Callable[[EpochResult], None] | None = None,
    acceleration: accel.AccelConfig | None = None,
) -> Trained:
    """Train `candidate` as a trial does (same seed, same data, same metrics), without a study.

    What `export --retrain`, `train` and `ablate` run. `acceleration` defaults to the options'
    defaults (`auto`: fp32 and eager on the CPU).
    """
    torch_device = torch.device(device)
    accel.setup(torch_device)
    bundle = on_device(load_dataset(dataset, data_dir), torch_device)
    runtime = accel.runtime_for(acceleration or accel.AccelConfig(), torch_device, candidate.arch.family)
    return train_measured(measure(candidate, bundle), candidate, bundle, torch_device, runtime,
                          on_epoch=on_epoch, init_state=init_state)


def target_spread(bundle: DataBundle) -> tuple[float, float]:
    """Mean squared and mean absolute deviation of the training targets from their mean (regression).

    In the target's units, as the mse and mae a trained regression reports.
    """
    if bundle.task != "regression":
        return (1.0, 1.0)
    y = bundle.to_target_units(bundle.y_train.float())
    deviation = y - y.mean(dim=0)
    return float((deviation ** 2).mean()), float(deviation.abs().mean())


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


def mark_failed(trial: optuna.Trial, reason: str, message: str, clock: Clock | None = None) -> None:
    """Record why a trial failed (`fail_reason`, `fail_message`), and where its time went, while it
    can still be written."""
    record.write_failure(trial, reason, message, None if clock is None else clock.total())
    log.warning("trial %d failed (%s): %s", trial.number, reason, message.splitlines()[0])


def static_signature(candidate: Candidate) -> str:
    """Key under which a candidate's static metrics are cached."""
    return repr(sorted(candidate.arch.to_dict().items()))
