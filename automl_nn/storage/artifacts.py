"""Trained weights as Optuna artifacts: saved per trial with a SHA-256, verified when fetched.

The artifact store is a directory next to the storage file (`<stem>-artifacts/`), so a study and
its weights move together. `--keep-weights pareto` (the default) keeps only what export needs:
the weights of trials on the current front; `all` keeps every trial's, `none` keeps nothing.
"""

from __future__ import annotations

import hashlib
import logging
import tempfile
from collections.abc import Sequence
from pathlib import Path

import optuna
import torch
from optuna.artifacts import FileSystemArtifactStore, download_artifact, upload_artifact
from optuna.trial import FrozenTrial, TrialState
from torch import nn

from automl_nn.accel import plain, plain_state
from automl_nn.errors import StorageError
from automl_nn.storage import recovery

log = logging.getLogger(__name__)

ARTIFACT_ATTR = "weights_artifact"
HASH_ATTR = "weights_sha256"


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


def save_weights(trial: optuna.Trial, model: nn.Module, store: FileSystemArtifactStore) -> None:
    """Upload the model's state dict (CPU tensors) as the trial's weights artifact.

    Always the plain module's: no torch.compile key prefix, default (contiguous) memory layout.
    """
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"trial{trial.number}-weights.pt"
        state = plain_state({k: v.detach().cpu() for k, v in plain(model).state_dict().items()})
        torch.save(state, path)
        artifact_id = upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=trial,
                                      mimetype="application/octet-stream")
        recovery.set_user_attrs(trial, {ARTIFACT_ATTR: artifact_id, HASH_ATTR: sha256_file(path)})


def fetch_weights(trial: FrozenTrial, store: FileSystemArtifactStore, dest: Path) -> Path:
    """Download a trial's weights to `dest` and check them against the recorded SHA-256."""
    artifact_id = trial.user_attrs.get(ARTIFACT_ATTR)
    if artifact_id is None:
        raise StorageError(f"trial {trial.number} kept no weights (the search ran with "
                           "--keep-weights none, or before weights were kept). Export it with "
                           "--retrain to train it again from its seed, or search with --keep-weights all.")
    try:
        download_artifact(artifact_store=store, file_path=str(dest), artifact_id=artifact_id)
    except Exception:
        raise StorageError(f"trial {trial.number}'s weights are no longer in the artifact store "
                           "(with --keep-weights pareto, weights of trials that left the front are "
                           "dropped). Export it with --retrain, or search with --keep-weights all.") from None
    check_hash(dest, str(trial.user_attrs.get(HASH_ATTR, "")))
    return dest


def check_hash(path: Path, expected: str) -> None:
    """Refuse a weights file whose SHA-256 differs from the recorded one (tampered or corrupt)."""
    actual = sha256_file(path)
    if actual != expected:
        raise StorageError(f"weights file {path}: SHA-256 {actual[:16]}... does not match the recorded "
                           f"{expected[:16]}...; the file was changed or corrupted and was not loaded.")


def load_state(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from `path`; weights_only=True is explicit, so no pickled code ever runs."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise StorageError(f"weights file {path}: not a plain state dict of tensors ({type(exc).__name__}); "
                           "it was refused without running any of its content.") from None
    if not isinstance(state, dict):
        raise StorageError(f"weights file {path}: expected a state dict, but got {type(state).__name__}.")
    return plain_state(state)  # a state dict saved from a compiled module loads too


def drop_off_front(trials: Sequence[FrozenTrial], store: FileSystemArtifactStore,
                   front_numbers: set[int]) -> None:
    """Remove the weights of complete trials that are no longer on the front (policy `pareto`)."""
    for trial in trials:
        artifact_id = trial.user_attrs.get(ARTIFACT_ATTR)
        if trial.state != TrialState.COMPLETE or artifact_id is None or trial.number in front_numbers:
            continue
        try:
            store.remove(artifact_id)
        except Exception:  # already removed by this or another worker
            continue
        log.debug("dropped weights of trial %d (left the front)", trial.number)
