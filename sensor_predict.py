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

import dataclasses
import logging
import sys
import time
from pathlib import Path

from anomaly import files, loss_memory, parallel, rescore, runner
from anomaly.alerts import announce as alerts
from anomaly.errors import ConfigError
from anomaly.predict_settings import PredictSettings, add_arguments, settings_from_args
from anomaly.scoring_run import Run
from influx_interact import Database, InfluxError

logger = logging.getLogger("sensor_predict")


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


def score(job: Run) -> list[str]:
    """Score every selected sensor, a chunk at a time (one read and one write each); returns the sensors."""
    settings, common, db = job.settings, job.common, job.db
    now = common.now.floor(common.interval)
    sensor_ids = runner.sensors_to_process(common, db, now - settings.schedule.max_catchup, common.now)
    chunks = [sensor_ids[first : first + common.chunk_size] for first in range(0, len(sensor_ids), common.chunk_size)]
    # While a chunk is scored and written, the next one's readings are read and the one after's models loaded.
    gathering = job.gathering
    for gathered in parallel.ahead(gathering.gather, parallel.ahead(gathering.load, chunks)):
        job.due = {}
        lines = job.score_chunk(gathered)
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
    job = Run(settings, db, rescore.load(settings.rescore_file) if settings.schedule.start is None else {})
    packs = job.gathering.packs
    try:
        sensor_ids = score(job)
    finally:
        if packs is not None:
            packs.close()
    if job.memory is not None and not settings.dry_run:
        job.memory.forget((common.now - settings.schedule.max_catchup).value // 10**9)
        loss_memory.save(settings.loss_memory_file, job.memory)
    logger.debug("%d losses of history windows taken from %s", job.remembered, settings.loss_memory_file)
    if job.counts["unpacked"]:
        logger.info(
            "%d models were loaded from their own files, not from the packed model store (%s): trained or changed "
            "since it was built, or never packed; the next sensor_training.py run packs them",
            job.counts["unpacked"],
            ", ".join(p.path.name for p in packs.packs) if packs and packs.packs else "none found",
        )
    counts = job.counts
    if not settings.dry_run:
        try:
            alerts.announce(
                db, settings.alerts, common, settings.schedule.max_catchup, job.scored, job.window_of, counts
            )
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
