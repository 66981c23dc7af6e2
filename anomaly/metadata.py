"""A saved model's metadata.json: the one schema that training writes and every reader validates.

The scorer, the status table, evaluation and tuning all read a model through ``ModelMetadata``, so
they agree on which fields a usable model must have and on when a model no longer fits the
configuration (another window or interval).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

FORMAT_VERSION = 1


# pragma: no mutate start
# Mutation testing (docs/mutation.md) covers the decision in this module, flat_limit; the schema checks are
# tested where models are saved and loaded (tests/test_artifacts.py, tests/test_status.py), not by its fast tests.
class ArtifactError(RuntimeError):
    """A model directory that cannot be used: missing, corrupt or of another format. ``sensor_id`` is the
    sensor its metadata names, when it names one."""

    def __init__(self, message: str, sensor_id: str | None = None):
        super().__init__(message)
        self.sensor_id = sensor_id


def _whole(value: object, least: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _stamp(value: object) -> pd.Timestamp | None:
    """An RFC3339 string with a zone -> UTC Timestamp; anything else -> None (shown fields only)."""
    if not isinstance(value, str):
        return None
    try:
        stamp = pd.Timestamp(value)
    except ValueError:
        return None
    return None if stamp is pd.NaT or stamp.tzinfo is None else stamp.tz_convert("UTC")


def section(record: Mapping[str, Any], key: str) -> dict[str, Any]:
    """A nested object of metadata.json, or {} when it is missing or not an object."""
    value = record.get(key)
    return value if isinstance(value, dict) else {}


# pragma: no mutate end


# The longest flat-line a scorer looks for: a tick reads this far back for it, and no further (reading days of
# every sensor every few minutes would cost more than the rule is worth).
FLAT_CONTEXT = pd.Timedelta(days=2)


def flat_limit(window: int, longest_flat_run: int | None, interval: pd.Timedelta) -> int | None:
    """Intervals of one repeated value beyond which a sensor counts as stuck: twice the longest run seen in
    training, and never less than a window. None (no flat-line rule) for models saved before training
    measured it, and when the limit lies beyond FLAT_CONTEXT: ticks could never see such a run, and a
    backfill, which reads its whole range, must not flag what ticks would not."""
    if longest_flat_run is None:
        return None
    limit = max(window, 2 * int(longest_flat_run))
    return limit if limit * interval <= FLAT_CONTEXT else None


@dataclass(frozen=True)
class ModelMetadata:  # pragma: no mutate block
    """What a model's metadata.json says, checked. ``record`` keeps the whole JSON object as read or written."""

    sensor_id: str
    window: int
    interval: pd.Timedelta
    threshold: float
    mean: float
    scale: float
    longest_flat_run: int | None = None
    centered: bool = False
    levels: tuple[float, float] | None = None
    record: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> ModelMetadata:
        """Validate the fields the scorer needs; a bad one raises ArtifactError naming it and its value."""
        scaler = section(record, "scaler")
        flat = record.get("longest_flat_run")
        levels = record.get("levels")
        checks = [
            ("sensor_id", isinstance(record.get("sensor_id"), str)),
            ("window", _whole(record.get("window"), 2)),
            ("interval_s", _whole(record.get("interval_s"), 1)),
            # Scores are loss / threshold, and the dynamic threshold's floor must be positive: 0 cannot score.
            ("threshold", _number(record.get("threshold")) and record["threshold"] > 0),
            ("scaler", _number(scaler.get("mean")) and _number(scaler.get("scale")) and scaler["scale"] > 0),
            ("longest_flat_run", flat is None or _whole(flat, 0)),
            ("centered", isinstance(record.get("centered", False), bool)),
            (
                "levels",
                levels is None
                or (
                    isinstance(levels, dict)
                    and _number(levels.get("low"))
                    and _number(levels.get("high"))
                    and levels["low"] <= levels["high"]
                ),
            ),
        ]
        for key, good in checks:
            if not good:
                sensor_id = record.get("sensor_id") if isinstance(record.get("sensor_id"), str) else None
                raise ArtifactError(f"metadata.json has {key} {record.get(key)!r}; retrain this sensor", sensor_id)
        return cls(
            sensor_id=record["sensor_id"],
            window=record["window"],
            interval=pd.Timedelta(seconds=record["interval_s"]),
            threshold=float(record["threshold"]),
            mean=float(scaler["mean"]),
            scale=float(scaler["scale"]),
            longest_flat_run=flat,
            centered=record.get("centered", False),
            levels=None if levels is None else (float(levels["low"]), float(levels["high"])),
            record=dict(record),
        )

    @property
    def alarms_per_week(self) -> float | None:
        """The false-alarm runs per week the calibrated threshold is expected to give (None: not calibrated)."""
        value = section(self.record, "calibration").get("alarms_per_week")
        return float(value) if isinstance(value, (int, float)) and _number(value) else None

    def mismatch(self, window: int, interval: pd.Timedelta) -> str | None:
        """Why this model cannot score with the configured window and interval, or None when it can."""
        if self.window == window and self.interval == interval:
            return None
        return (
            f"model has window {self.window} and interval {self.interval}, config wants window {window} and "
            f"interval {interval}; retrain it"
        )

    @property
    def flat_limit(self) -> int | None:
        return flat_limit(self.window, self.longest_flat_run, self.interval)

    @property
    def trained_at(self) -> pd.Timestamp | None:
        return _stamp(self.record.get("trained_at"))

    @property
    def training_range(self) -> tuple[pd.Timestamp | None, pd.Timestamp | None]:
        training = section(self.record, "training_range")
        return _stamp(training.get("start")), _stamp(training.get("stop"))
