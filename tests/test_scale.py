"""Large studies: the summary read, the search's incremental tally and front weights.

`record.read_summaries` reads every trial's state, values and a few attributes in plain SQL;
these tests hold it to Optuna's own full read, on SQLite and PostgreSQL, under a concurrent
writer, and after a crash (a trial left RUNNING). `record.Tally` and `artifacts.FrontWeights`
answer what the search asks after every trial by looking at new trials only; the tests hold them
to the answers a full pass gives.
"""

from __future__ import annotations

import copy as copy_module
import math
import random
import threading
import time
from pathlib import Path

import optuna
import pytest
from optuna.artifacts import FileSystemArtifactStore
from optuna.trial import FrozenTrial, TrialState

from automl_nn.storage import artifacts, backends, record
from tests.fake_study import DISTRIBUTIONS, make_study


def _mixed_study(url: str, name: str = "mixed") -> optuna.Study:
    """A fake study plus the trial kinds a search leaves: pruned, infeasible, diverged, infinite
    values, a portfolio trial and one left RUNNING (its process was killed)."""
    study = make_study(backends.open_storage(url), name=name, n=12)
    pruned = study.ask(DISTRIBUTIONS)
    record.write_epoch(pruned, 1, {"epoch": 1, "val_accuracy": 0.3, "val_loss": 2.0, "seconds": 0.1})
    record.write_pruned(pruned, {"pruner": "pareto", "trial": 0, "epoch": 1}, {"train": 0.1, "trial": 0.2})
    study.tell(pruned, state=TrialState.PRUNED)
    infeasible = study.ask(DISTRIBUTIONS)
    record.write_infeasible(infeasible, ["params 9e6 > max_params 1e5"])
    study.tell(infeasible, [0.0, 9.0e6])
    diverged = study.ask(DISTRIBUTIONS)
    record.write_diverged(diverged, "loss is nan at epoch 2")
    study.tell(diverged, [0.0, 100.0])
    study.tell(study.ask(DISTRIBUTIONS), [math.inf, -math.inf])
    record.enqueue_portfolio(study, [("mlp", {"family": "linear"})])
    portfolio = study.ask(DISTRIBUTIONS)
    study.tell(portfolio, [0.5, 10.0])
    study.ask(DISTRIBUTIONS)  # left RUNNING
    return study


def _same(summary: FrozenTrial, full: FrozenTrial, keys: tuple[str, ...]) -> None:
    assert (summary.number, summary.state, summary._trial_id) == (full.number, full.state, full._trial_id)
    assert summary.values == full.values
    assert summary.datetime_start == full.datetime_start
    assert summary.datetime_complete == full.datetime_complete
    assert summary.user_attrs == {k: v for k, v in full.user_attrs.items() if k in keys}


def _check_against_full_read(url: str) -> None:
    study = _mixed_study(url)
    loaded = optuna.load_study(study_name="mixed", storage=backends.open_storage(url))
    full = loaded.get_trials()
    summaries = record.read_summaries(loaded)
    assert len(summaries) == len(full) == 19
    for summary, trial in zip(summaries, full, strict=True):
        _same(summary, trial, record.SUMMARY_KEYS)
    assert {t.state for t in summaries} == {TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL,
                                            TrialState.RUNNING}
    assert any(t.values == [math.inf, -math.inf] for t in summaries)
    # what the read commands compute from it is what they computed from the full read
    assert [t.number for t in record.read_front(loaded)] == \
        [t.number for t in record.front(full, loaded.directions)]
    assert record.read_front(loaded)[0].params == full[record.read_front(loaded)[0].number].params
    assert record.count_done(summaries) == record.count_done(full) == 15
    with_params = record.read_summaries(loaded, keys=(), params=True)
    assert [(t.params, t.distributions) for t in with_params] == \
        [(t.params, t.distributions) for t in full]
    assert all(t.user_attrs == {} for t in with_params)
    del study


