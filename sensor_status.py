#!/usr/bin/env python3
"""Status of the fleet: per sensor its model, configuration, data freshness, scores and anomalies.

One row per sensor: every sensor with a model in --models-dir, and every sensor found in InfluxDB
without one (with --where, only sensors found under that filter; with --sensor, exactly those); then a
fleet summary. --json prints the same as one JSON document for machines. It reads
the models directory and InfluxDB, and changes neither. Each sensor gets one status word, the first
that applies:

    damaged model        metadata.json unreadable, of another format, without a field the scorer needs,
                         naming missing files or another sensor
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
import json
import logging
import sys
import time
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

import artifacts
from anomaly import logs, settings, times
from anomaly.errors import ConfigError
from anomaly.settings import Connection, Schema, SensorConfig
from influx_interact import Influx, InfluxError

logger = logging.getLogger("sensor_status")

OK = "ok"
STALE = "stale data"
UNSCORED = "not scored recently"
NO_MODEL = "no model"
DAMAGED = "damaged model"
WINDOW_CHANGED = "window changed"
STATUSES = (OK, STALE, UNSCORED, NO_MODEL, DAMAGED, WINDOW_CHANGED)

ID_WIDTH = 28  # display cells of the sensor id column; the whole table then fits in 160
NAMES_LISTED = 10  # sensor ids named in a summary line before "and N more"


@dataclass(frozen=True)
class Limits:
    """When a sensor's data, scores or model count as old."""

    stale_after: pd.Timedelta
    unscored_after: pd.Timedelta
    old_model_after: pd.Timedelta


@dataclass(frozen=True)
class StatusSettings:
    connection: Connection
    schema: Schema
    sensors: tuple[str, ...]
    shard: tuple[int, int] | None
    sensor_config: SensorConfig
    interval: pd.Timedelta
    models_dir: Path
    chunk_size: int
    now: pd.Timestamp
    lookback: pd.Timedelta
    limits: Limits
    json: bool


@dataclass(frozen=True)
class ModelInfo:
    """What the status shows of one model directory; ``problem`` says why it is damaged (None: usable)."""

    directory: str
    sensor_id: str | None = None
    trained_at: pd.Timestamp | None = None
    window: int | None = None
    interval: pd.Timedelta | None = None
    threshold: float | None = None
    training_start: pd.Timestamp | None = None
    training_stop: pd.Timestamp | None = None
    problem: str | None = None


@dataclass(frozen=True)
class Row:
    """One sensor's line of the status. ``sensor_id`` is None for a damaged model naming no known sensor,
    whose data, scores and anomaly counts are then unknown (None)."""

    sensor_id: str | None
    status: str
    model: ModelInfo | None
    ratio: float | None
    configured_window: int | None
    configured_interval: pd.Timedelta
    last_scored: pd.Timestamp | None
    last_reading: pd.Timestamp | None
    anomalies_24h: int | None
    anomalies_7d: int | None

    @property
    def usable(self) -> ModelInfo | None:
        """The model when it is not damaged."""
        return self.model if self.model is not None and self.model.problem is None else None

    @property
    def effective_threshold(self) -> float | None:
        """Saved threshold x ratio: what a window's loss is compared with."""
        model = self.usable
        return model.threshold * self.ratio if model is not None and self.ratio is not None else None


# ---------------------------------------------------------------- pure shaping


def _stamp(value: object) -> pd.Timestamp | None:
    """An RFC3339 string with a zone -> UTC Timestamp; anything else -> None."""
    if not isinstance(value, str):
        return None
    try:
        stamp = pd.Timestamp(value)
    except ValueError:
        return None
    return None if stamp is pd.NaT or stamp.tzinfo is None else stamp.tz_convert("UTC")


def _duration(delta: pd.Timedelta) -> str:
    """A duration as the flags take it, in days rather than weeks (``35d``, ``7d``, ``15m``)."""
    seconds = int(delta.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) < float("inf")


