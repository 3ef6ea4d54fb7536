"""What a search assumes when the user says nothing: a space per modality, its warm start, its pruner.

Plain data (study-file mappings), no torch and no optuna. `config.with_defaults` picks a modality
from the data's shape and task, fills every space key the user left unset from that modality's
default space, and stores the result with the study when it is created (a stored study never
follows later changes to these tables). `space.fit_point` places the portfolio's points inside the
resolved space, and `study.open_study` enqueues them as the first trials of a new study.

The ranges are an expert's starting points for small networks trained on a CPU in minutes, for any
input size and channel count: nothing here is tuned to one data set. The vocabulary the seed
studies explore (sigmoid, no activation, convolutions that never downsample) stays available to
any study that asks for it; the defaults do not spend their budget there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from automl_nn.vocab import Shape

PLAIN = "plain"  # the vocabulary's own defaults, as before default spaces existed
AUTO = "auto"  # a modality chosen from the data
MODALITIES = ("image", "volume", "signal", "table")
DEFAULTS_MODES = (AUTO, PLAIN, *MODALITIES)
# A vector this short has no neighbourhood for a convolution to find: it is read as a table.
MIN_SIGNAL_LENGTH = 8


def modality(input_shape: Shape, *, tabular: bool = False) -> str:
    """The kind of data a sample of `input_shape` is: image (C,H,W), volume (C,D,H,W), signal
    ((C,L), or a vector of at least MIN_SIGNAL_LENGTH values) or table (a CSV file's rows, or a
    short vector)."""
    rank = len(input_shape)
    if rank == 3:
        return "image"
    if rank == 4:
        return "volume"
    if rank == 2 or (not tabular and math.prod(input_shape) >= MIN_SIGNAL_LENGTH):
        return "signal"
    return "table"


# ---- optimizers: each its own ranges -------------------------------------------------------------

# Peak learning rate (onecycle) or starting rate (cosine), log scale. Adaptive methods want ~1e-3;
# SGD with Nesterov momentum wants ~0.1.
LR_RANGES: dict[str, tuple[float, float]] = {
    "adamw": (1.0e-4, 1.0e-2), "adam": (1.0e-4, 1.0e-2), "rmsprop": (1.0e-4, 1.0e-2),
    "sgd": (1.0e-2, 0.3), "adadelta": (0.1, 2.0),
}
# AdamW decouples weight decay and torch scales it by the lr, so its useful values are ~100x those
# of the L2 term SGD and Adam add to the gradient (the same decay per step either way).
WEIGHT_DECAY_RANGES: dict[str, tuple[float, float]] = {
    "adamw": (1.0e-4, 0.1), "adam": (1.0e-6, 1.0e-3), "rmsprop": (1.0e-6, 1.0e-3),
    "sgd": (1.0e-5, 1.0e-3), "adadelta": (1.0e-6, 1.0e-3),
}


def _log_ranges(ranges: dict[str, tuple[float, float]]) -> dict[str, Any]:
    return {name: {"low": low, "high": high, "log": True} for name, (low, high) in ranges.items()}


# One range per optimizer: the space keeps the entries of the optimizers it offers, and a user's
# own `lr` or `weight_decay` replaces all of them.
_TRAINING: dict[str, Any] = {
    "optimizer": ["adamw", "sgd"],
    "momentum": 0.9,
    "nesterov": True,
    "lr": _log_ranges(LR_RANGES),
    "weight_decay": _log_ranges(WEIGHT_DECAY_RANGES),
    "schedule": ["onecycle", "cosine"],
    "label_smoothing": [0.0, 0.1],
}
# Every conv layer (residual block) downsamples: by 2-wide max pooling, or by a stride-2 conv when
# it does not pool. Never both, never neither.
_DOWNSAMPLE: dict[str, Any] = {"pool": ["max", "none"], "stride": {"none": 2, "max": 1, "avg": 1}}
_ACTIVATIONS = ["relu", "gelu", "silu"]

SPACES: dict[str, dict[str, Any]] = {
    "image": {
        # conv2d ends in a global-average-pool head (1x1 conv + pool), conv2d_linear in flatten +
        # linear, resnet in global average pool + linear
        "family": ["conv2d", "conv2d_linear", "resnet"],
        # stages, each halving the resolution; one stage of 4 channels (~100 params) is the cheap
        # end of an (accuracy, cost) front, 4 stages from 64 its accurate end
        "depth": {"low": 1, "high": 4},
        "width": {"low": 4, "high": 64, "log": True},  # channels of the first stage
        "width_growth": [1.0, 2.0],  # channels x2 per stage, as in VGG and ResNet
        "kernel_size": [3, 5],
        **_DOWNSAMPLE,
        "activation": _ACTIVATIONS,
        "batch_norm": [True, False],  # the first option is the one a baseline starts from
        **_TRAINING,
    },
    "volume": {
        "family": ["conv3d", "conv3d_linear"],
        "depth": {"low": 1, "high": 3},
        "width": {"low": 4, "high": 32, "log": True},
        "width_growth": [1.0, 2.0],
        "kernel_size": 3,
        **_DOWNSAMPLE,
        "activation": _ACTIVATIONS,
        "batch_norm": [True, False],
        **_TRAINING,
    },
    "signal": {
        "family": ["conv1d", "conv1d_linear", "linear"],
        "depth": {"low": 1, "high": 4},
        "width": {"low": 4, "high": 128, "log": True},
        "width_growth": [1.0, 2.0],
        "kernel_size": [3, 5, 7],
        **_DOWNSAMPLE,
        "activation": _ACTIVATIONS,
        "batch_norm": [True, False],
        "dropout": [0.0, 0.1, 0.3],
        **_TRAINING,
    },
    "table": {
        "family": "linear",
        "depth": {"low": 1, "high": 3},
        "width": {"low": 16, "high": 512, "log": True},
        "activation": _ACTIVATIONS,
        "batch_norm": [True, False],
        "dropout": {"low": 0.0, "high": 0.5},
        **_TRAINING,
        "optimizer": "adamw",
    },
}
# A regression has no classes to smooth, and its loss is the error it is judged by.
REGRESSION: dict[str, Any] = {"loss": "mse", "label_smoothing": 0.0}

# Epochs: a trial sees about SAMPLES_PER_TRIAL training samples and takes at least MIN_STEPS
# optimizer steps at a batch of STEP_BATCH, within [MIN_EPOCHS, MAX_EPOCHS]. Large data sets get
# the minimum; small ones get more epochs, since a network needs a number of updates, not of
# passes, and their epochs are cheap (a 200-point function fit needs hundreds of epochs).
SAMPLES_PER_TRIAL = 20_000
MIN_STEPS, STEP_BATCH = 1_000, 64
MIN_EPOCHS, MAX_EPOCHS = 5, 200


def epochs_for(n_train: int) -> int:
    """Default epochs per trial for a training split of `n_train` samples."""
    samples = max(SAMPLES_PER_TRIAL, MIN_STEPS * STEP_BATCH)
    return max(MIN_EPOCHS, min(MAX_EPOCHS, math.ceil(samples / max(n_train, 1))))


def space_for(mode: str, task: str, n_train: int) -> dict[str, Any]:
    """The default space of modality `mode` as a study-file mapping (every key the user may override)."""
    raw = {**SPACES[mode], "epochs": epochs_for(n_train)}
    return {**raw, **REGRESSION} if task == "regression" else raw


# ---- the default pruner ---------------------------------------------------------------------------

PRUNER_STARTUP_TRIALS = 5
# onecycle (a default schedule) warms the learning rate up over its first 30% of steps: a trial is
# not judged before that, so candidates that start slowly are never cut after epoch 1.
WARMUP_FRACTION = 0.3
PRUNER_MARGIN = 0.01


def warmup_epochs(max_epochs: int) -> int:
    """Epochs the default pruner waits before it judges a trial (at least 1)."""
    return max(1, math.floor(WARMUP_FRACTION * max_epochs))


# ---- the warm-start portfolio -------------------------------------------------------------------


@dataclass(frozen=True)
class Point:
    """A known-good configuration: vocabulary values (keys the point leaves out are sampled)."""

    name: str
    values: dict[str, Any]


def _adamw(lr: float, decay: float, schedule: str = "onecycle") -> dict[str, Any]:
    return {"optimizer": "adamw", "lr": lr, "weight_decay": decay, "schedule": schedule}


def _sgd(lr: float, decay: float, schedule: str = "onecycle") -> dict[str, Any]:
    return {"optimizer": "sgd", "lr": lr, "weight_decay": decay, "schedule": schedule}


def _conv(family: str, depth: int, width: int, kernel: int = 3, pool: str = "max",
          activation: str = "relu", growth: float = 2.0) -> dict[str, Any]:
    return {"family": family, "depth": depth, "width": width, "width_growth": growth,
            "kernel_size": kernel, "pool": pool, "activation": activation, "batch_norm": True}


def _mlp(depth: int, width: int, dropout: float, batch_norm: bool = True,
         activation: str = "relu") -> dict[str, Any]:
    return {"family": "linear", "depth": depth, "width": width, "activation": activation,
            "batch_norm": batch_norm, "dropout": dropout}


# Tiny to mid-size, in that order: the first trials of a new study, so that its front has a shape
# (a cheap end and an accurate end) within a few trials. The image points with a global-average-
# pool head (conv2d) have the same weights whatever the image size; they take three stages, so
# that each feature the head averages has seen more than a stroke (with 3x3 kernels and 2x2
# pooling, a feature sees 10 pixels across after two stages, 22 after three).
PORTFOLIOS: dict[str, tuple[Point, ...]] = {
    "image": (
        Point("tiny-cnn", {**_conv("conv2d", 3, 12, growth=1.0), **_adamw(3e-3, 1e-2),
                           "label_smoothing": 0.0}),
        Point("small-cnn", {**_conv("conv2d", 3, 12), **_adamw(3e-3, 1e-2), "label_smoothing": 0.0}),
        Point("lenet-like", {**_conv("conv2d_linear", 2, 32, kernel=5), **_adamw(1e-3, 5e-2),
                             "label_smoothing": 0.1}),
        Point("small-resnet", {**_conv("resnet", 3, 16, pool="none"), **_sgd(0.1, 5e-4),
                               "label_smoothing": 0.1}),
        Point("mid-cnn", {**_conv("conv2d", 4, 32, activation="gelu"), **_adamw(2e-3, 5e-2, "cosine"),
                          "label_smoothing": 0.1}),
    ),
    "volume": (
        Point("tiny-cnn3d", {**_conv("conv3d", 2, 8), **_adamw(3e-3, 1e-2)}),
        Point("small-cnn3d", {**_conv("conv3d_linear", 3, 16), **_adamw(1e-3, 5e-2)}),
    ),
    "signal": (
        Point("tiny-mlp", {**_mlp(1, 32, 0.0, batch_norm=False), **_adamw(3e-3, 1e-2)}),
        Point("small-cnn1d", {**_conv("conv1d", 3, 16, kernel=5), **_adamw(3e-3, 1e-2)}),
        Point("mid-mlp", {**_mlp(2, 128, 0.1), **_adamw(1e-3, 5e-2)}),
        Point("mid-cnn1d", {**_conv("conv1d_linear", 4, 32, pool="none", activation="gelu"),
                            **_sgd(0.05, 5e-4, "cosine")}),
    ),
    "table": (
        Point("tiny-mlp", {**_mlp(1, 32, 0.0, batch_norm=False), **_adamw(3e-3, 1e-3)}),
        Point("small-mlp", {**_mlp(2, 128, 0.1), **_adamw(1e-3, 1e-2)}),
        Point("mid-mlp", {**_mlp(3, 256, 0.3, activation="silu"), **_adamw(1e-3, 5e-2, "cosine")}),
    ),
}
