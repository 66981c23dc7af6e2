#!/usr/bin/env python3
"""Frequent job: score every interval not yet scored for each sensor with a model, write scores to InfluxDB.

Each sensor resumes after its newest score in the output measurement (the last day on a first run, at
most --max-catchup back), so a job that missed ticks catches up by itself, and a rerun rewrites the same
points instead of adding new ones. Only complete intervals are scored.

Exit status: 0 when nothing failed; 1 when a sensor failed, a notification was not sent, the events,
incidents and notifications step failed, or the database could not be used (the summary line and the
JOB_HEALTH fields sensors_failed, notifications_failed and alerts_failed say which); 2 for bad
configuration; 75 when another scoring run for the same models directory is still going (this one does
nothing).
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

import model_predict
from anomaly import cold_start, detect, files, losses, pack, rescore, runner, settings, store, times
from anomaly.alerts import announce as alerts
from anomaly.chunk import Chunk, Cut
from anomaly.errors import ConfigError
from anomaly.metadata import ArtifactError
from anomaly.settings import Common
from influx_interact import Database, InfluxError
from model_predict import Policy, Schedule, SensorModel

logger = logging.getLogger("sensor_predict")
COUNTS = (
    "scored",
    "up_to_date",
    "no_data",
    "skipped",
    "failed",
    "windows",
    "anomalies",
    "missing",
    "notifications_failed",
    "alerts_failed",
)


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
    )


def settled(former: Path, path: Path, move: bool) -> Path:
    """Where a file that an earlier version kept at ``former`` (in the models directory) is used from: moved
    to ``path`` unless a file is there already, so an upgrade forgets no ongoing event and no range to score
    again. Where it lies, on a dry run (which moves nothing) or when it cannot be moved (logged): this run
    keeps using it there rather than start with no memory."""
    if path.exists() or not former.exists():
        return path
    if not move:
        return former
    try:
        files.move(former, path)
    except OSError as e:
        logger.error("%s cannot be moved to %s (%s); it is used where it is until it can be", former, path, e)
        return former
    logger.warning("%s moved to %s, where it is kept from now on", former, path)
    return path


def with_former_state(settings: PredictSettings) -> PredictSettings:
    """``settings`` with the state and rescore files where ``settled`` finds them (upgrades from versions that
    kept them in the models directory)."""
    former = settings.alerts.former_state_file
    if former is None:
        return settings
    move = not settings.dry_run
    return dataclasses.replace(
        settings,
        alerts=dataclasses.replace(settings.alerts, state_file=settled(former, settings.alerts.state_file, move)),
        rescore_file=settled(rescore.beside(former), settings.rescore_file, move),
    )


class Run:
    """One scoring run: its settings, its database, its counts and the scores kept for the events."""

    def __init__(self, settings: PredictSettings, db: Database):
        self.settings = settings
        self.common = settings.common
        self.db = db
        self.counts = dict.fromkeys(COUNTS, 0)
        self.scored: dict[str, detect.Scores] = {}
        self.pending = rescore.load(settings.rescore_file) if settings.schedule.start is None else {}
        self.due: dict[str, tuple[pd.Timestamp, pd.Timestamp]] = {}
        # The NumPy engine reads the models from the packed store (anomaly/pack.py), opened once per run.
        self.packs = pack.PackedStore.open(self.common.models_dir) if settings.engine == "numpy" else None
        self.unpacked = 0
        # A backfill that writes clears what it does not write over (clear_stale): per sensor of the chunk, the
        # ranges it holds no window in, and the chunk's points without a loss.
        self.clears = settings.schedule.start is not None and not settings.dry_run
        self.stale: dict[str, list[tuple[pd.Timestamp, pd.Timestamp]]] = {}
        self.unscored: list[str] = []

    def fail(self, sensor_id: str) -> None:
        logger.exception("sensor %r: failed", sensor_id)
        self.counts["failed"] += 1

    def load_models(self, sensor_ids: list[str]) -> tuple[dict[str, SensorModel], list[str]]:
        """Usable models of a chunk by sensor id, and the sensors with no model yet for the cold-start
        detector; logs and counts the sensors that cannot be scored."""
        models, cold = {}, []
        packed = self.packs.models(sensor_ids) if self.packs is not None else {}
        for sensor_id in sensor_ids:
            if sensor_id in packed:
                model = SensorModel(*packed[sensor_id])
            else:
                directory = store.sensor_dir(self.common.models_dir, sensor_id)
                if not (directory / store.METADATA).exists():
                    if self.settings.cold_start is not None:
                        cold.append(sensor_id)
                        continue
                    logger.info("sensor %r: skipped: no model in %s; run sensor_training.py", sensor_id, directory)
                    self.counts["skipped"] += 1
                    continue
                # Not packed, or retrained, changed or damaged since it was: its own files decide, as they
                # always did.
                self.unpacked += self.packs is not None
                try:
                    model = model_predict.load_sensor_model(directory, self.settings.engine)
                except ArtifactError as e:
                    logger.error("sensor %r: failed: %s", sensor_id, e)
                    self.counts["failed"] += 1
                    continue
            problem = model.metadata.mismatch(self.common.sensor_config.window(sensor_id), self.common.interval)
            if problem:
                logger.warning("sensor %r: skipped: %s", sensor_id, problem)
                self.counts["skipped"] += 1
                continue
            models[sensor_id] = model
        return models, cold

    def due_ranges(self, sensor_ids: list[str]) -> dict[str, tuple[pd.Timestamp, pd.Timestamp]]:
        """What each sensor has due, from its last score in the output measurement; logs the ones up to date."""
        if not sensor_ids:
            return {}
        schedule = self.settings.schedule
        last_scored = {} if schedule.start is not None else self.last_scored(sensor_ids)
        for sensor_id in set(sensor_ids) & set(self.pending):
            again = self.pending[sensor_id] - schedule.interval
            logger.warning(
                "sensor %r: scored again from %s, where an earlier run's write failed",
                sensor_id,
                times.format_time(self.pending[sensor_id]),
            )
            last_scored[sensor_id] = min(again, last_scored.get(sensor_id, again))
        ranges = {s: model_predict.score_range(last_scored.get(s), schedule) for s in sensor_ids}
        for sensor_id in [s for s, r in ranges.items() if r is None]:
            logger.info("sensor %r: nothing due: scored up to %s", sensor_id, times.format_time(last_scored[sensor_id]))
            self.counts["up_to_date"] += 1
        due = {s: r for s, r in ranges.items() if r is not None}
        self.due.update(due)
        return due

    def last_scored(self, sensor_ids: list[str]) -> dict[str, pd.Timestamp]:
        """Each sensor's newest score, where its scoring resumes. A point dated after now (a clock that was
        wrong, a hand-written test point) would hold a sensor's scoring back until then: it is passed over,
        with a warning, and the newest score before now counts. A sensor whose newest score is older than
        --max-catchup (the scorer was down longer) resumes --max-catchup back, not --first-run back as a
        sensor never scored would. Both take one more query, for those sensors only."""
        schedule = self.settings.schedule
        since = schedule.now.floor(schedule.interval) - schedule.max_catchup - schedule.interval
        newest = self.db.last_scored(sensor_ids, since)
        ahead = sorted(s for s, at in newest.items() if at > schedule.now)
        for sensor_id in ahead:
            logger.warning(
                "sensor %r: a score in %s is dated %s, after now (%s); scoring resumes from the newest score "
                "before now; delete the points dated in the future",
                sensor_id,
                self.common.schema.output_measurement,
                times.format_time(newest[sensor_id]),
                times.format_time(schedule.now),
            )
            del newest[sensor_id]
        # One more query covers both: the sensors whose newest score lay ahead, and those without a recent one.
        absent = [s for s in sensor_ids if s not in newest]
        if absent:
            newest |= self.db.last_scored(absent, pd.Timestamp(0, tz="UTC"), until=schedule.now)
        return newest

    def no_window(self, sensor_id: str, first: pd.Timestamp, last: pd.Timestamp) -> None:
        logger.info(
            "sensor %r: no complete window ends in %s .. %s",
            sensor_id,
            times.format_time(first),
            times.format_time(last),
        )
        self.counts["no_data"] += 1

    def read(
        self, due: dict[str, tuple[pd.Timestamp, pd.Timestamp]], before: dict[str, pd.Timedelta]
    ) -> tuple[dict[str, pd.Series], tuple[pd.Timestamp, pd.Timestamp]]:
        """One read for a chunk: from the earliest reading any due sensor needs to the end of the latest."""
        start = min(first - before[s] for s, (first, _) in due.items())
        stop = max(last for _, last in due.values()) + self.common.interval
        return self.db.read_means(list(due), start, stop, self.common.interval), (start, stop)

    def score_chunk(self, sensor_ids: list[str]) -> list[str]:
        """Score one chunk of sensors with one read; return the lines to write."""
        models, cold = self.load_models(sensor_ids)
        lines = self.score_cold(cold) if cold else []
        due = self.due_ranges(list(models))
        if not due:
            return lines
        policy, interval = self.settings.policy, self.common.interval
        leads = {s: model_predict.lead(models[s], policy, interval) for s in due}
        data, read = self.read(
            due, {s: decided + readings + self.common.max_gap for s, (decided, readings) in leads.items()}
        )
        if not data:
            # Not one reading for a whole chunk is a wrong --field or --measurement far more often than a chunk
            # of dead sensors: say so once rather than flag every sensor as missing.
            logger.warning(
                "no readings at all for %d sensors in %s .. %s; check --measurement and --field",
                len(due),
                times.format_time(read[0]),
                times.format_time(read[1]),
            )
            for sensor_id, (first, last) in due.items():
                self.no_window(sensor_id, first, last)
            return lines
        chunk = Chunk.of(data, list(due), interval, read, self.common.max_gap_points)
        ranges = {s: (first - leads[s][0], last) for s, (first, last) in due.items()}
        windows = self.windows(chunk, models, ranges)
        for sensor_id in [s for s in due if s not in chunk.rows]:
            try:
                prepared = model_predict.prepare(
                    data.get(sensor_id, no_readings()),
                    models[sensor_id],
                    interval,
                    read,
                    self.common.max_gap_points,
                    *ranges[sensor_id],
                )
                windows[sensor_id] = prepared
            except Exception:
                self.fail(sensor_id)
        scored = [s for s in due if s in windows]
        try:
            found = dict(
                zip(
                    scored,
                    losses.fleet_losses(
                        [models[s] for s in scored], [windows[s].windows for s in scored], self.settings.engine
                    ),
                )
            )
        except Exception:
            logger.exception(
                "failed to compute the losses of %d sensors: %s", len(scored), ", ".join(map(repr, scored))
            )
            self.counts["failed"] += len(scored)
            return lines
        rules = {s: model_predict.rules_for(models[s], self.common.sensor_config.ratio(s), policy) for s in scored}
        scorings = self.deciders(chunk, windows, found, rules, due)
        for sensor_id in scored:
            if sensor_id in scorings:
                lines += self.decide(sensor_id, scorings[sensor_id], due[sensor_id], rules[sensor_id].threshold)
        return lines

    def windows(
        self, chunk: Chunk, models: dict[str, SensorModel], ranges: dict[str, tuple[pd.Timestamp, pd.Timestamp]]
    ) -> dict[str, Cut | model_predict.Prepared]:
        """The windows of the chunk's sensors on its grid, cut at once (their end positions with them)."""
        placed = [s for s in ranges if s in chunk.rows]
        try:
            cut = chunk.windows(placed, [models[s].metadata for s in placed], [ranges[s] for s in placed])
        except Exception:
            logger.exception("failed to cut the windows of %d sensors: %s", len(placed), ", ".join(map(repr, placed)))
            self.counts["failed"] += len(placed)
            return {}
        return dict(zip(placed, cut))

    def deciders(
        self,
        chunk: Chunk,
        windows: dict[str, Cut | model_predict.Prepared],
        found: dict[str, np.ndarray],
        rules: dict[str, detect.Rules],
        due: dict[str, tuple[pd.Timestamp, pd.Timestamp]],
    ) -> dict[str, Callable[[], detect.Scores]]:
        """How each sensor's scores are made: the sensors on the chunk's grid decided at once (Chunk.decide),
        the others alone (model_predict.decide)."""
        together = [s for s, w in windows.items() if isinstance(w, Cut)]
        out: dict[str, Callable[[], detect.Scores]] = {}
        if together:
            try:
                decided = chunk.decide(
                    together,
                    [windows[s].ends for s in together],
                    [found[s] for s in together],
                    [rules[s] for s in together],
                    [due[s] for s in together],
                )
                out = dict(zip(together, decided))
            except Exception:
                logger.exception("failed to decide %d sensors: %s", len(together), ", ".join(map(repr, together)))
                self.counts["failed"] += len(together)
        for sensor_id, prepared in windows.items():
            if isinstance(prepared, model_predict.Prepared):
                out[sensor_id] = functools.partial(
                    model_predict.decide,
                    prepared,
                    found[sensor_id],
                    rules[sensor_id],
                    self.common.interval,
                    *due[sensor_id],
                )
        return out

    def decide(
        self,
        sensor_id: str,
        scoring: Callable[[], detect.Scores],
        due: tuple[pd.Timestamp, pd.Timestamp],
        threshold: float,
        detector: str = "lstm",
    ) -> list[str]:
        """A sensor's scores and their lines inside its error boundary; logs its one line."""
        try:
            scores = scoring()
            lines = model_predict.score_lines(sensor_id, scores, self.common.schema, detector)
        except Exception:
            self.fail(sensor_id)
            return []
        if self.clears and len(scores.ends):
            self.stale[sensor_id] = model_predict.without_windows(scores, *due, self.common.interval)
            self.unscored += [line for line, void in zip(lines, np.isnan(scores.loss)) if void]
        if not len(scores.ends):
            if detector == "lstm":
                self.no_window(sensor_id, *due)
            else:
                logger.info(
                    "sensor %r: no model yet, and less than %s of readings before %s for the cold-start detector",
                    sensor_id,
                    times.format_duration(self.settings.cold_start.min_history),
                    times.format_time(due[1]),
                )
                self.counts["no_data"] += 1
            return lines
        self.record(
            sensor_id,
            scores,
            threshold,
            "windows" if detector == "lstm" else "readings (no model yet: robust detector)",
        )
        return lines

    def clear_stale(self) -> None:
        """After a backfill's chunk is written: InfluxDB merges a point into the one already at its key, so where
        this run wrote a point without a loss, or none (no window), an earlier run's fields would remain. Those
        ranges are deleted now that the windows are written, and the points without a loss written again: a
        run that dies midway never loses a score it did not replace."""
        self.db.delete_scores({s: spans for s, spans in self.stale.items() if spans})
        self.db.write(self.unscored)
        self.stale, self.unscored = {}, []

    def score_cold(self, sensor_ids: list[str]) -> list[str]:
        """Sensors with no model yet, scored by the robust detector until training gives them one (see
        cold_start.py); one read for all of them, reaching back over their history."""
        due = self.due_ranges(sensor_ids)
        if not due:
            return []
        cold, interval = self.settings.cold_start, self.common.interval
        data, read = self.read(due, dict.fromkeys(due, cold.history))
        lines = []
        for sensor_id, (first, last) in due.items():
            threshold = cold.z * self.common.sensor_config.ratio(sensor_id)
            scoring = functools.partial(
                cold_start.cold_scores, data.get(sensor_id, no_readings()), interval, read, cold, threshold, first, last
            )
            lines += self.decide(sensor_id, scoring, (first, last), threshold, detector="robust")
        return lines

    def record(self, sensor_id: str, scores: detect.Scores, threshold: float, what: str) -> None:
        """Keep a sensor's scores for the events, count them, and log its one line."""
        self.scored[sensor_id] = scores
        flagged = int(scores.anomaly.sum())
        windows = int(np.isfinite(scores.loss).sum())
        self.counts["scored"] += 1
        self.counts["windows"] += windows
        self.counts["anomalies"] += flagged
        self.counts["missing"] += len(scores.ends) - windows
        if not logger.isEnabledFor(logging.INFO):
            return  # formatted only when logged: a tick at WARNING decides thousands of sensors
        kinds = pd.Series(scores.kind[scores.anomaly]).value_counts() if flagged else {}
        logger.info(
            "sensor %r: %d %s%s %s .. %s, %d anomalies%s, threshold %.4f",
            sensor_id,
            windows,
            what,
            f" and {len(scores.ends) - windows} intervals without readings" if len(scores.ends) > windows else "",
            times.format_time(scores.ends[0]),
            times.format_time(scores.ends[-1]),
            flagged,
            " (" + ", ".join(f"{n} {kind}" for kind, n in kinds.items()) + ")" if flagged else "",
            threshold,
        )


