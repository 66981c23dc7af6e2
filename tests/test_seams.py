"""Seams: what the jobs promise about time, checked where their runs meet (README: Scheduling, How it decides,
Data in and out, Thresholds and persistence).

A cron tick scores only what became due since the last one, so a promise about a range holds only if every
tick hands the next one exactly what it needs: where scoring resumes, how far back it may reach, which
readings it waits for, the windows before the first due one that persistence and the dynamic threshold
decide from, and the model that was on disk when it started. Each test runs the jobs as processes, as cron
does, against the real throwaway influxd of tests/conftest.py, on generated readings with known events
(tools/sensor_data.py), and checks what the server holds afterwards. Those marked ``both_dialects`` run again
against the imitation of InfluxDB 2.7, in Flux (tests/conftest.py, ``influx``).

The models are tiny (window 4, 4 units, 2 epochs), trained once for the module and copied for each test:
the tests judge the seams, not the model.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import run_job, tiny_training

from anomaly import store
from tools import sensor_data

T0 = pd.Timestamp("2026-03-01T00:00:00Z")
TRAINED = T0 + pd.Timedelta(days=3)  # training range [T0, TRAINED); every tick scores after it
END = T0 + pd.Timedelta(days=12)
SAMPLE = pd.Timedelta(minutes=5)
INTERVAL = pd.Timedelta(minutes=15)
WINDOW = 4
NORMAL = "AHU-1 supply air temp"
EVENTFUL = 'boiler 2, loop="hot" ü'
SENSORS = [NORMAL, EVENTFUL]
SEED = 5
# A spike on EVENTFUL in the hours the tick-by-tick tests walk through: its interval is in the windows ending
# there and in the WINDOW - 1 intervals after it.
SPIKE = T0 + pd.Timedelta(days=5, minutes=30)
# The job's defaults that these promises depend on.
DELAY = pd.Timedelta(minutes=2)
FIRST_RUN = pd.Timedelta(days=1)
TRAIN = tiny_training(T0, TRAINED)
FIELDS = ("val_num", "loss", "threshold", "anomaly", "kind", "smoothed_loss", "score")


# ---------------------------------------------------------------- data and jobs


def readings(without: tuple[pd.Timestamp, ...] = ()) -> list[str]:
    """Line protocol for both sensors over [T0, END), every 5 minutes, the readings at ``without`` left out
    (they arrive later in a test). EVENTFUL has one spike at SPIKE."""
    index = pd.date_range(T0, END, freq=SAMPLE, inclusive="left")
    lines = []
    for sensor_id in SENSORS:
        values = sensor_data.normal_readings(sensor_id, index, SEED)
        if sensor_id == EVENTFUL:
            values, _ = sensor_data.inject(values, index, sensor_id, "spike", SPIKE, SAMPLE)
        keep = ~index.isin(pd.DatetimeIndex(without))
        lines += sensor_data.readings_lines(sensor_id, index[keep], values[keep])
    return lines


def reading(sensor_id: str, at: pd.Timestamp) -> float:
    """The generated reading of a sensor at ``at``, as ``readings`` writes it away from the spike."""
    index = pd.date_range(T0, END, freq=SAMPLE, inclusive="left")
    return float(sensor_data.normal_readings(sensor_id, index, SEED)[index.get_loc(at)])


def config_args(directory: Path, ratios: dict[str, float] | None = None) -> list[str]:
    (directory / "ratios.json").write_text(json.dumps(ratios or {}))
    (directory / "windows.json").write_text(json.dumps({"default": WINDOW}))
    return ["--ratios", str(directory / "ratios.json"), "--windows", str(directory / "windows.json")]


class Jobs:
    """The jobs as cron runs them, against one test's database (on the test's ``influx``), models and working
    directory."""

    def __init__(self, influx, database: str, models: Path, workdir: Path):
        self.influx, self.database, self.models, self.workdir = influx, influx.create(database), models, workdir
        self.env = influx.env(database)

    def predict(self, now: pd.Timestamp, *extra: str, ratios: dict[str, float] | None = None) -> int:
        """One scoring run at ``now``; returns the windows it says it scored (its summary line)."""
        args = ["--models-dir", str(self.models), "--now", now.isoformat(), "--no-cold-start", *extra]
        result = self.run("sensor_predict.py", [*args, *config_args(self.workdir, ratios)])
        summary = re.search(r"done in [\d.]+s: \d+ sensors scored \((\d+) windows", result.stderr)
        assert summary, result.stderr
        return int(summary.group(1))

    def train(self, *extra: str) -> None:
        self.run("sensor_training.py", [*TRAIN, "--models-dir", str(self.models), *extra, *config_args(self.workdir)])

    def run(self, script: str, args: list[str]) -> subprocess.CompletedProcess:
        result = run_job(script, args, self.env, self.workdir, timeout=300)
        assert result.returncode == 0, result.stderr
        return result

    def points(self, sensor_id: str, measurement: str = "PREDICT_ANOMALY") -> pd.DataFrame:
        """A sensor's points in ``measurement``, read straight from the server, by time."""
        return self.influx.points(self.database, measurement, list(FIELDS), uniqueID=sensor_id)

    def write(self, lines: list[str]) -> None:
        self.influx.write(self.database, lines)


