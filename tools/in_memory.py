"""Train and score sensors in this process, through the jobs' own pipelines and with no InfluxDB: how
bench_model_size.py and bench_detection.py compare models and thresholds (each training on the generated
readings before a held-out stretch, keeping the model in memory, and scoring that stretch), and how
bench_training.py times the training pipeline step by step (``timed_train``, which saves as the job does).

Training is model_trainer's pipeline (prepare -> fit -> threshold -> metadata record), scoring is
model_predict's (prepare -> anomaly.losses -> decide). The model stays in memory as the ``SensorModel`` the
scorer would load from its files, with its exported weights for the NumPy engine and its Keras model.
"""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

import model_predict
import model_trainer
from anomaly import store
from anomaly.metadata import ModelMetadata
from model_predict import SensorModel
from model_trainer import FitResult, Plan

NO_LABELS = pd.DatetimeIndex([], tz="UTC")
# The training job's settings name a database; nothing here opens it.
NO_DATABASE = ("--url", "http://127.0.0.1:8086", "--api", "influxql", "--database", "unused")


@dataclass(frozen=True)
class JobDefaults:
    """What sensor_training.py trains with when no flag is given: its plan (range aside), and the default
    window and ratio of time_step_sizes.json and threshold_ratios.json."""

    plan: Plan
    window: int
    ratio: float


def job_defaults() -> JobDefaults:
    """Parsed by the training job's own parser and settings, so they are the job's by construction."""
    import sensor_training

    job = sensor_training.JOB
    settings = job.settings(job.parser().parse_args(list(NO_DATABASE)))
    sensor_config = settings.common.sensor_config
    return JobDefaults(settings.plan, sensor_config.default_window, sensor_config.default_ratio)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of a held-out run's sizes and seed; ``resolve_sizes`` fills in their defaults."""
    parser.add_argument(
        "--days", type=int, help="days of readings, the held-out stretch included (default 60; quick 21)"
    )
    parser.add_argument("--holdout-days", type=int, help="newest days scored, not trained on (default 14; quick 7)")
    parser.add_argument(
        "--per-kind", type=int, help="events of each anomaly kind per sensor, one per held-out day (default 3; quick 1)"
    )
    parser.add_argument("--epochs", type=int, help="epoch limit (default: the job's default; quick 3)")
    parser.add_argument("--seed", type=int, default=1, help="data and model seed (default 1)")


def resolve_sizes(args: argparse.Namespace, defaults: JobDefaults, sensors: tuple[int, int]) -> str | None:
    """Fill in the sizes of a held-out run that --quick or the full run gives (``sensors``: quick, full); the
    reason they cannot work, or None. Events come one a day from the held-out stretch's second day on."""
    quick = args.quick
    args.sensors = args.sensors or sensors[0 if quick else 1]
    args.days = args.days or (21 if quick else 60)
    args.holdout_days = args.holdout_days or (7 if quick else 14)
    args.per_kind = args.per_kind or (1 if quick else 3)
    args.epochs = args.epochs or (3 if quick else defaults.plan.epochs)
    if 3 * args.per_kind + 1 >= args.holdout_days:
        return (
            f"--holdout-days {args.holdout_days} is too short for {3 * args.per_kind} events, one a day from the "
            f"second day"
        )
    return None


def start(args: argparse.Namespace, defaults: JobDefaults, now: pd.Timestamp) -> tuple[Plan, int]:
    """Size TensorFlow's threads (--threads, default every core) before its first operation, and make the plan:
    the job's defaults but for the range (the readings before the held-out stretch), epochs and seed."""
    threads = args.threads or len(os.sched_getaffinity(0))
    model_trainer.limit_threads(threads)
    plan = replace(
        defaults.plan,
        start=now - pd.Timedelta(days=args.days),
        stop=now - pd.Timedelta(days=args.holdout_days),
        epochs=args.epochs,
        seed=args.seed,
    )
    return plan, threads


