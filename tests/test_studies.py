"""Every shipped study file validates, and runs end to end under `search --smoke`."""

import gzip
import struct
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
import torch
from typer.testing import CliRunner

from automl_nn.config import SMOKE_SUFFIX, load_file, resolve
from automl_nn.data.catalog import DATASETS, load, subsample
from tests.conftest import run

FILES = sorted(Path(__file__).parent.parent.joinpath("studies").glob("*.yaml"))
DB = "sqlite:///smoke.db"


def _raw(path: Path) -> dict[str, Any]:
    return load_file(path)


def _dataset(path: Path) -> str:
    """The registered name of a study file's dataset (`{name: sin, ...}` or `sin?...` -> sin)."""
    spec = _raw(path).get("dataset", "digits")
    return str(spec["name"] if isinstance(spec, dict) else spec).partition("?")[0]


def _generated(path: Path) -> bool:
    """A synthetic dataset: generated here, so the study file itself runs under --smoke."""
    name = _dataset(path)
    return name in DATASETS and DATASETS.get(name).source == "synthetic"


def test_studies_are_shipped() -> None:
    assert len(FILES) >= 5, "studies/ ships the seed experiments"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_study_file_validates(path: Path) -> None:
    raw = _raw(path)
    if _dataset(path) not in DATASETS:  # validate the rest until the dataset exists
        raw = {**raw, "dataset": "digits"}
    config = resolve(raw)
    assert config.study_name == path.stem, "a study file's study_name is its file name"


def _smoke(cli: CliRunner, path: Path, *extra: str) -> None:
    name = _raw(path)["study_name"]
    code, output = run(cli, "search", str(path), "--smoke", "--storage", DB, *extra)
    assert code == 0, output
    names = [s.study_name for s in optuna.get_all_study_summaries(DB)]
    assert names == [name + SMOKE_SUFFIX], "a smoke run never touches the real study"
    trials = optuna.load_study(study_name=name + SMOKE_SUFFIX, storage=DB).trials
    assert len(trials) == 2 and all(t.state.name == "COMPLETE" for t in trials)
    assert all(t.user_attrs["epochs_trained"] == 1 for t in trials)


def _tiny_mnist(directory: Path, n_train: int = 700, n_test: int = 300) -> None:
    """MNIST-format IDX files (28x28, 10 classes) of random pixels: the real loader, tiny data."""
    rng = np.random.default_rng(0)
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 28, 28)),
              "train-labels-idx1-ubyte": np.arange(n_train) % 10,
              "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 28, 28)),
              "t10k-labels-idx1-ubyte": np.arange(n_test) % 10}
    directory.mkdir(parents=True)
    for name, array in arrays.items():
        header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
        (directory / f"{name}.gz").write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_study_file_runs_under_smoke(
    cli: CliRunner, path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dataset = _dataset(path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("AUTOML_NN_OFFLINE", "1")
    extra: list[str] = []
    if dataset == "mnist":
        _tiny_mnist(tmp_path / "mnist-files")
        extra = ["--data-dir", str(tmp_path / "mnist-files")]
    elif dataset != "digits" and not _generated(path):
        pytest.skip(f"{dataset}: torchvision checks its files' MD5 sums, so no tiny stand-in can be "
                    "generated; test_study_space_runs_on_digits runs the same space on digits")
    _smoke(cli, path, *extra)


@pytest.mark.parametrize("path", [p for p in FILES if _dataset(p) != "digits"
                                  and not _generated(p)], ids=lambda p: p.name)
def test_study_space_runs_on_digits(cli: CliRunner, path: Path) -> None:
    """The space of a study on a downloaded dataset, run on digits: it builds and trains everywhere."""
    _smoke(cli, path, "--dataset", "digits")


def test_a_smoke_run_starts_over(cli: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("dataset: digits\nobjectives: [accuracy]\ntrials: 50\nstudy_name: s\n"
                    "space:\n  family: linear\n  depth: 1\n  width: 8\n  epochs: 7\n")
    for _ in range(2):
        code, output = run(cli, "search", str(path), "--smoke")
        assert code == 0, output
    study = optuna.load_study(study_name="s-smoke", storage="sqlite:///automl-nn.db")
    assert [t.number for t in study.trials] == [0, 1]
    assert study.user_attrs["config"]["space"]["epochs"] == 1


def test_subsample_keeps_a_fixed_subset_of_each_split() -> None:
    bundle = load("digits")
    small = subsample(bundle, 100)
    assert (small.n_train, len(small.y_val), len(small.y_test)) == (100, 50, 50)
    assert torch.equal(subsample(bundle, 100).x_train, small.x_train)
    assert torch.equal(small.mean, bundle.mean)
