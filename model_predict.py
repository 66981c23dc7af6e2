"""Scoring with a saved model: load it, compute each window's reconstruction loss, flag it.

A window's score belongs to the time of its last point. The effective threshold is the saved
threshold times the sensor's ratio; a window is an anomaly when its loss is above it.
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

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@dataclass(frozen=True)
class SensorModel:
    """What scoring needs of one sensor's artifacts."""

    sensor_id: str
    window: int
    interval: pd.Timedelta
    threshold: float
    scaler: Any
    model: Any


def load_sensor_model(directory: Path) -> SensorModel:
    """Load and verify a sensor's artifacts (raises ``artifacts.ArtifactError`` when unusable)."""
    import keras

    metadata = artifacts.load_metadata(directory)
    try:
        model = keras.models.load_model(metadata["paths"]["model"], compile=False)
        scaler = artifacts.load_scaler(metadata["paths"]["scaler"])
    except Exception as e:
        raise artifacts.ArtifactError(f"{directory}: cannot be loaded ({type(e).__name__}: {e}); "
                                      f"retrain this sensor") from None
    return SensorModel(
        sensor_id=metadata["sensor_id"],
        window=int(metadata["window"]),
        interval=pd.Timedelta(seconds=metadata["interval_s"]),
        threshold=float(metadata["threshold"]),
        scaler=scaler,
        model=model,
    )


def reconstruction_loss(model: Any, windows: np.ndarray, batch_size: int = 4096) -> np.ndarray:
    """Mean absolute reconstruction error per window.

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


def score(series: pd.Series, sensor: SensorModel, ratio: float, max_gap_points: int,
          first: pd.Timestamp, last: pd.Timestamp) -> pd.DataFrame:
    """Score every window of a regular series whose last point lies in [first, last].

    Returns a frame indexed by window end with columns ``value`` (the reading at that time), ``loss``,
    ``threshold`` (effective, after the ratio) and ``anomaly``. Windows that would span a gap longer
    than ``max_gap_points`` intervals are not scored.
    """
    filled = clean.fill_short_gaps(series, max_gap_points)
    windows, ends = clean.windows_without_gaps(clean.scale(filled, sensor.scaler), sensor.window)
    keep = (ends >= first) & (ends <= last)
    windows, ends = windows[keep], ends[keep]
    losses = reconstruction_loss(sensor.model, windows)
    threshold = sensor.threshold * ratio
    return pd.DataFrame(
        {"value": filled.reindex(ends).to_numpy(), "loss": losses.astype("float64"),
         "threshold": threshold, "anomaly": losses > threshold},
        index=ends,
    )
