import pytest
import torch

from automl_nn.errors import ConfigError
from automl_nn.nn import BasicBlock, Reshape, build
from automl_nn.spec import ArchSpec
from automl_nn.vocab import ACTIVATIONS, FAMILIES

IMAGE = (1, 8, 8)
# One sample shape per layout a family can claim: vector, sequence, grey and colour image, volume.
SHAPES = [(20,), (2, 12), (1, 8, 8), (3, 6, 5), (2, 3, 4, 4)]
VARIANTS = [
    {},
    {"batch_norm": True, "pool": "max", "stride": 2, "dropout": 0.3, "dropout_at": "both"},
    {"pool": "avg", "kernel_size": 4, "dropout": 0.2, "dropout_at": "conv"},
]


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


def _claimed(family: str) -> list[tuple[int, ...]]:
    return [shape for shape in SHAPES if FAMILIES.get(family).supports(shape) is None]


@pytest.mark.parametrize("family", FAMILIES.names())
def test_every_family_runs_on_every_shape_it_claims(family: str) -> None:
    shapes = _claimed(family)
    assert (1, 8, 8) in shapes, "every family applies to image data (seed 000 ran them on MNIST)"
    for shape in shapes:
        for variant in VARIANTS:
            arch = ArchSpec(family=family, depth=3, widths=(4, 6, 5), activation="relu", **variant)
            model = build(arch, shape, 7)
            out = model(torch.randn(4, *shape))
            assert out.shape == (4, 7), (shape, variant)
            out.sum().backward()
            assert all(p.grad is not None for p in model.parameters()), (shape, variant)


@pytest.mark.parametrize("family", FAMILIES.names())
def test_a_family_refuses_shapes_it_does_not_claim(family: str) -> None:
    for shape in SHAPES:
        if shape not in _claimed(family):
            with pytest.raises(ConfigError, match=f'family "{family}" needs samples of rank'):
                build(ArchSpec(family, 1, (4,), "relu"), shape, 3)


def test_vector_and_sequence_families() -> None:
    assert _claimed("linear") == SHAPES
    assert _claimed("conv1d") == [(20,), (2, 12), (1, 8, 8), (3, 6, 5)]
    assert _claimed("conv2d") == _claimed("resnet") == [(1, 8, 8), (3, 6, 5)]
    assert _claimed("conv3d_linear") == [(1, 8, 8), (3, 6, 5), (2, 3, 4, 4)]


def test_reshape_adapters_read_images_as_sequences_and_volumes() -> None:
    conv1d = build(ArchSpec("conv1d", 1, (4,), "relu"), (3, 6, 5), 2)
    assert isinstance(conv1d[0], Reshape) and conv1d[0].shape == (3, 30)
    conv3d = build(ArchSpec("conv3d_linear", 1, (4,), "relu"), (3, 6, 5), 2)
    assert isinstance(conv3d[0], Reshape) and conv3d[0].shape == (3, 1, 6, 5)
    vector = build(ArchSpec("conv1d_linear", 1, (4,), "relu"), (20,), 2)
    assert vector[0].shape == (1, 20)
    assert "Reshape(1, 20)" in repr(vector)


@pytest.mark.parametrize(("place", "count"), [("dense", 1), ("conv", 2), ("both", 3)])
def test_dropout_placements_of_seed_003(place: str, count: int) -> None:
    arch = ArchSpec("conv2d_linear", 2, (4, 4), "relu", dropout=0.5, dropout_at=place)
    model = build(arch, IMAGE, 10)
    assert sum(isinstance(m, torch.nn.Dropout) for m in model.modules()) == count
    assert sum(isinstance(m, torch.nn.Dropout) for m in build(
        ArchSpec("linear", 2, (4, 4), "relu", dropout=0.5), IMAGE, 10).modules()) == 2


