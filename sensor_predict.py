#!/usr/bin/env python3
"""Frequent job: score every interval not yet scored for each sensor with a model, write scores to InfluxDB.

Each sensor resumes after its newest score in the output measurement (the last day on a first run, at
most --max-catchup back), so a job that missed ticks catches up by itself, and a rerun rewrites the same
points instead of adding new ones. Only complete intervals are scored.

Exit status: 0 when no sensor failed, 1 when any failed or the database could not be used,
2 for bad configuration, 75 when another scoring run for the same models directory is still going
(this one does nothing).
"""
from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

import artifacts
import clean
from anomaly import logs, settings, times
from anomaly.errors import ConfigError
from anomaly.settings import Connection, Schema, SensorConfig
from influx_interact import Influx, InfluxError, line_protocol

logger = logging.getLogger("sensor_predict")
FLAT_CONTEXT = pd.Timedelta(days=2)


@dataclass(frozen=True)
class ColdStartSettings:
    """The robust detector for sensors with no model yet."""

    history: pd.Timedelta
    min_history: pd.Timedelta
    z: float


@dataclass(frozen=True)
class AnnounceSettings:
    """What becomes of events: annotations, incidents, webhook messages (see notify.py)."""

    events_measurement: str | None
    chronograf_annotations: bool
    incident_tag: str | None
    incidents_measurement: str
    incident_window: pd.Timedelta
    notify_url: str | None = field(repr=False)
    notify_style: str
    notify_cooldown: pd.Timedelta
    notify_max_age: pd.Timedelta
    state_file: Path


@dataclass(frozen=True)
class PredictSettings:
    connection: Connection
    schema: Schema
    sensors: tuple[str, ...]
    shard: tuple[int, int] | None
    sensor_config: SensorConfig
    interval: pd.Timedelta
    max_gap: pd.Timedelta
    models_dir: Path
    chunk_size: int
    now: pd.Timestamp
    start: pd.Timestamp | None
    stop: pd.Timestamp | None
    max_catchup: pd.Timedelta
    delay: pd.Timedelta
    first_run: pd.Timedelta
    dry_run: bool
    engine: str
    min_consecutive: int
    missing_after: pd.Timedelta
    dynamic_history: int | None
    cold_start: ColdStartSettings | None
    announce: AnnounceSettings

    @property
    def max_gap_points(self) -> int:
        return int(self.max_gap / self.interval)

    @property
    def missing_limit(self) -> int:
        return int(self.missing_after / self.interval)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    settings.add_common_arguments(parser)
    job = parser.add_argument_group("scoring")
    job.add_argument("--start", help="backfill: score windows ending at or after this time (RFC3339 or -7d)")
    job.add_argument("--stop", help="backfill: score windows ending before this time (default now)")
    job.add_argument("--now", help="take this RFC3339 time as the current time (replays and tests)")
    job.add_argument("--max-catchup", default="7d", help="never score further back than this (default 7d)")
    job.add_argument("--delay", default="2m",
                     help="score an interval only once it ended this long ago, so late readings count (default 2m)")
    job.add_argument("--first-run", default="1d", help="how far back a sensor's first run scores (default 1d)")
    job.add_argument("--min-consecutive", type=int, default=1, metavar="K",
                     help="flag a window only when it and the K-1 before it all exceed the threshold (default 1)")
    job.add_argument("--threshold", choices=("fixed", "dynamic"), default="fixed",
                     help="fixed: the model's threshold x ratio (default); dynamic: per window, from the smoothed "
                          "losses of --dynamic-history before it, never below the fixed one (see README)")
    job.add_argument("--dynamic-history", default="3d",
                     help="losses a dynamic threshold is computed from (default 3d; each tick scores that much again)")
    job.add_argument("--missing-after",
                     help="flag intervals of a sensor with no reading for longer than this (default --max-gap)")
    job.add_argument("--engine", choices=("numpy", "keras"), default="numpy",
                     help="numpy: fast forward pass from exported weights (default); keras: load each Keras model")
    cold = parser.add_argument_group("cold start: sensors with no model yet")
    cold.add_argument("--no-cold-start", action="store_true",
                      help="skip sensors with no model instead of scoring them with the robust detector")
    cold.add_argument("--cold-start-history", default="7d",
                      help="each reading is compared with the median and MAD of the readings at the same time of "
                           "day over this much before it (default 7d)")
    cold.add_argument("--cold-start-min-history", default="2d",
                      help="days of readings needed before a sensor is scored at all (default 2d)")
    cold.add_argument("--cold-start-z", type=float, default=6.0,
                      help="flag readings more than this many robust deviations from the median (default 6)")
    events = parser.add_argument_group("events, incidents and notifications")
    events.add_argument("--events-measurement", default="ANOMALY_EVENTS",
                        help="one point per anomaly event (run of flagged windows) for graph annotations; "
                             "empty for none (default ANOMALY_EVENTS)")
    events.add_argument("--chronograf-annotations", action="store_true",
                        help="also write events where Chronograf 1.x keeps its annotations (database chronograf, "
                             "which must exist; on 2.x a bucket chronograf mapped to chronograf/autogen)")
    events.add_argument("--incident-tag", metavar="KEY",
                        help="group concurrent events of sensors sharing this tag (e.g. equipRef) into incidents")
    events.add_argument("--incidents-measurement", default="INCIDENTS", help="where incidents go (default INCIDENTS)")
    events.add_argument("--incident-window", default="1h",
                        help="events of one group at most this far apart form one incident (default 1h)")
    events.add_argument("--notify-url", default=os.environ.get("SENSOR_NOTIFY_URL"),
                        help="SENSOR_NOTIFY_URL: webhook that gets one message per new event or incident; "
                             "prefer the variable, the URL is a secret")
    events.add_argument("--notify-style", choices=("json", "slack", "teams"), default="json",
                        help="message shape: plain JSON, Slack incoming webhook, Teams card (default json)")
    events.add_argument("--notify-cooldown", default="1h",
                        help="after a message, nothing more for that sensor or group for this long (default 1h)")
    events.add_argument("--notify-max-age", default="1d",
                        help="events that ended longer ago than this (a catch-up) are recorded, not sent (default 1d)")
    events.add_argument("--state-file", type=Path,
                        help="memory of ongoing events and sent messages (default .sensor_predict-state.json in "
                             "--models-dir; one per --shard)")
    job.add_argument("--dry-run", action="store_true", help="print the line protocol that would be written; write nothing")
    return parser


