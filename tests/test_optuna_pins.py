"""The private Optuna surface automl-nn relies on: these tests fail first when an upgrade moves it.

- `recovery.TaggingRDBStorage` overrides `RDBStorage._get_stale_trial_ids`, which Optuna's
  `fail_stale_trials` calls, to tag a stale trial's `fail_reason` while it is still RUNNING.
- The reaper and the stop callback read `Study._storage` and `FrozenTrial._trial_id`.
"""

from __future__ import annotations

import inspect
import warnings
from pathlib import Path

import optuna
import pytest
from optuna.storages import RDBStorage
from optuna.storages._cached_storage import _CachedStorage
from optuna.storages._heartbeat import fail_stale_trials

from automl_nn.storage.recovery import TaggingRDBStorage


def test_stale_trial_hook_is_still_called_by_fail_stale_trials() -> None:
    signature = inspect.signature(RDBStorage._get_stale_trial_ids)
    assert list(signature.parameters) == ["self", "study_id"]
    assert "_get_stale_trial_ids(study._study_id)" in inspect.getsource(fail_stale_trials)
    assert TaggingRDBStorage._get_stale_trial_ids is not RDBStorage._get_stale_trial_ids


def test_study_and_trial_private_attributes_exist() -> None:
    study = optuna.create_study(storage=optuna.storages.InMemoryStorage())
    trial = study.ask()
    study.tell(trial, 1.0)
    frozen = study.trials[0]
    assert isinstance(study._storage, optuna.storages.BaseStorage)
    assert study._storage.get_trial(frozen._trial_id).number == frozen.number


def test_batched_attribute_writes_use_surface_that_still_exists() -> None:
    # recovery.set_user_attrs: RDBStorage._set_trial_attr_without_commit(session, model, id, key,
    # value) inside one session, then the trial's cached copy, as Trial.set_user_attr updates it.
    signature = inspect.signature(RDBStorage._set_trial_attr_without_commit)
    assert list(signature.parameters) == ["self", "session", "model_cls", "trial_id", "key", "value"]
    assert "self._cached_frozen_trial.user_attrs[key] = value" in inspect.getsource(
        optuna.trial.Trial.set_user_attr)
    source = inspect.getsource(_CachedStorage.set_trial_user_attr)
    assert "self._backend.set_trial_user_attr(" in source  # a pass-through: no cache to update


def test_multi_row_attribute_upsert_matches_optunas_own_upsert() -> None:
    # recovery.TaggingRDBStorage._upsert_user_attrs: Optuna's own upsert (the same table, columns
    # and unique key, on_conflict_do_update on SQLite and PostgreSQL) in one statement, after the
    # same trial lookup and updatable check.
    from optuna.storages._rdb import models

    source = inspect.getsource(RDBStorage._set_trial_attr_without_commit)
    for piece in ("models.TrialModel.find_or_raise_by_id(trial_id, session)",
                  "self.check_trial_is_updatable(trial_id, trial.state)",
                  "on_conflict_do_update", "index_elements=[model_cls.trial_id, model_cls.key]",
                  "value_json=json.dumps(value)"):
        assert piece in source, piece
    table = models.TrialUserAttributeModel.__table__
    assert {"trial_id", "key", "value_json"} <= set(table.columns.keys())


def test_pareto_front_helper_still_exists() -> None:
    # record.front: the helper study.best_trials itself uses, on trials already read
    from optuna.study._multi_objective import _get_pareto_front_trials_by_trials

    assert list(inspect.signature(_get_pareto_front_trials_by_trials).parameters) == [
        "trials", "directions", "consider_constraint"]


