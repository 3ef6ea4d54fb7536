"""Layer families: an ArchSpec and the data's sample shape -> an `nn.Sequential` of torch layers.

Every family of `automl_nn.vocab.FAMILIES` registers a builder under its name; `build` checks the
spec and that the family applies to the data's shape (a family that needs another layout than the
data's gets a `Reshape` adapter in front: Conv1d and Conv3d run on images that way).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from automl_nn.errors import ConfigError, one_of
from automl_nn.nn.gates import Gate
from automl_nn.nn.layers import (
    CONV,
    GLOBAL_POOL,
    NORM,
    BasicBlock,
    activation,
    adapt,
    conv_out,
    dropout,
    flat_size,
    pool,
    same_conv,
)
from automl_nn.registry import Registry
from automl_nn.spec import ArchSpec
from automl_nn.vocab import ACTIVATIONS, DROPOUT_PLACES, FAMILIES, POOLS, Shape

Builder = Callable[[ArchSpec, Shape, int], nn.Sequential]
BUILDERS: Registry[Builder] = Registry("family")


def _dense_stack(arch: ArchSpec, in_features: int) -> tuple[list[nn.Module], int]:
    layers: list[nn.Module] = []
    for width in arch.widths:
        layers.append(nn.Linear(in_features, width))
        layers += [nn.BatchNorm1d(width)] if arch.batch_norm else []
        layers.append(activation(arch.activation))
        layers += [Gate(width)] if arch.gated else []
        layers += dropout(arch, "dense")
        in_features = width
    return layers, in_features


def _conv_stack(arch: ArchSpec, dims: int, shape: Shape) -> tuple[list[nn.Module], Shape]:
    """Conv (+ batch norm) + activation (+ pool) (+ dropout) per layer; returns the output shape."""
    layers: list[nn.Module] = []
    channels, spatial = shape[0], shape[1:]
    for width in arch.widths:
        layers.append(same_conv(dims, channels, width, arch.kernel_size, arch.stride,
                            bias=not arch.batch_norm))
        layers += [NORM[dims](width)] if arch.batch_norm else []
        layers.append(activation(arch.activation))
        spatial = conv_out(spatial, arch.stride)
        pooling, spatial = pool(arch, dims, spatial)
        layers += [*pooling, *dropout(arch, "conv")]
        channels = width
    return layers, (channels, *spatial)


def build_linear(arch: ArchSpec, input_shape: Shape, n_outputs: int) -> nn.Sequential:
    """Flatten, `depth` Linear+activation layers, then a Linear output layer."""
    adapter, (features,) = adapt(0, input_shape)
    layers, features = _dense_stack(arch, features)
    return nn.Sequential(*adapter, *layers, nn.Linear(features, n_outputs))


def conv_family(dims: int) -> Callable[[ArchSpec, Shape, int], nn.Sequential]:
    """All-convolutional `dims`-D family: conv layers, a 1x1 conv to the outputs, global average pool."""

    def build(arch: ArchSpec, input_shape: Shape, n_outputs: int) -> nn.Sequential:
        adapter, shape = adapt(dims, input_shape)
        layers, (channels, *_) = _conv_stack(arch, dims, shape)
        head = [CONV[dims](channels, n_outputs, 1), GLOBAL_POOL[dims](1), nn.Flatten()]
        return nn.Sequential(*adapter, *layers, *head)

    return build


def conv_linear_family(dims: int) -> Callable[[ArchSpec, Shape, int], nn.Sequential]:
    """`dims`-D conv layers, then flatten and a Linear output layer (ConvNdThenLinear of the
    1001-networks study)."""

    def build(arch: ArchSpec, input_shape: Shape, n_outputs: int) -> nn.Sequential:
        adapter, shape = adapt(dims, input_shape)
        layers, out_shape = _conv_stack(arch, dims, shape)
        head = [nn.Flatten(), *dropout(arch, "dense"), nn.Linear(flat_size(out_shape), n_outputs)]
        return nn.Sequential(*adapter, *layers, *head)

    return build


def build_resnet(arch: ArchSpec, input_shape: Shape, n_outputs: int) -> nn.Sequential:
    """`depth` BasicBlocks of `widths` channels (+ pool, dropout), global average pool, Linear head."""
    layers: list[nn.Module] = []
    channels, spatial = input_shape[0], tuple(input_shape[1:])
    for width in arch.widths:
        layers.append(BasicBlock(channels, width, kernel_size=arch.kernel_size, stride=arch.stride,
                                 activation=activation(arch.activation), batch_norm=arch.batch_norm))
        spatial = conv_out(spatial, arch.stride)
        pooling, spatial = pool(arch, 2, spatial)
        layers += [*pooling, *dropout(arch, "conv")]
        channels = width
    head = [nn.AdaptiveAvgPool2d(1), nn.Flatten(), *dropout(arch, "dense"),
            nn.Linear(channels, n_outputs)]
    return nn.Sequential(*layers, *head)


BUILDERS.add("linear", build_linear)
BUILDERS.add("conv1d", conv_family(1))
BUILDERS.add("conv2d", conv_family(2))
BUILDERS.add("conv3d", conv_family(3))
BUILDERS.add("conv1d_linear", conv_linear_family(1))
BUILDERS.add("conv2d_linear", conv_linear_family(2))
BUILDERS.add("conv3d_linear", conv_linear_family(3))
BUILDERS.add("resnet", build_resnet)


def build(arch: ArchSpec, input_shape: Shape, n_outputs: int) -> nn.Module:
    """The network `arch` describes, for samples of `input_shape` and `n_outputs` outputs."""
    info = FAMILIES.get(arch.family, "arch.family")
    _check_arch(arch)
    reason = info.supports(input_shape)
    if reason is not None:
        raise ConfigError(f'family "{arch.family}" {reason}. Choose a family that fits the data.')
    return BUILDERS.get(arch.family)(arch, tuple(input_shape), n_outputs)


def _check_arch(arch: ArchSpec) -> None:
    """Names and numbers a stored or hand-written spec could get wrong, with what to write instead."""
    ACTIVATIONS.canonical(arch.activation, "arch.activation")
    one_of(arch.pool, POOLS, "arch.pool", kind="pool")
    one_of(arch.dropout_at, DROPOUT_PLACES, "arch.dropout_at", kind="dropout placement")
    if not 0.0 <= arch.dropout < 1.0:
        raise ConfigError(f"arch.dropout: must satisfy 0 <= dropout < 1, but got {arch.dropout}.")
    if arch.gated and FAMILIES.get(arch.family).convolutional:
        raise ConfigError(f"arch.gated: gates sit on dense hidden layers, which the {arch.family} "
                          "family does not have. Use the linear family, or gated: false.")
    if arch.kernel_size < 1 or arch.stride < 1 or min(arch.widths, default=1) < 1:
        raise ConfigError(f"arch: kernel_size, stride and widths must be >= 1, but got "
                          f"kernel_size={arch.kernel_size}, stride={arch.stride}, "
                          f"widths={list(arch.widths)}.")
