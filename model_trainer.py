"""Fitting: the LSTM autoencoder's life cycle before it is saved, and the training pipeline
prepare -> fit -> threshold -> save that the training job and the benchmarks call. Imports TensorFlow.

The model reconstructs a standardized window of ``window`` readings; windows it reconstructs badly
are unlike what it saw in training. Shapes: windows are ``[n_windows, window, 1]``.
"""

from __future__ import annotations

import functools
import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

import clean
from anomaly import calibration, store, thresholds, times
from anomaly.losses import reconstruction_loss

if TYPE_CHECKING:
    import keras

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


@dataclass(frozen=True)
class FitResult:
    epochs: int
    train_loss: float
    val_loss: float


def limit_threads(threads: int) -> None:
    """Size TensorFlow's thread pools; only possible before its first operation in this process."""
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        pass


@functools.cache
def library_versions() -> dict[str, str]:
    """Recorded with each model: a model from other versions may load differently."""
    import keras
    import pandas
    import sklearn
    import tensorflow

    return {
        "keras": keras.__version__,
        "numpy": np.__version__,
        "pandas": pandas.__version__,
        "scikit-learn": sklearn.__version__,
        "tensorflow": tensorflow.__version__,
    }


def seed_everything(seed: int) -> None:
    """Same seed, same data -> same weights and threshold (deterministic ops, at some cost in speed)."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def build_model(window: int, units: int, dropout: float) -> keras.Model:
    """Encoder LSTM -> RepeatVector -> decoder LSTM -> TimeDistributed Dense, MAE loss.

    Input and output shape: ``[batch, window, 1]``.
    """
    import keras

    inputs = keras.Input(shape=(window, 1), name="window")
    encoded = keras.layers.LSTM(units, dropout=dropout, name="encoder")(inputs)
    repeated = keras.layers.RepeatVector(window, name="repeat")(encoded)
    decoded = keras.layers.LSTM(units, dropout=dropout, return_sequences=True, name="decoder")(repeated)
    outputs = keras.layers.TimeDistributed(keras.layers.Dense(1), name="output")(decoded)
    model = keras.Model(inputs, outputs, name="lstm_autoencoder")
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=1e-3), loss="mae")
    return model


def fit_model(
    model: keras.Model, windows: np.ndarray, epochs: int, batch_size: int, validation_split: float, patience: int
) -> FitResult:
    """Fit the model to reproduce ``windows`` [n_windows, window, 1].

    The validation windows are the last ``validation_split`` of the series (Keras takes them from the
    end, before shuffling), so early stopping judges the model on later data than it learned from.
    The best weights by validation loss are kept.
    """
    import keras

    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience, restore_best_weights=True)
    history = model.fit(
        windows,
        windows,
        epochs=epochs,
        batch_size=batch_size,
        validation_split=validation_split,
        shuffle=True,
        callbacks=[stop],
        verbose=0,
    )
    val = history.history["val_loss"]
    best = int(np.argmin(val))
    return FitResult(epochs=len(val), train_loss=float(history.history["loss"][best]), val_loss=float(val[best]))


def export_weights(model: keras.Model) -> dict[str, np.ndarray]:
    """The trained weights by the names artifacts.WEIGHT_NAMES gives them, for the NumPy scorer."""
    encoder, decoder, dense = (model.get_layer(name) for name in ("encoder", "decoder", "output"))
    names = ("kernel", "recurrent_kernel", "bias")
    weights = {f"encoder_{n}": np.asarray(w) for n, w in zip(names, encoder.get_weights())}
    weights.update({f"decoder_{n}": np.asarray(w) for n, w in zip(names, decoder.get_weights())})
    kernel, bias = dense.get_weights()
    weights.update(output_kernel=np.asarray(kernel), output_bias=np.asarray(bias))
    return weights


def loss_threshold(losses: np.ndarray, percentile: float) -> float:
    """The ``percentile`` (0-100) of the training windows' reconstruction losses [n_windows]."""
    return float(np.percentile(losses, percentile))


# ---------------------------------------------------------------- the training pipeline


