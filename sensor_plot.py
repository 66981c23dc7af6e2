#!/usr/bin/env python3
"""Draw a PNG of a sensor's recent readings, flags and scores, for people who would rather look than read.

Each picture has two panels on one time axis (UTC). Top: the mean reading per --interval, a red point at the
end of every flagged window (the reading the scorer saw there) and a red band over every event (flagged
windows that share a reading, as sensor_predict.py joins them; the window is the sensor's in --windows).
Bottom: the score of every scored window, its loss divided by the threshold it was compared with (the
model's threshold times the sensor's ratio at scoring time), with a dashed line at 1.0, the threshold; 2.0
is twice the threshold on every sensor alike. On a log scale when the score spans two decades or more.
Points written before sensor_predict.py wrote the score field get it from their loss and threshold. A
window's score belongs to its last interval, so a band starts at the first bad reading and runs on for up to
one window after the last.

One PNG per --sensor. --output is a file when it ends in .png (one sensor only), else a directory,
created if missing, where each picture is named like the sensor's model directory:
<readable id>-<hash>.png. The default is the current directory.

A sensor with readings but no scores in the range is still drawn, with a note in the score panel saying
why (no model in --models-dir yet, or not scored in this range) and a warning line; that counts as drawn.
A sensor with neither readings nor scores in the range gets no picture and an error line.

Exit status: 0 when every sensor was drawn, 1 when any had nothing to draw or failed, or the database
could not be used, 2 for bad configuration. --ratios, --windows and --health-measurement are accepted
like the jobs' and not used: the scores drawn are the ones stored (or made of the stored loss and
threshold), and nothing is written.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import pandas as pd

from anomaly import plot, review, runner, settings, store, times
from anomaly.errors import EXIT_FAILED, EXIT_OK, ConfigError
from anomaly.settings import Common
from influx_interact import Database

logger = logging.getLogger("sensor_plot")


@dataclass(frozen=True)
class PlotSettings:
    common: Common
    start: pd.Timestamp
    stop: pd.Timestamp
    outputs: Mapping[str, Path]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # The jobs default to every sensor found; a picture is asked for by name.
    for action in parser._actions:
        if action.dest == "sensor":
            action.required = True
            action.help = "sensor id to draw, repeatable: one PNG each (required)"
    group = parser.add_argument_group("picture")
    group.add_argument("--start", default="-7d", help="start of the range: RFC3339 or relative (default -7d)")
    group.add_argument("--stop", default="now", help="end of the range: RFC3339, relative or now (default now)")
    group.add_argument(
        "--output",
        type=Path,
        default=Path("."),
        help="a .png file (one sensor) or a directory (default: the current directory)",
    )


def output_paths(output: Path, sensor_ids: Sequence[str]) -> dict[str, Path]:
    """Where each sensor's picture goes: ``output`` itself when it ends in .png, else a file inside it."""
    if output.suffix.lower() == ".png":
        if len(sensor_ids) > 1:
            raise ConfigError(
                f"--output {output} names one file but {len(sensor_ids)} sensors were given; "
                f"name a directory to get one PNG per sensor"
            )
        return {sensor_ids[0]: output}
    return {s: output / (store.sensor_dir(Path(), s).name + ".png") for s in sensor_ids}


def settings_from_args(args: argparse.Namespace) -> PlotSettings:
    common = review.distinct_sensors(settings.common_from_args(args))
    start = times.parse_time(args.start, common.now, "--start").floor(common.interval)
    stop = times.parse_time(args.stop, common.now, "--stop")
    if start >= stop:
        raise ConfigError(f"--start {args.start} must be before --stop {args.stop}")
    if args.shard:
        raise ConfigError("--shard: sensor_plot.py draws the sensors named with --sensor; leave --shard out")
    return PlotSettings(
        common=common, start=start, stop=stop, outputs=MappingProxyType(output_paths(args.output, common.sensors))
    )


def no_scores_reason(has_model: bool, models_dir: Path) -> str:
    if not has_model:
        return f"no model in {models_dir} (--models-dir): run sensor_training.py, then sensor_predict.py"
    return "it has a model: sensor_predict.py has not scored this range (widen --start/--stop, or run it)"


def plot_sensor(sensor_id: str, raw: pd.Series | None, frame: pd.DataFrame | None, settings: PlotSettings) -> bool:
    """Draw and save one sensor's picture; False (logged) when there is nothing to draw."""
    common = settings.common
    field, schema = common.schema.field, common.schema
    scores = plot.scores_with_score(frame, field)
    readings = plot.readings_line(
        raw if raw is not None else review.no_readings(),
        common.interval,
        settings.start,
        settings.stop,
        common.max_gap_points,
    )
    range_text = f"{times.format_time(settings.start)} .. {times.format_time(settings.stop)}"
    if scores.empty and not readings.notna().any():
        logger.error(
            "sensor %r: nothing to draw: no readings in %r and no scores in %r in %s; check the id "
            "(tag %r) and the range",
            sensor_id,
            schema.measurement,
            schema.output_measurement,
            range_text,
            schema.sensor_tag,
        )
        return False
    reason = None
    if scores.empty:
        has_model = (store.sensor_dir(common.models_dir, sensor_id) / store.METADATA).exists()
        reason = no_scores_reason(has_model, common.models_dir)
        logger.warning("sensor %r: no scores in %s: %s", sensor_id, range_text, reason)
    window = common.sensor_config.window(sensor_id)
    fig = plot.draw(
        sensor_id,
        readings,
        scores,
        field=field,
        interval=common.interval,
        start=settings.start,
        stop=settings.stop,
        window=window,
        no_scores=reason,
    )
    path = settings.outputs[sensor_id]
    plot.save_png(fig, path)
    events = len(plot.flag_spans(scores["anomaly"], common.interval, window))
    logger.info(
        "sensor %r: wrote %s: %d windows scored, %d flagged in %d event%s",
        sensor_id,
        path,
        len(scores),
        int(scores["anomaly"].sum()),
        events,
        "" if events == 1 else "s",
    )
    return True


def run(settings: PlotSettings, db: Database) -> runner.Outcome:
    began = time.monotonic()
    common = settings.common
    drawn = failed = 0
    for chunk in review.chunks(common.sensors, common.chunk_size):
        means = db.read_means(chunk, settings.start, settings.stop, common.interval)
        scores = db.read_scores(chunk, settings.start, settings.stop)
        for sensor_id in chunk:
            try:
                ok = plot_sensor(sensor_id, means.get(sensor_id), scores.get(sensor_id), settings)
            except Exception:
                logger.exception("sensor %r: failed", sensor_id)
                ok = False
            drawn += ok
            failed += not ok
    logger.info("done in %.1fs: %d drawn, %d not", time.monotonic() - began, drawn, failed)
    return runner.Outcome(EXIT_FAILED if failed else EXIT_OK)


JOB = runner.Job("sensor_plot", __doc__, add_arguments, settings_from_args, run)

if __name__ == "__main__":
    sys.exit(runner.main(JOB))
