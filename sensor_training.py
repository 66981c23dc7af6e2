#!/usr/bin/env python3
"""Monthly job: fit one LSTM autoencoder per sensor from its InfluxDB history and save it.

Exit status: 0 when every selected sensor trained or was deliberately skipped, 1 when any failed
or the database could not be used, 2 for bad configuration, 75 when another training run for the
same models directory is still going (this one does nothing).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from anomaly import files, logs, pack_build, runner, settings, times
from anomaly.errors import ConfigError
from anomaly.settings import Common
from influx_interact import Database
from model_trainer import Plan

logger = logging.getLogger("sensor_training")


@dataclass(frozen=True)
class TrainingSettings:
    common: Common
    plan: Plan
    jobs: int
    dask_scheduler: str | None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    train = parser.add_argument_group("training")
    train.add_argument(
        "--start", default="-90d", help="start of the training range: RFC3339 or relative (default -90d)"
    )
    train.add_argument("--stop", default="now", help="end of the training range (default now)")
    train.add_argument("--label-field", help="boolean field marking manual anomalies; their intervals are left out")
    train.add_argument("--units", type=int, default=32, help="LSTM units in encoder and decoder (default 32)")
    train.add_argument("--dropout", type=float, default=0.1, help="input dropout of both LSTMs (default 0.1)")
    train.add_argument("--epochs", type=int, default=50, help="maximum epochs (default 50)")
    train.add_argument("--batch-size", type=int, default=64, help="windows per batch (default 64)")
    train.add_argument(
        "--validation-split",
        type=float,
        default=0.1,
        help="share of the newest windows held out for early stopping (default 0.1)",
    )
    train.add_argument("--patience", type=int, default=5, help="epochs without improvement before stopping (default 5)")
    train.add_argument(
        "--percentile",
        type=float,
        default=99.5,
        help="percentile of the fitted windows' losses: the threshold, or with --alarm-budget its floor (of the "
        "smoothed values it is calibrated on) (default 99.5)",
    )
    train.add_argument(
        "--alarm-budget",
        type=float,
        default=0.5,
        metavar="RUNS_PER_WEEK",
        help="raise the threshold until the held-out newest windows would give at most this many alarm runs a "
        "week (default 0.5); 0: the --percentile alone, fitted on every window",
    )
    train.add_argument(
        "--min-consecutive",
        type=int,
        default=2,
        metavar="K",
        help="the scorer's --min-consecutive the threshold is calibrated for: an alarm run is K held-out windows "
        "in a row whose smoothed loss is above it, as sensor_predict.py flags (default 2, the scorer's)",
    )
    train.add_argument(
        "--calibration-split",
        type=float,
        default=0.2,
        help="share of the newest windows held out of fitting to calibrate the threshold (default 0.2)",
    )
    train.add_argument(
        "--min-windows",
        type=int,
        default=200,
        help="skip sensors with fewer windows without gaps than this (default 200)",
    )
    train.add_argument(
        "--jobs",
        type=int,
        default=len(os.sched_getaffinity(0)),
        help="sensors trained in parallel, each in its own process (default: one per core)",
    )
    train.add_argument(
        "--dask-scheduler",
        metavar="ADDRESS",
        help="train on this Dask cluster (tcp://host:8786) instead; --models-dir must be a path every worker sees",
    )
    train.add_argument("--seed", type=int, help="make the run reproducible: same data, same thresholds")


def settings_from_args(args: argparse.Namespace) -> TrainingSettings:
    common = settings.common_from_args(args, label_field=args.label_field)
    start, stop = times.parse_range(args.start, args.stop, common.now, common.interval)
    if not 0 < args.percentile <= 100:
        raise ConfigError(f"--percentile: {args.percentile} must be in (0, 100]")
    if not 0 <= args.dropout < 1:
        raise ConfigError(f"--dropout: {args.dropout} must be in [0, 1)")
    if not 0 <= args.alarm_budget < float("inf"):
        raise ConfigError(f"--alarm-budget: {args.alarm_budget} must be a number of alarm runs a week >= 0")
    if not 0 < args.calibration_split < 0.5:
        raise ConfigError(f"--calibration-split: {args.calibration_split} must be in (0, 0.5)")
    if not 0 < args.validation_split < 0.5:
        raise ConfigError(f"--validation-split: {args.validation_split} must be in (0, 0.5)")
    positive = settings.positive_int
    return TrainingSettings(
        common=common,
        plan=Plan(
            start=start,
            stop=stop,
            interval=common.interval,
            max_gap=common.max_gap,
            units=positive("--units", args.units),
            dropout=args.dropout,
            epochs=positive("--epochs", args.epochs),
            batch_size=positive("--batch-size", args.batch_size),
            validation_split=args.validation_split,
            patience=positive("--patience", args.patience),
            percentile=args.percentile,
            min_windows=positive("--min-windows", args.min_windows),
            seed=args.seed,
            alarm_budget=args.alarm_budget,
            calibration_split=args.calibration_split,
            min_consecutive=positive("--min-consecutive", args.min_consecutive),
        ),
        jobs=positive("--jobs", args.jobs),
        dask_scheduler=args.dask_scheduler,
    )


def guarded_train(
    sensor_id: str, raw: pd.Series, labelled: pd.DatetimeIndex, window: int, plan: Plan, models_dir: Path, threads: int
) -> tuple[str, str]:
    """``model_trainer.train_sensor`` inside its error boundary, as run by a worker: (status, message)."""
    import model_trainer

    model_trainer.limit_threads(threads)
    try:
        outcome = model_trainer.train_sensor(sensor_id, raw, labelled, window, plan, models_dir)
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


def train_chunk(db: Database, chunk: list[str], settings: TrainingSettings, threads: int, run_tasks):
    """Read one chunk's history and labels in one query each; yield (sensor id, status, message) as they end."""
    import joblib

    common, plan = settings.common, settings.plan
    reading = time.monotonic()
    data = db.read_means(chunk, plan.start, plan.stop, plan.interval)
    labels = db.labelled_intervals(chunk, plan.start, plan.stop, plan.interval) if common.schema.label_field else {}
    logger.info(
        "read %d sensors (%d points) in %.1fs", len(chunk), sum(map(len, data.values())), time.monotonic() - reading
    )
    none = pd.DatetimeIndex([], tz="UTC")
    tasks = (
        joblib.delayed(guarded_train)(
            s,
            data.get(s, pd.Series(dtype="float64", index=none)),
            labels.get(s, none),
            common.sensor_config.window(s),
            plan,
            common.models_dir,
            threads,
        )
        for s in chunk
    )
    for sensor_id, (status, message) in zip(chunk, run_tasks(tasks)):
        yield sensor_id, status, message


