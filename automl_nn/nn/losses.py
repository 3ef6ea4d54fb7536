"""Training losses: name -> Loss, called as loss(outputs, targets) -> scalar tensor.

Targets are int64 class indices for classification and float tensors of shape (N, n_outputs) for
regression. Losses that compare outputs with a target vector (mse, mae, huber, fourth_power) read
class indices as one-hot vectors, as seeds 002 and 004 do to train classifiers with MSE.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.nn import functional as F

from automl_nn.registry import Registry

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
CLASSIFICATION = ("classification",)
BOTH = ("classification", "regression")


@dataclass(frozen=True)
class Loss:
    """A training loss; `tasks` it applies to, and whether label smoothing applies (`smoothing`)."""

    fn: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]  # (outputs, targets, smoothing)
    tasks: tuple[str, ...]
    smoothing: bool
    description: str

    def __call__(self, outputs: torch.Tensor, targets: torch.Tensor,
                 label_smoothing: float = 0.0) -> torch.Tensor:
        return self.fn(outputs, targets, label_smoothing)


def target_vectors(outputs: torch.Tensor, targets: torch.Tensor, smoothing: float = 0.0) -> torch.Tensor:
    """Targets shaped like `outputs`: class indices become (smoothed) one-hot rows, floats pass."""
    if targets.is_floating_point():
        return targets.reshape(outputs.shape).to(outputs.dtype)
    n = outputs.shape[1]
    one_hot = F.one_hot(targets, n).to(outputs.dtype)
    return one_hot * (1.0 - smoothing) + smoothing / n if smoothing else one_hot


def _cross_entropy(out: torch.Tensor, y: torch.Tensor, smoothing: float) -> torch.Tensor:
    return F.cross_entropy(out, y, label_smoothing=smoothing)


def _nll(out: torch.Tensor, y: torch.Tensor, smoothing: float) -> torch.Tensor:
    # Seed 004's log-softmax head + nll_loss, applied here so the network (and its export) stays
    # independent of the loss. The value equals cross_entropy; both names are kept for the seeds.
    log_probs = F.log_softmax(out, dim=1)
    if smoothing:
        return -(target_vectors(out, y, smoothing) * log_probs).sum(dim=1).mean()
    return F.nll_loss(log_probs, y)


def _mse(out: torch.Tensor, y: torch.Tensor, smoothing: float) -> torch.Tensor:
    return F.mse_loss(out, target_vectors(out, y, smoothing))


def _mae(out: torch.Tensor, y: torch.Tensor, smoothing: float) -> torch.Tensor:
    return F.l1_loss(out, target_vectors(out, y, smoothing))


def _huber(out: torch.Tensor, y: torch.Tensor, smoothing: float) -> torch.Tensor:
    return F.huber_loss(out, target_vectors(out, y, smoothing))


def _fourth_power(out: torch.Tensor, y: torch.Tensor, smoothing: float) -> torch.Tensor:
    return ((out - target_vectors(out, y, smoothing)) ** 4).mean()


def _hinge(out: torch.Tensor, y: torch.Tensor, smoothing: float) -> torch.Tensor:
    return F.multi_margin_loss(out, y)


def _constant(out: torch.Tensor, y: torch.Tensor, smoothing: float) -> torch.Tensor:
    # A leaf of its own: backward runs, but no parameter gets a gradient (grad stays None), so no
    # optimizer moves a weight, not even through weight decay. Seed 002's negative control.
    return torch.ones((), device=out.device, dtype=out.dtype).requires_grad_()


LOSSES: Registry[Loss] = Registry("loss")
LOSSES.add("cross_entropy", Loss(_cross_entropy, CLASSIFICATION, True, "softmax cross-entropy"),
           aliases=("ce",))
LOSSES.add("nll", Loss(_nll, CLASSIFICATION, True, "negative log-likelihood of a log-softmax head"))
LOSSES.add("mse", Loss(_mse, BOTH, True, "mean squared error (one-hot targets for classes)"))
LOSSES.add("mae", Loss(_mae, BOTH, True, "mean absolute error (one-hot targets for classes)"))
LOSSES.add("huber", Loss(_huber, BOTH, True, "Huber loss, delta 1 (one-hot targets for classes)"))
LOSSES.add("fourth_power", Loss(_fourth_power, BOTH, True,
                                "mean fourth-power error (one-hot targets for classes)"))
LOSSES.add("hinge", Loss(_hinge, CLASSIFICATION, False, "multi-class hinge (margin 1)"))
LOSSES.add("constant", Loss(_constant, BOTH, False, "constant 1: negative control, learns nothing"))


def make_loss(name: str, label_smoothing: float = 0.0) -> LossFn:
    """The loss `name` as a two-argument function, with `label_smoothing` where the loss takes it."""
    loss = LOSSES.get(name, "train.loss")
    smoothing = label_smoothing if loss.smoothing else 0.0

    def fn(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return loss(outputs, targets, smoothing)

    return fn
