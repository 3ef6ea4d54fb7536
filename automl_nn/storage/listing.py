"""The studies of a database storage and their trial counts, read in plain SQL without Optuna.

`automl-nn studies` needs each study's name, objectives, dataset and how many trials are in each
state: five small queries (the counts are one GROUP BY), whatever the number of trials, and no
import of Optuna, whose import and storage set-up cost more than the read itself. The tables and
columns read here are Optuna's schema; `tests/test_optuna_pins.py` holds this listing equal to
the one read through Optuna's API. A journal file must be replayed, so it is read by Optuna
(`summary.studies_table`); `rows` answers None for one.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

from automl_nn.errors import StorageError
from automl_nn.storage import urls

STATES = ("complete", "pruned", "fail", "running")  # the counted states, as `studies` prints them
METRIC_NAMES_KEY = "study:metric_names"  # where Optuna keeps Study.set_metric_names
CONFIG_KEY = "config"  # the study's resolved config (study.py writes it)


def rows(url: str | None) -> list[dict[str, Any]] | None:
    """One record per study: name, dataset, objectives, trials and the counts by state.

    None for a journal (read it through Optuna). A database with no Optuna tables yet has no
    studies. The storage is only read: nothing is created, migrated or locked for writing.
    """
    url = urls.storage_url(url)
    if urls.journal_path(url) is not None:
        return None
    path = urls.sqlite_path(url)
    if path is not None:
        urls.check_sqlite_file(path, must_exist=True)
    import sqlalchemy

    try:
        engine = sqlalchemy.create_engine(url, **_engine_options(url))
    except (sqlalchemy.exc.SQLAlchemyError, ImportError, ValueError) as exc:
        raise StorageError(f"storage {url}: cannot be opened ({urls.first_line(exc)}). "
                           "Check the URL.") from None
    try:
        with engine.connect() as connection:
            if not sqlalchemy.inspect(connection).has_table("studies"):
                return []
            return _read(connection, sqlalchemy.text)
    except sqlalchemy.exc.SQLAlchemyError as exc:
        raise StorageError(f"storage {url}: cannot be read ({urls.first_line(exc)}). It was left "
                           "untouched; check that it is an automl-nn / Optuna database.") from None
    finally:
        engine.dispose()


def _engine_options(url: str) -> dict[str, Any]:
    if urls.sqlite_path(url) is not None:
        return {"connect_args": {"timeout": urls.BUSY_TIMEOUT_S}}
    return {}


def _read(connection: Any, text: Any) -> list[dict[str, Any]]:
    """Studies, their objective counts and metric names, their configs, and the GROUP BY count."""
    studies = connection.execute(text("SELECT study_id, study_name FROM studies ORDER BY study_id")).all()
    directions: dict[int, int] = defaultdict(int)
    for study_id, in connection.execute(text("SELECT study_id FROM study_directions")):
        directions[study_id] += 1
    names = _attribute(connection, text, "study_system_attributes", METRIC_NAMES_KEY)
    configs = _attribute(connection, text, "study_user_attributes", CONFIG_KEY)
    counts: dict[int, dict[str, int]] = defaultdict(dict)
    query = "SELECT study_id, state, COUNT(*) FROM trials GROUP BY study_id, state"
    for study_id, state, count in connection.execute(text(query)):
        counts[study_id][str(state).lower()] = int(count)
    return [_row(name, directions[study_id], names.get(study_id), configs.get(study_id),
                 counts[study_id]) for study_id, name in studies]


def _attribute(connection: Any, text: Any, table: str, key: str) -> dict[int, Any]:
    query = text(f"SELECT study_id, value_json FROM {table} WHERE key = :key")
    return {study_id: json.loads(value) for study_id, value in connection.execute(query, {"key": key})}


def _row(name: str, objectives: int, metric_names: list[str] | None, config: Any,
         counts: dict[str, int]) -> dict[str, Any]:
    dataset = config.get("dataset") if isinstance(config, dict) else None
    return {
        "study": name,
        "dataset": dataset,
        "objectives": ",".join(metric_names or [f"objective{i}" for i in range(objectives)]),
        "trials": sum(counts.values()),
        **{state: counts.get(state, 0) for state in STATES},
    }
