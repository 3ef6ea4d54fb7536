"""Trainer throughput: automl-nn's `fit` against the reference loop most users start from.

The reference is pytorch/examples' MNIST loop: torchvision's MNIST dataset with per-sample
PIL -> ToTensor -> Normalize transforms, a shuffling DataLoader, and the same model, optimizer,
batch size and number of samples. Both run in this process, side by side, alternating, and the
script prints medians over repeats and the ratio two ways: the ratio of the medians, and the median
of the per-repeat ratios (see `ratios`), as JSON and as a markdown table.

    .venv/bin/python benchmarks/bench_trainer.py --data-dir /path/with/mnist/raw --repeats 3
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from automl_nn.accel import PLAIN, Runtime
from automl_nn.data import catalog as data
from automl_nn.data import vision
from automl_nn.spec import TrainSpec
from automl_nn.train import fit


class ExamplesNet(nn.Module):
    """pytorch/examples' MNIST CNN (1.2M parameters), returning logits."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv2(F.relu(self.conv1(x)))), 2)
        x = torch.flatten(self.dropout1(x), 1)
        return self.fc2(self.dropout2(F.relu(self.fc1(x))))


def mlp() -> nn.Module:
    """A 784-256-128-10 MLP."""
    return nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(),
                         nn.Linear(128, 10))


MODELS: dict[str, Callable[[], nn.Module]] = {"mlp": mlp, "cnn": ExamplesNet}


def reference_loader(root: str, samples: int, batch_size: int,
                     device: torch.device | None = None) -> torch.utils.data.DataLoader:
    """pytorch/examples' data path over the first `samples` training images.

    On CUDA it does what that example does there: one loader worker and pinned memory.
    """
    from torchvision import datasets, transforms

    cuda = device is not None and device.type == "cuda"
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
    dataset = torch.utils.data.Subset(datasets.MNIST(root, train=True, download=False,
                                                     transform=transform), range(samples))
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=True,
                                       num_workers=1 if cuda else 0, pin_memory=cuda)


def data_path_only(root: str, samples: int, batch_size: int) -> float:
    """Samples/s of the reference data path alone (no model): the bound it puts on that loop."""
    loader = reference_loader(root, samples, batch_size)
    start = time.perf_counter()
    for _ in loader:
        pass
    return samples / (time.perf_counter() - start)


def reference_loop(model: nn.Module, root: str, samples: int, batch_size: int,
                   device: torch.device | None = None) -> float:
    """Samples/s of the pytorch/examples loop over the first `samples` training images.

    On CUDA every batch is copied to the GPU, as in that example (`model` must be on `device`).
    """
    device = device or torch.device("cpu")
    cuda = device.type == "cuda"
    loader = reference_loader(root, samples, batch_size, device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    start = time.perf_counter()
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        optimizer.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
    if cuda:
        torch.cuda.synchronize(device)
    return samples / (time.perf_counter() - start)


def our_loop(model: nn.Module, bundle: data.DataBundle, samples: int, batch_size: int,
             runtime: Runtime = PLAIN) -> float:
    """Samples/s of automl-nn's fit over the same number of training samples (one epoch).

    `bundle` and `model` are on the device already; `runtime` adds autocast / channels_last.
    """
    small = dataclasses.replace(bundle, x_train=bundle.x_train[:samples], y_train=bundle.y_train[:samples],
                                x_val=bundle.x_val[:1], y_val=bundle.y_val[:1])
    spec = TrainSpec(optimizer="adam", lr=1e-3, batch_size=batch_size, epochs=1)
    history = fit(model, small, spec, runtime=runtime)  # reads the loss once: synchronized
    return samples / (history.epochs[0].seconds)


def ratios(ours: list[float], ref: list[float]) -> dict[str, Any]:
    """Medians of each loop's rates, and the two ways to summarize their ratio over repeats.

    The ratio of the medians matches the two medians beside it; the median of the per-repeat ratios
    pairs each run with the reference run next to it, so load that hits both alike cancels. With a
    few noisy repeats the two can differ by more than the effect, so both are printed.
    """
    return {"ours_samples_per_s": statistics.median(ours),
            "reference_samples_per_s": statistics.median(ref),
            "ratio_of_medians": statistics.median(ours) / statistics.median(ref),
            "median_of_ratios": statistics.median(o / r for o, r in zip(ours, ref, strict=True)),
            "ours_per_repeat": ours, "reference_per_repeat": ref}


def markdown(results: dict[str, dict[str, Any]]) -> str:
    """The table docs/benchmarks.md records, one row per model."""
    lines = ["| model | ours (samples/s) | reference (samples/s) | ratio of medians | median of ratios |",
             "|---|---:|---:|---:|---:|"]
    lines += [f"| {name} | {r['ours_samples_per_s']:,.0f} | {r['reference_samples_per_s']:,.0f} | "
              f"{r['ratio_of_medians']:.2f}x | {r['median_of_ratios']:.2f}x |"
              for name, r in results.items() if "ratio_of_medians" in r]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--mlp-samples", type=int, default=12800)
    parser.add_argument("--cnn-samples", type=int, default=1920)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    bundle = data.load("mnist", args.data_dir)
    root = str(vision.torchvision_root("mnist", args.data_dir))
    results: dict[str, dict[str, Any]] = {
        "data_path_only": {"reference_samples_per_s": statistics.median(
            data_path_only(root, args.mlp_samples, args.batch_size) for _ in range(args.repeats))}}
    for name, samples in (("mlp", args.mlp_samples), ("cnn", args.cnn_samples)):
        ours, ref = [], []
        for _ in range(args.repeats):  # alternate so both see the same machine load
            torch.manual_seed(0)
            ours.append(our_loop(MODELS[name](), bundle, samples, args.batch_size))
            torch.manual_seed(0)
            ref.append(reference_loop(MODELS[name](), root, samples, args.batch_size))
        results[name] = {**ratios(ours, ref), "samples": samples, "repeats": args.repeats}
    print(json.dumps({"machine": platform.processor() or platform.machine(), "threads": args.threads,
                      "torch": torch.__version__, "batch_size": args.batch_size, "results": results},
                     indent=2))
    print(f"\nreference data path alone: {results['data_path_only']['reference_samples_per_s']:,.0f} "
          f"samples/s\n{markdown(results)}")


if __name__ == "__main__":
    main()
