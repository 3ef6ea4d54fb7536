import math
import time
from dataclasses import replace

import numpy as np
import pytest
import torch

from automl_nn import train
from automl_nn.data.catalog import DataBundle, bundle_from_arrays, load, split_indices
from automl_nn.errors import NonFiniteError
from automl_nn.nn import build, init_weights
from automl_nn.nn.optim import make_optimizer, make_schedule
from automl_nn.spec import ArchSpec, TrainSpec
from automl_nn.train import evaluate, fit, prepared, seed_everything, weight_penalty
from automl_nn.vocab import ACTIVATIONS, INITIALIZERS, LOSSES, OPTIMIZERS, SCHEDULES


def _train(
    lr: float = 0.01, seed: int = 0, epochs: int = 3, optimizer: str = "adam"
) -> tuple[list[float], torch.nn.Module]:
    bundle = load("digits")
    seed_everything(seed)
    model = build(ArchSpec("linear", 1, (32,), "relu"), bundle.input_shape, bundle.n_outputs)
    spec = TrainSpec(optimizer=optimizer, lr=lr, batch_size=64, epochs=epochs, seed=seed)
    seen: list[float] = []
    history = fit(model, bundle, spec, on_epoch=lambda r: seen.append(r.val_accuracy))
    assert [r.val_accuracy for r in history.epochs] == seen
    return seen, model


def test_fit_learns_digits() -> None:
    accs, model = _train()
    assert len(accs) == 3
    assert accs[-1] > 0.85
    bundle = load("digits")
    test = evaluate(model, bundle, bundle.x_test, bundle.y_test)
    assert test.accuracy > 0.8
    assert test.predictions.shape == bundle.y_test.shape


def test_same_seed_same_result_on_cpu() -> None:
    assert _train(seed=3, epochs=2)[0] == _train(seed=3, epochs=2)[0]


def test_exploding_loss_raises_nonfinite() -> None:
    with pytest.raises(NonFiniteError, match="training loss became"):
        _train(lr=1e12, epochs=3, optimizer="sgd")


def test_splits_are_disjoint_stratified_and_stats_come_from_train() -> None:
    labels = np.repeat(np.arange(3), 50)
    train, val, test = split_indices(labels, 0.2, 0.2)
    assert len(train) + len(val) + len(test) == 150
    assert not (set(train) & set(val) or set(train) & set(test) or set(val) & set(test))
    assert np.bincount(labels[test]).tolist() == [10, 10, 10]
    bundle = load("digits")
    assert bundle.n_train + len(bundle.x_val) + len(bundle.x_test) == 1797
    assert torch.allclose(bundle.mean, bundle.x_train.float().mean(), atol=1e-4)
    assert bundle.x_train.dtype == torch.uint8


# ---- every registry entry trains one step ---------------------------------------------------------

def _tiny() -> DataBundle:
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, size=(60, 1, 4, 4)).astype(np.uint8)
    y = np.repeat(np.arange(3), 20)
    return bundle_from_arrays("tiny", x, y, ("a", "b", "c"))


def _one_step(arch: ArchSpec | None = None, **train: object) -> tuple[bool, float]:
    """Train one full-batch step; (did any parameter change, training loss)."""
    bundle = _tiny()
    seed_everything(0)
    model = build(arch or ArchSpec("linear", 1, (8,), "relu"), bundle.input_shape, bundle.n_outputs)
    before = [p.detach().clone() for p in model.parameters()]
    spec = TrainSpec(**{"optimizer": "adam", "lr": 0.05, "batch_size": bundle.n_train,  # type: ignore[arg-type]
                        "epochs": 1, **train})
    history = fit(model, bundle, spec)
    changed = any(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))
    return changed, history.last.train_loss


@pytest.mark.parametrize("activation", ACTIVATIONS.names())
def test_every_activation_trains(activation: str) -> None:
    assert _one_step(ArchSpec("linear", 1, (8,), activation))[0]


@pytest.mark.parametrize("loss", LOSSES.names())
def test_every_loss_trains_except_the_constant_control(loss: str) -> None:
    changed, value = _one_step(loss=loss)
    assert changed == (loss != "constant")
    assert math.isfinite(value)


def test_constant_loss_moves_no_weight_even_with_decay_but_a_penalty_does() -> None:
    assert not _one_step(loss="constant", optimizer="sgd", weight_decay=0.1)[0]
    assert not _one_step(loss="constant", optimizer="adamw", weight_decay=0.1)[0]
    assert _one_step(loss="constant", l2=0.1)[0]
    assert _one_step(loss="constant", l1=0.1)[0]


@pytest.mark.parametrize("init", INITIALIZERS.names())
def test_every_initializer_trains(init: str) -> None:
    assert _one_step(init=init, init_std=0.5)[0]


