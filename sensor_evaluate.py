#!/usr/bin/env python3
"""Evaluation report: how well the stored flags match people's labels, per sensor and for the fleet.

For a time range (--start/--stop, default the last 7 days), it reads what sensor_predict.py wrote
(the ``anomaly`` of each scored window in --output-measurement) and the labels, either from CSV exports
(--labels-csv, shaped as labels.py describes) or from the boolean --label-field (default manual_anomaly)
on the readings, and computes the metrics of evaluation.py with the window of each sensor's model.
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
import csv
import io
import logging
import math
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import MappingProxyType

import pandas as pd

import artifacts
from anomaly import logs, settings, times
import evaluation
import labels as label_io
from anomaly.errors import ConfigError
from anomaly.settings import Connection, Schema, SensorConfig
from influx_interact import Influx, InfluxError

logger = logging.getLogger("sensor_evaluate")

LABEL_COLOR = "#e69f00"
UNLABELLED_KEPT = ("windows", "flagged_windows", "flag_runs", "weeks")
MARKDOWN_COLUMNS = (  # (header, Metrics field or key, format)
    ("sensor", "sensor", "{}"), ("window", "window", "{}"), ("windows", "windows", "{}"),
    ("events", "events", "{}"), ("detected", "events_detected", "{}"), ("event recall", "event_recall", "{:.2f}"),
    ("event precision", "event_precision", "{:.2f}"), ("event F1", "event_f1", "{:.2f}"),
    ("precision", "precision", "{:.2f}"), ("recall", "recall", "{:.2f}"), ("F1", "f1", "{:.2f}"),
    ("mean delay (min)", "mean_delay_min", "{:.0f}"), ("max delay (min)", "max_delay_min", "{:.0f}"),
    ("false alarms", "false_alarms", "{}"), ("false alarms / week", "false_alarms_per_week", "{:.1f}"),
    ("note", "note", "{}"),
)


@dataclass(frozen=True)
class EvaluateSettings:
    connection: Connection
    schema: Schema
    sensors: tuple[str, ...]
    shard: tuple[int, int] | None
    sensor_config: SensorConfig
    interval: pd.Timedelta
    max_gap: pd.Timedelta
    models_dir: Path
    chunk_size: int
    start: pd.Timestamp
    stop: pd.Timestamp
    labels_csv: tuple[Path, ...]
    output: Path
    plots: bool = True


@dataclass(frozen=True)
class ModelFacts:
    """What evaluation needs of a sensor's model; ``window`` falls back to the configuration without one."""

    window: int
    threshold: float | None
    note: str = ""


@dataclass(frozen=True)
class SensorResult:
    sensor_id: str
    window: int
    metrics: evaluation.Metrics
    notes: tuple[str, ...] = field(default=())


