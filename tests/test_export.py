"""Export: plain-PyTorch code that reloads with only torch, safe weights, and retraining."""

import json
import os
import pickle
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
import torch
from typer.testing import CliRunner

from automl_nn import load_exported
from automl_nn.data.catalog import load
from automl_nn.errors import StorageError
from automl_nn.results.export import import_source, read_arch
from automl_nn.spec import Candidate
from automl_nn.trial import train_candidate
from automl_nn.vocab import FAMILIES
from tests.conftest import run

SEARCH = ["search", "--dataset", "digits", "--epochs", "1", "--width", "6", "--depth", "2",
          "--batch-size", "128", "--seed", "3", "--objective", "accuracy,params"]


def _search_one(cli: CliRunner, family: str, name: str, *extra: str) -> optuna.Study:
    code, output = run(cli, *SEARCH, "--family", family, "--trials", "1", "--study-name", name, *extra)
    assert code == 0, output
    return optuna.load_study(study_name=name, storage="sqlite:///automl-nn.db")


def _fresh_interpreter_outputs(directory: Path, batch: Path, out: Path) -> dict[str, object]:
    """Import model.py in a new interpreter with only torch, and run it on a saved batch."""
    code = (
        "import sys, json, torch\n"
        f"sys.path.insert(0, {str(directory)!r})\n"
        "from model import load, preprocess\n"
        f"x = torch.load({str(batch)!r}, weights_only=True)\n"
        f"torch.save(load()(preprocess(x)), {str(out)!r})\n"
        "print(json.dumps(sorted(m.split('.')[0] for m in sys.modules if m.startswith('automl'))))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=directory, check=True)
    return {"automl_modules": json.loads(result.stdout)}


def _accuracy(model: torch.nn.Module, preprocess: Callable[[torch.Tensor], torch.Tensor],
              split: str) -> float:
    """Accuracy of an exported model on a split of digits, fed raw inputs through `preprocess`."""
    bundle = load("digits")
    x, y = getattr(bundle, f"x_{split}"), getattr(bundle, f"y_{split}")
    with torch.no_grad():
        predicted = model(preprocess(x)).argmax(dim=1)
    return float((predicted == y).float().mean().item())


def _exported(directory: Path) -> tuple[torch.nn.Module, Callable[[torch.Tensor], torch.Tensor]]:
    """The export as a user loads it: its model.py's load() and preprocess()."""
    module = import_source(directory / "model.py")
    return module.load(), module.preprocess


@pytest.mark.parametrize("family", [f for f in FAMILIES.names()
                                    if FAMILIES.get(f).supports((1, 8, 8)) is None])
def test_export_reloads_with_only_torch_and_matches_the_trial(
    cli: CliRunner, tmp_path: Path, family: str
) -> None:
    study = _search_one(cli, family, f"e-{family}")
    code, output = run(cli, "export", f"e-{family}", "--trial", "0", "--out", "ex")
    assert code == 0, output
    directory = tmp_path / "ex"
    assert {p.name for p in directory.iterdir()} >= {"model.py", "weights.pt", "arch.json", "meta.json"}
    meta = json.loads((directory / "meta.json").read_text())
    assert meta["trial"] == 0 and meta["objectives"]["params"] == study.trials[0].values[1]
    assert meta["units"]["params"] == "count" and "torch" in meta["versions"]

    # the trial's model, rebuilt by training again from its seed (deterministic on CPU)
    trial = study.trials[0]
    retrained = train_candidate(Candidate.from_dict(trial.user_attrs["candidate"]), "digits")
    assert retrained.values["accuracy"] == trial.values[0]

    batch = torch.randint(0, 17, (5, 1, 8, 8), generator=torch.Generator().manual_seed(1)).float()
    torch.save(batch, tmp_path / "batch.pt")
    info = _fresh_interpreter_outputs(directory, tmp_path / "batch.pt", tmp_path / "out.pt")
    assert info["automl_modules"] == []
    exported_out = torch.load(tmp_path / "out.pt", weights_only=True)
    mean, std = torch.tensor(meta["data"]["mean"]), torch.tensor(meta["data"]["std"])
    with torch.no_grad():
        expected = retrained.model.eval()((batch - mean.reshape(1, -1, 1, 1)) / std.reshape(1, -1, 1, 1))
    assert torch.allclose(exported_out, expected, atol=1e-5)
    # the exported weights are the trial's: they score its stored validation and test accuracy
    model, preprocess = _exported(directory)
    assert _accuracy(model, preprocess, "val") == pytest.approx(trial.values[0], abs=1e-6)
    assert _accuracy(model, preprocess, "test") == pytest.approx(trial.user_attrs["test_accuracy"],
                                                                 abs=1e-6)
    assert torch.equal(load_exported(directory)(batch), model(batch))


@pytest.mark.parametrize("family", ["linear", "conv2d"])
def test_onnx_export_computes_what_the_trial_model_computes(cli: CliRunner, tmp_path: Path,
                                                            family: str) -> None:
    onnx = pytest.importorskip("onnx", reason="onnx is not installed (pip install -e '.[dev]')")
    from onnx.reference import ReferenceEvaluator

    _search_one(cli, family, "o")
    code, output = run(cli, "export", "o", "--trial", "0", "--out", "ex", "--onnx")
    assert code == 0, output
    graph = onnx.load(str(tmp_path / "ex" / "model.onnx"))
    onnx.checker.check_model(graph, full_check=True)
    assert graph.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"  # any batch size
    model, preprocess = _exported(tmp_path / "ex")
    x = preprocess(load("digits").x_test[:7])
    got = ReferenceEvaluator(graph).run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        assert torch.allclose(torch.from_numpy(got), model(x), atol=1e-5)


def test_onnx_export_without_onnx_says_what_to_install(cli: CliRunner,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    _search_one(cli, "linear", "no-onnx")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "onnx" else real(name, *a))
    code, output = run(cli, "export", "no-onnx", "--trial", "0", "--out", "ex", "--onnx")
    assert code == 2 and "--onnx needs the onnx package: pip install onnx onnxscript" in output


def test_train_command_reproduces_the_trial(cli: CliRunner) -> None:
    study = _search_one(cli, "linear", "t")
    run(cli, "export", "t", "--trial", "0", "--out", "ex")
    code, output = run(cli, "train", "ex")
    assert code == 0, output
    assert f"{study.trials[0].values[0]:.4g}" in output
    arch, meta = read_arch(Path("ex/arch.json"))
    assert arch.family == "linear" and meta["trial"] == 0


@pytest.mark.parametrize("init", ["default", "kaiming_normal"])
def test_train_init_weights_starts_from_the_exported_weights(
    cli: CliRunner, tmp_path: Path, init: str
) -> None:
    study_file = tmp_path / "s.yaml"
    study_file.write_text(f"defaults: plain\nspace: {{init: {init}, lr: 0.05}}\n")
    study = _search_one(cli, "linear", "iw", str(study_file))
    trial = study.trials[0]
    assert trial.user_attrs["candidate"]["train"]["init"] == init
    run(cli, "export", "iw", "--trial", "0", "--out", "ex")
    # a learning rate too small to move the weights: an epoch from the exported weights scores
    # what the trial scored, an epoch from a fresh initialization scores about chance
    meta = json.loads(Path("ex/meta.json").read_text())
    meta["train"]["lr"] = 1e-12
    Path("ex/meta.json").write_text(json.dumps(meta))
    code, output = run(cli, "train", "ex", "--epochs", "1", "--init-weights")
    assert code == 0, output
    first = float(re.search(r"epoch 1: val_accuracy=([0-9.]+)", output).group(1))  # type: ignore[union-attr]
    assert first == pytest.approx(trial.values[0], abs=1e-4)
    code, output = run(cli, "train", "ex", "--epochs", "1")
    scratch = float(re.search(r"epoch 1: val_accuracy=([0-9.]+)", output).group(1))  # type: ignore[union-attr]
    assert scratch < trial.values[0] - 0.2


def test_tampered_weights_are_refused(cli: CliRunner) -> None:
    _search_one(cli, "linear", "tamper")
    run(cli, "export", "tamper", "--trial", "0", "--out", "ex")
    path = Path("ex/weights.pt")
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(StorageError, match="SHA-256"):
        load_exported("ex")
    code, output = run(cli, "train", "ex", "--init-weights")
    assert code == 2 and "does not match" in output


class _Planted:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("touch planted-sentinel",))


