"""fit() and evaluate(): a dense training loop over device-resident tensors.

Batches come from randperm + indexing (no DataLoader, no per-sample Python); normalization happens
per batch on the device; the loss is accumulated on the device and read once per epoch, so there is
no host sync inside an epoch. A `Runtime` (automl_nn.accel) adds autocast, channels_last and
torch.compile; losses and metrics are always computed in fp32.
"""

from __future__ import annotations

import functools
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.optim.lr_scheduler import LRScheduler

from automl_nn import metrics, vocab
from automl_nn.accel import PLAIN, Runtime
from automl_nn.data.catalog import DataBundle
from automl_nn.errors import DeadlineReached, NonFiniteError
from automl_nn.nn import gates, init_weights
from automl_nn.nn.losses import LossFn, make_loss
from automl_nn.nn.optim import make_optimizer, make_schedule
from automl_nn.spec import TrainSpec
from automl_nn.vocab import SCHEDULES

# Evaluation batches are sized from what the model holds per input (the `memory` static metric:
# the input plus every layer's output) and what the device has room for; see `eval_batch`.
MIN_EVAL_BATCH = 16
MAX_EVAL_BATCH = 4096  # past this, larger batches save no per-call overhead worth having
# `memory` sums every layer's output, but a forward pass without grad holds about two of them at
# a time. On the CPU a batch whose summed activations fill the last-level cache once is the
# fastest per sample of those measured, and never slower than the training batch: over the 10
# networks of a default MNIST search (AMD EPYC, 32 MiB L3, 2 threads, medians of 3 passes over
# 6,000 images), evaluation at 1x the cache took 0.89x the time per sample of the training batch
# (0.99x at worst), at 2x 0.91x (1.48x at worst) and at 4x 0.92x (2.72x at worst: larger
# tensors leave the cache, and past a few MB each allocation is fresh pages from the kernel).
# Earlier, on the 3-layer, 121-channel conv (2.3 MB per input, a loaded machine): 94 images/s at
# batch 32, 117 at 64, 110 at 128, 51 at 512.
CPU_CACHE_MULTIPLE = 1
CPU_RAM_SHARE = 8  # never more than 1/8 of the memory available when the cache is large
GPU_FREE_SHARE = 4  # a quarter of the free GPU memory: the rest for the allocator and the model
DEFAULT_CACHE_BYTES = 8 * 2**20  # when the CPU does not say


@dataclass(frozen=True)
class EpochResult:
    """Validation metrics after one epoch of training."""

    epoch: int
    train_loss: float
    val_loss: float
    val_accuracy: float
    seconds: float
    # The validation predictions behind val_accuracy, for hooks that keep them (`automl-nn analyze`);
    # left out of to_dict, which holds the plain numbers a trial stores as its `epoch{k}` attribute.
    val: Evaluation | None = field(default=None, repr=False, compare=False)
    eval_seconds: float = field(default=0.0, compare=False)  # the validation part of `seconds`

    def to_dict(self) -> dict[str, float]:
        """The stored epoch record; a regression's adds its validation metrics in target units
        (`val_mse`, ...), which its objectives and the Pareto pruner compare epoch by epoch."""
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in _NOT_STORED}
        if self.val is not None:
            values.update({f"val_{name}": self.val.scores[name]
                           for name in vocab.REGRESSION_EPOCH_METRICS if name in self.val.scores})
        return values


_NOT_STORED = ("val", "eval_seconds")


@dataclass
class History:
    """Per-epoch results of one fit, plus the total training time in seconds.

    `train_seconds` is the sum of the epochs' `seconds` (training and validation), leaving out the
    `on_epoch` hook, so it equals the per-epoch `train_time` the Pareto pruner compares. It splits
    into `step_seconds` (the optimization steps) and `eval_seconds` (the validation passes).
    """

    epochs: list[EpochResult] = field(default_factory=list)
    train_seconds: float = 0.0
    step_seconds: float = 0.0
    eval_seconds: float = 0.0

    @property
    def last(self) -> EpochResult:
        return self.epochs[-1]


