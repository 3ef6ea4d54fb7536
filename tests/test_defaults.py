"""Default spaces by modality, per-option ranges, the warm-start portfolio and the default pruners."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch
from typer.testing import CliRunner

from automl_nn import config as cfg
from automl_nn import defaults
from automl_nn.config import ByOption, Choice, DataFacts, Fixed, Range
from automl_nn.errors import ConfigError
from automl_nn.nn import build
from automl_nn.space import fit_point, portfolio, sample, to_candidate
from automl_nn.storage.recovery import no_experimental_warnings
from automl_nn.study import open_study, portfolio_points, resume_config
from automl_nn.vocab import FAMILIES, OPTIMIZERS
from tests.conftest import run

STUDIES = Path(__file__).parent.parent / "studies"
DIGITS = DataFacts((1, 8, 8), "classification", 1078)


def _settled(raw: dict[str, Any] | None = None, facts: DataFacts = DIGITS,
             overrides: dict[str, Any] | None = None) -> cfg.StudyConfig:
    return cfg.with_defaults(cfg.resolve(raw or {}, overrides), facts)


def _options(param: cfg.Param) -> tuple[Any, ...]:
    assert isinstance(param, Choice), param
    return param.options


# ---- which default space -------------------------------------------------------------------------

@pytest.mark.parametrize(("facts", "mode", "families"), [
    (DIGITS, "image", ("conv2d", "conv2d_linear", "resnet")),
    (DataFacts((3, 32, 32), "classification", 40000), "image", ("conv2d", "conv2d_linear", "resnet")),
    (DataFacts((1, 64, 64), "classification", 5000), "image", ("conv2d", "conv2d_linear", "resnet")),
    (DataFacts((2, 16, 16, 16), "classification", 800), "volume", ("conv3d", "conv3d_linear")),
    (DataFacts((2, 100), "classification", 3000), "signal", ("conv1d", "conv1d_linear", "linear")),
    (DataFacts((40,), "classification", 3000), "signal", ("conv1d", "conv1d_linear", "linear")),
    (DataFacts((40,), "classification", 3000, tabular=True), "table", ("linear",)),
    (DataFacts((2,), "classification", 600), "table", ("linear",)),
])
def test_the_default_space_follows_the_data(facts: DataFacts, mode: str, families: tuple[str, ...]) -> None:
    config = _settled(facts=facts)
    assert config.defaults == mode
    family = config.space["family"]
    assert (family.options if isinstance(family, Choice) else (family.to_raw(),)) == families
    assert config.space["loss"] == Fixed("cross_entropy")
    assert _options(config.space["label_smoothing"]) == (0.0, 0.1)
    assert _options(config.space["batch_norm"])[0] is True, "batch norm is a choice that defaults on"
    assert "sigmoid" not in _options(config.space["activation"])
    assert config.space["epochs"] == Fixed(defaults.epochs_for(facts.n_train))


def test_images_downsample_at_every_stage_by_pool_or_stride() -> None:
    space = _settled(facts=DataFacts((3, 32, 32), "classification", 40000)).space
    assert _options(space["pool"]) == ("max", "none")
    assert space["stride"] == ByOption("pool", (("max", Fixed(1)), ("none", Fixed(2))))
    assert _options(space["width_growth"]) == (1.0, 2.0)
    assert space["width"] == Range(4, 64, log=True, integer=True)
    values = {"family": "conv2d", "depth": 3, "width": 16, "width_growth": 2.0, "pool": "none",
              "stride": 2}
    assert to_candidate(values).arch.widths == (16, 32, 64)


def test_a_regression_gets_mse_and_no_label_smoothing() -> None:
    config = _settled(facts=DataFacts((1,), "regression", 120))
    assert config.defaults == "table" and config.objectives == ("mse", "params")
    assert config.space["loss"] == Fixed("mse") and config.space["label_smoothing"] == Fixed(0.0)
    assert config.space["batch_size"] == Choice((32, 64)), "batch sizes fit the training split"


def test_the_table_default_is_an_mlp_with_batch_norm_dropout_and_weight_decay() -> None:
    space = _settled(facts=DataFacts((9,), "classification", 500, tabular=True)).space
    assert space["family"] == Fixed("linear") and space["optimizer"] == Fixed("adamw")
    assert space["dropout"] == Range(0.0, 0.5)
    assert space["lr"] == Range(*defaults.LR_RANGES["adamw"], log=True), "one optimizer: plain lr"
    assert space["weight_decay"] == Range(*defaults.WEIGHT_DECAY_RANGES["adamw"], log=True)


def test_plain_and_grid_keep_the_vocabulary_defaults() -> None:
    assert _settled({"defaults": "plain"}).space == cfg.for_data(
        cfg.resolve({"defaults": "plain"}), _digits()).space
    for raw in ({"defaults": "plain"}, {"sampler": "grid", "space": {"depth": [1, 2], "lr": 0.01}}):
        config = _settled(raw)
        assert config.defaults == "plain" and config.pruner == "none"
        assert config.space["optimizer"] == Choice(("adam", "sgd"))


def test_every_optimizer_has_its_ranges() -> None:
    assert set(defaults.LR_RANGES) == set(defaults.WEIGHT_DECAY_RANGES) == set(OPTIMIZERS.names())


# ---- the user's space over the defaults ------------------------------------------------------------

def test_a_users_space_overrides_the_default_key_by_key() -> None:
    config = _settled({"space": {"width": {"low": 8, "high": 32}, "activation": "relu"}},
                      overrides={"kernel_size": "3", "family": "conv2d,resnet"})
    assert config.space["width"] == Range(8, 32, integer=True)
    assert config.space["activation"] == Fixed("relu")
    assert config.space["kernel_size"] == Fixed(3)
    assert config.space["family"] == Choice(("conv2d", "resnet"))
    image = _settled().space  # the rest is the image default
    for name in ("depth", "pool", "stride", "batch_norm", "optimizer", "lr", "schedule"):
        assert config.space[name] == image[name], name


def test_a_users_lr_replaces_every_per_optimizer_range() -> None:
    default = _settled().space["lr"]
    assert isinstance(default, ByOption) and [o for o, _ in default.options] == ["adamw", "sgd"]
    sgd = sample(optuna.trial.FixedTrial(_fixed({"optimizer": "sgd", "sgd.lr": 0.1})), _settled().space)
    assert sgd.train.lr == 0.1 and sgd.train.nesterov and sgd.train.optimizer == "sgd"

    space = _settled(overrides={"lr": "1e-3:1e-2:log"}).space
    assert space["lr"] == Range(1e-3, 1e-2, log=True)
    trial = optuna.create_study().ask()
    sample(trial, space)
    assert "lr" in trial.params and not any(name.endswith(".lr") for name in trial.params)
    # one optimizer left: its own range, under the plain name
    assert _settled(overrides={"optimizer": "sgd"}).space["lr"] == Range(0.01, 0.3, log=True)


def _fixed(values: dict[str, Any]) -> dict[str, Any]:
    """Every parameter the image default samples for a conv2d candidate, over `values`."""
    base = {"family": "conv2d", "depth": 2, "width": 16, "width_growth": 1.0, "kernel_size": 3,
            "pool": "max", "activation": "relu", "batch_norm": True, "label_smoothing": 0.0,
            "optimizer": "adamw", "adamw.lr": 1e-3, "adamw.weight_decay": 1e-2, "sgd.weight_decay": 1e-4,
            "schedule": "onecycle", "batch_size": 64}
    return {**base, **values}


@pytest.mark.parametrize(("space", "fragment"), [
    ({"optimizer": ["adamw", "adam"], "lr": {"adamw": 1e-3, "sgd": 0.1}}, "may also be adam"),
    ({"lr": {"adamx": 1e-3}}, 'space.lr: unknown optimizer "adamx". Did you mean'),
    ({"lr": {"adamw": {"low": 1e-3, "high": 1e-4}}}, "space.lr.adamw: must satisfy low <= high"),
    ({"lr": {"low": 1e-3, "hgh": 1e-2}}, 'space.lr.hgh: unknown key "hgh"'),
])
def test_per_option_values_are_checked(space: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _settled({"space": space})
    assert fragment in str(caught.value)


# ---- --param and check ---------------------------------------------------------------------------

def test_param_flags_take_the_three_forms() -> None:
    flags = cfg.param_flags(["pool=max,none", "stride=1,2", "width=8:128:log", "kernel_size=3",
                             "batch_norm=false", "depth=1:5:2"])
    space = cfg.resolve({}, flags).space
    assert space["pool"] == Choice(("max", "none")) and space["stride"] == Choice((1, 2))
    assert space["width"] == Range(8, 128, log=True, integer=True)
    assert space["kernel_size"] == Fixed(3) and space["batch_norm"] == Fixed(False)
    assert space["depth"] == Range(1, 5, step=2, integer=True)


@pytest.mark.parametrize(("args", "fragment"), [
    (["--param", "poool=max"], 'unknown parameter "poool". Did you mean "pool"? Valid parameter names: '),
    (["--param", "pool"], "--param: expected KEY=VALUE"),
    (["--width", "8", "--param", "width=16"], "width is given twice"),
    (["--param", "pool=maxx"], 'unknown pool "maxx"'),
])
def test_bad_param_flags_exit_2(cli: CliRunner, args: list[str], fragment: str) -> None:
    code, output = run(cli, "search", "--dataset", "digits", *args)
    assert code == 2 and fragment in " ".join(output.split()), output


@pytest.mark.parametrize(("args", "fragments"), [
    (["--dataset", "digits"], ("image default space", "1x8x8", "adamw.lr", "sgd.lr", "none.stride",
                               "width_growth", "'pareto'")),
    (["--dataset", "cifar10"], ("image default space", "3x32x32", "resnet")),
    (["--dataset", "sin"], ("table default space", "regression", "'mse'", "weight_decay")),
])
def test_check_prints_the_default_space(cli: CliRunner, args: list[str], fragments: tuple[str, ...]) -> None:
    code, output = run(cli, "check", *args)
    assert code == 0, output
    for fragment in fragments:
        assert fragment in output, fragment


def test_check_reads_a_csv_file_as_a_table(cli: CliRunner, tmp_path: Path) -> None:
    rows = "\n".join(f"{i % 7},{i % 3},{i % 2}" for i in range(40))
    (tmp_path / "t.csv").write_text("a,b,label\n" + rows + "\n")
    (tmp_path / "t.yaml").write_text(f"dataset: {{name: {tmp_path / 't.csv'}, target: label}}\n")
    code, output = run(cli, "check", str(tmp_path / "t.yaml"))
    assert code == 0, output
    assert "table default space" in output and "classification" in output


# ---- shipped studies and stored studies keep their identity ---------------------------------------

# Each shipped study file's identity hash before default spaces existed (computed on the commit
# before them): a study created from any of these files resumes under every later version.
SHIPPED = {
    "digits-quick.yaml": "1dc823c19dfc0dd8",
    "seed000-1001-networks-mo.yaml": "d5c5ece3b4d39e33",
    "seed000-1001-networks.yaml": "d5c5ece3b4d39e33",
    "seed001-sparsifier.yaml": "eda42c238e2f9392",
    "seed002-activations.yaml": "5fc09bdb984cb6b0",
    "seed002-batch-size.yaml": "1ef969d5ac5705bb",
    "seed002-depth.yaml": "1b787814c90c9259",
    "seed002-imbalance.yaml": "d570830676d12d78",
    "seed002-initializers.yaml": "8ec53a8513c06b45",
    "seed002-losses.yaml": "0cb118ab92ded9ef",
    "seed002-regularization.yaml": "6a9ff78c321d9b81",
    "seed002-width-abs.yaml": "843e83748fb37e8d",
    "seed002-width-polynomial.yaml": "9ce58e0956001493",
    "seed002-width-sin.yaml": "64f07f455837b12b",
    "seed003-cifar10-tricks.yaml": "ebee4cd7d6315afc",
    "seed004-mnist-parameters.yaml": "e0c4f91aaa1b8d07",
}
# The study `automl-nn search --dataset digits` created before default spaces existed.
OLD_DIGITS_DEFAULT = "1dc823c19dfc0dd8"


# Study files written for the default spaces: they take the defaults, the default pruner and the
# portfolio when their study is created, and that study stores the space it was created with.
ON_DEFAULTS = {
    "seed000-1001-networks-front.yaml": "bf7e4ea6a1a22100",
}


def test_every_shipped_study_file_is_pinned() -> None:
    assert sorted(SHIPPED | ON_DEFAULTS) == sorted(p.name for p in STUDIES.glob("*.yaml"))


def test_the_seed000_front_study_keeps_the_seeds_families_on_the_image_defaults() -> None:
    seed = cfg.resolve(cfg.load_file(STUDIES / "seed000-1001-networks-mo.yaml"))
    config = cfg.resolve(cfg.load_file(STUDIES / "seed000-1001-networks-front.yaml"))
    settled = cfg.with_defaults(config, cfg.facts_for(config))
    assert settled.identity_hash() == ON_DEFAULTS["seed000-1001-networks-front.yaml"]
    for key in ("family", "activation"):
        assert settled.space[key] == seed.space[key], key
    assert settled.objectives == ("accuracy", "params") and settled.pruner == "pareto"
    image = _settled({"defaults": "image"}).space
    assert settled.space["pool"] == image["pool"] and settled.space["lr"] == image["lr"]
    assert portfolio_points(settled) != []


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_a_shipped_study_keeps_its_identity_hash(name: str) -> None:
    config = cfg.resolve(cfg.load_file(STUDIES / name))
    settled = cfg.with_defaults(config, cfg.facts_for(config))
    assert config.identity_hash() == settled.identity_hash() == SHIPPED[name]
    assert settled.pruner == config.pruner, "a shipped study prunes only where it says so"
    assert portfolio_points(settled) == []


def _old_stored(config: cfg.StudyConfig) -> dict[str, Any]:
    """What a study stored as its config before default spaces existed (no newer keys)."""
    raw = config.to_raw()
    for key in ("defaults", "portfolio"):
        raw.pop(key)
    raw["space"].pop("width_growth")
    return raw


def test_an_old_study_resumes_with_the_space_it_was_created_with(cli: CliRunner) -> None:
    old = cfg.for_data(cfg.resolve({"defaults": "plain"}), _digits())
    assert old.identity_hash() == OLD_DIGITS_DEFAULT, "plain defaults are the old ones"
    old = cfg.for_data(cfg.resolve({"defaults": "plain", "space": {"epochs": 1}}), _digits())
    study = optuna.create_study(study_name="automl-nn", storage="sqlite:///automl-nn.db",
                                directions=old.directions())
    with no_experimental_warnings():
        study.set_metric_names(list(old.objectives))
    for key, value in (("config_hash", old.identity_hash()), ("identity", old.identity()),
                       ("config", _old_stored(old))):
        study.set_user_attr(key, value)

    new = cfg.for_data(cfg.resolve({}, {"epochs": "1"}), _digits())
    assert new.identity_hash() != old.identity_hash(), "the defaults did change"
    assert resume_config(study, new).space == old.space
    code, output = run(cli, "search", "--dataset", "digits", "--epochs", "1", "--trials", "1",
                       "--seed", "0")
    assert code == 0, output
    (trial,) = optuna.load_study(study_name="automl-nn", storage="sqlite:///automl-nn.db").trials
    assert "lr" in trial.params and "adamw.lr" not in trial.params, "the old space was searched"
    assert "portfolio" not in trial.user_attrs, "a resumed study gets no portfolio"
    assert trial.params["family"] in ("linear", "conv2d", "conv2d_linear")


def test_a_resumed_study_keeps_its_pruner() -> None:
    first = _settled({"objectives": ["accuracy"], "pruner": "hyperband"})
    storage = optuna.storages.InMemoryStorage()
    study = open_study(first, storage)
    later = _settled({"objectives": ["accuracy"]})
    assert later.pruner == "median"
    assert resume_config(study, later).pruner == "hyperband"
    assert isinstance(open_study(later, storage).pruner, optuna.pruners.HyperbandPruner)


# ---- the default pruners -------------------------------------------------------------------------

def test_default_pruners_wait_for_slow_starters() -> None:
    multi = _settled(overrides={"epochs": "10"})
    assert multi.pruner == "pareto" and multi.pruning.warmup_epochs == 3
    single = _settled({"objectives": ["accuracy"]}, overrides={"epochs": "2"})
    assert single.pruner == "median" and single.pruning.warmup_epochs == 1
    assert _settled({"objectives": ["params", "flops"]}).pruner == "none"
    assert _settled({"pruner": "none"}).pruner == "none", "a named pruner stays"


# ---- the warm-start portfolio --------------------------------------------------------------------

@pytest.mark.parametrize("mode", defaults.MODALITIES)
def test_every_portfolio_point_lies_inside_its_default_space(mode: str) -> None:
    space = _settled({"defaults": mode}).space
    for point in defaults.PORTFOLIOS[mode]:
        params = fit_point(space, point)
        assert params is not None, point.name
        for name, value in params.items():
            assert point.values[name.rpartition(".")[2]] == value, (point.name, name)


def test_portfolio_points_are_clipped_into_a_narrowed_space() -> None:
    space = _settled(overrides={"width": "4:8", "depth": "1:2", "activation": "relu,tanh"}).space
    points = dict(portfolio(space, defaults.PORTFOLIOS["image"]))
    tiny, mid = points["tiny-cnn"], points["mid-cnn"]
    assert (tiny["width"], tiny["depth"], tiny["activation"]) == (8, 2, "relu")
    assert (mid["depth"], mid["activation"]) == (2, "relu"), "clipped, and gelu is not offered"
    assert portfolio(_settled(overrides={"family": "linear"}).space, defaults.PORTFOLIOS["image"]) == []


def test_the_portfolio_starts_a_new_study_and_show_marks_it(cli: CliRunner) -> None:
    args = ["search", "--dataset", "digits", "--epochs", "1", "--width", "4:8", "--depth", "1:2",
            "--batch-size", "64", "--trials", "2", "--seed", "0"]
    code, output = run(cli, *args, "--study-name", "warm")
    assert code == 0, output
    trials = optuna.load_study(study_name="warm", storage="sqlite:///automl-nn.db").trials
    assert [t.user_attrs.get("portfolio") for t in trials] == ["tiny-cnn", None]
    assert trials[0].params["family"] == "conv2d" and trials[0].params["adamw.lr"] == 3e-3
    code, output = run(cli, "show", "warm")
    text = " ".join(output.split())
    assert code == 0 and "warm-start portfolio: trial 0 tiny-cnn (complete)" in text, output
    assert "adamw.lr" in text and "image default space" in text, "show prints the space"

    code, output = run(cli, *args, "--study-name", "cold", "--no-portfolio")
    assert code == 0, output
    trials = optuna.load_study(study_name="cold", storage="sqlite:///automl-nn.db").trials
    assert len(trials) == 2 and not any("portfolio" in t.user_attrs for t in trials)


# ---- what the defaults can sample builds ---------------------------------------------------------

SAMPLE_SHAPES = {"image": [(1, 8, 8), (3, 32, 32)], "signal": [(2, 50), (40,)], "table": [(12,)],
                 "volume": [(1, 4, 8, 8)]}


@pytest.mark.parametrize("mode", defaults.MODALITIES)
def test_every_default_space_samples_networks_that_train(mode: str) -> None:
    """Random candidates of each default space (narrow, so that it is quick) build, run forward and
    backward on each input layout of that modality."""
    space = _settled({"defaults": mode}, overrides={"width": "2:4"}).space
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(12):
        trial = study.ask()
        candidate = sample(trial, space)
        for shape in SAMPLE_SHAPES[mode]:
            _forward_backward(candidate.arch, shape)
        study.tell(trial, 0.0)


KNOBS = list(itertools.product([("max", 1), ("none", 2), ("avg", 1)], [1.0, 2.0], [True, False]))


CLAIMED = [(family, shape) for family in FAMILIES.names()
           for shape in [(1, 8, 8), (3, 32, 32), (2, 20), (24,)]
           if FAMILIES.get(family).supports(shape) is None]


@pytest.mark.parametrize(("family", "shape"), CLAIMED)
def test_every_family_builds_with_every_new_knob(family: str, shape: tuple[int, ...]) -> None:
    for (pool, stride), growth, batch_norm in KNOBS:
        values = {"family": family, "depth": 3, "width": 3, "width_growth": growth, "pool": pool,
                  "stride": stride, "batch_norm": batch_norm, "activation": "gelu"}
        _forward_backward(to_candidate(values).arch, shape)


def _forward_backward(arch: Any, shape: tuple[int, ...]) -> None:
    model = build(arch, shape, 5)
    out = model(torch.randn(2, *shape))
    assert out.shape == (2, 5), (arch, shape)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters()), (arch, shape)


def _digits() -> Any:
    from automl_nn.data.catalog import load

    return load("digits")


@pytest.mark.parametrize("n_train", [140, 400, 1_078, 5_000, 20_000, 54_000, 1_000_000])
def test_default_epochs_give_small_data_enough_steps_and_large_data_the_minimum(n_train: int) -> None:
    """A 200-point function fit trained 20 epochs of 4 steps learned nothing (mse 0.57 on sin(12x),
    the variance); a network needs a number of updates, not of passes over the data."""
    epochs = defaults.epochs_for(n_train)
    assert defaults.MIN_EPOCHS <= epochs <= defaults.MAX_EPOCHS
    steps = epochs * n_train / defaults.STEP_BATCH
    assert steps >= defaults.MIN_STEPS or epochs == defaults.MAX_EPOCHS
    if n_train >= defaults.MIN_STEPS * defaults.STEP_BATCH / defaults.MIN_EPOCHS:
        assert epochs == defaults.MIN_EPOCHS  # MNIST and larger: the minimum
