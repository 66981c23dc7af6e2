"""A sensor's saved model on disk: one directory per sensor id, committed atomically through metadata.json.

Layout of ``<models-dir>/<safe name>/``::

    model-<version>.keras     the Keras autoencoder: the source of truth
    scaler-<version>.joblib   the StandardScaler fitted on the training values
    weights-<version>.npz     the model's weights as plain arrays, for scoring without TensorFlow
    metadata.json             sensor id, window, interval, threshold, ... and the file names with checksums

New files get a new version in their names, so writing them never touches what the scorer reads;
metadata.json is then replaced in one ``os.replace``. A crash at any point leaves either the old or the
new metadata.json, each naming complete files. The previous version is kept so that a scorer which read
the old metadata a moment earlier can still open its files.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from anomaly import files
from anomaly.metadata import FORMAT_VERSION, ArtifactError, ModelMetadata, section

METADATA = "metadata.json"
FILES = ("model", "scaler", "weights")
WEIGHT_NAMES = (
    "encoder_kernel",
    "encoder_recurrent_kernel",
    "encoder_bias",
    "decoder_kernel",
    "decoder_recurrent_kernel",
    "decoder_bias",
    "output_kernel",
    "output_bias",
)


def weight_shapes(units: int) -> dict[str, tuple[int, ...]]:
    """The shape of each array of a model's weights file (WEIGHT_NAMES, in Keras' gate order) at ``units``:
    for what makes weights without training (tests, benchmarks)."""
    return {
        "encoder_kernel": (1, 4 * units),
        "encoder_recurrent_kernel": (units, 4 * units),
        "encoder_bias": (4 * units,),
        "decoder_kernel": (units, 4 * units),
        "decoder_recurrent_kernel": (units, 4 * units),
        "decoder_bias": (4 * units,),
        "output_kernel": (units, 1),
        "output_bias": (1,),
    }


def sensor_dir(models_dir: Path, sensor_id: str) -> Path:
    """A directory name that is safe on any file system and unique per sensor id (readable part + hash)."""
    readable = re.sub(r"[^A-Za-z0-9_-]+", "_", sensor_id).strip("_")[:48] or "sensor"
    digest = hashlib.sha256(sensor_id.encode("utf-8")).hexdigest()[:12]
    return models_dir / f"{readable}-{digest}"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def save(directory: Path, model: Any, scaler: Any, weights: dict[str, np.ndarray], metadata: dict[str, Any]) -> Path:
    """Write a model, its scaler, its weights and metadata; return the metadata path once committed.

    ``model`` is anything with ``save(path)`` (a Keras model); ``weights`` holds the arrays named in
    WEIGHT_NAMES. ``metadata`` gets the file names, their checksums and the format version added.
    """
    directory.mkdir(parents=True, exist_ok=True)
    previous = _previous_metadata(directory / METADATA)
    version = f"{metadata['trained_at'].replace(':', '').replace('-', '')}-{secrets.token_hex(3)}"
    names = {
        "model": f"model-{version}.keras",
        "scaler": f"scaler-{version}.joblib",
        "weights": f"weights-{version}.npz",
    }
    # joblib only here, in training: the scorer reads a scaler's numbers from metadata, and starts faster.
    import joblib

    model.save(directory / names["model"])
    joblib.dump(scaler, directory / names["scaler"])
    with open(directory / names["weights"], "wb") as f:
        arrays: dict[str, Any] = {name: np.asarray(weights[name], dtype="float32") for name in WEIGHT_NAMES}
        np.savez(f, **arrays)
    for name in names.values():
        files.fsync_path(directory / name)
    record = dict(
        metadata,
        format_version=FORMAT_VERSION,
        version=version,
        files=names,
        sha256={key: sha256_file(directory / name) for key, name in names.items()},
    )
    files.write_atomic(directory / METADATA, json.dumps(record, indent=2, sort_keys=True) + "\n", durable=True)
    _prune(directory, keep=set(names.values()) | set((previous.get("files") or {}).values()))
    return directory / METADATA


def _previous_metadata(path: Path) -> dict[str, Any]:
    """The committed metadata, or {} when there is none or it is damaged: a retrain must always succeed."""
    try:
        return _read_json(path)
    except ArtifactError:
        return {}


def _prune(directory: Path, keep: set[str]) -> None:
    """Remove versions older than the previous one and temporary files left by killed runs."""
    for path in directory.iterdir():
        if path.name not in keep and path.name != METADATA:
            path.unlink(missing_ok=True)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ArtifactError(f"{path}: unreadable metadata ({e}); retrain this sensor") from None
    if not isinstance(data, dict):
        raise ArtifactError(f"{path}: metadata is not a JSON object; retrain this sensor")
    return data


@dataclass(frozen=True)
class SavedModel:
    """A committed model: its checked metadata, and the absolute path and checksum of each file."""

    metadata: ModelMetadata
    paths: dict[str, Path]
    sha256: dict[str, str]


def load(directory: Path, verify: tuple[str, ...] = FILES) -> SavedModel:
    """The committed model of a directory.

    The files named in ``verify`` are checked against their checksums here; a caller that reads a
    file anyway can check it as it reads (``load_weights``) instead of reading it twice.

    Raises
    ------
    ArtifactError
        When there is no model, the format is unknown, a field the scorer needs is bad, or a file is
        missing or fails its checksum.
    """
    path = directory / METADATA
    if not path.exists():
        raise ArtifactError("no model")
    record = _read_json(path)
    if record.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(
            f"{path}: format version {record.get('format_version')!r} is not {FORMAT_VERSION}; retrain this sensor"
        )
    try:
        metadata = ModelMetadata.from_record(record)
    except ArtifactError as e:
        raise ArtifactError(f"{directory}: {e}", e.sensor_id) from None
    checksums = section(record, "sha256")
    paths = {}
    for key, name in section(record, "files").items():
        file = directory / name
        if not file.exists() or (key in verify and sha256_file(file) != checksums.get(key)):
            raise ArtifactError(
                f"{file}: missing or damaged (checksum mismatch); retrain this sensor", metadata.sensor_id
            )
        paths[key] = file
    if set(paths) != set(FILES):
        raise ArtifactError(
            f"{path}: does not name the {', '.join(FILES)} files; retrain this sensor", metadata.sensor_id
        )
    return SavedModel(metadata, paths, {key: str(checksums.get(key)) for key in FILES})


def load_weights(path: Path, sha256: str, sensor_id: str | None = None) -> dict[str, np.ndarray]:
    """The arrays of a weights file, checked against its checksum, for completeness and for shapes.
    ``sensor_id``: the sensor the model's metadata names, carried by the error as ``load`` does."""
    content = path.read_bytes()
    if hashlib.sha256(content).hexdigest() != sha256:
        raise ArtifactError(f"{path}: missing or damaged (checksum mismatch); retrain this sensor", sensor_id)
    with np.load(io.BytesIO(content), allow_pickle=False) as data:
        weights = {name: data[name] for name in WEIGHT_NAMES if name in data}
    missing = set(WEIGHT_NAMES) - set(weights)
    units = weights.get("encoder_recurrent_kernel", np.empty((0, 0))).shape[0]
    shapes_ok = (
        not missing
        and all(weights[name].shape[-1] == 4 * units for name in WEIGHT_NAMES[:6])
        and weights["output_kernel"].shape == (units, 1)
    )
    if not shapes_ok:
        raise ArtifactError(f"{path}: weights missing or of inconsistent shapes; retrain this sensor", sensor_id)
    return weights