def model_info(directory: str, metadata: Mapping[str, Any]) -> ModelInfo:
    """Check the fields the scorer needs in a model's metadata; a bad one makes it a damaged model.

    ``directory`` is the model directory's name, which must be the one the scorer looks in for the
    sensor the metadata names (``artifacts.sensor_dir``); a copied or renamed directory is never scored.
    ``trained_at`` and ``training_range`` are only shown, so when they are unreadable they are left out.
    """
    sensor_id = metadata.get("sensor_id")
    if not isinstance(sensor_id, str):
        return ModelInfo(directory, problem=f"metadata.json has no sensor_id ({sensor_id!r}); retrain this sensor")
    expected = artifacts.sensor_dir(Path(), sensor_id).name
    if directory != expected:
        # The sensor is not this directory's owner, so it is left unnamed here and gets a row of its own.
        return ModelInfo(directory, problem=f"metadata.json names sensor {sensor_id!r}, whose model the scorer "
                                            f"reads from {expected}, not from here; move or delete this directory")
    window, interval_s, threshold = metadata.get("window"), metadata.get("interval_s"), metadata.get("threshold")
    scaler = metadata.get("scaler")
    checks = [
        ("window", window, isinstance(window, int) and not isinstance(window, bool) and window >= 2),
        ("interval_s", interval_s, isinstance(interval_s, int) and not isinstance(interval_s, bool) and interval_s > 0),
        ("threshold", threshold, _number(threshold) and threshold >= 0),
        ("scaler", scaler, isinstance(scaler, dict) and _number(scaler.get("mean")) and _number(scaler.get("scale"))),
    ]
    for key, value, good in checks:
        if not good:
            return ModelInfo(directory, sensor_id, problem=f"metadata.json has {key} {value!r}; retrain this sensor")
    training = metadata.get("training_range") if isinstance(metadata.get("training_range"), dict) else {}
    return ModelInfo(directory, sensor_id, trained_at=_stamp(metadata.get("trained_at")), window=window,
                     interval=pd.Timedelta(seconds=interval_s), threshold=float(threshold),
                     training_start=_stamp(training.get("start")), training_stop=_stamp(training.get("stop")))


def select_sensors(models: Sequence[ModelInfo], found: Sequence[str], requested: Sequence[str],
                   shard: tuple[int, int] | None, only_found: bool = False) -> list[tuple[str | None, ModelInfo | None]]:
    """The sensors to show, sorted by id, each with its model (None: no model).

    Parameters
    ----------
    models : the model directories read, usable or damaged
    found : sensor ids in InfluxDB (ignored when ``requested`` is given, as in the jobs)
    requested : --sensor ids; when given, exactly these are shown (then the shard filter)
    shard : --shard (I, N), or None
    only_found : leave out models of sensors not in ``found`` (with --where, a model of another site)

    A damaged model whose metadata names no sensor is matched by its directory name to a sensor shown;
    the rest are appended with sensor id None, on every shard (their shard cannot be known) but never
    when ``requested`` is given.
    """
    by_id = {m.sensor_id: m for m in models if m.sensor_id is not None}
    unnamed = {m.directory: m for m in models if m.sensor_id is None}
    if requested:
        ids = set(requested)
    else:
        ids = set(found) | (set() if only_found else set(by_id))
    selected: list[tuple[str | None, ModelInfo | None]] = []
    for sensor_id in sorted(s for s in ids if settings.in_shard(s, shard)):
        model = by_id.get(sensor_id) or unnamed.pop(artifacts.sensor_dir(Path(), sensor_id).name, None)
        selected.append((sensor_id, model))
    if not requested:
        selected += [(None, unnamed[name]) for name in sorted(unnamed)]
    return selected


