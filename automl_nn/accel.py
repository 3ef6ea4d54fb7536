"""Runtime acceleration: mixed precision, channels_last memory layout and torch.compile.

These options change how fast a trial trains, not what it means, so they are neither search-space
parameters nor part of the study identity. They are kept in the stored study config all the same,
so that `automl-nn worker`, which reads its config from storage, trains the way the search does.

`AccelConfig` is what the user asked for (`auto` included); `Runtime` is what one trial gets on one
device for one model family. `auto` means: bf16 autocast on a CUDA device with native bf16, and
channels_last for 2-d/3-d convolutional families on CUDA; on the CPU it is off (measured slower
there, see docs/benchmarks.md).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import nn

from automl_nn.errors import ConfigError
from automl_nn.spec import AccelConfig as AccelConfig
from automl_nn.vocab import FAMILIES

COMPILED_PREFIX = "_orig_mod."  # what torch.compile puts in front of every state-dict key
_MEMORY_FORMATS = {2: torch.channels_last, 3: torch.channels_last_3d}  # by conv dims
_AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Runtime:
    """How one trial runs: autocast dtype, memory layout and compilation, resolved for a device."""

    device_type: str = "cpu"
    amp: torch.dtype | None = None  # autocast dtype; None trains in fp32
    memory_format: torch.memory_format | None = None  # channels_last(_3d), or None for as-is
    compile: bool = False

    @property
    def scaled(self) -> bool:
        """fp16 gradients underflow without loss scaling; bf16 has fp32's range and needs none."""
        return self.amp is torch.float16

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """The forward pass's precision: autocast to `amp`, or plain fp32."""
        if self.amp is None:
            yield
            return
        with torch.autocast(self.device_type, dtype=self.amp):
            yield

    def forward(self, model: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """`model(x)` under autocast with `x` in the model's memory layout; the output in fp32.

        Losses and metrics are computed on the fp32 output, outside autocast.
        """
        with self.autocast():
            out: torch.Tensor = model(self.batch(x))
        return out.float()

    def batch(self, x: torch.Tensor) -> torch.Tensor:
        """A batch in the memory layout of the model's convolutions (no copy when it already is)."""
        if self.memory_format is None or x.dim() != _rank(self.memory_format):
            return x
        return x.contiguous(memory_format=self.memory_format)

    def prepare(self, model: nn.Module) -> nn.Module:
        """Put the model's conv weights in channels_last (in place); other weights stay as they are."""
        if self.memory_format is not None:
            model.to(memory_format=self.memory_format)
        return model

    def compiled(self, model: nn.Module) -> nn.Module:
        """What training calls: torch.compile(model) when asked for, else the model itself.

        The compiled wrapper shares the model's parameters, so the plain module stays the one to
        save and export.
        """
        if not self.compile:
            return model
        return torch.compile(model)  # type: ignore[return-value]

    def grad_scaler(self) -> torch.amp.GradScaler | None:
        return torch.amp.GradScaler(self.device_type) if self.scaled else None


PLAIN = Runtime()  # fp32, layout as built, eager: what every trial ran before these options


def _rank(memory_format: torch.memory_format) -> int:
    return 5 if memory_format is torch.channels_last_3d else 4


def amp_dtype(mode: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype `mode` means on `device`; None for fp32.

    auto: bf16 on a CUDA device with native bf16 (Ampere and later), else off. An explicit bf16 on a
    CUDA device without native bf16 is refused: it would run emulated, slower than fp32.
    """
    if mode == "off" or (mode == "auto" and device.type != "cuda"):
        return None
    native = device.type == "cuda" and _native_bf16(device)
    if mode == "auto":
        return torch.bfloat16 if native else None
    if mode == "bf16" and device.type == "cuda" and not native:
        raise ConfigError(f"amp: bf16 was asked for, but the GPU {device} has no native bfloat16 "
                          "(it would run emulated, slower than fp32). Use --amp fp16 or --amp auto.")
    return _AMP_DTYPES[mode]


def _native_bf16(device: torch.device) -> bool:
    with torch.cuda.device(device):
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))


def memory_format(mode: str, device: torch.device, family: str) -> torch.memory_format | None:
    """channels_last for a 2-d (channels_last_3d for a 3-d) convolutional family, when `mode` says so.

    auto: on CUDA only. Families without 2-d/3-d convolutions keep their layout whatever the mode.
    """
    dims = FAMILIES.get(family).conv_dims
    if mode == "off" or dims not in _MEMORY_FORMATS or (mode == "auto" and device.type != "cuda"):
        return None
    return _MEMORY_FORMATS[dims]


def runtime_for(config: AccelConfig, device: torch.device, family: str) -> Runtime:
    """The Runtime of one trial of `family` on `device`."""
    return Runtime(device.type, amp_dtype(config.amp, device),
                   memory_format(config.channels_last, device, family), config.compile)


def setup(device: torch.device) -> None:
    """Process-wide settings for `device`: cuDNN picks the fastest kernels for each shape it sees."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True


def plain(model: nn.Module) -> nn.Module:
    """The module a torch.compile wrapper holds (the model itself when it is not compiled)."""
    inner = getattr(model, "_orig_mod", None)
    return inner if isinstance(inner, nn.Module) else model


def plain_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict without torch.compile's `_orig_mod.` key prefix, in the default memory layout.

    So weights load into a freshly built (uncompiled, contiguous) model, whatever trained them.
    """
    if state and all(key.startswith(COMPILED_PREFIX) for key in state):
        state = {key.removeprefix(COMPILED_PREFIX): value for key, value in state.items()}
    return {key: value.contiguous() for key, value in state.items()}
