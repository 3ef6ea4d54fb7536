"""Gated width: per-neuron gates on dense hidden layers, and cutting out the neurons they silence."""

from __future__ import annotations

import copy

import torch
from torch import nn


class Gate(nn.Module):
    """Per-neuron gates: multiplies feature j by a learned g_j (the sparsifier study's "dead/alive" vector).

    Sits after a hidden layer's activation, so a gate at zero silences its neuron exactly and the
    neuron can be cut out (see `cut`). Gates start at 1; an L1 penalty on them (train.fit's
    `gate_l1`) drives the neurons the network can spare towards zero.
    """

    def __init__(self, features: int) -> None:
        super().__init__()
        self.features = features
        self.weight = nn.Parameter(torch.ones(features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight

    def extra_repr(self) -> str:
        return str(self.features)



def gates(model: nn.Module) -> list[Gate]:
    """The model's Gate layers, in order."""
    return [m for m in model.modules() if isinstance(m, Gate)]


def kept_neurons(gate: Gate, threshold: float) -> torch.Tensor:
    """Indices of the neurons whose gate is above `threshold` in magnitude (at least one).

    A layer keeps one neuron even when every gate is below the threshold, so the network stays
    connected and buildable; that neuron's gate is treated as zero, so it contributes nothing.
    """
    keep = torch.nonzero(gate.weight.detach().abs() > threshold).flatten()
    return keep if keep.numel() else torch.zeros(1, dtype=torch.long, device=gate.weight.device)


def effective_widths(model: nn.Module, threshold: float) -> tuple[int, ...]:
    """Hidden widths after cutting every neuron whose gate is at or below `threshold`."""
    return tuple(int(kept_neurons(g, threshold).numel()) for g in gates(model))


def cut(model: nn.Sequential, threshold: float) -> nn.Sequential:
    """A plain copy of a gated dense network with the neurons of gates <= `threshold` removed.

    Each Gate disappears: the layers before it keep only the surviving neurons (Linear rows, batch
    norm entries) and the next Linear takes the surviving gate values into its columns. The result
    is exactly what `automl_nn.nn.build` makes for the effective widths without gates, and computes what
    `model` computes with the gates at or below the threshold set to zero (up to float rounding).
    """
    layers = [copy.deepcopy(m) for m in model]
    for i, layer in enumerate(layers):
        if not isinstance(layer, Gate):
            continue
        keep = kept_neurons(layer, threshold)
        scale = torch.where(layer.weight.detach().abs() > threshold, layer.weight.detach(), 0.0)[keep]
        _keep_outputs(layers[:i], keep)
        _scale_inputs(layers[i + 1:], keep, scale)
    return nn.Sequential(*(m for m in layers if not isinstance(m, Gate)))


def _keep_outputs(before: list[nn.Module], keep: torch.Tensor) -> None:
    """Cut the rows of the last Linear before a gate, and its batch norm's entries."""
    with torch.no_grad():
        for layer in reversed(before):
            if isinstance(layer, nn.BatchNorm1d):
                _slice_norm(layer, keep)
            if isinstance(layer, nn.Linear):
                layer.weight = nn.Parameter(layer.weight[keep].clone())
                if layer.bias is not None:
                    layer.bias = nn.Parameter(layer.bias[keep].clone())
                layer.out_features = int(keep.numel())
                return
    raise ValueError("a Gate must follow a Linear layer")


def _slice_norm(norm: nn.BatchNorm1d, keep: torch.Tensor) -> None:
    norm.num_features = int(keep.numel())
    if norm.affine:
        norm.weight = nn.Parameter(norm.weight[keep].clone())
        norm.bias = nn.Parameter(norm.bias[keep].clone())
    if norm.running_mean is not None and norm.running_var is not None:
        norm.running_mean = norm.running_mean[keep].clone()
        norm.running_var = norm.running_var[keep].clone()


def _scale_inputs(after: list[nn.Module], keep: torch.Tensor, scale: torch.Tensor) -> None:
    """Keep the next Linear's columns of the surviving neurons, times their gate values."""
    with torch.no_grad():
        for layer in after:
            if isinstance(layer, nn.Linear):
                layer.weight = nn.Parameter((layer.weight[:, keep] * scale).clone())
                layer.in_features = int(keep.numel())
                return
    raise ValueError("a Gate must be followed by a Linear layer")
