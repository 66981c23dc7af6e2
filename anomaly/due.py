"""What a scoring run has due for each sensor: the windows after its newest score in the output measurement,
or a backfill's range, or again from where an earlier run's write failed (rescore.py).

Its log lines are the job's: they are logged as ``sensor_predict``, the name operators filter the job's log by.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import pandas as pd

import model_predict
from anomaly import times
from influx_interact import Database
from model_predict import Schedule

logger = logging.getLogger("sensor_predict")


def due_ranges(
    db: Database, schedule: Schedule, sensor_ids: list[str], pending: Mapping[str, pd.Timestamp], output: str
) -> tuple[dict[str, tuple[pd.Timestamp, pd.Timestamp]], dict[str, pd.Timestamp]]:
    """Each sensor's due range [first, last] of window ends, and the newest score of each sensor with none due.
    ``pending``: where an earlier run's write failed, scored again from there; ``output``: the output
    measurement, for the log."""
    last_scored = {} if schedule.start is not None else newest_scores(db, schedule, sensor_ids, output)
    for sensor_id in set(sensor_ids) & set(pending):
        again = pending[sensor_id] - schedule.interval
        logger.warning(
            "sensor %r: scored again from %s, where an earlier run's write failed",
            sensor_id,
            times.format_time(pending[sensor_id]),
        )
        last_scored[sensor_id] = min(again, last_scored.get(sensor_id, again))
    # Once per distinct last score: after a tick, every sensor has the same.
    found = {at: model_predict.score_range(at, schedule) for at in {last_scored.get(s) for s in sensor_ids}}
    ranges = {s: found[last_scored.get(s)] for s in sensor_ids}
    due = {s: r for s, r in ranges.items() if r is not None}
    return due, {s: last_scored[s] for s, r in ranges.items() if r is None}


def newest_scores(db: Database, schedule: Schedule, sensor_ids: list[str], output: str) -> dict[str, pd.Timestamp]:
    """Each sensor's newest score, where its scoring resumes. A point dated after now (a clock that was
    wrong, a hand-written test point) would hold a sensor's scoring back until then: it is passed over,
    with a warning, and the newest score before now counts. A sensor whose newest score is older than
    --max-catchup (the scorer was down longer) resumes --max-catchup back, not --first-run back as a
    sensor never scored would. Both take one more query, for those sensors only."""
    since = schedule.now.floor(schedule.interval) - schedule.max_catchup - schedule.interval
    newest = db.last_scored(sensor_ids, since)
    ahead = sorted(s for s, at in newest.items() if at > schedule.now)
    for sensor_id in ahead:
        logger.warning(
            "sensor %r: a score in %s is dated %s, after now (%s); scoring resumes from the newest score "
            "before now; delete the points dated in the future",
            sensor_id,
            output,
            times.format_time(newest[sensor_id]),
            times.format_time(schedule.now),
        )
        del newest[sensor_id]
    # One more query covers both: the sensors whose newest score lay ahead, and those without a recent one.
    absent = [s for s in sensor_ids if s not in newest]
    if absent:
        newest |= db.last_scored(absent, pd.Timestamp(0, tz="UTC"), until=schedule.now)
    return newest
