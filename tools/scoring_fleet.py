"""The fleet bench/bench_predict.py scores: generated readings, a day of earlier scores per sensor, and a
model per sensor, a few trained by sensor_training.py run as a process and the others derived from them;
its scenarios (one measured run of the scoring job each) and what a scenario's run wrote, read back.

A derived model is a trained one with each weight multiplied by 1 + N(0, PERTURBATION) and a scaler fitted
on its own sensor's readings, saved with anomaly.store like any model: the scorer cannot tell it apart, and
deriving thousands takes minutes where training them would take days.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

import clean
from anomaly import pack_build, store, times
from anomaly.influx.influxql import influxql_ident, influxql_time
from anomaly.influx.line_protocol import line_protocol
from tools import local_influxd, measure, sensor_data

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent
NOW = pd.Timestamp("2026-01-15T00:00:00Z")
INTERVAL = pd.Timedelta(minutes=15)
# Every scored sensor has readings over the last READINGS_SPAN (enough for a day of windows, their
# first window's earlier points and the gap margin); the --big sensors beyond the first --sensors only
# need one window and the gap margin.
READINGS_SPAN = pd.Timedelta(days=2)
BIG_READINGS_SPAN = pd.Timedelta(hours=6)
TRAINING_START, TRAINING_STOP = NOW - pd.Timedelta(days=6), NOW - pd.Timedelta(days=2)
HISTORY_POINTS = 96  # earlier scores per sensor before its newest one: a day
PERTURBATION = 0.01
SENSOR_TAG = "uniqueID"


def sensor_id(number: int) -> str:
    return f"AHU-{number:05d} supply air temp"


def job_args(workdir: Path) -> list[str]:
    """The flags that point a job at the fleet's models and its (empty) per-sensor ratios and windows."""
    return [
        "--models-dir",
        str(workdir / "models"),
        "--ratios",
        str(workdir / "ratios.json"),
        "--windows",
        str(workdir / "windows.json"),
    ]


# ------------------------------------------------------------------ data


def generate_readings(sensor_ids: list[str], trained: set[str], seed: int) -> dict[str, pd.Series]:
    """Readings at 15-minute samples ending just before NOW: training span too for the trained sensors."""
    readings = {}
    for sid in sensor_ids:
        start = TRAINING_START if sid in trained else NOW - READINGS_SPAN
        index = pd.date_range(start, NOW, freq=INTERVAL, inclusive="left")
        readings[sid] = pd.Series(sensor_data.normal_readings(sid, index, seed), index=index)
    return readings


def readings_lines(readings: dict[str, pd.Series], since: pd.Timestamp | None = None) -> list[str]:
    lines = []
    for sid, series in readings.items():
        part = series if since is None else series[series.index >= since]
        lines += sensor_data.readings_lines(sid, part.index, part.to_numpy())
    return lines


def history_lines(measurement: str, series: pd.Series, newest: pd.Timestamp, threshold: float) -> list[str]:
    """HISTORY_POINTS synthetic scores up to ``newest`` (fixed loss, no anomaly), so the job resumes after it."""
    sid = str(series.name)
    template = line_protocol(measurement, {SENSOR_TAG: sid}, {"loss": 0.0}, 0)
    prefix = template[: -len(" loss=0.0 0")]
    stamps = pd.date_range(end=newest, periods=HISTORY_POINTS, freq=INTERVAL)
    values = series.reindex(stamps).fillna(float(series.mean())).to_numpy()
    return [
        f"{prefix} val_num={float(v)!r},loss=0.05,threshold={threshold!r},anomaly=false {int(t.timestamp())}"
        for t, v in zip(stamps, values)
    ]


# ------------------------------------------------------------------ scenarios


@dataclass(frozen=True)
class Scenario:
    """One measured run of the job; every sensor's newest score before it is ``last_scored``."""

    name: str
    database: str
    sensor_ids: tuple[str, ...]
    windows_per_sensor: int
    engine: str
    output: str
    # Warm: the synthetic scores end one interval earlier and a run of the job (the warm-up) scores that
    # interval first, as the tick before would have, keeping its losses for this one (anomaly/loss_memory.py).
    warm: bool = True

    @property
    def last_scored(self) -> pd.Timestamp:
        return NOW - (self.windows_per_sensor + 1) * INTERVAL

    @property
    def history_until(self) -> pd.Timestamp:
        """Where the synthetic earlier scores end."""
        return self.last_scored - INTERVAL if self.warm else self.last_scored

    @property
    def first_end(self) -> pd.Timestamp:
        return NOW - self.windows_per_sensor * INTERVAL


def write_history(url: str, scenario: Scenario, readings: dict[str, pd.Series], thresholds: dict[str, float]) -> None:
    """A day of earlier scores per sensor of the scenario, ending where the scenario says (history_until)."""
    lines = []
    for sid in scenario.sensor_ids:
        lines += history_lines(scenario.output, readings[sid].rename(sid), scenario.history_until, thresholds[sid])
    local_influxd.write(url, scenario.database, lines)


def query_series(url: str, database: str, query: str) -> dict[str, list]:
    """Values of each series of an InfluxQL answer grouped by the sensor tag, by sensor id."""
    result = local_influxd.query(url, query, database)["results"][0]
    if "error" in result:
        raise RuntimeError(f"{query}: {result['error']}")
    return {s["tags"][SENSOR_TAG]: s["values"] for s in result.get("series", [])}


