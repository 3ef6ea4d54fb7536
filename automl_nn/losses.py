"""Training losses: name -> function(outputs, targets) -> scalar tensor."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.nn import functional as F

from automl_nn.registry import Registry

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

LOSSES: Registry[LossFn] = Registry("loss")
LOSSES.add("cross_entropy", F.cross_entropy, aliases=("ce",))
