"""`automl-nn ablate`: one factor at a time from a baseline trial (seed 004's method)."""

import json
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from typer.testing import CliRunner

from automl_nn.config import resolve
from automl_nn.results.ablate import applying, candidate_of, factor_values, variant_params
from tests.conftest import run

STUDY = ("dataset: digits\nobjectives: [accuracy]\ntrials: 2\nstudy_name: ab\nseed: 0\ndefaults: plain\n"
         "space:\n  family: linear\n  depth: 1\n  width: 8\n  activation: [relu, tanh]\n"
         "  optimizer: adam\n  lr: {low: 1.0e-3, high: 1.0e-1, log: true}\n  batch_size: 64\n"
         "  epochs: 1\n")


def test_factor_values_cover_the_range() -> None:
    assert factor_values(CategoricalDistribution(["a", "b", "c"]), 5) == ["a", "b", "c"]
    assert factor_values(FloatDistribution(1e-4, 1e-1, log=True), 4) == pytest.approx(
        [1e-4, 1e-3, 1e-2, 1e-1])
    assert factor_values(IntDistribution(1, 9), 3) == [1, 5, 9]
    assert factor_values(IntDistribution(16, 256, log=True), 5) == [16, 32, 64, 128, 256]
    assert factor_values(FloatDistribution(0.0, 0.5, step=0.25), 5) == [0.0, 0.25, 0.5]


def test_a_parameter_that_newly_applies_takes_a_neutral_value() -> None:
    space = resolve({"space": {"family": "linear", "depth": [1, 3], "width_mode": "per_layer",
                               "width": [8, 16], "optimizer": ["adam", "sgd"],
                               "momentum": {"low": 0.5, "high": 0.99}}}).space
    base = {"depth": 1, "layer1.width": 16, "activation": "relu", "optimizer": "adam",
            "lr": 0.01, "batch_size": 32}
    sgd = candidate_of(variant_params(base, "optimizer", "sgd", space), space, seed=3)
    assert sgd.train.optimizer == "sgd" and sgd.train.momentum == 0.9  # the default, inside the range
    deeper = candidate_of(variant_params(base, "depth", 3, space), space, seed=3)
    assert deeper.arch.widths == (16, 16, 16)  # new layers copy the deepest baseline layer
    assert deeper.train.seed == 3


def test_ablate_trains_each_factor_alone_and_writes_a_page(cli: CliRunner, tmp_path: Path) -> None:
    (tmp_path / "s.yaml").write_text(STUDY)
    code, output = run(cli, "search", "s.yaml")
    assert code == 0, output
    study = optuna.load_study(study_name="ab", storage="sqlite:///automl-nn.db")
    best = study.best_trial
    code, output = run(cli, "ablate", "ab", "--points", "3", "--out", "ab-out")
    assert code == 0, output
    summary = json.loads(Path("ab-out/ablate.json").read_text())
    assert summary["baseline"]["trial"] == best.number
    factors = summary["factors"]
    assert set(factors) == {"activation", "lr"}
    assert [v["value"] for v in factors["activation"]] == ["relu", "tanh"]
    assert len(factors["lr"]) in (3, 4)  # 3 points, plus the baseline's own value unless among them
    for variants in factors.values():
        (base,) = [v for v in variants if v["baseline"]]
        # the baseline retrains exactly as its trial did (same seed, same data, CPU)
        assert base["accuracy"] == best.values[0]
        assert all(len(v["curve"]) == 1 and v["test_accuracy"] is not None for v in variants)
    page = Path("ab-out/ablate.html").read_text()
    assert 'id="curves"' in page and "activation: validation accuracy" in page and '<script src=' not in page

    code, output = run(cli, "ablate", "ab", "--factors", "lrr")
    assert code == 2 and 'Did you mean "lr"' in output
    code, output = run(cli, "ablate", "ab", "--trial", "9")
    assert code == 2 and "trial 9 was asked for" in output
    code, output = run(cli, "ablate", "ab", "--factors", "activation", "--set", "lr=0.05",
                       "--out", "ab-set")
    assert code == 0, output
    assert json.loads(Path("ab-set/ablate.json").read_text())["baseline"]["params"]["lr"] == 0.05


def test_a_factor_the_changed_baseline_switches_off_is_not_varied() -> None:
    space = resolve({"space": {"family": "conv2d_linear", "depth": 1, "width": 8,
                               "dropout": [0.0, 0.25], "dropout_at": ["dense", "conv"]}}).space
    base = {"dropout": 0.25, "dropout_at": "conv", "activation": "relu", "lr": 0.01}
    assert "dropout_at" in applying(base, space, seed=0)
    # --set dropout=0: every placement would train the same network, so none is a variant
    assert "dropout_at" not in applying({**base, "dropout": 0.0}, space, seed=0)
    assert "dropout" in applying({**base, "dropout": 0.0}, space, seed=0)