def grid(first: pd.Timestamp, last: pd.Timestamp) -> pd.DatetimeIndex:
    """Window ends from ``first`` to ``last``, both included."""
    return pd.date_range(first, last, freq=INTERVAL)


def tick(boundary: pd.Timestamp) -> pd.Timestamp:
    """The cron tick (*/5) just after ``boundary`` (an interval start): the first whose delay has passed."""
    return boundary + pd.Timedelta(minutes=5)


def assert_scored(jobs: Jobs, first: pd.Timestamp, last: pd.Timestamp) -> None:
    """Each sensor has a score at every window end in [first, last] and nowhere else."""
    for sensor_id in SENSORS:
        times = jobs.points(sensor_id).index
        expected = grid(first, last)
        missing, extra = expected.difference(times), times.difference(expected)
        assert times.equals(expected), (
            f"{sensor_id!r}: {len(missing)} missing ({list(missing[:2])} ..), {len(extra)} extra ({list(extra[:2])} ..)"
        )


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def trained(influx, tmp_path_factory):
    """A models directory with a model of each sensor, trained once for the module (and dialect)."""
    workdir = tmp_path_factory.mktemp(f"seams-trained-{influx.dialect}")
    jobs = Jobs(influx, f"seams_training_{influx.dialect}", workdir / "models", workdir)
    jobs.write(readings())
    jobs.train()
    return workdir / "models"


@pytest.fixture
def unseeded(influx, trained, tmp_path) -> Jobs:
    """This test's database, empty, and its own copy of the models."""
    shutil.copytree(trained, tmp_path / "models")
    return Jobs(influx, f"seams_{tmp_path.name}"[:60], tmp_path / "models", tmp_path)


@pytest.fixture
def jobs(unseeded) -> Jobs:
    """This test's database, seeded with every reading, and its own copy of the models."""
    unseeded.write(readings())
    return unseeded


# ---------------------------------------------------------------- catch-up after a scorer outage


@pytest.mark.both_dialects
@pytest.mark.parametrize(
    "outage", [pd.Timedelta(hours=2), pd.Timedelta(days=1), pd.Timedelta(days=5)], ids=["2h", "1d", "5d"]
)
def test_after_an_outage_within_max_catchup_every_interval_since_the_last_score_is_scored_once(jobs, outage):
    """README, Data in and out: "Each sensor resumes after its newest point in the output measurement, so a
    job that missed runs catches up by itself (at most --max-catchup)", default 7d. The last scores before the
    outage lie further back than --first-run (1d) for the 5-day outage."""
    before = TRAINED + pd.Timedelta(days=1)
    assert jobs.predict(tick(before)) == len(SENSORS) * len(grid(before - FIRST_RUN, before - INTERVAL))
    after = before + outage
    windows = jobs.predict(tick(after))
    assert_scored(jobs, before - FIRST_RUN, after - INTERVAL)
    assert windows == len(SENSORS) * len(grid(before, after - INTERVAL)), "the catch-up scored an interval twice"


