"""Training losses: name -> function(outputs, targets) -> scalar tensor."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.nn import functional as F

from automl_nn.registry import Registry

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

LOSSES: Registry[LossFn] = Registry("loss")
LOSSES.add("cross_entropy", F.cross_entropy, aliases=("ce",))


def mse(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean squared error: against float targets (regression) or one-hot class labels."""
    if not targets.is_floating_point():
        targets = F.one_hot(targets, outputs.shape[1]).to(outputs.dtype)
    return F.mse_loss(outputs, targets)


LOSSES.add("mse", mse)
