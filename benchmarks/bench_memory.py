"""Peak resident memory of each process of a search on full MNIST, with 1 and 2 workers.

Runs `automl-nn search studies/seed004-mnist-parameters.yaml` (the MNIST space; a few trials of one
epoch) through the CLI in a subprocess and polls /proc for the command's process tree: each
process's VmHWM (its peak RSS) is kept. `resource.getrusage(RUSAGE_CHILDREN)` gives the largest
peak among the waited-for processes as a cross-check. Target (issue #11): every search worker
stays under 1.5 GB. `--code CHECKOUT` runs another checkout's automl_nn and study file (e.g. an
older commit, for a before / after).

`--steps` instead measures where one process's memory goes: a fresh interpreter imports torch,
then optuna and automl_nn, then torchvision.datasets, then loads MNIST as a search does, and
prints its RSS and peak RSS after each step (this checkout's automl_nn only).

    python -m benchmarks.bench_memory --data-dir DIR [--trials 3] [--workers 1 2] [--code CHECKOUT]
    python -m benchmarks.bench_memory --data-dir DIR --steps
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STUDY = Path("studies") / "seed004-mnist-parameters.yaml"  # inside the checkout that runs
TARGET_MB = 1500


def status(pid: int) -> dict[str, str]:
    """/proc/PID/status as a dict (empty once the process is gone)."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return {}
    return dict(line.split(":", 1) for line in lines if ":" in line)


def children(pid: int) -> list[int]:
    """Every descendant of `pid` that is alive now."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = status(int(entry.name))
            if "PPid" in fields:
                parents[int(entry.name)] = int(fields["PPid"])
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        kids = [p for p, pp in parents.items() if pp == parent]
        found += kids
        frontier += kids
    return found


def role(pid: int, root: int) -> str:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return "?"
    if pid == root:
        return "search command"
    if "resource_tracker" in cmdline:
        return "multiprocessing resource tracker"
    return "worker" if "spawn_main" in cmdline else cmdline[:60]


def run(workers: int, trials: int, data_dir: str,
        code: Path = ROOT) -> tuple[dict[int, tuple[str, float]], float]:
    """Peak RSS in MB per process ({pid: (role, MB)}) and RUSAGE_CHILDREN's peak, for one search."""
    peaks: dict[int, tuple[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "automl_nn", "search", str(code / STUDY), "--data-dir", data_dir,
               "--trials", str(trials), "--epochs", "1", "--batch-size", "256",
               "--workers", str(workers), "--storage", f"sqlite:///{tmp}/bench.db",
               "--study-name", f"memory-{workers}"]
        proc = subprocess.Popen(cmd, cwd=tmp, env={**os.environ, "PYTHONPATH": str(code)},
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while proc.poll() is None:
            for pid in [proc.pid, *children(proc.pid)]:
                hwm = status(pid).get("VmHWM", "").strip().split(" ")[0]
                if hwm:
                    name = peaks.get(pid, ("", 0.0))[0] or role(pid, proc.pid)
                    peaks[pid] = (name, max(peaks.get(pid, ("", 0.0))[1], int(hwm) / 1024))
            time.sleep(0.2)
        if proc.returncode != 0:
            raise SystemExit(f"search exited with {proc.returncode}: {' '.join(cmd)}")
    return peaks, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024


def memory_mb() -> tuple[float, float]:
    """(RSS, peak RSS) of this process in MB."""
    fields = status(os.getpid())
    rss, peak = (int(fields[k].strip().split(" ")[0]) / 1024 for k in ("VmRSS", "VmHWM"))
    return rss, peak


def child_steps(data_dir: str) -> None:
    """Run by `--steps` in a fresh interpreter: one JSON line per step, (step, RSS, peak RSS)."""
    def step(name: str) -> None:
        print(json.dumps([name, *memory_mb()]), flush=True)

    step("interpreter")
    import torch  # noqa: F401

    step("import torch")
    import optuna  # noqa: F401

    from automl_nn import cli, study  # noqa: F401
    from automl_nn.data import catalog

    step("import optuna, automl_nn")
    import torchvision.datasets  # noqa: F401

    step("import torchvision.datasets")
    catalog.load("mnist", data_dir)
    step("data.load('mnist')")


def steps(data_dir: str) -> None:
    """Print the table of `child_steps`, with what each step added."""
    out = subprocess.run([sys.executable, "-m", "benchmarks.bench_memory", "--data-dir", data_dir,
                          "--child-steps"], env={**os.environ, "PYTHONPATH": str(ROOT)},
                         capture_output=True, text=True, check=True).stdout
    print("step | RSS after (MB) | added (MB) | peak RSS so far (MB)")
    before = 0.0
    for name, rss, peak in (json.loads(line) for line in out.splitlines() if line.startswith("[")):
        print(f"{name} | {rss:.0f} | {rss - before:+.0f} | {peak:.0f}")
        before = rss


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="where the MNIST files are")
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--code", type=Path, default=ROOT,
                        help="the checkout whose automl_nn and study file run (default: this one)")
    parser.add_argument("--steps", action="store_true", help="where one process's memory goes instead")
    parser.add_argument("--child-steps", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_steps:
        child_steps(args.data_dir)
        return
    from benchmarks.common import machine

    print(f"# {machine()}; automl_nn from {args.code}")
    if args.steps:
        steps(args.data_dir)
        return
    print(f"# {STUDY.name}, {args.trials} trials of 1 epoch, batch 256, full MNIST")
    print("workers | process | peak RSS (MB) | under 1.5 GB")
    for workers in args.workers:
        peaks, largest = run(workers, args.trials, args.data_dir, args.code.resolve())
        for pid, (name, mb) in sorted(peaks.items()):
            print(f"{workers} | {name} (pid {pid}) | {mb:.0f} | {mb < TARGET_MB}")
        print(f"{workers} | largest child so far (RUSAGE_CHILDREN) | {largest:.0f} | "
              f"{largest < TARGET_MB}", flush=True)


if __name__ == "__main__":
    main()