@pytest.mark.both_dialects
@pytest.mark.parametrize("first_run", [FIRST_RUN, pd.Timedelta(days=5)], ids=["first-run 1d", "first-run 5d"])
def test_after_an_outage_longer_than_max_catchup_nothing_further_back_is_scored(jobs, first_run):
    """README: --max-catchup "never score further back than this, however long the job was down". A sensor
    scored before the outage is not a first run: it is scored the whole --max-catchup back, whatever
    --first-run says, and nothing before."""
    before = TRAINED + pd.Timedelta(days=1)
    jobs.predict(tick(before))
    after, max_catchup = before + pd.Timedelta(days=5), pd.Timedelta(days=3)
    jobs.predict(tick(after), "--max-catchup", "3d", "--first-run", f"{first_run.days}d")
    for sensor_id in SENSORS:
        times = jobs.points(sensor_id).index
        resumed = times[times >= before]
        assert resumed.equals(grid(after - max_catchup, after - INTERVAL)), f"{sensor_id!r}: {resumed.min()}"


# ---------------------------------------------------------------- ticks and backfills decide alike


@pytest.mark.both_dialects
@pytest.mark.parametrize(
    "rules",
    [
        pytest.param(("--threshold", "fixed", "--min-consecutive", "2"), id="fixed threshold, K=2"),
        pytest.param(("--threshold", "dynamic", "--min-consecutive", "1"), id="dynamic threshold, K=1"),
        pytest.param((), id="the defaults: dynamic threshold, K=2"),
    ],
)
def test_ticks_one_interval_apart_decide_as_one_backfill_over_the_same_range(jobs, rules):
    """README, Thresholds and persistence: a window is flagged when it and the K-1 before it are above the
    threshold, and the dynamic threshold comes from the windows before it, "so a cron tick and a backfill
    decide the same". Eight ticks, each scoring one interval, walk over the spike; a backfill scores the same
    range in one run. Every flag and score must be the same."""
    start, stop = SPIKE.floor("1h"), SPIKE.floor("1h") + 8 * INTERVAL
    jobs.predict(tick(start), *rules)
    for boundary in grid(start + INTERVAL, stop):
        assert jobs.predict(tick(boundary), *rules) == len(SENSORS), f"the tick at {tick(boundary)}"
    backfill = ("--start", start.isoformat(), "--stop", stop.isoformat(), "--output-measurement", "BACKFILL")
    assert jobs.predict(tick(stop), *rules, *backfill) == len(SENSORS) * 8
    for sensor_id in SENSORS:
        ticked, once = jobs.points(sensor_id), jobs.points(sensor_id, "BACKFILL")
        ticked = ticked[(ticked.index >= start) & (ticked.index < stop)]
        assert once.index.equals(grid(start, stop - INTERVAL)) and ticked.index.equals(once.index), sensor_id
        assert ticked["anomaly"].tolist() == once["anomaly"].tolist(), sensor_id
        assert ticked["kind"].tolist() == once["kind"].tolist(), sensor_id
        pd.testing.assert_frame_equal(ticked, once, check_exact=False, rtol=1e-6)
    # The comparison means something only if the range holds flags: the spike is found in the windows that
    # hold it (after the first K-1 of them; the dynamic threshold's smoothed loss stays up a while after).
    flagged = jobs.points(EVENTFUL, "BACKFILL").query("anomaly").index
    assert len(flagged) and SPIKE <= flagged.min() < SPIKE + WINDOW * INTERVAL, list(flagged)


# ---------------------------------------------------------------- a backfill rewrites


@pytest.mark.both_dialects
def test_a_backfill_rewrites_the_same_points_and_scoring_resumes_where_it_was(jobs):
    """README: --start/--stop "score the windows ending in [start, stop), ignoring what is already scored";
    "Points are keyed by sensor and time, so scoring a range again rewrites the same points: never
    duplicates". A backfill with the ratio doubled doubles the threshold of the points in the range, and only
    there; one with the ratio back restores every point; the next tick resumes after the newest score, not
    after the backfill. (Fixed threshold: a dynamic one need not move with the ratio, its floor.)"""
    before = TRAINED + pd.Timedelta(days=1)
    rules = ("--threshold", "fixed")
    jobs.predict(tick(before), *rules)
    stored = {s: jobs.points(s) for s in SENSORS}
    start, stop = before - pd.Timedelta(hours=12), before - pd.Timedelta(hours=6)
    backfill = (*rules, "--start", start.isoformat(), "--stop", stop.isoformat())
    inside = grid(start, stop - INTERVAL)
    assert jobs.predict(tick(before), *backfill, ratios={"default": 2}) == len(SENSORS) * len(inside)
    for sensor_id in SENSORS:
        points, earlier = jobs.points(sensor_id), stored[sensor_id]
        assert points.index.equals(earlier.index), sensor_id
        expected = earlier["threshold"].where(~earlier.index.isin(inside), 2 * earlier["threshold"])
        pd.testing.assert_series_equal(points["threshold"], expected, check_exact=False, rtol=1e-9)
        assert (points["val_num"] == earlier["val_num"]).all()
        assert np.allclose(points["loss"], earlier["loss"], rtol=1e-6, atol=0), sensor_id
    assert jobs.predict(tick(before), *backfill) == len(SENSORS) * len(inside)
    for sensor_id in SENSORS:
        pd.testing.assert_frame_equal(jobs.points(sensor_id), stored[sensor_id], check_exact=False, rtol=1e-6)
    assert jobs.predict(tick(before + INTERVAL), *rules) == len(SENSORS)
    assert_scored(jobs, before - FIRST_RUN, before)