def sensor_status(model: ModelInfo | None, window_changed: bool, last_reading: pd.Timestamp | None,
                  last_scored: pd.Timestamp | None, now: pd.Timestamp, limits: Limits) -> str:
    """The one status word of a sensor: the first of damaged model, no model, window changed, stale
    data, not scored recently that applies, else ok. A missing time (none in the lookback) is old."""
    if model is not None and model.problem is not None:
        return DAMAGED
    if model is None:
        return NO_MODEL
    if window_changed:
        return WINDOW_CHANGED
    if last_reading is None or now - last_reading > limits.stale_after:
        return STALE
    if last_scored is None or now - last_scored > limits.unscored_after:
        return UNSCORED
    return OK


def build_rows(selected: Sequence[tuple[str | None, ModelInfo | None]], sensor_config: SensorConfig,
               interval: pd.Timedelta, now: pd.Timestamp, limits: Limits,
               last_scored: Mapping[str, pd.Timestamp], last_reading: Mapping[str, pd.Timestamp],
               anomalies_24h: Mapping[str, int], anomalies_7d: Mapping[str, int]) -> list[Row]:
    """Join the models with what InfluxDB said (each mapping: sensor id -> value; absent: none) into rows.

    A model's window changed when the configured window or ``interval`` differs from the model's,
    as the scorer checks before it skips a sensor.
    """
    rows = []
    for sensor_id, model in selected:
        if sensor_id is None:
            rows.append(Row(None, DAMAGED, model, None, None, interval, None, None, None, None))
            continue
        window = sensor_config.window(sensor_id)
        usable = model if model is not None and model.problem is None else None
        changed = usable is not None and (usable.window != window or usable.interval != interval)
        status = sensor_status(model, changed, last_reading.get(sensor_id), last_scored.get(sensor_id), now, limits)
        rows.append(Row(sensor_id, status, model, sensor_config.ratio(sensor_id), window, interval,
                        last_scored.get(sensor_id), last_reading.get(sensor_id),
                        int(anomalies_24h.get(sensor_id, 0)), int(anomalies_7d.get(sensor_id, 0))))
    return rows


def summarize(rows: Sequence[Row], now: pd.Timestamp, limits: Limits, lookback: pd.Timedelta) -> dict[str, Any]:
    """Fleet summary: sensors per status word, models older than ``limits.old_model_after``, sensors with
    anomalies in the last 24 h, and the anomaly totals. Sensor ids are listed in row order."""
    old = [r.sensor_id for r in rows
           if r.usable is not None and r.usable.trained_at is not None
           and now - r.usable.trained_at > limits.old_model_after]
    return {
        "now": times.format_time(now),
        "lookback": _duration(lookback),
        "sensors": len(rows),
        "status": {word: sum(r.status == word for r in rows) for word in STATUSES},
        "old_model_after": _duration(limits.old_model_after),
        "old_models": old,
        "anomalous_24h": [r.sensor_id for r in rows if r.anomalies_24h],
        "anomalies_24h": sum(r.anomalies_24h or 0 for r in rows),
        "anomalies_7d": sum(r.anomalies_7d or 0 for r in rows),
    }


def _time(stamp: pd.Timestamp | None) -> str | None:
    return None if stamp is None else times.format_time(stamp)


def row_json(row: Row) -> dict[str, Any]:
    """A row as plain JSON values: times RFC3339 UTC, durations like ``15m``, absent values null."""
    model = row.usable
    return {
        "sensor_id": row.sensor_id,
        "status": row.status,
        "directory": row.model.directory if row.model is not None else None,
        "problem": row.model.problem if row.model is not None else None,
        "trained_at": _time(model.trained_at) if model else None,
        "window": model.window if model else None,
        "interval": _duration(model.interval) if model else None,
        "configured_window": row.configured_window,
        "configured_interval": _duration(row.configured_interval),
        "ratio": row.ratio,
        "threshold": model.threshold if model else None,
        "effective_threshold": row.effective_threshold,
        "training_range": {"start": _time(model.training_start), "stop": _time(model.training_stop)} if model else None,
        "last_scored": _time(row.last_scored),
        "last_reading": _time(row.last_reading),
        "anomalies_24h": row.anomalies_24h,
        "anomalies_7d": row.anomalies_7d,
    }


