"""What a network costs: the static measurements (the metrics' names and units are in `vocab`).

Static metrics (params, flops, memory, ops, latency) are measured on the untrained model for one
input, before training, so a candidate over a constraint costs nothing. They are cached per
architecture signature: a repeated architecture is never measured twice in a process.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

_CACHE: dict[str, dict[str, float]] = {}  # architecture, input shape, outputs -> static metrics
LATENCY_REPEATS = 20  # timed forward passes at most
LATENCY_MIN_REPEATS = 3  # ... and at least, however slow the network
LATENCY_BUDGET_S = 0.2  # a candidate's latency costs about this much, not 20 passes of a slow net


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
    """Number of tensor operations one forward pass performs (the 1001-networks study's "number of ops")."""
    with torch.no_grad(), _OpCounter() as counter:
        model(sample)
    return int(counter.count)


def latency_ms(model: nn.Module, sample: torch.Tensor, repeats: int = LATENCY_REPEATS,
               budget_s: float = LATENCY_BUDGET_S) -> float:
    """Median wall time of a forward pass on one input, in milliseconds, after one warm-up.

    Up to `repeats` timed passes, stopping once they have taken `budget_s` (but never fewer
    than LATENCY_MIN_REPEATS), so a slow network costs a fixed fraction of a second.
    """
    times: list[float] = []
    with torch.no_grad():
        model(sample)
        while len(times) < repeats and (len(times) < LATENCY_MIN_REPEATS or sum(times) < budget_s * 1e3):
            start = time.perf_counter()
            model(sample)
            times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def static_metrics(model: nn.Module, input_shape: tuple[int, ...], signature: str) -> dict[str, float]:
    """params, flops, memory, ops and latency of `model` for one input of `input_shape`.

    Cached by `signature` (the architecture), the input shape and the network's output count: the
    same architecture on other data is another network (more inputs, more classes).
    """
    key = f"{signature}|{tuple(input_shape)}|{_outputs(model)}"
    if key not in _CACHE:
        was_training = model.training
        model.eval()
        sample = torch.zeros((1, *input_shape))
        _CACHE[key] = {
            "params": float(count_params(model)),
            "flops": float(count_flops(model, sample)),
            "memory": float(activation_bytes(model, sample)),
            "ops": float(count_ops(model, sample)),
            "latency": latency_ms(model, sample),
        }
        model.train(was_training)
    return dict(_CACHE[key])


def _outputs(model: nn.Module) -> int:
    """The output count of a network whose last weighted layer is its head (0 if it has none)."""
    weighted = [m for m in model.modules() if isinstance(m, nn.Linear | nn.Conv1d | nn.Conv2d | nn.Conv3d)]
    if not weighted:
        return 0
    last = weighted[-1]
    return int(last.out_features if isinstance(last, nn.Linear) else last.out_channels)
