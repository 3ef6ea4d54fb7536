"""The defaults on data other than images: tables, a table of integer-coded categories, a 1-D signal,
regressions, each searched for a fixed wall budget against scikit-learn models fitted on the same split.

The data sets are made here, none of them from this repository's studies: scikit-learn's embedded
breast cancer, wine and diabetes tables (written as CSV files, read as a user's), a table of two
playing cards as integer codes (suit 0-3, rank 1-13; the class is pair / same suit / neither, so
its columns only mean something as categories), three noisy waveforms of 128 samples (sine,
square, sawtooth at random frequency and phase, as .npz), and the atomic experiments' sin(12x).
Each runs `automl-nn search --dataset FILE` with no space for `--budget` seconds; the table gives
the test score of the trial best on validation (and of the front's best on test), its parameters
and the trials run, beside logistic / ridge regression and gradient boosting
(HistGradientBoosting) on the same training split's encoded features.

    python -m benchmarks.bench_modalities --budget 60 --workdir /tmp/bench-modalities
"""

from __future__ import annotations

import argparse
import csv
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch
from optuna.trial import TrialState
from sklearn import datasets
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from sklearn.linear_model import LogisticRegression, Ridge

from automl_nn import config as cfg
from automl_nn import search
from automl_nn.data import catalog as data
from automl_nn.storage import record
from automl_nn.trial import NullReporter
from benchmarks.common import machine


def _write_csv(path: Path, names: list[str], x: np.ndarray, y: np.ndarray) -> str:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*names, "target"])
        for row, target in zip(x.tolist(), y.tolist(), strict=True):
            writer.writerow([*row, target])
    return f"{path}?target=target"


def _sklearn_table(name: str, load: Callable[[], Any]) -> Callable[[Path], str]:
    def make(workdir: Path) -> str:
        frame = load()
        names = [n.replace(" ", "_") for n in frame.feature_names]
        return _write_csv(workdir / f"{name}.csv", names, frame.data, frame.target)
    return make


def cards(workdir: Path, size: int = 3000, seed: int = 0) -> str:
    """Two cards as integer codes; class 1 a pair, 2 the same suit, 0 neither (pairs never share a
    suit in one deck, so the classes do not overlap)."""
    rng = np.random.default_rng(seed)
    deck = np.array([(suit, rank) for suit in range(4) for rank in range(1, 14)])
    rows = np.array([np.concatenate(deck[rng.choice(52, 2, replace=False)]) for _ in range(size)])
    same_rank, same_suit = rows[:, 1] == rows[:, 3], rows[:, 0] == rows[:, 2]
    # oversample the rare classes so that a constant guess scores about 0.5, not 0.7
    keep = same_rank | same_suit | (rng.random(size) < 0.35)
    rows, target = rows[keep], np.where(same_rank[keep], 1, np.where(same_suit[keep], 2, 0))
    return _write_csv(workdir / "cards.csv", ["suit1", "rank1", "suit2", "rank2"], rows, target)


def waves(workdir: Path, size: int = 3000, length: int = 128, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, size)
    t = np.linspace(0.0, 1.0, length)
    phase = rng.uniform(3, 6, size)[:, None] * t + rng.uniform(0, 1, size)[:, None]
    sine = np.sin(2 * np.pi * phase)
    shapes = {0: sine, 1: np.sign(sine), 2: 2 * (phase % 1.0) - 1}
    clean = np.select([y[:, None] == k for k in shapes], list(shapes.values()))
    x = clean + rng.normal(0, 0.8, (size, length))
    path = workdir / "waves.npz"
    np.savez(path, x=x[:, None, :].astype(np.float32), y=y)
    return str(path)


@dataclass(frozen=True)
class Case:
    name: str
    make: Callable[[Path], str]  # writes the data under the workdir; returns the dataset spec
    kind: str


CASES = (
    Case("breast-cancer", _sklearn_table("cancer", datasets.load_breast_cancer), "table, 30 numeric"),
    Case("wine", _sklearn_table("wine", datasets.load_wine), "table, 13 numeric, 3 classes"),
    Case("cards", cards, "table, 4 integer-coded categories"),
    Case("waves", waves, "1-D signal, 1x128"),
    Case("diabetes", _sklearn_table("diabetes", datasets.load_diabetes), "regression table, 10 numeric"),
    Case("sin", lambda _workdir: "sin", "regression, 1 input"),
)


