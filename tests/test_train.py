import numpy as np
import pytest
import torch

from automl_nn.data import load, split_indices
from automl_nn.errors import NonFiniteError
from automl_nn.model import build
from automl_nn.spec import ArchSpec, TrainSpec
from automl_nn.train import evaluate, fit, seed_everything


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
