"""Gated width mode (seed 001's sparsifier): gates, their L1 penalty, shrinking, export."""

import json
import math
from pathlib import Path

import optuna
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from automl_nn.config import resolve
from automl_nn.data import catalog as data
from automl_nn.errors import ConfigError
from automl_nn.metrics import count_params
from automl_nn.nn import Gate, build, cut, effective_widths, gates
from automl_nn.results.export import import_source
from automl_nn.space import sample
from automl_nn.spec import ArchSpec, TrainSpec
from automl_nn.train import fit, gate_optimizer, gate_penalty
from automl_nn.trial import measure, train_measured
from tests.conftest import file_hash, run

ARCH = ArchSpec(family="linear", depth=2, widths=(12, 12), activation="sigmoid", batch_norm=True,
                gated=True, gate_threshold=0.05)


def _gated_model(arch: ArchSpec = ARCH) -> nn.Sequential:
    torch.manual_seed(0)
    model = build(arch, (1, 8, 8), 10)
    assert isinstance(model, nn.Sequential)
    with torch.no_grad():  # batch norm with non-trivial statistics, so slicing them is tested
        for m in model.modules():
            if isinstance(m, nn.BatchNorm1d):
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
    return model.eval()


def _set_gates(model: nn.Module, values: list[list[float]]) -> None:
    with torch.no_grad():
        for gate, vals in zip(gates(model), values, strict=True):
            gate.weight.copy_(torch.tensor(vals))