def test_resnet_blocks_use_the_chosen_activation_and_widths() -> None:
    model = build(ArchSpec("resnet", 2, (4, 8), "tanh", batch_norm=True), IMAGE, 10)
    blocks = [m for m in model if isinstance(m, BasicBlock)]
    assert len(blocks) == 2
    assert all(isinstance(b.activation, torch.nn.Tanh) for b in blocks)
    assert [b.conv2.out_channels for b in blocks] == [4, 8]  # type: ignore[union-attr]
    assert isinstance(blocks[0].bn1, torch.nn.BatchNorm2d)


def test_pooling_and_stride_shrink_the_map_but_never_to_nothing() -> None:
    arch = ArchSpec("conv2d_linear", 5, (2,) * 5, "relu", pool="max", stride=2, kernel_size=4)
    head = build(arch, IMAGE, 10)[-1]
    assert isinstance(head, torch.nn.Linear) and head.in_features == 2  # 8 -> 2 -> 1 -> 1 ...


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


@pytest.mark.parametrize(("field", "value", "fragment"), [
    ("pool", "mean", 'arch.pool: unknown pool "mean"'),
    ("dropout_at", "dens", 'Did you mean "dense"'),
    ("dropout", 1.0, "0 <= dropout < 1"),
    ("stride", 0, "must be >= 1"),
])
def test_bad_arch_knobs_are_clear_errors(field: str, value: object, fragment: str) -> None:
    arch = ArchSpec.from_dict({**ArchSpec("conv2d", 1, (4,), "relu").to_dict(), field: value})
    with pytest.raises(ConfigError, match=fragment):
        build(arch, IMAGE, 10)


def test_spec_round_trip_and_unknown_keys() -> None:
    arch = ArchSpec("conv2d_linear", 2, (4, 8), "tanh", kernel_size=5, stride=2, pool="avg",
                    batch_norm=True, dropout=0.1, dropout_at="both")
    assert ArchSpec.from_dict(arch.to_dict()) == arch
    old = {"family": "linear", "depth": 1, "widths": [4], "activation": "relu", "kernel_size": 3}
    assert ArchSpec.from_dict(old) == ArchSpec("linear", 1, (4,), "relu")  # stored before the knobs
    with pytest.raises(ConfigError, match="unknown key"):
        ArchSpec.from_dict({**arch.to_dict(), "colour": "red"})
    with pytest.raises(ConfigError, match="one entry per layer"):
        ArchSpec("linear", 3, (4,), "relu")


def test_depth_zero_is_the_output_layer_alone() -> None:
    """Seed 000's Basic network: one Linear layer (7,850 weights on MNIST)."""
    from automl_nn.metrics import count_params

    assert count_params(build(ArchSpec("linear", 0, (), "relu"), (1, 28, 28), 10)) == 7850
    for family in FAMILIES.names():
        if FAMILIES.get(family).supports((1, 8, 8)) is None:
            model = build(ArchSpec(family, 0, (), "relu"), (1, 8, 8), 10)
            assert model(torch.zeros(2, 1, 8, 8)).shape == (2, 10), family


@pytest.mark.parametrize(("size", "stride", "batch_norm"), [(28, 2, True), (7, 2, False), (9, 3, True)])
def test_a_strided_shortcut_is_the_1x1_conv_of_every_stride_th_pixel(size: int, stride: int,
                                                                       batch_norm: bool) -> None:
    """BasicBlock computes its projection on the picked pixels (the CPU's strided 1x1 kernel
    corrupted memory); the values, parameters and state dict are those of the strided conv."""
    torch.manual_seed(0)
    block = BasicBlock(3, 8, stride=stride, batch_norm=batch_norm).eval()
    x = torch.randn(2, 3, size, size)
    with torch.no_grad():
        assert torch.allclose(block.project(x), block.shortcut(x), atol=1e-5)
        assert block(x).shape == (2, 8, -(-size // stride), -(-size // stride))
    assert "shortcut.0.weight" in block.state_dict()
