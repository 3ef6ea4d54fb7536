"""Several worker processes on one study: CPU workers, GPU slots, and workers that join from afar.

`search --workers N` (or several GPU slots) starts N processes with the spawn context, after the
parent has created the study and its tables (workers racing to create tables crash). Each process
is one slot: CPU workers split the cores between them (workers x threads <= cores), each GPU slot
sees only its GPU through CUDA_VISIBLE_DEVICES, and several slots may share one GPU.

The trial budget of one `search` is shared exactly: a process takes a ticket before each trial and
gives it up when a trained trial finishes (COMPLETE or PRUNED); a failed trial keeps its ticket, so
it is made up for (so is a diverged or infeasible one). The parent returns the ticket of a worker that
died, so the others finish the target.
`automl-nn worker` processes, which may run on other machines, share nothing but the storage and
stop when the study's finished plus running trials reach the target.

This is no scheduler: where a Dask or Ray cluster exists, `join_study` is the function to run on
it through joblib's backend (see the README).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import multiprocessing.connection
import os
import signal
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from types import FrameType
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from automl_nn import config as cfg
from automl_nn import search, study
from automl_nn.data import catalog as data
from automl_nn.errors import ConfigError, StorageError, UsageError, WorkerFailure
from automl_nn.progress import LogReporter
from automl_nn.storage import backends, record
from automl_nn.trial import Reporter

log = logging.getLogger(__name__)

SQLITE_COMFORT = 4  # past a handful of SQLite writers, journal files are faster and safer


@dataclass(frozen=True)
class Slot:
    """One worker process: the device it trains on and what it may see and use."""

    index: int
    device: str  # as seen from inside the process: "cpu", "cuda" (pinned) or "cuda:N"
    visible: str | None = None  # CUDA_VISIBLE_DEVICES for the process; None inherits the parent's
    threads: int = 1

    def env(self) -> dict[str, str]:
        """Environment the process starts with (set before torch or CUDA initialise)."""
        env = {"OMP_NUM_THREADS": str(self.threads), "MKL_NUM_THREADS": str(self.threads)}
        if self.visible is not None:
            env["CUDA_VISIBLE_DEVICES"] = self.visible
        return env


def available_cores() -> int:
    """Cores this process may run on (respects CPU affinity, e.g. taskset or a container)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def plan_slots(device: str, workers: int = 1, trials_per_device: int = 1, *,
               cuda_count: int | None = None, cores: int | None = None) -> list[Slot]:
    """The worker processes for `--device`, `--workers` and `--trials-per-device`.

    CPU: `workers` processes with cores // workers threads each. CUDA: one process per GPU slot,
    `trials_per_device` slots per GPU, each pinned to its GPU. One slot runs in this process.
    """
    if workers < 1 or trials_per_device < 1:
        raise ConfigError(f"--workers and --trials-per-device must be at least 1, but got "
                          f"{workers} and {trials_per_device}.")
    cuda_count = _cuda_count() if cuda_count is None else cuda_count
    cores = available_cores() if cores is None else cores
    gpus = _gpu_indices(device, cuda_count)
    if not gpus:
        if trials_per_device > 1:
            raise ConfigError(f"--trials-per-device {trials_per_device} applies to CUDA devices, but "
                              f"the device is {device!r}. Use --workers N for CPU processes.")
        name = "cpu" if device == "auto" else device
        if workers == 1:
            return [Slot(0, name, None, cores)]
        return [Slot(i, name, None, max(1, cores // workers)) for i in range(workers)]
    n_slots = len(gpus) * trials_per_device
    if workers not in (1, n_slots):
        raise ConfigError(f"--workers {workers} with {len(gpus)} GPU(s): on GPUs the processes are "
                          f"one per slot, devices x --trials-per-device = {n_slots}. Drop --workers, "
                          "or use --trials-per-device to run several trials per GPU.")
    threads = max(1, cores // n_slots)
    if n_slots == 1:
        return [Slot(0, f"cuda:{gpus[0]}", None, threads)]
    return [Slot(i, "cuda", str(gpu), threads)
            for i, gpu in enumerate(g for g in gpus for _ in range(trials_per_device))]


def _cuda_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _gpu_indices(device: str, cuda_count: int) -> list[int]:
    """GPU indices named by `device` ([] for the CPU); unknown or absent GPUs are refused."""
    if device == "cpu" or (device == "auto" and cuda_count == 0):
        return []
    if device in ("auto", "cuda"):
        if cuda_count == 0:
            raise ConfigError("device: cuda was asked for, but no CUDA device is available. "
                              "Use --device cpu or auto.")
        return list(range(cuda_count))
    indices = []
    for item in device.split(","):
        name = item.strip()
        number = name.removeprefix("cuda:")
        if not name.startswith("cuda:") or not number.isdigit():
            raise ConfigError(f"device: expected auto, cpu, cuda or a list such as cuda:0,cuda:1, "
                              f"but got {name!r}.")
        if int(number) >= cuda_count:
            raise ConfigError(f"device: {name} was asked for, but this machine has {cuda_count} "
                              "CUDA device(s). Use --device auto to take what there is.")
        indices.append(int(number))
    return indices


def storage_warnings(storage: str | None, processes: int) -> list[str]:
    """Advice for the storage a parallel search uses."""
    if processes > SQLITE_COMFORT and backends.is_sqlite(storage):
        return [f"{processes} workers share one SQLite file; they queue on its write lock. Journal "
                "file storage is faster and safer for many processes on one machine "
                "(--storage journal:automl-nn.log), PostgreSQL for several machines."]
    return []


# ---- budgets -------------------------------------------------------------------------------------


class SharedBudget:
    """Tickets shared by the processes of one search: exactly the remaining trials are run."""

    def __init__(self, tickets: Any, holding: Any, index: int) -> None:
        self.tickets = tickets  # multiprocessing Value("i"): tickets not yet taken
        self.holding = holding  # multiprocessing Array("b"): does slot i hold a ticket
        self.index = index

    def admits(self, _study: optuna.Study, _trial: optuna.Trial) -> bool:
        return True  # a process runs a trial only while it holds a ticket

    def more(self, _study: optuna.Study, trial: FrozenTrial | None,
             _trials: Sequence[FrozenTrial] | None = None) -> bool:
        with self.tickets.get_lock():
            if trial is not None and record.counts_toward_budget(trial):
                # spent; a failed (or diverged) trial keeps it and is made up for, and so does an
                # infeasible one, which costs no training
                self.holding[self.index] = 0
            if self.holding[self.index]:
                return True
            if self.tickets.value <= 0:
                return False
            self.tickets.value -= 1
            self.holding[self.index] = 1
            return True

    def give_back(self) -> bool:
        """Return the ticket of a slot whose process died; True if it held one."""
        with self.tickets.get_lock():
            held = bool(self.holding[self.index])
            if held:
                self.tickets.value += 1
                self.holding[self.index] = 0
            return held


class PrefixedReporter(LogReporter):
    """Plain log lines, each marked with the worker that wrote it."""

    def __init__(self, prefix: str) -> None:
        super().__init__(sys.stderr)
        self.prefix = prefix

    def _say(self, line: str) -> None:
        print(f"{self.prefix} {line}", file=self.stream, flush=True)


# ---- one worker process --------------------------------------------------------------------------


@dataclass(frozen=True)
class WorkerJob:
    """What a spawned worker needs: plain, picklable values only."""

    raw_config: dict[str, Any]
    slot: Slot
    shared: bool  # tickets from the parent (search) or the study's counts (worker)


def _worker_main(job: WorkerJob, tickets: Any, holding: Any) -> None:
    """Entry point of a spawned worker; its exit code says how it ended (see `exit_code`)."""
    import torch

    torch.set_num_threads(job.slot.threads)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    config = cfg.resolve(job.raw_config)
    budget: search.Budget = (SharedBudget(tickets, holding, job.slot.index) if job.shared
                            else search.StudyBudget(config.trials, count_running=True))
    reporter = PrefixedReporter(f"[worker {job.slot.index}]")
    sys.exit(exit_code(lambda: _run_one(config, job.slot, budget, reporter)))


def _run_one(config: cfg.StudyConfig, slot: Slot, budget: search.Budget, reporter: Reporter) -> None:
    bundle = data.load(config.dataset, config.data_dir)
    search.run_search(config, bundle, reporter, slot.device, budget=budget, worker_index=slot.index)


def exit_code(work: Callable[[], None]) -> int:
    """Run `work()` and map its outcome to the CLI's exit codes, printing what went wrong."""
    try:
        work()
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    except KeyboardInterrupt as exc:
        return 128 + int(getattr(exc, "signum", signal.SIGINT))
    except Exception:
        log.exception("worker failed")
        return 1
    return 0


# ---- the parent ----------------------------------------------------------------------------------


@contextlib.contextmanager
def _environ(extra: dict[str, str]) -> Iterator[None]:
    """os.environ with `extra` while a child is started (spawned children copy the environment)."""
    saved = {key: os.environ.get(key) for key in extra}
    os.environ.update(extra)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@dataclass
class _Forwarder:
    """The parent's signal handler: pass SIGINT/SIGTERM/SIGHUP to the workers and keep waiting."""

    processes: list[mp.process.BaseProcess]
    received: int | None = None

    def __call__(self, signum: int, _frame: FrameType | None) -> None:
        self.received = self.received or signum
        for process in self.processes:
            if process.is_alive() and process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signum)


def run_parallel(config: cfg.StudyConfig, slots: list[Slot], *, shared: bool = True) -> optuna.Study:
    """Create (or resume) the study, run one process per slot until the target, and wait for them.

    Raises Interrupted when a signal stopped the search, ConfigError when a worker stopped on bad
    input or repeated failures, and WorkerFailure when workers died and the target was missed.
    """
    opened = search.prepare(config)  # the study and its tables exist before any worker starts
    config = study.resume_config(opened, config)  # workers search the space it was created with
    remaining = config.trials - study.count_done(opened)
    if remaining <= 0:
        return opened
    context = mp.get_context("spawn")
    tickets = context.Value("i", remaining)
    holding = context.Array("b", len(slots), lock=False)
    processes: list[mp.process.BaseProcess] = []
    forwarder = _Forwarder(processes)
    previous = {s: signal.signal(s, forwarder) for s in search.STOP_SIGNALS}
    try:
        for slot in slots:
            job = WorkerJob(config.to_raw(), slot, shared)
            process = context.Process(target=_worker_main, args=(job, tickets, holding),
                                      name=f"automl-nn-worker-{slot.index}")
            with _environ(slot.env()):
                process.start()
            processes.append(process)
        codes = _wait(processes, [SharedBudget(tickets, holding, s.index) for s in slots])
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
    return _outcome(config, codes, forwarder.received)


def _wait(processes: list[mp.process.BaseProcess], budgets: list[SharedBudget]) -> list[int]:
    """Wait for every worker; a worker that crashed gives its ticket back to the others."""
    running = dict(enumerate(processes))
    codes = [0] * len(processes)
    while running:
        ready = multiprocessing.connection.wait([p.sentinel for p in running.values()])
        for index, process in list(running.items()):
            if process.sentinel not in ready:
                continue
            process.join()
            codes[index] = process.exitcode if process.exitcode is not None else 1
            del running[index]
            if codes[index] not in (0, 2) and codes[index] < 128 and budgets[index].give_back():
                log.warning("worker %d died (exit %d); its trial goes to another worker",
                            index, codes[index])
    return codes


def _outcome(config: cfg.StudyConfig, codes: list[int], received: int | None) -> optuna.Study:
    if received is not None:
        raise search.Interrupted(received)
    interrupted = [c for c in codes if c > 128]
    if interrupted:
        raise search.Interrupted(interrupted[0] - 128)
    final = study.open_study(config, backends.open_storage(config.storage))
    if 2 in codes:
        raise ConfigError("a worker stopped the search (its message is above); the study keeps its "
                          "finished trials.")
    crashed = [f"worker {i} ({_describe(c)})" for i, c in enumerate(codes) if c != 0]
    done = study.count_done(final)
    if crashed and done < config.trials:
        raise WorkerFailure(f"{', '.join(crashed)} ended abnormally; the study holds {done} of "
                            f"{config.trials} finished trials. Run the same command again to finish.")
    if crashed:
        log.warning("%s ended abnormally; the other workers finished the search", ", ".join(crashed))
    return final


def _describe(code: int) -> str:
    if code < 0:
        return f"killed by {signal.Signals(-code).name}"
    return f"exit {code}"


# ---- joining a study -----------------------------------------------------------------------------


def config_from_storage(study_name: str, storage: str, data_dir: str | None = None) -> cfg.StudyConfig:
    """The config a study was created with, read from its storage, pointed at `storage`."""
    opened = backends.load_existing(study_name, backends.open_storage(storage, must_exist=True))
    raw = opened.user_attrs.get("config")
    if not isinstance(raw, dict):
        raise StorageError(f'study "{study_name}" has no stored automl-nn config, so a worker cannot '
                           "know what to search. Start it with `automl-nn search` first.")
    overrides = {"storage": storage, "data_dir": data_dir, "study_name": study_name}
    return cfg.resolve(raw, overrides)


def join_study(study_name: str, storage: str, *, device: str = "auto", workers: int = 1,
               trials_per_device: int = 1, data_dir: str | None = None,
               reporter: Reporter | None = None) -> optuna.Study:
    """Run trials of an existing study until it reaches its target; no study file needed.

    Safe to call on many machines at once (PostgreSQL storage), or as a joblib task on a Dask or
    Ray cluster: each call is an independent worker that shares nothing but the storage.
    """
    config = config_from_storage(study_name, storage, data_dir)
    slots = plan_slots(device, workers, trials_per_device)
    if len(slots) > 1:
        return run_parallel(config, slots, shared=False)
    bundle = data.load(config.dataset, config.data_dir)
    budget = search.StudyBudget(config.trials, count_running=True)
    # A distinct sampler seed per process, so workers on several machines do not propose alike.
    return search.run_search(config, bundle, reporter or PrefixedReporter(f"[{os.getpid()}]"),
                            slots[0].device, budget=budget, worker_index=os.getpid())
