#!/usr/bin/env python3
"""Evaluation report: how well the stored flags match people's labels, per sensor and for the fleet.

For a time range (--start/--stop, default the last 7 days), it reads what sensor_predict.py wrote
(the ``anomaly`` of each scored window in --output-measurement) and the labels, either from CSV exports
(--labels-csv, shaped as anomaly/labels.py describes) or from the boolean --label-field (default manual_anomaly)
on the readings, and computes the metrics of anomaly/evaluation.py with the window of each sensor's model.
It writes to --output (a directory, made if missing):

    summary.md   a Markdown table, one row per sensor and a fleet row (counts summed, rates recomputed)
    summary.csv  the same, with every metric
    <sensor>.png per sensor: readings with flagged windows and labelled events shaded; loss and the
                 threshold it was compared with (named like the sensor's model directory)

Labels are read from (window-1) intervals before --start, so an event that began just before the range
is still seen by the windows at its start. A sensor with no labels gets NaN metrics and a note; a sensor
with no model is evaluated with the window of time_step_sizes.json, with a note.

Exit status: 0 when the report was written, 1 when the database failed or a sensor could not be
evaluated, 2 for bad configuration (including a malformed label file).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from anomaly import files, labels, plot, report, review, runner, settings, store, times
from anomaly.errors import EXIT_FAILED, EXIT_OK
from anomaly.settings import Common
from influx_interact import Database

logger = logging.getLogger("sensor_evaluate")


@dataclass(frozen=True)
class EvaluateSettings:
    common: Common
    start: pd.Timestamp
    stop: pd.Timestamp
    labels: Mapping[str, pd.DatetimeIndex] | None  # from --labels-csv; None: from InfluxDB
    output: Path
    plots: bool = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    labels.add_arguments(parser)
    group = parser.add_argument_group("report")
    group.add_argument("--start", default="-7d", help="start of the range: RFC3339 or relative (default -7d)")
    group.add_argument("--stop", default="now", help="end of the range: RFC3339, relative or now (default now)")
    group.add_argument(
        "--output",
        type=Path,
        default=Path("evaluation"),
        help="directory for summary.md, summary.csv and the PNGs (default ./evaluation)",
    )
    group.add_argument("--no-plots", action="store_true", help="write the summaries only")


def settings_from_args(args: argparse.Namespace) -> EvaluateSettings:
    common = review.distinct_sensors(settings.common_from_args(args, label_field=labels.field_from_args(args)))
    start, stop = times.parse_range(args.start, args.stop, common.now, common.interval)
    return EvaluateSettings(
        common=common,
        start=start,
        stop=stop,
        labels=labels.from_files(args.labels_csv, common.interval),
        output=args.output,
        plots=not args.no_plots,
    )


def evaluate_chunk(
    db: Database, chunk: Sequence[str], settings: EvaluateSettings
) -> Iterator[report.SensorResult | None]:
    """One query each for a chunk's labels, scores and readings; each sensor's result and picture inside its
    own error boundary. Yields each sensor's result, None for a sensor that failed."""
    common, start, stop = settings.common, settings.start, settings.stop
    interval = common.interval
    facts = {s: review.model_facts(common.models_dir, s, common.sensor_config, interval) for s in chunk}
    label_start = start - (max(f.window for f in facts.values()) - 1) * interval
    marked = labels.read(db, chunk, label_start, stop, interval, common.chunk_size, settings.labels)
    frames = db.read_scores(chunk, start, stop)
    means = db.read_means(chunk, start, stop, interval) if settings.plots else {}
    for sensor_id in chunk:
        try:
            scores = review.normalize_scores(frames.get(sensor_id), common.schema.field)
            result = report.evaluate_sensor(
                sensor_id, scores, marked.get(sensor_id), facts[sensor_id], start, stop, interval
            )
            if settings.plots:
                readings = plot.readings_line(
                    means.get(sensor_id, review.no_readings()), interval, start, stop, common.max_gap_points
                )
                fig = report.draw_sensor(
                    result,
                    readings,
                    scores,
                    marked.get(sensor_id),
                    field=common.schema.field,
                    interval=interval,
                    start=start,
                    stop=stop,
                )
                plot.save_png(fig, settings.output / (store.sensor_dir(Path(), sensor_id).name + ".png"))
        except Exception:
            logger.exception("sensor %r: failed", sensor_id)
            yield None
            continue
        logger.info("sensor %r: %s", sensor_id, report.result_line(result))
        yield result


def run(settings: EvaluateSettings, db: Database) -> runner.Outcome:
    began = time.monotonic()
    common = settings.common
    sensor_ids = runner.sensors_to_process(common, db, settings.start, settings.stop)
    found = [r for chunk in review.chunks(sensor_ids, common.chunk_size) for r in evaluate_chunk(db, chunk, settings)]
    results = [r for r in found if r is not None]
    failed = len(found) - len(results)
    rows = report.summary_rows(results)
    settings.output.mkdir(parents=True, exist_ok=True)
    files.write_atomic(settings.output / "summary.md", report.render_markdown(rows, settings.start, settings.stop))
    files.write_atomic(settings.output / "summary.csv", report.render_csv(rows))
    fleet = rows[-1]
    logger.info(
        "done in %.1fs: %d sensors evaluated, %d failed; fleet: %d of %d events detected, %d false alarms; "
        "report in %s",
        time.monotonic() - began,
        len(results),
        failed,
        fleet["events_detected"],
        fleet["events"],
        fleet["false_alarms"],
        settings.output,
    )
    return runner.Outcome(EXIT_FAILED if failed else EXIT_OK)


JOB = runner.Job("sensor_evaluate", __doc__, add_arguments, settings_from_args, run)

if __name__ == "__main__":
    sys.exit(runner.main(JOB))
