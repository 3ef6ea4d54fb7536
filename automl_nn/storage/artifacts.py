"""Artifacts (trained weights, kept predictions) beside a storage: saved with a SHA-256, verified when
fetched.

The artifact store is a directory next to the storage file (`<stem>-artifacts/`), so a study and
its weights move together. `--keep-weights pareto` (the default) keeps only what export needs:
the weights of trials on the current front; `all` keeps every trial's, `none` keeps nothing.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from optuna.artifacts import FileSystemArtifactStore, download_artifact, upload_artifact
from optuna.trial import FrozenTrial, TrialState

from automl_nn.errors import StorageError
from automl_nn.storage import record

log = logging.getLogger(__name__)



def artifact_dir(storage_url: str) -> Path:
    """Where a storage's artifacts live: beside a file storage, else in the working directory.

    `runs/study.db` -> `runs/study-artifacts/`; a server database (PostgreSQL, ...) has no file to
    sit beside, so its artifacts go to `automl-nn-artifacts/` in the working directory.
    """
    for prefix in ("sqlite:///", "journal:"):
        if storage_url.startswith(prefix):
            path = Path(storage_url.removeprefix(prefix))
            return path.parent / f"{path.stem}-artifacts"
    return Path("automl-nn-artifacts")


def open_store(storage_url: str) -> FileSystemArtifactStore:
    directory = artifact_dir(storage_url)
    directory.mkdir(parents=True, exist_ok=True)
    return FileSystemArtifactStore(directory)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def upload(target: optuna.Trial | optuna.Study, data: bytes, name: str,
           store: FileSystemArtifactStore) -> tuple[str, str]:
    """Keep `data` as an artifact of `target`; returns its artifact id and SHA-256."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(data)
        artifact_id = upload_artifact(artifact_store=store, file_path=str(path),
                                      study_or_trial=target, mimetype="application/octet-stream")
        return artifact_id, sha256_file(path)


def keep_weights(trial: optuna.Trial, state: bytes, store: FileSystemArtifactStore) -> None:
    """Upload a trial's serialized state dict and record where it is, with its SHA-256."""
    artifact_id, digest = upload(trial, state, f"trial{trial.number}-weights.pt", store)
    record.write_artifact(trial, record.WEIGHTS, artifact_id, digest)


def fetch_weights(trial: FrozenTrial, store: FileSystemArtifactStore, dest: Path) -> Path:
    """Download a trial's weights to `dest` and check them against the recorded SHA-256."""
    kept = record.artifact_of(trial, record.WEIGHTS)
    if kept is None:
        raise StorageError(f"trial {trial.number} kept no weights (the search ran with "
                           "--keep-weights none, or before weights were kept). Export it with "
                           "--retrain to train it again from its seed, or search with --keep-weights all.")
    artifact_id, sha256 = kept
    try:
        download_artifact(artifact_store=store, file_path=str(dest), artifact_id=artifact_id)
    except Exception:
        raise StorageError(f"trial {trial.number}'s weights are no longer in the artifact store "
                           "(with --keep-weights pareto, weights of trials that left the front are "
                           "dropped). Export it with --retrain, or search with --keep-weights all.") from None
    check_hash(dest, sha256)
    return dest


def check_hash(path: Path, expected: str, what: str = "") -> None:
    """Refuse a file whose SHA-256 differs from the recorded one (tampered or corrupt)."""
    actual = sha256_file(path)
    if actual != expected:
        raise StorageError(f"{what or f'weights file {path}'}: SHA-256 {actual[:16]}... does not match "
                           f"the recorded {expected[:16]}...; the file was changed or corrupted and was "
                           "not loaded.")


@dataclass
class FrontWeights:
    """`--keep-weights pareto` after every trial, incrementally: the weights of complete trials
    that are off the front go.

    Only two kinds of trial can have left the front since the last call: complete trials this
    process has not seen yet, and those on the front last time. Each complete trial is looked at
    when first seen and again only if it was on the front, so a 10,000-trial study costs a set
    lookup per trial, not a removal attempt for every trial whose weights went long ago.
    """

    store: FileSystemArtifactStore
    _seen: set[int] = field(default_factory=set, repr=False)
    _front: list[FrozenTrial] = field(default_factory=list, repr=False)

    def update(self, trials: Sequence[FrozenTrial], best: Sequence[FrozenTrial]) -> None:
        new = [t for t in trials if t.state == TrialState.COMPLETE and t._trial_id not in self._seen]
        self._seen.update(t._trial_id for t in new)
        drop_off_front([*new, *self._front], self.store, {t.number for t in best})
        self._front = list(best)


def drop_off_front(trials: Sequence[FrozenTrial], store: FileSystemArtifactStore,
                   front_numbers: set[int]) -> None:
    """Remove the weights of complete trials that are no longer on the front (policy `pareto`)."""
    for trial in trials:
        kept = record.artifact_of(trial, record.WEIGHTS)
        if trial.state != TrialState.COMPLETE or kept is None or trial.number in front_numbers:
            continue
        artifact_id = kept[0]
        try:
            store.remove(artifact_id)
        except Exception:  # already removed by this or another worker
            continue
        log.debug("dropped weights of trial %d (left the front)", trial.number)