def settings_from_args(args: argparse.Namespace) -> PredictSettings:
    now = times.current_time(args.now)
    interval = times.parse_duration(args.interval, "--interval")
    start = times.parse_time(args.start, now, "--start").floor(interval) if args.start else None
    stop = times.parse_time(args.stop, now, "--stop").floor(interval) if args.stop else None
    if stop is not None and start is None:
        raise ConfigError("--stop needs --start: together they name the range to backfill")
    if start is not None and start >= (stop or now.floor(interval)):
        raise ConfigError(f"--start {args.start} must be before --stop ({args.stop or 'now'})")
    return PredictSettings(
        connection=settings.connection_from_args(args),
        schema=settings.schema_from_args(args),
        sensors=tuple(args.sensor),
        shard=settings.parse_shard(args.shard),
        sensor_config=settings.load_sensor_config(args.ratios, args.windows),
        interval=interval,
        max_gap=times.parse_duration(args.max_gap, "--max-gap"),
        models_dir=args.models_dir,
        chunk_size=settings.positive_int("--chunk-size", args.chunk_size),
        now=now,
        start=start,
        stop=stop,
        max_catchup=times.parse_duration(args.max_catchup, "--max-catchup"),
        delay=times.parse_duration(args.delay, "--delay", allow_zero=True),
        first_run=times.parse_duration(args.first_run, "--first-run"),
        dry_run=args.dry_run,
        engine=args.engine,
        min_consecutive=settings.positive_int("--min-consecutive", args.min_consecutive),
        dynamic_history=(int(times.parse_duration(args.dynamic_history, "--dynamic-history") / interval)
                         if args.threshold == "dynamic" else None),
        missing_after=times.parse_duration(args.missing_after or args.max_gap, "--missing-after"),
        cold_start=None if args.no_cold_start else ColdStartSettings(
            history=times.parse_duration(args.cold_start_history, "--cold-start-history"),
            min_history=times.parse_duration(args.cold_start_min_history, "--cold-start-min-history"),
            z=args.cold_start_z,
        ),
        announce=AnnounceSettings(
            events_measurement=args.events_measurement or None,
            chronograf_annotations=args.chronograf_annotations,
            incident_tag=args.incident_tag or None,
            incidents_measurement=args.incidents_measurement,
            incident_window=times.parse_duration(args.incident_window, "--incident-window"),
            notify_url=args.notify_url or None,
            notify_style=args.notify_style,
            notify_cooldown=times.parse_duration(args.notify_cooldown, "--notify-cooldown", allow_zero=True),
            notify_max_age=times.parse_duration(args.notify_max_age, "--notify-max-age"),
            state_file=args.state_file or args.models_dir / (
                ".sensor_predict-state.json" if not args.shard else
                f".sensor_predict-state-{args.shard.replace('/', 'of')}.json"),
        ),
    )


