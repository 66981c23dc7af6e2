"""Scoring with saved models: which windows are due, load the models, prepare the windows, decide.

The scoring pipeline is read -> prepare -> losses -> decide -> write; the job (sensor_predict.py,
anomaly/scoring_run.py) does the reading and writing, this module the rest for one sensor:
``score_range`` (what is due), ``load_sensor_model``, ``prepare`` (regular series, standardized windows
without long gaps), ``anomaly.losses.fleet_losses`` and ``decide`` (anomaly.detect). anomaly/chunk.py does
prepare and decide for a chunk's sensors at once, with the same result. A window's score belongs to the
time of its last point.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import clean
from anomaly import detect, runs, settings, store, thresholds, times, told
from anomaly.errors import ConfigError
from anomaly.influx.line_protocol import series_head, series_lines
from anomaly.metadata import ArtifactError, ModelMetadata
from anomaly.scores import Scores
from anomaly.settings import Schema


@dataclass(frozen=True)
class SensorModel:
    """What scoring needs of one sensor's artifacts; ``weights`` for numpy, ``keras_model`` for keras.
    ``stacked``: for a model read from the packed store, the weights of its chunk as read, stacked, and its row
    in them (``weights`` are views of that row), so a batch of the chunk's rows is sliced, not stacked again."""

    metadata: ModelMetadata
    weights: dict[str, np.ndarray] | None = None
    keras_model: Any = None
    stacked: tuple[dict[str, np.ndarray], int] | None = None

    @property
    def window(self) -> int:
        return self.metadata.window

    @property
    def threshold(self) -> float:
        return self.metadata.threshold

    @property
    def flat_limit(self) -> int | None:
        return self.metadata.flat_limit

    @property
    def shape(self) -> tuple[int, int]:
        """(window, units): sensors of one shape are computed together."""
        return self.window, int(self.weights["decoder_recurrent_kernel"].shape[0]) if self.weights else 0


def load_sensor_model(directory: Path, engine: str = "numpy") -> SensorModel:  # pragma: no mutate block
    """Load and verify a sensor's artifacts (raises ``ArtifactError`` when unusable)."""
    saved = store.load(directory, verify=("model",) if engine == "keras" else ())
    weights = keras_model = None
    if engine == "keras":
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        import keras

        try:
            keras_model = keras.models.load_model(saved.paths["model"], compile=False)
        except Exception as e:
            raise ArtifactError(
                f"{directory}: cannot be loaded ({type(e).__name__}: {e}); retrain this sensor",
                saved.metadata.sensor_id,
            ) from None
    else:
        weights = store.load_weights(saved.paths["weights"], saved.sha256["weights"], saved.metadata.sensor_id)
    return SensorModel(saved.metadata, weights, keras_model)


def windows_to_score(
    series: pd.Series, sensor: SensorModel, max_gap_points: int, first: pd.Timestamp, last: pd.Timestamp
) -> tuple[np.ndarray, pd.DatetimeIndex, np.ndarray]:
    """The standardized windows of a regular series whose last point lies in [first, last], each with its
    own level removed when the model learned shapes (``metadata.centered``), as training built them.

    Short gaps are filled first; windows that would span a longer gap are left out.

    Returns
    -------
    windows : array, shape [n_windows, window, 1]
    ends : DatetimeIndex, length n_windows, the time of each window's last point
    values : array, shape [n_windows], the (gap-filled) reading at each end
    """
    filled = clean.fill_short_gaps(series, max_gap_points)
    windows, ends = clean.windows_without_gaps(
        clean.standardize(filled, sensor.metadata.mean, sensor.metadata.scale), sensor.window
    )
    keep = (ends >= first) & (ends <= last)
    ends = ends[keep]
    windows = clean.center(windows[keep]) if sensor.metadata.centered else windows[keep]
    return windows, ends, filled.reindex(ends).to_numpy()


# ---------------------------------------------------------------- the scoring pipeline


@dataclass(frozen=True)
class Schedule:
    """When this run scores and how far back it may reach: what makes each sensor's due range."""

    interval: pd.Timedelta
    now: pd.Timestamp
    start: pd.Timestamp | None
    stop: pd.Timestamp | None
    delay: pd.Timedelta
    first_run: pd.Timedelta
    max_catchup: pd.Timedelta