def scored_range(scenario: Scenario) -> str:
    return (
        f"time >= {influxql_time(scenario.first_end)} AND time < {influxql_time(NOW)} "
        f"GROUP BY {influxql_ident(SENSOR_TAG)}"
    )


def counts(url: str, scenario: Scenario, condition: str = "") -> dict[str, int]:
    """Points written per sensor in the scenario's range, where ``condition`` (InfluxQL, ending in AND) holds."""
    found = query_series(
        url,
        scenario.database,
        f'SELECT count("loss") FROM {influxql_ident(scenario.output)} WHERE {condition}{scored_range(scenario)}',
    )
    return {sid: values[0][1] for sid, values in found.items()}


def check_written(url: str, scenario: Scenario) -> None:
    """Every sensor has exactly one point per window it was due, and no other sensor has any."""
    written = counts(url, scenario)
    wrong = {
        sid: written.get(sid, 0) for sid in scenario.sensor_ids if written.get(sid, 0) != scenario.windows_per_sensor
    }
    extra = written.keys() - set(scenario.sensor_ids)
    if wrong or extra:
        sample = dict(list(wrong.items())[:5])
        raise RuntimeError(
            f"{scenario.name}: expected {scenario.windows_per_sensor} points per sensor in "
            f"{scenario.output}; {len(wrong)} sensors differ (e.g. {sample}), "
            f"{len(extra)} unexpected sensors"
        )


def anomalies(url: str, scenario: Scenario) -> int:
    return sum(counts(url, scenario, '"anomaly" = true AND ').values())


def losses(url: str, scenario: Scenario) -> dict[str, float]:
    found = query_series(
        url, scenario.database, f'SELECT "loss" FROM {influxql_ident(scenario.output)} WHERE {scored_range(scenario)}'
    )
    return {sid: values[-1][1] for sid, values in found.items()}


# ------------------------------------------------------------------ models


def train(url: str, workdir: Path, trained_ids: list[str], epochs: int) -> None:
    """Train the base models with sensor_training.py as a process (units and window at their defaults)."""
    command = [
        sys.executable,
        str(ROOT / "sensor_training.py"),
        *job_args(workdir),
        "--start",
        times.format_time(TRAINING_START),
        "--stop",
        times.format_time(TRAINING_STOP),
        "--epochs",
        str(epochs),
        "--patience",
        "2",
        "--seed",
        "1",
    ]
    for sid in trained_ids:
        command += ["--sensor", sid]
    log = workdir / "logs" / "training.log"
    measure.run_checked(command, measure.job_env(url, "fleet"), workdir, log)
    missing = [sid for sid in trained_ids if not (store.sensor_dir(workdir / "models", sid) / store.METADATA).exists()]
    if missing:
        raise RuntimeError(f"sensor_training.py trained no model for {missing}:\n{measure.tail(log)}")


class CopiedModelFile:
    """Stands in for a Keras model in store.save: its 'save' copies the base sensor's Keras file."""

    def __init__(self, source: Path):
        self.source = source

    def save(self, path: Path) -> None:
        shutil.copyfile(self.source, path)


def derive_models(
    models_dir: Path,
    trained_ids: list[str],
    keras_ids: list[str],
    numpy_ids: list[str],
    readings: dict[str, pd.Series],
    seed: int,
) -> dict[str, float]:
    """Save a model for every sensor of ``keras_ids`` and ``numpy_ids``, derived from a trained one.

    Base model k % len(trained_ids); each weight times 1 + N(0, PERTURBATION); scaler fitted on the
    sensor's own readings; metadata copied from the base with sensor id, scaler and trained_at changed
    (and ``derived_from`` added). Sensors of ``keras_ids`` get a real Keras file with those weights,
    those of ``numpy_ids`` a copy of the base's Keras file. Returns every sensor's threshold.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    import model_trainer

    rng = np.random.default_rng(seed)
    bases = []
    for sid in trained_ids:
        saved = store.load(store.sensor_dir(models_dir, sid))
        model = keras.models.load_model(saved.paths["model"])
        bases.append((saved, model, model.get_weights()))
    thresholds = {sid: saved.metadata.threshold for sid, (saved, _, _) in zip(trained_ids, bases)}
    for number, sid in enumerate(keras_ids + numpy_ids):
        saved, model, weights = bases[number % len(bases)]
        model.set_weights([(w * (1.0 + rng.normal(0.0, PERTURBATION, w.shape))).astype(w.dtype) for w in weights])
        scaler = clean.fit_scaler(readings[sid])
        record = {
            key: value
            for key, value in saved.metadata.record.items()
            if key not in ("format_version", "version", "files", "sha256")
        }
        record.update(
            sensor_id=sid,
            scaler={"mean": float(scaler.mean_[0]), "scale": float(scaler.scale_[0])},
            trained_at=times.format_time(pd.Timestamp.now(tz="UTC")),
            derived_from={
                "sensor_id": saved.metadata.sensor_id,
                "weights": f"x (1 + N(0, {PERTURBATION}))",
                "keras_file": "perturbed" if number < len(keras_ids) else "copy of the base's",
            },
        )
        target = model if number < len(keras_ids) else CopiedModelFile(saved.paths["model"])
        store.save(store.sensor_dir(models_dir, sid), target, scaler, model_trainer.export_weights(model), record)
        thresholds[sid] = saved.metadata.threshold
        if (number + 1) % 1000 == 0:
            logger.info("derived %d of %d models", number + 1, len(keras_ids) + len(numpy_ids))
    # As a training run does after saving models: the scorer reads them from the packed store.
    pack_build.rebuild(models_dir)
    return thresholds
