"""The CUDA checks of issues #10 and #11 in one command, for a machine with a CUDA GPU.

Sections (each prints as it finishes; the summary comes out as JSON and as markdown tables):

  trainer      fit against pytorch/examples' loop on the same GPU (bench_trainer's models and
               reference loop), fp32 / bf16 autocast / channels_last / both: samples/s, ratio, GPU
               utilization sampled while each runs
  per_device   trials per hour with `--trials-per-device 1` against 4 on one GPU (MNIST, small nets)
  oom          reliability plan #13: a trial too big for the GPU ends FAIL(oom), the next one runs,
               memory_allocated is back to its baseline (within 1 MiB)
  memory       reliability plan #14: 50 small trials in one process; memory_allocated and RSS flat
  mnist99      a short search for a small CNN on MNIST, then its best trial retrained: time to 99%
               test accuracy

    python benchmarks/bench_cuda.py --data-dir /path/with/mnist/raw            # on a GPU machine
    python benchmarks/bench_cuda.py --data-dir DIR --device cpu --quick        # dry run on a CPU

Without a CUDA device (and without --device cpu) it exits 2 and says so.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from optuna.trial import TrialState

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: the benchmarks package and this tree's automl_nn
    sys.path.insert(0, str(ROOT))

from automl_nn import accel  # noqa: E402
from automl_nn.config import resolve  # noqa: E402
from automl_nn.data import catalog as data  # noqa: E402
from automl_nn.data import vision  # noqa: E402
from automl_nn.nn import build  # noqa: E402
from automl_nn.spec import Candidate  # noqa: E402
from automl_nn.train import evaluate, fit, prepared, seed_everything  # noqa: E402
from automl_nn.trial import NullReporter  # noqa: E402
from benchmarks import bench_trainer  # noqa: E402

SECTIONS = ("trainer", "per_device", "oom", "memory", "mnist99")
OOM_CAP_BYTES = 512 * 2**20  # the process's GPU memory cap while the OOM probe runs
# bytes per trial that "flat" allows for RSS: Optuna's caches and the allocators grow a little
RSS_SLOPE_LIMIT = 256 * 1024
TARGET = 0.99  # test accuracy the MNIST section times


# ---- GPU utilization -----------------------------------------------------------------------------


def gpu_utilization(device: torch.device) -> float | None:
    """Percent of the last sample period the GPU was busy: NVML through torch, else nvidia-smi."""
    if device.type != "cuda":
        return None
    index = device.index if device.index is not None else torch.cuda.current_device()
    with contextlib.suppress(Exception):  # torch.cuda.utilization needs pynvml
        return float(torch.cuda.utilization(index))
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                              "-i", str(index)], capture_output=True, text=True, timeout=5, check=True)
        return float(out.stdout.strip().splitlines()[0])
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


@dataclass
class UtilSampler:
    """Samples GPU utilization every `period` seconds in a thread while a block runs."""

    device: torch.device
    period: float = 0.1
    samples: list[float] = field(default_factory=list)

    @contextlib.contextmanager
    def running(self) -> Iterator[UtilSampler]:
        stop = threading.Event()

        def poll() -> None:
            while not stop.wait(self.period):
                value = gpu_utilization(self.device)
                if value is None:
                    return
                self.samples.append(value)

        thread = threading.Thread(target=poll, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            stop.set()
            thread.join()

    def mean(self) -> float | None:
        return statistics.fmean(self.samples) if self.samples else None


# ---- pure helpers --------------------------------------------------------------------------------


def slope(values: Sequence[float]) -> float:
    """Least-squares slope of `values` against their index (0 for fewer than two)."""
    n = len(values)
    if n < 2:
        return 0.0
    mean_x, mean_y = (n - 1) / 2, statistics.fmean(values)
    num = sum((i - mean_x) * (v - mean_y) for i, v in enumerate(values))
    return num / sum((i - mean_x) ** 2 for i in range(n))


def time_to_target(epochs: Sequence[tuple[float, float]], target: float) -> dict[str, Any]:
    """From (training seconds, test accuracy) per epoch: when the accuracy first reached `target`."""
    elapsed = 0.0
    for number, (seconds, accuracy) in enumerate(epochs, start=1):
        elapsed += seconds
        if accuracy >= target:
            return {"reached": True, "epochs": number, "seconds": elapsed,
                    "best": max(a for _, a in epochs)}
    return {"reached": False, "epochs": None, "seconds": None,
            "best": max((a for _, a in epochs), default=None)}


def rss_bytes() -> int:
    """Resident set size of this process now (Linux /proc; peak RSS elsewhere)."""
    with contextlib.suppress(OSError):
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def search_config(dataset: str, *, trials: int, epochs: int, storage: str, **top: Any) -> dict[str, Any]:
    """A study-file mapping for a search over small CNNs (the MNIST section and trials per hour)."""
    return {
        "dataset": dataset, "objectives": ["accuracy"], "trials": trials, "seed": 0,
        "storage": storage, "study_name": "bench", "keep_predictions": False, **top,
        "space": {"family": ["conv2d_linear", "conv2d"], "depth": {"low": 2, "high": 3},
                  "width": {"low": 16, "high": 64, "log": True}, "kernel_size": [3, 5],
                  "pool": "max", "batch_norm": [True, False], "activation": "relu",
                  "optimizer": ["adam", "adamw"], "lr": {"low": 1e-3, "high": 1e-2, "log": True},
                  "schedule": ["none", "onecycle"], "batch_size": [128, 256], "epochs": epochs},
    }


# ---- trials in this process, watched ------------------------------------------------------------


@dataclass
class Probe(NullReporter):
    """A reporter that records GPU memory and RSS after every trial."""

    device: torch.device
    allocated: list[int] = field(default_factory=list)
    rss: list[int] = field(default_factory=list)

    def trial_finished(self, trial: Any, study: Any, best: Any) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.allocated.append(torch.cuda.memory_allocated(self.device))
        self.rss.append(rss_bytes())


def _search(raw: dict[str, Any], device: torch.device, enqueue: Sequence[dict[str, Any]] = ()) -> tuple[
        Any, Probe]:
    from automl_nn import search

    config = resolve(raw)
    bundle = data.load(config.dataset, config.data_dir)
    opened = search.prepare(config)
    for params in enqueue:
        opened.enqueue_trial(params)
    probe = Probe(device)
    return search.run_search(config, bundle, probe, str(device)), probe


def oom_recovery(device: torch.device) -> dict[str, Any]:
    """#13: small trial, a trial that cannot fit under a memory cap, small trial; memory after each."""
    if device.type != "cuda":
        return {"skipped": "needs a CUDA device"}
    space = {"family": "conv2d", "depth": 2, "width": [8, 2048], "batch_size": [64, 1024],
             "activation": "relu", "optimizer": "adam", "lr": 1e-3, "epochs": 1}
    small, big = {"width": 8, "batch_size": 64}, {"width": 2048, "batch_size": 1024}
    total = torch.cuda.get_device_properties(device).total_memory
    with tempfile.TemporaryDirectory() as tmp:
        raw = {"dataset": "digits", "objectives": ["accuracy"], "trials": 2, "seed": 0,
               "storage": f"sqlite:///{tmp}/oom.db", "study_name": "oom", "keep_weights": "none",
               "keep_predictions": False, "space": space}
        torch.cuda.set_per_process_memory_fraction(OOM_CAP_BYTES / total, device)
        try:
            result, probe = _search(raw, device, enqueue=[small, big, small])
        finally:
            torch.cuda.set_per_process_memory_fraction(1.0, device)
        trials = result.get_trials(deepcopy=False)
    baseline = probe.allocated[0]  # after a first trial: CUDA context, cuBLAS workspace are set up
    return {"states": [t.state.name for t in trials],
            "fail_reason": trials[1].user_attrs.get("fail_reason") if len(trials) > 1 else None,
            "allocated_bytes": probe.allocated,
            "allocated_vs_baseline_bytes": [a - baseline for a in probe.allocated[1:]]}


