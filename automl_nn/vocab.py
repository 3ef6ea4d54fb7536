"""The vocabulary: names and capability flags of every building block, without torch.

Layer families, activations, initializers, losses, optimizers, schedules and metrics are named
here, each with the flags that decide which knobs a search samples for it (kernel size only for a
convolutional family, momentum only for an optimizer that has it, ...). Config validation, the
search space, summaries, reports and the dashboard read only this module, so none of them imports
torch. The torch factories (`automl_nn.nn`) register under exactly these names; a test checks that
the two key sets are equal.
"""

from __future__ import annotations

from dataclasses import dataclass

from automl_nn.registry import Registry

Shape = tuple[int, ...]

# ---- layer families ------------------------------------------------------------------------------

_RANK_LAYOUT = {1: "(features)", 2: "(channels, length)", 3: "(channels, height, width)",
                4: "(channels, depth, height, width)"}


@dataclass(frozen=True)
class FamilyInfo:
    """A layer family: which sample ranks it accepts (after its adapter) and what it is."""

    convolutional: bool
    ranks: tuple[int, ...] | None  # ranks of one sample it applies to (3 = C,H,W); None = any
    description: str
    # spatial dimensions of its convolutions (0: none); 2 and 3 can run channels_last on CUDA
    conv_dims: int = 0

    def supports(self, input_shape: Shape) -> str | None:
        """None when the family applies to samples of `input_shape`, else the reason it does not."""
        if self.ranks is None or len(input_shape) in self.ranks:
            return None
        layouts = " or ".join(f"rank {r} {_RANK_LAYOUT[r]}" for r in self.ranks)
        return f"needs samples of {layouts}, but the data's samples have shape {tuple(input_shape)}"


FAMILIES: Registry[FamilyInfo] = Registry("family")
FAMILIES.add("linear", FamilyInfo(False, None, "fully connected layers"))
FAMILIES.add("conv1d", FamilyInfo(True, (1, 2, 3),
                                  "1-D convolutions (images read row by row), 1x1 conv head, global pool",
                                  conv_dims=1))
FAMILIES.add("conv2d", FamilyInfo(True, (3,), "2-D convolutions, 1x1 conv head, global pool",
                                  conv_dims=2))
FAMILIES.add("conv3d", FamilyInfo(True, (3, 4),
                                  "3-D convolutions (images get a depth axis of 1), 1x1 conv head, "
                                  "global pool", conv_dims=3))
FAMILIES.add("conv1d_linear", FamilyInfo(True, (1, 2, 3), "1-D convolutions, then a linear head",
                                         conv_dims=1))
FAMILIES.add("conv2d_linear", FamilyInfo(True, (3,), "2-D convolutions, then a linear head",
                                         conv_dims=2))
FAMILIES.add("conv3d_linear", FamilyInfo(True, (3, 4), "3-D convolutions, then a linear head",
                                         conv_dims=3))
FAMILIES.add("resnet", FamilyInfo(True, (3,), "ResNet BasicBlocks (residual, 2-D), global pool, linear head",
                                  conv_dims=2))


def excluded_families(names: list[str], input_shape: Shape) -> dict[str, str]:
    """Of `names`, the families that cannot apply to samples of `input_shape`, with the reason."""
    reasons = {name: FAMILIES.get(name).supports(input_shape) for name in names}
    return {name: reason for name, reason in reasons.items() if reason is not None}


POOLS = ("none", "max", "avg")
DROPOUT_PLACES = ("dense", "conv", "both")
WIDTH_MODES = ("uniform", "per_layer", "gated")

# ---- activations and initializers ----------------------------------------------------------------

ACTIVATIONS: Registry[str] = Registry("activation")  # name -> description
for _name, _text in (
    ("none", "no activation (a linear network)"), ("relu", "ReLU"), ("selu", "SELU"),
    ("sigmoid", "logistic sigmoid"), ("tanh", "tanh"), ("gelu", "GELU"),
    ("leaky_relu", "leaky ReLU (slope 0.01)"), ("elu", "ELU"), ("silu", "SiLU (swish)"),
    ("square", "x ** 2"), ("sin", "sin(x)"), ("sign", "sign(x): zero gradient"),
    # the same module as "none"; its own name because the activation studies compare it
    ("identity", "identity"),
):
    ACTIVATIONS.add(_name, _text)


@dataclass(frozen=True)
class InitializerInfo:
    """A weight initializer; `uses_std` says whether the `init_std` knob applies."""

    uses_std: bool = False


INITIALIZERS: Registry[InitializerInfo] = Registry("initializer")
for _name in ("default", "xavier_uniform", "xavier_normal", "kaiming_uniform", "kaiming_normal",
              "zeros", "ones"):
    INITIALIZERS.add(_name, InitializerInfo())
INITIALIZERS.add("normal", InitializerInfo(uses_std=True))

