import pytest
import torch
from torch.nn import functional as F

from automl_nn.nn.losses import make_loss, target_vectors
from automl_nn.vocab import LOSSES

OUT = torch.tensor([[2.0, -1.0, 0.5], [0.0, 1.0, -2.0]])
Y = torch.tensor([0, 2])
ONE_HOT = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])


def test_vector_losses_read_classes_as_one_hot_and_floats_as_they_are() -> None:
    assert torch.equal(target_vectors(OUT, Y), ONE_HOT)
    assert make_loss("mse")(OUT, Y) == F.mse_loss(OUT, ONE_HOT)
    assert make_loss("mae")(OUT, Y) == F.l1_loss(OUT, ONE_HOT)
    assert make_loss("huber")(OUT, Y) == F.huber_loss(OUT, ONE_HOT)
    assert make_loss("fourth_power")(OUT, Y) == ((OUT - ONE_HOT) ** 4).mean()


@pytest.mark.parametrize("name", ["mse", "mae", "huber", "fourth_power", "constant"])
def test_regression_losses_take_float_targets(name: str) -> None:
    assert "regression" in LOSSES.get(name).tasks
    target = torch.randn(2, 3)
    assert make_loss(name)(OUT, target).shape == ()
    assert make_loss(name)(OUT[:, :1], target[:, 0]).shape == ()  # (N,) targets for one output


def test_classification_losses() -> None:
    ce = F.cross_entropy(OUT, Y)
    assert torch.allclose(make_loss("nll")(OUT, Y), ce)  # log-softmax head + nll == cross-entropy
    assert torch.allclose(make_loss("nll", 0.2)(OUT, Y), F.cross_entropy(OUT, Y, label_smoothing=0.2))
    assert make_loss("hinge")(OUT, Y) == F.multi_margin_loss(OUT, Y)
    assert LOSSES.get("hinge").tasks == ("classification",)
    assert LOSSES.get("ce") is LOSSES.get("cross_entropy")


def test_label_smoothing_only_where_the_loss_takes_it() -> None:
    assert make_loss("cross_entropy", 0.1)(OUT, Y) != make_loss("cross_entropy")(OUT, Y)
    smoothed = target_vectors(OUT, Y, 0.3)
    assert torch.allclose(smoothed.sum(dim=1), torch.ones(2))
    assert make_loss("mse", 0.3)(OUT, Y) == F.mse_loss(OUT, smoothed)
    assert make_loss("hinge", 0.3)(OUT, Y) == make_loss("hinge")(OUT, Y)


def test_constant_control_backpropagates_to_nothing() -> None:
    out = OUT.clone().requires_grad_()
    loss = make_loss("constant")(out, Y)
    loss.backward()
    assert float(loss.detach()) == 1.0
    assert out.grad is None