def memory_across_trials(device: torch.device, trials: int = 50, warmup: int = 10) -> dict[str, Any]:
    """#14: `trials` small trials in this process; slopes of memory_allocated and RSS per trial.

    The first `warmup` trials are left out of the slopes (first-use allocations, import caches).
    """
    with tempfile.TemporaryDirectory() as tmp:
        raw = {"dataset": "digits", "objectives": ["accuracy", "params"], "trials": trials,
               "seed": 0, "storage": f"sqlite:///{tmp}/mem.db", "study_name": "memory",
               "space": {"family": ["linear", "conv2d"], "depth": {"low": 1, "high": 2},
                         "width": {"low": 8, "high": 32}, "epochs": 1, "batch_size": [64, 128]}}
        result, probe = _search(raw, device)
        complete = len(result.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    steady = slice(min(warmup, max(len(probe.rss) - 2, 0)), None)
    allocated = probe.allocated[steady]
    return {"complete": complete, "device": str(device),
            "rss_slope_bytes_per_trial": slope([float(r) for r in probe.rss[steady]]),
            "rss_first_last_mib": [probe.rss[0] / 2**20, probe.rss[-1] / 2**20],
            "allocated_slope_bytes_per_trial": slope([float(a) for a in allocated]) if allocated else None,
            "allocated_spread_bytes": (max(allocated) - min(allocated)) if allocated else None}


# ---- trainer throughput --------------------------------------------------------------------------


VARIANTS: dict[str, tuple[torch.dtype | None, bool]] = {  # name -> (autocast dtype, channels_last)
    "fp32": (None, False), "bf16": (torch.bfloat16, False),
    "channels_last": (None, True), "bf16+channels_last": (torch.bfloat16, True),
}


def trainer(device: torch.device, data_dir: str | None, *, samples: int, repeats: int,
            batch_size: int, compile_too: bool) -> list[dict[str, Any]]:
    """Ours (each variant) against the reference loop, alternating, medians of `repeats`."""
    bundle = data.on_device(data.load("mnist", data_dir), device)
    root = str(vision.torchvision_root("mnist", data_dir))
    rows = []
    for model_name, make in bench_trainer.MODELS.items():
        variants = {k: v for k, v in VARIANTS.items() if model_name == "cnn" or not v[1]}
        for name, (dtype, channels_last) in variants.items():
            for compiled in (False, True) if compile_too else (False,):
                runtime = accel.Runtime(device.type, dtype,
                                        torch.channels_last if channels_last else None, compiled)
                label = name + ("+compile" if compiled else "")
                rows.append(_compare(make, bundle, root, device, runtime, samples, repeats,
                                     batch_size) | {"model": model_name, "variant": label})
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def _compare(build: Callable[[], torch.nn.Module], bundle: data.DataBundle, root: str,
             device: torch.device, runtime: accel.Runtime, samples: int, repeats: int,
             batch_size: int) -> dict[str, Any]:
    def ours() -> float:
        return bench_trainer.our_loop(build().to(device), bundle, samples, batch_size, runtime)

    def reference() -> float:
        return bench_trainer.reference_loop(build().to(device), root, samples, batch_size, device)

    ours(), reference()  # warm-up: CUDA context, cuDNN autotuning, loader start, compilation
    ours_runs, ref_runs = UtilSampler(device), UtilSampler(device)
    mine, theirs = [], []
    for _ in range(repeats):  # alternate so both see the same machine
        torch.manual_seed(0)
        with ours_runs.running():
            mine.append(ours())
        torch.manual_seed(0)
        with ref_runs.running():
            theirs.append(reference())
    return {"ours_samples_per_s": statistics.median(mine),
            "reference_samples_per_s": statistics.median(theirs),
            "ratio": statistics.median(o / r for o, r in zip(mine, theirs, strict=True)),
            "gpu_util_ours": ours_runs.mean(), "gpu_util_reference": ref_runs.mean(),
            "samples": samples, "repeats": repeats, "batch_size": batch_size}


# ---- trials per hour, several trials per GPU ----------------------------------------------------


def trials_per_device(device: torch.device, data_dir: str | None, counts: Sequence[int], *,
                      trials: int, epochs: int, dataset: str = "mnist") -> list[dict[str, Any]]:
    """Steady-state trials/h of the same search with each count of processes on one device."""
    rows = []
    for count in counts:
        sampler = UtilSampler(device, period=0.5)
        with tempfile.TemporaryDirectory() as tmp, sampler.running():
            rate, wall = _timed_search(device, data_dir, count, trials, epochs, dataset, Path(tmp))
        rows.append({"trials_per_device": count, "trials_per_hour": rate, "wall_s": wall,
                     "gpu_util": sampler.mean(), "trials": trials})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def _timed_search(device: torch.device, data_dir: str | None, count: int, trials: int,
                  epochs: int, dataset: str, tmp: Path) -> tuple[float, float]:
    import optuna
    import yaml

    url = f"journal:{tmp}/bench.log"
    study_file = tmp / "bench.yaml"
    study_file.write_text(yaml.safe_dump(search_config(dataset, trials=trials, epochs=epochs,
                                                       storage=url, data_dir=data_dir)))
    placement = (["--device", f"cuda:{device.index or 0}", "--trials-per-device", str(count)]
                 if device.type == "cuda" else ["--device", "cpu", "--workers", str(count)])
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "automl_nn", "search", str(study_file), *placement],
                   env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    from automl_nn.storage.backends import open_storage

    trials_done = optuna.load_study(study_name="bench", storage=open_storage(url)).trials
    ends = [t.datetime_complete for t in trials_done if t.datetime_complete is not None]
    starts = [t.datetime_start for t in trials_done if t.datetime_start is not None]
    return len(ends) * 3600 / (max(ends) - min(starts)).total_seconds(), wall


