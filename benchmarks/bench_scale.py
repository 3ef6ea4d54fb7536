"""Large studies: read commands and per-trial overhead at 10,000 and 100,000 trials.

Building. A real search (digits, accuracy vs params, a few epochs) makes a source study; its
trials are copied through Optuna's storage API (`Study.add_trials`) into a new study until it holds
`--trials` trials, each copy with the user attributes a real trial writes (candidate, epochs,
metrics, test metrics, time, artifact ids) and its objective values jittered (accuracy scaled by a
factor in [0.85, 1], params by one in [0.5, 2], the matching attributes with them) so the front is
a real front and not a few repeated points. Portfolio marks stay on the first copies only.

Timing. Every read command (`studies`, `show`, `pareto --format json`, `report`) runs as a user
runs it, one fresh `python -m automl_nn` process each, side by side with a fresh process that does
Optuna's own full load (`optuna.load_study` + `study.get_trials()`), in rounds; the table gives
each command's median wall seconds and peak RSS, and its ratio to the median Optuna load of the same
run.

Per-trial overhead. In one process: first Optuna's own multivariate TPE `ask` + `tell` on a copy of
the study (the same history, the same storage kind, after its first load), then `automl-nn search`
resumed on the study itself for `--new-trials` more trials of tiny networks. A trial's overhead is
the time from its start to the next trial's start less the seconds its time record gives to
training and evaluation; the first new trial, which pays the first load, is left out.

    python -m benchmarks.bench_scale --trials 10000 [--storage URL] [--workdir DIR] [--rounds 3]
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import machine

ROOT = Path(__file__).resolve().parents[1]
SOURCE_NAME = "digits-source"
SOURCE_SEARCH = ["--dataset", "digits", "--objective", "accuracy,params", "--epochs", "3",
                 "--seed", "0"]
CHUNK = 500  # trials per add_trials call
GNU_TIME = "/usr/bin/time"  # Debian package `time`


def source_study(workdir: Path, trials: int) -> str:
    """A real digits study of `trials` trained trials in `workdir`/source.db (made once, then reused)."""
    url = f"sqlite:///{workdir / 'source.db'}"
    if not (workdir / "source.db").exists():
        subprocess.run([sys.executable, "-m", "automl_nn", "search", *SOURCE_SEARCH, "--trials",
                        str(trials), "--storage", url, "--study-name", SOURCE_NAME],
                       check=True, cwd=workdir, stdout=subprocess.DEVNULL)
    return url


def jittered(template: Any, rng: random.Random, keep_portfolio: bool) -> Any:
    """A copy of a finished trial with its objective values (and their attributes) jittered."""
    import optuna

    attrs = dict(template.user_attrs)
    if not keep_portfolio:
        attrs.pop("portfolio", None)
    values = None
    if template.values is not None:
        accuracy = min(1.0, template.values[0] * rng.uniform(0.85, 1.0))
        params = max(1.0, round(template.values[1] * rng.uniform(0.5, 2.0)))
        values = [accuracy, float(params)]
        if "accuracy" in attrs:
            attrs.update(accuracy=accuracy, error=1.0 - accuracy, params=float(params))
    system = {k: v for k, v in template.system_attrs.items() if k.startswith("constraints:")}
    return optuna.trial.create_trial(
        state=template.state, values=values, params=template.params,
        distributions=template.distributions, user_attrs=attrs, system_attrs=system,
        intermediate_values=template.intermediate_values)


def build(source_url: str, url: str, name: str, trials: int, seed: int = 0) -> float:
    """Make study `name` at `url` with `trials` copies of the source study's finished trials;
    returns the seconds it took. An existing study of that size is kept."""
    import optuna

    from automl_nn.storage import backends

    storage = backends.open_storage(url)
    if name in backends.study_names(storage):
        study = optuna.load_study(study_name=name, storage=storage)
        if len(study.get_trials(deepcopy=False)) == trials:
            return 0.0
        optuna.delete_study(study_name=name, storage=storage)
    source = optuna.load_study(study_name=SOURCE_NAME, storage=backends.open_storage(source_url))
    templates = [t for t in source.get_trials() if t.state.is_finished()]
    started = time.perf_counter()
    study = optuna.create_study(study_name=name, storage=storage, directions=source.directions)
    study.set_metric_names(list(source.metric_names or []))
    for key, value in source.user_attrs.items():
        study.set_user_attr(key, value)
    rng = random.Random(seed)
    for start in range(0, trials, CHUNK):
        batch = [jittered(templates[i % len(templates)], rng, keep_portfolio=i < len(templates))
                 for i in range(start, min(start + CHUNK, trials))]
        study.add_trials(batch)
    return time.perf_counter() - started


def sqlite_copy(source: Path, target: Path) -> None:
    """A consistent copy of an SQLite file, its write-ahead log included (SQLite's backup API)."""
    import sqlite3

    target.unlink(missing_ok=True)
    with contextlib.closing(sqlite3.connect(source)) as src, \
            contextlib.closing(sqlite3.connect(target)) as dst:
        src.backup(dst)


GROWN_TABLES = {  # the per-trial tables a copy of a trial needs, and their columns beside trial_id
    "trial_values": "objective, value, value_type",
    "trial_params": "param_name, param_value, distribution_json",
    "trial_user_attributes": "key, value_json",
    "trial_system_attributes": "key, value_json",
    "trial_intermediate_values": "step, intermediate_value, intermediate_value_type",
}


def grow(source: Path, target: Path, name: str, factor: int) -> float:
    """An SQLite copy of a built study (`source`) grown `factor` times in SQL, for sizes where
    `add_trials` would take the better part of an hour (100,000 trials): each round appends a copy
    of the original trials' rows under new trial ids and numbers, its accuracy values scaled by a
    random factor in [0.9, 1] so the copies do not tie. Returns the seconds it took."""
    import sqlite3

    started = time.perf_counter()
    sqlite_copy(source, target)
    db = sqlite3.connect(target)
    try:
        (study_id,) = db.execute("SELECT study_id FROM studies WHERE study_name = ?", (name,)).fetchone()
        low, high, count = db.execute("SELECT min(trial_id), max(trial_id), count(*) FROM trials "
                                      "WHERE study_id = ?", (study_id,)).fetchone()
        for k in range(1, factor):
            (top,) = db.execute("SELECT max(trial_id) FROM trials").fetchone()
            offset = top + 1 - low
            db.execute("INSERT INTO trials (trial_id, number, study_id, state, datetime_start, "
                       "datetime_complete) SELECT trial_id + ?, number + ?, study_id, state, "
                       "datetime_start, datetime_complete FROM trials WHERE trial_id BETWEEN ? AND ?",
                       (offset, k * count, low, high))
            for table, columns in GROWN_TABLES.items():
                db.execute(f"INSERT INTO {table} (trial_id, {columns}) SELECT trial_id + ?, {columns} "
                           f"FROM {table} WHERE trial_id BETWEEN ? AND ?", (offset, low, high))
            db.execute("UPDATE trial_values SET value = value * (0.9 + abs(random() % 1000) / 10000.0) "
                       "WHERE objective = 0 AND trial_id BETWEEN ? AND ?", (low + offset, high + offset))
        db.commit()
    finally:
        db.close()
    return time.perf_counter() - started


# ---- read commands, side by side with Optuna's own load --------------------------------------------

OPTUNA_LOAD = ("import optuna, sys\n"
               "study = optuna.load_study(study_name=sys.argv[1], storage=sys.argv[2])\n"
               "print(len(study.get_trials()))\n")


def commands(url: str, name: str, out: Path) -> dict[str, list[str]]:
    """What each row of the table runs: a fresh interpreter each, as a user runs them."""
    cli = [sys.executable, "-m", "automl_nn"]
    return {
        "Optuna load_study + get_trials": [sys.executable, "-c", OPTUNA_LOAD, name, url],
        "studies": [*cli, "studies", "--storage", url],
        "show": [*cli, "show", name, "--storage", url],
        "pareto --format json": [*cli, "pareto", name, "--storage", url, "--format", "json"],
        "pareto --pick knee": [*cli, "pareto", name, "--storage", url, "--pick", "knee"],
        "report": [*cli, "report", name, "--storage", url, "--out", str(out)],
    }


def timed(command: Sequence[str], cwd: Path) -> tuple[float, float]:
    """Wall seconds and peak RSS (MB) of one command, through GNU time (`/usr/bin/time`): a child
    forked from this process would report this process's own pages as its peak. A failing command
    stops the benchmark."""
    report = cwd / "time.txt"
    started = time.perf_counter()
    done = subprocess.run([GNU_TIME, "-f", "%M", "-o", str(report), *command], cwd=cwd,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command[:5])} failed: {done.stderr[-2000:]}")
    return seconds, int(report.read_text().split()[-1]) / 1024


