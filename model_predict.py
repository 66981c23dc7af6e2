"""Scoring with saved models: load them, compute each window's reconstruction loss, flag it.

A window's score belongs to the time of its last point. The effective threshold is the saved
threshold times the sensor's ratio; a window is an anomaly when its loss is above it.

Two engines compute the loss. ``numpy`` (the default) runs the autoencoder's forward pass from the
exported weights, for all sensors of one shape (window, units) at once, without TensorFlow: a cron
tick over thousands of sensors then costs milliseconds per sensor, not a Keras load each. ``keras``
loads each Keras model, the source of truth, to check the other against.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import artifacts
import clean

ENGINES = ("numpy", "keras")
# Windows computed together at most; bounds the forward pass to a few tens of MB per 32 units.
WINDOWS_PER_BATCH = 32768
# Largest standardized reading scored as it is; float32 reaches 3.4e38, so sums over a window stay finite.
MAX_STANDARDIZED = 1e30


@dataclass(frozen=True)
class SensorModel:
    """What scoring needs of one sensor's artifacts; ``weights`` for numpy, ``keras_model`` for keras."""

    sensor_id: str
    window: int
    interval: pd.Timedelta
    threshold: float
    mean: float
    scale: float
    weights: dict[str, np.ndarray] | None = None
    keras_model: Any = None
    flat_limit: int | None = None

    @property
    def shape(self) -> tuple[int, int]:
        """(window, units): sensors of one shape are computed together."""
        return self.window, int(self.weights["decoder_recurrent_kernel"].shape[0]) if self.weights else 0


def load_sensor_model(directory: Path, engine: str = "numpy") -> SensorModel:
    """Load and verify a sensor's artifacts (raises ``artifacts.ArtifactError`` when unusable)."""
    metadata = artifacts.load_metadata(directory, verify=("model",) if engine == "keras" else ())
    weights = keras_model = None
    try:
        if engine == "keras":
            os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
            import keras

            keras_model = keras.models.load_model(metadata["paths"]["model"], compile=False)
        else:
            weights = artifacts.load_weights(metadata["paths"]["weights"], metadata["sha256"]["weights"])
        return SensorModel(
            sensor_id=metadata["sensor_id"],
            window=int(metadata["window"]),
            interval=pd.Timedelta(seconds=metadata["interval_s"]),
            threshold=float(metadata["threshold"]),
            mean=float(metadata["scaler"]["mean"]),
            scale=float(metadata["scaler"]["scale"]),
            weights=weights,
            keras_model=keras_model,
            flat_limit=flat_limit(int(metadata["window"]), metadata.get("longest_flat_run")),
        )
    except artifacts.ArtifactError:
        raise
    except Exception as e:  # a metadata key missing or of the wrong type counts as a damaged model too
        raise artifacts.ArtifactError(f"{directory}: cannot be loaded ({type(e).__name__}: {e}); "
                                      f"retrain this sensor") from None


def flat_limit(window: int, longest_flat_run: int | None) -> int | None:
    """Intervals of one repeated value beyond which a sensor counts as stuck: twice the longest run seen in
    training, and never less than a window. None for models saved before training measured it."""
    return None if longest_flat_run is None else max(window, 2 * int(longest_flat_run))


def windows_to_score(series: pd.Series, sensor: SensorModel, max_gap_points: int, first: pd.Timestamp,
                     last: pd.Timestamp) -> tuple[np.ndarray, pd.DatetimeIndex, np.ndarray]:
    """The standardized windows of a regular series whose last point lies in [first, last].

    Short gaps are filled first; windows that would span a longer gap are left out.

    Returns
    -------
    windows : array, shape [n_windows, window, 1]
    ends : DatetimeIndex, length n_windows, the time of each window's last point
    values : array, shape [n_windows], the (gap-filled) reading at each end
    """
    filled = clean.fill_short_gaps(series, max_gap_points)
    # An absurd reading (1e300) would overflow float32 to inf and the loss with it, which line protocol cannot
    # carry (and 0 * inf is NaN, which no threshold flags); clipped, its windows still score far above any.
    scaled = pd.Series(np.clip((filled.to_numpy(dtype="float64") - sensor.mean) / sensor.scale,
                               -MAX_STANDARDIZED, MAX_STANDARDIZED), index=filled.index)
    windows, ends = clean.windows_without_gaps(scaled, sensor.window)
    keep = (ends >= first) & (ends <= last)
    ends = ends[keep]
    return windows[keep], ends, filled.reindex(ends).to_numpy()