def score_range(last_scored: pd.Timestamp | None, schedule: Schedule) -> tuple[pd.Timestamp, pd.Timestamp] | None:
    """First and last window end to score (inclusive, interval starts), or None when nothing is due."""
    interval = schedule.interval
    if schedule.start is not None:
        first, last = schedule.start, (schedule.stop or schedule.now.floor(interval)) - interval
    else:
        now = (schedule.now - schedule.delay).floor(interval)
        first = last_scored + interval if last_scored is not None else now - schedule.first_run
        first, last = max(first, now - schedule.max_catchup), now - interval
    return (first, last) if first <= last else None


# The dynamic threshold never goes below the model's calibrated threshold x ratio (a lower floor found more
# of NAB's events but broke the alarm budget on clean generated sensors: README, Detection quality).
DYNAMIC_FLOOR = 1.0
# Share of a sensor's training range its readings may go beyond, on either side, before they begin a level
# anomaly.
LEVEL_MARGIN = 0.1


@dataclass(frozen=True)
class Policy:
    """The decision rules the run applies to every sensor with a model (see detect.Rules)."""

    min_consecutive: int = 1
    dynamic_history: int | None = None
    dynamic_floor: float = DYNAMIC_FLOOR
    missing_limit: int | None = None
    missing_is_anomaly: bool = False
    level_margin: float = LEVEL_MARGIN


def add_rule_arguments(parser: argparse.ArgumentParser) -> None:  # pragma: no mutate block
    """The flags that choose the threshold rule and the level margin: sensor_predict.py scores with them and
    sensor_tune.py decides its candidates with the same ones, so a tuned ratio is tuned for the rule it runs
    under."""
    group = parser.add_argument_group("threshold rule (the same in sensor_predict.py and sensor_tune.py)")
    group.add_argument(
        "--threshold",
        choices=("fixed", "dynamic"),
        default="dynamic",
        help="dynamic (default): per window, from the smoothed losses of --dynamic-history before it, never "
        "below --dynamic-floor x the model's threshold x ratio; fixed: the model's threshold x ratio (see README)",
    )
    group.add_argument(
        "--dynamic-history",
        default="1d",
        help="losses a dynamic threshold is computed from (default 1d; each tick scores that much again)",
    )
    group.add_argument(
        "--dynamic-floor",
        type=float,
        default=DYNAMIC_FLOOR,
        help="share of the model's threshold x ratio below which a dynamic threshold never goes "
        f"(default {DYNAMIC_FLOOR})",
    )
    group.add_argument(
        "--level-margin",
        type=float,
        default=LEVEL_MARGIN,
        help="a reading beyond the training range by more than this share of the range begins a level anomaly, "
        f"told once until the readings have stayed inside it for a day (default {LEVEL_MARGIN})",
    )


def rule_policy(args: argparse.Namespace, interval: pd.Timedelta) -> Policy:  # pragma: no mutate block
    """The Policy of ``add_rule_arguments``' flags, checked (every other field at its default)."""
    history = None
    if args.threshold == "dynamic":
        history = int(times.parse_duration(args.dynamic_history, "--dynamic-history") / interval)
        if history < 2:
            raise ConfigError(f"--dynamic-history: {args.dynamic_history} must hold at least 2 intervals")
    return Policy(
        dynamic_history=history,
        dynamic_floor=settings.non_negative("--dynamic-floor", args.dynamic_floor),
        level_margin=settings.non_negative("--level-margin", args.level_margin),
    )


def levels(model: SensorModel, margin: float) -> tuple[float, float] | None:
    """The readings a sensor may take without a level anomaly: its training range widened by ``margin`` of
    the range on each side (None for models saved before training recorded it)."""
    if model.metadata.levels is None:
        return None
    low, high = model.metadata.levels
    return low - margin * (high - low), high + margin * (high - low)


def rules_for(model: SensorModel, ratio: float, policy: Policy) -> detect.Rules:
    return detect.Rules(
        threshold=model.threshold * ratio,
        min_consecutive=policy.min_consecutive,
        dynamic_history=policy.dynamic_history,
        dynamic_floor=policy.dynamic_floor,
        levels=levels(model, policy.level_margin),
        window=model.window,
        flat_limit=model.flat_limit,
        missing_limit=policy.missing_limit,
        missing_is_anomaly=policy.missing_is_anomaly,
    )


def lead(model: SensorModel, policy: Policy, interval: pd.Timedelta) -> tuple[pd.Timedelta, pd.Timedelta]:
    """How far before a sensor's first due window the windows that decide it begin (decided_before and the
    dynamic threshold's history), and how far before those its readings must be read: the window itself, a
    flat-line run up to the flat-line limit (which metadata.FLAT_CONTEXT bounds), and the level detector's
    ``LEVEL_REARM`` before a window's first reading, of which the history's readings are part."""
    history = thresholds.history_needed(policy.dynamic_history) if policy.dynamic_history else 0
    decided = told.decided_before(policy.min_consecutive, model.window) + history
    rearm = detect.LEVEL_REARM // interval
    readings = max(model.window, model.window + rearm - history, model.flat_limit or 0)
    return decided * interval, readings * interval


