#!/usr/bin/env python3
"""Monthly job: fit one LSTM autoencoder per sensor from its InfluxDB history and save it.

Exit status: 0 when every selected sensor trained or was deliberately skipped, 1 when any failed
or the database could not be used, 2 for bad configuration, 75 when another training run for the
same models directory is still going (this one does nothing).
"""
from __future__ import annotations

import argparse
import hashlib
import logging
import os
import socket
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

import artifacts
import clean
from anomaly import logs, settings, times
from anomaly.errors import ConfigError
from anomaly.settings import Connection, Schema, SensorConfig
from influx_interact import Influx, InfluxError

logger = logging.getLogger("sensor_training")


@dataclass(frozen=True)
class TrainingSettings:
    connection: Connection
    schema: Schema
    sensors: tuple[str, ...]
    shard: tuple[int, int] | None
    sensor_config: SensorConfig
    start: pd.Timestamp
    stop: pd.Timestamp
    interval: pd.Timedelta
    max_gap: pd.Timedelta
    models_dir: Path
    chunk_size: int
    units: int
    dropout: float
    epochs: int
    batch_size: int
    validation_split: float
    patience: int
    percentile: float
    min_windows: int
    seed: int | None
    jobs: int
    dask_scheduler: str | None

    @property
    def max_gap_points(self) -> int:
        return int(self.max_gap / self.interval)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    settings.add_common_arguments(parser)
    train = parser.add_argument_group("training")
    train.add_argument("--start", default="-90d", help="start of the training range: RFC3339 or relative (default -90d)")
    train.add_argument("--stop", default="now", help="end of the training range (default now)")
    train.add_argument("--now", help="take this RFC3339 time as the current time (replays and tests)")
    train.add_argument("--label-field", help="boolean field marking manual anomalies; their intervals are left out")
    train.add_argument("--units", type=int, default=32, help="LSTM units in encoder and decoder (default 32)")
    train.add_argument("--dropout", type=float, default=0.1, help="input dropout of both LSTMs (default 0.1)")
    train.add_argument("--epochs", type=int, default=50, help="maximum epochs (default 50)")
    train.add_argument("--batch-size", type=int, default=64, help="windows per batch (default 64)")
    train.add_argument("--validation-split", type=float, default=0.1,
                       help="share of the newest windows held out for early stopping (default 0.1)")
    train.add_argument("--patience", type=int, default=5, help="epochs without improvement before stopping (default 5)")
    train.add_argument("--percentile", type=float, default=99.5,
                       help="percentile of the training losses used as threshold (default 99.5)")
    train.add_argument("--min-windows", type=int, default=200,
                       help="skip sensors with fewer windows without gaps than this (default 200)")
    train.add_argument("--jobs", type=int, default=len(os.sched_getaffinity(0)),
                       help="sensors trained in parallel, each in its own process (default: one per core)")
    train.add_argument("--dask-scheduler", metavar="ADDRESS",
                       help="train on this Dask cluster (tcp://host:8786) instead; --models-dir must be a path "
                            "every worker sees")
    train.add_argument("--seed", type=int, help="make the run reproducible: same data, same thresholds")
    return parser


def settings_from_args(args: argparse.Namespace) -> TrainingSettings:
    now = times.current_time(args.now)
    interval = times.parse_duration(args.interval, "--interval")
    start, stop = times.parse_range(args.start, args.stop, now, interval)
    if not 0 < args.percentile <= 100:
        raise ConfigError(f"--percentile: {args.percentile} must be in (0, 100]")
    if not 0 <= args.dropout < 1:
        raise ConfigError(f"--dropout: {args.dropout} must be in [0, 1)")
    if not 0 < args.validation_split < 0.5:
        raise ConfigError(f"--validation-split: {args.validation_split} must be in (0, 0.5)")
    return TrainingSettings(
        connection=settings.connection_from_args(args),
        schema=settings.schema_from_args(args, label_field=args.label_field),
        sensors=tuple(args.sensor),
        shard=settings.parse_shard(args.shard),
        sensor_config=settings.load_sensor_config(args.ratios, args.windows),
        start=start,
        stop=stop,
        interval=interval,
        max_gap=times.parse_duration(args.max_gap, "--max-gap"),
        models_dir=args.models_dir,
        chunk_size=settings.positive_int("--chunk-size", args.chunk_size),
        units=settings.positive_int("--units", args.units),
        dropout=args.dropout,
        epochs=settings.positive_int("--epochs", args.epochs),
        batch_size=settings.positive_int("--batch-size", args.batch_size),
        validation_split=args.validation_split,
        patience=settings.positive_int("--patience", args.patience),
        percentile=args.percentile,
        min_windows=settings.positive_int("--min-windows", args.min_windows),
        seed=args.seed,
        jobs=settings.positive_int("--jobs", args.jobs),
        dask_scheduler=args.dask_scheduler,
    )


