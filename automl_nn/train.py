"""fit() and evaluate(): a dense training loop over device-resident tensors.

Batches come from randperm + indexing (no DataLoader, no per-sample Python); normalization happens
per batch on the device; the loss is accumulated on the device and read once per epoch, so there is
no host sync inside an epoch.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from automl_nn.data import DataBundle
from automl_nn.errors import NonFiniteError
from automl_nn.losses import LOSSES
from automl_nn.optim import make_optimizer
from automl_nn.spec import TrainSpec

EVAL_BATCH = 2048  # large: evaluation holds no graph


@dataclass(frozen=True)
class EpochResult:
    """Validation metrics after one epoch of training."""

    epoch: int
    train_loss: float
    val_loss: float
    val_accuracy: float
    seconds: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass
class History:
    """Per-epoch results of one fit, plus the total training time in seconds."""

    epochs: list[EpochResult] = field(default_factory=list)
    train_seconds: float = 0.0

    @property
    def last(self) -> EpochResult:
        return self.epochs[-1]


@dataclass(frozen=True)
class Evaluation:
    """Loss, task metrics and per-sample predictions on one split.

    `scores` holds the split's metrics by objective name: accuracy, error and loss for
    classification; mse, mae, r2 and loss for regression (where `accuracy` is NaN).
    """

    loss: float
    accuracy: float
    predictions: torch.Tensor  # class per sample (int64), or values (N, k) for regression; CPU
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
) -> History:
    """Train `model` on `bundle` (already on the model's device) as `spec` says.

    `on_epoch` runs after each epoch's validation, e.g. to report progress or prune. A NaN or
    infinite training loss raises NonFiniteError.
    """
    loss_fn = LOSSES.get(spec.loss)
    optimizer = make_optimizer(model.parameters(), spec)
    generator = torch.Generator().manual_seed(spec.seed)
    history = History()
    start = time.perf_counter()
    for epoch in range(1, spec.epochs + 1):
        epoch_start = time.perf_counter()
        train_loss = _train_epoch(model, bundle, spec.batch_size, loss_fn, optimizer, generator)
        if not math.isfinite(train_loss):
            raise NonFiniteError(f"training loss became {train_loss} in epoch {epoch} "
                                 f"(lr={spec.lr:g}, optimizer={spec.optimizer})")
        val = evaluate(model, bundle, bundle.x_val, bundle.y_val, loss_fn)
        result = EpochResult(epoch, train_loss, val.loss, val.accuracy,
                             time.perf_counter() - epoch_start)
        history.epochs.append(result)
        if on_epoch is not None:
            on_epoch(result)
    history.train_seconds = time.perf_counter() - start
    return history


def _train_epoch(
    model: nn.Module, bundle: DataBundle, batch_size: int,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    optimizer: torch.optim.Optimizer, generator: torch.Generator,
) -> float:
    model.train()
    x, y = bundle.x_train, bundle.y_train
    n = x.shape[0]
    order = torch.randperm(n, generator=generator).to(x.device)
    total = torch.zeros((), device=x.device)
    for begin in range(0, n, batch_size):
        idx = order[begin:begin + batch_size]
        loss = loss_fn(model(bundle.normalize(x[idx])), y[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        total += loss.detach() * idx.numel()
    return float(total.item()) / n


def evaluate(
    model: nn.Module, bundle: DataBundle, x: torch.Tensor, y: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> Evaluation:
    """Loss, task metrics and predictions of `model` on (x, y), in large batches without grad."""
    regression = bundle.task == "regression"
    loss_fn = loss_fn or LOSSES.get("mse" if regression else "cross_entropy")
    model.eval()
    total = torch.zeros((), device=x.device)
    outputs = []
    with torch.no_grad():
        for begin in range(0, x.shape[0], EVAL_BATCH):
            out = model(bundle.normalize(x[begin:begin + EVAL_BATCH]))
            target = y[begin:begin + EVAL_BATCH]
            total += loss_fn(out, target) * target.shape[0]
            outputs.append(out.float())
    loss = float(total.item()) / x.shape[0]
    out = torch.cat(outputs)
    return _regression_eval(loss, out, y) if regression else _class_eval(loss, out, y)


def _class_eval(loss: float, out: torch.Tensor, y: torch.Tensor) -> Evaluation:
    confidence, predictions = out.softmax(dim=1).max(dim=1)
    accuracy = float((predictions == y).float().mean().item())
    scores = {"accuracy": accuracy, "error": 1.0 - accuracy, "loss": loss}
    return Evaluation(loss, accuracy, predictions.cpu(), confidence.cpu(), scores)


def _regression_eval(loss: float, out: torch.Tensor, y: torch.Tensor) -> Evaluation:
    """mse and mae over every output; r2 per output, averaged (as scikit-learn's r2_score)."""
    diff = out - y.float()
    residual = (diff ** 2).sum(dim=0)
    spread = ((y.float() - y.float().mean(dim=0)) ** 2).sum(dim=0).clamp_min(1e-12)
    scores = {"mse": float((diff ** 2).mean().item()), "mae": float(diff.abs().mean().item()),
              "r2": float((1.0 - residual / spread).mean().item()), "loss": loss}
    return Evaluation(loss, math.nan, out.cpu(), torch.empty(0), scores)