def persistent(above: pd.Series, min_consecutive: int, interval: pd.Timedelta | None) -> np.ndarray:
    """Where a window and the ``min_consecutive`` - 1 windows ending in the intervals just before it are all
    ``above``; a window missing among them (a gap) breaks the run."""
    if min_consecutive > 1 and len(above):
        grid = pd.date_range(above.index[0], above.index[-1], freq=interval)
        run = above.reindex(grid, fill_value=False).astype(int).rolling(min_consecutive, min_periods=1).sum()
        above = (run.reindex(above.index) >= min_consecutive) & above
    return above.to_numpy(dtype=bool)


def flags(ends: pd.DatetimeIndex, values: np.ndarray, losses: np.ndarray, threshold: float,
          min_consecutive: int = 1, interval: pd.Timedelta | None = None) -> pd.DataFrame:
    """Frame indexed by window end: ``value``, ``loss``, ``threshold`` (effective), ``anomaly`` and ``kind``.

    With ``min_consecutive`` K > 1 a window is an anomaly only when it and the K-1 windows ending in the
    intervals just before it all have a loss above the threshold; a window missing among them (a gap)
    breaks the run. Scores with kind ``reconstruction`` when flagged, ``none`` otherwise.
    """
    anomaly = persistent(pd.Series(losses > threshold, index=ends), min_consecutive, interval)
    return pd.DataFrame({"value": values, "loss": losses.astype("float64"), "threshold": threshold,
                         "anomaly": anomaly, "kind": np.where(anomaly, "reconstruction", "none")}, index=ends)


def dynamic_flags(scores: pd.DataFrame, history: int, min_consecutive: int = 1,
                  interval: pd.Timedelta | None = None) -> pd.DataFrame:
    """Replace the fixed threshold of ``flags``' frame by a dynamic one per window (thresholds.py): from the
    smoothed losses of the ``history`` windows before it, never below the fixed one, which is its floor.
    Adds ``smoothed_loss``; a window is flagged when its smoothed loss is above its threshold (and, with
    ``min_consecutive``, the windows before it are too). The frame must reach ``thresholds.history_needed``
    windows before the first window whose decision counts."""
    import thresholds

    if scores.empty:
        return scores.assign(smoothed_loss=pd.Series(dtype="float64"))
    floor = float(scores["threshold"].iloc[0])
    dynamic = thresholds.rolling_dynamic_thresholds(scores["loss"], floor, history)
    anomaly = persistent(dynamic["smoothed"] > dynamic["threshold"], min_consecutive, interval)
    return scores.assign(threshold=dynamic["threshold"].to_numpy(), smoothed_loss=dynamic["smoothed"].to_numpy(),
                         anomaly=anomaly, kind=np.where(anomaly, "reconstruction", "none"))


def data_checks(scores: pd.DataFrame, series: pd.Series, threshold: float, flat_limit: int | None,
                missing_limit: int, first: pd.Timestamp, last: pd.Timestamp) -> pd.DataFrame:
    """Add what a reconstruction error can miss, for times in [first, last]: a sensor stuck at one value
    for more than ``flat_limit`` intervals (kind ``flatline``, on its scored windows) and a sensor with no
    reading for more than ``missing_limit`` intervals (kind ``missing``: one point per such interval, with
    no value and no loss). ``series`` is the regular series as read, before gaps are filled."""
    values = series.to_numpy(dtype="float64")
    if flat_limit is not None and len(scores):
        at = series.index.get_indexer(scores.index)
        stuck = (at >= 0) & (clean.flat_run_lengths(values)[at] > flat_limit)
        if stuck.any():
            scores = scores.copy()
            scores.loc[stuck, "anomaly"] = True
            scores.loc[stuck, "kind"] = "flatline"
    silent = (clean.missing_run_lengths(values) > missing_limit) & (series.index >= first) & (series.index <= last)
    silent = series.index[silent].difference(scores.index) if silent.any() else series.index[:0]
    if len(silent):
        missing = pd.DataFrame({"value": np.nan, "loss": np.nan, "threshold": threshold, "anomaly": True,
                                "kind": "missing"}, index=silent)
        scores = pd.concat([scores, missing]).sort_index()
    return scores