# ---- time to 99% on MNIST ------------------------------------------------------------------------


def mnist99(device: torch.device, data_dir: str | None, *, trials: int, epochs: int,
            dataset: str = "mnist") -> dict[str, Any]:
    """Search small CNNs (validation accuracy), retrain the best, time its epochs to 99% test accuracy.

    The retraining is the trial's own (same seed, recipe and default acceleration); the test split
    is evaluated after each epoch's clock has stopped, so it is not counted as training time.
    """
    with tempfile.TemporaryDirectory() as tmp:
        raw = search_config(dataset, trials=trials, epochs=epochs, storage=f"sqlite:///{tmp}/m.db",
                            data_dir=data_dir, keep_weights="none")
        started = time.perf_counter()
        result, _ = _search(raw, device)
        search_s = time.perf_counter() - started
        best = result.best_trial
    candidate = Candidate.from_dict(best.user_attrs["candidate"])
    curve = _test_curve(candidate, data.on_device(data.load(dataset, data_dir), device), device)
    return {"search_trials": trials, "search_s": search_s, "best_trial": best.number,
            "best_val_accuracy": best.value, "candidate": candidate.to_dict(), "curve": curve,
            **time_to_target(curve, TARGET)}


def _test_curve(candidate: Candidate, bundle: data.DataBundle,
                device: torch.device) -> list[tuple[float, float]]:
    """(training seconds, test accuracy) after each epoch of training `candidate` from its seed."""
    runtime = accel.runtime_for(accel.AccelConfig(), device, candidate.arch.family)
    seed_everything(candidate.train.seed)
    model = build(candidate.arch, bundle.input_shape, bundle.n_outputs).to(device)
    seen = prepared(bundle, candidate.train)
    curve: list[tuple[float, float]] = []

    def on_epoch(epoch: Any) -> None:
        test = evaluate(model, seen, bundle.x_test, bundle.y_test, runtime=runtime)
        curve.append((epoch.seconds, test.accuracy))

    fit(model, bundle, candidate.train, on_epoch=on_epoch, runtime=runtime)
    return curve