@dataclass(frozen=True)
class Plan:
    """How every sensor of a run is trained: the range, the grid, the model and the threshold rule."""

    start: pd.Timestamp
    stop: pd.Timestamp
    interval: pd.Timedelta
    max_gap: pd.Timedelta
    units: int = 32
    dropout: float = 0.1
    epochs: int = 50
    batch_size: int = 64
    validation_split: float = 0.1
    patience: int = 5
    percentile: float = 99.5
    min_windows: int = 200
    seed: int | None = None
    alarm_budget: float = 0.5
    calibration_split: float = 0.2
    # The scorer's --min-consecutive the threshold is calibrated for (its default).
    min_consecutive: int = 2


@dataclass(frozen=True)
class Prepared:
    """A sensor's training data: the gap-filled series, its scaler, its standardized windows with each
    window's own level removed (the shape the autoencoder learns) and their ends."""

    series: pd.Series
    scaler: Any
    windows: np.ndarray
    ends: pd.DatetimeIndex
    longest_flat_run: int

    @property
    def levels(self) -> tuple[float, float]:
        """The lowest and highest reading of training: levels between them are the sensor's own."""
        values = self.series.dropna()
        return float(values.min()), float(values.max())

    def split(self, plan: Plan) -> int:
        """Where the newest ``plan.calibration_split`` of the windows begins: they are held out of fitting to
        calibrate the threshold, when there is an alarm budget and enough of them to say something
        (MIN_CALIBRATION windows)."""
        held = int(len(self.windows) * plan.calibration_split) if plan.alarm_budget > 0 else 0
        return len(self.windows) - held if held >= MIN_CALIBRATION else len(self.windows)


# Fewest held-out windows that calibrate a threshold; with fewer, the percentile of all windows is used.
MIN_CALIBRATION = 50


