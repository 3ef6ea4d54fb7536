"""Weights files: a model's state dict to bytes and back, refusing anything but plain tensors."""

from __future__ import annotations

import io
from pathlib import Path

import torch
from torch import nn

from automl_nn.accel import plain, plain_state
from automl_nn.errors import StorageError


def state_bytes(model: nn.Module) -> bytes:
    """The model's state dict (CPU tensors) as a torch.save file.

    Always the plain module's: no torch.compile key prefix, default (contiguous) memory layout.
    """
    state = plain_state({k: v.detach().cpu() for k, v in plain(model).state_dict().items()})
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def load_state(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from `path`; weights_only=True is explicit, so no pickled code ever runs."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise StorageError(f"weights file {path}: not a plain state dict of tensors ({type(exc).__name__}); "
                           "it was refused without running any of its content.") from None
    if not isinstance(state, dict):
        raise StorageError(f"weights file {path}: expected a state dict, but got {type(state).__name__}.")
    return plain_state(state)  # a state dict saved from a compiled module loads too