# ---- the command ---------------------------------------------------------------------------------


def markdown(summary: dict[str, Any]) -> str:
    """The summary as the tables docs/benchmarks.md records."""
    lines = [f"Device: {summary.get('device')}", ""]
    if summary.get("trainer"):
        lines += ["| model | variant | ours (samples/s) | reference (samples/s) | ratio | GPU util ours (%) "
                  "| GPU util reference (%) |", "|---|---|---:|---:|---:|---:|---:|"]
        lines += [f"| {r['model']} | {r['variant']} | {r['ours_samples_per_s']:,.0f} | "
                  f"{r['reference_samples_per_s']:,.0f} | {r['ratio']:.2f}x | "
                  f"{_pct(r['gpu_util_ours'])} | {_pct(r['gpu_util_reference'])} |"
                  for r in summary["trainer"]]
        lines.append("")
    if summary.get("trials_per_device"):
        lines += ["| trials per device | trials/h (steady state) | wall (s) | GPU util (%) |",
                  "|---:|---:|---:|---:|"]
        lines += [f"| {r['trials_per_device']} | {r['trials_per_hour']:,.0f} | {r['wall_s']:.1f} | "
                  f"{_pct(r['gpu_util'])} |" for r in summary["trials_per_device"]]
        lines.append("")
    if summary.get("oom"):
        oom = summary["oom"]
        lines.append("OOM recovery: " + (oom["skipped"] if "skipped" in oom else
                     f"trial states {', '.join(oom['states'])}, fail_reason {oom['fail_reason']}, "
                     f"memory_allocated vs baseline {oom['allocated_vs_baseline_bytes']} bytes"))
    if summary.get("memory"):
        mem = summary["memory"]
        lines.append(f"Memory across {mem['complete']} trials: memory_allocated slope "
                     f"{mem['allocated_slope_bytes_per_trial']} B/trial, spread "
                     f"{mem['allocated_spread_bytes']} B; RSS slope "
                     f"{mem['rss_slope_bytes_per_trial']:.0f} B/trial")
    if summary.get("mnist99"):
        m = summary["mnist99"]
        lines.append(f"MNIST {TARGET:.0%} test accuracy: " + (
            f"reached after {m['epochs']} epochs, {m['seconds']:.1f} s of training" if m["reached"]
            else f"not reached (best {m['best']})"))
    return "\n".join(lines) + "\n"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--device", default="cuda:0", help="cuda:N, or cpu for a dry run")
    parser.add_argument("--data-dir", default=None, help="where MNIST is (the .gz files will do)")
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"some of {', '.join(SECTIONS)}")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the script runs")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile variants")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--samples", type=int, default=None,
                        help="training samples per trainer run (default 60000, --quick 256)")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON summary here")
    return parser.parse_args(argv)


