"""The fleet status of sensor_status.py: what each sensor's model, configuration, data and scores say, one
status word per sensor (``sensor_status``; sensor_status.py's help says what each means), and the fleet
summary. table.py shows it as text; ``render_json`` for machines.

A model is read through the one metadata schema (``store.load``, ``ModelMetadata``), so the status calls
usable exactly the models the scorer can use.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from anomaly import review, settings, store, times
from anomaly.metadata import ArtifactError, ModelMetadata
from anomaly.settings import SensorConfig
from influx_interact import Database

OK = "ok"
STALE = "stale data"
UNSCORED = "not scored recently"
NO_MODEL = "no model"
DAMAGED = "damaged model"
WINDOW_CHANGED = "window changed"
STATUSES = (OK, STALE, UNSCORED, NO_MODEL, DAMAGED, WINDOW_CHANGED)


@dataclass(frozen=True)
class Limits:
    """When a sensor's data, scores or model count as old."""

    stale_after: pd.Timedelta
    unscored_after: pd.Timedelta
    old_model_after: pd.Timedelta


@dataclass(frozen=True)
class ModelInfo:
    """What the status shows of one model directory; ``problem`` says why it is damaged (None: usable)."""

    directory: str
    sensor_id: str | None = None
    trained_at: pd.Timestamp | None = None
    window: int | None = None
    interval: pd.Timedelta | None = None
    threshold: float | None = None
    training_start: pd.Timestamp | None = None
    training_stop: pd.Timestamp | None = None
    problem: str | None = None


@dataclass(frozen=True)
class Row:
    """One sensor's line of the status. ``sensor_id`` is None for a damaged model naming no known sensor,
    whose data, scores and anomaly counts are then unknown (None)."""

    sensor_id: str | None
    status: str
    model: ModelInfo | None
    ratio: float | None
    configured_window: int | None
    configured_interval: pd.Timedelta
    last_scored: pd.Timestamp | None
    last_reading: pd.Timestamp | None
    anomalies_24h: int | None
    anomalies_7d: int | None

    @property
    def usable(self) -> ModelInfo | None:
        """The model when it is not damaged."""
        return self.model if self.model is not None and self.model.problem is None else None

    @property
    def effective_threshold(self) -> float | None:
        """Saved threshold x ratio: what a window's loss is compared with."""
        model = self.usable
        if model is None or model.threshold is None or self.ratio is None:
            return None
        return model.threshold * self.ratio


def duration(delta: pd.Timedelta) -> str:
    """A duration as the status's flags take it, in days rather than weeks (``35d``, ``7d``, ``15m``)."""
    return times.format_duration(delta, largest="d")


# ---------------------------------------------------------------- models


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


def read_models(models_dir: Path) -> list[ModelInfo]:
    """Every model directory (one holding metadata.json) in ``models_dir``, usable or damaged. Model files
    are not checked against their checksums: the status reads none of them.

    Raises OSError when the directory cannot be listed; a missing directory holds no models.
    """
    if not models_dir.exists():
        return []
    models = []
    for directory in sorted(models_dir.iterdir()):
        if not directory.is_dir() or not (directory / store.METADATA).exists():
            continue  # a training killed before its first commit leaves a directory but no model
        try:
            saved = store.load(directory, verify=())
        except ArtifactError as e:
            models.append(damaged(directory.name, e))
            continue
        models.append(usable(directory.name, saved.metadata))
    return models


# ---------------------------------------------------------------- sensors and rows


def select_sensors(
    models: Sequence[ModelInfo],
    found: Sequence[str],
    requested: Sequence[str],
    shard: tuple[int, int] | None,
    only_found: bool = False,
) -> list[tuple[str | None, ModelInfo | None]]:
    """The sensors to show, sorted by id, each with its model (None: no model).

    Parameters
    ----------
    models : the model directories read, usable or damaged
    found : sensor ids in InfluxDB (ignored when ``requested`` is given, as in the jobs)
    requested : --sensor ids; when given, exactly these are shown (then the shard filter)
    shard : --shard (I, N), or None
    only_found : leave out models of sensors not in ``found`` (with --where, a model of another site)

    A damaged model whose metadata names no sensor is matched by its directory name to a sensor shown;
    the rest are appended with sensor id None, on every shard (their shard cannot be known) but never
    when ``requested`` is given.
    """
    by_id = {m.sensor_id: m for m in models if m.sensor_id is not None}
    unnamed = {m.directory: m for m in models if m.sensor_id is None}
    ids = set(requested) if requested else set(found) | (set() if only_found else set(by_id))
    selected: list[tuple[str | None, ModelInfo | None]] = []
    for sensor_id in sorted(s for s in ids if settings.in_shard(s, shard)):
        model = by_id.get(sensor_id) or unnamed.pop(store.sensor_dir(Path(), sensor_id).name, None)
        selected.append((sensor_id, model))
    if not requested:
        selected += [(None, unnamed[name]) for name in sorted(unnamed)]
    return selected


