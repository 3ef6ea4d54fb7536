"""torchvision image sets: where their files live, whether they are here, and loading them.

Availability is decided by file checks alone (no network), so `automl-nn datasets` is instant.
Files already present are used as they are (download=False). A directory of the published `.gz`
files (MNIST family) is staged into the cache in torchvision's layout (`<root>/MNIST/raw/`) and read
by torchvision's own dataset class. Missing files are downloaded only when the download host
answers within a few seconds; otherwise DataError lists the files and where to put them.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import shutil
import socket
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from automl_nn.data.arrays import RawData
from automl_nn.errors import DataError

log = logging.getLogger(__name__)
PROBE_SECONDS = 3.0  # an offline machine must fail fast, not wait for torchvision's retries
OFFLINE_ENV = "AUTOML_NN_OFFLINE"  # set to 1 to never try a download
_IDX = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


@dataclass(frozen=True)
class VisionSet:
    """One torchvision dataset: its class, layout on disk, and what it holds."""

    cls: str  # torchvision.datasets class name
    folder: str  # directory under the root that torchvision reads
    files: tuple[str, ...]  # what must be in `folder`
    host: str  # download host, probed before a download is attempted
    shape: tuple[int, ...]
    size: int  # train + test samples
    classes: int
    description: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    idx: bool = False  # MNIST-family IDX files (may come as published .gz files)


def _emnist_files(split: str) -> tuple[str, ...]:
    return tuple(f"emnist-{split}-{part}-{kind}-ubyte" for part in ("train", "test")
                 for kind in ("images-idx3", "labels-idx1"))


SETS: dict[str, VisionSet] = {
    "mnist": VisionSet("MNIST", "MNIST/raw", _IDX, "ossci-datasets.s3.amazonaws.com", (1, 28, 28),
                       70000, 10, "handwritten digits 0-9", idx=True),
    "fashion-mnist": VisionSet("FashionMNIST", "FashionMNIST/raw", _IDX,
                               "fashion-mnist.s3-website.eu-central-1.amazonaws.com", (1, 28, 28),
                               70000, 10, "Zalando clothing photos, 10 kinds", idx=True),
    "kmnist": VisionSet("KMNIST", "KMNIST/raw", _IDX, "codh.rois.ac.jp", (1, 28, 28), 70000, 10,
                        "Kuzushiji (cursive Japanese) characters, 10 classes", idx=True),
    "emnist-balanced": VisionSet("EMNIST", "EMNIST/raw", _emnist_files("balanced"),
                                 "biometrics.nist.gov", (1, 28, 28), 131600, 47,
                                 "EMNIST balanced split: digits and letters, 47 classes",
                                 kwargs={"split": "balanced"}, idx=True),
    "cifar10": VisionSet("CIFAR10", "cifar-10-batches-py",
                         (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta"),
                         "www.cs.toronto.edu", (3, 32, 32), 60000, 10, "32x32 colour photos, 10 classes"),
    "cifar100": VisionSet("CIFAR100", "cifar-100-python", ("train", "test", "meta"),
                          "www.cs.toronto.edu", (3, 32, 32), 60000, 100,
                          "32x32 colour photos, 100 classes"),
    "svhn": VisionSet("SVHN", ".", ("train_32x32.mat", "test_32x32.mat"), "ufldl.stanford.edu",
                      (3, 32, 32), 99289, 10, "Street View house-number digits"),
}


def cache_dir() -> Path:
    """Per-user data cache: $XDG_CACHE_HOME/automl-nn, else ~/.cache/automl-nn."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "automl-nn"


def _candidates(vset: VisionSet, root: Path) -> list[Path]:
    """Directories that may hold the files: torchvision's layout first, then plain directories."""
    dirs = [root / vset.folder]
    if vset.idx:
        dirs += [root, root / "raw", root / vset.cls / "raw"]
    return list(dict.fromkeys(dirs))