def sensor_seed(seed: int, sensor_id: str) -> int:
    """A per-sensor seed, so a sensor's model does not depend on which other sensors ran before it."""
    digest = hashlib.sha256(f"{seed}:{sensor_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def prepare(raw: pd.Series, labelled: pd.DatetimeIndex, window: int, plan: Plan) -> Prepared | str:
    """Readings as read -> what fitting needs, or the reason the sensor cannot be trained (labelled
    intervals are left out, short gaps filled; the flat-line length is measured before filling)."""
    series = clean.drop_intervals(clean.regular(raw, plan.interval, plan.start, plan.stop), labelled)
    longest_flat_run = int(clean.flat_run_lengths(series.to_numpy()).max()) if len(series) else 0
    series = clean.fill_short_gaps(series, int(plan.max_gap / plan.interval))
    reason = clean.unusable_reason(series, window, plan.min_windows)
    if reason:
        return reason
    scaler = clean.fit_scaler(series)
    scaled = clean.standardize(series, float(scaler.mean_[0]), float(scaler.scale_[0]))
    windows, ends = clean.windows_without_gaps(scaled, window)
    return Prepared(series, scaler, clean.center(windows), ends, longest_flat_run)


def fit(sensor_id: str, windows: np.ndarray, plan: Plan) -> tuple[keras.Model, FitResult]:
    if plan.seed is not None:
        seed_everything(sensor_seed(plan.seed, sensor_id))
    model = build_model(windows.shape[1], plan.units, plan.dropout)
    return model, fit_model(model, windows, plan.epochs, plan.batch_size, plan.validation_split, plan.patience)


def threshold(model: keras.Model, prepared: Prepared, fitted: int, plan: Plan) -> dict[str, Any]:
    """The threshold and how it was found: without a held-out part, the ``percentile`` of the windows'
    losses; with one, the smallest at which the held-out newest windows (from ``fitted`` on) would have
    given at most ``alarm_budget`` alarm runs a week under the scorer's default rule (calibration.decided:
    smoothed losses, ``min_consecutive`` windows in a row), never below the ``percentile`` of what that rule
    compares for the fitted windows."""
    losses = reconstruction_loss(model, prepared.windows)
    percentile = loss_threshold(losses[:fitted], plan.percentile)
    if fitted == len(losses) or plan.alarm_budget <= 0:
        return {"threshold": percentile, "percentile_threshold": percentile}
    values, ends = calibration.decided(losses, prepared.ends, plan.interval, thresholds.SMOOTHING, plan.min_consecutive)
    held = ends >= prepared.ends[fitted]
    floor = loss_threshold(values[~held], plan.percentile) if (~held).any() else percentile
    found = calibration.calibrate(values[held], ends[held], plan.interval, plan.alarm_budget, floor)
    return {
        "threshold": found.threshold,
        "percentile_threshold": percentile,
        "calibration": {
            "alarm_budget": plan.alarm_budget,
            "alarms_per_week": found.alarms_per_week,
            "windows": len(losses) - fitted,
            "weeks": found.weeks,
            "peaks": found.peaks,
            "smoothing": thresholds.SMOOTHING,
            "min_consecutive": plan.min_consecutive,
        },
    }


def metadata_record(
    sensor_id: str, prepared: Prepared, found: dict[str, Any], fit_result: FitResult, labelled: int, plan: Plan
) -> dict[str, Any]:
    """metadata.json's content (anomaly.metadata.ModelMetadata reads it back); the store adds the files.
    ``found`` is what ``threshold`` returned."""
    present = prepared.series.dropna().index
    low, high = prepared.levels
    return {
        **found,
        "centered": True,
        "levels": {"low": low, "high": high},
        "sensor_id": sensor_id,
        "window": int(prepared.windows.shape[1]),
        "interval_s": int(plan.interval.total_seconds()),
        "max_gap_s": int(plan.max_gap.total_seconds()),
        "percentile": plan.percentile,
        "scaler": {"mean": float(prepared.scaler.mean_[0]), "scale": float(prepared.scaler.scale_[0])},
        "longest_flat_run": prepared.longest_flat_run,
        "training_range": {
            "start": times.format_time(plan.start),
            "stop": times.format_time(plan.stop),
            "first_point": times.format_time(present[0]),
            "last_point": times.format_time(present[-1]),
        },
        "windows": len(prepared.windows),
        "labelled_intervals_dropped": labelled,
        "model": {
            "units": plan.units,
            "dropout": plan.dropout,
            "epochs": fit_result.epochs,
            "batch_size": plan.batch_size,
            "seed": plan.seed,
        },
        "train_loss": fit_result.train_loss,
        "val_loss": fit_result.val_loss,
        "versions": library_versions(),
        "trained_at": times.format_time(pd.Timestamp.now(tz="UTC")),
    }


def train_sensor(
    sensor_id: str, raw: pd.Series, labelled: pd.DatetimeIndex, window: int, plan: Plan, models_dir: Path
) -> str:
    """Prepare -> fit -> threshold -> save one sensor; return the line to log. Raises on failure, returns
    'skipped: ...' when the sensor cannot be trained on purpose."""
    began = time.monotonic()
    prepared = prepare(raw, labelled, window, plan)
    if isinstance(prepared, str):
        return f"skipped: {prepared}"
    fitting = time.monotonic()
    fitted = prepared.split(plan)
    model, fit_result = fit(sensor_id, prepared.windows[:fitted], plan)
    thresholding = time.monotonic()
    found = threshold(model, prepared, fitted, plan)
    saving = time.monotonic()
    store.save(
        store.sensor_dir(models_dir, sensor_id),
        model,
        prepared.scaler,
        export_weights(model),
        metadata_record(sensor_id, prepared, found, fit_result, len(labelled), plan),
    )
    done = time.monotonic()
    return (
        f"trained in {done - began:.1f}s (prepare {fitting - began:.1f}, fit {thresholding - fitting:.1f}, "
        f"threshold {saving - thresholding:.1f}, save {done - saving:.1f}): {len(prepared.windows)} windows, "
        f"{fit_result.epochs} epochs, val loss {fit_result.val_loss:.4f}, threshold {found['threshold']:.4f}"
        + (f" ({found['calibration']['alarms_per_week']:.2f} alarms a week expected)" if "calibration" in found else "")
    )
