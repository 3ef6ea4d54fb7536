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
from automl_nn.errors import DataError
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


def _tiny_cifar10(root: Path, monkeypatch: pytest.MonkeyPatch, per_batch: int = 120,
                  n_test: int = 200) -> None:
    """CIFAR-10's python batches (torchvision's format) of random pixels, and their MD5 sums in
    place of the published ones: torchvision's own class reads them and its checks pass."""
    import hashlib
    import pickle

    from torchvision.datasets import CIFAR10

    rng = np.random.default_rng(0)
    folder = root / CIFAR10.base_folder
    folder.mkdir(parents=True)

    def batch(name: str, n: int) -> list[str]:
        entry = {"batch_label": name, "labels": [int(c) for c in np.arange(n) % 10],
                 "data": rng.integers(0, 256, (n, 3 * 32 * 32), dtype=np.uint8),
                 "filenames": [f"{name}-{i}.png" for i in range(n)]}
        (folder / name).write_bytes(pickle.dumps(entry))
        return [name, hashlib.md5((folder / name).read_bytes()).hexdigest()]

    train = [batch(f"data_batch_{i}", per_batch) for i in range(1, 6)]
    test = [batch("test_batch", n_test)]
    meta = {"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                            "ship", "truck"], "num_cases_per_batch": per_batch, "num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta))
    monkeypatch.setattr(CIFAR10, "train_list", train)
    monkeypatch.setattr(CIFAR10, "test_list", test)
    monkeypatch.setattr(CIFAR10, "meta", {**CIFAR10.meta, "md5": hashlib.md5(
        (folder / "batches.meta").read_bytes()).hexdigest()})


def test_tiny_cifar10_is_read_by_torchvision_as_cifar10(tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from torchvision.datasets import CIFAR10

    published = CIFAR10.test_list
    _tiny_cifar10(tmp_path / "c", monkeypatch)
    ours = CIFAR10.test_list
    monkeypatch.setattr(CIFAR10, "test_list", published)  # torchvision's check is real...
    with pytest.raises(DataError, match="torchvision cannot read the files"):
        load("cifar10", str(tmp_path / "c"))
    monkeypatch.setattr(CIFAR10, "test_list", ours)  # ...and the stand-in's sums pass it
    bundle = load("cifar10", str(tmp_path / "c"))
    assert bundle.input_shape == (3, 32, 32) and bundle.n_outputs == 10
    assert bundle.class_names[0] == "airplane" and len(bundle.y_test) == 200
    assert bundle.n_train + len(bundle.y_val) == 600


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
    elif dataset == "cifar10":
        _tiny_cifar10(tmp_path / "cifar-files", monkeypatch)
        extra = ["--data-dir", str(tmp_path / "cifar-files")]
    elif dataset != "digits" and not _generated(path):
        pytest.skip(f"{dataset}: no tiny stand-in of its files is written here yet; "
                    "test_study_space_runs_on_digits runs the same space on digits")
    _smoke(cli, path, *extra)
    if extra:  # the stand-in files were read, not some other data
        data = optuna.load_study(study_name=_raw(path)["study_name"] + SMOKE_SUFFIX,
                                 storage=DB).user_attrs["data"]
        assert data["dataset"] == dataset and data["input_shape"] == list(DATASETS.get(dataset).shape)


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
