"""A plain Optuna script in the style of optuna-examples' `multi_objective/pytorch_simple.py`.

The baseline `bench_defaults` holds the default search against: what a user writes in 40 lines
without this tool. A define-by-run MLP (1-3 linear layers of 4-128 units, ReLU, dropout 0.2-0.5),
Adam / RMSprop / SGD with lr 1e-5-1e-1 (log), batch 128, 10 epochs, a DataLoader over the
training split, Optuna's default sampler (TPE), objectives (validation accuracy, parameters).
The example trains on 30 batches per epoch to run fast; here it sees the whole training split,
the same tensors the tool trains on, so that only the method differs. Each trial also records
its test accuracy (`test_accuracy`), read only by the benchmark.
"""

from __future__ import annotations

import math

import optuna
import torch
import torch.nn.functional as F
from torch import nn, optim
from torch.utils.data import DataLoader, TensorDataset

BATCHSIZE = 128
EPOCHS = 10
EVAL_BATCH = 1024


def define_model(trial: optuna.Trial, in_features: int, classes: int) -> nn.Sequential:
    n_layers = trial.suggest_int("n_layers", 1, 3)
    layers: list[nn.Module] = [nn.Flatten()]
    for i in range(n_layers):
        out_features = trial.suggest_int(f"n_units_l{i}", 4, 128)
        layers.append(nn.Linear(in_features, out_features))
        layers.append(nn.ReLU())
        layers.append(nn.Dropout(trial.suggest_float(f"dropout_l{i}", 0.2, 0.5)))
        in_features = out_features
    layers.append(nn.Linear(in_features, classes))
    layers.append(nn.LogSoftmax(dim=1))
    return nn.Sequential(*layers)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    model.eval()
    correct = 0
    with torch.no_grad():
        for begin in range(0, len(x), EVAL_BATCH):
            pred = model(x[begin:begin + EVAL_BATCH]).argmax(dim=1)
            correct += int((pred == y[begin:begin + EVAL_BATCH]).sum())
    return correct / len(x)


class Objective:
    """The trial function over fixed, already scaled tensors (x as float, y as class indices)."""

    def __init__(self, train: tuple[torch.Tensor, torch.Tensor], val: tuple[torch.Tensor, torch.Tensor],
                 test: tuple[torch.Tensor, torch.Tensor], seed: int) -> None:
        self.train, self.val, self.test, self.seed = train, val, test, seed
        self.classes = int(train[1].max()) + 1
        self.in_features = math.prod(train[0].shape[1:])

    def __call__(self, trial: optuna.Trial) -> tuple[float, float]:
        torch.manual_seed(self.seed * 100_003 + trial.number)
        model = define_model(trial, self.in_features, self.classes)
        optimizer_name = trial.suggest_categorical("optimizer", ["Adam", "RMSprop", "SGD"])
        lr = trial.suggest_float("lr", 1e-5, 1e-1, log=True)
        optimizer = getattr(optim, optimizer_name)(model.parameters(), lr=lr)
        loader = DataLoader(TensorDataset(*self.train), batch_size=BATCHSIZE, shuffle=True)
        for _ in range(EPOCHS):
            model.train()
            for data, target in loader:
                optimizer.zero_grad()
                loss = F.nll_loss(model(data), target)
                loss.backward()
                optimizer.step()
        trial.set_user_attr("test_accuracy", accuracy(model, *self.test))
        params = sum(p.numel() for p in model.parameters())
        return accuracy(model, *self.val), float(params)


def create_study(name: str, storage: str, seed: int) -> optuna.Study:
    return optuna.create_study(study_name=name, storage=storage, load_if_exists=True,
                               directions=["maximize", "minimize"],
                               sampler=optuna.samplers.TPESampler(seed=seed))
