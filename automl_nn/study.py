"""Studies: create or resume one, after checking it asks the same question; samplers; the front.

A study keeps its resolved config and the config's hash in its user attributes; running the same
search again resumes it (`trials` is the study's total), and a search whose data, objectives or
space differ from the stored ones is refused rather than mixed in. What the user did not set on
resuming comes from the stored config (`resume_config`), so changed defaults never stop a study.
A new study gets its modality's warm-start portfolio as its first trials.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.trial import FrozenTrial

from automl_nn import defaults, pruning, space
from automl_nn.config import ACCEL_KEYS, SAMPLERS, StudyConfig, adopt_stored
from automl_nn.errors import StorageError, unknown_name
from automl_nn.storage import record, recovery
from automl_nn.storage.backends import study_names


def make_sampler(config: StudyConfig, worker_index: int = 0) -> optuna.samplers.BaseSampler:
    """The sampler the config names, seeded with --seed (offset per worker, so that parallel
    workers do not all propose the same first candidates)."""
    seed = None if config.seed is None else config.seed + worker_index
    if config.sampler == "tpe":
        return optuna.samplers.TPESampler(seed=seed)
    if config.sampler == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed)
    if config.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if config.sampler == "qmc":
        return optuna.samplers.QMCSampler(seed=seed, scramble=True, warn_independent_sampling=False)
    if config.sampler == "grid":
        return optuna.samplers.GridSampler(space.grid(config.space), seed=seed)
    if config.sampler == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    raise unknown_name("sampler", config.sampler, SAMPLERS, "sampler")


def open_study(config: StudyConfig, storage: BaseStorage, worker_index: int = 0) -> optuna.Study:
    """Create the study, or resume it after checking it asks the same question.

    On resume the stored config takes the new trial and failure budgets and acceleration options, so
    `automl-nn worker`, which reads its config from storage, works toward the target of the latest
    search and trains as it does.
    """
    sampler = make_sampler(config, worker_index)
    if config.study_name in study_names(storage):
        study = optuna.load_study(study_name=config.study_name, storage=storage, sampler=sampler)
        config = resume_config(study, config)
        study.pruner = pruning.make_pruner(config)
        check_compatible(study, config)
        if "config" not in study.user_attrs:  # its creator died before describing it
            _describe(study, config)
            return study
        stored = study.user_attrs["config"]
        latest = config.to_raw()
        updated = {key: latest[key] for key in ("trials", "max_failures", "timeout", *ACCEL_KEYS)}
        if any(stored.get(key) != value for key, value in updated.items()):
            study.set_user_attr("config", {**stored, **updated})
        return study
    try:
        study = optuna.create_study(storage=storage, study_name=config.study_name,
                                    directions=config.directions(), sampler=sampler,  # type: ignore[arg-type]
                                    pruner=pruning.make_pruner(config))
    except optuna.exceptions.DuplicatedStudyError:  # another process created it just now
        return open_study(config, storage, worker_index)
    _describe(study, config)
    record.enqueue_portfolio(study, portfolio_points(config))
    return study


def resume_config(study: optuna.Study, config: StudyConfig) -> StudyConfig:
    """`config` with what the user did not set (space keys, the pruner) taken from the config the
    study was created with; `config` itself for a study that stored none."""
    stored = study.user_attrs.get("config")
    return adopt_stored(config, stored) if isinstance(stored, dict) else config


def portfolio_points(config: StudyConfig) -> list[tuple[str, dict[str, Any]]]:
    """The warm-start points a new study of `config` starts with: its modality's portfolio, fitted
    into its space, at most half of the trial budget (the sampler always gets the rest).

    None for `portfolio: false`, for plain defaults (their space is the user's own) and for the
    grid sampler, which enumerates the space itself.
    """
    if not config.portfolio or config.defaults not in defaults.MODALITIES or config.sampler == "grid":
        return []
    points = space.portfolio(config.space, defaults.PORTFOLIOS[config.defaults])
    return points[:max(1, config.trials // 2)]


def _describe(study: optuna.Study, config: StudyConfig) -> None:
    """Store what the study asks: objective names, the config, its identity and hash.

    In this order, a study whose creator died part way is always resumable: without an identity
    check_compatible accepts it, and a study with a config was described completely.
    """
    with recovery.no_experimental_warnings():
        study.set_metric_names(list(config.objectives))
    study.set_user_attr("config_hash", config.identity_hash())
    study.set_user_attr("identity", config.identity())
    study.set_user_attr("config", config.to_raw())


def check_compatible(study: optuna.Study, config: StudyConfig) -> None:
    """Refuse to resume a study whose directions, data, objectives or space differ."""
    stored = [d.name.lower() for d in study.directions]
    if stored != config.directions():
        raise StorageError(
            f'study "{study.study_name}" exists with directions [{", ".join(stored)}], but this '
            f'search asks for [{", ".join(config.directions())}] ({", ".join(config.objectives)}). '
            "Use another --study-name, or the original objectives."
        )
    old = study.user_attrs.get("identity")
    if old is None or study.user_attrs.get("config_hash") == config.identity_hash():
        return
    diffs = identity_diff(old, config.identity())
    raise StorageError(
        f'study "{study.study_name}" was created with a different search: {"; ".join(diffs)}. '
        "Resuming would mix two searches. Use another --study-name for the new one, or repeat "
        "the original settings."
    )


def identity_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Human-readable differences between two study identities."""
    diffs = [f"{key}: stored {old.get(key)!r}, now {new[key]!r}"
             for key in ("dataset", "objectives", "constraints") if old.get(key) != new.get(key)]
    old_space, new_space = old.get("space", {}), new["space"]
    for key in sorted(set(old_space) | set(new_space)):
        if old_space.get(key) != new_space.get(key):
            diffs.append(f"space.{key}: stored {old_space.get(key)!r}, now {new_space.get(key)!r}")
    return diffs or ["(stored config hash differs)"]


def count_done(study: optuna.Study, trials: Sequence[FrozenTrial] | None = None) -> int:
    """Trials that count toward the target (`record.counts_toward_budget`). `trials`: a snapshot
    of the study's trials already read, to spare a storage read."""
    return record.count_done(study.get_trials(deepcopy=False) if trials is None else trials)


def front(study: optuna.Study, trials: Sequence[FrozenTrial] | None = None) -> list[FrozenTrial]:
    """The Pareto front (or the best trial of a single-objective study), by the first objective.

    Only COMPLETE, trained trials qualify: pruned trials have no values and infeasible ones
    violate a constraint (Optuna's best_trial(s) skip both). `trials`: as for `count_done`.
    """
    return record.front(study.get_trials(deepcopy=False) if trials is None else trials, study.directions)


def objective_names(study: optuna.Study) -> list[str]:
    return list(study.metric_names or [f"objective{i}" for i in range(len(study.directions))])
