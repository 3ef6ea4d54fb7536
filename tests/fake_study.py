"""A study shaped like a real search, made in milliseconds with ask/tell and no training.

Each trial carries what `trial.TrialRunner` stores, written through the same `storage.record`
writers: every metric, the candidate, the seed, per-epoch validation results and the test accuracy.
"""

from __future__ import annotations

import math
import random
import warnings

import optuna
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.storages import BaseStorage

from automl_nn.storage import record

FAMILIES = ["linear", "conv2d", "resnet"]
ACTIVATIONS = ["relu", "tanh", "selu"]
SPACE = {"family": FAMILIES, "depth": {"low": 1, "high": 3}, "activation": ACTIVATIONS,
         "lr": {"low": 1.0e-4, "high": 1.0e-1, "log": True}, "batch_size": [32, 64], "epochs": 3}
DISTRIBUTIONS = {
    "family": CategoricalDistribution(FAMILIES), "depth": IntDistribution(1, 3),
    "activation": CategoricalDistribution(ACTIVATIONS),
    "lr": FloatDistribution(1.0e-4, 1.0e-1, log=True), "batch_size": CategoricalDistribution([32, 64]),
}
EPOCHS = 3


INSIDE = {"lr": 3.0e-3, "depth": 2}  # near the middle of both ranges (lr on its log scale)


def make_study(storage: str | BaseStorage, name: str = "fake", n: int = 24, seed: int = 0,
               objectives: tuple[str, ...] = ("accuracy", "params"), *,
               inside: bool = False) -> optuna.Study:
    """`n` completed trials (plus one failed) of a study maximizing accuracy and minimizing costs.

    A third of the trials sit at the top edge of the lr range, so the best ones do (and `show`
    warns); `inside=True` gives every trial the lr and depth of INSIDE instead, so that no best
    trial sits at the edge of any range.
    """
    rng = random.Random(seed)
    directions = ["maximize" if o == "accuracy" else "minimize" for o in objectives]
    study = optuna.create_study(storage=storage, study_name=name, directions=directions,
                                sampler=optuna.samplers.RandomSampler(seed=seed))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(list(objectives))
    study.set_user_attr("config", {"dataset": "digits", "objectives": list(objectives), "space": SPACE})
    for number in range(n):
        if inside:
            study.enqueue_trial(INSIDE)
        elif number % 3 == 0:  # a third of the trials put the learning rate at the range's top edge
            study.enqueue_trial({"lr": 1.0e-1})
        trial = study.ask(DISTRIBUTIONS)
        metrics = _write(trial, rng, number)
        study.tell(trial, [metrics[o] for o in objectives])
    failed = study.ask(DISTRIBUTIONS)
    record.write_failure(failed, "nonfinite", "loss is nan")
    study.tell(failed, state=optuna.trial.TrialState.FAIL)
    return study


def _write(trial: optuna.Trial, rng: random.Random, number: int) -> dict[str, float]:
    """Store what a trained trial stores, through the trial record's writers; returns its metrics."""
    params = trial.params
    depth = int(params["depth"])  # type: ignore[call-overload]
    widths = [rng.choice([8, 16, 32, 64]) for _ in range(depth)]
    n_params = float(sum(64 * w + w for w in widths) * (3 if params["family"] == "resnet" else 1))
    edge_bonus = 0.06 if params["lr"] == 1.0e-1 else 0.0  # so the top-edge lr reaches the front
    accuracy = min(0.99, 0.5 + 0.045 * math.log(n_params) + edge_bonus + rng.uniform(-0.08, 0.08))
    candidate = {"arch": {"family": params["family"], "depth": depth, "widths": widths,
                          "activation": params["activation"], "kernel_size": 3},
                 "train": {"optimizer": "adam", "lr": params["lr"], "batch_size": params["batch_size"],
                           "epochs": EPOCHS, "loss": "cross_entropy"}}
    record.write_candidate(trial, candidate, number)
    static = {"params": n_params, "flops": 2 * n_params, "memory": 4.0 * (64 + sum(widths)),
              "ops": float(3 * depth + 2), "latency": 0.1 * depth}
    record.write_metrics(trial, static)
    for k in range(1, EPOCHS + 1):
        record.write_epoch(trial, k, {"epoch": k, "val_accuracy": accuracy * (0.7 + 0.1 * k),
                                      "val_loss": 2.0 / k, "seconds": 0.1})
    trained = {"accuracy": accuracy, "error": 1 - accuracy, "loss": 0.5,
               "train_time": 0.5 + 0.01 * n_params / 100}
    record.write_metrics(trial, {**trained, record.TEST_PREFIX + "accuracy": accuracy - 0.01})
    return {**static, **trained}
