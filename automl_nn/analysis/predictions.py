"""Per-sample predictions as Optuna artifacts, so cross-trial analysis never retrains.

Each classification trial keeps the predicted class (uint8 when there are at most 256 classes, else
int16) and the top-class probability (float16) of every validation sample after every epoch, and of
every test sample for the final model (after every epoch too when the study sets
`test_each_epoch`), in one compressed .npz artifact whose SHA-256 is a user attribute (as
weights.py does for weights); `test_epochs` names the epochs of the test rows. The labels of both
splits are kept once per study, not per trial. `read_predictions` reads a study back into the
plain arrays `automl_nn.analysis` works on.
"""

from __future__ import annotations

import copy
import io
import logging
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.artifacts import FileSystemArtifactStore, download_artifact
from optuna.trial import FrozenTrial, TrialState
from torch import Tensor, nn

from automl_nn.accel import PLAIN, Runtime
from automl_nn.analysis.questions import MISSING, Predictions, TrialInfo
from automl_nn.data.catalog import DataBundle
from automl_nn.errors import StorageError
from automl_nn.storage import artifacts, record
from automl_nn.storage.record import TrialRecord
from automl_nn.train import EpochResult, Evaluation, evaluate

log = logging.getLogger(__name__)

SPLITS = ("val", "test")


def class_dtype(n_classes: int) -> np.dtype[Any]:
    """The smallest integer type that holds every class index."""
    return np.dtype(np.uint8) if n_classes <= 256 else np.dtype(np.int16)


@dataclass
class Recorder:
    """Collects one trial's predictions; its `record` is (part of) fit's `on_epoch` hook.

    Validation: every epoch's predictions, as the epoch's result carries them (nothing is evaluated
    again). Test: the final model's, handed to `finish` (the trial's one test pass). With
    `test_each_epoch` each epoch's weights are copied to the CPU and evaluated on the test split in
    `finish`, once the trial has completed: a pruned or failed trial never costs a test pass.
    `seconds` keeps what this took.
    """

    model: nn.Module
    bundle: DataBundle  # as the model trains on it (see train.prepared)
    runtime: Runtime = PLAIN  # evaluate as the model trains (autocast, memory layout)
    test_each_epoch: bool = False
    batch_size: int | None = None  # evaluation batch (None: sized for the model)
    seconds: float = 0.0
    epochs: dict[str, list[Evaluation]] = field(default_factory=lambda: {s: [] for s in SPLITS})
    test_epochs: list[int] = field(default_factory=list)
    _states: list[dict[str, Tensor]] = field(default_factory=list, repr=False)

    def record(self, result: EpochResult) -> None:
        start = time.perf_counter()
        b = self.bundle
        val = result.val or evaluate(self.model, b, b.x_val, b.y_val, runtime=self.runtime,
                                     batch_size=self.batch_size)
        self.epochs["val"].append(val)
        if self.test_each_epoch:
            self._states.append({k: v.detach().to("cpu", copy=True)
                                 for k, v in self.model.state_dict().items()})
        self.seconds += time.perf_counter() - start

    def finish(self, test: Evaluation) -> None:
        """Keep the final model's test evaluation (and, with test_each_epoch, the earlier epochs')."""
        start = time.perf_counter()
        epochs = len(self.epochs["val"])
        earlier = self._states[:-1] if self.test_each_epoch else []
        if earlier:
            b, scratch = self.bundle, copy.deepcopy(self.model)
            for state in earlier:
                scratch.load_state_dict(state)
                self.epochs["test"].append(evaluate(scratch, b, b.x_test, b.y_test, runtime=self.runtime,
                                                    batch_size=self.batch_size))
        self.epochs["test"].append(test)
        self.test_epochs = list(range(epochs - len(earlier), epochs + 1))
        self._states.clear()
        self.seconds += time.perf_counter() - start

    def arrays(self) -> dict[str, np.ndarray]:
        """`{split}_pred` (rows x samples, class index) and `{split}_conf` (float16) per split.

        Validation rows are epochs 1, 2, ...; `test_epochs` names the epoch of each test row.
        """
        dtype = class_dtype(self.bundle.n_outputs)
        out: dict[str, np.ndarray] = {}
        for split, evals in self.epochs.items():
            out[f"{split}_pred"] = np.stack([e.predictions.numpy().astype(dtype) for e in evals])
            out[f"{split}_conf"] = np.stack([e.confidence.numpy().astype(np.float16) for e in evals])
        out["test_epochs"] = np.array(self.test_epochs, dtype=np.int16)
        return out


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)  # type: ignore[arg-type]
    return buffer.getvalue()


def save_predictions(trial: optuna.Trial, recorder: Recorder, store: FileSystemArtifactStore) -> None:
    """Upload the trial's predictions and record the artifact id and its SHA-256."""
    artifact_id, digest = artifacts.upload(trial, npz_bytes(recorder.arrays()),
                                           f"trial{trial.number}-predictions.npz", store)
    record.write_artifact(trial, record.PREDICTIONS, artifact_id, digest)


