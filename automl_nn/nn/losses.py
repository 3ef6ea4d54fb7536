"""Training losses under the names of `vocab.LOSSES`: make_loss(name)(outputs, targets) -> scalar.

Targets are int64 class indices for classification and float tensors of shape (N, n_outputs) for
regression. Losses that compare outputs with a target vector (mse, mae, huber, fourth_power) read
class indices as one-hot vectors, as the atomic experiments and the MNIST parameters study do to
train classifiers with MSE.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.nn import functional as F

from automl_nn.registry import Registry
from automl_nn.vocab import LOSSES

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
LossFunction = Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]  # (outputs, targets, smoothing)


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
    # The MNIST parameters study's log-softmax head + nll_loss, applied here so the network (and its
    # export) stays independent of the loss. The value equals cross_entropy; both names are kept for
    # the studies that use them.
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
    # optimizer moves a weight, not even through weight decay. The atomic experiments' negative control.
    return torch.ones((), device=out.device, dtype=out.dtype).requires_grad_()


LOSS_FUNCTIONS: Registry[LossFunction] = Registry("loss")
LOSS_FUNCTIONS.add("cross_entropy", _cross_entropy, aliases=("ce",))
LOSS_FUNCTIONS.add("nll", _nll)
LOSS_FUNCTIONS.add("mse", _mse)
LOSS_FUNCTIONS.add("mae", _mae)
LOSS_FUNCTIONS.add("huber", _huber)
LOSS_FUNCTIONS.add("fourth_power", _fourth_power)
LOSS_FUNCTIONS.add("hinge", _hinge)
LOSS_FUNCTIONS.add("constant", _constant)


def make_loss(name: str, label_smoothing: float = 0.0) -> LossFn:
    """The loss `name` as a two-argument function, with `label_smoothing` where the loss takes it."""
    loss = LOSS_FUNCTIONS.get(name, "train.loss")
    smoothing = label_smoothing if LOSSES.get(name).smoothing else 0.0

    def fn(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return loss(outputs, targets, smoothing)

    return fn