def _present(directory: Path, name: str, idx: bool) -> Path | None:
    names = (name, f"{name}.gz") if idx else (name,)
    for candidate in (directory / n for n in names):
        if candidate.is_file():
            return candidate
    return None


# MNIST, Fashion-MNIST and KMNIST share file names, so a plain directory of them is told apart by
# content (MD5 of MNIST's uncompressed t10k labels; .gz bytes differ between recompressions) or else
# by its path; files that match neither are taken as the user's own choice of set.
_MNIST_TEST_LABELS_MD5 = "27ae3e4e09519cfbb04c329615203637"
_PATH_HINTS = {"FashionMNIST": ("fashion",), "KMNIST": ("kmnist", "kuzushiji")}


def _owner(files: dict[str, Path]) -> str | None:
    """The class whose files these are, when the content or the path says so."""
    labels = files.get("t10k-labels-idx1-ubyte")
    if labels is None:
        return None
    try:
        blob = gzip.decompress(labels.read_bytes()) if labels.suffix == ".gz" else labels.read_bytes()
    except (OSError, EOFError):
        return None
    if hashlib.md5(blob).hexdigest() == _MNIST_TEST_LABELS_MD5:
        return "MNIST"
    path = str(labels.parent.resolve()).lower()
    return next((cls for cls, hints in _PATH_HINTS.items() if any(h in path for h in hints)), None)


def find_files(vset: VisionSet, root: Path) -> dict[str, Path] | None:
    """The dataset's files (raw or .gz) under `root`, or None when any is missing."""
    for directory in _candidates(vset, root):
        found = {name: _present(directory, name, vset.idx) for name in vset.files}
        if all(found.values()):
            files = {name: path for name, path in found.items() if path is not None}
            if directory == root / vset.folder or _owner(files) in (None, vset.cls):
                return files
    return None


def available(name: str, data_dir: str | None) -> bool:
    """Whether `name` can be loaded without a network (file checks only)."""
    return find_files(SETS[name], Path(data_dir) if data_dir else cache_dir()) is not None


def torchvision_root(name: str, data_dir: str | None) -> Path:
    """The directory torchvision's own class for `name` reads from (staging files there if needed)."""
    vset = SETS[name]
    root = Path(data_dir).expanduser() if data_dir else cache_dir()
    files = find_files(vset, root)
    if files is None:
        raise _missing_error(name, vset, root, data_dir is not None)
    return _staged_root(vset, root, files)


def _staged_root(vset: VisionSet, root: Path, files: dict[str, Path]) -> Path:
    """A root in torchvision's layout: `root` itself, or a cache copy (gunzipped or linked)."""
    target_dir = root / vset.folder
    if all(path == target_dir / name for name, path in files.items()):
        return root
    source = str(next(iter(files.values())).parent.resolve())
    staged = cache_dir() / "staged" / hashlib.sha1(source.encode()).hexdigest()[:12]
    folder = staged / vset.folder
    folder.mkdir(parents=True, exist_ok=True)
    for name, path in files.items():
        dest = folder / name
        if dest.exists() and dest.stat().st_mtime >= path.stat().st_mtime:
            continue  # staged on an earlier run
        if path.suffix == ".gz":
            _gunzip(path, dest)
        else:
            link = _partial(dest)
            link.symlink_to(path.resolve())
            link.replace(dest)
    return staged


def _partial(dest: Path) -> Path:
    """A name of its own beside `dest`: two searches may stage the same set at once."""
    return dest.with_name(f"{dest.name}.{uuid.uuid4().hex[:12]}.partial")


def _gunzip(path: Path, dest: Path) -> None:
    partial = _partial(dest)
    try:
        with gzip.open(path, "rb") as src, partial.open("wb") as out:
            shutil.copyfileobj(src, out, length=1 << 20)
    except (OSError, EOFError) as exc:
        partial.unlink(missing_ok=True)
        raise DataError(f"{path}: cannot decompress it ({exc}). Replace it with the published "
                        "file, or the uncompressed one.") from None
    partial.replace(dest)  # atomic: a killed run never leaves a half file under the final name


