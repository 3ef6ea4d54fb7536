import optuna
import pytest

from automl_nn.config import resolve
from automl_nn.errors import ConfigError
from automl_nn.nn import build
from automl_nn.space import describe, grid, layer_name, restrict_families, sample, trial_names
from automl_nn.spec import Candidate

SPACE = resolve({"space": {
    "family": ["linear", "conv2d"], "depth": {"low": 1, "high": 3}, "width": {"low": 4, "high": 64},
    "activation": ["relu", "tanh"], "optimizer": ["adam", "sgd"],
    "lr": {"low": 1e-4, "high": 1e-1, "log": True}, "batch_size": [32, 64], "epochs": 2,
    "kernel_size": [3, 5], "momentum": {"low": 0.5, "high": 0.99},
}}).space


def test_fixed_trial_drives_sampling() -> None:
    trial = optuna.trial.FixedTrial({"family": "conv2d", "depth": 2, "width": 16, "kernel_size": 5,
                                     "activation": "tanh", "optimizer": "sgd", "momentum": 0.8,
                                     "lr": 0.01, "batch_size": 64})
    cand = sample(trial, SPACE, seed=7)
    assert cand.arch.family == "conv2d"
    assert cand.arch.widths == (16, 16)
    assert cand.arch.kernel_size == 5
    assert cand.train.momentum == 0.8
    assert cand.train.epochs == 2
    assert cand.train.seed == 7


def test_conditional_parameters_are_not_sampled_where_they_do_not_apply() -> None:
    study = optuna.create_study()
    values = {"family": "linear", "depth": 1, "width": 8, "activation": "relu",
              "optimizer": "adam", "lr": 0.001, "batch_size": 32}
    study.enqueue_trial(values)
    trial = study.ask()
    sample(trial, SPACE)
    assert "kernel_size" not in trial.params
    assert "momentum" not in trial.params
    assert set(trial.params) == set(values)


def test_excluded_families_are_never_offered() -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        trial = study.ask()
        cand = sample(trial, SPACE, excluded_families={"conv2d": "needs images"})
        assert cand.arch.family == "linear"
        study.tell(trial, 0.0)


def test_all_families_excluded_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="no requested family applies"):
        restrict_families(SPACE["family"], {"linear": "x", "conv2d": "y"})


def test_grid_enumerates_choices_and_integer_ranges() -> None:
    g = grid(resolve({"sampler": "grid", "space": {"depth": {"low": 1, "high": 3},
                                                   "lr": [0.1, 0.01]}}).space)
    assert g["depth"] == [1, 2, 3]
    assert g["lr"] == [0.1, 0.01]


VOCAB = resolve({"space": {
    "family": ["linear", "resnet"], "depth": {"low": 1, "high": 3}, "width_mode": ["uniform", "per_layer"],
    "width": {"low": 4, "high": 32}, "optimizer": ["sgd", "adam", "rmsprop"], "nesterov": [True, False],
    "init": ["default", "normal"], "init_std": {"low": 0.01, "high": 1.0, "log": True},
    "schedule": ["none", "step", "exponential", "onecycle"], "lr_gamma": {"low": 0.5, "high": 0.9},
    "lr_step": [1, 2], "dropout": [0.0, 0.5], "dropout_at": ["dense", "conv", "both"],
    "loss": ["cross_entropy", "hinge"], "label_smoothing": [0.0, 0.1], "batch_norm": [True, False],
    "normalize": [True, False], "pool": ["none", "max"], "stride": [1, 2],
}}).space