def repack(models_dir: Path) -> bool:
    """Rebuild the packed model store the scorer reads (anomaly/pack.py) from every model in ``models_dir``.
    A failure is logged, not fatal: the scorer then loads the models it lacks from their own files."""
    began = time.monotonic()
    try:
        packed = pack_build.rebuild(models_dir)
    except OSError as e:
        logger.error(
            "could not rebuild the packed model store in %s (%s); scoring loads the models trained since the last "
            "rebuild from their own files, more slowly, until a training run rebuilds it",
            models_dir,
            e,
        )
        return False
    logger.info(
        "packed %d models (%s) in %.1fs",
        sum(packed.values()),
        ", ".join(f"window {w}, {u} units: {n}" for (w, u), n in sorted(packed.items())) or "none",
        time.monotonic() - began,
    )
    return True


def run(settings: TrainingSettings, db: Database) -> runner.Outcome:
    began = time.monotonic()
    common, plan = settings.common, settings.plan
    files.check_writable(common.models_dir, "--models-dir")
    counts = {"trained": 0, "skipped": 0, "failed": 0}
    # Each worker gets its share of the cores, so N workers do not oversubscribe them.
    threads = max(1, len(os.sched_getaffinity(0)) // settings.jobs)
    client = None
    if settings.dask_scheduler:
        from dask.distributed import Client

        client = Client(settings.dask_scheduler)
        logger.info("training on the Dask cluster at %s", settings.dask_scheduler)
    try:
        sensor_ids = runner.sensors_to_process(common, db, plan.start, plan.stop)
        logger.info(
            "training %d sensors on %s .. %s, interval %s, %s",
            len(sensor_ids),
            times.format_time(plan.start),
            times.format_time(plan.stop),
            times.format_duration(plan.interval),
            "on Dask" if client else f"{settings.jobs} jobs x {threads} threads",
        )
        run_tasks = parallel(settings)
        packed = False
        with logs.progress(len(sensor_ids)) as bar:
            for first in range(0, len(sensor_ids), common.chunk_size):
                trained = counts["trained"]
                for sensor_id, status, message in train_chunk(
                    db, sensor_ids[first : first + common.chunk_size], settings, threads, run_tasks
                ):
                    counts[status] += 1
                    if status == "failed":
                        logger.error("sensor %r: failed:\n%s", sensor_id, message)
                    else:
                        logger.info("sensor %r: %s", sensor_id, message)
                    bar.update()
                if counts["trained"] > trained:
                    packed = repack(common.models_dir)
        if not packed:
            # Nothing trained, or the last rebuild failed: a pack may still be missing (models older than packs).
            repack(common.models_dir)
    finally:
        if client is not None:
            client.close()
    status = 1 if counts["failed"] else 0
    logger.info(
        "done in %.1fs: %d trained, %d skipped, %d failed",
        time.monotonic() - began,
        counts["trained"],
        counts["skipped"],
        counts["failed"],
    )
    return runner.Outcome(
        status,
        {
            "sensors_selected": len(sensor_ids),
            "sensors_done": counts["trained"],
            "sensors_skipped": counts["skipped"],
            "sensors_failed": counts["failed"],
        },
    )


JOB = runner.Job("sensor_training", __doc__, add_arguments, settings_from_args, run, lock=True)

if __name__ == "__main__":
    # Run as the importable module, so worker processes find guarded_train and the settings by name.
    import sensor_training

    sys.exit(runner.main(sensor_training.JOB))