def score_range(last_scored: pd.Timestamp | None, settings: PredictSettings) -> tuple[pd.Timestamp, pd.Timestamp] | None:
    """First and last window end to score (inclusive, interval starts), or None when nothing is due."""
    interval = settings.interval
    if settings.start is not None:
        first, last = settings.start, (settings.stop or settings.now.floor(interval)) - interval
    else:
        now = (settings.now - settings.delay).floor(interval)
        first = last_scored + interval if last_scored is not None else now - settings.first_run
        first, last = max(first, now - settings.max_catchup), now - interval
    return (first, last) if first <= last else None


def score_lines(sensor_id: str, scores: pd.DataFrame, schema: Schema, detector: str = "lstm") -> list[str]:
    """One point per scored window end, in time order (a written prefix never leaves a gap behind it)."""
    tags = {schema.sensor_tag: sensor_id}
    return [
        line_protocol(schema.output_measurement, tags,
                      {schema.field: row.value, "loss": row.loss, "threshold": row.threshold,
                       "anomaly": bool(row.anomaly), "kind": row.kind, "detector": detector,
                       **({"smoothed_loss": row.smoothed_loss} if "smoothed_loss" in scores else {})},
                      int(stamp.timestamp()))
        for stamp, row in zip(scores.index, scores.itertuples(index=False))
    ]


def load_models(sensor_ids: list[str], settings: PredictSettings, counts: dict[str, int]) -> tuple[dict, list[str]]:
    """Usable models of a chunk by sensor id, and the sensors with no model yet for the cold-start detector;
    logs and counts the sensors that cannot be scored."""
    import model_predict

    models, cold = {}, []
    for sensor_id in sensor_ids:
        directory = artifacts.sensor_dir(settings.models_dir, sensor_id)
        if not (directory / artifacts.METADATA).exists():
            if settings.cold_start is not None:
                cold.append(sensor_id)
                continue
            logger.info("sensor %r: skipped: no model in %s; run sensor_training.py", sensor_id, directory)
            counts["skipped"] += 1
            continue
        try:
            model = model_predict.load_sensor_model(directory, settings.engine)
        except artifacts.ArtifactError as e:
            logger.error("sensor %r: failed: %s", sensor_id, e)
            counts["failed"] += 1
            continue
        window = settings.sensor_config.window(sensor_id)
        if model.window != window or model.interval != settings.interval:
            logger.warning("sensor %r: skipped: model has window %d and interval %s, config wants window %d and "
                           "interval %s; retrain it", sensor_id, model.window, model.interval, window, settings.interval)
            counts["skipped"] += 1
            continue
        models[sensor_id] = model
    return models, cold


def no_window(sensor_id: str, first: pd.Timestamp, last: pd.Timestamp, counts: dict[str, int]) -> None:
    logger.info("sensor %r: no complete window ends in %s .. %s", sensor_id, times.format_time(first),
                times.format_time(last))
    counts["no_data"] += 1


