"""Building blocks: activations, weight initializers and layer families, each a registry entry.

A family turns an ArchSpec and the data's input shape into an `nn.Sequential` of standard torch
layers (plus the small named modules below: `Reshape`, `Square`, `Sin`, `Sign`, `Gate`,
`BasicBlock`), so
the model prints readably and exports as plain code. `supports(input_shape)` says whether the family
applies to data of that shape, and why not; a family that needs another layout than the data's gets
a `Reshape` adapter in front (seed 000 ran Conv1d and Conv3d on MNIST that way).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from automl_nn.registry import Registry
from automl_nn.spec import ArchSpec

Shape = tuple[int, ...]


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
    """x ** 2 (seed 002's unusual activations)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * x


class Sin(nn.Module):
    """sin(x) (seed 002's unusual activations)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sin(x)


class Sign(nn.Module):
    """sign(x): its gradient is zero, so only layers after it learn (seed 002 shows exactly that)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sign(x)


class Gate(nn.Module):
    """Per-neuron gates: multiplies feature j by a learned g_j (seed 001's "dead/alive" vector).

    Sits after a hidden layer's activation, so a gate at zero silences its neuron exactly and the
    neuron can be cut out (see `shrink`). Gates start at 1; an L1 penalty on them (train.fit's
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


ACTIVATIONS: Registry[Callable[[], nn.Module]] = Registry("activation")
ACTIVATIONS.add("none", nn.Identity)
ACTIVATIONS.add("relu", nn.ReLU)
ACTIVATIONS.add("selu", nn.SELU)
ACTIVATIONS.add("sigmoid", nn.Sigmoid)
ACTIVATIONS.add("tanh", nn.Tanh)
ACTIVATIONS.add("gelu", nn.GELU)
ACTIVATIONS.add("leaky_relu", nn.LeakyReLU)
ACTIVATIONS.add("elu", nn.ELU)
ACTIVATIONS.add("silu", nn.SiLU)
ACTIVATIONS.add("square", Square)
ACTIVATIONS.add("sin", Sin)
ACTIVATIONS.add("sign", Sign)
# Same module as "none"; kept as its own name because seed 002 studies it as an activation.
ACTIVATIONS.add("identity", nn.Identity)


# ---- weight initializers -------------------------------------------------------------------------


@dataclass(frozen=True)
class Initializer:
    """How to fill one weight tensor; `uses_std` says whether the `init_std` knob applies."""

    fill: Callable[[torch.Tensor, float], object] | None  # fills in place; None: keep the default
    uses_std: bool = False


INITIALIZERS: Registry[Initializer] = Registry("initializer")
INITIALIZERS.add("default", Initializer(None))
INITIALIZERS.add("xavier_uniform", Initializer(lambda w, _: nn.init.xavier_uniform_(w)))
INITIALIZERS.add("xavier_normal", Initializer(lambda w, _: nn.init.xavier_normal_(w)))
INITIALIZERS.add("kaiming_uniform", Initializer(
    lambda w, _: nn.init.kaiming_uniform_(w, nonlinearity="relu")))
INITIALIZERS.add("kaiming_normal", Initializer(
    lambda w, _: nn.init.kaiming_normal_(w, nonlinearity="relu")))
INITIALIZERS.add("zeros", Initializer(lambda w, _: nn.init.zeros_(w)))
INITIALIZERS.add("ones", Initializer(lambda w, _: nn.init.ones_(w)))
INITIALIZERS.add("normal", Initializer(lambda w, std: nn.init.normal_(w, 0.0, std), uses_std=True))

_WEIGHTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def init_weights(model: nn.Module, name: str, std: float = 0.01) -> None:
    """Re-initialize every linear and conv weight of `model` with scheme `name`; biases become zero.

    "default" leaves PyTorch's own initialization untouched. Norm layers keep theirs (scale 1,
    shift 0), which every scheme assumes.
    """
    scheme = INITIALIZERS.get(name, "train.init")
    if scheme.fill is None:
        return
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, _WEIGHTED):
                scheme.fill(module.weight, std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)


# ---- layer pieces --------------------------------------------------------------------------------

_CONV: dict[int, type[nn.Module]] = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_NORM: dict[int, type[nn.Module]] = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
_POOL: dict[str, dict[int, type[nn.Module]]] = {
    "max": {1: nn.MaxPool1d, 2: nn.MaxPool2d, 3: nn.MaxPool3d},
    "avg": {1: nn.AvgPool1d, 2: nn.AvgPool2d, 3: nn.AvgPool3d},
}
_GLOBAL_POOL: dict[int, type[nn.Module]] = {
    1: nn.AdaptiveAvgPool1d, 2: nn.AdaptiveAvgPool2d, 3: nn.AdaptiveAvgPool3d}
POOLS = ("none", "max", "avg")
DROPOUT_PLACES = ("dense", "conv", "both")


def activation(name: str) -> nn.Module:
    """A fresh activation module for `name`."""
    return ACTIVATIONS.get(name, "arch.activation")()


def _dropout(arch: ArchSpec, place: str) -> list[nn.Module]:
    """A Dropout layer where the spec places one ("dense" or "conv"), else nothing."""
    if arch.dropout > 0 and arch.dropout_at in (place, "both"):
        return [nn.Dropout(arch.dropout)]
    return []


_PAD: dict[int, type[nn.Module]] = {1: nn.ConstantPad1d, 2: nn.ConstantPad2d, 3: nn.ConstantPad3d}


def _conv(dims: int, c_in: int, c_out: int, kernel: int, stride: int, bias: bool) -> nn.Module:
    """A conv with "same" padding: every axis becomes ceil(n / stride) long, for any kernel size.

    So the feature map never shrinks to nothing, whatever the depth, and a residual shortcut always
    matches. Even kernels need one more zero on one side, hence an explicit pad layer for them.
    """
    if kernel % 2:
        return _CONV[dims](c_in, c_out, kernel, stride=stride, padding=kernel // 2, bias=bias)
    low, high = (kernel - 1) // 2, kernel // 2
    pad = _PAD[dims]((low, high) * dims, 0.0)
    return nn.Sequential(pad, _CONV[dims](c_in, c_out, kernel, stride=stride, bias=bias))


def _conv_out(spatial: Shape, stride: int) -> Shape:
    return tuple(-(-s // stride) for s in spatial)


def _pool(arch: ArchSpec, dims: int, spatial: Shape) -> tuple[list[nn.Module], Shape]:
    """2-wide pooling on every axis that is still at least 2 long (small inputs stay non-empty)."""
    if arch.pool == "none":
        return [], spatial
    window = tuple(2 if s >= 2 else 1 for s in spatial)
    if all(w == 1 for w in window):
        return [], spatial
    layer = _POOL[arch.pool][dims](window)
    return [layer], tuple(s // w for s, w in zip(spatial, window, strict=True))


def _flat_size(shape: Shape) -> int:
    return math.prod(shape)


class BasicBlock(nn.Module):
    """ResNet's BasicBlock: two convs with an identity (or 1x1 projection) shortcut.

    The activation is a choice, not only ReLU (seed 000's footnote wished for exactly that).
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
        return self.activation(out + self.shortcut(x))  # type: ignore[no-any-return]


# ---- adapters: the data's sample shape -> the layout a family's layers need ----------------------

_RANK_LAYOUT = {1: "(features)", 2: "(channels, length)", 3: "(channels, height, width)",
                4: "(channels, depth, height, width)"}


def adapt(dims: int, shape: Shape) -> tuple[list[nn.Module], Shape]:
    """Reshape layers that present samples of `shape` as (channels, *`dims` spatial axes).

    dims 0 flattens (dense layers); 1 reads a vector as a 1-channel sequence and an image's rows as
    one long sequence per channel; 3 gives an image a depth axis of 1.
    """
    if dims == 0:
        return ([nn.Flatten()] if len(shape) != 1 else []), (_flat_size(shape),)
    if len(shape) == dims + 1:
        return [], shape
    if dims == 1:
        target: Shape = (1, shape[0]) if len(shape) == 1 else (shape[0], _flat_size(shape[1:]))
    elif dims == 3 and len(shape) == 3:
        target = (shape[0], 1, *shape[1:])
    else:
        raise ValueError(f"no adapter from samples of shape {shape} to {dims}-D convolutions")
    return [Reshape(target)], target


# ---- families ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Family:
    """A layer family: how to build it and which sample ranks it accepts (after its adapter)."""

    build: Callable[[ArchSpec, Shape, int], nn.Sequential]
    convolutional: bool
    ranks: tuple[int, ...] | None  # ranks of one sample it applies to (3 = C,H,W); None = any
    description: str
    # spatial dimensions of its convolutions (0: none); 2 and 3 can run channels_last on CUDA
    conv_dims: int = 0

    def supports(self, input_shape: Shape) -> str | None:
        """None when the family applies to samples of `input_shape`, else the reason it does not."""
        if self.ranks is None or len(input_shape) in self.ranks:
            return None
        layouts = " or ".join(f"rank {r} {_RANK_LAYOUT[r]}" for r in self.ranks)
        return f"needs samples of {layouts}, but the data's samples have shape {tuple(input_shape)}"


FAMILIES: Registry[Family] = Registry("family")


def _dense_stack(arch: ArchSpec, in_features: int) -> tuple[list[nn.Module], int]:
    layers: list[nn.Module] = []
    for width in arch.widths:
        layers.append(nn.Linear(in_features, width))
        layers += [nn.BatchNorm1d(width)] if arch.batch_norm else []
        layers.append(activation(arch.activation))
        layers += [Gate(width)] if arch.gated else []
        layers += _dropout(arch, "dense")
        in_features = width
    return layers, in_features


def _conv_stack(arch: ArchSpec, dims: int, shape: Shape) -> tuple[list[nn.Module], Shape]:
    """Conv (+ batch norm) + activation (+ pool) (+ dropout) per layer; returns the output shape."""
    layers: list[nn.Module] = []
    channels, spatial = shape[0], shape[1:]
    for width in arch.widths:
        layers.append(_conv(dims, channels, width, arch.kernel_size, arch.stride,
                            bias=not arch.batch_norm))
        layers += [_NORM[dims](width)] if arch.batch_norm else []
        layers.append(activation(arch.activation))
        spatial = _conv_out(spatial, arch.stride)
        pool, spatial = _pool(arch, dims, spatial)
        layers += [*pool, *_dropout(arch, "conv")]
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
        head = [_CONV[dims](channels, n_outputs, 1), _GLOBAL_POOL[dims](1), nn.Flatten()]
        return nn.Sequential(*adapter, *layers, *head)

    return build


def conv_linear_family(dims: int) -> Callable[[ArchSpec, Shape, int], nn.Sequential]:
    """`dims`-D conv layers, then flatten and a Linear output layer (seed 000's ConvNdThenLinear)."""

    def build(arch: ArchSpec, input_shape: Shape, n_outputs: int) -> nn.Sequential:
        adapter, shape = adapt(dims, input_shape)
        layers, out_shape = _conv_stack(arch, dims, shape)
        head = [nn.Flatten(), *_dropout(arch, "dense"), nn.Linear(_flat_size(out_shape), n_outputs)]
        return nn.Sequential(*adapter, *layers, *head)

    return build


def build_resnet(arch: ArchSpec, input_shape: Shape, n_outputs: int) -> nn.Sequential:
    """`depth` BasicBlocks of `widths` channels (+ pool, dropout), global average pool, Linear head."""
    layers: list[nn.Module] = []
    channels, spatial = input_shape[0], tuple(input_shape[1:])
    for width in arch.widths:
        layers.append(BasicBlock(channels, width, kernel_size=arch.kernel_size, stride=arch.stride,
                                 activation=activation(arch.activation), batch_norm=arch.batch_norm))
        spatial = _conv_out(spatial, arch.stride)
        pool, spatial = _pool(arch, 2, spatial)
        layers += [*pool, *_dropout(arch, "conv")]
        channels = width
    head = [nn.AdaptiveAvgPool2d(1), nn.Flatten(), *_dropout(arch, "dense"),
            nn.Linear(channels, n_outputs)]
    return nn.Sequential(*layers, *head)


FAMILIES.add("linear", Family(build_linear, False, None, "fully connected layers"))
FAMILIES.add("conv1d", Family(conv_family(1), True, (1, 2, 3),
                              "1-D convolutions (images read row by row), 1x1 conv head, global pool",
                              conv_dims=1))
FAMILIES.add("conv2d", Family(conv_family(2), True, (3,),
                              "2-D convolutions, 1x1 conv head, global pool", conv_dims=2))
FAMILIES.add("conv3d", Family(conv_family(3), True, (3, 4),
                              "3-D convolutions (images get a depth axis of 1), 1x1 conv head, global pool",
                              conv_dims=3))
FAMILIES.add("conv1d_linear", Family(conv_linear_family(1), True, (1, 2, 3),
                                     "1-D convolutions, then a linear head", conv_dims=1))
FAMILIES.add("conv2d_linear", Family(conv_linear_family(2), True, (3,),
                                     "2-D convolutions, then a linear head", conv_dims=2))
FAMILIES.add("conv3d_linear", Family(conv_linear_family(3), True, (3, 4),
                                     "3-D convolutions, then a linear head", conv_dims=3))
FAMILIES.add("resnet", Family(build_resnet, True, (3,),
                              "ResNet BasicBlocks (residual, 2-D), global pool, linear head", conv_dims=2))


# ---- gated width: cutting out the neurons whose gates are (near) zero ----------------------------


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


def shrink(model: nn.Sequential, threshold: float) -> nn.Sequential:
    """A plain copy of a gated dense network with the neurons of gates <= `threshold` removed.

    Each Gate disappears: the layers before it keep only the surviving neurons (Linear rows, batch
    norm entries) and the next Linear takes the surviving gate values into its columns. The result
    is exactly what `model.build` makes for the effective widths without gates, and computes what
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