def test_a_backfill_under_other_rules_leaves_nothing_of_the_earlier_rules(unseeded):
    """Issue 11: InfluxDB merges a point into the one already at its key, so a backfill left every field it did
    not write: smoothed_loss, which only the dynamic threshold computed, and the value and loss of a window
    that the backfill finds without readings; and a window it no longer makes stayed whole. Scored with the
    defaults and a --max-gap that fills a 90-minute outage of the readings, then backfilled with a fixed
    threshold and a --max-gap that does not: the range holds exactly what that backfill writes into an empty
    measurement, and the rest is as it was."""
    jobs, before = unseeded, TRAINED + pd.Timedelta(days=1)
    outage = pd.date_range(before - pd.Timedelta(hours=9), periods=18, freq=SAMPLE)  # six whole intervals
    jobs.write(readings(without=tuple(outage)))
    jobs.predict(tick(before), "--max-gap", "2h")
    stored = {s: jobs.points(s) for s in SENSORS}
    start, stop = before - pd.Timedelta(hours=12), before - pd.Timedelta(hours=6)
    backfill = ("--threshold", "fixed", "--max-gap", "1h", "--start", start.isoformat(), "--stop", stop.isoformat())
    jobs.predict(tick(before), *backfill)
    jobs.predict(tick(before), *backfill, "--output-measurement", "FRESH")
    for sensor_id in SENSORS:
        points, earlier, fresh = jobs.points(sensor_id), stored[sensor_id], jobs.points(sensor_id, "FRESH")
        inside = (points.index >= start) & (points.index < stop)
        pd.testing.assert_frame_equal(points[inside], fresh)
        pd.testing.assert_frame_equal(points[~inside], earlier[~earlier.index.isin(grid(start, stop - INTERVAL))])
        # What the earlier rules left there, which the backfill had to clear:
        was = earlier.loc[grid(start, stop - INTERVAL)]
        assert (was["smoothed_loss"] != was["loss"]).any(), "the first run's dynamic threshold smoothed nothing"
        assert was.loc[outage[0] : outage[-1], "loss"].notna().all(), "the first run scored no window in the outage"
        assert (fresh["kind"] == "missing").any() and len(fresh) < len(was), "the backfill made windows at the outage"


# ---------------------------------------------------------------- late readings and --delay