def warm_up(plan: Plan, window: int) -> None:
    """One tiny fit first, so library start-up is not charged to the first model measured."""
    windows = np.random.default_rng(0).normal(size=(256, window, 1)).astype("float32")
    model_trainer.fit("warm-up", windows, replace(plan, units=8, epochs=1, seed=None))


@dataclass(frozen=True)
class Trained:
    """A model trained in memory, its fit, and its time in seconds: ``fit_s`` to build and fit it,
    ``train_s`` that and its threshold."""

    model: SensorModel
    fit: FitResult
    fit_s: float
    train_s: float


def train(sensor_id: str, raw: pd.Series, window: int, plan: Plan) -> Trained:
    """Train one sensor on its readings in [plan.start, plan.stop) as the training job does; save nothing."""
    prepared = model_trainer.prepare(raw, NO_LABELS, window, plan)
    if isinstance(prepared, str):
        raise ValueError(f"{sensor_id}: {prepared}; use more --days")
    began = time.perf_counter()
    split = prepared.split(plan)
    keras_model, fit = model_trainer.fit(sensor_id, prepared.windows[:split], plan)
    fitted = time.perf_counter()
    found = model_trainer.threshold(keras_model, prepared, split, plan)
    done = time.perf_counter()
    record = model_trainer.metadata_record(sensor_id, prepared, found, fit, len(NO_LABELS), plan)
    model = SensorModel(ModelMetadata.from_record(record), model_trainer.export_weights(keras_model), keras_model)
    return Trained(model, fit, fitted - began, done - began)


def timed_train(
    sensor_id: str, raw: pd.Series, window: int, plan: Plan, models_dir: Path
) -> tuple[dict[str, float], int, int]:
    """``model_trainer.train_sensor`` step by step, each step timed and the model saved as the job saves it:
    (seconds by phase: clean, build, fit, threshold, save; windows; epochs).

    ``model_trainer.fit`` is build_model then fit_model (after seeding, when the plan has a seed); they are
    called one by one here so that building and fitting are timed apart.
    """
    phase: dict[str, float] = {}
    t = time.perf_counter()
    prepared = model_trainer.prepare(raw, NO_LABELS, window, plan)
    if isinstance(prepared, str):
        raise RuntimeError(f"{sensor_id!r} would be skipped: {prepared}")
    phase["clean"] = time.perf_counter() - t
    t = time.perf_counter()
    if plan.seed is not None:
        model_trainer.seed_everything(model_trainer.sensor_seed(plan.seed, sensor_id))
    model = model_trainer.build_model(window, plan.units, plan.dropout)
    phase["build"] = time.perf_counter() - t
    t = time.perf_counter()
    split = prepared.split(plan)
    fit = model_trainer.fit_model(
        model, prepared.windows[:split], plan.epochs, plan.batch_size, plan.validation_split, plan.patience
    )
    phase["fit"] = time.perf_counter() - t
    t = time.perf_counter()
    found = model_trainer.threshold(model, prepared, split, plan)
    phase["threshold"] = time.perf_counter() - t
    t = time.perf_counter()
    record = model_trainer.metadata_record(sensor_id, prepared, found, fit, len(NO_LABELS), plan)
    store.save(
        store.sensor_dir(models_dir, sensor_id), model, prepared.scaler, model_trainer.export_weights(model), record
    )
    phase["save"] = time.perf_counter() - t
    return phase, len(prepared.windows), fit.epochs


def scoring_windows(raw: pd.Series, model: SensorModel, plan: Plan, first: pd.Timestamp) -> model_predict.Prepared:
    """The windows of ``raw`` (readings on the interval grid) that end from ``first`` to its last reading,
    prepared as the scorer prepares them; score them with ``anomaly.losses`` and ``model_predict.decide``."""
    interval = plan.interval
    read = (raw.index[0], raw.index[-1] + interval)
    return model_predict.prepare(raw, model, interval, read, int(plan.max_gap / interval), first, raw.index[-1])