def test_summary_read_matches_optunas_full_read_on_sqlite(tmp_path: Path) -> None:
    _check_against_full_read(f"sqlite:///{tmp_path / 'summary.db'}")


def test_summary_read_matches_optunas_full_read_on_postgresql(postgres_url: str) -> None:
    _check_against_full_read(postgres_url)


def test_summary_read_names_only_the_keys_asked_for(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'keys.db'}"
    make_study(backends.open_storage(url), n=3)
    loaded = optuna.load_study(study_name="fake", storage=backends.open_storage(url))
    (first, *_) = record.read_summaries(loaded, keys=("seed", "no_such_key"))
    assert first.user_attrs == {"seed": 0} and first.params == {}


def test_journal_studies_are_read_in_full(tmp_path: Path) -> None:
    url = f"journal:{tmp_path / 'study.log'}"
    make_study(backends.open_storage(url), n=3)
    loaded = optuna.load_study(study_name="fake", storage=backends.open_storage(url))
    assert [t.user_attrs for t in record.read_summaries(loaded)] == [t.user_attrs for t in loaded.trials]


def test_a_finished_trial_always_comes_with_its_values_while_another_process_writes(
        tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'busy.db'}"
    make_study(backends.open_storage(url), n=2)
    stop = threading.Event()

    def write() -> None:
        writer = optuna.load_study(study_name="fake", storage=backends.open_storage(url))
        rng = random.Random(0)
        while not stop.is_set():
            trial = writer.ask(DISTRIBUTIONS)
            record.write_metrics(trial, {"params": 10.0})
            writer.tell(trial, [rng.random(), 10.0])

    thread = threading.Thread(target=write)
    thread.start()
    try:
        reader = optuna.load_study(study_name="fake", storage=backends.open_storage(url))
        seen, reads, give_up = 0, 0, time.monotonic() + 60.0
        # at least 40 reads, and on until the writer has added a few trials (a slow or busy
        # machine may let the writer's thread in only now and then)
        while reads < 40 or (seen <= 5 and time.monotonic() < give_up):
            reads += 1
            summaries = record.read_summaries(reader)
            complete = [t for t in summaries if t.state == TrialState.COMPLETE]
            assert all(t.values is not None and len(t.values) == 2 for t in complete)
            assert [t.number for t in summaries] == list(range(len(summaries)))
            seen = max(seen, len(summaries))
    finally:
        stop.set()
        thread.join()
    assert seen > 5, "the writer added trials while the reader read"


def _random_trials(seed: int, n: int) -> list[FrozenTrial]:
    """Trials of every kind, in the order a study would hold them."""
    rng = random.Random(seed)
    study = optuna.create_study(directions=["maximize", "minimize"])
    for _ in range(n):
        trial = study.ask(DISTRIBUTIONS)
        kind = rng.choice(["complete", "complete", "complete", "pruned", "fail", "infeasible",
                           "diverged", "stale", "running"])
        if kind == "pruned":
            study.tell(trial, state=TrialState.PRUNED)
        elif kind in ("fail", "stale"):
            record.write_failure(trial, "stale" if kind == "stale" else "oom", "x")
            study.tell(trial, state=TrialState.FAIL)
        elif kind == "infeasible":
            record.write_infeasible(trial, ["params"])
            study.tell(trial, [0.0, 1.0])
        elif kind == "diverged":
            record.write_diverged(trial, "nan")
            study.tell(trial, [0.0, 1.0])
        elif kind == "complete":
            study.tell(trial, [rng.random(), float(rng.randint(1, 1000))])
    return study.get_trials()


def _running(trial: FrozenTrial) -> FrozenTrial:
    copy = copy_module.deepcopy(trial)
    copy.state, copy.values = TrialState.RUNNING, None
    return copy


