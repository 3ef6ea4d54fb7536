"""StudyConfig: a study file (YAML) plus CLI flags, validated once into frozen dataclasses.

In a study file's `space`, a scalar is fixed, a list is a choice and a mapping
`{low, high, log, step}` is a range. Unknown keys, unknown names and bad ranges are rejected with
their key path (`space.width.low`), before anything touches storage.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from automl_nn import defaults as dflt
from automl_nn import vocab
from automl_nn.data import catalog as data
from automl_nn.data import files
from automl_nn.errors import ConfigError, one_of, unknown_name
from automl_nn.registry import Registry
from automl_nn.spec import AccelConfig

Value = bool | int | float | str


@dataclass(frozen=True)
class Fixed:
    """A parameter that is not searched."""

    value: Value

    def describe(self) -> str:
        return f"fixed {self.value!r}"

    def to_raw(self) -> Any:
        return self.value


@dataclass(frozen=True)
class Choice:
    """A categorical parameter: one of `options`."""

    options: tuple[Value, ...]

    def describe(self) -> str:
        return "choice of " + ", ".join(repr(o) for o in self.options)

    def to_raw(self) -> Any:
        return list(self.options)


@dataclass(frozen=True)
class Range:
    """A numeric range; `integer` follows the parameter's type, `log` samples on a log scale."""

    low: float
    high: float
    log: bool = False
    step: float | None = None
    integer: bool = False

    def describe(self) -> str:
        kind = "int" if self.integer else "float"
        extra = " log" if self.log else (f" step {self.step:g}" if self.step else "")
        return f"{kind} range [{self.low:g}, {self.high:g}]{extra}"

    def to_raw(self) -> Any:
        num = int if self.integer else float
        raw: dict[str, Any] = {"low": num(self.low), "high": num(self.high)}
        if self.log:
            raw["log"] = True
        if self.step is not None:
            raw["step"] = num(self.step)
        return raw


Single = Fixed | Choice | Range


@dataclass(frozen=True)
class ByOption:
    """A parameter whose values depend on the option an earlier one took: `lr` per optimizer,
    `stride` per pool. Sampled as `{option}.{name}` (`adamw.lr`), so that each range keeps one
    name and one distribution across the trials of a study."""

    key: str  # the parameter whose option picks the values
    options: tuple[tuple[str, Single], ...]

    def get(self, option: str) -> Single:
        return dict(self.options)[option]

    def describe(self) -> str:
        return f"by {self.key}: " + "; ".join(f"{o}: {p.describe()}" for o, p in self.options)

    def to_raw(self) -> Any:
        return {option: param.to_raw() for option, param in self.options}


Param = Single | ByOption


@dataclass(frozen=True)
class Rule:
    """What a space parameter accepts: its type, valid names, lower bound, and when it applies."""

    kind: type
    default: Any
    names: Callable[[], list[str]] | None = None
    minimum: float | None = None
    exclusive_minimum: bool = False
    maximum: float | None = None
    exclusive_maximum: bool = False
    applies: Callable[[Mapping[str, Any]], bool] | None = None
    condition: str = ""
    help: str = ""
    # the earlier parameter by whose option a mapping `{option: values}` gives this one's values
    per: str | None = None


def _where(registry: Registry[Any], flag: str) -> str:
    """The names in `registry` whose entry has `flag` set, for "applies when" texts."""
    return ", ".join(name for name, entry in registry.items() if getattr(entry, flag))


def _conv_family(values: Mapping[str, Any]) -> bool:
    return bool(vocab.FAMILIES.get(str(values["family"])).convolutional)


def _conv_dropout(values: Mapping[str, Any]) -> bool:
    return _conv_family(values) and float(values["dropout"]) > 0


def _capability(registry: Registry[Any], key: str, flag: str) -> Callable[[Mapping[str, Any]], bool]:
    """An `applies` condition: the entry chosen for `key` has the capability `flag`."""
    def applies(values: Mapping[str, Any]) -> bool:
        return bool(getattr(registry.get(str(values[key])), flag))

    return applies


_has_momentum = _capability(vocab.OPTIMIZERS, "optimizer", "has_momentum")
_has_nesterov = _capability(vocab.OPTIMIZERS, "optimizer", "has_nesterov")
_smoothing_loss = _capability(vocab.LOSSES, "loss", "smoothing")
_init_uses_std = _capability(vocab.INITIALIZERS, "init", "uses_std")
_schedule_uses_gamma = _capability(vocab.SCHEDULES, "schedule", "uses_gamma")
_schedule_uses_step = _capability(vocab.SCHEDULES, "schedule", "uses_step")


def _gated(values: Mapping[str, Any]) -> bool:
    return values.get("width_mode") == "gated"


def _growing(values: Mapping[str, Any]) -> bool:
    return _conv_family(values) and values.get("width_mode", "uniform") == "uniform"


_CONV = f"family is convolutional ({_where(vocab.FAMILIES, 'convolutional')})"
_LOG = {"log": True}

