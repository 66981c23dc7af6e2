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

import contextlib
import fcntl
import hashlib
import io
import json
import os
import re
import secrets
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import joblib
import numpy as np

FORMAT_VERSION = 1
METADATA = "metadata.json"
FILES = ("model", "scaler", "weights")
WEIGHT_NAMES = ("encoder_kernel", "encoder_recurrent_kernel", "encoder_bias", "decoder_kernel",
                "decoder_recurrent_kernel", "decoder_bias", "output_kernel", "output_bias")


class ArtifactError(RuntimeError):
    """A model directory that cannot be used: missing, corrupt or of another format."""


EXIT_LOCKED = 75  # EX_TEMPFAIL: the deploy units count it as a skipped run, not a failure


class LockedError(RuntimeError):
    """Another run of the same job holds the lock."""


@contextlib.contextmanager
def job_lock(models_dir: Path, job: str) -> Iterator[Path]:
    """Hold a per-host lock for one job and models directory; a second run raises LockedError at once.

    The lock file lives in the temporary directory, not the models directory, so scorers can run on
    a read-only copy of the models; the kernel releases it when the process ends, however it ends.
    """
    key = hashlib.sha256(str(models_dir.resolve()).encode("utf-8")).hexdigest()[:12]
    path = Path(tempfile.gettempdir()) / f"sensor-anomaly-{job}-{key}.lock"
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise LockedError(f"another {job} run for {models_dir} is still going (pid {holder}, lock {path}); "
                              f"this run exits without doing anything") from None
        handle.truncate(0)
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield path


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


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save(directory: Path, model: Any, scaler: Any, weights: dict[str, np.ndarray], metadata: dict[str, Any]) -> Path:
    """Write a model, its scaler, its weights and metadata; return the metadata path once committed.

    ``model`` is anything with ``save(path)`` (a Keras model); ``weights`` holds the arrays named in
    WEIGHT_NAMES. ``metadata`` gets the file names, their checksums and the format version added.
    """
    directory.mkdir(parents=True, exist_ok=True)
    previous = _previous_metadata(directory / METADATA)
    version = f"{metadata['trained_at'].replace(':', '').replace('-', '')}-{secrets.token_hex(3)}"
    files = {"model": f"model-{version}.keras", "scaler": f"scaler-{version}.joblib",
             "weights": f"weights-{version}.npz"}
    model.save(directory / files["model"])
    joblib.dump(scaler, directory / files["scaler"])
    with open(directory / files["weights"], "wb") as f:
        np.savez(f, **{name: np.asarray(weights[name], dtype="float32") for name in WEIGHT_NAMES})
    for name in files.values():
        _fsync(directory / name)
    record = dict(metadata, format_version=FORMAT_VERSION, version=version, files=files,
                  sha256={key: sha256_file(directory / name) for key, name in files.items()})
    temporary = directory / f".{METADATA}.{version}.tmp"
    temporary.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    _fsync(temporary)
    os.replace(temporary, directory / METADATA)
    _fsync(directory)
    _prune(directory, keep=set(files.values()) | set((previous.get("files") or {}).values()))
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


def load_metadata(directory: Path, verify: tuple[str, ...] = FILES) -> dict[str, Any]:
    """The committed metadata with absolute paths of its files under ``paths``.

    The files named in ``verify`` are checked against their checksums here; a caller that reads a
    file anyway can check it as it reads (``load_weights``) instead of reading it twice.

    Raises
    ------
    ArtifactError
        When there is no model, the format is unknown, or a file is missing or fails its checksum.
    """
    path = directory / METADATA
    if not path.exists():
        raise ArtifactError("no model")
    metadata = _read_json(path)
    if metadata.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(f"{path}: format version {metadata.get('format_version')!r} is not "
                            f"{FORMAT_VERSION}; retrain this sensor")
    paths = {}
    for key, name in (metadata.get("files") or {}).items():
        file = directory / name
        if not file.exists() or key in verify and sha256_file(file) != (metadata.get("sha256") or {}).get(key):
            raise ArtifactError(f"{file}: missing or damaged (checksum mismatch); retrain this sensor")
        paths[key] = file
    if set(paths) != set(FILES):
        raise ArtifactError(f"{path}: does not name the {', '.join(FILES)} files; retrain this sensor")
    return dict(metadata, paths=paths)


def load_weights(path: Path, sha256: str) -> dict[str, np.ndarray]:
    """The arrays of a weights file, checked against its checksum, for completeness and for shapes."""
    content = path.read_bytes()
    if hashlib.sha256(content).hexdigest() != sha256:
        raise ArtifactError(f"{path}: missing or damaged (checksum mismatch); retrain this sensor")
    with np.load(io.BytesIO(content), allow_pickle=False) as data:
        weights = {name: data[name] for name in WEIGHT_NAMES if name in data}
    missing = set(WEIGHT_NAMES) - set(weights)
    units = weights.get("encoder_recurrent_kernel", np.empty((0, 0))).shape[0]
    shapes_ok = not missing and all(
        weights[name].shape[-1] == 4 * units for name in WEIGHT_NAMES[:6]
    ) and weights["output_kernel"].shape == (units, 1)
    if not shapes_ok:
        raise ArtifactError(f"{path}: weights missing or of inconsistent shapes; retrain this sensor")
    return weights