def add_label_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("labels")
    group.add_argument("--labels-csv", nargs="+", action="extend", default=[], type=Path, metavar="FILE",
                       help="CSV exports with columns Datetime (UTC), Value, ID, Anomaly (TRUE/FALSE); "
                            "default: the --label-field in InfluxDB")
    group.add_argument("--label-field", default="manual_anomaly",
                       help="boolean field on the readings marking labelled points (default manual_anomaly)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    settings.add_common_arguments(parser)
    add_label_arguments(parser)
    report = parser.add_argument_group("report")
    report.add_argument("--start", default="-7d", help="start of the range: RFC3339 or relative (default -7d)")
    report.add_argument("--stop", default="now", help="end of the range: RFC3339, relative or now (default now)")
    report.add_argument("--output", type=Path, default=Path("evaluation"),
                        help="directory for summary.md, summary.csv and the PNGs (default ./evaluation)")
    report.add_argument("--no-plots", action="store_true", help="write the summaries only")
    report.add_argument("--now", help="take this RFC3339 time as the current time (replays and tests)")
    return parser


def label_field(args: argparse.Namespace) -> str | None:
    if args.labels_csv:
        return None
    if not args.label_field or "\n" in args.label_field:
        raise ConfigError(f"--label-field: {args.label_field!r} must be a non-empty single-line name")
    return args.label_field


def settings_from_args(args: argparse.Namespace) -> EvaluateSettings:
    now = times.current_time(args.now)
    interval = times.parse_duration(args.interval, "--interval")
    start, stop = times.parse_range(args.start, args.stop, now, interval)
    return EvaluateSettings(
        connection=settings.connection_from_args(args),
        schema=settings.schema_from_args(args, label_field=label_field(args)),
        sensors=tuple(dict.fromkeys(args.sensor)),
        shard=settings.parse_shard(args.shard),
        sensor_config=settings.load_sensor_config(args.ratios, args.windows),
        interval=interval,
        max_gap=times.parse_duration(args.max_gap, "--max-gap"),
        models_dir=args.models_dir,
        chunk_size=settings.positive_int("--chunk-size", args.chunk_size),
        start=start,
        stop=stop,
        labels_csv=tuple(args.labels_csv),
        output=args.output,
        plots=not args.no_plots,
    )


# ---------------------------------------------------------------- shared with sensor_tune.py


def model_facts(models_dir: Path, sensor_id: str, sensor_config: SensorConfig, interval: pd.Timedelta) -> ModelFacts:
    """The model's window and saved threshold; without a usable model, the configured window and no threshold."""
    try:
        metadata = artifacts.load_metadata(artifacts.sensor_dir(models_dir, sensor_id), verify=())
        window, threshold, interval_s = metadata["window"], float(metadata["threshold"]), metadata["interval_s"]
    except (artifacts.ArtifactError, KeyError, TypeError, ValueError) as e:
        return ModelFacts(sensor_config.window(sensor_id), None,
                          f"no usable model ({str(e)[:80]}): window from time_step_sizes.json")
    if interval_s != interval.total_seconds():
        return ModelFacts(window, threshold, f"model interval {interval_s}s differs from --interval")
    return ModelFacts(int(window), threshold)


def labels_of_files(paths: Sequence[Path], interval: pd.Timedelta) -> Mapping[str, pd.DatetimeIndex] | None:
    """Labels of --labels-csv files, read once at start-up; None when labels come from InfluxDB."""
    return MappingProxyType(label_io.labels_from_csv(paths, interval)) if paths else None


def read_labels(db: Influx, sensor_ids: Sequence[str], start: pd.Timestamp, stop: pd.Timestamp,
                interval: pd.Timedelta, chunk_size: int,
                csv_labels: Mapping[str, pd.DatetimeIndex] | None) -> dict[str, pd.DatetimeIndex]:
    """Labelled interval starts of the sensors that have labels: from the CSV files when given, else InfluxDB."""
    if csv_labels is not None:
        return {s: csv_labels[s] for s in sensor_ids if s in csv_labels}
    return label_io.labels_from_influx(db, sensor_ids, start, stop, interval, chunk_size)


def select_sensors(db: Influx, requested: Sequence[str], shard: tuple[int, int] | None, start: pd.Timestamp,
                   stop: pd.Timestamp) -> list[str]:
    found = list(requested) or db.sensor_ids(start, stop)
    return [s for s in found if settings.in_shard(s, shard)]


# ---------------------------------------------------------------- pure shaping


def evaluate_sensor(sensor_id: str, scores: pd.DataFrame, labelled: pd.DatetimeIndex | None, facts: ModelFacts,
                    start: pd.Timestamp, stop: pd.Timestamp, interval: pd.Timedelta) -> SensorResult:
    """Metrics of one sensor's stored flags (``scores``: normalized frame by window end) against its labels
    (None: the sensor has none; all metrics then come from an empty label series, with a note)."""
    notes = [facts.note] if facts.note else []
    label_start = start - (facts.window - 1) * interval
    grid = evaluation.labels_on_grid(labelled if labelled is not None else [], label_start, stop, interval)
    if labelled is None:
        notes.append("no labels")
    if scores.empty:
        notes.append("no scores in range")
    metrics = evaluation.evaluate(scores["anomaly"], grid, facts.window, interval)
    if labelled is None:
        # Without labels only the counts of what was scored and flagged mean anything.
        nan = {name: math.nan for name in evaluation.METRIC_NAMES if name not in UNLABELLED_KEPT}
        metrics = evaluation.Metrics(**dict(asdict(metrics), **nan))
    return SensorResult(sensor_id, facts.window, metrics, tuple(notes))


def _cell(value: object, fmt: str) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "–"
    return fmt.format(value)


def summary_rows(results: Sequence[SensorResult]) -> list[dict[str, object]]:
    """One dict per sensor and a last one for the fleet (labelled sensors only), with ``sensor``,
    ``window``, ``note`` and every Metrics field."""
    rows = [{"sensor": r.sensor_id, "window": r.window, **asdict(r.metrics), "note": "; ".join(r.notes)}
            for r in results]
    labelled = [r.metrics for r in results if "no labels" not in r.notes]
    fleet = evaluation.combine(labelled)
    rows.append({"sensor": "fleet", "window": "", **asdict(fleet),
                 "note": f"{len(labelled)} of {len(results)} sensors labelled"})
    return rows


def render_markdown(rows: Sequence[Mapping[str, object]], start: pd.Timestamp, stop: pd.Timestamp) -> str:
    head = [f"Evaluation {times.format_time(start)} .. {times.format_time(stop)} "
            f"(window ends; rates 0-1, – where undefined)", "",
            "| " + " | ".join(h for h, _, _ in MARKDOWN_COLUMNS) + " |",
            "| " + " | ".join("---" if key in ("sensor", "note") else "---:" for _, key, _ in MARKDOWN_COLUMNS) + " |"]
    body = []
    for row in rows:
        cells = [_cell(row[key], fmt).replace("|", "\\|") for _, key, fmt in MARKDOWN_COLUMNS]
        if row["sensor"] == "fleet":
            cells[0] = "**fleet**"
        body.append("| " + " | ".join(cells) + " |")
    return "\n".join(head + body) + "\n"


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temporary.write_text(text, encoding="utf-8")
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_csv(path: Path, rows: Sequence[Mapping[str, object]]) -> None:
    columns = ["sensor", "window", *evaluation.METRIC_NAMES, "note"]
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if isinstance(row[c], float) and math.isnan(row[c]) else
                         (round(row[c], 6) if isinstance(row[c], float) else row[c]) for c in columns])
    write_atomic(path, text.getvalue())


