"""What a network costs and how well it does: the metric registry and the static measurements.

Static metrics (params, flops, memory, ops, latency) are measured on the untrained model for one
input, before training, so a candidate over a constraint costs nothing. They are cached per
architecture signature: a repeated architecture is never measured twice in a process.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from automl_nn.registry import Registry


@dataclass(frozen=True)
class MetricInfo:
    """A metric a study can optimize: its direction, unit, and whether it is known before training."""

    direction: str  # "maximize" or "minimize"
    unit: str
    static: bool
    description: str


METRICS: Registry[MetricInfo] = Registry("objective")
METRICS.add("accuracy", MetricInfo("maximize", "fraction", False, "validation accuracy"),
            aliases=("acc",))
METRICS.add("error", MetricInfo("minimize", "fraction", False, "validation error rate"))
METRICS.add("loss", MetricInfo("minimize", "nats", False, "validation loss"))
METRICS.add("params", MetricInfo("minimize", "count", True, "trainable parameters"))
METRICS.add("flops", MetricInfo("minimize", "FLOPs", True, "forward FLOPs for one input"))
METRICS.add("memory", MetricInfo("minimize", "bytes", True, "activation bytes for one input"))
METRICS.add("ops", MetricInfo("minimize", "count", True, "tensor operations in one forward pass"))
METRICS.add("latency", MetricInfo("minimize", "ms", True, "median forward time for one input"))
METRICS.add("mse", MetricInfo("minimize", "target units^2", False, "validation mean squared error"))
METRICS.add("mae", MetricInfo("minimize", "target units", False, "validation mean absolute error"))
METRICS.add("r2", MetricInfo("maximize", "fraction", False, "validation coefficient of determination"))
METRICS.add("train_time", MetricInfo("minimize", "s", False, "wall time of training"))

STATIC = tuple(name for name, info in METRICS.items() if info.static)
_CACHE: dict[str, dict[str, float]] = {}


def count_params(model: nn.Module) -> int:
    """Trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def count_flops(model: nn.Module, sample: torch.Tensor) -> int:
    """Forward FLOPs for `sample` (a batch of one), counting 2 per multiply-add like torch does."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(sample)
    return int(counter.get_total_flops())


def activation_bytes(model: nn.Module, sample: torch.Tensor) -> int:
    """Bytes of the input plus every leaf layer's output, for one input (what inference must hold)."""
    total = sample.numel() * sample.element_size()

    def hook(_module: nn.Module, _inputs: Any, output: Any) -> None:
        nonlocal total
        if isinstance(output, torch.Tensor):
            total += output.numel() * output.element_size()

    leaves = [m for m in model.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    try:
        with torch.no_grad():
            model(sample)
    finally:
        for handle in handles:
            handle.remove()
    return total


class _OpCounter(TorchFunctionMode):
    """Counts torch-level operations (F.linear, conv2d, relu, flatten, ...) of a forward pass."""

    _IGNORED = frozenset({"size", "dim", "__get__", "__len__", "numel", "stride", "is_floating_point"})

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        name = getattr(func, "__name__", "")
        if name not in self._IGNORED:
            self.count += 1
        return func(*args, **(kwargs or {}))


def count_ops(model: nn.Module, sample: torch.Tensor) -> int:
    """Number of tensor operations one forward pass performs (seed 000's "number of ops")."""
    with torch.no_grad(), _OpCounter() as counter:
        model(sample)
    return int(counter.count)


def latency_ms(model: nn.Module, sample: torch.Tensor, repeats: int = 20) -> float:
    """Median wall time of a forward pass on one input, in milliseconds, after one warm-up."""
    times = []
    with torch.no_grad():
        model(sample)
        for _ in range(repeats):
            start = time.perf_counter()
            model(sample)
            times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def static_metrics(model: nn.Module, input_shape: tuple[int, ...], signature: str) -> dict[str, float]:
    """params, flops, memory, ops and latency of `model` for one input, cached by `signature`."""
    if signature not in _CACHE:
        was_training = model.training
        model.eval()
        sample = torch.zeros((1, *input_shape))
        _CACHE[signature] = {
            "params": float(count_params(model)),
            "flops": float(count_flops(model, sample)),
            "memory": float(activation_bytes(model, sample)),
            "ops": float(count_ops(model, sample)),
            "latency": latency_ms(model, sample),
        }
        model.train(was_training)
    return dict(_CACHE[signature])
