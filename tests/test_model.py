import pytest
import torch

from automl_nn.blocks import ACTIVATIONS, FAMILIES
from automl_nn.errors import ConfigError
from automl_nn.model import build
from automl_nn.spec import ArchSpec

IMAGE = (1, 8, 8)


@pytest.mark.parametrize("family", FAMILIES.names())
@pytest.mark.parametrize("activation", ACTIVATIONS.names())
def test_every_family_and_activation_builds_and_backpropagates(family: str, activation: str) -> None:
    arch = ArchSpec(family=family, depth=2, widths=(6, 5), activation=activation)
    model = build(arch, IMAGE, 10)
    out = model(torch.randn(3, *IMAGE))
    assert out.shape == (3, 10)
    out.sum().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None for g in grads)


def test_linear_family_layer_sizes() -> None:
    model = build(ArchSpec("linear", 2, (32, 16), "relu"), IMAGE, 10)
    linears = [m for m in model if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(64, 32), (32, 16), (16, 10)]


def test_conv_family_on_vectors_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="conv2d.*rank 3"):
        build(ArchSpec("conv2d", 1, (4,), "relu"), (64,), 10)


def test_unknown_activation_in_a_spec_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match='unknown activation "relu6"'):
        build(ArchSpec("linear", 1, (4,), "relu6"), IMAGE, 10)


def test_spec_round_trip_and_unknown_keys() -> None:
    arch = ArchSpec("conv2d_linear", 2, (4, 8), "tanh", kernel_size=5)
    assert ArchSpec.from_dict(arch.to_dict()) == arch
    with pytest.raises(ConfigError, match="unknown key"):
        ArchSpec.from_dict({**arch.to_dict(), "colour": "red"})
    with pytest.raises(ConfigError, match="one entry per layer"):
        ArchSpec("linear", 3, (4,), "relu")