@pytest.mark.both_dialects
def test_a_reading_that_arrives_within_the_delay_counts_and_one_after_its_score_waits_for_a_backfill(unseeded):
    """README: --delay (2m) "score an interval only once it ended this long ago, so readings that arrive late
    still count"; "readings that arrive after their interval was scored are not rescored unless you backfill
    with --start/--stop". The interval's value is the mean of its readings (val_num)."""
    jobs = unseeded
    late = TRAINED + pd.Timedelta(days=1, hours=1)  # the interval [late, late + 15m) gets readings late
    ended = late + INTERVAL
    jobs.write(readings(without=(late + 2 * SAMPLE,)))
    arrived = {s: [reading(s, late), reading(s, late + SAMPLE)] for s in SENSORS}

    def arrive(at: pd.Timestamp, above: float) -> None:
        """A reading of each sensor at ``at``, ``above`` the interval's first one, reaching the server now."""
        for sensor_id in SENSORS:
            arrived[sensor_id].append(arrived[sensor_id][0] + above)
            jobs.write(sensor_data.readings_lines(sensor_id, pd.DatetimeIndex([at]), [arrived[sensor_id][-1]]))

    def value(sensor_id: str) -> float:
        return jobs.points(sensor_id).loc[late, "val_num"]

    assert jobs.predict(ended + DELAY - pd.Timedelta(seconds=1)) == len(SENSORS) * len(
        grid(late - FIRST_RUN, late - INTERVAL)
    )
    for sensor_id in SENSORS:
        assert jobs.points(sensor_id).index[-1] == late - INTERVAL, "an interval was scored before the delay passed"
    arrive(late + 2 * SAMPLE, 3.0)  # 1m59s after its interval ended: within the delay
    assert jobs.predict(ended + DELAY) == len(SENSORS)
    for sensor_id in SENSORS:
        assert value(sensor_id) == pytest.approx(np.mean(arrived[sensor_id]), rel=1e-9), sensor_id
    # A reading that arrives after its interval was scored is not counted by the next tick ...
    scored = {s: value(s) for s in SENSORS}
    arrive(late + pd.Timedelta(minutes=12), 9.0)
    assert jobs.predict(ended + INTERVAL + DELAY) == len(SENSORS)
    assert {s: value(s) for s in SENSORS} == scored
    # ... until a backfill of its range scores it again.
    jobs.predict(ended + INTERVAL + DELAY, "--start", late.isoformat(), "--stop", ended.isoformat())
    for sensor_id in SENSORS:
        assert value(sensor_id) == pytest.approx(np.mean(arrived[sensor_id]), rel=1e-9), sensor_id


# ---------------------------------------------------------------- a retrain between two ticks


def metadata(models: Path) -> dict[str, dict]:
    return {s: json.loads((store.sensor_dir(models, s) / store.METADATA).read_text()) for s in SENSORS}


def only_committed(models: Path, copy: Path) -> Path:
    """A copy of a models directory with only the files each sensor's metadata.json names: no earlier version
    (README, Models: "The previous version's files are kept one cycle")."""
    shutil.copytree(models, copy)
    for sensor_id, record in metadata(copy).items():
        named = {store.METADATA, *record["files"].values()}
        for path in store.sensor_dir(copy, sensor_id).iterdir():
            if path.name not in named:
                path.unlink()
    return copy


@pytest.mark.both_dialects
def test_the_tick_after_a_retrain_scores_with_the_new_model_and_loses_no_interval(jobs, tmp_path):
    """README, Models: a save writes new files under a new version, then replaces metadata.json atomically,
    and keeps the previous version's files one cycle; the scorer loads each sensor's model when it runs. The
    ticks before and after a retrain on a newer range meet with no interval lost or scored twice, and the one
    after scores as the new model alone does (fixed rule: its threshold is the new threshold × ratio)."""
    before = TRAINED + pd.Timedelta(days=1)
    rules = ("--threshold", "fixed", "--min-consecutive", "1")
    jobs.predict(tick(before), *rules)
    old = metadata(jobs.models)
    jobs.train("--start", (T0 + pd.Timedelta(days=1)).isoformat(), "--stop", before.isoformat())
    new = metadata(jobs.models)
    after = before + pd.Timedelta(hours=1)
    assert jobs.predict(tick(after), *rules) == len(SENSORS) * 4
    assert_scored(jobs, before - FIRST_RUN, after - INTERVAL)
    # The same windows scored by the new model with no earlier version beside it.
    alone = Jobs(jobs.influx, jobs.database, only_committed(jobs.models, tmp_path / "new-models"), tmp_path)
    backfill = ("--start", before.isoformat(), "--stop", after.isoformat(), "--output-measurement", "NEW_MODEL")
    assert alone.predict(tick(after), *rules, *backfill) == len(SENSORS) * 4
    for sensor_id in SENSORS:
        assert new[sensor_id]["version"] != old[sensor_id]["version"]
        assert new[sensor_id]["threshold"] != pytest.approx(old[sensor_id]["threshold"], rel=1e-6)
        points = jobs.points(sensor_id)
        threshold = points["threshold"]
        assert (threshold[threshold.index < before] == old[sensor_id]["threshold"]).all(), sensor_id
        assert (threshold[threshold.index >= before] == new[sensor_id]["threshold"]).all(), sensor_id
        by_new = jobs.points(sensor_id, "NEW_MODEL")
        pd.testing.assert_frame_equal(points.loc[by_new.index], by_new, check_exact=False, rtol=1e-6)