def render_json(rows: Sequence[Row], summary: Mapping[str, Any]) -> str:
    """The whole status as one JSON document, sorted keys, indented, ending in a newline."""
    return json.dumps({"sensors": [row_json(r) for r in rows], "summary": summary}, sort_keys=True, indent=2) + "\n"


def format_age(delta: pd.Timedelta) -> str:
    """An age in its largest whole unit: 59 s -> ``59s``, 90 s -> ``1m``, 5 h -> ``5h``, 12.5 d -> ``12d``.
    A negative age (a time after now) keeps its sign."""
    seconds = int(delta.total_seconds())
    sign, seconds = ("-" if seconds < 0 else ""), abs(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{sign}{seconds // size}{unit}"
    return f"{sign}{seconds}s"


def _printable(text: str) -> str:
    """Control characters as escapes (a tab as \\t), so an id cannot break the table's lines."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _cells(char: str) -> int:
    if unicodedata.combining(char):
        return 0
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def display_width(text: str) -> int:
    """Terminal cells of a printable string: wide (CJK, emoji) characters take two, combining ones none."""
    return sum(_cells(c) for c in text)


def truncate(text: str, width: int) -> str:
    """``text`` cut to at most ``width`` cells, ending in an ellipsis when anything was cut."""
    if display_width(text) <= width:
        return text
    kept, used = [], 1
    for char in text:
        if used + _cells(char) > width:
            break
        kept.append(char)
        used += _cells(char)
    return "".join(kept) + "…"


def _pad(text: str, width: int, right: bool) -> str:
    fill = " " * (width - display_width(text))
    return fill + text if right else text + fill


def _range_text(model: ModelInfo | None) -> str:
    """``2025-10-16..2026-01-14``; a missing end is a ``?``."""
    if model is None:
        return "-"
    start, stop = (f"{t:%Y-%m-%d}" if t is not None else "?" for t in (model.training_start, model.training_stop))
    return f"{start}..{stop}"


def _window_text(row: Row) -> str:
    """The model's window; ``15->20`` when the configuration now wants another, with the intervals when
    those differ (``15x1h->15x15m``)."""
    model = row.usable
    if model is None:
        return "-"
    if model.interval != row.configured_interval:
        return (f"{model.window}x{_duration(model.interval)}->"
                f"{row.configured_window}x{_duration(row.configured_interval)}")
    return str(model.window) if model.window == row.configured_window else f"{model.window}->{row.configured_window}"


TABLE_COLUMNS = (  # header, right-aligned
    ("sensor id", False), ("status", False), ("model age", True), ("window", True), ("ratio", True),
    ("threshold", True), ("x ratio", True), ("training range", False), ("last scored", False),
    ("data age", True), ("24h", True), ("7d", True),
)


def table_cells(row: Row, now: pd.Timestamp, lookback: pd.Timedelta) -> list[str]:
    """A row's cells as the table shows them, in TABLE_COLUMNS order; ``-`` where there is nothing."""
    model = row.usable
    name = row.sensor_id if row.sensor_id is not None else f"({row.model.directory})"
    if row.sensor_id is None:
        data_age = "-"
    elif row.last_reading is None:
        data_age = f">{_duration(lookback)}"
    else:
        data_age = format_age(now - row.last_reading)
    return [
        truncate(_printable(name), ID_WIDTH),
        row.status,
        format_age(now - model.trained_at) if model and model.trained_at is not None else "-",
        _window_text(row),
        f"{row.ratio:g}" if row.ratio is not None else "-",
        f"{model.threshold:.4g}" if model else "-",
        f"{row.effective_threshold:.4g}" if model else "-",
        _range_text(model),
        f"{row.last_scored:%Y-%m-%d %H:%M}" if row.last_scored is not None else "-",
        data_age,
        str(row.anomalies_24h) if row.anomalies_24h is not None else "-",
        str(row.anomalies_7d) if row.anomalies_7d is not None else "-",
    ]


def render_table(rows: Sequence[Row], now: pd.Timestamp, lookback: pd.Timedelta) -> str:
    """Plain fixed-width text: a title line, a header, one line per sensor. Column widths fit the
    contents; sensor ids longer than ID_WIDTH cells are cut with an ellipsis (in the table only)."""
    cells = [[header for header, _ in TABLE_COLUMNS]] + [table_cells(r, now, lookback) for r in rows]
    widths = [max(display_width(line[k]) for line in cells) for k in range(len(TABLE_COLUMNS))]
    lines = [f"sensor status at {times.format_time(now)} (times UTC; data age: of the newest reading; "
             f"24h, 7d: anomalies flagged; -: none in the last {_duration(lookback)})"]
    for line in cells:
        text = "  ".join(_pad(cell, width, right) for cell, width, (_, right) in zip(line, widths, TABLE_COLUMNS))
        lines.append(text.rstrip())
    return "\n".join(lines) + "\n"


def _names(ids: Sequence[str]) -> str:
    shown = ", ".join(repr(i) for i in ids[:NAMES_LISTED])
    more = f" and {len(ids) - NAMES_LISTED} more" if len(ids) > NAMES_LISTED else ""
    return f": {shown}{more}" if ids else ""


def render_summary(rows: Sequence[Row], summary: Mapping[str, Any]) -> str:
    """The fleet summary lines printed after the table, then one line per damaged model with its problem."""
    counts = ", ".join(f"{word} {summary['status'][word]}" for word in STATUSES)
    old, anomalous = summary["old_models"], summary["anomalous_24h"]
    lines = [
        f"{summary['sensors']} sensors: {counts}",
        f"models older than {summary['old_model_after']}: {len(old)}{_names(old)}",
        f"sensors with anomalies in the last 24h: {len(anomalous)}{_names(anomalous)} "
        f"({summary['anomalies_24h']} anomalies; {summary['anomalies_7d']} in 7d)",
    ]
    for row in rows:
        if row.status == DAMAGED:
            name = repr(row.sensor_id) if row.sensor_id is not None else row.model.directory
            lines.append(f"damaged model {name}: {_printable(row.model.problem)}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- the edges


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    settings.add_common_arguments(parser)
    status = parser.add_argument_group("status")
    status.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    status.add_argument("--now", help="take this RFC3339 time as the current time (replays and tests)")
    status.add_argument("--lookback", default="7d",
                        help="how far back to look for each sensor's newest reading and score (default 7d)")
    status.add_argument("--stale-after", help="data older than this is stale (default: --max-gap, past which "
                                              "the scorer can build no window)")
    status.add_argument("--unscored-after",
                        help="a newest score older than this is not recent (default: 4 intervals, 1h at 15m; "
                             "the scorer runs behind by up to two intervals, its --delay and its schedule)")
    status.add_argument("--old-model-after", default="35d",
                        help="models trained longer ago than this are counted as old (default 35d: monthly "
                             "training and a few days)")
    return parser


def settings_from_args(args: argparse.Namespace) -> StatusSettings:
    now = times.current_time(args.now)
    interval = times.parse_duration(args.interval, "--interval")
    max_gap = times.parse_duration(args.max_gap, "--max-gap")
    lookback = times.parse_duration(args.lookback, "--lookback")
    limits = Limits(
        stale_after=times.parse_duration(args.stale_after, "--stale-after") if args.stale_after else max_gap,
        unscored_after=(times.parse_duration(args.unscored_after, "--unscored-after") if args.unscored_after
                        else 4 * interval),
        old_model_after=times.parse_duration(args.old_model_after, "--old-model-after"),
    )
    if lookback < max(limits.stale_after, limits.unscored_after):
        raise ConfigError(f"--lookback {args.lookback} must be at least --stale-after "
                          f"({_duration(limits.stale_after)}) and --unscored-after "
                          f"({_duration(limits.unscored_after)})")
    return StatusSettings(
        connection=settings.connection_from_args(args),
        schema=settings.schema_from_args(args),
        sensors=tuple(args.sensor),
        shard=settings.parse_shard(args.shard),
        sensor_config=settings.load_sensor_config(args.ratios, args.windows),
        interval=interval,
        models_dir=args.models_dir,
        chunk_size=settings.positive_int("--chunk-size", args.chunk_size),
        now=now,
        lookback=lookback,
        limits=limits,
        json=args.json,
    )


def read_models(models_dir: Path) -> list[ModelInfo]:
    """Every model directory (one holding metadata.json) in ``models_dir``, usable or damaged.

    Raises OSError when the directory cannot be listed; a missing directory holds no models.
    """
    if not models_dir.exists():
        logger.warning("models directory %s does not exist: no sensor has a model", models_dir)
        return []
    models = []
    for directory in sorted(models_dir.iterdir()):
        if not directory.is_dir() or not (directory / artifacts.METADATA).exists():
            continue  # a training killed before its first commit leaves a directory but no model
        try:
            metadata = artifacts.load_metadata(directory, verify=())
        except artifacts.ArtifactError as e:
            models.append(ModelInfo(directory.name, problem=str(e)))
            continue
        models.append(model_info(directory.name, metadata))
    return models


def query_influx(db: Influx, sensor_ids: Sequence[str], settings: StatusSettings) -> tuple[dict, dict, dict, dict]:
    """Newest score, newest reading and anomaly counts (24 h, 7 d) per sensor: four queries per chunk."""
    since = settings.now - settings.lookback
    scored: dict[str, pd.Timestamp] = {}
    readings: dict[str, pd.Timestamp] = {}
    day: dict[str, int] = {}
    week: dict[str, int] = {}
    for first in range(0, len(sensor_ids), settings.chunk_size):
        chunk = list(sensor_ids[first:first + settings.chunk_size])
        scored.update(db.last_scored(chunk, since))
        readings.update(db.last_reading(chunk, since))
        day.update(db.anomaly_counts(chunk, settings.now - pd.Timedelta(days=1)))
        week.update(db.anomaly_counts(chunk, settings.now - pd.Timedelta(days=7)))
    return scored, readings, day, week


def run(settings: StatusSettings) -> int:
    began = time.monotonic()
    try:
        models = read_models(settings.models_dir)
    except OSError as e:
        logger.error("cannot read the models directory %s: %s", settings.models_dir, e)
        return 1
    with Influx(settings.connection, settings.schema) as db:
        found = [] if settings.sensors else db.sensor_ids(settings.now - settings.lookback, settings.now)
        selected = select_sensors(models, found, settings.sensors, settings.shard,
                                  only_found=bool(settings.schema.where))
        scored, readings, day, week = query_influx(db, [s for s, _ in selected if s is not None], settings)
    rows = build_rows(selected, settings.sensor_config, settings.interval, settings.now, settings.limits,
                      scored, readings, day, week)
    summary = summarize(rows, settings.now, settings.limits, settings.lookback)
    if settings.json:
        sys.stdout.write(render_json(rows, summary))
    else:
        sys.stdout.write(render_table(rows, settings.now, settings.lookback) + "\n" + render_summary(rows, summary))
    logger.info("done in %.1fs: %d sensors, %d ok", time.monotonic() - began, len(rows), summary["status"][OK])
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.configure(args.log_level, args.log_format)
    try:
        settings = settings_from_args(args)
    except ConfigError as e:
        logger.error("configuration: %s", e)
        return 2
    try:
        return run(settings)
    except InfluxError as e:
        logger.error("%s", e)
        return 1


if __name__ == "__main__":
    sys.exit(main())