def test_initializers_fill_weights_and_zero_biases() -> None:
    model = build(ArchSpec("conv2d_linear", 1, (4,), "relu"), (1, 4, 4), 3)
    init_weights(model, "ones")
    assert all(bool((p == (1.0 if p.dim() > 1 else 0.0)).all()) for p in model.parameters())
    init_weights(model, "normal", std=2.0)
    assert 1.5 < float(model[-1].weight.detach().std()) < 2.5


@pytest.mark.parametrize("optimizer", OPTIMIZERS.names())
def test_every_optimizer_trains(optimizer: str) -> None:
    assert _one_step(optimizer=optimizer, nesterov=True, weight_decay=1e-3)[0]


@pytest.mark.parametrize("schedule", SCHEDULES.names())
def test_every_schedule_trains(schedule: str) -> None:
    assert _one_step(schedule=schedule, epochs=2)[0]


def test_schedules_follow_their_definition() -> None:
    spec = TrainSpec("sgd", 1.0, 8, epochs=4, lr_gamma=0.8, lr_step=2)
    lrs = {}
    for name in ("exponential", "step", "cosine"):
        opt = make_optimizer([torch.nn.Parameter(torch.zeros(1))], replace(spec, schedule=name))
        sched = make_schedule(opt, replace(spec, schedule=name), 5)
        assert sched is not None
        seen = []
        for _ in range(4):
            opt.step()
            sched.step()
            seen.append(round(opt.param_groups[0]["lr"], 6))
        lrs[name] = seen
    assert lrs["exponential"] == [0.8, 0.64, 0.512, 0.4096]
    assert lrs["step"] == [1.0, 0.8, 0.8, 0.64]
    assert lrs["cosine"][-1] == 0.0
    assert SCHEDULES.get("onecycle").per_step and not SCHEDULES.get("cosine").per_step


def test_regularizers_and_switches_train() -> None:
    for extra in ({"label_smoothing": 0.1}, {"normalize": False}, {"l1": 1e-3, "l2": 1e-3}):
        assert _one_step(**extra)[0], extra
    arch = ArchSpec("resnet", 1, (4,), "relu", batch_norm=True, dropout=0.5, dropout_at="both")
    assert _one_step(arch)[0]


def test_weight_penalty_sums_weights_not_biases() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(2, 2))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, -2.0], [3.0, 0.0]]))
        model[0].bias.fill_(10.0)
    penalty = weight_penalty(model, l1=0.5, l2=0.25)
    assert penalty is not None
    assert float(penalty().detach()) == pytest.approx(0.5 * 6 + 0.25 * 14)
    assert weight_penalty(model, 0.0, 0.0) is None


def test_normalization_off_feeds_raw_values() -> None:
    bundle = _tiny()
    raw = prepared(bundle, TrainSpec("adam", 0.1, 8, 1, normalize=False))
    assert torch.equal(raw.normalize(bundle.x_train), bundle.x_train.float())
    assert prepared(bundle, TrainSpec("adam", 0.1, 8, 1)) is bundle