def score_chunk(db: Influx, sensor_ids: list[str], settings: PredictSettings, counts: dict[str, int],
                scored: dict[str, pd.DataFrame]) -> list[str]:
    """Score one chunk of sensors with one read; return the lines to write and add each frame to ``scored``."""
    import model_predict

    models, cold = load_models(sensor_ids, settings, counts)
    lines = score_cold(db, cold, settings, counts, scored) if cold else []
    due = due_ranges(db, list(models), settings, counts)
    if not due:
        return lines
    interval = settings.interval
    # Earlier intervals give the first due window its readings, its persistence run and its flat-line run.
    persistence = (settings.min_consecutive - 1) * interval
    if settings.dynamic_history:
        import thresholds

        persistence += thresholds.history_needed(settings.dynamic_history) * interval
    # A flat-line longer than FLAT_CONTEXT is not looked for: reading that far back every tick would cost more.
    context = {s: max(m.window - 1, min(m.flat_limit or 0, int(FLAT_CONTEXT / interval))) * interval
               + persistence + settings.max_gap for s, m in models.items()}
    read_start = min(first - context[s] for s, (first, _) in due.items())
    read_stop = max(last for _, last in due.values()) + interval
    data = db.read_means(list(due), read_start, read_stop, interval)
    if not data:
        # Not one reading for a whole chunk is a wrong --field or --measurement far more often than a chunk
        # of dead sensors: say so once rather than flag every sensor as missing.
        logger.warning("no readings at all for %d sensors in %s .. %s; check --measurement and --field",
                       len(due), times.format_time(read_start), times.format_time(read_stop))
        for sensor_id, (first, last) in due.items():
            no_window(sensor_id, first, last, counts)
        return lines
    prepared = {}
    for sensor_id, (first, last) in due.items():
        try:
            raw = data.get(sensor_id, pd.Series(dtype="float64", index=pd.DatetimeIndex([], tz="UTC")))
            series = clean.regularize(clean.validate_series(raw), interval, read_start, read_stop)
            windows, ends, values = model_predict.windows_to_score(
                series, models[sensor_id], settings.max_gap_points, first - persistence, last)
        except Exception:
            logger.exception("sensor %r: failed", sensor_id)
            counts["failed"] += 1
            continue
        prepared[sensor_id] = (windows, ends, values, series)
    try:
        losses = model_predict.fleet_losses([models[s] for s in prepared], [p[0] for p in prepared.values()],
                                            settings.engine)
    except Exception:
        logger.exception("failed to compute the losses of %d sensors: %s", len(prepared), ", ".join(map(repr, prepared)))
        counts["failed"] += len(prepared)
        return lines
    for (sensor_id, (_, ends, values, series)), loss in zip(prepared.items(), losses):
        first, last = due[sensor_id]
        try:
            threshold = models[sensor_id].threshold * settings.sensor_config.ratio(sensor_id)
            scores = model_predict.flags(ends, values, loss, threshold, settings.min_consecutive, interval)
            if settings.dynamic_history:
                scores = model_predict.dynamic_flags(scores, settings.dynamic_history, settings.min_consecutive,
                                                     interval)
            scores = model_predict.data_checks(scores, series, threshold, models[sensor_id].flat_limit,
                                               settings.missing_limit, first, last)
            scores = scores[(scores.index >= first) & (scores.index <= last)]
            lines += score_lines(sensor_id, scores, settings.schema)
        except Exception:
            logger.exception("sensor %r: failed", sensor_id)
            counts["failed"] += 1
            continue
        if scores.empty:
            no_window(sensor_id, first, last, counts)
            continue
        record(sensor_id, scores, threshold, scored, counts)
    return lines


def record(sensor_id: str, scores: pd.DataFrame, threshold: float, scored: dict[str, pd.DataFrame],
           counts: dict[str, int], detector: str = "") -> None:
    """Keep a sensor's scores for the events, count them, and log its one line."""
    scored[sensor_id] = scores
    anomaly = scores["anomaly"].to_numpy(dtype=bool)
    flagged = int(anomaly.sum())
    windows = int(np.isfinite(scores["loss"].to_numpy(dtype="float64")).sum())
    kinds = scores["kind"][anomaly].value_counts() if flagged else {}
    counts["scored"] += 1
    counts["windows"] += windows
    counts["anomalies"] += flagged
    logger.info("sensor %r: %d %s%s %s .. %s, %d anomalies%s, threshold %.4f", sensor_id, windows,
                detector or "windows",
                f" and {len(scores) - windows} intervals without readings" if len(scores) > windows else "",
                times.format_time(scores.index[0]), times.format_time(scores.index[-1]), flagged,
                " (" + ", ".join(f"{n} {kind}" for kind, n in kinds.items()) + ")" if flagged else "", threshold)


