"""End to end through the CLI, as a user runs it: search, resume, pareto, show, and bad input."""

import json
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from typer.testing import CliRunner

from automl_nn import train
from automl_nn.config import resolve
from automl_nn.storage import record
from automl_nn.storage.backends import open_storage
from automl_nn.study import open_study
from tests.conftest import TINY, file_hash, run
from tests.fake_study import make_study

DB = "automl-nn.db"


def _trials(name: str, db: str = DB) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{db}").trials


def test_search_resume_and_pareto(cli: CliRunner) -> None:
    code, output = run(cli, "search", *TINY, "--trials", "4", "--study-name", "quick")
    assert code == 0, output
    assert "Pareto front of quick" in output
    trials = _trials("quick")
    assert len(trials) == 4
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    first = {t.number: (t.params, t.values) for t in trials}
    # every metric is stored on every trial, objective or not, plus test accuracy and the spec
    for t in trials:
        for key in ("accuracy", "params", "flops", "memory", "ops", "latency", "train_time",
                    "test_accuracy", "candidate", "seed", "epoch1"):
            assert key in t.user_attrs, key

    code, output = run(cli, "search", *TINY, "--trials", "6", "--study-name", "quick")
    assert code == 0, output
    trials = _trials("quick")
    assert len(trials) == 6
    assert {t.number: (t.params, t.values) for t in trials if t.number < 4} == first

    code, _ = run(cli, "search", *TINY, "--trials", "6", "--study-name", "quick")
    assert code == 0 and len(_trials("quick")) == 6  # finished: re-running adds nothing

    code, output = run(cli, "pareto", "quick", "--format", "json")
    assert code == 0
    rows = json.loads(output)
    assert rows and {"trial", "accuracy", "params", "test_accuracy", "family"} <= set(rows[0])
    accs = [r["accuracy"] for r in rows]
    assert accs == sorted(accs, reverse=True)

    code, output = run(cli, "pareto", "quick", "--format", "csv")
    assert code == 0 and output.splitlines()[0].startswith("trial,accuracy,params")

    code, output = run(cli, "show", "quick")
    assert code == 0 and "accuracy (maximize, fraction)" in output and "complete 6" in output

    code, output = run(cli, "studies")
    assert code == 0 and "quick" in output


def test_study_file_with_flag_override(cli: CliRunner, tmp_path: Path) -> None:
    study_file = tmp_path / "s.yaml"
    study_file.write_text("dataset: digits\nobjectives: [accuracy]\ntrials: 50\nstudy_name: f\n"
                          "space:\n  family: linear\n  depth: 1\n  width: 8\n  epochs: 1\n")
    code, output = run(cli, "check", str(study_file))
    assert code == 0 and "ok" in output and "family" in output
    code, output = run(cli, "search", str(study_file), "--trials", "2")
    assert code == 0, output
    assert len(_trials("f")) == 2


def test_seed_makes_a_sequential_search_repeat(cli: CliRunner) -> None:
    for name in ("a", "b"):
        code, output = run(cli, "search", *TINY, "--trials", "3", "--study-name", name,
                           "--objective", "accuracy,params")
        assert code == 0, output
    a, b = _trials("a"), _trials("b")
    assert [(t.params, t.values) for t in a] == [(t.params, t.values) for t in b]


@pytest.mark.parametrize(("args", "fragment"), [
    (["--dataset", "mnistt"], 'unknown dataset "mnistt"'),
    (["--objective", "acuracy"], 'Did you mean "accuracy"'),
    (["--family", "conv4d"], 'unknown family "conv4d"'),
    (["--activation", "relu,sigmod"], 'Did you mean "sigmoid"'),
    (["--width", "64:8"], "low <= high"),
    (["--lr", "0:0.1:log"], "must be > 0"),
    (["--trials", "0"], "trials: must be at least 1"),
    (["--epochs", "0"], "space.epochs: must be >= 1"),
    (["--batch-size", "5000"], "larger than the training split"),
    (["--sampler", "grid", "--lr", "0.001:0.1"], "grid sampler needs"),
])
def test_bad_input_exits_2_and_leaves_storage_untouched(
    cli: CliRunner, args: list[str], fragment: str
) -> None:
    code, output = run(cli, "search", *TINY, "--trials", "2", "--study-name", "keep")
    assert code == 0, output
    before = file_hash(Path(DB))
    code, output = run(cli, "search", *TINY, "--trials", "3", "--study-name", "keep", *args)
    assert code == 2, output
    assert fragment in output
    assert "Traceback" not in output
    assert file_hash(Path(DB)) == before