def sensor_seed(seed: int, sensor_id: str) -> int:
    """A per-sensor seed, so a sensor's model does not depend on which other sensors ran before it."""
    digest = hashlib.sha256(f"{seed}:{sensor_id}".encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big")


def train_sensor(sensor_id: str, raw: pd.Series, labelled: pd.DatetimeIndex, settings: TrainingSettings) -> str:
    """Train and save one sensor; return the line to log. Raises on failure, returns 'skipped ...' on purpose."""
    import model_predict
    import model_trainer

    began = time.monotonic()
    window = settings.sensor_config.window(sensor_id)
    series = clean.drop_intervals(
        clean.regularize(clean.validate_series(raw), settings.interval, settings.start, settings.stop), labelled)
    longest_flat_run = int(clean.flat_run_lengths(series.to_numpy()).max()) if len(series) else 0
    series = clean.fill_short_gaps(series, settings.max_gap_points)
    reason = clean.unusable_reason(series, window, settings.min_windows)
    if reason:
        return f"skipped: {reason}"
    scaler = clean.fit_scaler(series)
    mean, scale = float(scaler.mean_[0]), float(scaler.scale_[0])
    windows, _ = clean.windows_without_gaps(clean.scale(series, mean, scale), window)
    if settings.seed is not None:
        model_trainer.seed_everything(sensor_seed(settings.seed, sensor_id))
    fitting = time.monotonic()
    model = model_trainer.build_model(window, settings.units, settings.dropout)
    fit = model_trainer.fit_model(model, windows, settings.epochs, settings.batch_size,
                                  settings.validation_split, settings.patience)
    thresholding = time.monotonic()
    losses = model_predict.reconstruction_loss(model, windows)
    threshold = model_trainer.loss_threshold(losses, settings.percentile)
    saving = time.monotonic()
    present = series.dropna().index
    metadata = {
        "sensor_id": sensor_id,
        "window": window,
        "interval_s": int(settings.interval.total_seconds()),
        "max_gap_s": int(settings.max_gap.total_seconds()),
        "percentile": settings.percentile,
        "threshold": threshold,
        "scaler": {"mean": mean, "scale": scale},
        "longest_flat_run": longest_flat_run,
        "training_range": {"start": times.format_time(settings.start), "stop": times.format_time(settings.stop),
                           "first_point": times.format_time(present[0]),
                           "last_point": times.format_time(present[-1])},
        "windows": int(len(windows)),
        "labelled_intervals_dropped": int(len(labelled)),
        "model": {"units": settings.units, "dropout": settings.dropout, "epochs": fit.epochs,
                  "batch_size": settings.batch_size, "seed": settings.seed},
        "train_loss": fit.train_loss,
        "val_loss": fit.val_loss,
        "versions": model_trainer.library_versions(),
        "trained_at": times.format_time(pd.Timestamp.now(tz="UTC")),
    }
    artifacts.save(artifacts.sensor_dir(settings.models_dir, sensor_id), model, scaler,
                   model_trainer.export_weights(model), metadata)
    done = time.monotonic()
    return (f"trained in {done - began:.1f}s (prepare {fitting - began:.1f}, fit {thresholding - fitting:.1f}, "
            f"threshold {saving - thresholding:.1f}, save {done - saving:.1f}): {len(windows)} windows, "
            f"{fit.epochs} epochs, val loss {fit.val_loss:.4f}, threshold {threshold:.4f}")


def guarded_train(sensor_id: str, raw: pd.Series, labelled: pd.DatetimeIndex, settings: TrainingSettings,
                  threads: int) -> tuple[str, str]:
    """``train_sensor`` inside its error boundary, as run by a worker: (trained|skipped|failed, message)."""
    import model_trainer

    model_trainer.limit_threads(threads)
    try:
        outcome = train_sensor(sensor_id, raw, labelled, settings)
    except Exception:
        return "failed", traceback.format_exc().rstrip()
    return ("skipped" if outcome.startswith("skipped") else "trained"), outcome


def parallel(settings: TrainingSettings):
    """Where the sensors of a chunk train: in this process, in local worker processes, or on Dask."""
    import joblib

    if settings.dask_scheduler:
        # The Dask backend is registered on first use inside parallel_config; Parallel binds it when made.
        with joblib.parallel_config(backend="dask"):
            return joblib.Parallel(n_jobs=-1, return_as="generator")
    if settings.jobs == 1:
        return lambda tasks: (function(*args, **kwargs) for function, args, kwargs in tasks)
    return joblib.Parallel(n_jobs=settings.jobs, return_as="generator")


def run(settings: TrainingSettings, progress: logs.Progress) -> int:
    import joblib

    began = time.monotonic()
    counts = {"trained": 0, "skipped": 0, "failed": 0}
    # Each worker gets its share of the cores, so N workers do not oversubscribe them.
    threads = max(1, len(os.sched_getaffinity(0)) // settings.jobs)
    client = None
    if settings.dask_scheduler:
        from dask.distributed import Client

        client = Client(settings.dask_scheduler)
        logger.info("training on the Dask cluster at %s", settings.dask_scheduler)
    try:
        with Influx(settings.connection, settings.schema) as db:
            found = list(settings.sensors) or db.sensor_ids(settings.start, settings.stop)
            sensor_ids = [s for s in found if settings.in_shard(s, settings.shard)]
            logger.info("training %d sensors on %s .. %s, interval %s, %s", len(sensor_ids),
                        times.format_time(settings.start), times.format_time(settings.stop),
                        times.format_duration(settings.interval),
                        "on Dask" if client else f"{settings.jobs} jobs x {threads} threads")
            run_tasks = parallel(settings)
            for first in range(0, len(sensor_ids), settings.chunk_size):
                chunk = sensor_ids[first:first + settings.chunk_size]
                reading = time.monotonic()
                data = db.read_means(chunk, settings.start, settings.stop, settings.interval)
                labels = (db.labelled_intervals(chunk, settings.start, settings.stop, settings.interval)
                          if settings.schema.label_field else {})
                logger.info("read %d sensors (%d points) in %.1fs", len(chunk), sum(map(len, data.values())),
                            time.monotonic() - reading)
                no_data = pd.Series(dtype="float64", index=pd.DatetimeIndex([], tz="UTC"))
                tasks = (joblib.delayed(guarded_train)(s, data.get(s, no_data),
                                                       labels.get(s, pd.DatetimeIndex([], tz="UTC")), settings, threads)
                         for s in chunk)
                for sensor_id, (status, message) in zip(chunk, run_tasks(tasks)):
                    counts[status] += 1
                    if status == "failed":
                        logger.error("sensor %r: failed:\n%s", sensor_id, message)
                    else:
                        logger.info("sensor %r: %s", sensor_id, message)
                    progress.update(sum(counts.values()), len(sensor_ids), time.monotonic() - began)
            progress.close()
            status = 1 if counts["failed"] else 0
            duration = time.monotonic() - began
            db.record_run("sensor_training", socket.gethostname(), {
                "duration_s": round(duration, 3), "sensors_selected": len(sensor_ids),
                "sensors_done": counts["trained"], "sensors_skipped": counts["skipped"],
                "sensors_failed": counts["failed"], "exit_status": status,
            }, time.time_ns())
    finally:
        if client is not None:
            client.close()
    logger.info("done in %.1fs: %d trained, %d skipped, %d failed", duration, counts["trained"], counts["skipped"],
                counts["failed"])
    return status


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    progress = logs.configure(args.log_level, args.log_format)
    try:
        settings = settings_from_args(args)
    except ConfigError as e:
        logger.error("configuration: %s", e)
        return 2
    try:
        with artifacts.job_lock(settings.models_dir, "sensor_training"):
            return run(settings, progress)
    except artifacts.LockedError as e:
        logger.warning("%s", e)
        return artifacts.EXIT_LOCKED
    except InfluxError as e:
        logger.error("%s", e)
        return 1


if __name__ == "__main__":
    # Run as the importable module, so worker processes find guarded_train and the settings by name.
    import sensor_training

    sys.exit(sensor_training.main())