def sensor_status(
    model: ModelInfo | None,
    window_changed: bool,
    last_reading: pd.Timestamp | None,
    last_scored: pd.Timestamp | None,
    now: pd.Timestamp,
    limits: Limits,
) -> str:
    """The one status word of a sensor: the first of damaged model, no model, window changed, stale
    data, not scored recently that applies, else ok. A missing time (none in the lookback) is old."""
    if model is not None and model.problem is not None:
        return DAMAGED
    if model is None:
        return NO_MODEL
    if window_changed:
        return WINDOW_CHANGED
    if last_reading is None or now - last_reading > limits.stale_after:
        return STALE
    if last_scored is None or now - last_scored > limits.unscored_after:
        return UNSCORED
    return OK


def newest(
    db: Database, sensor_ids: Sequence[str], now: pd.Timestamp, lookback: pd.Timedelta, chunk_size: int
) -> tuple[dict, dict, dict, dict]:
    """Newest score, newest reading and anomaly counts (24 h, 7 d) per sensor: four queries per chunk."""
    since = now - lookback
    scored: dict[str, pd.Timestamp] = {}
    readings: dict[str, pd.Timestamp] = {}
    day: dict[str, int] = {}
    week: dict[str, int] = {}
    for chunk in review.chunks(sensor_ids, chunk_size):
        scored.update(db.last_scored(chunk, since))
        readings.update(db.last_reading(chunk, since))
        day.update(db.anomaly_counts(chunk, now - pd.Timedelta(days=1)))
        week.update(db.anomaly_counts(chunk, now - pd.Timedelta(days=7)))
    return scored, readings, day, week


def build_rows(
    selected: Sequence[tuple[str | None, ModelInfo | None]],
    sensor_config: SensorConfig,
    interval: pd.Timedelta,
    now: pd.Timestamp,
    limits: Limits,
    last_scored: Mapping[str, pd.Timestamp],
    last_reading: Mapping[str, pd.Timestamp],
    anomalies_24h: Mapping[str, int],
    anomalies_7d: Mapping[str, int],
) -> list[Row]:
    """Join the models with what InfluxDB said (each mapping: sensor id -> value; absent: none) into rows.

    A model's window changed when the configured window or ``interval`` differs from the model's,
    as the scorer checks before it skips a sensor.
    """
    rows = []
    for sensor_id, model in selected:
        if sensor_id is None:
            rows.append(Row(None, DAMAGED, model, None, None, interval, None, None, None, None))
            continue
        window = sensor_config.window(sensor_id)
        fit = model if model is not None and model.problem is None else None
        changed = fit is not None and (fit.window != window or fit.interval != interval)
        status = sensor_status(model, changed, last_reading.get(sensor_id), last_scored.get(sensor_id), now, limits)
        rows.append(
            Row(
                sensor_id,
                status,
                model,
                sensor_config.ratio(sensor_id),
                window,
                interval,
                last_scored.get(sensor_id),
                last_reading.get(sensor_id),
                int(anomalies_24h.get(sensor_id, 0)),
                int(anomalies_7d.get(sensor_id, 0)),
            )
        )
    return rows


def summarize(rows: Sequence[Row], now: pd.Timestamp, limits: Limits, lookback: pd.Timedelta) -> dict[str, Any]:
    """Fleet summary: sensors per status word, models older than ``limits.old_model_after``, sensors with
    anomalies in the last 24 h, and the anomaly totals. Sensor ids are listed in row order."""
    old = [
        r.sensor_id
        for r in rows
        if r.usable is not None
        and r.usable.trained_at is not None
        and now - r.usable.trained_at > limits.old_model_after
    ]
    return {
        "now": times.format_time(now),
        "lookback": duration(lookback),
        "sensors": len(rows),
        "status": {word: sum(r.status == word for r in rows) for word in STATUSES},
        "old_model_after": duration(limits.old_model_after),
        "old_models": old,
        "anomalous_24h": [r.sensor_id for r in rows if r.anomalies_24h],
        "anomalies_24h": sum(r.anomalies_24h or 0 for r in rows),
        "anomalies_7d": sum(r.anomalies_7d or 0 for r in rows),
    }


# ---------------------------------------------------------------- JSON


def _time(stamp: pd.Timestamp | None) -> str | None:
    return None if stamp is None else times.format_time(stamp)


def row_json(row: Row) -> dict[str, Any]:
    """A row as plain JSON values: times RFC3339 UTC, durations like ``15m``, absent values null."""
    model = row.usable
    return {
        "sensor_id": row.sensor_id,
        "status": row.status,
        "directory": row.model.directory if row.model is not None else None,
        "problem": row.model.problem if row.model is not None else None,
        "trained_at": _time(model.trained_at) if model else None,
        "window": model.window if model else None,
        "interval": duration(model.interval) if model and model.interval is not None else None,
        "configured_window": row.configured_window,
        "configured_interval": duration(row.configured_interval),
        "ratio": row.ratio,
        "threshold": model.threshold if model else None,
        "effective_threshold": row.effective_threshold,
        "training_range": {"start": _time(model.training_start), "stop": _time(model.training_stop)} if model else None,
        "last_scored": _time(row.last_scored),
        "last_reading": _time(row.last_reading),
        "anomalies_24h": row.anomalies_24h,
        "anomalies_7d": row.anomalies_7d,
    }


def render_json(rows: Sequence[Row], summary: Mapping[str, Any]) -> str:
    """The whole status as one JSON document, sorted keys, indented, ending in a newline."""
    return json.dumps({"sensors": [row_json(r) for r in rows], "summary": summary}, sort_keys=True, indent=2) + "\n"
