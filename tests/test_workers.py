"""Worker processes: slot planning, the shared trial budget, joining a study, OOM trials."""

import multiprocessing as mp
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState
from typer.testing import CliRunner

from automl_nn import workers
from automl_nn.config import resolve
from automl_nn.errors import ConfigError, StorageError
from automl_nn.storage import backends, record
from automl_nn.storage.backends import open_storage
from automl_nn.study import open_study
from automl_nn.trial import is_out_of_memory
from tests.conftest import TINY, run, study_with_raised_target


def test_cpu_workers_split_the_cores() -> None:
    slots = workers.plan_slots("cpu", 3, cuda_count=0, cores=8)
    assert [(s.device, s.visible, s.threads) for s in slots] == [("cpu", None, 2)] * 3
    assert workers.plan_slots("auto", 4, cuda_count=0, cores=2)[0].threads == 1  # never 0
    assert [s.threads for s in workers.plan_slots("auto", 1, cuda_count=0, cores=6)] == [6]


def test_gpu_slots_are_pinned_and_may_share_a_gpu() -> None:
    slots = workers.plan_slots("cuda:0,cuda:1", trials_per_device=2, cuda_count=2, cores=8)
    assert [(s.device, s.visible) for s in slots] == [("cuda", "0"), ("cuda", "0"),
                                                      ("cuda", "1"), ("cuda", "1")]
    assert slots[0].env()["CUDA_VISIBLE_DEVICES"] == "0" and slots[0].threads == 2
    assert len(workers.plan_slots("auto", cuda_count=3, cores=8)) == 3
    assert [s.device for s in workers.plan_slots("cuda:1", cuda_count=2)] == ["cuda:1"]


@pytest.mark.parametrize(("device", "kwargs", "fragment"), [
    ("cuda:2", {}, "has 2 CUDA device"),
    ("gpu0", {}, "expected auto, cpu, cuda"),
    ("cpu", {"trials_per_device": 2}, "applies to CUDA devices"),
    ("cuda", {"workers": 3}, "one per slot"),
    ("cpu", {"workers": 0}, "at least 1"),
])
def test_bad_device_plans_are_refused(device: str, kwargs: dict[str, int], fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        workers.plan_slots(device, cuda_count=2, cores=4, **kwargs)


def test_sqlite_with_many_workers_recommends_journal() -> None:
    assert workers.storage_warnings(None, 8) and "journal:" in workers.storage_warnings(None, 8)[0]
    assert workers.storage_warnings(None, 2) == []
    assert workers.storage_warnings("journal:x.log", 16) == []


def test_shared_budget_runs_exactly_the_remaining_trials() -> None:
    tickets, holding = mp.Value("i", 3), mp.Array("b", 2, lock=False)
    a, b = (workers.SharedBudget(tickets, holding, i) for i in range(2))
    study = optuna.create_study()
    done, failed = (optuna.trial.create_trial(state=s, value=v) for s, v in
                    ((TrialState.COMPLETE, 1.0), (TrialState.FAIL, None)))
    assert a.more(study, None) and b.more(study, None)
    assert a.more(study, failed) and tickets.value == 1  # a failed trial keeps its ticket
    for attrs in ({record.DIVERGED: "loss nan"}, {record.INFEASIBLE: "params 9e+09 > max_params 1"}):
        placeholder = optuna.trial.create_trial(state=TrialState.COMPLETE, value=0.0, user_attrs=attrs)
        assert a.more(study, placeholder) and tickets.value == 1  # so do diverged and infeasible ones
    assert a.more(study, done) and tickets.value == 0
    assert not b.more(study, done)
    assert b.give_back() is False and a.give_back() is True and tickets.value == 1


def test_journal_url_forms(tmp_path: Path) -> None:
    for url in (f"journal:{tmp_path}/a.log", f"journal:///{tmp_path}/b.log", f"{tmp_path}/c.jsonl"):
        storage = open_storage(url)
        assert isinstance(storage, optuna.storages.JournalStorage), url
    assert backends.journal_path("sqlite:///x.log") is None


def test_worker_joins_a_study_from_its_stored_config(cli: CliRunner, tmp_path: Path) -> None:
    url = f"journal:{tmp_path / 'shared.log'}"
    study_with_raised_target(cli, url, "j", 4)
    code, output = run(cli, "worker", "j", "--storage", url)
    assert code == 0, output
    trials = optuna.load_study(study_name="j", storage=open_storage(url)).trials
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 4


def test_worker_refuses_unknown_study(cli: CliRunner, tmp_path: Path) -> None:
    code, output = run(cli, "worker", "nope", "--storage", f"sqlite:///{tmp_path / 'none.db'}")
    assert code == 2 and "no such file" in output
    with pytest.raises(StorageError, match="no stored automl-nn config"):
        storage = open_storage(f"journal:{tmp_path / 'plain.log'}")
        optuna.create_study(study_name="plain", storage=storage)
        workers.config_from_storage("plain", f"journal:{tmp_path / 'plain.log'}")


def test_worker_on_postgresql(cli: CliRunner, postgres_url: str) -> None:
    config = resolve({"study_name": "pg", "dataset": "digits", "trials": 3, "seed": 0,
                      "space": {"epochs": 1, "width": 8, "depth": 1, "family": "linear"}})
    open_study(config, open_storage(postgres_url))
    code, output = run(cli, "worker", "pg", "--storage", postgres_url)
    assert code == 0, output
    trials = optuna.load_study(study_name="pg", storage=postgres_url).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3


def test_out_of_memory_is_classified() -> None:
    assert is_out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate"))
    assert is_out_of_memory(RuntimeError("CUDA error: out of memory"))
    assert not is_out_of_memory(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))
    assert not is_out_of_memory(ValueError("out of memory"))


def test_oom_trial_is_recorded_and_the_next_trial_runs(
    cli: CliRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    from automl_nn import train

    real_fit, calls = train.fit, {"n": 0}

    def fit_that_runs_out(*args: object, **kwargs: object) -> object:
        calls["n"] += 1
        if calls["n"] in (1, 2, 3, 4):  # four in a row: OOM never trips the failure breaker
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_fit(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr("automl_nn.trial.fit", fit_that_runs_out)
    code, output = run(cli, "search", *TINY, "--trials", "2", "--study-name", "oom")
    assert code == 0, output
    trials = optuna.load_study(study_name="oom", storage="sqlite:///automl-nn.db").trials
    assert [t.user_attrs.get("fail_reason") for t in trials[:4]] == ["oom"] * 4
    assert [t.state for t in trials[4:]] == [TrialState.COMPLETE] * 2
