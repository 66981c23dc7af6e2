"""The models of the fleet status (sensor_status.py): every model directory, usable or damaged, as ``ModelInfo``,
which status.py joins with the configuration and what InfluxDB says into a sensor's row.

A model is read by the scorer's own loader, which the job passes in (``read_models``): the metadata schema
(``store.load``, ``ModelMetadata``) and the checksums and shapes of the weights, so the status calls usable
exactly the models the scorer can use.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from anomaly import store
from anomaly.metadata import ArtifactError, ModelMetadata


@dataclass(frozen=True)
class ModelInfo:
    """What the status shows of one model directory; ``problem`` says why it is damaged (None: usable).
    ``alarms_per_week``: the false-alarm runs a week its saved threshold (ratio 1) was calibrated to give
    on held-out data (None: a model whose threshold was not calibrated)."""

    directory: str
    sensor_id: str | None = None
    trained_at: pd.Timestamp | None = None
    window: int | None = None
    interval: pd.Timedelta | None = None
    threshold: float | None = None
    training_start: pd.Timestamp | None = None
    training_stop: pd.Timestamp | None = None
    alarms_per_week: float | None = None
    problem: str | None = None


def _moved(directory: str, sensor_id: str | None) -> str | None:
    """Why a directory whose metadata names ``sensor_id`` is not that sensor's model, or None when it is (or
    names no sensor): the scorer reads a sensor's model from one directory (``store.sensor_dir``) only."""
    expected = store.sensor_dir(Path(), sensor_id).name if sensor_id is not None else directory
    if directory == expected:
        return None
    return (
        f"metadata.json names sensor {sensor_id!r}, whose model the scorer reads from {expected}, not from "
        f"here; move or delete this directory"
    )


def damaged(directory: str, error: ArtifactError) -> ModelInfo:
    """A model that cannot be used; named after the sensor its metadata names, when this is that sensor's
    directory (a copied or renamed directory is left unnamed and gets a row of its own)."""
    moved = _moved(directory, error.sensor_id)
    return ModelInfo(directory, None if moved else error.sensor_id, problem=moved or str(error))


def usable(directory: str, metadata: ModelMetadata) -> ModelInfo:
    """What the status shows of a model whose metadata the schema accepted; ``trained_at`` and
    ``training_range`` are only shown, so when they are unreadable they are left out."""
    moved = _moved(directory, metadata.sensor_id)
    if moved:
        return ModelInfo(directory, problem=moved)
    start, stop = metadata.training_range
    return ModelInfo(
        directory,
        metadata.sensor_id,
        trained_at=metadata.trained_at,
        window=metadata.window,
        interval=metadata.interval,
        threshold=metadata.threshold,
        training_start=start,
        training_stop=stop,
        alarms_per_week=metadata.alarms_per_week,
    )


def model_info(directory: str, record: Mapping[str, Any]) -> ModelInfo:
    """Check a model's metadata record (``directory``: the model directory's name) against the one schema;
    a field the scorer needs that is bad, or a directory that is not the named sensor's, makes it damaged."""
    sensor_id = record.get("sensor_id")
    moved = _moved(directory, sensor_id if isinstance(sensor_id, str) else None)
    if moved:
        return ModelInfo(directory, problem=moved)
    try:
        return usable(directory, ModelMetadata.from_record(record))
    except ArtifactError as e:
        return damaged(directory, e)


def read_models(models_dir: Path, load: Callable[[Path], ModelMetadata]) -> list[ModelInfo]:
    """Every model directory (one holding metadata.json) in ``models_dir``, usable or damaged.

    ``load`` is the scorer's loader (sensor_status.py wraps ``model_predict.load_sensor_model``): it returns a
    model directory's metadata or raises ArtifactError. A model it refuses, say for weights that fail
    their checksum, fails every scoring run, so it must not look usable here.

    Raises OSError when the directory cannot be listed; a missing directory holds no models.
    """
    if not models_dir.exists():
        return []
    models = []
    for directory in sorted(models_dir.iterdir()):
        if not directory.is_dir() or not (directory / store.METADATA).exists():
            continue  # a training killed before its first commit leaves a directory but no model
        try:
            metadata = load(directory)
        except ArtifactError as e:
            models.append(damaged(directory.name, e))
            continue
        models.append(usable(directory.name, metadata))
    return models
