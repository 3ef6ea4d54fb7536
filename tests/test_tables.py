"""Tables: column kinds, missing values, an encoding fitted on the training split, standardized
regression targets, and exports that take raw rows and give the target's units.

Every CSV here is a few hundred rows generated in tmp_path. Some carry an `id` column (0..N-1, a
numeric feature): decoding it from the encoded features says which rows each split holds, so the
expected statistics are computed by hand from the file's own values.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import optuna
import pytest
import torch
from typer.testing import CliRunner

from automl_nn.data import catalog as data
from automl_nn.data import files
from automl_nn.data.prepare import DataBundle
from automl_nn.errors import DataError
from automl_nn.spec import ArchSpec, Candidate, TrainSpec
from automl_nn.train import evaluate
from automl_nn.trial import train_candidate
from tests.conftest import run


@pytest.fixture(autouse=True)
def _fresh_cache() -> None:
    data._CACHE.clear()


def _write(path: Path, header: str, rows: list[str]) -> str:
    path.write_text("\n".join([header, *rows]) + "\n")
    return str(path)


def _cards(path: Path, n: int = 520) -> str:
    """Card-like rows: integer-coded suit (1-4) and rank (1-13), a float, and label = rank is odd."""
    rng = np.random.default_rng(0)
    suit, rank, weight = rng.integers(1, 5, n), rng.integers(1, 14, n), rng.normal(size=n)
    return _write(path, "suit,rank,weight,label",
                  [f"{s},{r},{w:.3f},{r % 2}" for s, r, w in zip(suit, rank, weight, strict=True)])


def _kinds(bundle: DataBundle) -> dict[str, tuple[str, str]]:
    assert bundle.encoding is not None
    return {c["name"]: (c["kind"], c["reason"]) for c in bundle.encoding.to_dict()["columns"]}


def _ids(bundle: DataBundle, split: str) -> np.ndarray:
    """The `id` cell of every row of a split, decoded from its standardized feature."""
    assert bundle.encoding is not None
    column = next(c for c in bundle.encoding.numeric if c.name == "id")
    index = bundle.encoding.output_names().index("id")
    x = getattr(bundle, f"x_{split}")[:, index].double().numpy()
    return np.rint(x * column.scale + column.mean).astype(int)


def _block(bundle: DataBundle, x: torch.Tensor, name: str) -> torch.Tensor:
    """The one-hot columns of categorical column `name`."""
    names = bundle.encoding.output_names() if bundle.encoding else ()
    return x[:, [i for i, n in enumerate(names) if n.startswith(f"{name}=")]]


# ---- column kinds --------------------------------------------------------------------------------


@pytest.mark.parametrize(("cells", "kind", "reason"), [
    ([str(i % 13 + 1) for i in range(260)], "categorical", "few integer codes"),  # 13 codes, 20 rows each
    ([str(i % 13 + 1) for i in range(259)], "numeric", "numbers"),  # fewer than 20 rows per value
    ([str(i % 21) for i in range(1000)], "numeric", "numbers"),  # 21 distinct values: a count
    ([f"{i % 4 * 7.9 + 31.7:.1f}" for i in range(1000)], "numeric", "numbers"),  # 4 speeds, not whole
    ([("" if i % 10 == 0 else str(i % 2)) for i in range(100)], "categorical", "few integer codes"),
    ([["red", "blue", "7"][i % 3] for i in range(30)], "categorical", "text"),
])
def test_column_kind_rule(cells: list[str], kind: str, reason: str) -> None:
    column = files.column_kind(Path("t.csv"), "c", cells)
    assert (column.kind, column.reason) == (kind, reason)


def test_integer_codes_are_categorical_by_default_and_flags_override(tmp_path: Path) -> None:
    path = _cards(tmp_path / "cards.csv")
    default = data.parse_spec(path, {"target": "label"})
    assert default.to_string() == f"{path}?target=label"  # no new keys: older studies keep their identity
    bundle = data.load(default)
    assert _kinds(bundle) == {"suit": ("categorical", "few integer codes"),
                              "rank": ("categorical", "few integer codes"),
                              "weight": ("numeric", "numbers")}
    assert bundle.input_shape == (1 + 4 + 13,)

    flipped = data.parse_spec(path, {"target": "label", "numeric": "suit,rank", "categorical": "weight"})
    assert flipped.to_string() == f"{path}?categorical=weight&numeric=rank,suit&target=label"
    assert flipped == data.parse_spec(f"{path}?numeric=rank, suit&categorical=weight&target=label")
    assert flipped == data.parse_spec({"name": path, "target": "label", "numeric": ["suit", "rank"],
                                       "categorical": ["weight"]})  # a study file's mapping
    kinds = _kinds(data.load(flipped))
    assert kinds["rank"] == ("numeric", "--numeric") and kinds["weight"] == ("categorical", "--categorical")


def test_column_flags_reach_the_study_and_bad_names_exit_2(cli: CliRunner, tmp_path: Path) -> None:
    path = _cards(tmp_path / "cards.csv", n=300)
    base = ["search", "--dataset", path, "--target", "label", "--epochs", "1", "--family", "linear",
            "--depth", "1", "--width", "4", "--batch-size", "32", "--seed", "0", "--objective", "accuracy"]
    args = [*base, "--trials", "1"]
    for flags, fragment in ((["--categorical", "sut"], 'unknown column "sut". Did you mean "suit"?'),
                            (["--numeric", "label"], "names 'label', the target"),
                            (["--numeric", "rank", "--categorical", "rank"], "both --categorical and")):
        code, output = run(cli, *args, *flags)
        assert code == 2 and fragment in " ".join(output.split()), output
    assert not (tmp_path / "automl-nn.db").exists()

    code, output = run(cli, *args, "--numeric", "rank")
    assert code == 0, output
    study = optuna.load_study(study_name="automl-nn", storage="sqlite:///automl-nn.db")
    described = study.user_attrs["data"]
    assert described["dataset"] == f"{path}?numeric=rank&target=label"
    kinds = {c["name"]: c["kind"] for c in described["encoding"]["columns"]}
    assert kinds == {"suit": "categorical", "rank": "numeric", "weight": "numeric"}
    code, output = run(cli, *base, "--trials", "2", "--numeric", "rank")
    assert code == 0 and len(optuna.load_study(study_name="automl-nn", storage="sqlite:///automl-nn.db")
                             .trials) == 2, output  # the same flags resume the study
    code, output = run(cli, *args, "--numeric", "rank,suit")  # other columns: another study
    assert code == 2 and "numeric=rank,suit" in " ".join(output.split()), output


def test_numeric_flag_on_a_text_column_says_which_cell(tmp_path: Path) -> None:
    rows = [f"{'red' if i % 2 else 'blue'},{i % 2}" for i in range(40)]
    path = _write(tmp_path / "t.csv", "colour,y", rows)
    with pytest.raises(DataError, match=r"line 2 holds 'blue', which is not a number"):
        data.load(data.parse_spec(path, {"target": "y", "numeric": "colour"}))


# ---- missing values and the training split -------------------------------------------------------


def _gappy(path: Path, n: int = 200, m_gap: set[int] | None = None,
           colour: dict[int, str] | None = None) -> tuple[str, list[str], list[str]]:
    """Rows id, m (numeric), colour (text), label; `m_gap` rows leave m missing ("" or "?")."""
    rng = np.random.default_rng(1)
    m = [f"{v:.3f}" for v in rng.normal(10, 2, n)]
    tint = [["red", "blue"][i % 2] for i in range(n)]
    for i in (m_gap if m_gap is not None else set(range(0, n, 9))):
        m[i] = "?" if i % 2 else ""
    for i, value in (colour or {}).items():
        tint[i] = value
    rows = [f"{i},{m[i]},{tint[i]},{i % 3 % 2}" for i in range(n)]
    return _write(path, "id,m,colour,label", rows), m, tint


def test_missing_cells_follow_the_rule(tmp_path: Path) -> None:
    gaps = set(range(3, 200, 7))  # colour: "", "NA" and "?" are all missing
    path, m, _ = _gappy(tmp_path / "g.csv", colour={i: ["", "NA", "?"][i % 3] for i in gaps})
    bundle = data.load(data.parse_spec(path, {"target": "label"}))
    assert bundle.encoding is not None
    names = bundle.encoding.output_names()
    assert names == ("id", "m", "m missing", "colour=blue", "colour=red", "colour=(missing)")
    (m_col,) = [c for c in bundle.encoding.numeric if c.name == "m"]
    train = _ids(bundle, "train")
    present = [float(m[i]) for i in train if m[i] not in ("", "?")]
    assert m_col.median == pytest.approx(np.median(present))  # the training rows' median, by hand
    x = torch.cat([bundle.x_train, bundle.x_val, bundle.x_test])
    ids = np.concatenate([_ids(bundle, s) for s in ("train", "val", "test")])
    missing = torch.tensor([m[i] in ("", "?") for i in ids])
    assert torch.equal(x[:, names.index("m missing")] == 1, missing)
    filled = (m_col.median - m_col.mean) / m_col.scale
    assert torch.allclose(x[missing, names.index("m")], torch.tensor(filled, dtype=torch.float32))
    colour = _block(bundle, x, "colour")
    assert torch.equal(colour[:, -1] == 1, torch.tensor([int(i) in gaps for i in ids]))
    assert set(colour.sum(dim=1).tolist()) == {1.0}


def test_encoding_is_fitted_on_training_rows_only(tmp_path: Path) -> None:
    first, _, _ = _gappy(tmp_path / "a.csv", m_gap=set())
    before = data.load(data.parse_spec(first, {"target": "label"}))
    test_rows = set(_ids(before, "test").tolist())
    # the same file with a colour and missing cells only in test rows (labels, hence splits, unchanged)
    path, m, _ = _gappy(tmp_path / "b.csv", m_gap=test_rows, colour=dict.fromkeys(test_rows, "green"))
    bundle = data.load(data.parse_spec(path, {"target": "label"}))
    assert set(_ids(bundle, "test").tolist()) == test_rows
    assert bundle.encoding is not None and bundle.input_shape == before.input_shape == (4,)
    # no column for green, no missing indicator for m: neither occurs in a training row
    assert bundle.encoding.output_names() == ("id", "m", "colour=blue", "colour=red")
    assert torch.equal(_block(bundle, bundle.x_test, "colour"), torch.zeros(len(test_rows), 2))
    (m_col,) = [c for c in bundle.encoding.numeric if c.name == "m"]
    train_m = np.array([float(m[i]) for i in _ids(bundle, "train")])
    assert (m_col.mean, m_col.scale) == pytest.approx((train_m.mean(), train_m.std()))
    assert m_col.median == pytest.approx(np.median(train_m))
    assert torch.allclose(bundle.x_test[:, 1], torch.tensor((m_col.median - m_col.mean) / m_col.scale,
                                                            dtype=torch.float32))


# ---- training through the trial's path -----------------------------------------------------------

MLP = ArchSpec("linear", 1, (16,), "relu")


def test_card_rule_is_learned_when_codes_are_categorical_not_as_numbers(tmp_path: Path) -> None:
    path = _cards(tmp_path / "cards.csv")
    candidate = Candidate(MLP, TrainSpec("adam", 0.05, 32, 8, seed=0))
    categorical = train_candidate(candidate, f"{path}?target=label")
    numbers = train_candidate(candidate, f"{path}?target=label&numeric=rank,suit")
    assert categorical.values["accuracy"] >= 0.95 and categorical.test_accuracy >= 0.95
    assert numbers.values["accuracy"] < 0.8  # odd ranks are not a threshold on the rank's value


def _levels(path: Path, n: int = 600) -> tuple[str, np.ndarray]:
    """A regression table: level = 126 + 4.9 a - 4.9 b + N(0, 1), so std about 7 and noise 1."""
    rng = np.random.default_rng(0)
    a, b, noise = rng.normal(size=n), rng.normal(size=n), rng.normal(size=n)
    level = np.round(126 + 4.9 * a - 4.9 * b + noise, 4)
    rows = [f"{i},{p:.4f},{q:.4f},{v}" for i, (p, q, v) in enumerate(zip(a, b, level, strict=True))]
    return _write(path, "id,a,b,level", rows), level


def test_regression_metrics_are_in_target_units_by_hand(tmp_path: Path) -> None:
    path, level = _levels(tmp_path / "levels.csv", n=300)
    bundle = data.load(data.parse_spec(path, {"target": "level"}))
    train, test = level[_ids(bundle, "train")], level[_ids(bundle, "test")]
    assert 5.5 < train.std() < 8.5 and 120 < train.mean() < 132
    assert bundle.target_mean is not None and bundle.target_std is not None
    assert (float(bundle.target_mean), float(bundle.target_std)) == pytest.approx((train.mean(), train.std()))
    assert float(bundle.y_train.mean()) == pytest.approx(0, abs=1e-5)  # the network sees standardized
    assert float(bundle.y_train.var(unbiased=False)) == pytest.approx(1, rel=1e-4)
    mean_guess = torch.nn.Linear(3, 1)  # outputs 0 everywhere: the training mean, standardized
    torch.nn.init.zeros_(mean_guess.weight)
    torch.nn.init.zeros_(mean_guess.bias)
    on_train = evaluate(mean_guess, bundle, bundle.x_train, bundle.y_train)
    assert on_train.scores["mse"] == pytest.approx(train.var(), rel=1e-4)  # the variance, in units^2
    assert on_train.scores["mae"] == pytest.approx(np.abs(train - train.mean()).mean(), rel=1e-4)
    assert on_train.scores["r2"] == pytest.approx(0, abs=1e-5)
    assert on_train.scores["loss"] == pytest.approx(1, rel=1e-4)  # the loss stays standardized
    on_test = evaluate(mean_guess, bundle, bundle.x_test, bundle.y_test)
    assert on_test.scores["mse"] == pytest.approx(((test - train.mean()) ** 2).mean(), rel=1e-4)
    np.testing.assert_allclose(on_test.predictions.numpy()[:, 0], train.mean(), rtol=1e-6)


def test_regression_near_126_trains_to_the_noise(tmp_path: Path) -> None:
    path, _ = _levels(tmp_path / "levels.csv")
    candidate = Candidate(MLP, TrainSpec("adam", 0.01, 32, 5, loss="mse", seed=0))
    result = train_candidate(candidate, f"{path}?target=level")
    assert result.values["mse"] ** 0.5 < 1.5  # noise std 1; predicting the mean scores about 7
    assert result.test.scores["mse"] ** 0.5 < 1.5 and result.test.scores["r2"] > 0.95
    bundle = data.load(f"{path}?target=level")
    assert bundle.target_std is not None
    assert result.values["mse"] == pytest.approx(result.values["loss"] * float(bundle.target_std) ** 2,
                                                 rel=1e-4)  # mse loss, scaled back by std^2


# ---- export --------------------------------------------------------------------------------------

_ONLY_TORCH = """
import json, sys, torch
sys.path.insert(0, sys.argv[1])
from model import encode, load, postprocess, preprocess
rows = json.load(open(sys.argv[2]))
with torch.no_grad():
    y = postprocess(load()(preprocess(rows)))
