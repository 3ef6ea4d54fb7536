"""Seed 001 on digits: what gates at their own learning rate do to training, without any penalty.

    OMP_NUM_THREADS=1 python docs/seeds/seed001_gates.py

Trains the study's setting (linear, one hidden layer, relu, Adam 1e-3, batch 128, 10 epochs) at
three widths, three seeds each: plain; gated with the gates in the network's optimizer (as before
gate_lr); gated with gate_lr at its default. gate_l1 is 0, so no neuron is cut and any difference
in accuracy comes from the gates' training alone.
"""

from __future__ import annotations

import torch

from automl_nn.config import RULES
from automl_nn.data import catalog as data
from automl_nn.nn import build, gates
from automl_nn.spec import ArchSpec, TrainSpec
from automl_nn.train import fit, seed_everything

WIDTHS = (64, 256, 512)
SEEDS = (0, 1, 2)
GATE_LR = float(RULES["gate_lr"].default)


def val_accuracy(bundle: data.DataBundle, width: int, gated: bool, gate_lr: float | None,
                 seed: int) -> tuple[float, float]:
    """Final validation accuracy and median gate (1.0 when not gated) of one run."""
    seed_everything(seed)
    model = build(ArchSpec("linear", 1, (width,), "relu", gated=gated), bundle.input_shape,
                  bundle.n_outputs)
    history = fit(model, bundle, TrainSpec("adam", 1e-3, 128, 10, seed=seed, gate_lr=gate_lr))
    median = float(gates(model)[0].weight.detach().median()) if gated else 1.0
    return history.last.val_accuracy, median


def main() -> None:
    torch.set_num_threads(1)
    bundle = data.load("digits")
    print("| width | plain | gated, network's optimizer | gated, gate_lr | median gate (gate_lr) |")
    print("|---:|---|---|---|---:|")
    for width in WIDTHS:
        cells, median = [], 1.0
        for gated, gate_lr in ((False, None), (True, None), (True, GATE_LR)):
            runs = [val_accuracy(bundle, width, gated, gate_lr, seed) for seed in SEEDS]
            cells.append(", ".join(f"{acc:.4f}" for acc, _ in runs))
            median = runs[-1][1]
        print(f"| {width} | {' | '.join(cells)} | {median:.2f} |")


if __name__ == "__main__":
    main()
