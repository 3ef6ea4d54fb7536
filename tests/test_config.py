from dataclasses import replace
from pathlib import Path

import pytest

from automl_nn.config import UNTIL_DEADLINE, Choice, Fixed, Range, check_against_data, load_file, resolve
from automl_nn.data.catalog import load
from automl_nn.errors import ConfigError


def test_scalar_list_and_mapping_become_fixed_choice_range() -> None:
    config = resolve({"space": {"epochs": 3, "activation": ["relu", "tanh"],
                                "lr": {"low": 1e-3, "high": 1e-1, "log": True}}})
    assert config.space["epochs"] == Fixed(3)
    assert config.space["activation"] == Choice(("relu", "tanh"))
    assert config.space["lr"] == Range(1e-3, 1e-1, log=True)


def test_defaults_fill_missing_parameters() -> None:
    config = resolve({})
    assert config.dataset == "digits"
    assert config.objectives == ("accuracy", "params")
    assert isinstance(config.space["family"], Choice)


def test_cli_style_values() -> None:
    config = resolve({}, {"family": "linear,conv2d", "width": "8:64:log", "depth": "2",
                          "lr": "0.01", "objectives": "acc,params"})
    assert config.space["family"] == Choice(("linear", "conv2d"))
    assert config.space["width"] == Range(8, 64, log=True, integer=True)
    assert config.space["depth"] == Fixed(2)
    assert config.space["lr"] == Fixed(0.01)
    assert config.objectives == ("accuracy", "params")


def test_overrides_beat_the_file() -> None:
    config = resolve({"trials": 50, "space": {"epochs": 4}}, {"trials": 10, "epochs": "2"})
    assert config.trials == 10
    assert config.space["epochs"] == Fixed(2)


