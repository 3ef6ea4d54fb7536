"""What one trial trains: an architecture (ArchSpec) and a training recipe (TrainSpec).

Plain, frozen, JSON-safe values. A Candidate rebuilds its model anywhere (export, `train`, tests)
without a study; `from_dict` rejects keys it does not know so a stored spec is never half-read.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, fields
from typing import Any, TypeVar

from automl_nn.errors import ConfigError, unknown_name

S = TypeVar("S")


def _from_dict(cls: type[S], data: dict[str, Any], where: str) -> S:
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - known)
    if unknown:
        raise unknown_name("key", unknown[0], sorted(known), f"{where}.{unknown[0]}")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    return cls(**values)


@dataclass(frozen=True)
class ArchSpec:
    """The network: family, depth and widths, activation and the family's own knobs.

    For resnet, `depth` counts residual blocks and `widths` are their channels. Fields added after
    the first release carry defaults that reproduce the networks built before them.
    """

    family: str
    depth: int
    widths: tuple[int, ...]
    activation: str
    kernel_size: int = 3
    stride: int = 1
    pool: str = "none"  # "none", "max" or "avg": 2-wide pooling after each conv layer or block
    batch_norm: bool = False
    dropout: float = 0.0
    dropout_at: str = "dense"  # "dense", "conv" or "both" (the CIFAR-10 tricks study's three placements)
    # width_mode gated: a Gate after each dense hidden layer; after training, neurons whose gate is
    # at or below gate_threshold in magnitude are cut out (the sparsifier study)
    gated: bool = False
    gate_threshold: float = 0.01

    def __post_init__(self) -> None:
        if len(self.widths) != self.depth:
            raise ConfigError(
                f"ArchSpec: widths must have one entry per layer, but got depth={self.depth}, "
                f"widths={list(self.widths)}."
            )

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["widths"] = list(self.widths)
        return data

    def shrunk(self, widths: tuple[int, ...]) -> ArchSpec:
        """The plain (ungated) architecture a gated one shrank to: same layers, `widths` wide."""
        return dataclasses.replace(self, widths=tuple(widths), gated=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ArchSpec:
        return _from_dict(cls, data, "arch")


@dataclass(frozen=True)
class TrainSpec:
    """How the network is trained: optimizer, learning rate, batch size, epochs, loss, seed.

    Regularizers (l1, l2, weight_decay, label_smoothing), the weight initializer, the learning-rate
    schedule and input normalization default to "off", which is how every network trained before
    they existed.
    """

    optimizer: str
    lr: float
    batch_size: int
    epochs: int
    loss: str = "cross_entropy"
    momentum: float = 0.9
    seed: int = 0
    nesterov: bool = False
    weight_decay: float = 0.0
    l1: float = 0.0
    l2: float = 0.0
    label_smoothing: float = 0.0
    init: str = "default"
    init_std: float = 0.01
    schedule: str = "none"
    lr_gamma: float = 0.8  # The CIFAR-10 tricks study decays the learning rate by about 20% per epoch
    lr_step: int = 2
    normalize: bool = True
    gate_l1: float = 0.0  # L1 strength on the gates of a gated architecture
    # The gates' own learning rate (a parameter group without weight decay). None: the gates train
    # with the network's lr and weight decay, as every gated trial did before this field existed.
    gate_lr: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainSpec:
        return _from_dict(cls, data, "train")


@dataclass(frozen=True)
class Candidate:
    """One point of the search space: what to build and how to train it."""

    arch: ArchSpec
    train: TrainSpec

    def to_dict(self) -> dict[str, Any]:
        return {"arch": self.arch.to_dict(), "train": self.train.to_dict()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Candidate:
        return cls(ArchSpec.from_dict(data["arch"]), TrainSpec.from_dict(data["train"]))

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


@dataclass(frozen=True)
class AccelConfig:
    """The acceleration options a study runs with (study file keys / `search` flags)."""

    amp: str = "auto"  # auto, off, bf16 or fp16 (fp16 scales the loss with torch.amp.GradScaler)
    channels_last: str = "auto"  # auto, on or off; applies to 2-d/3-d convolutional families only
    compile: bool = False  # torch.compile the model: pays off only for long trials, hence off