def test_a_bad_heartbeat_variable_exits_2_with_what_to_set(cli: CliRunner,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOMLNN_HEARTBEAT_INTERVAL", "soon")
    code, output = run(cli, "search", *TINY, "--trials", "1", "--study-name", "hb")
    assert code == 2 and "AUTOMLNN_HEARTBEAT_INTERVAL" in output and "'soon'" in output, output
    assert "Traceback" not in output and not Path(DB).exists()


def test_bad_input_creates_no_storage(cli: CliRunner) -> None:
    code, _ = run(cli, "search", "--objective", "acuracy")
    assert code == 2
    assert not Path(DB).exists()


@pytest.mark.parametrize("content", [b"this is not a database\n" * 50, b"\xff" * 4096])
def test_corrupt_storage_file_exits_2_untouched(cli: CliRunner, content: bytes) -> None:
    Path(DB).write_bytes(content)
    for args in (["search", *TINY, "--trials", "1"], ["studies"], ["show", "x"]):
        code, output = run(cli, *args)
        assert code == 2, output
        assert "not an SQLite database" in output
    assert Path(DB).read_bytes() == content


def test_read_commands_on_missing_storage_or_study(cli: CliRunner) -> None:
    code, output = run(cli, "pareto", "nothing")
    assert code == 2 and "no such file" in output
    assert not Path(DB).exists()
    run(cli, "search", *TINY, "--trials", "1", "--study-name", "quick")
    code, output = run(cli, "show", "quikc")
    assert code == 2 and 'Did you mean "quick"' in output


def test_space_and_direction_changes_are_refused(cli: CliRunner) -> None:
    run(cli, "search", *TINY, "--trials", "1", "--study-name", "s", "--objective", "loss")
    before = file_hash(Path(DB))
    code, output = run(cli, "search", *TINY, "--trials", "2", "--study-name", "s",
                       "--objective", "accuracy")
    assert code == 2 and "directions [minimize]" in output
    code, output = run(cli, "search", *TINY, "--trials", "2", "--study-name", "s",
                       "--objective", "loss", "--activation", "relu")
    assert code == 2 and "space.activation" in output and "another --study-name" in output
    assert file_hash(Path(DB)) == before


def test_nonfinite_trial_is_closed_as_diverged_and_the_search_goes_on(cli: CliRunner) -> None:
    config = resolve({"study_name": "nan", "objectives": ["accuracy"], "space": {
        "family": "linear", "depth": 2, "width": 8, "epochs": 1, "optimizer": "sgd",
        "activation": "none", "lr": [1.0e12, 0.05]}})
    study = open_study(config, open_storage(f"sqlite:///{DB}"))
    for lr in (1.0e12, 0.05, 0.05):  # enqueued: the sampler is not what this test is about
        study.enqueue_trial({"lr": lr})
    code, output = run(cli, "search", "--study-name", "nan", "--objective", "accuracy",
                       "--family", "linear", "--depth", "2", "--width", "8", "--epochs", "1",
                       "--optimizer", "sgd", "--lr", "1e12,0.05", "--trials", "2",
                       "--activation", "none")
    assert code == 0, output
    trials = _trials("nan")
    assert [t.state for t in trials] == [optuna.trial.TrialState.COMPLETE] * 3
    diverged = trials[0]  # complete under a violated constraint, with placeholder values
    assert diverged.user_attrs[record.FAIL_REASON] == record.NONFINITE
    assert record.is_diverged(diverged) and not record.counts_toward_budget(diverged)
    assert diverged.constraints == {record.DIVERGED: 1.0} and diverged.values == [0.0]
    assert [t.constraints for t in trials[1:]] == [{record.DIVERGED: 0.0}] * 2
    best = optuna.load_study(study_name="nan", storage=f"sqlite:///{DB}").best_trial
    assert best.number != 0 and 0.0 < best.values[0] <= 1.0
    code, output = run(cli, "show", "nan")
    assert code == 0 and "trained 2 (these count toward --trials)" in output
    assert "failed 1 (1 of them diverged)" in output and "failures: nonfinite 1" in output


def test_repeated_failures_of_one_kind_stop_the_search(cli: CliRunner) -> None:
    # Two linear layers without activation multiply exploding weights: the loss overflows to NaN.
    code, output = run(cli, "search", "--study-name", "boom", "--family", "linear", "--depth", "2",
                       "--width", "8", "--epochs", "1", "--optimizer", "sgd", "--lr", "1e12",
                       "--activation", "none", "--trials", "20")
    output = " ".join(output.split())
    assert code == 2
    assert "11 of the last 11 trials failed the same way (nonfinite" in output
    assert "optimizer sgd in 11 of 11" in output and "lr 1e+12 to 1e+12" in output
    trials = _trials("boom")
    assert len(trials) == 11 and all(record.is_diverged(t) for t in trials)


def test_ctrl_c_closes_the_running_trial_and_resume_finishes(
    cli: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_fit = train.fit
    calls = {"n": 0}

    def interrupted_fit(*args: object, **kwargs: object) -> object:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real_fit(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr("automl_nn.trial.fit", interrupted_fit)
    code, output = run(cli, "search", *TINY, "--trials", "3", "--study-name", "ctrlc")
    assert code == 130, output
    states = [t.state for t in _trials("ctrlc")]
    assert states == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL]
    assert _trials("ctrlc")[1].user_attrs["fail_reason"] == "interrupted"

    monkeypatch.setattr("automl_nn.trial.fit", real_fit)
    code, output = run(cli, "search", *TINY, "--trials", "3", "--study-name", "ctrlc")
    assert code == 0, output
    trials = _trials("ctrlc")
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in trials) == 3
    assert not any(t.state == optuna.trial.TrialState.RUNNING for t in trials)


READ_COMMANDS = '''
import sys
from typer.testing import CliRunner
from automl_nn import cli
runner = CliRunner()
storage = ["--storage", sys.argv[1]]
for args in (["--help"], ["datasets"], ["studies", *storage], ["show", "fake", *storage],
             ["pareto", "fake", "--format", "json", *storage], ["pareto", "fake", "--pick", "knee", *storage],
             ["report", "fake", "--out", sys.argv[2], *storage],
             ["plot", "fake", "--x", "depth", "--y", "accuracy", *storage],
             ["dashboard", "--port", "0", *storage]):
    if args[0] == "dashboard":
        from automl_nn.results import dashboard
        dashboard.Dashboard.wait = dashboard.Dashboard.stop  # serve, then stop at once
    result = runner.invoke(cli.app, args)
    assert result.exit_code == 0, (args, result.output)
    early = args[0] in ("--help", "datasets", "studies")  # these import no optuna either
    print(args[0], "torch" in sys.modules, "torchvision" in sys.modules, early and "optuna" in sys.modules)
'''


def test_read_commands_never_import_torch(tmp_path: Path) -> None:
    """show, pareto, studies, report, plot and dashboard (up to serving) answer without torch;
    studies (an SQLite listing) without optuna too."""
    url = f"sqlite:///{tmp_path / 'r.db'}"
    make_study(url, "fake", n=12)
    result = subprocess.run([sys.executable, "-c", READ_COMMANDS, url, str(tmp_path / "r.html")],
                            capture_output=True, text=True, cwd=Path(__file__).parent.parent)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.split()
    assert len(lines) == 36, result.stdout  # nine commands, each ran
    assert "True" not in lines, result.stdout


def test_pareto_pruning_and_constraints_end_to_end(cli: CliRunner, tmp_path: Path) -> None:
    study_file = tmp_path / "p.yaml"
    study_file.write_text("pruner: {name: pareto, startup_trials: 2}\nconstraints: {max_params: 1000}\n")
    args = [a for a in TINY if a not in ("--epochs", "1")]
    code, output = run(cli, "search", str(study_file), *args, "--epochs", "3", "--trials", "8",
                       "--study-name", "p", "--objective", "accuracy,params")
    assert code == 0, output
    trials = _trials("p")
    pruned = [t for t in trials if t.state == optuna.trial.TrialState.PRUNED]
    infeasible = [t for t in trials if "infeasible" in t.user_attrs]
    trained = [t for t in trials if "infeasible" not in t.user_attrs]
    assert len(trained) == 8 and pruned and infeasible
    for t in pruned:  # static costs, how far it got, and who dominated it when
        assert t.user_attrs["epochs_trained"] < 3 and "params" in t.user_attrs
        assert t.user_attrs["pruned_by"]["epoch"] == t.user_attrs["epochs_trained"]
    code, output = run(cli, "pareto", "p", "--format", "json")
    on_front = {row["trial"] for row in json.loads(output)}
    assert on_front and not on_front & {t.number for t in pruned + infeasible}
    code, output = run(cli, "show", "p")
    assert code == 0
    assert f"pruned {len(pruned)}, infeasible {len(infeasible)}; epochs trained" in output
    by_pruning = sum(3 - t.user_attrs["epochs_trained"] for t in pruned)
    assert f"{by_pruning} by pruning, {3 * len(infeasible)} by constraints (never trained)" in output


def test_single_objective_pruner_gets_every_epoch_reported(cli: CliRunner, tmp_path: Path) -> None:
    study_file = tmp_path / "m.yaml"
    study_file.write_text("objectives: [accuracy]\npruner: {name: median, startup_trials: 2}\n")
    args = [a for a in TINY if a not in ("--epochs", "1")]
    code, output = run(cli, "search", str(study_file), *args, "--epochs", "2", "--trials", "5",
                       "--study-name", "m")
    assert code == 0, output
    for t in _trials("m"):
        reached = t.user_attrs["epochs_trained"]
        assert t.intermediate_values == {k: t.user_attrs[f"epoch{k}"]["val_accuracy"]
                                         for k in range(1, reached + 1)}
    code, _ = run(cli, "search", "--objective", "accuracy,params", "--pruner", "median")
    assert code == 2


def test_check_prints_the_resolved_space_with_its_conditions(cli: CliRunner) -> None:
    shipped = Path(__file__).parent.parent / "studies" / "seed003-cifar10-tricks.yaml"
    study_file = Path("tricks.yaml")  # on digits, so the check needs no other dataset
    study_file.write_text(shipped.read_text().replace("dataset: cifar10", "dataset: digits")
                          .replace("optimizer: adam", "optimizer: [adam, sgd]")
                          .replace("width: 64", "width_mode: per_layer\n  width: [32, 64]"))
    code, output = run(cli, "check", str(study_file))
    assert code == 0, output
    for fragment in ("layer{i}.width", "when width_mode is per_layer", "when optimizer has momentum",
                     "when dropout > 0", "when schedule decays by gamma", "normalize", "bool"):
        assert fragment in output, fragment
