"""Optimizers and learning-rate schedules, each with capability flags that decide which of its
knobs a search samples (momentum only where the optimizer has it, gamma only for decaying schedules).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch.optim.lr_scheduler import LRScheduler

from automl_nn.registry import Registry
from automl_nn.spec import TrainSpec

Params = Iterable[torch.nn.Parameter]


@dataclass(frozen=True)
class OptimizerInfo:
    """How to make an optimizer from a TrainSpec, and which TrainSpec fields it uses.

    Every optimizer takes `weight_decay` (L2 applied by the optimizer; decoupled for adamw).
    """

    make: Callable[[Params, TrainSpec], torch.optim.Optimizer]
    has_momentum: bool
    has_nesterov: bool = False


def _sgd(params: Params, s: TrainSpec) -> torch.optim.Optimizer:
    # torch refuses Nesterov without momentum; with momentum 0 it is plain SGD anyway.
    nesterov = s.nesterov and s.momentum > 0
    return torch.optim.SGD(params, lr=s.lr, momentum=s.momentum, nesterov=nesterov,
                           weight_decay=s.weight_decay)


OPTIMIZERS: Registry[OptimizerInfo] = Registry("optimizer")
OPTIMIZERS.add("adam", OptimizerInfo(
    lambda p, s: torch.optim.Adam(p, lr=s.lr, weight_decay=s.weight_decay), False))
OPTIMIZERS.add("sgd", OptimizerInfo(_sgd, True, True))
OPTIMIZERS.add("adamw", OptimizerInfo(
    lambda p, s: torch.optim.AdamW(p, lr=s.lr, weight_decay=s.weight_decay), False))
OPTIMIZERS.add("adadelta", OptimizerInfo(
    lambda p, s: torch.optim.Adadelta(p, lr=s.lr, weight_decay=s.weight_decay), False))
OPTIMIZERS.add("rmsprop", OptimizerInfo(
    lambda p, s: torch.optim.RMSprop(p, lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay),
    True))


def make_optimizer(params: Params, spec: TrainSpec) -> torch.optim.Optimizer:
    """The optimizer `spec.optimizer` over `params`."""
    return OPTIMIZERS.get(spec.optimizer, "train.optimizer").make(params, spec)


# ---- learning-rate schedules ---------------------------------------------------------------------

MakeSchedule = Callable[[torch.optim.Optimizer, TrainSpec, int], LRScheduler | None]


@dataclass(frozen=True)
class ScheduleInfo:
    """How to make a schedule (given the steps per epoch) and when it steps.

    `per_step` schedules step after every batch, the others after every epoch.
    """

    make: MakeSchedule
    per_step: bool = False
    uses_gamma: bool = False
    uses_step: bool = False


def _onecycle(opt: torch.optim.Optimizer, s: TrainSpec, steps: int) -> LRScheduler:
    # cycle_momentum off: cycling would overwrite the searched momentum (and Adadelta has none).
    return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=s.lr, total_steps=max(1, s.epochs * steps),
                                               cycle_momentum=False)


SCHEDULES: Registry[ScheduleInfo] = Registry("schedule")
SCHEDULES.add("none", ScheduleInfo(lambda opt, s, steps: None))
SCHEDULES.add("step", ScheduleInfo(
    lambda opt, s, steps: torch.optim.lr_scheduler.StepLR(opt, s.lr_step, s.lr_gamma),
    uses_gamma=True, uses_step=True))
SCHEDULES.add("exponential", ScheduleInfo(
    lambda opt, s, steps: torch.optim.lr_scheduler.ExponentialLR(opt, s.lr_gamma), uses_gamma=True))
SCHEDULES.add("cosine", ScheduleInfo(
    lambda opt, s, steps: torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(1, s.epochs))))
SCHEDULES.add("onecycle", ScheduleInfo(_onecycle, per_step=True))


def make_schedule(optimizer: torch.optim.Optimizer, spec: TrainSpec,
                  steps_per_epoch: int) -> LRScheduler | None:
    """The schedule `spec.schedule` over `optimizer`, or None for a constant learning rate."""
    return SCHEDULES.get(spec.schedule, "train.schedule").make(optimizer, spec, steps_per_epoch)
