"""Optimizers, each with capability flags that decide which of its knobs a search samples."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch

from automl_nn.registry import Registry
from automl_nn.spec import TrainSpec

Params = Iterable[torch.nn.Parameter]


@dataclass(frozen=True)
class OptimizerInfo:
    """How to make an optimizer from a TrainSpec, and which TrainSpec fields it uses."""

    make: Callable[[Params, TrainSpec], torch.optim.Optimizer]
    has_momentum: bool


OPTIMIZERS: Registry[OptimizerInfo] = Registry("optimizer")
OPTIMIZERS.add("adam", OptimizerInfo(lambda p, s: torch.optim.Adam(p, lr=s.lr), False))
OPTIMIZERS.add("sgd", OptimizerInfo(
    lambda p, s: torch.optim.SGD(p, lr=s.lr, momentum=s.momentum), True))


def make_optimizer(params: Params, spec: TrainSpec) -> torch.optim.Optimizer:
    """The optimizer `spec.optimizer` over `params`."""
    return OPTIMIZERS.get(spec.optimizer).make(params, spec)