@dataclass(frozen=True)
class Evaluation:
    """Loss, task metrics and per-sample predictions on one split.

    `scores` holds the split's metrics by objective name: accuracy, error and loss for
    classification; mse, mae, r2 and loss for regression (where `accuracy` is NaN). Regression
    metrics and predictions are in the target's own units; `loss` is in the standardized space the
    network trains in (see DataBundle).
    """

    loss: float
    accuracy: float
    predictions: torch.Tensor  # class per sample (int64), or values (N, k) in target units; CPU
    confidence: torch.Tensor  # top-class probability per sample (float32, CPU); empty for regression
    scores: dict[str, float] = field(default_factory=dict)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch so that model init and batch order repeat on CPU."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def fit(
    model: nn.Module,
    bundle: DataBundle,
    spec: TrainSpec,
    on_epoch: Callable[[EpochResult], None] | None = None,
    runtime: Runtime = PLAIN,
    eval_batch_size: int | None = None,
    deadline: float | None = None,
) -> History:
    """Train `model` on `bundle` (already on the model's device) as `spec` says.

    Applies the spec's weight initializer first. `on_epoch` runs after each epoch's validation,
    e.g. to report progress or prune. A NaN or infinite training loss raises NonFiniteError.
    `runtime` sets precision, memory layout and compilation; `model` itself is never replaced by a
    compiled wrapper, so it is what the caller saves and exports. Validation runs in batches of
    `eval_batch_size` (default: `eval_batch` for this model, device and training batch).
    A `deadline` (time.time()) that passes during an epoch raises DeadlineReached at the next step.
    """
    bundle = prepared(bundle, spec)
    if eval_batch_size is None:
        device = bundle.x_train.device
        eval_batch_size = eval_batch(per_input_bytes(model, bundle.input_shape, device), device,
                                     spec.batch_size)
    init_weights(model, spec.init, spec.init_std)
    runtime.prepare(model)
    loop = _make_loop(model, bundle, spec, runtime)
    net = runtime.compiled(model)
    generator = torch.Generator().manual_seed(spec.seed)
    history = History()
    for epoch in range(1, spec.epochs + 1):
        epoch_start = time.perf_counter()
        train_loss = _train_epoch(net, bundle, spec.batch_size, loop, generator, deadline)  # synchronized
        if not math.isfinite(train_loss):
            raise NonFiniteError(f"training loss became {train_loss} in epoch {epoch} "
                                 f"(lr={spec.lr:g}, optimizer={spec.optimizer})")
        if loop.epoch_schedule is not None:
            loop.epoch_schedule.step()
        eval_start = time.perf_counter()
        val = evaluate(net, bundle, bundle.x_val, bundle.y_val, loop.loss_fn, runtime, eval_batch_size)
        done = time.perf_counter()
        result = EpochResult(epoch, train_loss, val.loss, val.accuracy, done - epoch_start, val,
                             done - eval_start)
        history.epochs.append(result)
        # Training time is the epochs' own time (training + validation): what on_epoch does
        # (storage writes, progress, pruning, kept predictions) is the search's cost, not the model's.
        history.train_seconds += result.seconds
        history.step_seconds += eval_start - epoch_start
        history.eval_seconds += done - eval_start
        if on_epoch is not None:
            on_epoch(result)
    return history


def prepared(bundle: DataBundle, spec: TrainSpec) -> DataBundle:
    """The bundle as `spec` trains on it: without input normalization when `spec.normalize` is off.

    Evaluate a model trained by `fit` on this bundle, so that it sees inputs as it was trained.
    """
    if spec.normalize:
        return bundle
    # Neutral statistics keep DataBundle.normalize a plain float conversion (the CIFAR-10 tricks
    # study's "off").
    return replace(bundle, mean=torch.zeros_like(bundle.mean), std=torch.ones_like(bundle.std))