def online(host: str, seconds: float = PROBE_SECONDS) -> bool:
    """Whether `host` accepts a connection within `seconds` (DNS included, in a thread)."""
    if os.environ.get(OFFLINE_ENV, "") not in ("", "0"):
        return False
    result: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((host, 443), timeout=seconds).close()
            result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(seconds)
    return bool(result and result[0])


def _missing_error(name: str, vset: VisionSet, root: Path, given: bool) -> DataError:
    where = root / vset.folder
    plain = f" (or the published .gz files, in {root} itself)" if vset.idx else ""
    how = ("" if given else " or pass --data-dir DIR where they already are")
    return DataError(
        f"dataset {name}: files not found under {root}, and {vset.host} cannot be reached to "
        f"download them. Expected in {where}: {', '.join(vset.files)}{plain}. "
        f"Copy them there{how}, or run once on a machine with internet access."
    )


def load(name: str, data_dir: str | None) -> RawData:
    """The torchvision set `name` as uint8 NCHW arrays, its own test set kept as the test split."""
    vset = SETS[name]
    root = Path(data_dir).expanduser() if data_dir else cache_dir()
    files = find_files(vset, root)
    if files is None:
        if not online(vset.host):
            raise _missing_error(name, vset, root, data_dir is not None)
        log.warning("downloading %s into %s", name, root)
        root.mkdir(parents=True, exist_ok=True)
        train, test = _read(vset, root, download=True)
    else:
        train, test = _read(vset, _staged_root(vset, root, files), download=False)
    x, y, names = _arrays(name, train)
    x_test, y_test, _ = _arrays(name, test)
    return RawData(x, y, x_test, y_test, task="classification", class_names=names, val_fraction=0.1)


def _read(vset: VisionSet, root: Path, download: bool) -> tuple[Any, Any]:
    import torchvision.datasets as tvd

    cls = getattr(tvd, vset.cls)
    try:
        if vset.cls == "SVHN":
            return (cls(str(root), split="train", download=download),
                    cls(str(root), split="test", download=download))
        return (cls(str(root), train=True, download=download, **vset.kwargs),
                cls(str(root), train=False, download=download, **vset.kwargs))
    except (RuntimeError, AssertionError, OSError, ValueError, EOFError) as exc:
        raise DataError(f"dataset {vset.cls} under {root}: torchvision cannot read the files "
                        f"({type(exc).__name__}: {exc}). Replace them with the published files "
                        f"({', '.join(vset.files)}).") from None


def _uses_labels(dataset: Any) -> bool:
    return not hasattr(dataset, "targets") and hasattr(dataset, "labels")


def _arrays(name: str, dataset: Any) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """uint8 images (N, C, H, W), int64 labels and class names from a torchvision dataset."""
    data = dataset.data
    images = data.numpy() if hasattr(data, "numpy") else np.asarray(data)
    if images.ndim == 3:  # MNIST family: (N, H, W)
        images = images[:, None]
        if name.startswith("emnist"):  # EMNIST is stored transposed; show letters upright
            images = images.transpose(0, 1, 3, 2)
    elif images.shape[-1] == 3:  # CIFAR: (N, H, W, C)
        images = images.transpose(0, 3, 1, 2)
    labels: Any = dataset.labels if _uses_labels(dataset) else dataset.targets  # SVHN: labels
    y = np.asarray(labels.numpy() if hasattr(labels, "numpy") else labels, dtype=np.int64)
    classes = tuple(str(c) for c in getattr(dataset, "classes", [])) or tuple(
        str(c) for c in range(int(y.max()) + 1))
    return np.ascontiguousarray(images, dtype=np.uint8), y, classes