# The search-space vocabulary, in sampling order. A rule's `applies` sees the values sampled before
# it; `condition` says the same in words for `automl-nn check`. space.py expands `width` into
# `layer{i}.width` (i = 1..depth) when width_mode is per_layer.
RULES: dict[str, Rule] = {
    # ---- architecture
    "family": Rule(str, ["linear", "conv2d", "conv2d_linear"], vocab.FAMILIES.names,
                   help="layer family"),
    "depth": Rule(int, {"low": 1, "high": 3}, minimum=0,
                  help="number of hidden layers (residual blocks for resnet); 0: the output layer only"),
    "width_mode": Rule(str, "uniform", lambda: list(vocab.WIDTH_MODES),
                       help="uniform: one width for all layers; per_layer: a layer{i}.width each; "
                            "gated: one starting width, shrunk during training by per-neuron gates "
                            "(linear family)"),
    "width": Rule(int, {"low": 8, "high": 128, **_LOG}, minimum=1,
                  help="units (linear) or channels (conv, resnet) per hidden layer "
                       "(gated: the starting width)"),
    "width_growth": Rule(float, 1.0, minimum=0.0, exclusive_minimum=True, applies=_growing,
                         condition=f"width_mode is uniform and {_CONV}",
                         help="channel factor from one conv layer (block) to the next: each of "
                              "them downsamples, so 2 doubles the channels per stage"),
    "gate_l1": Rule(float, 1.0e-4, minimum=0.0, applies=_gated, condition="width_mode is gated",
                    help="L1 strength on the gates: gate_l1 * sum|g| added to the loss"),
    "gate_lr": Rule(float, 0.1, minimum=0.0, exclusive_minimum=True, applies=_gated,
                    condition="width_mode is gated",
                    help="the gates' own learning rate (no weight decay on them), so that gates "
                         "starting at 1 can reach gate_threshold within a short run"),
    "gate_threshold": Rule(float, 0.01, minimum=0.0, applies=_gated, condition="width_mode is gated",
                           help="after training, neurons with |gate| <= this are cut out"),
    "kernel_size": Rule(int, 3, minimum=1, applies=_conv_family, condition=_CONV,
                        help="convolution kernel size (\"same\" padding)"),
    "pool": Rule(str, "none", lambda: list(vocab.POOLS), applies=_conv_family, condition=_CONV,
                 help="2-wide pooling after each conv layer or block: none, max, avg"),
    "stride": Rule(int, 1, minimum=1, applies=_conv_family, condition=_CONV, per="pool",
                   help="convolution stride of each conv layer or block (may be given per pool)"),
    "activation": Rule(str, ["relu", "selu", "tanh", "sigmoid", "none"], vocab.ACTIVATIONS.names,
                       help="activation after each hidden layer (inside each block for resnet)"),
    "batch_norm": Rule(bool, False, help="batch norm after each hidden layer, before its activation"),
    "dropout": Rule(float, 0.0, minimum=0.0, maximum=1.0, exclusive_maximum=True,
                    help="dropout rate (0 = none)"),
    "dropout_at": Rule(str, "dense", lambda: list(vocab.DROPOUT_PLACES), applies=_conv_dropout,
                       condition=f"dropout > 0 and {_CONV}",
                       help="dropout after dense layers, conv layers, or both (linear: dense)"),
    # ---- loss and regularizers
    "loss": Rule(str, "cross_entropy", vocab.LOSSES.names, help="training loss"),
    "label_smoothing": Rule(float, 0.0, minimum=0.0, maximum=1.0, exclusive_maximum=True,
                            applies=_smoothing_loss,
                            condition=f"loss takes label smoothing ({_where(vocab.LOSSES, 'smoothing')})",
                            help="label smoothing of class targets"),
    "l1": Rule(float, 0.0, minimum=0.0, help="L1 penalty strength: l1 * sum|w| added to the loss"),
    "l2": Rule(float, 0.0, minimum=0.0, help="L2 penalty strength: l2 * sum w^2 added to the loss"),
    "init": Rule(str, "default", vocab.INITIALIZERS.names, help="weight initializer"),
    "init_std": Rule(float, 0.01, minimum=0.0, exclusive_minimum=True, applies=_init_uses_std,
                     condition=f"init uses a std ({_where(vocab.INITIALIZERS, 'uses_std')})",
                     help="standard deviation of the normal initializer"),
    # ---- optimization
    "optimizer": Rule(str, ["adam", "sgd"], vocab.OPTIMIZERS.names, help="optimizer"),
    "momentum": Rule(float, 0.9, minimum=0.0, maximum=1.0, applies=_has_momentum,
                     condition=f"optimizer has momentum ({_where(vocab.OPTIMIZERS, 'has_momentum')})",
                     help="momentum"),
    "nesterov": Rule(bool, False, applies=_has_nesterov,
                     condition=f"optimizer has nesterov ({_where(vocab.OPTIMIZERS, 'has_nesterov')})",
                     help="Nesterov momentum (needs momentum > 0)"),
    "lr": Rule(float, {"low": 1e-4, "high": 1e-1, **_LOG}, minimum=0.0, exclusive_minimum=True,
               per="optimizer", help="learning rate (peak rate for onecycle); may be given per optimizer"),
    "weight_decay": Rule(float, 0.0, minimum=0.0, per="optimizer",
                         help="L2 as optimizer weight decay (decoupled for adamw); may be given per "
                              "optimizer"),
    "schedule": Rule(str, "none", vocab.SCHEDULES.names,
                     help="learning-rate schedule: per epoch (onecycle: per step)"),
    "lr_gamma": Rule(float, 0.8, minimum=0.0, exclusive_minimum=True, maximum=1.0,
                     applies=_schedule_uses_gamma,
                     condition=f"schedule decays by gamma ({_where(vocab.SCHEDULES, 'uses_gamma')})",
                     help="learning-rate factor per decay (0.8: the CIFAR-10 tricks study's ~20% per epoch)"),
    "lr_step": Rule(int, 2, minimum=1, applies=_schedule_uses_step,
                    condition=f"schedule decays in steps ({_where(vocab.SCHEDULES, 'uses_step')})",
                    help="epochs between decays"),
    "normalize": Rule(bool, True, help="standardize inputs with training-split statistics"),
    "batch_size": Rule(int, [32, 64, 128], minimum=1, help="training batch size"),
    "epochs": Rule(int, 5, minimum=1, help="training epochs per trial"),
    # ---- replication
    "repeat": Rule(int, 0, minimum=0,
                   help="replicate index: changes nothing but the trial (each trial trains with its "
                        "own seed); a grid over [0, 1, 2] trains every other combination 3 times"),
}
# The first vocabulary: always part of a study's identity. Parameters added later join it only when
# set away from their default, so that studies created before they existed still resume.
FIRST_VOCABULARY = ("family", "depth", "width", "kernel_size", "activation", "loss", "optimizer",
                    "momentum", "lr", "batch_size", "epochs")

