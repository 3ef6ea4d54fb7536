"""build(ArchSpec, input_shape, n_outputs) -> nn.Module. Pure: no data, no trainer, no study."""

from __future__ import annotations

from torch import nn

from automl_nn.blocks import ACTIVATIONS, FAMILIES, Shape
from automl_nn.errors import ConfigError
from automl_nn.spec import ArchSpec


def build(arch: ArchSpec, input_shape: Shape, n_outputs: int) -> nn.Module:
    """The network `arch` describes, for samples of `input_shape` and `n_outputs` outputs."""
    family = FAMILIES.get(arch.family, "arch.family")
    ACTIVATIONS.canonical(arch.activation, "arch.activation")
    reason = family.supports(input_shape)
    if reason is not None:
        raise ConfigError(f'family "{arch.family}" {reason}. Choose a family that fits the data.')
    return family.build(arch, tuple(input_shape), n_outputs)


def applicable_families(names: list[str], input_shape: Shape) -> dict[str, str]:
    """Of `names`, those that cannot apply to `input_shape`, mapped to the reason why."""
    excluded = {}
    for name in names:
        reason = FAMILIES.get(name).supports(input_shape)
        if reason is not None:
            excluded[name] = reason
    return excluded