def save_labels(study: optuna.Study, bundle: DataBundle, store: FileSystemArtifactStore) -> None:
    """Keep the validation and test labels once per study (every trial sees the same splits)."""
    dtype = class_dtype(bundle.n_outputs)
    arrays = {"val_labels": bundle.y_val.cpu().numpy().astype(dtype),
              "test_labels": bundle.y_test.cpu().numpy().astype(dtype)}
    artifact_id, digest = artifacts.upload(study, npz_bytes(arrays), "labels.npz", store)
    study.set_user_attr(record.LABELS.id_key, artifact_id)
    study.set_user_attr(record.LABELS.hash_key, digest)


def fetch(artifact_id: str, expected_sha256: str, store: FileSystemArtifactStore,
          what: str) -> dict[str, np.ndarray]:
    """Download an .npz artifact, check its SHA-256, and read it without unpickling anything."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "artifact.npz"
        try:
            download_artifact(artifact_store=store, file_path=str(path), artifact_id=artifact_id)
        except Exception:
            raise StorageError(f"{what}: artifact {artifact_id} is missing from the artifact store "
                               f"{getattr(store, '_base_path', '')}. Keep the `<storage>-artifacts` "
                               "directory beside the storage file.") from None
        artifacts.check_hash(path, expected_sha256, what)
        with np.load(path, allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}


# ---- reading a study back ------------------------------------------------------------------------


def trial_info(trial: FrozenTrial, split: str) -> TrialInfo:
    """What analysis needs of a trial besides its predictions (all from its record)."""
    rec = TrialRecord.of(trial)
    arch = rec.arch
    final = rec.metrics if split == "val" else rec.test
    costs = {name: value for name, value in rec.metrics.items()
             if name in ("params", "memory", "ops", "flops", "train_time")}
    nan = float("nan")
    return TrialInfo(number=trial.number, family=str(arch.get("family", "?")),
                     activation=str(arch.get("activation", "?")), costs=costs,
                     val_curve=[float(e["val_accuracy"]) for e in rec.epochs],
                     val_accuracy=rec.metrics.get("accuracy", nan),
                     split_accuracy=final.get("accuracy", nan))


def read_predictions(study: optuna.Study, store: FileSystemArtifactStore | None,
                     split: str) -> tuple[list[TrialInfo], Predictions | None]:
    """Every trained complete trial, and the predictions of those that kept them (None if none did).

    Validation predictions are per epoch. Test predictions are per epoch when every trial kept
    them so (`test_each_epoch`, or a trial recorded before test passes were cut to one); otherwise
    each trial's final-model row alone (`Predictions.per_epoch` False).
    """
    trials = record.trained(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    infos = [trial_info(t, split) for t in trials]
    where = {i: w for i, t in enumerate(trials) if (w := record.artifact_of(t, record.PREDICTIONS))}
    kept = sorted(where)
    if not kept or store is None or record.LABELS.id_key not in study.user_attrs:
        return infos, None
    labels = fetch(study.user_attrs[record.LABELS.id_key], study.user_attrs[record.LABELS.hash_key],
                   store, f'labels of study "{study.study_name}"')[f"{split}_labels"]
    per_trial = [fetch(*where[i], store, f"predictions of trial {trials[i].number}") for i in kept]
    n_classes = int(study.user_attrs.get("data", {}).get("n_outputs", int(labels.max()) + 1))
    if split == "val" or all(_test_per_epoch(a) for a in per_trial):
        return infos, stack(kept, [a[f"{split}_pred"] for a in per_trial],
                            [a[f"{split}_conf"] for a in per_trial], labels, n_classes)
    finals = stack(kept, [a["test_pred"][-1:] for a in per_trial],
                   [a["test_conf"][-1:] for a in per_trial], labels, n_classes)
    return infos, replace(finals, per_epoch=False)


def _test_per_epoch(arrays: dict[str, np.ndarray]) -> bool:
    """Whether a trial's test rows are epochs 1, 2, ... (artifacts without `test_epochs` were)."""
    if "test_epochs" not in arrays:
        return True
    epochs = arrays["test_epochs"].tolist()
    return bool(epochs == list(range(1, len(epochs) + 1)) and len(epochs) == len(arrays["val_pred"]))


def stack(rows: list[int], preds: list[np.ndarray], confs: list[np.ndarray], labels: np.ndarray,
          n_classes: int) -> Predictions:
    """Pad per-trial (epochs x samples) arrays to one (trials x max epochs x samples) block."""
    epochs = max(p.shape[0] for p in preds)
    pred = np.full((len(preds), epochs, labels.shape[0]), MISSING, dtype=np.int16)
    conf = np.full(pred.shape, np.nan, dtype=np.float32)
    for i, (p, c) in enumerate(zip(preds, confs, strict=True)):
        pred[i, :p.shape[0]] = p
        conf[i, :c.shape[0]] = c
    return Predictions(rows=rows, pred=pred, conf=conf, labels=labels.astype(np.int64),
                       n_classes=n_classes)