@dataclass
class _Loop:
    """What every optimization step needs, built once per fit."""

    loss_fn: LossFn
    optimizer: torch.optim.Optimizer
    penalty: Callable[[], torch.Tensor] | None
    step_schedule: LRScheduler | None  # stepped after every batch (onecycle)
    epoch_schedule: LRScheduler | None  # stepped after every epoch (step, exponential, cosine)
    runtime: Runtime = PLAIN
    scaler: torch.amp.GradScaler | None = None  # fp16 autocast: loss scaling
    gates: GateOptimizer | None = None  # the gates' own optimizer (TrainSpec.gate_lr)

    def step(self, objective: torch.Tensor) -> None:
        """Backward and optimizer steps, through the loss scaler under fp16."""
        optimizers = [self.optimizer] + ([self.gates.optimizer] if self.gates else [])
        for optimizer in optimizers:
            optimizer.zero_grad(set_to_none=True)
        if self.scaler is None:
            objective.backward()  # type: ignore[no-untyped-call]
            for optimizer in optimizers:
                optimizer.step()
        else:
            self.scaler.scale(objective).backward()  # type: ignore[no-untyped-call]
            for optimizer in optimizers:
                self.scaler.step(optimizer)
            self.scaler.update()
        if self.step_schedule is not None:
            self.step_schedule.step()
        if self.gates is not None:
            self.gates.schedule.step()


@dataclass
class GateOptimizer:
    """The gates' optimizer and its per-step schedule, apart from the network's."""

    optimizer: torch.optim.Optimizer
    schedule: LRScheduler


def gate_optimizer(model: nn.Module, spec: TrainSpec, total_steps: int) -> GateOptimizer | None:
    """An optimizer of the spec's kind for the model's gates alone; None without gates or gate_lr.

    Gates start at 1 and must reach the cut threshold (0.01 by default) within the run. With Adam
    a parameter moves about lr per step, so at the network's lr (1e-3) a gate needs ~1000 steps;
    gate_lr lets it get there in a few dozen. But a step that large also sets how closely a gate
    can settle at zero: Adam's momentum carries an L1-driven gate past zero and back, several
    steps' worth either side. So the gates' rate anneals from gate_lr to zero over the run
    (cosine, per step), whatever the network's schedule: large steps early, settled gates at the
    end. No weight decay: it would shrink every gate alike; only the L1 penalty decides which go.
    """
    params = [g.weight for g in gates(model)]
    if spec.gate_lr is None or not params:
        return None
    optimizer = make_optimizer(params, replace(spec, lr=spec.gate_lr, weight_decay=0.0))
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total_steps))
    return GateOptimizer(optimizer, schedule)


def _make_loop(model: nn.Module, bundle: DataBundle, spec: TrainSpec, runtime: Runtime = PLAIN) -> _Loop:
    steps = len(_batch_starts(bundle.n_train, spec.batch_size))
    gate_opt = gate_optimizer(model, spec, spec.epochs * steps)
    apart = {id(g.weight) for g in gates(model)} if gate_opt is not None else set()
    optimizer = make_optimizer([p for p in model.parameters() if id(p) not in apart], spec)
    schedule = make_schedule(optimizer, spec, steps)
    per_step = SCHEDULES.get(spec.schedule).per_step
    return _Loop(
        loss_fn=make_loss(spec.loss, spec.label_smoothing), optimizer=optimizer,
        penalty=_sum_penalties(weight_penalty(model, spec.l1, spec.l2),
                               gate_penalty(model, spec.gate_l1)),
        step_schedule=schedule if per_step else None,
        epoch_schedule=None if per_step else schedule,
        runtime=runtime, scaler=runtime.grad_scaler(), gates=gate_opt,
    )