@dataclass(frozen=True)
class Prepared:
    """A sensor's windows to score and what deciding them needs (see windows_to_score)."""

    windows: np.ndarray
    ends: pd.DatetimeIndex
    values: np.ndarray
    series: pd.Series


def prepare(
    raw: pd.Series,
    model: SensorModel,
    interval: pd.Timedelta,
    read: tuple[pd.Timestamp, pd.Timestamp],
    max_gap_points: int,
    first: pd.Timestamp,
    last: pd.Timestamp,
) -> Prepared:
    """Readings as read over ``read`` -> the regular series and its windows ending in [first, last]."""
    series = clean.regular(raw, interval, *read)
    windows, ends, values = windows_to_score(series, model, max_gap_points, first, last)
    return Prepared(windows, ends, values, series)


def context(
    prepared: Prepared, rules: detect.Rules, interval: pd.Timedelta, first: pd.Timestamp, last: pd.Timestamp
) -> detect.Context:
    """What ``decide`` decides a sensor's windows ending in [first, last] with."""
    return detect.Context(
        interval=interval,
        series=prepared.series,
        first=first,
        last=last,
        decided_from=first - told.decided_before(rules.min_consecutive, rules.window) * interval,
    )


def decide(
    prepared: Prepared,
    losses: np.ndarray,
    rules: detect.Rules,
    interval: pd.Timedelta,
    first: pd.Timestamp,
    last: pd.Timestamp,
    blame: np.ndarray | None = None,
) -> Scores:
    """The sensor's scores for the window ends in [first, last] (detect.decide; ``blame``: its windows'
    losses.BLAME)."""
    decided_in = context(prepared, rules, interval, first, last)
    return detect.decide(prepared.ends, prepared.values, losses, rules, decided_in, (first, last), blame)


def without_windows(
    scores: Scores, first: pd.Timestamp, last: pd.Timestamp, interval: pd.Timedelta
) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
    """The runs of window ends in [first, last] at which ``scores`` holds no window: no point (a window across
    a long gap, too little history) or a point without a loss (an interval without readings). (first, last)
    of each run, both ends included."""
    grid = pd.date_range(first, last, freq=interval)
    windows = scores.ends[np.isfinite(scores.loss)]
    return [(grid[a], grid[b]) for a, b in runs.runs(~grid.isin(windows))]


def score_lines(heads: Sequence[str], scored: Sequence[Scores], schema: Schema, detector: str = "lstm") -> list[str]:
    """One point per window of each sensor's scores (``heads``: each sensor's score_head), sensor by sensor, each
    in time order (a written prefix never leaves a gap behind it). A window carries every field; a point
    without a reading has no value, loss, smoothed loss, score or blame (a non-finite float is left out), nor has
    a window whose blame is not known (the cold-start detector's)."""
    columns = [scores.columns() for scores in scored]

    def joined(name: str, dtype: str | type = "float64") -> np.ndarray:
        return np.concatenate([np.empty(0, dtype), *(c[name] for c in columns)])

    sizes = [len(scores.ends) for scores in scored]
    fields: dict[str, Sequence | np.ndarray] = {
        schema.field: joined("value"),
        "loss": joined("loss"),
        "threshold": joined("threshold"),
        "anomaly": joined("anomaly", bool),
        "kind": joined("kind", object),
        "detector": [detector] * sum(sizes),
        "smoothed_loss": joined("smoothed_loss"),
        "score": joined("score"),
        "worst": joined("worst"),
        "newest": joined("newest"),
    }
    # Seconds since 1970 from each index's own unit (as_unit per sensor costs more than the lines).
    seconds = np.concatenate(
        [
            np.empty(0, np.int64),
            *(scores.ends.asi8 // (np.timedelta64(1, "s") // np.timedelta64(1, scores.ends.unit)) for scores in scored),
        ]
    )
    return series_lines(heads, sizes, fields, seconds)


def score_head(sensor_id: str, schema: Schema) -> str:
    """What begins each of a sensor's score lines; ValueError when its id cannot be written as a tag."""
    return series_head(schema.output_measurement, {schema.sensor_tag: sensor_id})
