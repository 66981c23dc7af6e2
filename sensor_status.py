#!/usr/bin/env python3
"""Status of the fleet: per sensor its model, configuration, data freshness, scores, anomalies and missing data.

One row per sensor: every sensor with a model in --models-dir, and every sensor found in InfluxDB
without one (with --where, only sensors found under that filter; with --sensor, exactly those); then a
fleet summary. --json prints the same as one JSON document for machines. It reads
the models directory and InfluxDB, and changes neither.

Beside the model's threshold, "alarms" (alarms_per_week in the JSON) is the false-alarm runs a week that
threshold (at ratio 1) was calibrated to give on the newest part of its training range, held out of
fitting ("-": a model trained without calibration). "24h" and "7d" count the windows flagged as
anomalies; "missing" (missing_24h and missing_7d) the intervals the scorer reported missing in the last
24 hours and 7 days (kind missing: no reading for longer than it allows), a data-quality fact that is not
an anomaly unless sensor_predict.py ran with --missing-is-anomaly. The summary names the sensors with
missing data in the last 24 hours.

Each sensor gets one status word, the first that applies:

    damaged model        metadata.json unreadable, of another format, without a field the scorer needs,
                         naming missing files or another sensor; or weights the scorer refuses (checksum
                         mismatch, truncated, inconsistent shapes): every scoring run fails this sensor
    no model             the scorer skips it until it is trained
    window changed       time_step_sizes.json (or --interval) now wants another window than the model's:
                         the scorer skips it until it is retrained
    stale data           no reading newer than --stale-after
    not scored recently  no score newer than --unscored-after
    ok

Exit status: 0 when the status was printed, whatever it says; 1 when the database or the models
directory could not be read; 2 for bad configuration.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

import model_predict
from anomaly import runner, settings, status, status_models, table, times
from anomaly.errors import EXIT_FAILED, EXIT_OK, ConfigError
from anomaly.metadata import ModelMetadata
from anomaly.settings import Common
from influx_interact import Database

logger = logging.getLogger("sensor_status")


@dataclass(frozen=True)
class StatusSettings:
    common: Common
    lookback: pd.Timedelta
    limits: status.Limits
    json: bool


def add_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("status")
    group.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    group.add_argument(
        "--lookback", default="7d", help="how far back to look for each sensor's newest reading and score (default 7d)"
    )
    group.add_argument(
        "--stale-after",
        help="data older than this is stale (default: --max-gap, past which the scorer can build no window)",
    )
    group.add_argument(
        "--unscored-after",
        help="a newest score older than this is not recent (default: 4 intervals, 1h at 15m; "
        "the scorer runs behind by up to two intervals, its --delay and its schedule)",
    )
    group.add_argument(
        "--old-model-after",
        default="35d",
        help="models trained longer ago than this are counted as old (default 35d: monthly training and a few days)",
    )


def settings_from_args(args: argparse.Namespace) -> StatusSettings:
    common = settings.common_from_args(args)
    lookback = times.parse_duration(args.lookback, "--lookback")
    limits = status.Limits(
        stale_after=(times.parse_duration(args.stale_after, "--stale-after") if args.stale_after else common.max_gap),
        unscored_after=(
            times.parse_duration(args.unscored_after, "--unscored-after")
            if args.unscored_after
            else 4 * common.interval
        ),
        old_model_after=times.parse_duration(args.old_model_after, "--old-model-after"),
    )
    if lookback < max(limits.stale_after, limits.unscored_after):
        raise ConfigError(
            f"--lookback {args.lookback} must be at least --stale-after "
            f"({status.duration(limits.stale_after)}) and --unscored-after "
            f"({status.duration(limits.unscored_after)})"
        )
    return StatusSettings(common=common, lookback=lookback, limits=limits, json=args.json)


def scorer_metadata(directory: Path) -> ModelMetadata:
    """A model's metadata, once loaded and verified as sensor_predict.py loads it with its default engine
    (numpy): the .keras file, which only --engine keras reads, is not opened, since that needs TensorFlow."""
    return model_predict.load_sensor_model(directory).metadata


def run(settings: StatusSettings, db: Database) -> runner.Outcome:
    began = time.monotonic()
    common = settings.common
    if not common.models_dir.exists():
        logger.warning("models directory %s does not exist: no sensor has a model", common.models_dir)
    try:
        models = status_models.read_models(common.models_dir, scorer_metadata)
    except OSError as e:
        logger.error("cannot read the models directory %s: %s", common.models_dir, e)
        return runner.Outcome(EXIT_FAILED)
    # This shard's sensors found (or --sensor's), with the unknown keys of the per-sensor files warned about as in
    # every job; select_sensors adds the models and applies --sensor and the shard itself.
    found = runner.sensors_to_process(common, db, common.now - settings.lookback, common.now)
    selected = status.select_sensors(models, found, common.sensors, common.shard, only_found=bool(common.schema.where))
    newest = status.newest(
        db, [s for s, _ in selected if s is not None], common.now, settings.lookback, common.chunk_size
    )
    rows = status.build_rows(selected, common.sensor_config, common.interval, common.now, settings.limits, newest)
    summary = status.summarize(rows, common.now, settings.limits, settings.lookback)
    if settings.json:
        sys.stdout.write(status.render_json(rows, summary))
    else:
        sys.stdout.write(
            table.render_table(rows, common.now, settings.lookback) + "\n" + table.render_summary(rows, summary)
        )
    logger.info("done in %.1fs: %d sensors, %d ok", time.monotonic() - began, len(rows), summary["status"][status.OK])
    return runner.Outcome(EXIT_OK)


JOB = runner.Job("sensor_status", __doc__, add_arguments, settings_from_args, run)

if __name__ == "__main__":
    sys.exit(runner.main(JOB))