def test_a_planted_pickle_never_runs(cli: CliRunner, monkeypatch: pytest.MonkeyPatch) -> None:
    _search_one(cli, "linear", "pickle")
    run(cli, "export", "pickle", "--trial", "0", "--out", "ex")
    # the attacker controls both files: the weights and the recorded hash
    Path("ex/weights.pt").write_bytes(pickle.dumps({"w": _Planted()}))
    meta = json.loads(Path("ex/meta.json").read_text())
    from automl_nn.storage.artifacts import sha256_file

    meta["weights_sha256"] = sha256_file(Path("ex/weights.pt"))
    Path("ex/meta.json").write_text(json.dumps(meta))
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    with pytest.raises(StorageError, match="refused without running"):
        load_exported("ex")
    assert not Path("planted-sentinel").exists()


def test_pareto_export_and_dropped_weights(cli: CliRunner) -> None:
    code, output = run(cli, "search", "--dataset", "digits", "--epochs", "1", "--family", "linear",
                       "--width", "4:32", "--depth", "1", "--seed", "0", "--trials", "6",
                       "--study-name", "front", "--no-keep-predictions")  # the store holds weights only
    assert code == 0, output
    study = optuna.load_study(study_name="front", storage="sqlite:///automl-nn.db")
    front = {t.number for t in study.best_trials}
    code, output = run(cli, "export", "front", "--pareto", "--out", "fx")
    assert code == 0, output
    index = json.loads(Path("fx/index.json").read_text())
    assert {row["trial"] for row in index} == front
    accs = [row["accuracy"] for row in index]
    assert accs == sorted(accs, reverse=True)
    off_front = sorted({t.number for t in study.trials} - front)
    assert off_front, "six trials of a 1-D width search leave some off the front"
    # --keep-weights pareto dropped their weights; --retrain brings them back
    code, output = run(cli, "export", "front", "--trial", str(off_front[0]), "--out", "off")
    assert code == 2 and "--retrain" in output
    code, output = run(cli, "export", "front", "--trial", str(off_front[0]), "--out", "off", "--retrain")
    assert code == 0, output
    assert len(list(Path("automl-nn-artifacts").rglob("*"))) == len(front)
    # retrained from the trial's seed: the weights score exactly what the trial recorded
    dropped = study.trials[off_front[0]]
    model, preprocess = _exported(Path("off"))
    assert _accuracy(model, preprocess, "val") == pytest.approx(dropped.values[0], abs=1e-6)
    assert _accuracy(model, preprocess, "test") == pytest.approx(dropped.user_attrs["test_accuracy"],
                                                                 abs=1e-6)


def test_export_bad_input(cli: CliRunner) -> None:
    _search_one(cli, "linear", "bad")
    code, output = run(cli, "export", "bad", "--out", "x")
    assert code == 2 and "exactly one of --trial N or --pareto" in output
    code, output = run(cli, "export", "bad", "--trial", "7", "--out", "x")
    assert code == 2 and "trial 7 was asked for" in output
    code, output = run(cli, "train", "nowhere")
    assert code == 2 and "expected an export directory" in output
