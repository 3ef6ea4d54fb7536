"""Building blocks: activations and layer families, each a registry entry.

A family turns an ArchSpec and the data's input shape into an `nn.Sequential` of standard torch
layers, so the model prints readably and exports as plain code. `supports(input_shape)` says whether
the family applies to data of that shape, and why not.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from automl_nn.registry import Registry
from automl_nn.spec import ArchSpec

Shape = tuple[int, ...]

ACTIVATIONS: Registry[Callable[[], nn.Module]] = Registry("activation")
ACTIVATIONS.add("none", nn.Identity)
ACTIVATIONS.add("relu", nn.ReLU)
ACTIVATIONS.add("selu", nn.SELU)
ACTIVATIONS.add("sigmoid", nn.Sigmoid)
ACTIVATIONS.add("tanh", nn.Tanh)


@dataclass(frozen=True)
class Family:
    """A layer family: how to build it and which input shapes it accepts."""

    build: Callable[[ArchSpec, Shape, int], nn.Sequential]
    convolutional: bool
    input_rank: int | None  # rank of one sample the family needs (3 = C,H,W); None = any
    description: str

    def supports(self, input_shape: Shape) -> str | None:
        """None when the family applies to samples of `input_shape`, else the reason it does not."""
        if self.input_rank is not None and len(input_shape) != self.input_rank:
            return (f"needs samples of rank {self.input_rank} (channels, height, width), "
                    f"but the data's samples have shape {tuple(input_shape)}")
        return None


FAMILIES: Registry[Family] = Registry("family")


def _activation(arch: ArchSpec) -> nn.Module:
    return ACTIVATIONS.get(arch.activation)()


def _flat_size(shape: Shape) -> int:
    size = 1
    for dim in shape:
        size *= dim
    return size


def _dense_stack(arch: ArchSpec, in_features: int) -> tuple[list[nn.Module], int]:
    layers: list[nn.Module] = []
    for width in arch.widths:
        layers += [nn.Linear(in_features, width), _activation(arch)]
        in_features = width
    return layers, in_features


def _conv2d_stack(arch: ArchSpec, in_channels: int) -> tuple[list[nn.Module], int]:
    layers: list[nn.Module] = []
    pad = arch.kernel_size // 2  # "same" size for odd kernels keeps small images from vanishing
    for width in arch.widths:
        layers += [nn.Conv2d(in_channels, width, arch.kernel_size, padding=pad), _activation(arch)]
        in_channels = width
    return layers, in_channels


def _conv_out_hw(arch: ArchSpec, hw: tuple[int, int]) -> tuple[int, int]:
    pad = arch.kernel_size // 2
    h, w = hw
    for _ in arch.widths:
        h, w = h + 2 * pad - arch.kernel_size + 1, w + 2 * pad - arch.kernel_size + 1
    return h, w


def build_linear(arch: ArchSpec, input_shape: Shape, n_outputs: int) -> nn.Sequential:
    """Flatten, `depth` Linear+activation layers, then a Linear output layer."""
    layers, features = _dense_stack(arch, _flat_size(input_shape))
    return nn.Sequential(nn.Flatten(), *layers, nn.Linear(features, n_outputs))


def build_conv2d(arch: ArchSpec, input_shape: Shape, n_outputs: int) -> nn.Sequential:
    """All-convolutional: Conv2d+activation layers, a 1x1 conv to the outputs, global average pool."""
    layers, channels = _conv2d_stack(arch, input_shape[0])
    head = [nn.Conv2d(channels, n_outputs, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return nn.Sequential(*layers, *head)


def build_conv2d_linear(arch: ArchSpec, input_shape: Shape, n_outputs: int) -> nn.Sequential:
    """Conv2d+activation layers, then flatten and a Linear output layer."""
    layers, channels = _conv2d_stack(arch, input_shape[0])
    h, w = _conv_out_hw(arch, (input_shape[1], input_shape[2]))
    if h < 1 or w < 1:
        raise ValueError(f"kernel {arch.kernel_size} x {arch.depth} layers shrinks "
                         f"{input_shape[1:]} images to nothing")
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(channels * h * w, n_outputs))


FAMILIES.add("linear", Family(build_linear, False, None, "fully connected layers"))
FAMILIES.add("conv2d", Family(build_conv2d, True, 3, "2-D convolutions, 1x1 conv head, global pool"))
FAMILIES.add("conv2d_linear", Family(build_conv2d_linear, True, 3,
                                     "2-D convolutions, then a linear head"))