SAMPLERS = ("tpe", "nsga2", "random", "qmc", "grid", "gp")
# Optuna's pruners (single objective) and our own multi-objective one (see pruning.py).
SINGLE_OBJECTIVE_PRUNERS = ("median", "percentile", "hyperband", "sha", "patient", "wilcoxon")
PRUNERS = ("none", *SINGLE_OBJECTIVE_PRUNERS, "pareto")
KEEP_WEIGHTS = ("pareto", "all", "none")  # which trials keep trained weights for export
# Hard limits on static costs, checked before training: config key -> metric it bounds.
CONSTRAINT_KEYS = {"max_params": "params", "max_flops": "flops", "max_memory": "memory"}
# Dataset options that also come as CLI flags (--target, --task, --oversample, --pca, --data-option).
DATA_FLAGS = ("target", "task", "oversample", "pca", "data_options")
# How trials run (automl_nn.accel): stored with the study so joining workers run alike, but not part
# of its identity, since they change speed, not what a trial means.
ACCEL_KEYS = ("amp", "channels_last", "compile")
# Keys of a study file besides `space`; each may also come from a CLI flag.
TOP_KEYS = ("dataset", "objectives", "trials", "max_failures", "timeout", "study_name", "storage",
            "sampler", "pruner", "seed", "data_dir", "keep_weights", "keep_predictions",
            "test_each_epoch", "constraints", *CONSTRAINT_KEYS, *ACCEL_KEYS, "defaults", "portfolio",
            "space")
PRUNER_KEYS = ("name", "startup_trials", "warmup_epochs", "margin")


# Failed trials (diverged ones included) a study may hold before its search stops, when
# max_failures is not set: as many as the trained trials it asks for, and never fewer than this.
MIN_FAILURE_BUDGET = 20
DEADLINE_FAILURE_BUDGET = 100  # the default for a search that runs until its --timeout

# `search --smoke`: the study's own code path on little data, to check a study file end to end fast.
# `trials` of a search given a timeout and no trial count: it runs until the deadline
UNTIL_DEADLINE = 10**9
SMOKE_TRIALS = 2
SMOKE_EPOCHS = 1
SMOKE_SAMPLES = 512  # training samples (validation and test get half as many each)
SMOKE_SUFFIX = "-smoke"  # smoke runs never touch the real study of the same name


@dataclass(frozen=True)
class PrunerConfig:
    """Warm-up and noise margin shared by every pruner.

    Pruning starts once `startup_trials` trials have completed and after `warmup_epochs` epochs of
    the trial at hand: early learning curves are noisy, and a pruner with nothing to compare
    against would guess. `margin` is the lead another trial needs before it prunes this one
    (absolute for fractions such as accuracy, relative for losses and times).
    """

    startup_trials: int = 5
    warmup_epochs: int = 0
    margin: float = 0.01


@dataclass(frozen=True)
class SpaceConfig:
    """Every vocabulary parameter, fixed, a choice or a range (missing ones take their defaults)."""

    params: tuple[tuple[str, Param], ...]

    def __getitem__(self, name: str) -> Param:
        return dict(self.params)[name]

    def items(self) -> tuple[tuple[str, Param], ...]:
        return self.params

    def to_raw(self) -> dict[str, Any]:
        return {name: param.to_raw() for name, param in self.params}

    def identity_raw(self) -> dict[str, Any]:
        """`to_raw` without later parameters left at their default (see FIRST_VOCABULARY)."""
        plain = default_space().to_raw()
        return {name: raw for name, raw in self.to_raw().items()
                if name in FIRST_VOCABULARY or raw != plain[name]}


