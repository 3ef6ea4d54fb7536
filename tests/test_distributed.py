"""The README's recipe for an existing cluster, run for real: `join_study` as joblib tasks on a
dask.distributed LocalCluster on loopback, against the test PostgreSQL server.

Each task is an independent worker that shares nothing but the storage, so the only thing that
keeps the count exact is the storage: the study must end with exactly its target of trained
trials, nothing lost and none counted twice, whatever the workers raced for.
"""

from __future__ import annotations

from collections import Counter

import optuna
import pytest
from optuna.trial import TrialState
from typer.testing import CliRunner

from automl_nn.storage import record
from tests.conftest import study_with_raised_target

distributed = pytest.importorskip("distributed", reason="dask.distributed is a test dependency (make venv)")


def run_on_cluster(url: str, name: str, tasks: int, workers: int) -> None:
    """What the README shows: joblib's dask backend, one `join_study` per task."""
    import joblib

    from automl_nn.workers import join_study

    with distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None) as cluster, \
            distributed.Client(cluster), joblib.parallel_backend("dask"):
        joblib.Parallel(n_jobs=tasks)(joblib.delayed(join_study)(name, url) for _ in range(tasks))


def check_exact(url: str, name: str, target: int) -> Counter[str]:
    """The study holds exactly `target` trained trials; returns why the others failed."""
    trials = optuna.load_study(study_name=name, storage=url).get_trials()
    assert record.count_done(trials) == target, [(t.number, t.state.name) for t in trials]
    assert not [t for t in trials if t.state == TrialState.RUNNING], "no trial left running"
    failed = Counter(str(t.user_attrs.get(record.FAIL_REASON)) for t in trials if t.state == TrialState.FAIL)
    assert set(failed) <= {record.SURPLUS, "stale"}, failed  # never a trial the workers lost
    return failed


def test_join_study_tasks_on_a_dask_cluster_meet_the_target_exactly(
        cli: CliRunner, postgres_url: str) -> None:
    study_with_raised_target(cli, postgres_url, "dask", target=8)
    run_on_cluster(postgres_url, "dask", tasks=4, workers=2)
    check_exact(postgres_url, "dask", 8)


@pytest.mark.slow
def test_soak_dask_cluster_of_4_workers(cli: CliRunner, postgres_url: str) -> None:
    study_with_raised_target(cli, postgres_url, "dask-soak", target=40)
    run_on_cluster(postgres_url, "dask-soak", tasks=8, workers=4)
    check_exact(postgres_url, "dask-soak", 40)


def test_workers_that_race_for_the_last_trial_run_only_one_of_them() -> None:
    from automl_nn.search import StudyBudget

    study = optuna.create_study(directions=["maximize", "minimize"])
    for _ in range(2):
        study.tell(study.ask(), [0.9, 10.0])
    # two workers on two machines both saw 2 done + 0 running < 3 and asked at the same time
    first, second = study.ask(), study.ask()
    budgets = StudyBudget(3, count_running=True), StudyBudget(3, count_running=True)
    assert budgets[0].admits(study, first) and budgets[1].admits(study, first)
    assert not budgets[0].admits(study, second) and not budgets[1].admits(study, second)
    assert StudyBudget(3).admits(study, second), "a lone search counts no running trials"
