"""bench_scale's study builder and its table, on a small fake source study (no training)."""

from __future__ import annotations

from pathlib import Path

import optuna
from optuna.trial import TrialState

from automl_nn.storage import backends, record
from benchmarks import bench_scale
from tests.fake_study import make_study


def test_build_copies_real_records_with_jittered_values(tmp_path: Path) -> None:
    source = f"sqlite:///{tmp_path / 'source.db'}"
    made = make_study(backends.open_storage(source), name=bench_scale.SOURCE_NAME, n=6)
    record.enqueue_portfolio(made, [("mlp", {"family": "linear"})])
    made.tell(made.ask(), [0.5, 100.0])
    target = f"sqlite:///{tmp_path / 'big.db'}"
    bench_scale.build(source, target, "big", 40)
    study = optuna.load_study(study_name="big", storage=target)
    trials = study.get_trials()
    assert len(trials) == 40 and study.metric_names == ["accuracy", "params"]
    assert study.user_attrs["config"] == made.user_attrs["config"]
    complete = [t for t in trials if t.state == TrialState.COMPLETE and "candidate" in t.user_attrs]
    assert all(t.values[0] == t.user_attrs["accuracy"] and t.values[1] == t.user_attrs["params"]
               for t in complete), "the attributes move with the jittered values"
    assert len({tuple(t.values) for t in complete}) == len(complete), "no two copies alike"
    marked = sum(1 for t in trials if "portfolio" in t.user_attrs)
    assert marked == 1, "portfolio marks stay on the first copy"
    assert bench_scale.build(source, target, "big", 40) == 0.0, "an existing study of that size is kept"


def test_the_table_gives_ratios_to_optunas_load_and_the_paired_overhead() -> None:
    reads = [{"command": "Optuna load_study + get_trials", "seconds": 10.0, "ratio": 1.0, "rss_mb": 800.0},
             {"command": "show", "seconds": 2.0, "ratio": 0.2, "rss_mb": 170.0}]
    cost = {"ask_tell": 0.5, "cycle": 1.0, "train": 0.2, "eval": 0.01, "metrics": 0.0, "storage": 0.02,
            "artifacts": 0.0, "other": 0.1, "sampling": 0.6, "overhead": 0.79, "own": 0.19,
            "beyond": 0.03, "trials": 8}
    text = bench_scale.markdown("big", 10_000, reads, cost, {})
    assert "| show | 2.00 | 0.20x | 170 |" in text
    assert "Optuna ask+tell 500 ms" in text and "(median of the paired differences) 30 ms" in text
    assert "sampler's own work 190 ms" in text
    assert "In the sampler" not in text, "runs before the sampler was timed print no sampler line"
    cost.update(sampler=0.55, ask_tell_sampler=0.45, beyond_sampler=0.04)
    text = bench_scale.markdown("big", 10_000, reads, cost, {})
    assert "the search 550 ms, Optuna's ask + tell 450 ms" in text
    assert "overhead 240 ms against Optuna's 50 ms" in text and "paired differences) 40 ms." in text


def test_timed_sampler_counts_each_trials_sampler_seconds_and_samples_as_the_sampler() -> None:
    import optuna

    timed = bench_scale.TimedSampler(optuna.samplers.RandomSampler(seed=3))
    plain = optuna.samplers.RandomSampler(seed=3)
    values = []
    for sampler in (timed, plain):
        study = optuna.create_study(sampler=sampler)  # type: ignore[arg-type]
        study.optimize(lambda t: t.suggest_float("x", 0, 1) + t.suggest_int("n", 1, 9), n_trials=4)
        values.append([t.params for t in study.trials])
    assert values[0] == values[1], "the wrapper changes no sample"
    assert sorted(timed.seconds) == [0, 1, 2, 3] and all(s > 0 for s in timed.seconds.values())


def test_grow_copies_every_trial_row_under_new_ids_and_numbers(tmp_path: Path) -> None:
    source = f"sqlite:///{tmp_path / 'source.db'}"
    make_study(backends.open_storage(source), name=bench_scale.SOURCE_NAME, n=6)
    built = tmp_path / "big.db"
    bench_scale.build(source, f"sqlite:///{built}", "big", 10)
    bench_scale.grow(built, tmp_path / "grown.db", "big", 3)
    original = optuna.load_study(study_name="big", storage=f"sqlite:///{built}").get_trials()
    grown = optuna.load_study(study_name="big", storage=f"sqlite:///{tmp_path / 'grown.db'}").get_trials()
    assert [t.number for t in grown] == list(range(30))
    for copy in grown[10:]:
        first = original[copy.number % 10]
        assert (copy.state, copy.params, copy.user_attrs) == (first.state, first.params, first.user_attrs)
        if first.values is not None:
            assert copy.values[1] == first.values[1]
            assert 0.9 * first.values[0] <= copy.values[0] <= first.values[0]