def _score(bundle: data.DataBundle, predicted: np.ndarray) -> float:
    """Test accuracy, or test mse in target units."""
    if bundle.task == "classification":
        return float((predicted == bundle.y_test.numpy()).mean())
    values = bundle.to_target_units(torch.as_tensor(predicted, dtype=torch.float32).reshape(-1, 1))
    truth = bundle.to_target_units(bundle.y_test.reshape(-1, 1).float())
    return float(((values - truth) ** 2).mean())


def baselines(bundle: data.DataBundle) -> dict[str, tuple[float, float]]:
    """(test score, seconds) of a linear model and of gradient boosting on the encoded features."""
    x_train = bundle.normalize(bundle.x_train).flatten(1).numpy()
    x_test = bundle.normalize(bundle.x_test).flatten(1).numpy()
    y_train = bundle.y_train.numpy().ravel()
    models: dict[str, Any] = (
        {"logistic": LogisticRegression(max_iter=5000), "boosting": HistGradientBoostingClassifier()}
        if bundle.task == "classification"
        else {"ridge": Ridge(), "boosting": HistGradientBoostingRegressor()})
    out = {}
    for name, model in models.items():
        start = time.perf_counter()
        model.fit(x_train, y_train)
        out[name] = (_score(bundle, model.predict(x_test)), time.perf_counter() - start)
    return out


def search_case(spec: str, bundle: data.DataBundle, storage: str, name: str,
                budget: float) -> dict[str, Any]:
    """The default search for `budget` seconds; the trial best on validation, and the front."""
    config = cfg.for_data(cfg.resolve({"dataset": spec, "study_name": name, "storage": storage,
                                       "trials": 1_000_000, "seed": 0, "keep_weights": "none",
                                       "keep_predictions": False}), bundle)
    search.run_search(replace(config, timeout=budget), bundle, NullReporter(), device="cpu")
    study = optuna.load_study(study_name=name, storage=storage)
    trials = study.get_trials(deepcopy=False)
    trained = [t for t in trials if t.state == TrialState.COMPLETE
               and not t.user_attrs.get(record.INFEASIBLE) and not t.user_attrs.get(record.DIVERGED)]
    metric = config.objectives[0]
    sign = 1.0 if study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else -1.0
    best = max(trained, key=lambda t: sign * t.values[0])
    numbers = {t.number for t in trained}
    front = [t for t in study.best_trials if t.number in numbers]
    test = [float(t.user_attrs[f"test_{metric}"]) for t in front]
    return {"metric": metric, "trials": len(trials), "trained": len(trained),
            "best_test": float(best.user_attrs[f"test_{metric}"]), "best_params": best.values[1],
            "front_best_test": max(test) if sign > 0 else min(test), "front": len(front),
            "epochs": config.space["epochs"].to_raw()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=60.0, help="wall-clock seconds per search")
    parser.add_argument("--workdir", type=Path, default=Path("bench-modalities"))
    parser.add_argument("--cases", nargs="+", default=[c.name for c in CASES],
                        choices=[c.name for c in CASES])
    args = parser.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    storage = f"sqlite:///{args.workdir / f'modalities-{int(time.time())}.db'}"
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    print(f"# budget {args.budget:g} s per search; {machine()}; torch threads {torch.get_num_threads()}")
    print("\ndata | kind | train / test | metric | defaults: best on val (test) | params | front's best "
          "test | trials (trained) | epochs | linear | boosting")
    print("---|---|---|---|---:|---:|---:|---:|---:|---:|---:")
    for case in (c for c in CASES if c.name in args.cases):
        spec = case.make(args.workdir)
        bundle = data.load(spec)
        base = baselines(bundle)
        found = search_case(spec, bundle, storage, case.name, args.budget)
        linear, boosting = (f"{score:.4g} ({seconds:.1f} s)" for score, seconds in base.values())
        print(f"{case.name} | {case.kind} | {bundle.n_train} / {len(bundle.y_test)} | "
              f"test {found['metric']} | {found['best_test']:.4g} | {found['best_params']:,.0f} | "
              f"{found['front_best_test']:.4g} | {found['trials']} ({found['trained']}) | "
              f"{found['epochs']} | {linear} | {boosting}", flush=True)


if __name__ == "__main__":
    main()