def _ask(values: dict[str, object]) -> tuple[set[str], Candidate]:
    """Sample with `values` enqueued; parameters they leave out are drawn at random."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.enqueue_trial(values)
    trial = study.ask()
    cand = sample(trial, VOCAB, seed=3)
    return set(trial.params), cand


def _params(values: dict[str, object]) -> set[str]:
    return _ask(values)[0]


def test_per_layer_widths_are_layer_indexed() -> None:
    _, cand = _ask({"family": "linear", "depth": 3, "width_mode": "per_layer",
                    "layer1.width": 4, "layer2.width": 16, "layer3.width": 8})
    assert cand.arch.widths == (4, 16, 8)
    assert layer_name(2, "width") == "layer2.width"
    assert trial_names("width", {"width_mode": "per_layer", "depth": 2}) == ["layer1.width",
                                                                            "layer2.width"]
    params = _params({"family": "linear", "depth": 2, "width_mode": "per_layer"})
    assert {"layer1.width", "layer2.width"} <= params and "width" not in params
    assert "layer3.width" not in params


def test_knobs_are_sampled_only_where_they_apply() -> None:
    plain = _params({"family": "linear", "optimizer": "adam", "init": "default", "schedule": "none",
                     "loss": "hinge", "dropout": 0.5, "width_mode": "uniform"})
    for knob in ("kernel_size", "stride", "pool", "momentum", "nesterov", "init_std", "lr_gamma",
                 "lr_step", "label_smoothing", "dropout_at"):
        assert knob not in plain, knob
    rich = _params({"family": "resnet", "optimizer": "sgd", "init": "normal", "schedule": "step",
                    "loss": "cross_entropy", "dropout": 0.5, "width_mode": "uniform"})
    assert {"stride", "pool", "nesterov", "init_std", "lr_gamma", "lr_step", "label_smoothing",
            "dropout_at"} <= rich
    rms = _params({"optimizer": "rmsprop", "schedule": "exponential", "family": "resnet", "dropout": 0.0})
    assert "lr_gamma" in rms and "lr_step" not in rms and "nesterov" not in rms
    assert "dropout_at" not in rms


def test_sampled_values_reach_the_candidate() -> None:
    _, cand = _ask({
        "family": "resnet", "depth": 2, "width_mode": "uniform", "width": 8, "stride": 2,
        "pool": "max", "batch_norm": True, "dropout": 0.5, "dropout_at": "conv",
        "loss": "cross_entropy", "label_smoothing": 0.1, "init": "normal", "init_std": 0.1,
        "optimizer": "sgd", "nesterov": True, "schedule": "step", "lr_gamma": 0.5, "lr_step": 1,
        "normalize": False})
    assert (cand.arch.stride, cand.arch.pool, cand.arch.batch_norm) == (2, "max", True)
    assert (cand.arch.dropout, cand.arch.dropout_at) == (0.5, "conv")
    train = cand.train
    assert (train.label_smoothing, train.init, train.init_std, train.nesterov) == (0.1, "normal", 0.1, True)
    assert (train.schedule, train.lr_gamma, train.lr_step, train.normalize) == ("step", 0.5, 1, False)
    assert Candidate.from_dict(cand.to_dict()) == cand


def test_random_sampling_over_the_whole_vocabulary_builds() -> None:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(30):
        trial = study.ask()
        cand = sample(trial, VOCAB)
        assert len(cand.arch.widths) == cand.arch.depth
        build(cand.arch, (1, 8, 8), 10)
        study.tell(trial, 0.0)


def test_grid_names_every_layer_width() -> None:
    g = grid(resolve({"sampler": "grid", "space": {"depth": [1, 2], "width_mode": "per_layer",
                                                   "width": [4, 8], "lr": 0.01}}).space)
    assert g["layer1.width"] == g["layer2.width"] == [4, 8]
    assert "layer3.width" not in g


def test_describe_says_what_depends_on_what() -> None:
    rows = {row["name"]: row for row in describe(VOCAB)}
    assert rows["momentum"]["applies"] == "when optimizer has momentum (sgd, rmsprop)"
    assert rows["nesterov"]["applies"] == "when optimizer has nesterov (sgd)"
    assert rows["init_std"]["applies"] == "when init uses a std (normal)"
    assert rows["lr_step"]["applies"] == "when schedule decays in steps (step)"
    assert rows["kernel_size"]["applies"].startswith("when family is convolutional (conv1d")
    assert rows["layer{i}.width"]["applies"].startswith("when width_mode is per_layer")
    assert rows["width"]["applies"] == "when width_mode is uniform"
    assert rows["lr"]["type"] == "float" and rows["lr"]["values"] == "float range [0.0001, 0.1] log"
    assert rows["normalize"]["type"] == "bool"


def test_a_grid_over_repeat_trains_each_point_that_many_times() -> None:
    space = resolve({"sampler": "grid", "space": {"family": "linear", "depth": 1, "width": 8,
                                                  "activation": ["relu", "tanh"], "repeat": [0, 1, 2],
                                                  "optimizer": "adam", "lr": 0.01, "batch_size": 32}}).space
    study = optuna.create_study(sampler=optuna.samplers.GridSampler(grid(space), seed=0))
    drawn = []

    def objective(trial: optuna.Trial) -> float:
        drawn.append((sample(trial, space, seed=trial.number), trial.params["repeat"]))
        return 0.0

    study.optimize(objective, n_trials=10)  # the grid sampler stops the study when it is exhausted
    assert sorted((c.arch.activation, r) for c, r in drawn) == [
        (a, r) for a in ("relu", "tanh") for r in (0, 1, 2)]
    relu = [c for c, _ in drawn if c.arch.activation == "relu"]
    assert all(c.arch == relu[0].arch for c in relu), "repeat changes nothing but the trial"
    assert len({c.train.seed for c, _ in drawn}) == 6
