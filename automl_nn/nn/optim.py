"""Optimizers and learning-rate schedules under the names of `vocab.OPTIMIZERS` / `vocab.SCHEDULES`.

Their capability flags (momentum only where the optimizer has it, gamma only for decaying schedules)
live in the vocabulary, so the search space knows them without torch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch.optim import lr_scheduler
from torch.optim.lr_scheduler import LRScheduler

from automl_nn.registry import Registry
from automl_nn.spec import TrainSpec

Params = Iterable[torch.nn.Parameter]


# Every optimizer takes `weight_decay` (L2 applied by the optimizer; decoupled for adamw).
MakeOptimizer = Callable[[Params, TrainSpec], torch.optim.Optimizer]


def _sgd(params: Params, s: TrainSpec) -> torch.optim.Optimizer:
    # torch refuses Nesterov without momentum; with momentum 0 it is plain SGD anyway.
    nesterov = s.nesterov and s.momentum > 0
    return torch.optim.SGD(params, lr=s.lr, momentum=s.momentum, nesterov=nesterov,
                           weight_decay=s.weight_decay)


OPTIMIZER_FACTORIES: Registry[MakeOptimizer] = Registry("optimizer")
OPTIMIZER_FACTORIES.add("adam", lambda p, s: torch.optim.Adam(p, lr=s.lr, weight_decay=s.weight_decay))
OPTIMIZER_FACTORIES.add("sgd", _sgd)
OPTIMIZER_FACTORIES.add("adamw", lambda p, s: torch.optim.AdamW(p, lr=s.lr, weight_decay=s.weight_decay))
OPTIMIZER_FACTORIES.add("adadelta",
                        lambda p, s: torch.optim.Adadelta(p, lr=s.lr, weight_decay=s.weight_decay))
OPTIMIZER_FACTORIES.add("rmsprop", lambda p, s: torch.optim.RMSprop(
    p, lr=s.lr, momentum=s.momentum, weight_decay=s.weight_decay))


def make_optimizer(params: Params, spec: TrainSpec) -> torch.optim.Optimizer:
    """The optimizer `spec.optimizer` over `params`."""
    return OPTIMIZER_FACTORIES.get(spec.optimizer, "train.optimizer")(params, spec)


# ---- learning-rate schedules ---------------------------------------------------------------------

MakeSchedule = Callable[[torch.optim.Optimizer, TrainSpec, int], LRScheduler | None]


def _onecycle(opt: torch.optim.Optimizer, s: TrainSpec, steps: int) -> LRScheduler:
    # cycle_momentum off: cycling would overwrite the searched momentum (and Adadelta has none).
    return lr_scheduler.OneCycleLR(opt, max_lr=s.lr, total_steps=max(1, s.epochs * steps),
                                               cycle_momentum=False)


# when each steps (per batch or per epoch) is `vocab.SCHEDULES[name].per_step`
SCHEDULE_FACTORIES: Registry[MakeSchedule] = Registry("schedule")
SCHEDULE_FACTORIES.add("none", lambda opt, s, steps: None)
SCHEDULE_FACTORIES.add("step", lambda opt, s, steps: lr_scheduler.StepLR(opt, s.lr_step, s.lr_gamma))
SCHEDULE_FACTORIES.add("exponential", lambda opt, s, steps: lr_scheduler.ExponentialLR(opt, s.lr_gamma))
SCHEDULE_FACTORIES.add("cosine", lambda opt, s, steps: lr_scheduler.CosineAnnealingLR(opt, max(1, s.epochs)))
SCHEDULE_FACTORIES.add("onecycle", _onecycle)


def make_schedule(optimizer: torch.optim.Optimizer, spec: TrainSpec,
                  steps_per_epoch: int) -> LRScheduler | None:
    """The schedule `spec.schedule` over `optimizer`, or None for a constant learning rate."""
    return SCHEDULE_FACTORIES.get(spec.schedule, "train.schedule")(optimizer, spec, steps_per_epoch)