@dataclass(frozen=True)
class StudyConfig:
    """A whole search request. `identity()` is what a resumed study must match."""

    dataset: str = "digits"
    objectives: tuple[str, ...] = ("accuracy", "params")
    trials: int = 20
    # failed trials the study may hold before the search stops (None: see failure_budget)
    max_failures: int | None = None
    timeout: float | None = None
    study_name: str = "automl-nn"
    storage: str | None = None
    sampler: str = "tpe"
    pruner: str = "none"
    seed: int | None = None
    data_dir: str | None = None
    keep_weights: str = "pareto"
    # predicted class of every validation sample after each epoch and of every test sample for the
    # final model, for `automl-nn analyze`
    keep_predictions: bool = True
    # also evaluate the test split after every epoch and keep those predictions (questions about
    # test attempts, as seed 000 asks); only trials that complete pay for it
    test_each_epoch: bool = False
    # metric -> upper limit (e.g. ("params", 1e5)); a candidate over one is never trained
    constraints: tuple[tuple[str, float], ...] = ()
    pruning: PrunerConfig = field(default_factory=PrunerConfig)
    # runtime acceleration (see automl_nn.accel); not part of the identity
    amp: str = "auto"
    channels_last: str = "auto"
    compile: bool = False
    # Which defaults fill the space keys the user left unset: auto (a modality chosen from the
    # data), plain (the vocabulary's own), or a modality by name. Settled to the modality's name
    # when the defaults are applied; not part of the identity (the resolved space is).
    defaults: str = dflt.AUTO
    portfolio: bool = True  # enqueue the modality's known-good points as a new study's first trials
    space: SpaceConfig = field(default_factory=lambda: parse_space({}))
    # The wall-clock time (time.time()) `timeout` ends at, counted from the command's start; set
    # by the command, never stored (a resumed search has a deadline of its own).
    deadline: float | None = field(default=None, compare=False)
    # Keys (top-level and space parameters) the user set; the others may follow the data's task.
    # Not part of equality: the same search is the same whichever way it was written.
    explicit: frozenset[str] = field(default=frozenset(), compare=False)

    def identity(self) -> dict[str, Any]:
        """The part of the config that defines the study: data, objectives, constraints and space.

        Constraints appear only when set, so studies made before they existed keep their hash.
        """
        identity: dict[str, Any] = {"dataset": self.dataset, "objectives": list(self.objectives),
                                    "space": self.space.identity_raw()}
        if self.constraints:
            identity["constraints"] = dict(self.constraints)
        return identity

    def accel(self) -> AccelConfig:
        """The acceleration options trials of this study run with."""
        return AccelConfig(self.amp, self.channels_last, self.compile)

    def failure_budget(self) -> int:
        """Failed trials the study may hold: `max_failures`, by default max(trials, 20)."""
        return failure_budget(self.trials, self.max_failures)

    def max_epochs(self) -> int:
        """The most epochs any trial of this space trains (a pruner's full budget)."""
        return max(int(v) for v in _values(self.space["epochs"]))

    def limits(self) -> dict[str, float]:
        """Constraint limits by metric name (params, flops, memory)."""
        return dict(self.constraints)

    def identity_hash(self) -> str:
        blob = json.dumps(self.identity(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def directions(self) -> list[str]:
        return [vocab.METRICS.get(name).direction for name in self.objectives]

    def to_raw(self) -> dict[str, Any]:
        skip = ("space", "constraints", *CONSTRAINT_KEYS)
        raw = {key: getattr(self, key) for key in TOP_KEYS if key not in skip}
        raw["objectives"] = list(self.objectives)
        if self.pruning != PrunerConfig():
            raw["pruner"] = {"name": self.pruner, **asdict(self.pruning)}
        raw["constraints"] = {key: self.limits()[metric] for key, metric in CONSTRAINT_KEYS.items()
                              if metric in self.limits()}
        raw["space"] = self.space.to_raw()
        return raw


def failure_budget(trials: int, max_failures: int | None) -> int:
    """Failed trials a study of `trials` may hold: `max_failures`, or max(trials, 20) unset.

    A search until its deadline has no trial count to scale with: it gets DEADLINE_FAILURE_BUDGET.
    """
    if max_failures is not None:
        return max_failures
    return DEADLINE_FAILURE_BUDGET if trials >= UNTIL_DEADLINE else max(trials, MIN_FAILURE_BUDGET)


def smoke(config: StudyConfig) -> StudyConfig:
    """The smoke version of a study: 2 trials of 1 epoch, no timeout, in its own `NAME-smoke` study."""
    params = tuple((name, Fixed(SMOKE_EPOCHS) if name == "epochs" else param)
                   for name, param in config.space.items())
    return replace(config, trials=SMOKE_TRIALS, timeout=None, space=SpaceConfig(params),
                   study_name=config.study_name + SMOKE_SUFFIX, explicit=config.explicit | {"epochs"})


# ---- parsing -------------------------------------------------------------------------------------


def load_file(path: str | Path) -> dict[str, Any]:
    """Read a study file into a plain mapping; missing files and bad YAML raise ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"study file {path}: no such file. Pass the path of a YAML study file, "
                          "e.g. studies/digits-quick.yaml.")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"study file {path}: not valid YAML ({exc}). Fix the syntax.") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(f"study file {path}: expected a mapping of keys "
                          f"({', '.join(TOP_KEYS)}), but got {type(raw).__name__}.")
    return raw


def resolve(raw: Mapping[str, Any], overrides: Mapping[str, Any] | None = None) -> StudyConfig:
    """Merge a study file's mapping with CLI overrides (None = not given) and validate it all."""
    merged = dict(raw)
    _reject_unknown(merged, TOP_KEYS, "")
    space_raw = dict(merged.pop("space", None) or {})
    if not isinstance(space_raw, dict):
        raise ConfigError(f"space: expected a mapping of parameter names, but got {space_raw!r}.")
    overrides = dict(overrides or {})
    data_flags = {key: overrides.pop(key, None) for key in DATA_FLAGS}
    for key, value in overrides.items():
        if value is None:
            continue
        if key in RULES:
            space_raw[key] = value
        else:
            merged[key] = value
    merged["dataset"] = _dataset(merged.get("dataset", StudyConfig.dataset), data_flags)
    explicit = frozenset(k for k, v in merged.items() if v is not None) | frozenset(space_raw)
    config = StudyConfig(space=parse_space(space_raw, complete=False), explicit=explicit,
                         **_parse_top(merged))
    if config.timeout is not None and "trials" not in explicit:
        config = replace(config, trials=UNTIL_DEADLINE)  # a lone timeout: search until it
    _check_grid(config)
    _check_pruner(config)
    _check_gated(config.space)
    return config


def param_flags(items: list[str], given: Mapping[str, Any] | None = None) -> dict[str, str]:
    """`--param KEY=VALUE` flags as space overrides, in the forms every space flag takes: a scalar,
    a choice `a,b` or a range `low:high[:log|:STEP]`. `given`: the other flags, none of which may
    set the same key."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = (part.strip() for part in item.partition("="))
        if not sep or not key or not value:
            raise ConfigError(f"--param: expected KEY=VALUE such as pool=max,none or "
                              f"width=16:64:log, but got {item!r}.")
        if key not in RULES:
            raise unknown_name("parameter", key, RULES, "--param")
        if key in out or (given or {}).get(key) is not None:
            raise ConfigError(f"--param {item}: {key} is given twice; give it once.")
        out[key] = value
    return out


def _check_gated(space: SpaceConfig) -> None:
    """Gates sit on dense hidden layers, which only the linear family has."""
    if "gated" not in _values(space["width_mode"]):
        return
    others = [str(f) for f in _values(space["family"]) if vocab.FAMILIES.get(str(f)).convolutional]
    if others:
        raise ConfigError(f"space.width_mode: gated shrinks dense hidden layers, which only the linear "
                          f"family has, but family may be {', '.join(others)}. Set family: linear, or "
                          "drop gated from width_mode.")


def _reject_unknown(mapping: Mapping[str, Any], allowed: tuple[str, ...] | list[str], where: str) -> None:
    for key in mapping:
        if key not in allowed:
            raise unknown_name("key", key, allowed, f"{where}.{key}" if where else str(key))


def _parse_top(raw: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "dataset" in raw:
        out["dataset"] = raw["dataset"]
    if "objectives" in raw:
        out["objectives"] = _objectives(raw["objectives"])
    if "trials" in raw:
        out["trials"] = _positive_int(raw["trials"], "trials")
    if raw.get("max_failures") is not None:
        out["max_failures"] = _positive_int(raw["max_failures"], "max_failures")
    if raw.get("timeout") is not None:
        out["timeout"] = _positive_number(raw["timeout"], "timeout")
    for key in ("study_name", "storage", "data_dir"):
        if raw.get(key) is not None:
            out[key] = _nonempty_str(raw[key], key)
    if "sampler" in raw:
        out["sampler"] = _one_of(raw["sampler"], SAMPLERS, "sampler")
    if raw.get("pruner") is not None:
        out["pruner"], out["pruning"] = _pruner(raw["pruner"])
    if raw.get("seed") is not None:
        out["seed"] = _int(raw["seed"], "seed")
    if "keep_weights" in raw:
        out["keep_weights"] = _one_of(raw["keep_weights"], KEEP_WEIGHTS, "keep_weights")
    for key in ("keep_predictions", "test_each_epoch"):
        if raw.get(key) is not None:
            out[key] = _bool(raw[key], key)
    if raw.get("defaults") is not None:
        out["defaults"] = _one_of(raw["defaults"], dflt.DEFAULTS_MODES, "defaults")
    if raw.get("portfolio") is not None:
        out["portfolio"] = _bool(raw["portfolio"], "portfolio")
    constraints = _constraints(raw)
    if constraints:
        out["constraints"] = constraints
    out.update(_accel(raw))
    return out


def _accel(raw: Mapping[str, Any]) -> dict[str, Any]:
    """amp, channels_last and compile. YAML reads a bare on/off as true/false: both are accepted
    for channels_last, `off` for amp (which has no plain "on": say bf16 or fp16)."""
    out: dict[str, Any] = {}
    if raw.get("amp") is not None:
        amp = "off" if raw["amp"] is False else raw["amp"]
        if amp is True:
            raise ConfigError("amp: expected auto, off, bf16 or fp16, but got true (YAML reads a bare "
                              "`on` as true). Write bf16 or fp16.")
        out["amp"] = _one_of(amp, vocab.AMP_MODES, "amp")
    if raw.get("channels_last") is not None:
        value = raw["channels_last"]
        mode = {True: "on", False: "off"}[value] if isinstance(value, bool) else value
        out["channels_last"] = _one_of(mode, vocab.CHANNELS_LAST_MODES, "channels_last")
    if raw.get("compile") is not None:
        out["compile"] = _bool(raw["compile"], "compile")
    return out


def _pruner(value: Any) -> tuple[str, PrunerConfig]:
    """`pruner: NAME`, or `pruner: {name: NAME, startup_trials: N, warmup_epochs: N, margin: X}`."""
    if not isinstance(value, dict):
        return _one_of(value, PRUNERS, "pruner"), PrunerConfig()
    _reject_unknown(value, PRUNER_KEYS, "pruner")
    if "name" not in value:
        raise ConfigError(f"pruner: a pruner mapping needs a name, one of {', '.join(PRUNERS)}, "
                          f"but got {value!r}.")
    defaults = PrunerConfig()
    margin = _number(value.get("margin", defaults.margin), "pruner.margin")
    if not 0.0 <= margin < 1.0:
        raise ConfigError(f"pruner.margin: must satisfy 0 <= margin < 1, but got {margin:g}.")
    settings = PrunerConfig(
        startup_trials=_nonnegative_int(value.get("startup_trials", defaults.startup_trials),
                                        "pruner.startup_trials"),
        warmup_epochs=_nonnegative_int(value.get("warmup_epochs", defaults.warmup_epochs),
                                       "pruner.warmup_epochs"),
        margin=margin,
    )
    return _one_of(value["name"], PRUNERS, "pruner.name"), settings


def _constraints(raw: Mapping[str, Any]) -> tuple[tuple[str, float], ...]:
    """Limits from `constraints: {max_params: ...}` and top-level `max_params: ...` (flags win)."""
    nested = raw.get("constraints") or {}
    if not isinstance(nested, dict):
        raise ConfigError(f"constraints: expected a mapping such as {{max_params: 100000}}, "
                          f"but got {nested!r}.")
    _reject_unknown(nested, list(CONSTRAINT_KEYS), "constraints")
    merged = {**nested, **{k: raw[k] for k in CONSTRAINT_KEYS if raw.get(k) is not None}}
    return tuple((CONSTRAINT_KEYS[key], _positive_number(merged[key], key))
                 for key in CONSTRAINT_KEYS if merged.get(key) is not None)


def _check_pruner(config: StudyConfig) -> None:
    """A pruner must fit the objectives: Optuna's need one objective, ours needs several."""
    if config.pruner == "none":
        return
    multi = len(config.objectives) > 1
    if config.pruner != "pareto" and multi:
        raise ConfigError(f"pruner: {config.pruner} prunes single-objective studies only, but this "
                          f"study has {len(config.objectives)} objectives "
                          f"({', '.join(config.objectives)}). Use --pruner pareto.")
    if config.pruner == "pareto" and not multi:
        raise ConfigError(f"pruner: pareto prunes multi-objective studies, but this study has one "
                          f"objective ({config.objectives[0]}). Use median, hyperband or another "
                          "single-objective pruner.")
    if all(vocab.METRICS.get(name).static for name in config.objectives):
        raise ConfigError(f"pruner: {config.pruner} needs an objective that changes during "
                          f"training (accuracy, error, loss, train_time), but "
                          f"{', '.join(config.objectives)} are known before training. "
                          "Use --pruner none.")


def _dataset(value: Any, flags: Mapping[str, Any]) -> str:
    """The canonical dataset spec string, with CLI dataset flags applied over the file's options."""
    extra = {k: v for k, v in flags.items() if k != "data_options" and v is not None}
    for item in flags.get("data_options") or ():
        key, sep, val = str(item).partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--data-option: expected KEY=VALUE, such as dim=12, but got {item!r}.")
        extra[key.strip()] = val.strip()
    return data.parse_spec(value, extra).to_string()


def _objectives(value: Any) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not items:
        raise ConfigError(f"objectives: expected 1 to 4 names such as accuracy,params, but got {value!r}.")
    names = tuple(vocab.METRICS.canonical(str(item).strip(), "objectives") for item in items)
    if len(names) > 4:
        raise ConfigError(f"objectives: at most 4 objectives are supported, but got {len(names)} "
                          f"({', '.join(names)}). Drop some or turn them into constraints.")
    if len(set(names)) != len(names):
        raise ConfigError(f"objectives: each objective may appear once, but got {', '.join(names)}.")
    return names


def _check_grid(config: StudyConfig) -> None:
    if config.sampler != "grid":
        return
    for name, param in config.space.items():
        parts = param.options if isinstance(param, ByOption) else (("", param),)
        for option, part in parts:
            if isinstance(part, Range) and (part.step is None and not part.integer):
                where = f"space.{name}" + (f".{option}" if option else "")
                raise ConfigError(f"{where}: the grid sampler needs every range to be enumerable, "
                                  f"but got a continuous {part.describe()}. Give it a step, or a "
                                  "list.")


# ---- scalar checks -------------------------------------------------------------------------------


def _int(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
        raise ConfigError(f"{where}: expected an integer, but got {value!r}.")
    return value


def _positive_int(value: Any, where: str) -> int:
    number = _int(value, where)
    if number < 1:
        raise ConfigError(f"{where}: must be at least 1, but got {number}.")
    return number


def _nonnegative_int(value: Any, where: str) -> int:
    number = _int(value, where)
    if number < 0:
        raise ConfigError(f"{where}: must be at least 0, but got {number}.")
    return number


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool):
        raise ConfigError(f"{where}: expected a number, but got {value!r}.")
    if isinstance(value, int | float):
        return float(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: expected a number, but got {value!r}.") from None


def _positive_number(value: Any, where: str) -> float:
    number = _number(value, where)
    if not number > 0 or not math.isfinite(number):
        raise ConfigError(f"{where}: must be a positive number, but got {value!r}.")
    return number


def _nonempty_str(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}: expected a non-empty string, but got {value!r}.")
    return value.strip()


def _bool(value: Any, where: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ConfigError(f"{where}: expected true or false, but got {value!r}.")


def _one_of(value: Any, valid: tuple[str, ...], where: str) -> str:
    return one_of(_nonempty_str(value, where), valid, where, kind=where.rpartition(".")[2])


# ---- the space -----------------------------------------------------------------------------------


def parse_space(raw: Mapping[str, Any], *, complete: bool = True) -> SpaceConfig:
    """Validate a `space` mapping; parameters it leaves out take the vocabulary's defaults.

    A parameter given per option of another (`lr: {adamw: ..., sgd: ...}`) keeps the entries of
    the options that other parameter offers, and becomes a plain parameter when they agree. Not
    `complete` (a user's space before the defaults fill it in): only where `raw` gives that other
    parameter too, since the defaults may still change its options.
    """
    _reject_unknown(raw, list(RULES), "space")
    params: dict[str, Param] = {}
    for name, rule in RULES.items():
        value = raw.get(name, rule.default)
        params[name] = parse_param(name, value, rule)
    for name, param in params.items():
        if isinstance(param, ByOption) and (complete or param.key in raw):
            params[name] = _narrowed(name, param, params[param.key])
    return SpaceConfig(tuple(params.items()))


@functools.cache
def default_space() -> SpaceConfig:
    """The space of an empty `space:` mapping: every parameter at its default."""
    return parse_space({})


_RANGE_KEYS = ("low", "high", "log", "step")


def parse_param(name: str, value: Any, rule: Rule, where: str | None = None) -> Param:
    """Fixed (scalar), Choice (list), Range (mapping) or, for a rule with `per`, ByOption (a
    mapping from the other parameter's options to any of the three), checked against `rule`."""
    where = where or f"space.{name}"
    if isinstance(value, dict) and rule.per is not None and not set(value) & set(_RANGE_KEYS):
        return _parse_by_option(name, value, rule, where)
    if isinstance(value, dict):
        return _parse_range(value, rule, where)
    if isinstance(value, list | tuple):
        if not value:
            raise ConfigError(f"{where}: a choice needs at least one option, but got an empty list.")
        options = tuple(_scalar(v, rule, f"{where}[{i}]") for i, v in enumerate(value))
        if len(set(options)) != len(options):
            raise ConfigError(f"{where}: choices must be distinct, but got {list(value)!r}.")
        return Fixed(options[0]) if len(options) == 1 else Choice(options)
    if isinstance(value, str) and "," in value:  # a CLI flag such as --activation relu,tanh
        return parse_param(name, [v.strip() for v in value.split(",")], rule, where)
    if isinstance(value, str) and ":" in value and rule.kind in (int, float):
        return _parse_range(_flag_range(value, where), rule, where)
    return Fixed(_scalar(value, rule, where))


def _parse_by_option(name: str, value: Mapping[str, Any], rule: Rule, where: str) -> ByOption:
    assert rule.per is not None
    per_rule = RULES[rule.per]
    valid = per_rule.names() if per_rule.names is not None else []
    single = replace(rule, per=None)
    options = []
    for option, raw in value.items():
        option = "none" if option is None else str(option)
        if option not in valid:
            raise unknown_name(rule.per, option, valid, where)
        param = parse_param(name, raw, single, f"{where}.{option}")
        assert not isinstance(param, ByOption)
        options.append((option, param))
    return ByOption(rule.per, tuple(options))


def _narrowed(name: str, param: ByOption, by: Param) -> Param:
    """`param` with the entries of the options `by` offers; a plain parameter when they agree."""
    offered = [str(v) for v in _values(by)]
    given = dict(param.options)
    missing = [o for o in offered if o not in given]
    if missing:
        raise ConfigError(f"space.{name}: gives values per {param.key} for {', '.join(given)}, but "
                          f"{param.key} may also be {', '.join(missing)}. Add an entry for "
                          f"{missing[0]}, or give one {name} for every {param.key}.")
    kept = tuple((o, given[o]) for o in offered)
    if len({p for _, p in kept}) == 1:
        return kept[0][1]
    return ByOption(param.key, kept)


def _scalar(value: Any, rule: Rule, where: str) -> Value:
    if rule.kind is str:
        # YAML reads `none` as a string but `null`/`~` as None; both mean "no such layer".
        name = "none" if value is None else _nonempty_str(value, where)
        if rule.names is not None:
            one_of(name, rule.names(), where, kind=re.sub(r"\[\d+\]$", "", where).rpartition(".")[2])
        return name
    if rule.kind is bool:
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"  # from a CLI flag
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, but got {value!r}.")
        return value
    number: Value = _int(value, where) if rule.kind is int else _number(value, where)
    _check_bounds(float(number), rule, where)
    return number


def _check_bounds(number: float, rule: Rule, where: str) -> None:
    if not math.isfinite(number):
        raise ConfigError(f"{where}: must be finite, but got {number!r}.")
    if rule.minimum is not None:
        too_low = number <= rule.minimum if rule.exclusive_minimum else number < rule.minimum
        if too_low:
            sign = ">" if rule.exclusive_minimum else ">="
            raise ConfigError(f"{where}: must be {sign} {rule.minimum:g}, but got {number:g}.")
    if rule.maximum is not None:
        too_high = number >= rule.maximum if rule.exclusive_maximum else number > rule.maximum
        if too_high:
            sign = "<" if rule.exclusive_maximum else "<="
            raise ConfigError(f"{where}: must be {sign} {rule.maximum:g}, but got {number:g}.")


def _flag_range(text: str, where: str) -> dict[str, Any]:
    """`low:high`, `low:high:log` or `low:high:STEP` from a CLI flag, as a study-file mapping."""
    parts = [p.strip() for p in text.split(":")]
    if len(parts) not in (2, 3) or not all(parts):
        raise ConfigError(f"{where}: expected low:high, low:high:log or low:high:step, "
                          f"but got {text!r}.")
    raw: dict[str, Any] = {"low": parts[0], "high": parts[1]}
    if len(parts) == 3:
        raw["log" if parts[2] == "log" else "step"] = True if parts[2] == "log" else parts[2]
    return raw


def _parse_range(raw: Mapping[str, Any], rule: Rule, where: str) -> Range:
    if rule.kind not in (int, float):
        raise ConfigError(f"{where}: a range {{low, high}} needs a numeric parameter; "
                          f"give a list of names instead, e.g. [a, b].")
    _reject_unknown(raw, ["low", "high", "log", "step"], where)
    for key in ("low", "high"):
        if key not in raw:
            raise ConfigError(f"{where}: a range needs both low and high, but {key} is missing.")
    low = float(_scalar(raw["low"], rule, f"{where}.low"))
    high = float(_scalar(raw["high"], rule, f"{where}.high"))
    log = raw.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(f"{where}.log: expected true or false, but got {log!r}.")
    if low > high:
        raise ConfigError(f"{where}: must satisfy low <= high, but got low={low:g}, high={high:g}.")
    if log and low <= 0:
        raise ConfigError(f"{where}: a log range needs low > 0, but got low={low:g}. "
                          "Raise low or drop log: true.")
    step = _parse_step(raw.get("step"), low, high, log, rule, where)
    return Range(low, high, log, step, integer=rule.kind is int)


def _parse_step(raw: Any, low: float, high: float, log: bool, rule: Rule, where: str) -> float | None:
    if raw is None:
        return None
    step = _int(raw, f"{where}.step") if rule.kind is int else _number(raw, f"{where}.step")
    if step <= 0:
        raise ConfigError(f"{where}.step: must be > 0, but got {step:g}.")
    if log:
        raise ConfigError(f"{where}: step and log cannot be combined; drop one of them.")
    span = (high - low) / step
    if abs(span - round(span)) > 1e-9:
        raise ConfigError(f"{where}: high - low must be a multiple of step, but got "
                          f"low={low:g}, high={high:g}, step={step:g}.")
    return float(step)


def _values(param: Param) -> list[Any]:
    if isinstance(param, Fixed):
        return [param.value]
    if isinstance(param, Choice):
        return list(param.options)
    if isinstance(param, ByOption):
        return [v for _, p in param.options for v in _values(p)]
    return [param.low, param.high]


@dataclass(frozen=True)
class DataFacts:
    """What the defaults read off the data: the shape of one sample, the task, the training split's
    size, and whether samples are the rows of a table (a CSV file)."""

    input_shape: tuple[int, ...]
    task: str
    n_train: int
    tabular: bool = False

    @classmethod
    def of(cls, bundle: data.DataBundle, dataset: str) -> DataFacts:
        return cls(tuple(bundle.input_shape), bundle.task, bundle.n_train, _is_table_file(dataset))

    def modality(self) -> str:
        return dflt.modality(self.input_shape, tabular=self.tabular)

    def describe(self) -> str:
        shape = "x".join(map(str, self.input_shape))
        return f"{self.task} on samples of shape {shape}, {self.n_train} training samples"


def _is_table_file(dataset: str) -> bool:
    return dataset.partition("?")[0].lower().endswith(".csv")


# The share of a data set that trains when its source fixes no test split (see data.prepare).
_TRAIN_SHARE = 0.6


def facts_for(config: StudyConfig) -> DataFacts:
    """DataFacts without making tensors (for `check`): a named dataset's catalog record, or the
    arrays of the user's file. The training split's size of a named dataset is estimated."""
    from automl_nn.data.prepare import settle_task

    spec = data.parse_spec(config.dataset)
    task = spec.get("task")
    if spec.is_file:
        target = spec.get("target")
        raw = files.load_file(Path(spec.name), None if target is None else str(target))
        shape: tuple[int, ...] = tuple(raw.x.shape[1:]) or (1,)
        task = settle_task(spec.name, raw, None if task is None else str(task))
        n_train = round(len(raw.x) * (1.0 if raw.x_test is not None else _TRAIN_SHARE))
    else:
        info = data.DATASETS.get(spec.name)
        shape, task = info.shape, task or info.task
        n_train = round(info.size * _TRAIN_SHARE)
    pca, size = _count(spec.get("pca")), _count(spec.get("train_size"))
    return DataFacts((pca,) if pca else shape, str(task), size or n_train,
                     spec.is_file and _is_table_file(spec.name))


def _count(value: object) -> int | None:
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def for_data(config: StudyConfig, bundle: data.DataBundle) -> StudyConfig:
    """`config` with its defaults settled from the data (`with_defaults`), then checked against it."""
    config = with_defaults(config, DataFacts.of(bundle, config.dataset))
    check_against_data(config, bundle)
    return config


def with_defaults(config: StudyConfig, facts: DataFacts) -> StudyConfig:
    """`config` with everything the user left unset settled from the data.

    - A regression turns the default objectives into (mse, params) and the default loss into mse.
    - `defaults`: auto picks the modality of the data (`defaults.modality`); every space key the
      user did not set comes from that modality's default space, key by key; plain keeps the
      vocabulary's own defaults (the seed studies' setting, every study's before default spaces
      existed, and what auto means for the grid sampler). Batch sizes that do not fit a small
      training split are left out.
    - Unless plain, a search with no pruner named gets the default one (`default_pruner`).

    What is settled here is stored with a new study; a resumed one keeps what it was created with
    (`study.resume_config`).
    """
    if facts.task == "regression" and "objectives" not in config.explicit:
        config = replace(config, objectives=("mse", "params"))
    mode = config.defaults
    if mode == dflt.AUTO:  # a grid enumerates the space the user wrote, and only that
        mode = dflt.PLAIN if config.sampler == "grid" else facts.modality()
    raw: dict[str, Any] = {}
    if mode != dflt.PLAIN:
        raw = dflt.space_for(mode, facts.task, facts.n_train)
    elif facts.task == "regression":
        raw["loss"] = "mse"
    raw["batch_size"] = default_batch_sizes(facts.n_train).to_raw()
    given = {name: param.to_raw() for name, param in config.space.items() if name in config.explicit}
    config = replace(config, defaults=mode, space=parse_space({**raw, **given}))
    if mode != dflt.PLAIN and "pruner" not in config.explicit:
        config = replace(config, **default_pruner(config))
    _check_grid(config)
    _check_gated(config.space)
    return config


def adopt_stored(config: StudyConfig, stored: Mapping[str, Any]) -> StudyConfig:
    """`config` with every space key and the pruner the user did not set taken from `stored`, the
    config a study was created with (`StudyConfig.to_raw`): a stored study keeps its space and
    pruner whatever the defaults of the version that resumes it."""
    given = {name: param.to_raw() for name, param in config.space.items() if name in config.explicit}
    changes: dict[str, Any] = {"space": parse_space({**dict(stored.get("space") or {}), **given}),
                               "defaults": stored.get("defaults", dflt.PLAIN)}
    if "pruner" not in config.explicit and stored.get("pruner") is not None:
        changes["pruner"], changes["pruning"] = _pruner(stored["pruner"])
    return replace(config, **changes)


def default_pruner(config: StudyConfig) -> dict[str, Any]:
    """The pruner of a search that names none: pareto for several objectives, median for one, each
    waiting `defaults.warmup_epochs` before it judges a trial; none when no objective is trained."""
    if all(vocab.METRICS.get(name).static for name in config.objectives):
        return {"pruner": "none", "pruning": PrunerConfig()}
    settings = PrunerConfig(startup_trials=dflt.PRUNER_STARTUP_TRIALS, margin=dflt.PRUNER_MARGIN,
                            warmup_epochs=dflt.warmup_epochs(config.max_epochs()))
    return {"pruner": "pareto" if len(config.objectives) > 1 else "median", "pruning": settings}


def default_batch_sizes(n_train: int) -> Fixed | Choice:
    """The default batch sizes that fit a training split of `n_train` samples.

    The rule's defaults where they fit; on a split smaller than all of them (the atomic experiments' 50-point
    function fits), one batch of the largest power of two that fits.
    """
    fitting = tuple(v for v in RULES["batch_size"].default if int(v) <= n_train)
    if len(fitting) > 1:
        return Choice(fitting)
    return Fixed(fitting[0] if fitting else 2 ** int(math.log2(max(n_train, 1))))


def _with_param(space: SpaceConfig, name: str, param: Param) -> SpaceConfig:
    return SpaceConfig(tuple((n, param if n == name else p) for n, p in space.items()))


def check_against_data(config: StudyConfig, bundle: data.DataBundle) -> None:
    """Checks that need the data: batch sizes that fit, and at least one family that applies."""
    too_big = [v for v in _values(config.space["batch_size"]) if int(v) > bundle.n_train]
    if too_big:
        raise ConfigError(f"space.batch_size: {too_big[0]} is larger than the training split of "
                          f"{bundle.name} ({bundle.n_train} samples). Use batch sizes <= "
                          f"{bundle.n_train}.")
    families = [str(f) for f in _values(config.space["family"])]
    excluded = {name: vocab.FAMILIES.get(name).supports(bundle.input_shape) for name in families}
    if all(excluded.values()):
        reasons = "; ".join(f"{name} {why}" for name, why in excluded.items())
        raise ConfigError(f"space.family: no requested family applies to {bundle.name} "
                          f"({reasons}). Add a family that fits, such as linear.")
    _check_losses(config, bundle)
    for metric in config.objectives:
        if metric in ("accuracy", "error") and bundle.task != "classification":
            raise ConfigError(f"objectives: {metric} needs a classification task, but "
                              f"{bundle.name} is a {bundle.task} task. Use mse, mae or r2.")
        if metric in ("mse", "mae", "r2") and bundle.task != "regression":
            raise ConfigError(f"objectives: {metric} needs a regression task, but {bundle.name} is "
                              f"a {bundle.task} task. Use accuracy, error or loss, or --task "
                              "regression.")


def _check_losses(config: StudyConfig, bundle: data.DataBundle) -> None:
    for name in (str(v) for v in _values(config.space["loss"])):
        tasks = vocab.LOSSES.get(name).tasks
        if bundle.task not in tasks:
            fits = [n for n, loss in vocab.LOSSES.items() if bundle.task in loss.tasks]
            raise ConfigError(f"space.loss: {name} needs a {' or '.join(tasks)} task, but "
                              f"{bundle.name} is a {bundle.task} task. Use one of {', '.join(fits)}.")