def due_ranges(db: Influx, sensor_ids: list[str], settings: PredictSettings,
               counts: dict[str, int]) -> dict[str, tuple[pd.Timestamp, pd.Timestamp]]:
    """What each sensor has due, from its last score in the output measurement; logs the ones up to date."""
    if not sensor_ids:
        return {}
    interval = settings.interval
    last_scored = {} if settings.start is not None else db.last_scored(
        sensor_ids, settings.now.floor(interval) - settings.max_catchup - interval)
    ranges = {s: score_range(last_scored.get(s), settings) for s in sensor_ids}
    for sensor_id in [s for s, r in ranges.items() if r is None]:
        logger.info("sensor %r: nothing due: scored up to %s", sensor_id, times.format_time(last_scored[sensor_id]))
        counts["up_to_date"] += 1
    return {s: r for s, r in ranges.items() if r is not None}


def score_cold(db: Influx, sensor_ids: list[str], settings: PredictSettings, counts: dict[str, int],
               scored: dict[str, pd.DataFrame]) -> list[str]:
    """Sensors with no model yet, scored by the robust detector until training gives them one (see
    model_predict.robust_scores); one read for all of them, reaching back over their history."""
    import model_predict

    due = due_ranges(db, sensor_ids, settings, counts)
    if not due:
        return []
    cold, interval = settings.cold_start, settings.interval
    read_start = min(first for first, _ in due.values()) - cold.history
    read_stop = max(last for _, last in due.values()) + interval
    data = db.read_means(list(due), read_start, read_stop, interval)
    lines = []
    for sensor_id, (first, last) in due.items():
        try:
            raw = data.get(sensor_id, pd.Series(dtype="float64", index=pd.DatetimeIndex([], tz="UTC")))
            series = clean.regularize(clean.validate_series(raw), interval, read_start, read_stop)
            threshold = cold.z * settings.sensor_config.ratio(sensor_id)
            scores = model_predict.robust_scores(series, int(cold.history / interval),
                                                 int(cold.min_history / interval), threshold, first, last,
                                                 period=max(1, round(pd.Timedelta(days=1) / interval)))
            lines += score_lines(sensor_id, scores, settings.schema, detector="robust")
        except Exception:
            logger.exception("sensor %r: failed", sensor_id)
            counts["failed"] += 1
            continue
        if scores.empty:
            logger.info("sensor %r: no model yet, and less than %s of readings before %s for the cold-start "
                        "detector", sensor_id, times.format_duration(cold.min_history), times.format_time(last))
            counts["no_data"] += 1
            continue
        record(sensor_id, scores, threshold, scored, counts, detector="readings (no model yet: robust detector)")
    return lines