# ---- losses --------------------------------------------------------------------------------------

CLASSIFICATION = ("classification",)
BOTH = ("classification", "regression")


@dataclass(frozen=True)
class LossInfo:
    """A training loss: the tasks it applies to, and whether label smoothing applies."""

    tasks: tuple[str, ...]
    smoothing: bool
    description: str


LOSSES: Registry[LossInfo] = Registry("loss")
LOSSES.add("cross_entropy", LossInfo(CLASSIFICATION, True, "softmax cross-entropy"), aliases=("ce",))
LOSSES.add("nll", LossInfo(CLASSIFICATION, True, "negative log-likelihood of a log-softmax head"))
LOSSES.add("mse", LossInfo(BOTH, True, "mean squared error (one-hot targets for classes)"))
LOSSES.add("mae", LossInfo(BOTH, True, "mean absolute error (one-hot targets for classes)"))
LOSSES.add("huber", LossInfo(BOTH, True, "Huber loss, delta 1 (one-hot targets for classes)"))
LOSSES.add("fourth_power", LossInfo(BOTH, True, "mean fourth-power error (one-hot targets for classes)"))
LOSSES.add("hinge", LossInfo(CLASSIFICATION, False, "multi-class hinge (margin 1)"))
LOSSES.add("constant", LossInfo(BOTH, False, "constant 1: negative control, learns nothing"))

# ---- optimizers and schedules --------------------------------------------------------------------


@dataclass(frozen=True)
class OptimizerInfo:
    """Which TrainSpec knobs an optimizer uses (every one takes `weight_decay`)."""

    has_momentum: bool
    has_nesterov: bool = False


OPTIMIZERS: Registry[OptimizerInfo] = Registry("optimizer")
OPTIMIZERS.add("adam", OptimizerInfo(False))
OPTIMIZERS.add("sgd", OptimizerInfo(True, True))
OPTIMIZERS.add("adamw", OptimizerInfo(False))
OPTIMIZERS.add("adadelta", OptimizerInfo(False))
OPTIMIZERS.add("rmsprop", OptimizerInfo(True))


@dataclass(frozen=True)
class ScheduleInfo:
    """When a schedule steps (`per_step`: after every batch, else every epoch) and what it reads."""

    per_step: bool = False
    uses_gamma: bool = False
    uses_step: bool = False


SCHEDULES: Registry[ScheduleInfo] = Registry("schedule")
SCHEDULES.add("none", ScheduleInfo())
SCHEDULES.add("step", ScheduleInfo(uses_gamma=True, uses_step=True))
SCHEDULES.add("exponential", ScheduleInfo(uses_gamma=True))
SCHEDULES.add("cosine", ScheduleInfo())
SCHEDULES.add("onecycle", ScheduleInfo(per_step=True))

# ---- metrics (the objectives a study can optimize) -----------------------------------------------


@dataclass(frozen=True)
class MetricInfo:
    """A metric a study can optimize: its direction, unit, and whether it is known before training."""

    direction: str  # "maximize" or "minimize"
    unit: str
    static: bool
    description: str


METRICS: Registry[MetricInfo] = Registry("objective")
METRICS.add("accuracy", MetricInfo("maximize", "fraction", False, "validation accuracy"),
            aliases=("acc",))
METRICS.add("error", MetricInfo("minimize", "fraction", False, "validation error rate"))
METRICS.add("loss", MetricInfo("minimize", "nats", False, "validation loss"))
METRICS.add("params", MetricInfo("minimize", "count", True, "trainable parameters"))
METRICS.add("flops", MetricInfo("minimize", "FLOPs", True, "forward FLOPs for one input"))
METRICS.add("memory", MetricInfo("minimize", "bytes", True, "activation bytes for one input"))
METRICS.add("ops", MetricInfo("minimize", "count", True, "tensor operations in one forward pass"))
METRICS.add("latency", MetricInfo("minimize", "ms", True, "median forward time for one input"))
METRICS.add("mse", MetricInfo("minimize", "target units^2", False, "validation mean squared error"))
METRICS.add("mae", MetricInfo("minimize", "target units", False, "validation mean absolute error"))
METRICS.add("r2", MetricInfo("maximize", "fraction", False, "validation coefficient of determination"))
METRICS.add("train_time", MetricInfo("minimize", "s", False, "wall time of training"))

STATIC = tuple(name for name, info in METRICS.items() if info.static)  # known before training
# A regression's metrics, in target units, that each epoch's record keeps as `val_<name>` (a
# classification's accuracy is `val_accuracy`), so that they compare epoch by epoch.
REGRESSION_EPOCH_METRICS = ("mse", "mae", "r2")

# ---- runtime acceleration ------------------------------------------------------------------------

AMP_MODES = ("auto", "off", "bf16", "fp16")
CHANNELS_LAST_MODES = ("auto", "on", "off")