def time_reads(url: str, name: str, workdir: Path, rounds: int,
               skip: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Each command's median wall time and RSS over `rounds` rounds, and its ratio to the median
    Optuna load of the same rounds (every round runs every command once, in turn)."""
    out = workdir / f"{name}-report.html"
    table = {k: v for k, v in commands(url, name, out).items() if k not in skip}
    runs: dict[str, list[tuple[float, float]]] = {label: [] for label in table}
    for _ in range(rounds):
        for label, command in table.items():
            runs[label].append(timed(command, workdir))
    load = statistics.median(s for s, _ in runs["Optuna load_study + get_trials"])
    rows = []
    for label, samples in runs.items():
        seconds = statistics.median(s for s, _ in samples)
        rows.append({"command": label, "seconds": seconds, "ratio": seconds / load,
                     "rss_mb": max(m for _, m in samples)})
    if out.exists() and "report" in table:
        rows.append({"command": "report HTML size (MB)", "seconds": out.stat().st_size / 1e6,
                     "ratio": None, "rss_mb": None})
    return rows


# ---- per-trial overhead ------------------------------------------------------------------------------


def copy_storage(url: str, suffix: str) -> str:
    """A copy of an SQLite file (`url` + suffix), or of a PostgreSQL database (`CREATE DATABASE ...
    TEMPLATE`), so the overhead runs never grow the study the reads are timed on."""
    if url.startswith("sqlite:///"):
        source = Path(url.removeprefix("sqlite:///"))
        target = source.with_name(f"{source.stem}-{suffix}{source.suffix}")
        sqlite_copy(source, target)
        return f"sqlite:///{target}"
    import sqlalchemy

    server, database = url.rsplit("/", 1)
    copy = f"{database}_{suffix}"
    engine = sqlalchemy.create_engine(f"{server}/postgres", isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        # a template must have no other sessions: this process's own pooled ones included
        connection.execute(sqlalchemy.text(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :name "
            "AND pid <> pg_backend_pid()"), {"name": database})
        connection.execute(sqlalchemy.text(f'DROP DATABASE IF EXISTS "{copy}"'))
        connection.execute(sqlalchemy.text(f'CREATE DATABASE "{copy}" TEMPLATE "{database}"'))
    engine.dispose()
    return f"{server}/{copy}"


class TimedSampler:
    """A sampler that counts, per trial number, the seconds spent in the wrapped sampler's calls.

    Both sides of the per-trial comparison run the same sampler (multivariate TPE) on the same
    history, but its cost swings by hundreds of milliseconds from one trial to the next. Timing it
    on both sides lets the comparison leave it out: what the search adds beyond Optuna's own
    ask + tell is then the difference of the two sides' time outside the sampler.
    """

    TIMED = ("infer_relative_search_space", "sample_relative", "sample_independent", "before_trial",
             "after_trial")

    def __init__(self, sampler: Any) -> None:
        self.sampler = sampler
        self.seconds: dict[int, float] = {}

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.sampler, name)
        if name not in self.TIMED:
            return attribute

        def timed(study: Any, trial: Any, *args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return attribute(study, trial, *args, **kwargs)
            finally:
                self.seconds[trial.number] = (self.seconds.get(trial.number, 0.0)
                                              + time.perf_counter() - started)

        return timed


def optuna_ask_tell(url: str, name: str, spaces: Sequence[Any],
                    seed: int = 0) -> tuple[list[float], list[float]]:
    """Seconds of each of Optuna's own ask + tell on the study's history after its first load, and
    of the sampler's share of each: the default sampler (multivariate TPE), each ask with the
    distributions one of the search's new trials sampled (the same parameters, in the same order),
    each tell with jittered values."""
    import optuna

    from automl_nn.storage import backends

    sampler = TimedSampler(optuna.samplers.TPESampler(seed=seed))
    study = optuna.load_study(study_name=name, storage=backends.open_storage(url),
                              sampler=sampler)  # type: ignore[arg-type]
    values = [t.values for t in study.get_trials(deepcopy=False) if t.values is not None]  # first load
    rng = random.Random(seed)
    seconds, in_sampler = [], []
    for distributions in spaces:
        started = time.perf_counter()
        trial = study.ask(fixed_distributions=dict(distributions))
        study.tell(trial, [v * rng.uniform(0.9, 1.1) for v in rng.choice(values)])
        seconds.append(time.perf_counter() - started)
        in_sampler.append(sampler.seconds.get(trial.number, 0.0))
    return seconds, in_sampler


def search_overhead(url: str, name: str, trials: int,
                    workdir: Path) -> tuple[list[dict[str, float]], list[Any]]:
    """Resume `automl-nn search` on the study for `trials` more trials, in this process; per trial
    (the first left out) its cycle (start to the next trial's start) and the parts of its time
    record, and the distributions each new trial sampled."""
    import optuna

    from automl_nn import cli
    from automl_nn import study as study_module
    from automl_nn.storage import backends, record

    samplers: list[TimedSampler] = []
    make_sampler = study_module.make_sampler

    def timed_sampler(*args: Any, **kwargs: Any) -> Any:
        samplers.append(TimedSampler(make_sampler(*args, **kwargs)))
        return samplers[-1]

    storage = backends.open_storage(url)
    before = record.state_counts(storage, optuna.load_study(study_name=name, storage=storage)._study_id)
    done = before.get(optuna.trial.TrialState.COMPLETE, 0) + before.get(optuna.trial.TrialState.PRUNED, 0)
    first = sum(before.values())
    os.chdir(workdir)
    study_module.make_sampler = timed_sampler  # type: ignore[assignment]
    try:
        cli.app([*SEARCH_AGAIN, "--trials", str(done + trials), "--storage", url, "--study-name", name],
                standalone_mode=False)
    finally:
        study_module.make_sampler = make_sampler  # type: ignore[assignment]
        os.chdir(ROOT)
    in_sampler = {n: t for sampler in samplers for n, t in sampler.seconds.items()}
    study = optuna.load_study(study_name=name, storage=backends.open_storage(url))
    new = [t for t in study.get_trials(deepcopy=False) if t.number >= first]
    rows = []
    for trial, following in itertools.pairwise(new[1:]):
        assert trial.datetime_start is not None and following.datetime_start is not None
        cycle = (following.datetime_start - trial.datetime_start).total_seconds()
        parts = record.TrialRecord.of(trial).time
        rows.append({"cycle": cycle, **parts, "sampler": in_sampler.get(trial.number, 0.0),
                     "overhead": cycle - parts.get("train", 0.0) - parts.get("eval", 0.0),
                     "own": cycle - sum(parts.get(p, 0.0) for p in ("train", "eval", "sampling"))})
    return rows, [t.distributions for t in new[1:-1]]


SEARCH_AGAIN = ["search", *SOURCE_SEARCH]


def overhead(url: str, name: str, trials: int, workdir: Path) -> dict[str, float]:
    """Median per-trial seconds: Optuna's ask + tell, and the search's cycle, training,
    evaluation and what the rest costs (the overhead), side by side in this process."""
    ours, spaces = search_overhead(copy_storage(url, "search"), name, trials + 2, workdir)
    reference, reference_sampler = optuna_ask_tell(copy_storage(url, "optuna"), name, spaces)
    median = {key: statistics.median(row.get(key, 0.0) for row in ours)
              for key in ("cycle", "train", "eval", "metrics", "sampling", "storage", "artifacts", "other",
                          "overhead", "own", "sampler")}
    pairs = list(zip(ours, reference, reference_sampler, strict=True))
    # paired: the same trial's parameters asked of Optuna alone (sampling cost varies with them)
    beyond = statistics.median(row["overhead"] - ask for row, ask, _ in pairs)
    # and with the sampler's own time left out of both sides
    beyond_sampler = statistics.median((row["overhead"] - row["sampler"]) - (ask - in_sampler)
                                       for row, ask, in_sampler in pairs)
    return {"ask_tell": statistics.median(reference),
            "ask_tell_sampler": statistics.median(reference_sampler), **median,
            "beyond": beyond, "beyond_sampler": beyond_sampler, "trials": len(ours)}


# ---- artifacts ---------------------------------------------------------------------------------------


def artifact_bytes(workdir: Path) -> dict[str, float]:
    """Bytes per trial of the source study's kept weights and predictions (what a real trial of
    the digits search keeps), found through the trials' artifact ids."""
    import optuna

    from automl_nn.storage import backends, record

    folder = workdir / "source-artifacts"
    study = optuna.load_study(study_name=SOURCE_NAME,
                              storage=backends.open_storage(f"sqlite:///{workdir / 'source.db'}"))
    sizes: dict[str, list[int]] = {"weights": [], "predictions": []}
    for trial in study.get_trials(deepcopy=False):
        for kind, keys in (("weights", record.WEIGHTS), ("predictions", record.PREDICTIONS)):
            kept = record.artifact_of(trial, keys)
            if kept is not None and (folder / kept[0]).exists():
                sizes[kind].append((folder / kept[0]).stat().st_size)
    return {kind: statistics.median(found) if found else 0.0 for kind, found in sizes.items()} | {
        "kept_weights": len(sizes["weights"]), "trials": len(study.get_trials(deepcopy=False))}


def markdown(name: str, trials: int, reads: list[dict[str, Any]], cost: dict[str, float],
             stored: dict[str, float]) -> str:
    lines = [f"{trials:,} trials ({name}), medians of the rounds:", "",
             "| command | seconds | ratio to Optuna's load | peak RSS (MB) |", "|---|---:|---:|---:|"] \
        if reads else [f"{trials:,} trials ({name})"]
    for row in reads:
        ratio = "" if row["ratio"] is None else f"{row['ratio']:.2f}x"
        rss = "" if row["rss_mb"] is None else f"{row['rss_mb']:.0f}"
        lines.append(f"| {row['command']} | {row['seconds']:.2f} | {ratio} | {rss} |")
    if cost:
        lines += ["", f"Per trial ({cost['trials']:.0f} trials, medians): Optuna ask+tell "
                  f"{cost['ask_tell'] * 1000:.0f} ms; the search's cycle {cost['cycle']:.2f} s, of "
                  f"which training {cost['train']:.2f} s and evaluation {cost['eval']:.2f} s; overhead "
                  f"{cost['overhead'] * 1000:.0f} ms (static metrics {cost['metrics'] * 1000:.0f} ms, "
                  f"storage {cost['storage'] * 1000:.0f} ms, artifacts {cost['artifacts'] * 1000:.0f} ms, "
                  f"other {cost['other'] * 1000:.0f} ms, sampling {cost['sampling'] * 1000:.0f} ms); "
                  f"overhead beyond ask+tell, trial by trial (median of the paired differences) "
                  f"{cost['beyond'] * 1000:.0f} ms; everything but training, evaluation and the "
                  f"sampler's own work {cost['own'] * 1000:.0f} ms."]
        if "beyond_sampler" in cost:
            lines += ["", f"In the sampler (TPE's own calls, timed on both sides): the search "
                      f"{cost['sampler'] * 1000:.0f} ms, Optuna's ask + tell "
                      f"{cost['ask_tell_sampler'] * 1000:.0f} ms; outside it, the search's overhead "
                      f"{(cost['overhead'] - cost['sampler']) * 1000:.0f} ms against Optuna's "
                      f"{(cost['ask_tell'] - cost['ask_tell_sampler']) * 1000:.0f} ms; beyond "
                      f"ask + tell with the sampler left out of both sides, trial by trial (median "
                      f"of the paired differences) {cost['beyond_sampler'] * 1000:.0f} ms."]
    if stored:
        total = (stored["weights"] + stored["predictions"]) * trials / 1e6
        lines += ["", f"Artifacts per trial of the source study (median): weights "
                  f"{stored['weights'] / 1e3:.1f} kB, predictions {stored['predictions'] / 1e3:.1f} kB; "
                  f"at {trials:,} trials the predictions alone hold "
                  f"{stored['predictions'] * trials / 1e6:.0f} MB and weights kept for every trial "
                  f"would add {stored['weights'] * trials / 1e6:.0f} MB (total {total:.0f} MB); "
                  f"`--keep-weights pareto` kept {stored['kept_weights']:.0f} of "
                  f"{stored['trials']:.0f} trials' weights there."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--storage", default=None, help="SQLAlchemy URL (default: SQLite in --workdir)")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/bench-scale"))
    parser.add_argument("--source-trials", type=int, default=16)
    parser.add_argument("--grow", type=int, default=1,
                        help="SQLite: copy the built study's rows this many times over in SQL (10: "
                        "100,000 trials from 10,000)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the read commands (0: none)")
    parser.add_argument("--new-trials", type=int, default=8,
                        help="trials the overhead runs add (0: skip the overhead)")
    parser.add_argument("--skip", nargs="*", default=[], help="commands to leave out (e.g. report)")
    args = parser.parse_args(argv)
    args.workdir = args.workdir.resolve()
    args.workdir.mkdir(parents=True, exist_ok=True)
    source = source_study(args.workdir, args.source_trials)
    url = args.storage or f"sqlite:///{args.workdir / f'scale{args.trials}.db'}"
    name = f"scale{args.trials}"
    seconds = build(source, url, name, args.trials)
    print(f"# {machine()}\n# built {name}: {args.trials} trials in {seconds:.1f} s", flush=True)
    if args.grow > 1:
        grown = args.workdir / f"scale{args.trials}x{args.grow}.db"
        seconds = grow(Path(url.removeprefix("sqlite:///")), grown, name, args.grow)
        url = f"sqlite:///{grown}"
        print(f"# grown to {args.trials * args.grow} trials in SQL in {seconds:.1f} s", flush=True)
    reads = time_reads(url, name, args.workdir, args.rounds, skip=args.skip) if args.rounds else []
    print(markdown(name, args.trials * args.grow, reads, {}, {}), flush=True)  # kept if the rest fails
    cost = overhead(url, name, args.new_trials, args.workdir) if args.new_trials else {}
    print(markdown(name, args.trials * args.grow, reads, cost, artifact_bytes(args.workdir)))


if __name__ == "__main__":
    main()
