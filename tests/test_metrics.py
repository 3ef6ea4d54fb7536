import time

import torch
from torch import nn

from automl_nn.metrics import (
    LATENCY_MIN_REPEATS,
    activation_bytes,
    count_flops,
    count_ops,
    count_params,
    latency_ms,
    static_metrics,
)
from automl_nn.nn import build
from automl_nn.spec import ArchSpec
from automl_nn.vocab import METRICS


def test_params_match_a_hand_count() -> None:
    model = build(ArchSpec("linear", 1, (32,), "relu"), (1, 8, 8), 10)
    assert count_params(model) == (64 * 32 + 32) + (32 * 10 + 10)
    conv = build(ArchSpec("conv2d", 1, (4,), "relu", kernel_size=3), (1, 8, 8), 10)
    assert count_params(conv) == (1 * 4 * 9 + 4) + (4 * 10 + 10)


def test_flops_of_a_linear_layer_are_two_per_multiply_add() -> None:
    model = nn.Sequential(nn.Linear(784, 10))
    assert count_flops(model, torch.zeros(1, 784)) == 2 * 784 * 10


def test_flops_of_a_conv_layer() -> None:
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1))
    # 8x8 outputs x 4 channels, each a 3x3x1 multiply-add.
    assert count_flops(model, torch.zeros(1, 1, 8, 8)) == 2 * (8 * 8 * 4) * (3 * 3 * 1)


def test_activation_memory_counts_input_and_each_layer_output() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    expected_floats = 64 + 64 + 32 + 32 + 10  # input, flatten, linear, relu, linear
    assert activation_bytes(model, torch.zeros(1, 1, 8, 8)) == 4 * expected_floats


def test_ops_count_one_per_layer_call() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10), nn.Softmax(dim=1))
    assert count_ops(model, torch.zeros(1, 1, 28, 28)) == 3


def test_static_metrics_are_cached_per_signature() -> None:
    model = build(ArchSpec("linear", 1, (8,), "relu"), (1, 8, 8), 10)
    first = static_metrics(model, (1, 8, 8), "test-signature")
    with torch.no_grad():
        model[1].weight.mul_(0)  # cached: a second call must not re-measure
    assert static_metrics(model, (1, 8, 8), "test-signature") == first
    assert set(first) == {"params", "flops", "memory", "ops", "latency"}


def test_the_cache_tells_the_same_architecture_on_other_data_apart() -> None:
    """One process, two data sets: digits (64 features, 10 classes), then 3 features and 2 classes."""
    arch = ArchSpec("linear", 1, (8,), "relu")
    digits = static_metrics(build(arch, (64,), 10), (64,), "same-arch")
    small = static_metrics(build(arch, (3,), 2), (3,), "same-arch")
    assert digits["params"] == 64 * 8 + 8 + 8 * 10 + 10 == 610
    assert small["params"] == 3 * 8 + 8 + 8 * 2 + 2 == 50
    assert static_metrics(build(arch, (3,), 10), (3,), "same-arch")["params"] == 3 * 8 + 8 + 8 * 10 + 10


def test_every_metric_has_direction_and_unit() -> None:
    for name, info in METRICS.items():
        assert info.direction in ("maximize", "minimize"), name
        assert info.unit, name


class _Slow(nn.Module):
    """A network whose forward pass takes `seconds`, counting its calls."""

    def __init__(self, seconds: float) -> None:
        super().__init__()
        self.seconds, self.calls = seconds, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        time.sleep(self.seconds)
        return x


def test_latency_stays_within_its_time_budget() -> None:
    slow = _Slow(0.03)
    latency_ms(slow, torch.zeros(1), repeats=20, budget_s=0.1)
    # one warm-up, then passes until 0.1 s is spent: 4 of 30 ms (never fewer than the minimum)
    assert 1 + LATENCY_MIN_REPEATS <= slow.calls <= 1 + 5
    very_slow = _Slow(0.08)
    latency_ms(very_slow, torch.zeros(1), repeats=20, budget_s=0.01)
    assert very_slow.calls == 1 + LATENCY_MIN_REPEATS
    fast = _Slow(0.0)
    latency_ms(fast, torch.zeros(1), repeats=20, budget_s=10.0)
    assert fast.calls == 1 + 20
