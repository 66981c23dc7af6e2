"""The fleet status of sensor_status.py: what each sensor's model, configuration, data and scores say, one
status word per sensor (``sensor_status``; sensor_status.py's help says what each means), and the fleet
summary. table.py shows it as text; ``render_json`` for machines. The models come from status_models.py,
read by the scorer's own loader.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import pandas as pd

from anomaly import review, settings, store, times
from anomaly.sensor_config import SensorConfig
from anomaly.status_models import ModelInfo
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
class Row:
    """One sensor's line of the status. ``sensor_id`` is None for a damaged model naming no known sensor,
    whose data, scores, anomaly and missing counts are then unknown (None). ``missing_*``: intervals the
    scorer reported missing (kind ``missing``), which are not anomalies unless it was told to flag them."""

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
    missing_24h: int | None
    missing_7d: int | None

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


@dataclass(frozen=True)
class Found:
    """What InfluxDB said of the sensors: each mapping is sensor id -> value; a sensor absent from one has
    none (no score or reading in the lookback; no anomaly or missing interval in the last 24 h or 7 d)."""

    last_scored: Mapping[str, pd.Timestamp] = field(default_factory=dict)
    last_reading: Mapping[str, pd.Timestamp] = field(default_factory=dict)
    anomalies_24h: Mapping[str, int] = field(default_factory=dict)
    anomalies_7d: Mapping[str, int] = field(default_factory=dict)
    missing_24h: Mapping[str, int] = field(default_factory=dict)
    missing_7d: Mapping[str, int] = field(default_factory=dict)


def newest(
    db: Database, sensor_ids: Sequence[str], now: pd.Timestamp, lookback: pd.Timedelta, chunk_size: int
) -> Found:
    """Newest score, newest reading, anomaly and missing counts (24 h, 7 d) per sensor: six queries per chunk."""
    since, day, week = now - lookback, now - pd.Timedelta(days=1), now - pd.Timedelta(days=7)
    found: dict[str, dict] = {f.name: {} for f in fields(Found)}
    for chunk in review.chunks(sensor_ids, chunk_size):
        found["last_scored"].update(db.last_scored(chunk, since))
        found["last_reading"].update(db.last_reading(chunk, since))
        found["anomalies_24h"].update(db.anomaly_counts(chunk, day))
        found["anomalies_7d"].update(db.anomaly_counts(chunk, week))
        found["missing_24h"].update(db.missing_counts(chunk, day))
        found["missing_7d"].update(db.missing_counts(chunk, week))
    return Found(**found)


def build_rows(
    selected: Sequence[tuple[str | None, ModelInfo | None]],
    sensor_config: SensorConfig,
    interval: pd.Timedelta,
    now: pd.Timestamp,
    limits: Limits,
    found: Found,
) -> list[Row]:
    """Join the models with what InfluxDB said into rows.

    A model's window changed when the configured window or ``interval`` differs from the model's,
    as the scorer checks before it skips a sensor.
    """
    rows = []
    for sensor_id, model in selected:
        if sensor_id is None:
            rows.append(Row(None, DAMAGED, model, None, None, interval, None, None, None, None, None, None))
            continue
        window = sensor_config.window(sensor_id)
        fit = model if model is not None and model.problem is None else None
        changed = fit is not None and (fit.window != window or fit.interval != interval)
        last_scored, last_reading = found.last_scored.get(sensor_id), found.last_reading.get(sensor_id)
        rows.append(
            Row(
                sensor_id,
                sensor_status(model, changed, last_reading, last_scored, now, limits),
                model,
                sensor_config.ratio(sensor_id),
                window,
                interval,
                last_scored,
                last_reading,
                int(found.anomalies_24h.get(sensor_id, 0)),
                int(found.anomalies_7d.get(sensor_id, 0)),
                int(found.missing_24h.get(sensor_id, 0)),
                int(found.missing_7d.get(sensor_id, 0)),
            )
        )
    return rows


def summarize(rows: Sequence[Row], now: pd.Timestamp, limits: Limits, lookback: pd.Timedelta) -> dict[str, Any]:
    """Fleet summary: sensors per status word, models older than ``limits.old_model_after``, sensors with
    anomalies and sensors with missing data in the last 24 h, and the anomaly and missing totals. Sensor
    ids are listed in row order."""
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
        "missing_data_24h": [r.sensor_id for r in rows if r.missing_24h],
        "missing_24h": sum(r.missing_24h or 0 for r in rows),
        "missing_7d": sum(r.missing_7d or 0 for r in rows),
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
        "alarms_per_week": model.alarms_per_week if model else None,
        "training_range": {"start": _time(model.training_start), "stop": _time(model.training_stop)} if model else None,
        "last_scored": _time(row.last_scored),
        "last_reading": _time(row.last_reading),
        "anomalies_24h": row.anomalies_24h,
        "anomalies_7d": row.anomalies_7d,
        "missing_24h": row.missing_24h,
        "missing_7d": row.missing_7d,
    }


def render_json(rows: Sequence[Row], summary: Mapping[str, Any]) -> str:
    """The whole status as one JSON document, sorted keys, indented, ending in a newline."""
    return json.dumps({"sensors": [row_json(r) for r in rows], "summary": summary}, sort_keys=True, indent=2) + "\n"
