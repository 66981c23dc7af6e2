"""sensor_predict.py's settings: its flags, parsed and checked once into PredictSettings."""

from __future__ import annotations

import argparse
import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import model_predict
from anomaly import cold_start, loss_memory, losses, rescore, settings, times
from anomaly.alerts import announce as alerts
from anomaly.settings import Common
from model_predict import Policy, Schedule


@dataclass(frozen=True)
class PredictSettings:
    common: Common
    schedule: Schedule
    policy: Policy
    engine: str
    dry_run: bool
    cold_start: cold_start.ColdStartSettings | None
    alerts: alerts.AlertSettings
    rescore_file: Path  # the ranges to score again (rescore.py)
    loss_memory_file: Path  # the losses a tick computed, for the next tick (loss_memory.py)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    job = parser.add_argument_group("scoring")
    job.add_argument("--start", help="backfill: score windows ending at or after this time (RFC3339 or -7d)")
    job.add_argument("--stop", help="backfill: score windows ending before this time (default now)")
    job.add_argument("--max-catchup", default="7d", help="never score further back than this (default 7d)")
    job.add_argument(
        "--delay",
        default="2m",
        help="score an interval only once it ended this long ago, so late readings count (default 2m)",
    )
    job.add_argument("--first-run", default="1d", help="how far back a sensor's first run scores (default 1d)")
    job.add_argument(
        "--min-consecutive",
        type=int,
        default=2,
        metavar="K",
        help="flag a window only when it and the K-1 before it all exceed the threshold (default 2)",
    )
    model_predict.add_rule_arguments(parser)
    job.add_argument(
        "--missing-after",
        help="report intervals of a sensor with no reading for longer than this (default --max-gap)",
    )
    job.add_argument(
        "--missing-is-anomaly",
        action="store_true",
        help="count those intervals as anomalies (anomaly=true, events, alerts); by default they are reported "
        "with kind missing and anomaly=false: an outage of the data is not a process anomaly",
    )
    job.add_argument(
        "--engine",
        choices=losses.ENGINES,
        default="numpy",
        help="numpy: fast forward pass from exported weights (default); keras: load each Keras model",
    )
    job.add_argument(
        "--dry-run", action="store_true", help="print the line protocol that would be written; write nothing"
    )
    cold_start.add_arguments(parser)
    alerts.add_arguments(parser)


def schedule_from_args(args: argparse.Namespace, common: Common) -> Schedule:
    now, interval = common.now, common.interval
    start = times.parse_time(args.start, now, "--start").floor(interval) if args.start else None
    stop = times.parse_time(args.stop, now, "--stop").floor(interval) if args.stop else None
    if stop is not None and start is None:
        raise settings.ConfigError("--stop needs --start: together they name the range to backfill")
    if start is not None and start >= (stop or now.floor(interval)):
        raise settings.ConfigError(f"--start {args.start} must be before --stop ({args.stop or 'now'})")
    return Schedule(
        interval=interval,
        now=now,
        start=start,
        stop=stop,
        delay=times.parse_duration(args.delay, "--delay", allow_zero=True),
        first_run=times.parse_duration(args.first_run, "--first-run"),
        max_catchup=times.parse_duration(args.max_catchup, "--max-catchup"),
    )


def settings_from_args(args: argparse.Namespace) -> PredictSettings:
    common = settings.common_from_args(args)
    interval = common.interval
    alert_settings = alerts.settings_from_args(args, common, settings.state_dir(os.environ))
    return PredictSettings(
        common=common,
        schedule=schedule_from_args(args, common),
        policy=dataclasses.replace(
            model_predict.rule_policy(args, interval),
            min_consecutive=settings.positive_int("--min-consecutive", args.min_consecutive),
            missing_limit=int(times.parse_duration(args.missing_after or args.max_gap, "--missing-after") / interval),
            missing_is_anomaly=args.missing_is_anomaly,
        ),
        engine=args.engine,
        dry_run=args.dry_run,
        cold_start=cold_start.settings_from_args(args),
        alerts=alert_settings,
        rescore_file=rescore.beside(alert_settings.state_file),
        loss_memory_file=loss_memory.beside(alert_settings.state_file),
    )
