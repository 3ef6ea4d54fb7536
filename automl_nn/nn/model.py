"""build(ArchSpec, input_shape, n_outputs) -> nn.Module. Pure: no data, no trainer, no study."""

from __future__ import annotations

from torch import nn

from automl_nn.errors import ConfigError, suggest
from automl_nn.nn.blocks import ACTIVATIONS, DROPOUT_PLACES, FAMILIES, POOLS, Shape
from automl_nn.spec import ArchSpec


def build(arch: ArchSpec, input_shape: Shape, n_outputs: int) -> nn.Module:
    """The network `arch` describes, for samples of `input_shape` and `n_outputs` outputs."""
    family = FAMILIES.get(arch.family, "arch.family")
    _check_arch(arch)
    reason = family.supports(input_shape)
    if reason is not None:
        raise ConfigError(f'family "{arch.family}" {reason}. Choose a family that fits the data.')
    return family.build(arch, tuple(input_shape), n_outputs)


def _check_arch(arch: ArchSpec) -> None:
    """Names and numbers a stored or hand-written spec could get wrong, with what to write instead."""
    ACTIVATIONS.canonical(arch.activation, "arch.activation")
    _one_of(arch.pool, POOLS, "arch.pool")
    _one_of(arch.dropout_at, DROPOUT_PLACES, "arch.dropout_at")
    if not 0.0 <= arch.dropout < 1.0:
        raise ConfigError(f"arch.dropout: must satisfy 0 <= dropout < 1, but got {arch.dropout}.")
    if arch.gated and FAMILIES.get(arch.family).convolutional:
        raise ConfigError(f"arch.gated: gates sit on dense hidden layers, which the {arch.family} "
                          "family does not have. Use the linear family, or gated: false.")
    if arch.kernel_size < 1 or arch.stride < 1 or min(arch.widths, default=1) < 1:
        raise ConfigError(f"arch: kernel_size, stride and widths must be >= 1, but got "
                          f"kernel_size={arch.kernel_size}, stride={arch.stride}, "
                          f"widths={list(arch.widths)}.")


def _one_of(value: str, valid: tuple[str, ...], where: str) -> None:
    if value not in valid:
        raise ConfigError(f'{where}: unknown value "{value}".{suggest(value, valid)} '
                          f"Valid values: {', '.join(valid)}.")


def applicable_families(names: list[str], input_shape: Shape) -> dict[str, str]:
    """Of `names`, those that cannot apply to `input_shape`, mapped to the reason why."""
    excluded = {}
    for name in names:
        reason = FAMILIES.get(name).supports(input_shape)
        if reason is not None:
            excluded[name] = reason
    return excluded