torch.save({"encoded": encode(rows), "y": y}, sys.argv[3])
print(json.dumps(sorted(m for m in sys.modules if m.startswith(("automl", "sklearn", "scipy")))))
"""


def test_export_of_a_table_takes_raw_rows_and_gives_target_units(cli: CliRunner, tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    n = 300
    a, kind = rng.normal(size=n), rng.integers(0, 3, n)
    level = 126 + 5 * a + 6 * (kind == 1) + rng.normal(scale=0.5, size=n)
    cells = [("" if i % 11 == 0 else "?" if i % 13 == 0 else f"{v:.4f}") for i, v in enumerate(a)]
    tint = [("" if i % 17 == 0 else ["oak", "elm", "ash"][k]) for i, k in enumerate(kind)]
    rows = [[str(i), cells[i], tint[i]] for i in range(n)]
    path = _write(tmp_path / "wood.csv", "id,a,tree,level",
                  [f"{','.join(r)},{v:.4f}" for r, v in zip(rows, level, strict=True)])
    code, output = run(cli, "search", "--dataset", path, "--target", "level", "--trials", "1",
                       "--epochs", "3", "--family", "linear", "--depth", "1", "--width", "16",
                       "--batch-size", "32", "--lr", "0.01", "--seed", "0", "--objective", "mse",
                       "--defaults", "plain")  # this network, not the table default space's sample
    assert code == 0, output
    code, output = run(cli, "export", "automl-nn", "--trial", "0", "--out", "ex")
    assert code == 0, output
    meta = json.loads((tmp_path / "ex" / "meta.json").read_text())
    assert "postprocess()" in meta["outputs"] and meta["units"]["mse"] == "target units^2"

    unseen = [["999", "0.5", "pine"]]  # a tree no training row has: its one-hot block is zeros
    (tmp_path / "rows.json").write_text(json.dumps(rows + unseen))
    result = subprocess.run([sys.executable, "-c", _ONLY_TORCH, str(tmp_path / "ex"),
                             str(tmp_path / "rows.json"), str(tmp_path / "out.pt")],
                            capture_output=True, text=True, cwd=tmp_path / "ex", check=True)
    assert json.loads(result.stdout) == []  # neither automl-nn nor scikit-learn
    out = torch.load(tmp_path / "out.pt", weights_only=True)

    # the search's own encoding of the same rows (in file order, by their id), and the trial's model
    bundle = data.load(meta["data"]["dataset"])
    x = torch.cat([bundle.x_train, bundle.x_val, bundle.x_test])
    ids = np.concatenate([_ids(bundle, s) for s in ("train", "val", "test")])
    encoded = x[np.argsort(ids)]
    assert torch.allclose(out["encoded"][:n], encoded, atol=1e-5)
    assert torch.equal(_block(bundle, out["encoded"][n:], "tree"), torch.zeros(1, 4))
    trial = optuna.load_study(study_name="automl-nn", storage="sqlite:///automl-nn.db").trials[0]
    retrained = train_candidate(Candidate.from_dict(trial.user_attrs["candidate"]), meta["data"]["dataset"])
    assert retrained.values["mse"] == pytest.approx(trial.values[0])  # the trial's model, again
    with torch.no_grad():
        expected = bundle.to_target_units(retrained.model.eval()(bundle.normalize(encoded)))
    assert torch.allclose(out["y"][:n], expected, atol=1e-3)
    error = out["y"][:n, 0].double().numpy() - level
    assert np.sqrt(np.mean(error ** 2)) < 3 < level.std()  # in the target's units, not standardized