# ---------------------------------------------------------------- picture


def draw_sensor(result: SensorResult, readings: pd.Series, scores: pd.DataFrame, labelled: pd.DatetimeIndex | None,
                settings: EvaluateSettings):
    """sensor_plot's two panels (readings with flagged windows; loss with the threshold it was compared
    with), plus every labelled event shaded and the sensor's metrics in the title."""
    import sensor_plot

    reason = "not scored in this range (run sensor_predict.py with --start/--stop)" if scores.empty else None
    fig = sensor_plot.draw(result.sensor_id, readings, scores, field=settings.schema.field,
                           interval=settings.interval, start=settings.start, stop=settings.stop, no_scores=reason)
    top, bottom = fig.axes[:2]
    grid = evaluation.labels_on_grid(labelled if labelled is not None else [], settings.start, settings.stop,
                                     settings.interval)
    for number, (first, last) in enumerate(evaluation.label_events(grid, settings.interval)):
        for axis in (top, bottom):
            axis.axvspan(first.tz_localize(None), (last + settings.interval).tz_localize(None), color=LABEL_COLOR,
                         alpha=0.28, linewidth=0, zorder=0,
                         label="labelled event" if number == 0 and axis is top else None)
    handles, names = top.get_legend_handles_labels()
    if handles:
        top.legend(handles, names, loc="upper left", fontsize=8.5, framealpha=0.9, ncols=len(handles))
    m = result.metrics
    summary = (f"events {m.events_detected}/{m.events} detected · event precision {_cell(m.event_precision, '{:.2f}')}"
               f" · mean delay {_cell(m.mean_delay_min, '{:.0f}')} min · false alarms {m.false_alarms}"
               f" ({_cell(m.false_alarms_per_week, '{:.1f}')}/week)")
    if result.notes:
        summary += " · " + "; ".join(result.notes)
    fig.text(0.99, 0.985, summary, ha="right", va="top", fontsize=9.5, color=sensor_plot.NOTE_COLOR)
    return fig