def announce(db: Influx, settings: PredictSettings, scored: dict[str, pd.DataFrame], counts: dict[str, int]) -> None:
    """Turn this run's flags into events: annotations and incidents in InfluxDB, messages to the webhook.

    The state file remembers ongoing events and what was sent, so an event that lasts several runs stays
    one event and nothing is sent twice. See notify.py for the rules.
    """
    import notify

    a = settings.announce
    if not (a.events_measurement or a.incident_tag or a.notify_url or a.chronograf_annotations):
        return
    now, interval = settings.now, settings.interval
    text = a.state_file.read_text(encoding="utf-8") if a.state_file.exists() else None
    state, problem = notify.load_state(text)
    if problem:
        logger.warning("%s: %s; starting with no memory of earlier events", a.state_file, problem)
    found = [e for sensor_id, scores in scored.items() if scores["anomaly"].any()
             for e in notify.events(sensor_id, scores, interval)]
    found, state = notify.resume(found, state, interval, {s: f.index[-1] for s, f in scored.items()})
    known = found + notify.tracked_events(state, since=now - a.incident_window - interval * 2)
    known = list({e.key: e for e in known}.values())
    groups = db.group_tags(list(scored), now - settings.max_catchup, a.incident_tag) if a.incident_tag else {}
    found_incidents = notify.incidents(known, groups, a.incident_window)
    lines = notify.annotation_lines(found, settings.schema.sensor_tag, a.events_measurement) \
        if a.events_measurement else []
    lines += notify.incident_lines(found_incidents, a.incident_tag, a.incidents_measurement) if a.incident_tag else []
    db.write(lines)
    if a.chronograf_annotations and found:
        db.write(notify.chronograf_lines(found, settings.schema.sensor_tag, now), database="chronograf")
    sent = []
    if a.notify_url:
        items = found_incidents + [e for e in known if e.sensor_id not in groups]
        due, state = notify.due_notifications(items, state, a.notify_cooldown, now, a.notify_max_age)
        context = notify.Context(measurement=settings.schema.output_measurement,
                                 sensor_tag=settings.schema.sensor_tag, group_tag=a.incident_tag or "group",
                                 incident_measurement=a.incidents_measurement)
        for item in due:
            try:
                notify.post(a.notify_url, notify.payload(item, a.notify_style, context), settings.connection.timeout_s)
            except notify.NotifyError as e:
                logger.error("notification not sent: %s", e)
                counts["notify_failed"] += 1
                if e.transient:
                    break
            else:
                sent.append(item)
    state = notify.mark_sent(state, sent, now)
    if scored or text is not None:
        a.state_file.parent.mkdir(parents=True, exist_ok=True)
        temporary = a.state_file.with_name(a.state_file.name + ".tmp")
        temporary.write_text(notify.dump_state(state), encoding="utf-8")
        os.replace(temporary, a.state_file)
    logger.info("%d events (%d incidents), %d notifications sent", len(found), len(found_incidents), len(sent))


def run(settings: PredictSettings) -> int:
    began = time.monotonic()
    counts = dict.fromkeys(("scored", "up_to_date", "no_data", "skipped", "failed", "windows", "anomalies",
                            "notify_failed"), 0)
    scored: dict[str, pd.DataFrame] = {}
    with Influx(settings.connection, settings.schema) as db:
        now = settings.now.floor(settings.interval)
        found = list(settings.sensors) or db.sensor_ids(now - settings.max_catchup, settings.now)
        sensor_ids = [s for s in found if settings.in_shard(s, settings.shard)]
        for first in range(0, len(sensor_ids), settings.chunk_size):
            lines = score_chunk(db, sensor_ids[first:first + settings.chunk_size], settings, counts, scored)
            if settings.dry_run:
                sys.stdout.write("".join(line + "\n" for line in lines))
            elif lines:
                db.write(lines)
        if not settings.dry_run:
            try:
                announce(db, settings, scored, counts)
            except (OSError, InfluxError):
                # The scores are written; only their events, incidents or messages are missing.
                logger.exception("events, incidents and notifications of this run failed (the scores are written; "
                                 "--state-file must be a writable path)")
                counts["notify_failed"] += 1
        status = 1 if counts["failed"] or counts["notify_failed"] else 0
        duration = time.monotonic() - began
        if not settings.dry_run:
            db.record_run("sensor_predict", socket.gethostname(), {
                "duration_s": round(duration, 3), "sensors_selected": len(sensor_ids),
                "sensors_done": counts["scored"] + counts["up_to_date"] + counts["no_data"],
                "sensors_skipped": counts["skipped"], "sensors_failed": counts["failed"],
                "windows": counts["windows"], "anomalies": counts["anomalies"], "exit_status": status,
            }, time.time_ns())
    logger.info("done in %.1fs: %d sensors scored (%d windows, %d anomalies), %d up to date, %d without new data, "
                "%d skipped, %d failed%s", duration, counts["scored"], counts["windows"],
                counts["anomalies"], counts["up_to_date"], counts["no_data"], counts["skipped"], counts["failed"],
                " (dry run: nothing written)" if settings.dry_run else "")
    return status


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.configure(args.log_level, args.log_format)
    try:
        settings = settings_from_args(args)
    except ConfigError as e:
        logger.error("configuration: %s", e)
        return 2
    try:
        with artifacts.job_lock(settings.models_dir, "sensor_predict"):
            return run(settings)
    except artifacts.LockedError as e:
        logger.warning("%s", e)
        return artifacts.EXIT_LOCKED
    except InfluxError as e:
        logger.error("%s", e)
        return 1


if __name__ == "__main__":
    sys.exit(main())