def weight_penalty(model: nn.Module, l1: float, l2: float) -> Callable[[], torch.Tensor] | None:
    """l1 * sum|w| + l2 * sum w^2 over the weight matrices and kernels (not biases or norm scales).

    None when both strengths are zero. The penalty stays a device tensor: no host sync per step.
    """
    if not (l1 or l2):
        return None
    weights = [p for p in model.parameters() if p.requires_grad and p.dim() > 1]

    def penalty() -> torch.Tensor:
        total = torch.zeros((), device=weights[0].device)
        for w in weights:
            if l1:
                total = total + l1 * w.abs().sum()
            if l2:
                total = total + l2 * w.pow(2).sum()
        return total

    return penalty if weights else None


def gate_penalty(model: nn.Module, strength: float) -> Callable[[], torch.Tensor] | None:
    """strength * sum|g| over the model's Gate layers (the sparsifier study); None without gates.

    A device tensor like the weight penalty: no host sync per step.
    """
    weights = [g.weight for g in gates(model)]
    if not (strength and weights):
        return None

    def penalty() -> torch.Tensor:
        return strength * torch.stack([w.abs().sum() for w in weights]).sum()

    return penalty


def _sum_penalties(
    *penalties: Callable[[], torch.Tensor] | None,
) -> Callable[[], torch.Tensor] | None:
    """One penalty function adding the given ones (None when there are none)."""
    present = [p for p in penalties if p is not None]
    if len(present) <= 1:
        return present[0] if present else None
    return lambda: torch.stack([p() for p in present]).sum()


def _batch_starts(n: int, batch_size: int) -> list[int]:
    # A last batch of one sample is dropped when the batches are larger: batch norm cannot train on
    # it, and it carries no signal worth the step. With batch_size 1 every batch is one sample.
    return [b for b in range(0, n, batch_size)
            if min(batch_size, n - b) > 1 or batch_size == 1 or n == 1]


def _train_epoch(
    model: nn.Module, bundle: DataBundle, batch_size: int, loop: _Loop, generator: torch.Generator,
    deadline: float | None = None,
) -> float:
    model.train()
    x, y = bundle.x_train, bundle.y_train
    n = x.shape[0]
    order = torch.randperm(n, generator=generator).to(x.device)
    total = torch.zeros((), device=x.device)
    seen = 0
    for begin in _batch_starts(n, batch_size):
        if deadline is not None and time.time() > deadline:
            raise DeadlineReached("the search's time ran out during training")
        idx = order[begin:begin + batch_size]
        loss = loop.loss_fn(loop.runtime.forward(model, bundle.normalize(x[idx])), y[idx])
        objective = loss if loop.penalty is None else loss + loop.penalty()
        loop.step(objective)
        total += loss.detach() * idx.numel()
        seen += idx.numel()
    return float(total.item()) / max(seen, 1)


def evaluate(
    model: nn.Module, bundle: DataBundle, x: torch.Tensor, y: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
    runtime: Runtime = PLAIN, batch_size: int | None = None,
) -> Evaluation:
    """Loss, task metrics and predictions of `model` on (x, y), in batches without grad.

    The forward pass runs as `runtime` says (autocast, memory layout); loss and metrics in fp32.
    `batch_size` defaults to `eval_batch` for this model on x's device.
    """
    regression = bundle.task == "regression"
    loss_fn = loss_fn or make_loss("mse" if regression else "cross_entropy")
    if batch_size is None:
        batch_size = eval_batch(per_input_bytes(model, bundle.input_shape, x.device), x.device)
    model.eval()
    total = torch.zeros((), device=x.device)
    outputs = []
    with torch.no_grad():
        for begin in range(0, x.shape[0], batch_size):
            out = runtime.forward(model, bundle.normalize(x[begin:begin + batch_size]))
            target = y[begin:begin + batch_size]
            total += loss_fn(out, target) * target.shape[0]
            outputs.append(out)
    loss = float(total.item()) / x.shape[0]
    out = torch.cat(outputs)
    return _regression_eval(loss, out, y, bundle) if regression else _class_eval(loss, out, y)