def test_a_gate_below_threshold_removes_its_neuron_and_outputs_are_unchanged() -> None:
    model = _gated_model()
    first = [1.0, 0.01, -0.8, 0.0, 0.3, 0.04, 1.2, -0.05, 0.5, 0.9, 0.0, 2.0]  # 5 at or below 0.05
    second = [0.7] * 6 + [0.02] * 6
    _set_gates(model, [first, second])
    small = cut(model, ARCH.gate_threshold)
    assert effective_widths(model, ARCH.gate_threshold) == (7, 6)
    assert not gates(small)
    # exactly the network `build` makes for the effective widths, so export can rebuild it
    plain = build(ARCH.shrunk((7, 6)), (1, 8, 8), 10)
    assert {k: v.shape for k, v in plain.state_dict().items()} == \
        {k: v.shape for k, v in small.state_dict().items()}
    assert count_params(small) == count_params(plain) < count_params(model)
    # reference: the gated model with the gates at or below the threshold set to zero
    _set_gates(model, [[g if abs(g) > 0.05 else 0.0 for g in first],
                       [g if abs(g) > 0.05 else 0.0 for g in second]])
    x = torch.randn(16, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(small.eval()(x), model(x), atol=1e-6)


def test_a_layer_whose_gates_are_all_closed_keeps_one_silent_neuron() -> None:
    model = _gated_model()
    _set_gates(model, [[0.0] * 12, [1.0] * 12])
    small = cut(model, 0.01)
    assert effective_widths(model, 0.01) == (1, 12)
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(small.eval()(x), model(x), atol=1e-6)


def test_gate_penalty_is_l1_on_the_gates_only() -> None:
    model = _gated_model()
    _set_gates(model, [[0.5] * 12, [-2.0] * 12])
    penalty = gate_penalty(model, 0.1)
    assert penalty is not None
    assert penalty().item() == pytest.approx(0.1 * (6 + 24))
    assert gate_penalty(model, 0.0) is None
    assert gate_penalty(build(ArchSpec("linear", 1, (4,), "relu"), (4,), 2), 0.1) is None


def test_gate_keeps_its_constructor_argument() -> None:
    gate = Gate(5)
    assert gate.features == 5 and gate.weight.shape == (5,)


def test_gated_space_parameters() -> None:
    config = resolve({"space": {"family": "linear", "depth": 2, "width_mode": "gated", "width": 64,
                                "gate_l1": {"low": 1e-5, "high": 1e-2, "log": True},
                                "gate_threshold": 0.02}})
    trial = optuna.trial.FixedTrial({"activation": "relu", "optimizer": "adam", "lr": 0.01,
                                     "batch_size": 32, "gate_l1": 1e-3})
    cand = sample(trial, config.space)
    assert cand.arch.gated and cand.arch.widths == (64, 64) and cand.arch.gate_threshold == 0.02
    assert cand.train.gate_l1 == 1e-3
    # off by default, and then it leaves the identity of older studies alone
    plain = resolve({})
    assert "gate_l1" not in plain.identity()["space"]
    with pytest.raises(ConfigError, match="only the linear family"):
        resolve({"space": {"family": ["linear", "conv2d"], "width_mode": ["uniform", "gated"]}})


def test_gated_search_counts_and_exports_the_shrunk_network(cli: CliRunner, tmp_path: Path) -> None:
    study_file = tmp_path / "g.yaml"
    study_file.write_text(
        "dataset: digits\nobjectives: [accuracy, params]\ntrials: 1\nstudy_name: g\nseed: 0\n"
        "space:\n  family: linear\n  depth: 1\n  width_mode: gated\n  width: 96\n"
        "  gate_l1: 0.05\n  gate_threshold: 0.05\n  activation: relu\n  optimizer: adam\n"
        "  lr: 0.01\n  batch_size: 16\n  epochs: 3\n")
    code, output = run(cli, "search", str(study_file))
    assert code == 0, output
    trial = optuna.load_study(study_name="g", storage="sqlite:///automl-nn.db").trials[0]
    (width,) = trial.user_attrs["effective_widths"]
    assert 1 <= width < 96, "a strong L1 penalty on the gates cuts neurons"
    assert trial.user_attrs["start_params"] == 64 * 96 + 96 + 96 + 96 * 10 + 10  # gates included
    assert trial.values[1] == trial.user_attrs["params"] == 64 * width + width + width * 10 + 10
    code, output = run(cli, "export", "g", "--trial", "0", "--out", "ex")
    assert code == 0, output
    arch = json.loads(Path("ex/arch.json").read_text())
    assert arch["widths"] == [width] and arch["gated"] is False
    assert "Gate" not in Path("ex/model.py").read_text()
    meta = json.loads(Path("ex/meta.json").read_text())
    assert meta["searched_arch"]["widths"] == [96]


# ---- the gates' own learning rate (gate_lr): gates shrink a layer within a short run --------------

# An oversized layer for digits (64 inputs), trained briefly with the gate settings left at their
# defaults (gate_l1 1e-4, gate_lr 0.1, gate_threshold 0.01).
SHORT_RUN = {"family": "linear", "depth": 1, "width_mode": "gated", "width": 512,
             "activation": "relu", "optimizer": "adam", "lr": 1e-3, "batch_size": 32, "epochs": 3}


def test_default_gates_shrink_an_oversized_layer_in_a_short_digits_run() -> None:
    cand = sample(optuna.trial.FixedTrial({}), resolve({"space": SHORT_RUN}).space)
    assert cand.train.gate_lr == 0.1 and cand.train.gate_l1 == 1e-4
    bundle = data.load("digits")
    done = train_measured(measure(cand, bundle), cand, bundle, torch.device("cpu"))
    (width,) = done.arch.widths
    assert width <= 0.9 * 512, f"the gates cut only {512 - width} of 512 neurons"
    # the cut network is what the trial measures; cutting the closed gates costs no accuracy
    assert done.values["accuracy"] >= 0.9
    assert abs(done.values["accuracy"] - done.history[-1].val_accuracy) <= 0.01


def test_gates_train_at_their_own_annealed_rate_without_weight_decay() -> None:
    # The constant loss gives no gradient to any weight, so only the gate penalty moves anything.
    # SGD without momentum then moves every gate by lr_t * gate_l1 per step, where lr_t runs from
    # gate_lr down to 0 along a cosine; the network's weight decay (0.5) would move them far more.
    bundle = data.load("digits")
    steps, gate_lr, strength = 4, 0.2, 0.01
    spec = TrainSpec("sgd", 1e-3, batch_size=bundle.n_train, epochs=steps, loss="constant",
                     momentum=0.0, weight_decay=0.5, gate_l1=strength, gate_lr=gate_lr)
    model = build(ArchSpec("linear", 1, (8,), "relu", gated=True), bundle.input_shape, 10)
    fit(model, bundle, spec)
    rates = [gate_lr * (1 + math.cos(math.pi * t / steps)) / 2 for t in range(steps)]
    expected = 1.0 - strength * sum(rates)
    assert torch.allclose(gates(model)[0].weight, torch.full((8,), expected), atol=1e-6)


def test_trials_stored_without_gate_lr_train_their_gates_as_before() -> None:
    # A TrainSpec written before gate_lr existed reads back as None: the gates stay in the
    # network's optimizer (its lr and weight decay), as those trials were trained.
    stored = TrainSpec("adam", 1e-3, 32, 3, gate_l1=1e-4).to_dict()
    del stored["gate_lr"]
    spec = TrainSpec.from_dict(stored)
    assert spec.gate_lr is None
    assert gate_optimizer(build(ARCH, (1, 8, 8), 10), spec, total_steps=10) is None


def test_gate_lr_is_searched_like_other_floats_and_kept_out_of_older_identities() -> None:
    config = resolve({"space": {**SHORT_RUN, "gate_lr": {"low": 0.01, "high": 1.0, "log": True}}})
    cand = sample(optuna.trial.FixedTrial({"gate_lr": 0.3}), config.space)
    assert cand.train.gate_lr == 0.3
    assert config.identity()["space"]["gate_lr"] == {"low": 0.01, "high": 1.0, "log": True}
    # left at its default, gate_lr is not part of the identity: studies made before it resume
    assert "gate_lr" not in resolve({"space": SHORT_RUN}).identity()["space"]
    # not gated: no gate optimizer at all
    plain = sample(optuna.trial.FixedTrial({}), resolve({"space": {**SHORT_RUN,
                                                                   "width_mode": "uniform"}}).space)
    assert plain.train.gate_lr is None


@pytest.mark.parametrize("value", [0, -0.1, "fast", {"low": 0, "high": 1}, {"low": 1, "high": 0.1}])
def test_bad_gate_lr_is_refused_with_its_key(value: object) -> None:
    with pytest.raises(ConfigError, match=r"space\.gate_lr"):
        resolve({"space": {**SHORT_RUN, "gate_lr": value}})


def test_bad_gate_lr_exits_2_and_leaves_storage_untouched(cli: CliRunner, tmp_path: Path) -> None:
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    body = "dataset: digits\ntrials: 1\nstudy_name: g\nspace:\n" + "".join(
        f"  {k}: {v}\n" for k, v in {**SHORT_RUN, "epochs": 1}.items())
    good.write_text(body)
    bad.write_text(body + "  gate_lr: 0\n")
    code, output = run(cli, "search", str(good))
    assert code == 0, output
    before = file_hash(Path("automl-nn.db"))
    code, output = run(cli, "search", str(bad), "--trials", "2")
    assert code == 2, output
    assert "space.gate_lr" in output and "Traceback" not in output
    assert file_hash(Path("automl-nn.db")) == before


def test_a_short_gated_search_exports_the_shrunk_network_with_its_accuracy(
    cli: CliRunner, tmp_path: Path,
) -> None:
    study_file = tmp_path / "short.yaml"
    study_file.write_text("dataset: digits\ntrials: 1\nstudy_name: s\nseed: 0\nspace:\n" + "".join(
        f"  {k}: {v}\n" for k, v in SHORT_RUN.items()))
    code, output = run(cli, "search", str(study_file))
    assert code == 0, output
    trial = optuna.load_study(study_name="s", storage="sqlite:///automl-nn.db").trials[0]
    (width,) = trial.user_attrs["effective_widths"]
    assert width < 512 and trial.user_attrs["accuracy"] >= 0.9
    code, output = run(cli, "export", "s", "--trial", "0", "--out", "ex")
    assert code == 0, output
    exported = import_source(Path("ex/model.py"))
    net = exported.load()
    assert net[1].out_features == width  # Flatten, Linear(64, width), ReLU, Linear(width, 10)
    bundle = data.load("digits")
    with torch.no_grad():
        predicted = net(exported.preprocess(bundle.x_val.cpu())).argmax(dim=1)
    accuracy = (predicted == bundle.y_val.cpu()).float().mean().item()
    assert accuracy == pytest.approx(trial.user_attrs["accuracy"], abs=1 / len(bundle.y_val))