def test_state_counts_and_study_listing_use_surface_that_still_exists(tmp_path: Path) -> None:
    # record.state_counts: one GROUP BY over models.TrialModel (state, study_id, trial_id) in
    # _create_scoped_session; summary.studies_table: FrozenStudy._study_id and the metric names'
    # system attribute, so `studies` reads no trial at all.
    from optuna.storages._rdb import models
    from optuna.storages._rdb.storage import _create_scoped_session

    assert {"state", "study_id", "trial_id"} <= set(models.TrialModel.__table__.columns.keys())
    assert list(inspect.signature(_create_scoped_session).parameters)[:2] == ["scoped_session",
                                                                             "ignore_integrity_error"]
    storage = RDBStorage(f"sqlite:///{tmp_path / 'pins.db'}")
    study = optuna.create_study(storage=storage, directions=["maximize", "minimize"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study.set_metric_names(["accuracy", "params"])
    (frozen,) = storage.get_all_studies()
    assert frozen._study_id == study._study_id
    assert frozen.system_attrs["study:metric_names"] == ["accuracy", "params"]


def test_summary_read_uses_surface_that_still_exists() -> None:
    # record.read_summaries: plain SQL over the trials, trial_values, trial_user_attributes and
    # trial_params tables, the stored value's decoding, and _CachedStorage's backend; a trial's
    # values are written with its final state in one commit (the order the read relies on).
    from optuna.storages._rdb import models

    columns = {table: set(model.__table__.columns.keys()) for table, model in (
        ("trials", models.TrialModel), ("values", models.TrialValueModel),
        ("attrs", models.TrialUserAttributeModel), ("params", models.TrialParamModel))}
    assert {"trial_id", "number", "study_id", "state", "datetime_start",
            "datetime_complete"} <= columns["trials"]
    assert {"trial_id", "objective", "value", "value_type"} <= columns["values"]
    assert {"trial_id", "key", "value_json"} <= columns["attrs"]
    assert {"param_id", "trial_id", "param_name", "param_value", "distribution_json"} <= columns["params"]
    stored = models.TrialValueModel.value_to_stored_repr(float("inf"))
    assert models.TrialValueModel.stored_repr_to_value(*stored) == float("inf")
    assert "self._backend = backend" in inspect.getsource(_CachedStorage.__init__)
    source = inspect.getsource(RDBStorage.set_trial_state_values)
    assert "_set_trial_value_without_commit" in source and "trial.state = state" in source
    # report.hypervolume_history: Optuna's exact hypervolume
    from optuna._hypervolume import compute_hypervolume

    assert list(inspect.signature(compute_hypervolume).parameters) == [
        "loss_vals", "reference_point", "assume_pareto"]


@pytest.mark.parametrize("kind", ["sqlite", "postgres"])
def test_plain_sql_study_listing_equals_the_one_read_through_optuna(
        tmp_path: Path, kind: str, request: pytest.FixtureRequest) -> None:
    # storage.listing reads Optuna's studies, study_directions, study_system_attributes,
    # study_user_attributes and trials tables itself; this holds it to Optuna's own read.
    from automl_nn.results.summary import studies_table
    from automl_nn.storage import listing
    from tests.fake_study import make_study

    url = f"sqlite:///{tmp_path / 'list.db'}" if kind == "sqlite" else request.getfixturevalue("postgres_url")
    storage = RDBStorage(url)
    make_study(storage, "two", n=5)  # 5 complete, 1 failed; metric names and a config
    plain = optuna.create_study(storage=storage, study_name="plain", directions=["minimize"] * 3)
    plain.tell(plain.ask(), state=optuna.trial.TrialState.PRUNED)
    plain.ask()  # left running
    plain.enqueue_trial({})  # waiting: counted in trials, in no state column
    optuna.create_study(storage=storage, study_name="empty")
    expected = studies_table(storage)
    assert [row["study"] for row in expected] == ["two", "plain", "empty"]
    assert listing.rows(url) == expected
    assert expected[1]["objectives"] == "objective0,objective1,objective2"
    assert expected[1]["trials"] == 3


def test_plain_sql_listing_creates_nothing_in_a_database_without_optunas_tables(tmp_path: Path) -> None:
    import sqlite3

    from automl_nn.storage import listing

    path = tmp_path / "other.db"
    with sqlite3.connect(path) as connection:
        connection.execute("CREATE TABLE notes (body TEXT)")
    assert listing.rows(f"sqlite:///{path}") == []
    with sqlite3.connect(path) as connection:
        tables = [name for name, in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    assert tables == ["notes"]
    assert listing.rows(f"journal:{tmp_path / 'x.log'}") is None
