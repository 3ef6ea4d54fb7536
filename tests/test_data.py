"""Datasets: torchvision files (tiny IDX fixtures), user files, synthetic generators, split hygiene."""

from __future__ import annotations

import gzip
import json
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from automl_nn import config as cfg
from automl_nn.data import catalog as data
from automl_nn.data import synthetic, vision
from automl_nn.data.prepare import channel_stats
from automl_nn.errors import ConfigError, DataError, UsageError
from tests.conftest import run


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test stages files in its own cache and never reaches the network."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("AUTOML_NN_OFFLINE", "1")
    data._CACHE.clear()


# ---- torchvision through tiny IDX files ----------------------------------------------------------


def _idx(array: np.ndarray) -> bytes:
    """An IDX file (the MNIST format): magic 0x08 (uint8) + ndim, big-endian sizes, then the bytes."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_mnist(
    directory: Path, compressed: bool, n_train: int = 40, n_test: int = 10
) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    arrays = {"train-images-idx3-ubyte": rng.integers(0, 256, (n_train, 6, 6)),
              "train-labels-idx1-ubyte": np.arange(n_train) % 4,
              "t10k-images-idx3-ubyte": rng.integers(0, 256, (n_test, 6, 6)),
              "t10k-labels-idx1-ubyte": np.arange(n_test) % 4}
    directory.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        blob = _idx(array)
        if compressed:
            (directory / f"{name}.gz").write_bytes(gzip.compress(blob))
        else:
            (directory / name).write_bytes(blob)
    return arrays


@pytest.mark.parametrize(("layout", "compressed"), [
    ("plain", True),  # the published .gz files in one directory, as ../shared/data/mnist/raw
    ("plain", False),
    ("MNIST/raw", False),  # torchvision's own layout
])
def test_idx_files_load_through_torchvision(tmp_path: Path, layout: str, compressed: bool) -> None:
    root = tmp_path / "files"
    arrays = write_mnist(root if layout == "plain" else root / layout, compressed)
    bundle = data.load("mnist", str(root))
    assert bundle.input_shape == (1, 6, 6) and bundle.x_train.dtype == torch.uint8
    assert bundle.n_outputs == 10 and bundle.class_names[0] == "0 - zero"
    assert bundle.n_train + len(bundle.x_val) == 40
    test_images = arrays["t10k-images-idx3-ubyte"].astype(np.uint8)
    assert torch.equal(bundle.x_test[:, 0], torch.from_numpy(test_images))
    assert torch.equal(bundle.y_test, torch.from_numpy(arrays["t10k-labels-idx1-ubyte"]))
    assert data.listing(str(root))[1]["offline"] == "yes"


def test_searches_staging_the_same_files_at_once_do_not_collide(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two searches started together over the published .gz files each unpack them into the cache:
    # here the other one finishes staging a file while this one is half-way through it.
    root = tmp_path / "files"
    arrays = write_mnist(root, compressed=True)
    copy, others = shutil.copyfileobj, []

    def copy_while_another_search_stages(source: Any, target: Any, length: int = 0) -> None:
        if not others:
            others.append(target.name)
            dest = Path(target.name).parent / Path(target.name).name.split(".")[0]
            vision._gunzip(root / f"{dest.name}.gz", dest)
        copy(source, target, length)

    monkeypatch.setattr(vision.shutil, "copyfileobj", copy_while_another_search_stages)
    bundle = data.load("mnist", str(root))
    assert others and torch.equal(bundle.y_test, torch.from_numpy(arrays["t10k-labels-idx1-ubyte"]))
    assert not list((tmp_path / "cache").rglob("*.partial"))


def test_missing_files_offline_fail_fast_naming_them(tmp_path: Path) -> None:
    start = time.perf_counter()
    with pytest.raises(DataError) as info:
        data.load("kmnist", str(tmp_path / "empty"))
    assert time.perf_counter() - start < 2.0
    message = str(info.value)
    assert "train-images-idx3-ubyte" in message and str(tmp_path / "empty" / "KMNIST" / "raw") in message
    assert data.listing(str(tmp_path / "empty"))[3]["offline"] == "no"


def test_listing_imports_no_torch() -> None:
    code = ("import sys; from automl_nn import data; rows = data.listing(); "
            "print(len(rows), 'torch' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            cwd=Path(__file__).parent.parent)  # this checkout's automl_nn
    count, imported = result.stdout.split()
    assert int(count) >= 15 and imported == "False"


# ---- the user's files ----------------------------------------------------------------------------


def test_csv_classification_one_hot_and_string_target(tmp_path: Path) -> None:
    rows = ["size,colour,kind"] + [f"{i},{'red' if i % 2 else 'blue'},{'cat' if i % 3 else 'dog'}"
                                   for i in range(30)]
    path = tmp_path / "pets.csv"
    path.write_text("\n".join(rows) + "\n")
    bundle = data.load(data.parse_spec(str(path), {"target": "kind"}))
    assert bundle.task == "classification" and bundle.class_names == ("cat", "dog")
    assert bundle.input_shape == (3,)  # size + one-hot(blue, red)
    x = torch.cat([bundle.x_train, bundle.x_val, bundle.x_test])
    assert x.dtype == torch.float32 and set(x[:, 1:].sum(dim=1).tolist()) == {1.0}
    assert len(x) == 30


def test_csv_regression_and_task_override(tmp_path: Path) -> None:
    path = tmp_path / "houses.csv"
    path.write_text("rooms,price\n" + "".join(f"{i % 5},{i % 3}\n" for i in range(40)))
    assert data.load(data.parse_spec(str(path), {"target": "price"})).task == "classification"
    bundle = data.load(data.parse_spec(str(path), {"target": "price", "task": "regression"}))
    assert bundle.task == "regression" and bundle.y_train.dtype == torch.float32
    assert bundle.y_train.shape[1] == 1 and bundle.n_outputs == 1


def test_npz_with_test_arrays_and_multi_output_regression(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    path = tmp_path / "set.npz"
    np.savez(path, x=rng.normal(size=(50, 4)), y=rng.integers(0, 3, 50),
             x_test=rng.normal(size=(7, 4)), y_test=rng.integers(0, 3, 7))
    bundle = data.load(str(path))
    assert bundle.task == "classification" and len(bundle.x_test) == 7 and bundle.n_train == 40
    reg = tmp_path / "reg.npz"
    np.savez(reg, X=rng.normal(size=(60, 3)), y=rng.normal(size=(60, 2)))
    bundle = data.load(str(reg))
    assert bundle.task == "regression" and bundle.n_outputs == 2 and bundle.y_test.shape == (12, 2)


def _npz(path: Path, **arrays: np.ndarray) -> str:
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return str(path)


@pytest.mark.parametrize(("make", "fragment"), [
    (lambda d: str(d / "nope.csv"), "no such file"),
    (lambda d: str(d / "data.parquet"), "expected a .npz or .csv file"),
    (lambda d: _npz(d / "s.npz", x=np.zeros((9, 2)), y=np.array(list("aabbccdde"))), "labels y are strings"),
    (lambda d: _npz(d / "m.npz", x=np.zeros((9, 2)), y=np.zeros(8)), "x has 9 samples but y has 8"),
    (lambda d: _npz(d / "k.npz", a=np.zeros(3)), "expected arrays named x and y"),
    (lambda d: _npz(d / "n.npz", x=np.where(np.eye(9, 2) > 0, np.nan, 1.0), y=np.arange(9) % 2),
     "first at sample 0, feature 0"),
    (lambda d: _npz(d / "o.npz", x=np.ones((9, 2)), y=np.ones(9, dtype=int)), "at least 2 classes"),
])
def test_bad_files_are_usage_errors(tmp_path: Path, make, fragment: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(UsageError, match=fragment):
        data.load(make(tmp_path))


def test_csv_bad_target_and_missing_target_say_where(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("a,b,label\n1,2,0\n3,,1\n5,6,?\n7,8,1\n")
    with pytest.raises(DataError, match="no column named 'lable'. Columns: a, b, label"):
        data.load(data.parse_spec(str(path), {"target": "lable"}))
    with pytest.raises(DataError, match=r"target column 'label' is empty on line\(s\) 4"):
        data.load(data.parse_spec(str(path), {"target": "label"}))
    with pytest.raises(DataError, match="needs --target"):
        data.load(str(path))


# ---- synthetic generators against their documented properties ------------------------------------


def test_gaussian_mixture_imbalance_separation_and_balanced_test() -> None:
    raw = synthetic.gaussian_mixture(size=4000, noise=0.1, seed=0, dim=4, classes=2, separation=2.0,
                                     profile="harmonic", imbalance=0.25, random_labels=False,
                                     dummy_dims=0, rotate=False)
    assert np.bincount(raw.y).tolist() == [3200, 800]
    assert raw.y_test is not None and np.bincount(raw.y_test).tolist() == [500, 500]
    gap = raw.x[raw.y == 1].mean(axis=0) - raw.x[raw.y == 0].mean(axis=0)
    np.testing.assert_allclose(gap, 2.0 / np.arange(1, 5), atol=0.02)


def test_gaussian_mixture_random_labels_carry_no_signal() -> None:
    raw = synthetic.gaussian_mixture(size=4000, noise=0.1, seed=0, dim=2, classes=2, separation=5.0,
                                     profile="constant", imbalance=1.0, random_labels=True,
                                     dummy_dims=3, rotate=False)
    side = raw.x[:, 0] > 2.5  # the true class, recovered from the features
    assert raw.x.shape == (4000, 5) and abs((side == raw.y).mean() - 0.5) < 0.05
    assert raw.x[:, 2:].std() < 0.02  # dummy dimensions are near-constant


def test_two_moons_lie_on_their_circles() -> None:
    raw = synthetic.two_moons(size=200, noise=0.0, seed=3)
    upper, lower = raw.x[raw.y == 0], raw.x[raw.y == 1]
    np.testing.assert_allclose(np.hypot(*upper.T), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.hypot(lower[:, 0] - 1.0, lower[:, 1] - 0.5), 1.0, atol=1e-5)
    assert np.bincount(raw.y).tolist() == [100, 100]


def test_alternating_line_flips_class_every_segment() -> None:
    raw = synthetic.alternating_line(size=2000, noise=0.0, seed=0, segments=4)
    x, y = raw.x[:, 0], raw.y
    assert set(y[(x > -0.99) & (x < -0.51)]) == {0} and set(y[(x > -0.49) & (x < -0.01)]) == {1}
    assert set(y[(x > 0.01) & (x < 0.49)]) == {0} and set(y[(x > 0.51) & (x < 0.99)]) == {1}


@pytest.mark.parametrize(("name", "options", "function"), [
    ("sin", {"frequency": 3.0}, lambda x: np.sin(3.0 * x)),
    ("polynomial", {"coefficients": "0,-2,1,1,-2"}, lambda x: -2 * x + x**2 + x**3 - 2 * x**4),
    ("abs", {}, np.abs),
])
def test_function_regression_values(name: str, options: dict[str, object], function) -> None:  # type: ignore[no-untyped-def]
    bundle = data.load(data.parse_spec(name, options))
    x, y = bundle.x_train.numpy()[:, 0], bundle.to_target_units(bundle.y_train).numpy()[:, 0]
    assert bundle.task == "regression" and np.all(np.abs(x) <= 1.0)
    np.testing.assert_allclose(y, function(x), atol=1e-5)
    noisy = data.load(data.parse_spec(name, {**options, "noise": 0.5}))
    y_noisy = noisy.to_target_units(noisy.y_train).numpy()[:, 0]
    assert 0.4 < np.std(y_noisy - function(noisy.x_train.numpy()[:, 0])) < 0.6


def test_same_seed_same_data_other_seed_other_data() -> None:
    a = synthetic.two_moons(size=50, noise=0.1, seed=1)
    b = synthetic.two_moons(size=50, noise=0.1, seed=1)
    c = synthetic.two_moons(size=50, noise=0.1, seed=2)
    assert np.array_equal(a.x, b.x) and not np.array_equal(a.x, c.x)


# ---- split hygiene and preprocessing -------------------------------------------------------------


def _rows(x: torch.Tensor) -> set[tuple[float, ...]]:
    return {tuple(row) for row in x.reshape(len(x), -1).tolist()}


def test_splits_share_no_sample_and_stats_come_from_train() -> None:
    bundle = data.load("two-moons?noise=0.2&size=500")
    train, val, test = _rows(bundle.x_train), _rows(bundle.x_val), _rows(bundle.x_test)
    assert len(train) + len(val) + len(test) == 500
    assert not (train & val or train & test or val & test)
    torch.testing.assert_close(bundle.mean.flatten(), bundle.x_train.mean(dim=0))
    torch.testing.assert_close(bundle.std.flatten(), bundle.x_train.std(dim=0))


def test_oversample_balances_train_only() -> None:
    plain = data.load("gaussian-mixture?imbalance=0.1&size=1100")
    balanced = data.load("gaussian-mixture?imbalance=0.1&size=1100&oversample=true")
    majority, minority = torch.bincount(plain.y_train).tolist()
    assert 0.08 < minority / majority < 0.12
    assert torch.bincount(balanced.y_train).tolist() == [majority, majority]
    assert torch.equal(plain.y_val, balanced.y_val) and torch.equal(plain.x_val, balanced.x_val)
    assert not (_rows(balanced.x_train) & _rows(balanced.x_val))


def test_train_size_keeps_a_fixed_subset_of_train_and_validation_in_proportion() -> None:
    full = data.load("two-moons?size=500")  # 300 train, 100 validation, 100 test
    small = data.load("two-moons?size=500&train_size=50")
    again = data.load("two-moons?train_size=50&size=500")  # same spec, other order: the cached bundle
    assert small.x_train.shape[0] == 50 and small is again
    assert _rows(small.x_train) <= _rows(full.x_train)
    # 50 of 300 training samples: 100 * 50 / 300 = 16.7, so 17 validation samples, from the full
    # validation split, both classes in their share (50 + 50 there: 9 + 8, the one left over to
    # the first of equal remainders); the test split stays whole
    assert small.x_val.shape[0] == 17 and _rows(small.x_val) <= _rows(full.x_val)
    assert torch.bincount(full.y_val).tolist() == [50, 50]
    assert torch.bincount(small.y_val).tolist() == [9, 8]
    assert torch.equal(small.x_test, full.x_test)
    data._CACHE.clear()  # a fresh load picks the same validation samples
    assert torch.equal(data.load("two-moons?size=500&train_size=50").x_val, small.x_val)


def test_val_size_sets_the_validation_split_and_is_checked() -> None:
    bundle = data.load("gaussian-mixture?size=1000&classes=3&val_size=30&train_size=100")
    assert bundle.x_val.shape[0] == 30 and torch.bincount(bundle.y_val).tolist() == [10, 10, 10]
    with pytest.raises(DataError, match=r"val_size=500 .* holds \(200\)"):
        data.load("two-moons?size=1000&val_size=500")


def test_train_size_larger_than_train_is_refused() -> None:
    with pytest.raises(DataError, match=r"train_size=5000 .* holds \(300\)"):
        data.load("two-moons?size=500&train_size=5000")


def test_pca_is_fitted_on_train() -> None:
    bundle = data.load("gaussian-mixture?dim=10&dummy_dims=20&rotate=true&pca=3&size=300")
    assert bundle.input_shape == (3,)
    torch.testing.assert_close(bundle.x_train.mean(dim=0), torch.zeros(3), atol=1e-4, rtol=0)
    variances = bundle.x_train.var(dim=0)
    assert torch.all(variances[:-1] >= variances[1:])  # components in order of explained variance


# ---- specs, config and the task ------------------------------------------------------------------


def test_spec_forms_agree_and_defaults_drop_out() -> None:
    compact = data.parse_spec("gaussian-mixture?separation=0.5&dim=12&imbalance=1")
    mapping = data.parse_spec({"name": "gaussians", "separation": 0.5})
    assert compact == mapping and compact.to_string() == "gaussian-mixture?separation=0.5"
    unknown = r'unknown gaussian-mixture option "dims".*Did you mean "dim".*option names: size'
    with pytest.raises(ConfigError, match=unknown):
        data.parse_spec("gaussian-mixture?dims=3")
    with pytest.raises(ConfigError, match="expected an integer"):
        data.parse_spec("two-moons", {"size": "many"})


def test_dataset_options_are_part_of_the_identity() -> None:
    base = cfg.resolve({"dataset": "gaussian-mixture"})
    other = cfg.resolve({"dataset": {"name": "gaussian-mixture", "dim": 3}})
    flag = cfg.resolve({"dataset": "gaussian-mixture"}, {"data_options": ["dim=3"]})
    assert base.identity_hash() != other.identity_hash() == flag.identity_hash()
    assert other.dataset == "gaussian-mixture?dim=3"


def test_regression_defaults_and_refusals() -> None:
    bundle = data.load("sin")
    config = cfg.for_data(cfg.resolve({"dataset": "sin", "space": {"batch_size": 32}}), bundle)
    assert config.objectives == ("mse", "params") and config.space["loss"] == cfg.Fixed("mse")
    with pytest.raises(ConfigError, match="accuracy needs a classification task"):
        cfg.for_data(cfg.resolve({"objectives": ["accuracy"], "space": {"batch_size": 32}}), bundle)
    with pytest.raises(ConfigError, match="cross_entropy needs a classification task"):
        cfg.for_data(cfg.resolve({"space": {"batch_size": 32, "loss": "cross_entropy"}}), bundle)
    with pytest.raises(ConfigError, match="r2 needs a regression task"):
        cfg.for_data(cfg.resolve({"objectives": ["r2"]}), data.load("digits"))


def test_default_batch_sizes_fit_small_training_splits() -> None:
    sin = data.load("sin")  # 120 training samples: 128 does not fit
    assert sin.n_train < 128
    assert cfg.for_data(cfg.resolve({"dataset": "sin"}), sin).space["batch_size"] == cfg.Choice((32, 64))
    tiny = data.load("sin?size=40")  # smaller than every default: one full batch
    assert cfg.for_data(cfg.resolve({"dataset": "sin?size=40"}), tiny).space["batch_size"] == \
        cfg.Fixed(16)
    digits = data.load("digits")
    assert cfg.for_data(cfg.resolve({}), digits).space["batch_size"] == cfg.Choice((32, 64, 128))
    with pytest.raises(ConfigError, match="128 is larger than the training split"):  # the user's own
        cfg.for_data(cfg.resolve({"dataset": "sin", "space": {"batch_size": 128}}), sin)


def test_regression_evaluation_matches_sklearn() -> None:
    from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

    from automl_nn.train import evaluate

    bundle = data.load("sin?noise=0.3")
    model = torch.nn.Linear(1, 1)
    result = evaluate(model, bundle, bundle.x_test, bundle.y_test)
    with torch.no_grad():  # the network predicts standardized targets; metrics are in the target's units
        pred = bundle.to_target_units(model(bundle.normalize(bundle.x_test))).numpy()
    truth = bundle.to_target_units(bundle.y_test).numpy()
    assert abs(truth.std() - bundle.y_test.numpy().std()) > 0.1  # the units differ, so this tells
    assert result.scores["mse"] == pytest.approx(mean_squared_error(truth, pred), rel=1e-5)
    assert result.scores["mae"] == pytest.approx(mean_absolute_error(truth, pred), rel=1e-5)
    assert result.scores["r2"] == pytest.approx(r2_score(truth, pred), rel=1e-4)


# ---- through the CLI -----------------------------------------------------------------------------

REG = ["--epochs", "1", "--width", "4", "--depth", "1", "--batch-size", "16", "--seed", "0"]


@pytest.mark.parametrize(("args", "fragment"), [
    (["--dataset", "missing.csv"], "no such file"),
    (["--dataset", "notes.txt"], "expected a .npz or .csv file"),
    (["--dataset", "sin", "--objective", "accuracy"], "accuracy needs a classification task"),
    (["--dataset", "sin", "--data-option", "freq=2"], "option names: size"),
    (["--dataset", "digits", "--target", "y"], 'unknown digits option "target"'),
    (["--dataset", "mnist", "--data-dir", "nowhere"], "t10k-images-idx3-ubyte"),
])
def test_bad_data_exits_2_before_storage(cli: CliRunner, tmp_path: Path, args: list[str],
                                         fragment: str) -> None:
    code, output = run(cli, "search", *args, *REG, "--trials", "1")
    assert code == 2 and fragment in " ".join(output.split())
    assert not (tmp_path / "automl-nn.db").exists()


def test_regression_search_on_a_csv(cli: CliRunner, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (120, 2))
    lines = ["a,b,city,price"] + [f"{a:.4f},{b:.4f},{'xy'[i % 2]},{3 * a - b:.4f}"
                                  for i, (a, b) in enumerate(x)]
    (tmp_path / "h.csv").write_text("\n".join(lines) + "\n")
    code, output = run(cli, "search", "--dataset", "h.csv", "--target", "price", "--trials", "1", *REG)
    assert code == 0, output
    assert "mse" in output and "test_mse" in output


def test_datasets_command_lists_everything(cli: CliRunner) -> None:
    code, output = run(cli, "datasets", "--format", "json")
    rows = {row["name"]: row for row in json.loads(output)}
    assert code == 0 and {"mnist", "cifar10", "svhn", "emnist-balanced", "sin", "PATH.csv"} <= set(rows)
    assert rows["sin"]["task"] == "regression" and rows["digits"]["offline"] == "yes"


def test_plain_directory_of_another_mnist_family_set_is_not_taken(tmp_path: Path) -> None:
    root = tmp_path / "fashion"
    write_mnist(root, compressed=True)
    assert data.load("fashion-mnist", str(root)).n_outputs == 10
    with pytest.raises(DataError, match="files not found"):
        data.load("mnist", str(root))


@pytest.mark.parametrize("shape", [(103, 3, 5, 4), (103, 7)])
def test_training_statistics_in_chunks_equal_those_of_the_whole_split(shape: tuple[int, ...]) -> None:
    # 103 samples in chunks of 10: ten full chunks and a remainder of 3
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator)
    floats = torch.randn(shape, generator=generator) * 5 + 100
    for x in (images, floats):
        mean, std = channel_stats(x, chunk=10)
        whole = x.double()
        dims = (0, 2, 3) if x.dim() > 2 else (0,)
        assert torch.allclose(mean, whole.mean(dim=dims, keepdim=True)[0].float(), rtol=1e-6)
        assert torch.allclose(std, whole.std(dim=dims, keepdim=True)[0].float(), rtol=1e-5)
        assert mean.shape == std.shape == ((shape[1], 1, 1) if x.dim() > 2 else (shape[1],))