def test_batch_size_one_takes_a_step_per_sample() -> None:
    """Seed 002 trains with batches of one sample: every sample is a step, none is skipped."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 2)).astype(np.float32)
    bundle = bundle_from_arrays("halves", x, (x[:, 0] > 0).astype(np.int64), ("a", "b"))
    seed_everything(0)
    model = build(ArchSpec("linear", 0, (), "none"), bundle.input_shape, bundle.n_outputs)
    steps: list[int] = []
    model.register_forward_hook(lambda _m, inp, _o: steps.append(inp[0].shape[0]) if model.training else None)
    fit(model, bundle, TrainSpec(optimizer="sgd", lr=0.1, batch_size=1, epochs=2, seed=0))
    assert steps == [1] * (2 * bundle.n_train)


def test_training_time_leaves_out_what_the_epoch_hook_does() -> None:
    # The hook stands for storage writes, pruning and kept predictions: a slow storage must not
    # make a network look slow to train (train_time is an objective).
    bundle = load("digits")
    model = build(ArchSpec("linear", 1, (16,), "relu"), bundle.input_shape, bundle.n_outputs)
    spec = TrainSpec(optimizer="adam", lr=0.01, batch_size=64, epochs=2, seed=0)
    start = time.perf_counter()
    history = fit(model, bundle, spec, on_epoch=lambda _r: time.sleep(0.5))
    wall = time.perf_counter() - start
    assert history.train_seconds == pytest.approx(sum(r.seconds for r in history.epochs))
    assert 0 < history.train_seconds <= wall - 2 * 0.5


# ---- evaluation batches and where fit's time goes ----------------------------------------------------


def _fixed_device(monkeypatch: pytest.MonkeyPatch, cache: int, ram: float) -> None:
    monkeypatch.setattr(train, "cpu_cache_bytes", lambda: cache)
    monkeypatch.setattr(train, "_available_ram", lambda: ram)


def test_eval_batch_comes_from_memory_per_input_and_the_cpu_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    _fixed_device(monkeypatch, cache=32 * 2**20, ram=64 * 2**30)
    cpu = torch.device("cpu")
    # the 3 x 121-channel conv on MNIST holds 2,311,312 bytes per input: 32 MiB of cache
    # holds 14 of them, under the smallest batch worth a call; the training batch, when larger, wins
    assert train.eval_batch(2_311_312, cpu, floor=8) == train.MIN_EVAL_BATCH == 16
    assert train.eval_batch(2_311_312, cpu, floor=64) == 64
    # a default search's conv2d 12x12x12 (163,944 bytes per input): 204 images fill the cache
    assert train.eval_batch(163_944, cpu, floor=64) == 32 * 2**20 // 163_944 == 204
    assert train.eval_batch(1e9, cpu, floor=1) == train.MIN_EVAL_BATCH
    assert train.eval_batch(1_000, cpu) == train.MAX_EVAL_BATCH  # a small MLP: as large as allowed
    _fixed_device(monkeypatch, cache=32 * 2**20, ram=8 * 2**20)  # little memory left: 1/8 of it
    assert train.eval_batch(1_000, cpu) == 2**20 // 1_000 == 1048


def test_cache_sizes_read_as_sysfs_writes_them() -> None:
    assert train._size_bytes("32768K") == 32 * 2**20
    assert train._size_bytes("2M") == 2 * 2**20 and train._size_bytes("512") == 512
    assert train.cpu_cache_bytes() > 0


def test_evaluate_runs_in_batches_sized_for_the_model(monkeypatch: pytest.MonkeyPatch) -> None:
    bundle = load("digits")
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU(),
                                torch.nn.Linear(32, 10))
    per_input = 4 * (64 + 64 + 32 + 32 + 10)  # input, flatten, linear, relu, linear (float32)
    assert train.per_input_bytes(model, bundle.input_shape, torch.device("cpu")) == per_input
    room = 100 * per_input // train.CPU_CACHE_MULTIPLE  # a cache with room for 100 inputs
    _fixed_device(monkeypatch, cache=room, ram=64 * 2**30)
    sizes: list[int] = []
    model.register_forward_hook(lambda _m, inp, _o: sizes.append(inp[0].shape[0]))
    evaluate(model, bundle, bundle.x_val, bundle.y_val)
    measured, batches = sizes[0], sizes[1:]  # one input measures the memory, then the batches
    assert measured == 1 and sum(batches) == len(bundle.x_val) == 359
    assert batches == [100, 100, 100, 59]
    sizes.clear()
    evaluate(model, bundle, bundle.x_val, bundle.y_val, batch_size=50)
    assert max(sizes) == 50


def test_fit_splits_its_time_into_steps_and_validation() -> None:
    bundle = load("digits")
    model = build(ArchSpec("linear", 1, (16,), "relu"), bundle.input_shape, bundle.n_outputs)
    sizes: list[int] = []
    model.register_forward_hook(lambda m, inp, _o: None if m.training else sizes.append(inp[0].shape[0]))
    spec = TrainSpec(optimizer="adam", lr=0.01, batch_size=64, epochs=2, seed=0)
    history = fit(model, bundle, spec, eval_batch_size=100)
    assert max(sizes) == 100  # validation ran in the batches it was given
    assert history.step_seconds + history.eval_seconds == pytest.approx(history.train_seconds)
    assert history.eval_seconds == pytest.approx(sum(r.eval_seconds for r in history.epochs))
    assert all(0 < r.eval_seconds < r.seconds for r in history.epochs)
    assert "eval_seconds" not in history.epochs[0].to_dict()  # the stored epoch record is unchanged


def test_a_regression_epoch_record_keeps_its_metrics_in_target_units() -> None:
    bundle = load("sin?size=200")
    model = build(ArchSpec("linear", 1, (16,), "relu"), bundle.input_shape, bundle.n_outputs)
    spec = TrainSpec(optimizer="adam", lr=0.01, batch_size=32, epochs=2, seed=0, loss="mse")
    history = fit(model, bundle, spec)
    stored = history.epochs[-1].to_dict()
    final = evaluate(model, bundle, bundle.x_val, bundle.y_val)
    assert stored["val_mse"] == pytest.approx(final.scores["mse"])
    assert stored["val_mae"] == pytest.approx(final.scores["mae"])
    assert stored["val_r2"] == pytest.approx(final.scores["r2"])
    std = float(bundle.target_std)  # the loss is in the standardized space, the mse in target units
    assert stored["val_mse"] == pytest.approx(stored["val_loss"] * std**2, rel=1e-4)
    assert math.isnan(stored["val_accuracy"])
    digits = load("digits")
    classifier = build(ArchSpec("linear", 1, (8,), "relu"), digits.input_shape, digits.n_outputs)
    kept = fit(classifier, digits, replace(spec, loss="cross_entropy", epochs=1)).epochs[0].to_dict()
    assert "val_mse" not in kept and 0.0 <= kept["val_accuracy"] <= 1.0
