import optuna
import pytest

from automl_nn.config import resolve
from automl_nn.errors import ConfigError
from automl_nn.space import grid, restrict_families, sample

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