def eval_batch(per_input: float, device: torch.device, floor: int = MIN_EVAL_BATCH) -> int:
    """The evaluation batch for a model holding `per_input` bytes of activations per input.

    As many inputs as the device's room for activations holds (`eval_memory_budget`), never
    fewer than `floor` (the training batch: training at that batch holds more, graph and
    gradients included, so evaluating at it is never slower per sample) nor more than
    MAX_EVAL_BATCH.
    """
    fits = int(eval_memory_budget(device) // max(per_input, 1.0))
    return max(floor, MIN_EVAL_BATCH, min(fits, MAX_EVAL_BATCH))


def eval_memory_budget(device: torch.device) -> float:
    """Bytes of activations an evaluation batch may hold on `device`.

    CUDA: a share of the free memory now. CPU: the last-level cache (see CPU_CACHE_MULTIPLE),
    and never more than a share of the memory available.
    """
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return free / GPU_FREE_SHARE
    return float(min(CPU_CACHE_MULTIPLE * cpu_cache_bytes(), _available_ram() / CPU_RAM_SHARE))


@functools.cache
def cpu_cache_bytes() -> int:
    """The largest data (or unified) CPU cache, from Linux's sysfs; DEFAULT_CACHE_BYTES elsewhere."""
    sizes = []
    for index in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            if (index / "type").read_text().strip() == "Instruction":
                continue
            sizes.append(_size_bytes((index / "size").read_text().strip()))
        except (OSError, ValueError):
            continue
    return max(sizes, default=DEFAULT_CACHE_BYTES)


def _size_bytes(text: str) -> int:
    """`32768K` / `32M` / `1024` (sysfs cache sizes) in bytes."""
    units = {"K": 2**10, "M": 2**20, "G": 2**30}
    if text and text[-1].upper() in units:
        return int(text[:-1]) * units[text[-1].upper()]
    return int(text)


def _available_ram() -> float:
    """Bytes of memory available to new allocations (MemAvailable), or 4 GiB when unknown."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return float(line.split()[1]) * 1024
    except OSError:
        pass
    return float(4 * 2**30)


def per_input_bytes(model: nn.Module, input_shape: tuple[int, ...], device: torch.device) -> float:
    """Activation bytes per input of `model` (the `memory` static metric), measured on `device`."""
    sample = torch.zeros((1, *input_shape), device=device)
    was_training = model.training
    model.eval()  # batch norm must not update its statistics on a zero input
    try:
        return float(metrics.activation_bytes(model, sample))
    finally:
        model.train(was_training)


def _class_eval(loss: float, out: torch.Tensor, y: torch.Tensor) -> Evaluation:
    confidence, predictions = out.softmax(dim=1).max(dim=1)
    accuracy = float((predictions == y).float().mean().item())
    scores = {"accuracy": accuracy, "error": 1.0 - accuracy, "loss": loss}
    return Evaluation(loss, accuracy, predictions.cpu(), confidence.cpu(), scores)


def _regression_eval(loss: float, out: torch.Tensor, y: torch.Tensor, bundle: DataBundle) -> Evaluation:
    """mse and mae over every output; r2 per output, averaged (as scikit-learn's r2_score).

    `out` and `y` are standardized; errors are scaled back by the training std (mse by std^2, mae
    by std), so mse and mae are in the target's units. r2 does not change with the scale.
    """
    diff = out - y.float()
    residual = (diff ** 2).sum(dim=0)
    spread = ((y.float() - y.float().mean(dim=0)) ** 2).sum(dim=0).clamp_min(1e-12)
    error = diff if bundle.target_std is None else diff * bundle.target_std
    scores = {"mse": float((error ** 2).mean().item()), "mae": float(error.abs().mean().item()),
              "r2": float((1.0 - residual / spread).mean().item()), "loss": loss}
    return Evaluation(loss, math.nan, bundle.to_target_units(out).cpu(), torch.empty(0), scores)
