"""Do bf16 autocast and channels_last help `fit` on this CPU? Side by side, in one process.

Each repeat trains a fresh pytorch/examples CNN (bench_trainer's) for one epoch over the same MNIST
samples under every variant, in turn, so that load from other processes hits all of them alike;
the figures are medians over repeats, and each variant's speed-up is the median of its per-repeat
ratio to fp32.

    python benchmarks/bench_accel_cpu.py --data-dir /path/with/mnist/raw [--repeats 3] [--samples 960]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from automl_nn.accel import Runtime  # noqa: E402
from automl_nn.data import catalog as data  # noqa: E402
from benchmarks.bench_trainer import MODELS, our_loop  # noqa: E402

VARIANTS = {
    "fp32": Runtime("cpu"),
    "bf16": Runtime("cpu", amp=torch.bfloat16),
    "channels_last": Runtime("cpu", memory_format=torch.channels_last),
    "bf16+channels_last": Runtime("cpu", amp=torch.bfloat16, memory_format=torch.channels_last),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--samples", type=int, default=960)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--model", default="cnn", choices=sorted(MODELS))
    args = parser.parse_args()
    bundle = data.load("mnist", args.data_dir)
    rates: dict[str, list[float]] = {name: [] for name in VARIANTS}
    our_loop(MODELS[args.model](), bundle, args.samples // 4, args.batch_size)  # warm-up
    for _ in range(args.repeats):
        for name, runtime in VARIANTS.items():
            torch.manual_seed(0)
            rates[name].append(our_loop(MODELS[args.model](), bundle, args.samples, args.batch_size,
                                        runtime))
        print(json.dumps({k: round(v[-1]) for k, v in rates.items()}), file=sys.stderr, flush=True)
    print(json.dumps({
        "machine": platform.processor() or platform.machine(), "cores": len(os.sched_getaffinity(0)),
        "threads": torch.get_num_threads(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch": torch.__version__, "model": args.model, "samples": args.samples,
        "batch_size": args.batch_size, "repeats": args.repeats,
        "samples_per_s": {k: statistics.median(v) for k, v in rates.items()},
        "speedup_vs_fp32": {k: statistics.median(r / f for r, f in zip(v, rates["fp32"], strict=True))
                            for k, v in rates.items()},
        "load_average": os.getloadavg(),
    }, indent=2))


if __name__ == "__main__":
    main()