def no_readings() -> pd.Series:
    return pd.Series(dtype="float64", index=pd.DatetimeIndex([], tz="UTC"))


def score(job: Run) -> list[str]:
    """Score every selected sensor, a chunk at a time (one read and one write each); returns the sensors."""
    settings, common, db = job.settings, job.common, job.db
    now = common.now.floor(common.interval)
    sensor_ids = runner.sensors_to_process(common, db, now - settings.schedule.max_catchup, common.now)
    for first in range(0, len(sensor_ids), common.chunk_size):
        job.due = {}
        lines = job.score_chunk(sensor_ids[first : first + common.chunk_size])
        if settings.dry_run:
            sys.stdout.write("".join(line + "\n" for line in lines))
            continue
        try:
            if lines:
                db.write(lines)
            if job.clears:
                job.clear_stale()
        except InfluxError:
            rescore.save(settings.rescore_file, rescore.failed(job.pending, job.due))
            raise
        job.pending = {s: at for s, at in job.pending.items() if s not in job.due}
    if not settings.dry_run and settings.schedule.start is None:
        oldest = now - settings.schedule.max_catchup
        rescore.save(settings.rescore_file, {s: at for s, at in job.pending.items() if at >= oldest})
    return sensor_ids


def run(settings: PredictSettings, db: Database) -> runner.Outcome:
    began = time.monotonic()
    common = settings.common
    if not common.models_dir.is_dir():
        # A mistyped path would otherwise score the whole fleet with the cold-start detector, quietly.
        raise ConfigError(
            f"--models-dir {common.models_dir}: no such directory; fix the path, or run sensor_training.py "
            "(which makes it) first; to score with the cold-start detector before any training, create it"
        )
    settings = with_former_state(settings)
    job = Run(settings, db)
    try:
        sensor_ids = score(job)
    finally:
        if job.packs is not None:
            job.packs.close()
    if job.unpacked:
        logger.info(
            "%d models were loaded from their own files, not from the packed model store (%s): trained or changed "
            "since it was built, or never packed; the next sensor_training.py run packs them",
            job.unpacked,
            ", ".join(p.path.name for p in job.packs.packs) if job.packs and job.packs.packs else "none found",
        )
    counts = job.counts
    if not settings.dry_run:
        try:
            alerts.announce(db, settings.alerts, common, settings.schedule.max_catchup, job.scored, counts)
        except (OSError, InfluxError):
            # The scores are written; only their events, incidents or messages are missing.
            logger.exception(
                "events, incidents and notifications of this run failed (the scores are written; "
                "--state-file must be a writable path)"
            )
            counts["alerts_failed"] += 1
    # Every count that makes the status 1 is in the summary line and the health point, so both say why.
    status = 1 if counts["failed"] or counts["notifications_failed"] or counts["alerts_failed"] else 0
    logger.info(
        "done in %.1fs: %d sensors scored (%d windows, %d anomalies, %d intervals without readings), %d up to date, "
        "%d without new data, %d skipped, %d failed, %d notifications failed%s%s",
        time.monotonic() - began,
        counts["scored"],
        counts["windows"],
        counts["anomalies"],
        counts["missing"],
        counts["up_to_date"],
        counts["no_data"],
        counts["skipped"],
        counts["failed"],
        counts["notifications_failed"],
        "; the events, incidents and notifications step failed" if counts["alerts_failed"] else "",
        " (dry run: nothing written)" if settings.dry_run else "",
    )
    return runner.Outcome(
        status,
        None
        if settings.dry_run
        else {
            "sensors_selected": len(sensor_ids),
            "sensors_done": counts["scored"] + counts["up_to_date"] + counts["no_data"],
            "sensors_skipped": counts["skipped"],
            "sensors_failed": counts["failed"],
            "windows": counts["windows"],
            "anomalies": counts["anomalies"],
            "missing": counts["missing"],
            "notifications_failed": counts["notifications_failed"],
            "alerts_failed": counts["alerts_failed"],
        },
    )


JOB = runner.Job("sensor_predict", __doc__, add_arguments, settings_from_args, run, lock=True)

if __name__ == "__main__":
    sys.exit(runner.main(JOB))