def reconstruction_loss(model: Any, windows: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """Mean absolute reconstruction error per window of a Keras model (or any callable model).

    Parameters
    ----------
    windows : array, shape [n_windows, window, 1], standardized

    Returns
    -------
    array, shape [n_windows]
    """
    if len(windows) == 0:
        return np.empty(0, dtype="float32")
    # Calling the model directly, not predict(): no tf.function is traced anew for every model loaded.
    losses = [
        np.mean(np.abs(np.asarray(model(batch, training=False)) - batch), axis=(1, 2))
        for batch in np.array_split(windows, max(1, -(-len(windows) // batch_size)))
    ]
    return np.concatenate(losses)


def fleet_losses(models: list[SensorModel], windows: list[np.ndarray], engine: str = "numpy") -> list[np.ndarray]:
    """Loss per window for many sensors at once: ``windows[k]`` [n_k, window, 1] belongs to ``models[k]``.

    Returns a list of arrays, shape [n_k] each.
    """
    if engine == "keras":
        return [reconstruction_loss(m.keras_model, w) for m, w in zip(models, windows)]
    out: list[np.ndarray | None] = [None] * len(models)
    groups: dict[tuple[int, int], list[int]] = {}
    for k, model in enumerate(models):
        groups.setdefault(model.shape, []).append(k)
    for members in groups.values():
        members.sort(key=lambda k: len(windows[k]))
        for batch in _batches(members, [len(windows[k]) for k in members]):
            losses = _padded_losses([models[k].weights for k in batch], [windows[k] for k in batch])
            for row, k in enumerate(batch):
                out[k] = losses[row, :len(windows[k])]
    return out


def _batches(members: list[int], sizes: list[int]) -> list[list[int]]:
    """Consecutive runs of members (sorted by size) whose padded size stays within WINDOWS_PER_BATCH."""
    batches, current = [], []
    for k, size in zip(members, sizes):
        if current and (len(current) + 1) * max(size, 1) > WINDOWS_PER_BATCH:
            batches.append(current)
            current = []
        current.append(k)
    return batches + [current] if current else batches


def _padded_losses(weights: list[dict[str, np.ndarray]], windows: list[np.ndarray]) -> np.ndarray:
    """Losses [n_sensors, max_windows] of sensors sharing a shape, windows zero-padded to the longest."""
    longest = max(1, max(len(w) for w in windows))
    x = np.zeros((len(windows), longest, windows[0].shape[1]), dtype="float32")
    for row, w in enumerate(windows):
        x[row, :len(w)] = w[:, :, 0]
    stacked = {key: np.stack([w[key] for w in weights]).astype("float32") for key in weights[0]}
    return forward_losses(stacked, x)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _lstm_step(projected: np.ndarray, h: np.ndarray, c: np.ndarray, recurrent: np.ndarray):
    """One LSTM step in Keras' gate order (input, forget, cell, output) for [sensors, windows, units]."""
    z = projected + np.matmul(h, recurrent)
    i, f, g, o = np.split(z, 4, axis=-1)
    c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
    return _sigmoid(o) * np.tanh(c), c


def forward_losses(weights: dict[str, np.ndarray], x: np.ndarray) -> np.ndarray:
    """The autoencoder's forward pass and loss for sensors of one shape, in float32.

    Parameters
    ----------
    weights : arrays stacked over sensors: ``encoder_kernel`` [S, 1, 4U], ``encoder_recurrent_kernel``
        [S, U, 4U], ``encoder_bias`` [S, 4U], the same three for the decoder (kernel [S, U, 4U]),
        ``output_kernel`` [S, U, 1], ``output_bias`` [S, 1]
    x : array, shape [S, n_windows, window], standardized

    Returns
    -------
    array, shape [S, n_windows]: mean absolute reconstruction error per window
    """
    sensors, n_windows, window = x.shape
    units = weights["encoder_recurrent_kernel"].shape[1]
    h = np.zeros((sensors, n_windows, units), dtype="float32")
    c = np.zeros_like(h)
    for t in range(window):
        projected = x[:, :, t:t + 1] * weights["encoder_kernel"] + weights["encoder_bias"][:, None, :]
        h, c = _lstm_step(projected, h, c, weights["encoder_recurrent_kernel"])
    # RepeatVector: the decoder sees the same input at every step, so its projection is computed once.
    projected = np.matmul(h, weights["decoder_kernel"]) + weights["decoder_bias"][:, None, :]
    h = np.zeros_like(h)
    c = np.zeros_like(h)
    error = np.zeros((sensors, n_windows), dtype="float32")
    for t in range(window):
        h, c = _lstm_step(projected, h, c, weights["decoder_recurrent_kernel"])
        out = np.matmul(h, weights["output_kernel"])[..., 0] + weights["output_bias"]
        error += np.abs(out - x[:, :, t])
    return error / window


def robust_scores(series: pd.Series, history: int, min_history: int, z: float, first: pd.Timestamp,
                  last: pd.Timestamp, period: int) -> pd.DataFrame:
    """The cold-start detector, for a sensor with no model yet: each reading in [first, last] against the
    median and MAD of the readings at the same time of day (that interval and its two neighbours) on the
    days within ``history`` intervals before it, so a daily cycle is not mistaken for an outlier.

    ``period`` is the number of intervals in a day. A reading is scored once ``min_history`` intervals of
    such days lie behind it. ``loss`` is the robust z-score ``|x - median| / (1.4826 MAD)``, flagged above
    ``z``. The MAD is floored at 5% of the history's 5-95% range and a thousandth of the median's size, so
    that a sensor that barely moves, whose MAD is zero, does not turn every small change into an outlier.
    Frame as ``flags`` gives, with kind ``outlier`` for flagged intervals.
    """
    values = series.to_numpy(dtype="float64")
    days = max(1, history // period)
    due = np.flatnonzero((series.index >= first) & (series.index <= last) & ~np.isnan(values))
    due = due[due >= period + 1]
    offsets = np.array([-k * period + d for k in range(1, days + 1) for d in (-1, 0, 1)])
    positions = due[:, None] + offsets[None, :]
    padded = np.r_[values, np.nan]  # positions before the series read the NaN at the end
    same_time = padded[np.where(positions >= 0, positions, len(values))]
    enough = (~np.isnan(same_time)).sum(axis=1) >= 3 * max(1, min_history // period)
    due, same_time = due[enough], same_time[enough]
    if not len(due):
        return flags(series.index[:0], np.empty(0), np.empty(0, dtype="float32"), z)
    context = np.lib.stride_tricks.sliding_window_view(np.r_[np.full(history, np.nan), values], history)[due]
    with np.errstate(all="ignore"):
        median = np.nanmedian(same_time, axis=1)
        mad = np.nanmedian(np.abs(same_time - median[:, None]), axis=1)
        spread = np.nanpercentile(context, 95, axis=1) - np.nanpercentile(context, 5, axis=1)
    scale = np.maximum.reduce([1.4826 * mad, 0.05 * np.nan_to_num(spread), 1e-3 * np.abs(median),
                               np.full(len(due), 1e-12)])
    losses = np.abs(values[due] - median) / scale
    scores = flags(series.index[due], values[due], losses, z)
    scores["kind"] = np.where(scores["anomaly"], "outlier", "none")
    return scores