@pytest.mark.parametrize(("raw", "fragment"), [
    ({"spcae": {}}, 'spcae: unknown key "spcae". Did you mean "space"?'),
    ({"space": {"widht": 3}}, 'space.widht: unknown key "widht". Did you mean "width"?'),
    ({"space": {"lr": {"low": 1e-3, "high": 1e-1, "lgo": True}}}, "space.lr.lgo: unknown key"),
    ({"space": {"width": {"low": 64, "high": 8}}}, "low <= high, but got low=64, high=8"),
    ({"space": {"lr": {"low": 0, "high": 1, "log": True}}}, "space.lr.low: must be > 0"),
    ({"space": {"width": {"low": 0, "high": 4, "log": True}}}, "space.width.low: must be >= 1"),
    ({"space": {"depth": {"low": 1, "high": 4, "step": 0}}}, "space.depth.step: must be > 0"),
    ({"space": {"depth": {"low": 1, "high": 4, "step": 2}}}, "multiple of step"),
    ({"space": {"width": {"low": 8, "high": 64, "step": 8, "log": True}}}, "cannot be combined"),
    ({"space": {"activation": []}}, "at least one option"),
    ({"space": {"activation": ["relu", "sigmoidd"]}}, 'space.activation[1]: unknown activation "sigmoidd"'),
    ({"space": {"family": "conv4d"}}, 'unknown family "conv4d"'),
    ({"space": {"epochs": 0}}, "space.epochs: must be >= 1, but got 0"),
    ({"trials": 0}, "trials: must be at least 1, but got 0"),
    ({"objectives": ["acuracy"]}, 'unknown objective "acuracy". Did you mean "accuracy"?'),
    ({"objectives": ["accuracy", "acc"]}, "each objective may appear once"),
    ({"objectives": ["accuracy", "params", "flops", "memory", "ops"]}, "at most 4"),
    ({"dataset": "mnistt"}, 'unknown dataset "mnistt"'),
    ({"sampler": "tpee"}, 'Did you mean "tpe"'),
    ({"sampler": "grid", "space": {"lr": {"low": 0.01, "high": 0.1}}}, "grid sampler needs"),
    ({"space": {"batch_size": "many"}}, "space.batch_size: expected an integer"),
    ({"space": {"dropout": 1.0}}, "space.dropout: must be < 1, but got 1"),
    ({"space": {"label_smoothing": -0.1}}, "space.label_smoothing: must be >= 0"),
    ({"space": {"pool": "mean"}}, 'space.pool: unknown pool "mean"'),
    ({"space": {"width_mode": "per-layer"}}, 'Did you mean "per_layer"'),
    ({"space": {"init": "kaiming"}}, 'unknown init "kaiming"'),
    ({"space": {"schedule": "cosin"}}, 'Did you mean "cosine"'),
    ({"space": {"optimizer": ["adamw", "adagrad"]}}, 'space.optimizer[1]: unknown optimizer "adagrad"'),
    ({"space": {"normalize": "yes"}}, "space.normalize: expected true or false"),
    ({"space": {"lr_gamma": 1.5}}, "space.lr_gamma: must be <= 1"),
    ({"space": {"activation": "swish"}}, 'unknown activation "swish"'),
])
def test_bad_config_names_the_key_path(raw: dict[str, object], fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        resolve(raw)
    assert fragment in str(info.value)


def test_load_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_file(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("space: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_file(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("42\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_file(scalar)


def test_identity_hash_ignores_run_knobs_but_not_space() -> None:
    base = resolve({"trials": 10})
    assert base.identity_hash() == resolve({"trials": 30, "seed": 4}).identity_hash()
    assert base.identity_hash() != resolve({"space": {"epochs": 9}}).identity_hash()
    assert base.identity_hash() != resolve({"objectives": ["accuracy"]}).identity_hash()


def test_later_parameters_at_their_default_keep_old_study_identities() -> None:
    identity = resolve({}).identity()["space"]
    assert "dropout" not in identity and "schedule" not in identity
    assert set(identity) == {"family", "depth", "width", "kernel_size", "activation", "loss",
                             "optimizer", "momentum", "lr", "batch_size", "epochs"}
    assert resolve({"space": {"dropout": [0.0, 0.5]}}).identity()["space"]["dropout"] == [0.0, 0.5]
    assert resolve({}).identity_hash() != resolve({"space": {"schedule": "cosine"}}).identity_hash()


def test_bools_from_flags_and_files() -> None:
    config = resolve({"space": {"normalize": [True, False]}}, {"batch_norm": "true"})
    assert config.space["normalize"] == Choice((True, False))
    assert config.space["batch_norm"] == Fixed(True)


def test_losses_and_families_that_cannot_apply_to_the_data() -> None:
    bundle = load("digits")
    regression = replace(bundle, task="regression")
    with pytest.raises(ConfigError, match="space.loss: hinge needs a classification task"):
        check_against_data(resolve({"objectives": ["loss"], "space": {"loss": ["mse", "hinge"]}}),
                           regression)
    check_against_data(resolve({"objectives": ["loss"], "space": {"loss": ["mse", "huber"]}}),
                       regression)
    vectors = replace(bundle, input_shape=(64,))
    with pytest.raises(ConfigError, match="no requested family applies"):
        check_against_data(resolve({"space": {"family": ["conv2d", "resnet", "conv3d"]}}), vectors)
    check_against_data(resolve({"space": {"family": ["conv2d", "conv1d"]}}), vectors)



def test_a_lone_timeout_means_until_the_deadline_and_an_explicit_trial_count_wins() -> None:
    assert resolve({"timeout": 120}).trials == UNTIL_DEADLINE
    assert resolve({"timeout": 120, "trials": 7}).trials == 7
    assert resolve({}, {"timeout": 60, "trials": 3}).trials == 3
    assert resolve({}).trials == 20 and resolve({}).deadline is None


def test_a_search_until_its_deadline_gets_a_bounded_failure_budget() -> None:
    assert resolve({"timeout": 60}).failure_budget() == 100
    assert resolve({"trials": 50}).failure_budget() == 50 and resolve({}).failure_budget() == 20