@pytest.mark.parametrize("seed", range(5))
def test_the_tally_answers_what_a_full_pass_answers(seed: int) -> None:
    trials = _random_trials(seed, 120)
    directions = [optuna.study.StudyDirection.MAXIMIZE, optuna.study.StudyDirection.MINIMIZE]
    tally = record.Tally(directions)
    rng = random.Random(seed)
    cut = 0
    while cut < len(trials):  # the study grows by a few trials between updates
        cut = min(len(trials), cut + rng.randint(1, 9))
        # the last two are still running at this update and finish before a later one
        snapshot = [t if t.number < cut - 2 else _running(t) for t in trials[:cut]]
        tally.update(snapshot)
        assert tally.done == record.count_done(snapshot)
        assert sorted(r.number for r in tally.failures) == \
            [t.number for t in snapshot if t.state.is_finished() and record.counts_as_failure(t)]
        assert sorted(t.number for t in tally.best) == \
            sorted(t.number for t in record.front(snapshot, directions))


def test_front_weights_go_when_a_trial_leaves_the_front_whoever_finished_it(tmp_path: Path) -> None:
    (tmp_path / "artifacts").mkdir()
    store = FileSystemArtifactStore(tmp_path / "artifacts")
    study = optuna.create_study(directions=["maximize", "minimize"])
    directions = study.directions

    def finish(accuracy: float, params: float) -> None:
        trial = study.ask()
        path = tmp_path / f"w{trial.number}.pt"
        path.write_bytes(b"weights")
        artifact_id = optuna.artifacts.upload_artifact(artifact_store=store, file_path=str(path),
                                                       study_or_trial=trial)
        record.write_artifact(trial, record.WEIGHTS, artifact_id, "sha")
        study.tell(trial, [accuracy, params])

    def kept() -> set[int]:
        return {t.number for t in study.get_trials()
                if (tmp_path / "artifacts" / t.user_attrs[record.WEIGHTS.id_key]).exists()}

    keeper, tally = artifacts.FrontWeights(store), record.Tally(directions)
    finish(0.5, 100.0)
    finish(0.6, 200.0)
    keeper.update(study.get_trials(), tally.update(study.get_trials()).best)
    assert kept() == {0, 1}
    finish(0.7, 50.0)  # dominates both; as if another worker finished it and this one never saw it
    finish(0.4, 10.0)  # on the front too
    finish(0.3, 500.0)  # never on the front
    keeper.update(study.get_trials(), tally.update(study.get_trials()).best)
    assert kept() == {2, 3}
    assert kept() == {t.number for t in record.front(study.get_trials(), directions)}


def test_the_pruners_kept_tables_decide_as_a_fresh_read_does() -> None:
    from automl_nn.config import PrunerConfig
    from automl_nn.pruning import ParetoPruner

    rng = random.Random(3)
    study = optuna.create_study(directions=["maximize", "minimize"])
    pruner = ParetoPruner(("accuracy", "params"), PrunerConfig(startup_trials=2))

    def finished(n: int) -> None:
        for _ in range(n):
            trial = study.ask()
            accuracy, params = rng.uniform(0.2, 0.9), float(rng.randint(10, 1000))
            record.write_metrics(trial, {"params": params})
            record.write_epoch(trial, 1, {"epoch": 1, "val_accuracy": accuracy, "val_loss": 1.0,
                                          "seconds": 0.1})
            study.tell(trial, [accuracy, params])

    reasons = []
    for batch in (3, 1, 20, 5, 8):  # the kept tables grow between checks
        finished(batch)
        running = study.ask()
        record.write_metrics(running, {"params": float(rng.randint(10, 1000))})
        record.write_epoch(running, 1, {"epoch": 1, "val_accuracy": rng.uniform(0.1, 0.5),
                                        "val_loss": 1.0, "seconds": 0.1})
        current = pruner.point(record.TrialRecord.running(running), 1)
        assert current is not None
        fresh = pruner.decide(current, study.get_trials(states=record.FINISHED), 1)
        assert pruner(running, 1, 3) == fresh
        reasons.append(fresh)
        study.tell(running, state=TrialState.PRUNED if fresh else TrialState.FAIL)
    assert pruner._tables, "the tables were kept between calls"
    assert any(reasons) and not all(reasons), reasons