# ---------------------------------------------------------------- the run


def run(settings: EvaluateSettings, csv_labels: Mapping[str, pd.DatetimeIndex] | None) -> int:
    import sensor_plot

    began = time.monotonic()
    results: list[SensorResult] = []
    failed = 0
    interval = settings.interval
    with Influx(settings.connection, settings.schema) as db:
        sensor_ids = select_sensors(db, settings.sensors, settings.shard, settings.start, settings.stop)
        for first in range(0, len(sensor_ids), settings.chunk_size):
            chunk = sensor_ids[first:first + settings.chunk_size]
            facts = {s: model_facts(settings.models_dir, s, settings.sensor_config, interval) for s in chunk}
            label_start = settings.start - (max(f.window for f in facts.values()) - 1) * interval
            marked = read_labels(db, chunk, label_start, settings.stop, interval, settings.chunk_size, csv_labels)
            frames = db.read_scores(chunk, settings.start, settings.stop)
            means = db.read_means(chunk, settings.start, settings.stop, interval) if settings.plots else {}
            for sensor_id in chunk:
                try:
                    scores = sensor_plot.normalize_scores(frames.get(sensor_id), settings.schema.field)
                    result = evaluate_sensor(sensor_id, scores, marked.get(sensor_id), facts[sensor_id],
                                             settings.start, settings.stop, interval)
                    if settings.plots:
                        raw = means.get(sensor_id, pd.Series(dtype="float64", index=pd.DatetimeIndex([], tz="UTC")))
                        readings = sensor_plot.readings_line(raw, interval, settings.start, settings.stop,
                                                             int(settings.max_gap / interval))
                        fig = draw_sensor(result, readings, scores, marked.get(sensor_id), settings)
                        sensor_plot.save_png(fig, settings.output / (artifacts.sensor_dir(Path(), sensor_id).name
                                                                     + ".png"))
                except Exception:
                    logger.exception("sensor %r: failed", sensor_id)
                    failed += 1
                    continue
                results.append(result)
                m = result.metrics
                logger.info("sensor %r: %d windows, %d of %d events detected, %d false alarms%s", sensor_id,
                            m.windows, m.events_detected, m.events, m.false_alarms,
                            f" ({'; '.join(result.notes)})" if result.notes else "")
    rows = summary_rows(results)
    write_atomic(settings.output / "summary.md", render_markdown(rows, settings.start, settings.stop))
    write_csv(settings.output / "summary.csv", rows)
    fleet = rows[-1]
    logger.info("done in %.1fs: %d sensors evaluated, %d failed; fleet: %d of %d events detected, %d false alarms; "
                "report in %s", time.monotonic() - began, len(results), failed, fleet["events_detected"],
                fleet["events"], fleet["false_alarms"], settings.output)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.configure(args.log_level, args.log_format)
    try:
        settings = settings_from_args(args)
        csv_labels = labels_of_files(settings.labels_csv, settings.interval)
    except (ConfigError, label_io.LabelError) as e:
        logger.error("configuration: %s", e)
        return 2
    try:
        return run(settings, csv_labels)
    except InfluxError as e:
        logger.error("%s", e)
        return 1


if __name__ == "__main__":
    sys.exit(main())
