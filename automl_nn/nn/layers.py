"""Layers: the small named modules, activations, initializers and the conv pieces families share.

Standard torch layers plus a few named modules (`Reshape`, `Square`, `Sin`, `Sign`, `BasicBlock`),
so a model prints readably and exports as plain code. Activations and initializers register under
the names of `automl_nn.vocab`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from automl_nn.registry import Registry
from automl_nn.spec import ArchSpec
from automl_nn.vocab import Shape

# ---- small named modules -------------------------------------------------------------------------


class Reshape(nn.Module):
    """View every sample as `shape` (the batch dimension is kept): adapts data to a family's layers."""

    def __init__(self, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.shape = tuple(shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], *self.shape)

    def extra_repr(self) -> str:
        return ", ".join(str(d) for d in self.shape)


class Square(nn.Module):
    """x ** 2 (the atomic experiments' unusual activations)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * x


class Sin(nn.Module):
    """sin(x) (the atomic experiments' unusual activations)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(x)


class Sign(nn.Module):
    """sign(x): its gradient is zero, so only layers after it learn (the atomic experiments show it)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sign(x)


ACTIVATION_MODULES: Registry[Callable[[], nn.Module]] = Registry("activation")
ACTIVATION_MODULES.add("none", nn.Identity)
ACTIVATION_MODULES.add("relu", nn.ReLU)
ACTIVATION_MODULES.add("selu", nn.SELU)
ACTIVATION_MODULES.add("sigmoid", nn.Sigmoid)
ACTIVATION_MODULES.add("tanh", nn.Tanh)
ACTIVATION_MODULES.add("gelu", nn.GELU)
ACTIVATION_MODULES.add("leaky_relu", nn.LeakyReLU)
ACTIVATION_MODULES.add("elu", nn.ELU)
ACTIVATION_MODULES.add("silu", nn.SiLU)
ACTIVATION_MODULES.add("square", Square)
ACTIVATION_MODULES.add("sin", Sin)
ACTIVATION_MODULES.add("sign", Sign)
# the same module as "none" (see vocab.ACTIVATIONS)
ACTIVATION_MODULES.add("identity", nn.Identity)



# ---- weight initializers -------------------------------------------------------------------------

Fill = Callable[[torch.Tensor, float], object] | None  # fills in place; None: keep the default

INIT_FILLS: Registry[Fill] = Registry("initializer")
INIT_FILLS.add("default", None)
INIT_FILLS.add("xavier_uniform", (lambda w, _: nn.init.xavier_uniform_(w)))
INIT_FILLS.add("xavier_normal", (lambda w, _: nn.init.xavier_normal_(w)))
INIT_FILLS.add("kaiming_uniform", (
    lambda w, _: nn.init.kaiming_uniform_(w, nonlinearity="relu")))
INIT_FILLS.add("kaiming_normal", (
    lambda w, _: nn.init.kaiming_normal_(w, nonlinearity="relu")))
INIT_FILLS.add("zeros", (lambda w, _: nn.init.zeros_(w)))
INIT_FILLS.add("ones", (lambda w, _: nn.init.ones_(w)))
INIT_FILLS.add("normal", (lambda w, std: nn.init.normal_(w, 0.0, std)))

_WEIGHTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def init_weights(model: nn.Module, name: str, std: float = 0.01) -> None:
    """Re-initialize every linear and conv weight of `model` with scheme `name`; biases become zero.

    "default" leaves PyTorch's own initialization untouched. Norm layers keep theirs (scale 1,
    shift 0), which every scheme assumes.
    """
    fill = INIT_FILLS.get(name, "train.init")
    if fill is None:
        return
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, _WEIGHTED):
                fill(module.weight, std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)


# ---- layer pieces --------------------------------------------------------------------------------

CONV: dict[int, type[nn.Module]] = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
NORM: dict[int, type[nn.Module]] = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
_POOL: dict[str, dict[int, type[nn.Module]]] = {
    "max": {1: nn.MaxPool1d, 2: nn.MaxPool2d, 3: nn.MaxPool3d},
    "avg": {1: nn.AvgPool1d, 2: nn.AvgPool2d, 3: nn.AvgPool3d},
}
GLOBAL_POOL: dict[int, type[nn.Module]] = {
    1: nn.AdaptiveAvgPool1d, 2: nn.AdaptiveAvgPool2d, 3: nn.AdaptiveAvgPool3d}


def activation(name: str) -> nn.Module:
    """A fresh activation module for `name`."""
    return ACTIVATION_MODULES.get(name, "arch.activation")()


def dropout(arch: ArchSpec, place: str) -> list[nn.Module]:
    """A Dropout layer where the spec places one ("dense" or "conv"), else nothing."""
    if arch.dropout > 0 and arch.dropout_at in (place, "both"):
        return [nn.Dropout(arch.dropout)]
    return []


_PAD: dict[int, type[nn.Module]] = {1: nn.ConstantPad1d, 2: nn.ConstantPad2d, 3: nn.ConstantPad3d}


def same_conv(dims: int, c_in: int, c_out: int, kernel: int, stride: int, bias: bool) -> nn.Module:
    """A conv with "same" padding: every axis becomes ceil(n / stride) long, for any kernel size.

    So the feature map never shrinks to nothing, whatever the depth, and a residual shortcut always
    matches. Even kernels need one more zero on one side, hence an explicit pad layer for them.
    """
    if kernel % 2:
        return CONV[dims](c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=bias)
    low, high = (kernel - 1) // 2, kernel // 2
    pad = _PAD[dims]((low, high) * dims, 0.0)
    return nn.Sequential(pad, CONV[dims](c_in, c_out, kernel, stride=stride, bias=bias))


def conv_out(spatial: Shape, stride: int) -> Shape:
    return tuple(-(-s // stride) for s in spatial)


def pool(arch: ArchSpec, dims: int, spatial: Shape) -> tuple[list[nn.Module], Shape]:
    """2-wide pooling on every axis that is still at least 2 long (small inputs stay non-empty)."""
    if arch.pool == "none":
        return [], spatial
    window = tuple(2 if s >= 2 else 1 for s in spatial)
    if all(w == 1 for w in window):
        return [], spatial
    layer = _POOL[arch.pool][dims](window)
    return [layer], tuple(s // w for s, w in zip(spatial, window, strict=True))


def flat_size(shape: Shape) -> int:
    return math.prod(shape)


class BasicBlock(nn.Module):
    """ResNet's BasicBlock: two convs with an identity (or 1x1 projection) shortcut.

    The activation is a choice, not only ReLU (the 1001-networks study's footnote wished for exactly that).
    Self-contained (imports only torch) and keeping its arguments as attributes, so an export
    can write it out as code.
    """

    def __init__(self, c_in: int, c_out: int, kernel_size: int = 3, stride: int = 1,
                 activation: nn.Module | None = None, batch_norm: bool = True) -> None:
        super().__init__()
        self.c_in, self.c_out, self.kernel_size, self.stride = c_in, c_out, kernel_size, stride
        self.batch_norm = batch_norm
        self.activation = activation if activation is not None else nn.ReLU()  # stateless: used twice
        self.conv1 = self.same_conv(c_in, c_out, kernel_size, stride, bias=not batch_norm)
        self.bn1 = nn.BatchNorm2d(c_out) if batch_norm else nn.Identity()
        self.conv2 = self.same_conv(c_out, c_out, kernel_size, 1, bias=not batch_norm)
        self.bn2 = nn.BatchNorm2d(c_out) if batch_norm else nn.Identity()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=not batch_norm),
                nn.BatchNorm2d(c_out) if batch_norm else nn.Identity())

    @staticmethod
    def same_conv(c_in: int, c_out: int, kernel: int, stride: int, bias: bool) -> nn.Module:
        """A Conv2d whose output is ceil(n / stride) long on each axis (even kernels pad unevenly)."""
        if kernel % 2:
            return nn.Conv2d(c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=bias)
        low, high = (kernel - 1) // 2, kernel // 2
        return nn.Sequential(nn.ZeroPad2d((low, high, low, high)),
                             nn.Conv2d(c_in, c_out, kernel, stride=stride, bias=bias))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.activation(self.bn1(self.conv1(x)))))
        return self.activation(out + self.project(x))  # type: ignore[no-any-return]

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """The shortcut. A strided projection is its 1x1 conv applied to every stride-th pixel, which
        is the same sum: the CPU's strided 1x1 convolution kernel (oneDNN, torch 2.14) corrupted the
        heap when a network had run once at batch 1 (as its metrics do) and then trained."""
        if self.stride == 1 or not isinstance(self.shortcut, nn.Sequential):
            return self.shortcut(x)  # type: ignore[no-any-return]
        conv, norm = self.shortcut[0], self.shortcut[1]
        assert isinstance(conv, nn.Conv2d)
        picked = x[..., ::self.stride, ::self.stride]
        return norm(nn.functional.conv2d(picked, conv.weight, conv.bias))  # type: ignore[no-any-return]


# ---- adapters: the data's sample shape -> the layout a family's layers need ----------------------

def adapt(dims: int, shape: Shape) -> tuple[list[nn.Module], Shape]:
    """Reshape layers that present samples of `shape` as (channels, *`dims` spatial axes).

    dims 0 flattens (dense layers); 1 reads a vector as a 1-channel sequence and an image's rows as
    one long sequence per channel; 3 gives an image a depth axis of 1.
    """
    if dims == 0:
        return ([nn.Flatten()] if len(shape) != 1 else []), (flat_size(shape),)
    if len(shape) == dims + 1:
        return [], shape
    if dims == 1:
        target: Shape = (1, shape[0]) if len(shape) == 1 else (shape[0], flat_size(shape[1:]))
    elif dims == 3 and len(shape) == 3:
        target = (shape[0], 1, *shape[1:])
    else:
        raise ValueError(f"no adapter from samples of shape {shape} to {dims}-D convolutions")
    return [Reshape(target)], target