def require_device(name: str) -> torch.device:
    """The device to measure on; exit 2 with a message when CUDA was asked for and is absent."""
    if name.startswith("cuda") and not torch.cuda.is_available():
        print("error: bench_cuda.py measures on a CUDA GPU, but no CUDA device is available here "
              f"(torch {torch.__version__}, cuda build {torch.version.cuda}). Run it on a GPU "
              "machine, or pass --device cpu --quick for a dry run of the script.", file=sys.stderr)
        sys.exit(2)
    return torch.device(name)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    device = require_device(args.device)
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        print(f"error: unknown section(s) {', '.join(unknown)}; expected some of {', '.join(SECTIONS)}.",
              file=sys.stderr)
        sys.exit(2)
    accel.setup(device)
    quick = args.quick
    searched = "mnist?train_size=1024" if quick else "mnist"  # the dry run trains on a little
    summary: dict[str, Any] = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
        or platform.machine(), "torch": torch.__version__, "quick": quick}
    runs: dict[str, Callable[[], Any]] = {
        "trainer": lambda: trainer(device, args.data_dir,
                                   samples=args.samples or (256 if quick else 60000),
                                   repeats=1 if quick else args.repeats, batch_size=args.batch_size,
                                   compile_too=args.compile),
        "per_device": lambda: trials_per_device(device, args.data_dir, (1, 2) if quick else (1, 4),
                                                trials=2 if quick else 24, epochs=1, dataset=searched),
        "oom": lambda: oom_recovery(device),
        "memory": lambda: memory_across_trials(device, trials=5 if quick else 50,
                                               warmup=1 if quick else 10),
        "mnist99": lambda: mnist99(device, args.data_dir, trials=1 if quick else 12,
                                   epochs=1 if quick else 8, dataset=searched),
    }
    for name in sections:
        started = time.perf_counter()
        summary[name] = runs[name]()
        print(f"[{name}] done in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    text = json.dumps(summary, indent=2, default=str)
    print(text)
    print(markdown(summary))
    if args.out is not None:
        args.out.write_text(text + "\n")
    return summary


if __name__ == "__main__":
    main()
