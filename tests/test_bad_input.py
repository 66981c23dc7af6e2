"""Bad input: odd readings, odd ids, odd timestamps, an empty database, broken configuration files.

A fleet of sensors, each with one kind of bad input, is written to a real influxd; both jobs run over it
as processes (one sensor per chunk, so each sensor's reads are its own) and each test checks what became
of one sensor: trained or skipped with a specific reason, scored for every interval or failed with a
message naming it, and never at the cost of the others.

Some bad input never reaches the jobs, because InfluxDB 1.x refuses it
(``test_what_the_server_refuses``): NaN, infinities and numbers beyond a double in line protocol, a
string, boolean or integer written to a field that is a float in that shard (7 days here), and a tag
value ending in a backslash. In a batch, the refused lines are dropped and the rest are written. InfluxDB
1.6 still lists the sensor of a refused point, so a sensor may exist with no readings at all.
"""

from __future__ import annotations

import json
import logging
import random
import re
import urllib.error

import numpy as np
import pandas as pd
import pytest
from conftest import rows, run_job, tiny_training

from anomaly import labels
from anomaly.connection import Connection
from anomaly.influx.influxql import influxql_string, parse_influxql
from anomaly.influx.line_protocol import line_protocol
from anomaly.settings import Schema
from influx_interact import InfluxError, connect
from tools import local_influxd, sensor_data

NOW = pd.Timestamp("2026-01-15T00:00:00Z")  # a Thursday: InfluxDB's 7-day shards start here
INTERVAL = pd.Timedelta(minutes=15)
FIVE = pd.Timedelta(minutes=5)
H = pd.Timedelta(hours=1)
D = pd.Timedelta(days=1)
FIRST_RUN = 12 * H
LATER = NOW + H  # the second scoring run
TRAIN = [*tiny_training(NOW - 4 * D, NOW - D), "--chunk-size", "1"]

GOOD = "good"
HUGE = "huge readings in training"
ABSURD = "absurd live reading"
OVERFLOW = "overflowing mean"
NAN_INF = "NaN and Inf in a batch"
STRINGS = "strings"
BOOLEANS = "booleans"
DUPLICATES = "duplicate timestamps"
SHUFFLED = "out of order"
FUTURE = "future timestamps"
FUTURE_ONLY = "only future timestamps"
IRREGULAR = "irregular sampling"
MID_RANGE = "appears mid-range"
NEW = "appears after training"
GONE = "disappears"
SPECIAL = "Pump,1=\"hot\" 'loop' C:\\temp=ü 温度 🌡\tend"  # every character line protocol escapes, and more
SILENCE = (NOW - 6 * H, NOW - 4 * H)  # no reading of the irregular sensor
EVERY_INTERVAL = [GOOD, ABSURD, OVERFLOW, NAN_INF, DUPLICATES, SHUFFLED, FUTURE, MID_RANGE, SPECIAL]


# The decision rules these tests were written for (a fixed threshold, single-window flags); the scoring
# defaults (dynamic threshold, --min-consecutive 2) are covered by tests/test_detection_stories.py.
FIXED_RULES = ("--threshold", "fixed", "--min-consecutive", "1")


def base_times(start: pd.Timestamp = NOW - 4 * D, stop: pd.Timestamp = NOW + D) -> pd.DatetimeIndex:
    return pd.date_range(start, stop, freq=FIVE, inclusive="left")


def readings(sensor_id: str, times: pd.DatetimeIndex) -> np.ndarray:
    return sensor_data.normal_readings(sensor_id, times, 1)


def lines(sensor_id: str, times, values, site: str = "Campus") -> list[str]:
    return [
        line_protocol("READINGS", {"uniqueID": sensor_id, "siteRef": site}, {"val_num": float(v)}, int(t.timestamp()))
        for t, v in zip(times, values)
    ]


def raw(tag_text: str, field_text: str, stamp: pd.Timestamp) -> str:
    """A line written by hand, for what line_protocol() refuses to produce."""
    return f"READINGS,siteRef=Campus,uniqueID={tag_text} val_num={field_text} {int(stamp.timestamp())}"


def refused(url: str, database: str, batch: list[str]) -> str:
    """Write a batch the server is expected to refuse (in part); return its error text."""
    with pytest.raises(urllib.error.HTTPError) as error:
        local_influxd.write(url, database, batch)
    assert error.value.code == 400
    return error.value.read().decode()


def interval_means(times: pd.DatetimeIndex, values) -> pd.Series:
    series = pd.Series(np.asarray(values, dtype="float64"), index=times)
    return series.groupby(series.index.floor(INTERVAL)).mean()


def seed_fleet(url: str, database: str) -> dict:
    """Write every sensor's readings; return what the tests need to know about them."""
    local_influxd.query(url, f'CREATE DATABASE "{database}"')
    times = base_times()
    expected = {}
    batch = []
    for sensor_id in (GOOD, FUTURE, SPECIAL):
        batch += lines(sensor_id, times, readings(sensor_id, times))
    batch += lines(FUTURE, [NOW + 30 * D, pd.Timestamp("2200-01-01T00:00:00Z")], [20.0, 21.0])
    batch += lines(FUTURE_ONLY, [NOW + 30 * D + n * INTERVAL for n in range(50)], range(50))

    values = readings(HUGE, times)
    for at in (NOW - 3 * D, NOW - 2 * D):
        values[times.get_loc(at)] = 1e300
    batch += lines(HUGE, times, values)

    values = readings(ABSURD, times)
    values[times.get_loc(NOW - 3 * H)] = 1e300
    batch += lines(ABSURD, times, values)

    values = readings(OVERFLOW, times)
    for at in (NOW - 3 * D, NOW - 3 * H):  # two near the largest double: their mean overflows to +Inf
        values[times.get_loc(at)] = values[times.get_loc(at + FIVE)] = 1.7e308
    batch += lines(OVERFLOW, times, values)
    expected["overflow at"] = values[times.get_loc(NOW - 3 * H + 2 * FIVE)]

    values = readings(DUPLICATES, times)
    batch += lines(DUPLICATES, times, values)
    local_influxd.write(url, database, batch)
    # The same timestamps again: the same series keeps the last value, another series (site) is averaged in.
    local_influxd.write(url, database, lines(DUPLICATES, times, values + 1))
    local_influxd.write(url, database, lines(DUPLICATES, times, values + 3, site="Annex"))
    expected[DUPLICATES] = interval_means(times.append(times), np.concatenate([values + 1, values + 3]))

    values = readings(SHUFFLED, times)
    shuffled = lines(SHUFFLED, times, values)
    random.Random(4).shuffle(shuffled)
    local_influxd.write(url, database, shuffled)
    expected[SHUFFLED] = interval_means(times, values)

    rng = np.random.default_rng(5)
    kept = times[rng.random(len(times)) > 0.3]
    jittered = kept + pd.to_timedelta(rng.uniform(-140, 140, len(kept)).round(), unit="s")
    jittered = jittered[(jittered < SILENCE[0]) | (jittered >= SILENCE[1])]
    local_influxd.write(url, database, lines(IRREGULAR, jittered, readings(IRREGULAR, jittered)))

    for sensor_id, part in (
        (MID_RANGE, times[times >= NOW - 2 * D]),
        (NEW, times[times >= NOW - 6 * H]),
        (GONE, times[times < NOW - 6 * H]),
    ):
        local_influxd.write(url, database, lines(sensor_id, part, readings(sensor_id, part)))

    # NaN and infinities cannot be written: the server drops those lines and keeps the rest of the batch.
    values = readings(NAN_INF, times)
    batch = [
        raw(
            "NaN\\ and\\ Inf\\ in\\ a\\ batch",
            ("NaN", "+Inf", "-Inf", "1e309")[(n // 7) % 4] if n % 7 == 3 else repr(float(v)),
            t,
        )
        for n, (t, v) in enumerate(zip(times, values))
    ]
    expected["NaN and Inf error"] = refused(url, database, batch)

    # Strings and booleans into a float field are refused; in a shard of their own they are kept (and the
    # mean of a float field does not see them).
    expected["strings error"] = refused(url, database, [raw("strings", f'"{v:.2f}"', t) for t, v in zip(times, values)])
    expected["booleans error"] = refused(url, database, [raw("booleans", "true", t) for t in times])
    local_influxd.write(url, database, [raw("strings", '"21.5"', NOW - 30 * D), raw("booleans", "false", NOW - 60 * D)])

    # An id with a backslash before a space is possible in the database, but line protocol cannot write it back.
    local_influxd.write(
        url,
        database,
        [raw("back\\\\\\ slash", repr(float(v)), t) for t, v in zip(times, readings("back slash", times))],
    )
    ((_, ids),) = rows(url, database, 'SHOW TAG VALUES FROM "READINGS" WITH KEY = "uniqueID"')
    (expected["unwritable"],) = [sensor_id for _, sensor_id in ids if sensor_id.startswith("back")]
    return expected


def config_args(directory, ratios="{}", windows='{"default": 4}') -> list[str]:
    (directory / "ratios.json").write_text(ratios, encoding="utf-8")
    (directory / "windows.json").write_text(windows, encoding="utf-8")
    return ["--ratios", str(directory / "ratios.json"), "--windows", str(directory / "windows.json")]


@pytest.fixture(scope="module")
def fleet(influxd, tmp_path_factory):
    """The fleet written, trained once, and scored twice (at NOW and an hour later)."""
    workdir = tmp_path_factory.mktemp("bad-input")
    database = "bad_input"
    expected = seed_fleet(influxd.url, database)
    env = {"INFLUX_URL": influxd.url, "INFLUX_DATABASE": database}
    models = workdir / "models"
    training = run_job("sensor_training.py", [*TRAIN, "--models-dir", str(models), *config_args(workdir)], env, workdir)

    def predict(now: pd.Timestamp, *extra: str, directory=workdir, **config):
        # --no-cold-start: here a sensor without a model must stay unscored (test_jobs covers cold start)
        args = [
            "--models-dir",
            str(models),
            "--delay",
            "0s",
            "--first-run",
            "12h",
            "--chunk-size",
            "1",
            "--no-cold-start",
            *FIXED_RULES,
            "--now",
            now.isoformat(),
            *config_args(directory, **config),
            *extra,
        ]
        return run_job("sensor_predict.py", args, env, directory, timeout=300)

    scoring = [predict(NOW), predict(LATER)]
    return {
        "url": influxd.url,
        "database": database,
        "env": env,
        "models": models,
        "training": training,
        "scoring": scoring,
        "predict": predict,
        "expected": expected,
    }


def scores(fleet: dict, sensor_id: str, measurement: str = "PREDICT_ANOMALY") -> pd.DataFrame:
    """The scored windows (points with a loss; points of kind missing have none)."""
    found = rows(
        fleet["url"],
        fleet["database"],
        f'SELECT "val_num", "loss", "threshold", "anomaly" FROM '
        f'"{measurement}" WHERE "uniqueID" = {influxql_string(sensor_id)}',
    )
    columns = ["val_num", "loss", "threshold", "anomaly"]
    if not found:
        return pd.DataFrame(columns=columns, index=pd.DatetimeIndex([], tz="UTC"))
    ((_, values),) = found
    frame = pd.DataFrame([v[1:] for v in values], columns=columns)
    frame = frame.set_index(pd.DatetimeIndex(pd.to_datetime([v[0] for v in values], unit="s", utc=True)))
    return frame[frame["loss"].notna()]


def grid(first: pd.Timestamp, last: pd.Timestamp) -> pd.DatetimeIndex:
    return pd.date_range(first, last, freq=INTERVAL)


# ---------------------------------------------------------------- what the server refuses


@pytest.mark.parametrize(
    "line, error",
    [
        ("val_num=NaN", "invalid number"),
        ("val_num=+Inf", "invalid boolean"),
        ("val_num=-Inf", "invalid number"),
        ("val_num=1e309", "invalid float"),
        ('val_num="12.5"', "field type conflict"),
        ("val_num=true", "field type conflict"),
        ("val_num=5i", "field type conflict"),
    ],
)
def test_what_the_server_refuses(influxd, database, line, error):
    """A float field refuses values line protocol cannot carry, and other types in the same shard."""
    local_influxd.write(influxd.url, database, [raw("s1", "1.5", NOW)])
    text = refused(
        influxd.url, database, [raw("s1", line.split("=", 1)[1], NOW + FIVE), raw("s1", "2.5", NOW + 2 * FIVE)]
    )
    assert error in text
    ((_, values),) = rows(influxd.url, database, 'SELECT "val_num" FROM "READINGS"')
    assert values == [[int(NOW.timestamp()), 1.5], [int((NOW + 2 * FIVE).timestamp()), 2.5]]  # the rest is kept


def test_the_server_refuses_a_tag_ending_in_a_backslash(influxd, database):
    assert "invalid tag format" in refused(influxd.url, database, [raw("ends\\\\", "1.5", NOW)])


# ---------------------------------------------------------------- training


TRAINED = [GOOD, ABSURD, OVERFLOW, NAN_INF, DUPLICATES, SHUFFLED, FUTURE, IRREGULAR, MID_RANGE, GONE, SPECIAL]


@pytest.mark.parametrize(
    "sensor_id, outcome",
    [
        *[(sensor_id, "trained in") for sensor_id in TRAINED],
        (HUGE, "skipped: readings up to 3.33333e+299 are too large to standardize"),
        (STRINGS, "skipped: no data in the training range"),
        (BOOLEANS, "skipped: no data in the training range"),
        (FUTURE_ONLY, "skipped: no data in the training range"),
        (NEW, "skipped: no data in the training range"),
    ],
)
def test_training_outcome_per_sensor(fleet, sensor_id, outcome):
    training = fleet["training"]
    assert f"sensor {sensor_id!r}: {outcome}" in training.stderr, training.stderr


def test_training_handles_every_bad_input_and_trains_the_rest(fleet):
    training = fleet["training"]
    assert training.returncode == 0, training.stderr
    assert "12 trained, 5 skipped, 0 failed" in training.stderr
    assert "Traceback" not in training.stderr and "RuntimeWarning" not in training.stderr
    assert "could not send the mean of some intervals" in training.stderr  # the overflow, read again
    assert len(list(fleet["models"].glob("*/metadata.json"))) == 12


def test_a_sensor_that_appears_mid_range_trains_on_what_it_has(fleet):
    from anomaly import store

    record = store.load(store.sensor_dir(fleet["models"], MID_RANGE)).metadata.record
    assert record["training_range"]["first_point"] == "2026-01-13T00:00:00Z"
    assert record["windows"] == 96 - 3  # its one day in the training range


# ---------------------------------------------------------------- scoring


@pytest.mark.parametrize("sensor_id", EVERY_INTERVAL)
def test_every_interval_is_scored_once(fleet, sensor_id):
    frame = scores(fleet, sensor_id)
    assert frame.index.equals(grid(NOW - FIRST_RUN, LATER - INTERVAL)), sensor_id
    assert frame.notna().all().all() and np.isfinite(frame["loss"].astype(float)).all()


def test_scoring_fails_only_the_sensor_line_protocol_cannot_carry(fleet):
    unwritable = fleet["expected"]["unwritable"]
    for run in fleet["scoring"]:
        assert run.returncode == 1, run.stderr
        failures = re.findall(r"ERROR sensor_predict: sensor (.*): failed", run.stderr)
        assert failures == [repr(unwritable)], run.stderr
        assert "cannot be written as line protocol" in run.stderr and ", 1 failed" in run.stderr
    assert scores(fleet, unwritable).empty


@pytest.mark.parametrize("sensor_id", [HUGE, STRINGS, BOOLEANS, FUTURE_ONLY, NEW])
def test_a_sensor_without_a_model_is_skipped(fleet, sensor_id):
    assert f"sensor {sensor_id!r}: skipped: no model" in fleet["scoring"][0].stderr
    assert scores(fleet, sensor_id).empty


def test_an_absurd_reading_flags_its_windows_with_a_finite_loss(fleet):
    frame = scores(fleet, ABSURD)
    at = NOW - 3 * H
    affected = frame[(frame.index >= at) & (frame.index <= at + 3 * INTERVAL)]
    assert len(affected) == 4 and affected["anomaly"].all()
    assert (affected["loss"] > 1e20).all() and np.isfinite(affected["loss"].astype(float)).all()
    assert frame.loc[at, "val_num"] == pytest.approx(1e300 / 3, rel=1e-3)
    assert "RuntimeWarning" not in fleet["scoring"][0].stderr


def test_a_mean_that_overflows_is_read_again_without_the_absurd_readings(fleet):
    """Two readings of 1.7e308 in one interval: InfluxDB 1.x cannot encode their mean and leaves that
    part of its answer out, so the job reads again without readings beyond 1e300."""
    assert "could not send the mean of some intervals" in fleet["scoring"][0].stderr
    frame = scores(fleet, OVERFLOW)
    assert frame.loc[NOW - 3 * H, "val_num"] == pytest.approx(fleet["expected"]["overflow at"])


def test_one_sensor_overflowing_a_mean_does_not_cost_the_others_in_its_read(fleet, caplog):
    connection = Connection(url=fleet["url"], api="auto", database=fleet["database"])
    with caplog.at_level(logging.WARNING), connect(connection, Schema()) as db:
        means = db.read_means([GOOD, OVERFLOW, ABSURD], NOW - 4 * H, NOW, INTERVAL)
    assert sorted(means) == sorted([GOOD, OVERFLOW, ABSURD])
    assert all(len(series) == 16 for series in means.values())
    assert means[OVERFLOW][NOW - 3 * H] == pytest.approx(fleet["expected"]["overflow at"])
    assert any("could not send the mean" in record.message for record in caplog.records)


def test_an_answer_chunk_the_server_could_not_encode_is_left_out_only_when_the_caller_says_so():
    error = "json: error calling MarshalJSON for type *query.Result: json: unsupported value: +Inf"
    good = {"name": "READINGS", "tags": {"uniqueID": "s2"}, "columns": ["time", "mean"], "values": [[0, 5.0]]}
    body = (error + "\n" + json.dumps({"results": [{"statement_id": 0, "series": [good]}]}) + "\n").encode()
    lost = []
    assert parse_influxql(body, lost) == [good] and lost == [error]
    with pytest.raises(InfluxError, match="could not encode part of its answer: json: error calling"):
        parse_influxql(body)


@pytest.mark.parametrize("sensor_id", [DUPLICATES, SHUFFLED])
def test_duplicate_and_out_of_order_timestamps_score_the_interval_means(fleet, sensor_id):
    frame = scores(fleet, sensor_id)
    expected = fleet["expected"][sensor_id].reindex(frame.index)
    np.testing.assert_allclose(frame["val_num"].astype(float), expected, rtol=1e-12)


def test_future_timestamps_are_never_scored_ahead_of_time(fleet):
    future = scores(fleet, FUTURE)
    assert future.index.max() == LATER - INTERVAL
    found = rows(
        fleet["url"],
        fleet["database"],
        f'SELECT count("loss") FROM "PREDICT_ANOMALY" WHERE time >= {int(LATER.timestamp())}s',
    )
    assert found == []


def test_irregular_sampling_is_scored_except_across_a_long_gap(fleet):
    frame = scores(fleet, IRREGULAR)
    across = (frame.index >= SILENCE[0]) & (frame.index < SILENCE[1] + 3 * INTERVAL)
    assert not across.any()
    expected = grid(NOW - FIRST_RUN, LATER - INTERVAL)
    spanning = expected[(expected >= SILENCE[0]) & (expected < SILENCE[1] + 3 * INTERVAL)]
    assert frame.index.equals(expected.difference(spanning))
    ((_, silent),) = rows(
        fleet["url"],
        fleet["database"],
        'SELECT "anomaly", "kind" FROM "PREDICT_ANOMALY" WHERE '
        f'"uniqueID" = {influxql_string(IRREGULAR)} AND "kind" = \'missing\'',
    )
    flagged = pd.to_datetime([t for t, _, _ in silent], unit="s", utc=True)
    # reported as missing, and not anomalies: an outage of the data is not a process anomaly
    assert len(flagged) and not any(anomaly for _, anomaly, _ in silent)
    assert flagged.min() > SILENCE[0] and flagged.max() < SILENCE[1]  # past --max-gap of silence, until it ends


def test_a_sensor_that_disappears_is_scored_up_to_its_last_reading_then_waits(fleet):
    frame = scores(fleet, GONE)
    assert frame.index.equals(grid(NOW - FIRST_RUN, NOW - 6 * H - INTERVAL))
    later = fleet["scoring"][1].stderr
    # silent for longer than --max-gap (1h, 4 intervals) after its last reading at 17:45: reported missing,
    # which is a fact about the data, not an anomaly of the process
    assert (
        f"sensor {GONE!r}: 0 windows and 24 intervals without readings 2026-01-14T19:00:00Z .. "
        f"2026-01-15T00:45:00Z, 0 anomalies"
    ) in later


def test_a_sensor_id_with_every_special_character_round_trips(fleet):
    assert f"sensor {SPECIAL!r}: 48 windows" in fleet["scoring"][0].stderr
    found = rows(fleet["url"], fleet["database"], 'SHOW TAG VALUES FROM "PREDICT_ANOMALY" WITH KEY = "uniqueID"')
    ((_, ids),) = found
    assert SPECIAL in [sensor_id for _, sensor_id in ids]


# ---------------------------------------------------------------- nothing to read


def test_an_empty_database_is_nothing_to_do(influxd, database, tmp_path):
    env = {"INFLUX_URL": influxd.url, "INFLUX_DATABASE": database}
    empty = tmp_path / "empty"  # the scorer refuses a models directory that does not exist
    empty.mkdir()
    for script, extra, models in (("sensor_training.py", TRAIN, tmp_path / "models"), ("sensor_predict.py", [], empty)):
        result = run_job(script, [*extra, "--models-dir", str(models), *config_args(tmp_path)], env, tmp_path)
        assert result.returncode == 0, result.stderr
        assert (
            f"nothing to do: no sensor (tag 'uniqueID') in measurement 'READINGS' of '{database}'" in result.stderr
        ), result.stderr
    assert not (tmp_path / "models").exists() and not any(empty.iterdir())


def test_a_missing_measurement_is_nothing_to_do(fleet, tmp_path):
    for script, extra, models in (
        ("sensor_training.py", TRAIN, tmp_path / "models"),
        ("sensor_predict.py", [], fleet["models"]),
    ):
        result = run_job(
            script,
            [*extra, "--measurement", "NO_SUCH", "--models-dir", str(models), *config_args(tmp_path)],
            fleet["env"],
            tmp_path,
        )
        assert result.returncode == 0, result.stderr
        assert "nothing to do: no sensor (tag 'uniqueID') in measurement 'NO_SUCH'" in result.stderr


def test_a_missing_field_leaves_each_sensor_without_data(fleet, tmp_path):
    result = fleet["predict"](NOW, "--field", "no_such", "--output-measurement", "MISSING_FIELD", directory=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"sensor {GOOD!r}: no complete window ends in" in result.stderr
    assert "0 sensors scored" in result.stderr
    models = tmp_path / "models"
    result = run_job(
        "sensor_training.py",
        [*TRAIN, "--field", "no_such", "--sensor", GOOD, "--models-dir", str(models), *config_args(tmp_path)],
        fleet["env"],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert f"sensor {GOOD!r}: skipped: no data in the training range" in result.stderr
    assert not models.exists()


# ---------------------------------------------------------------- configuration files


@pytest.mark.parametrize(
    "which, text, message",
    [
        pytest.param("ratios", "", "not valid JSON at line 1 column 1", id="empty"),
        pytest.param("ratios", "good: 1.5\n", "not valid JSON at line 1 column 1", id="not JSON"),
        pytest.param(
            "ratios", '["good"]', "must be a JSON object mapping sensor id to a number, not list", id="a list"
        ),
        pytest.param("ratios", '{"good": "1.5"}', "key 'good' has ratio '1.5'", id="ratio a string"),
        pytest.param("windows", '{"good": 4.5}', "key 'good' has window 4.5", id="window a fraction"),
        pytest.param("windows", '{"good": null}', "key 'good' has window None", id="window null"),
        pytest.param("ratios", "[" * 100_000, "JSON nested too deeply to read", id="nested 100000 deep"),
        pytest.param(
            "ratios",
            '{"good": ' + "9" * 5000 + "}",
            "not usable JSON: Exceeds the limit (4300 digits)",
            id="a 5000-digit number",
        ),
    ],
)
def test_a_broken_config_file_stops_the_job_before_it_reads(fleet, tmp_path, which, text, message):
    files = {"ratios": "{}", "windows": '{"default": 4}', which: text}
    result = fleet["predict"](NOW, "--output-measurement", "BROKEN_CONFIG", directory=tmp_path, **files)
    assert result.returncode == 2, result.stderr
    assert f"configuration: {tmp_path / (which + '.json')}: {message}" in result.stderr
    assert "Traceback" not in result.stderr
    assert rows(fleet["url"], fleet["database"], 'SELECT count("loss") FROM "BROKEN_CONFIG"') == []


@pytest.mark.parametrize(
    "measurement, ratios, windows, ratio",
    [
        pytest.param(
            "UNKNOWN_SENSORS",
            '{"default": 2, "no such sensor": 3, "neither this": 0.5}',
            '{"default": 4, "no such sensor": 99}',
            2.0,
            id="unknown sensors",
        ),
        pytest.param(
            "HUGE_CONFIG",
            json.dumps({**{f"sensor {n}": 1 + n % 7 for n in range(100_000)}, GOOD: 1.5}),
            json.dumps({"default": 4, **{f"sensor {n}": 2 + n % 7 for n in range(100_000)}}),
            1.5,
            id="100000 keys",
        ),
    ],
)
def test_a_config_naming_unknown_sensors_is_used_for_the_rest(fleet, tmp_path, measurement, ratios, windows, ratio):
    from anomaly import store

    result = fleet["predict"](
        NOW, "--sensor", GOOD, "--output-measurement", measurement, directory=tmp_path, ratios=ratios, windows=windows
    )
    assert result.returncode == 0, result.stderr
    frame = scores(fleet, GOOD, measurement)
    assert frame.index.equals(grid(NOW - FIRST_RUN, NOW - INTERVAL))
    saved = store.load(store.sensor_dir(fleet["models"], GOOD)).metadata.threshold
    assert frame["threshold"].tolist() == pytest.approx([ratio * saved] * 48)


def test_a_duplicate_key_stops_the_jobs_before_they_read(influxd, database, tmp_path):
    env = {"INFLUX_URL": influxd.url, "INFLUX_DATABASE": database}
    for which, text, key in (
        ("ratios", '{"good": 1.5, "other": 2, "good": 3}', "good"),
        ("windows", '{"default": 4,\n "default": 6}', "default"),
    ):
        for script, extra in (("sensor_training.py", TRAIN), ("sensor_predict.py", [])):
            result = run_job(
                script,
                [*extra, "--models-dir", str(tmp_path / "models"), *config_args(tmp_path, **{which: text})],
                env,
                tmp_path,
            )
            assert result.returncode == 2, result.stderr
            assert f"configuration: {tmp_path / (which + '.json')}: key {key!r} appears twice" in result.stderr
            assert "Traceback" not in result.stderr


def test_keys_that_match_no_sensor_found_are_named_in_a_warning(influxd, database, tmp_path):
    # Readings six hours apart: every sensor is listed, none has a window, so the jobs are quick.
    sparse = pd.date_range(NOW - 4 * D, NOW, freq="6h")
    local_influxd.write(influxd.url, database, lines(GOOD, sparse, range(17)) + lines(SPECIAL, sparse, range(17)))
    ratios = json.dumps({"default": 2, GOOD: 1.5, "goood": 3, SPECIAL: 1})
    windows = json.dumps({"default": 4, "no such sensor": 5, GOOD: 4})
    env = {"INFLUX_URL": influxd.url, "INFLUX_DATABASE": database}
    (tmp_path / "models").mkdir()  # the sensors have no window to train on, and the scorer needs the directory
    models = ["--models-dir", str(tmp_path / "models")]
    scoring = ["--no-cold-start", "--now", NOW.isoformat()]
    # The review and status tools read the same files (issue 11: they said nothing); none has a model or a score to
    # use.
    review = ["--now", NOW.isoformat(), "--start=-4d", "--no-plots", "--output", str(tmp_path / "report")]
    jobs = {
        "sensor_training.py": TRAIN,
        "sensor_predict.py": scoring,
        "sensor_evaluate.py": review,
        "sensor_tune.py": ["--now", NOW.isoformat(), "--tune-start=-4d"],
        "sensor_status.py": ["--now", NOW.isoformat()],
    }
    for script, extra in jobs.items():
        result = run_job(script, [*extra, *models, *config_args(tmp_path, ratios, windows)], env, tmp_path)
        assert result.returncode == 0, result.stderr
        warnings = [line for line in result.stderr.splitlines() if "Z WARNING " in line and "match no sensor" in line]
        assert len(warnings) == 2, (script, result.stderr)
        assert f"{tmp_path / 'ratios.json'}: keys that match no sensor found" in warnings[0]
        assert warnings[0].endswith(": 'goood'") and warnings[1].endswith(": 'no such sensor'")
        assert f"{tmp_path / 'windows.json'}: keys that match no sensor found" in warnings[1]
        # With --sensor the jobs list no sensors, so they cannot tell a typo from a sensor left out.
        args = [*extra, *models, "--sensor", GOOD, *config_args(tmp_path, ratios, windows)]
        result = run_job(script, args, env, tmp_path)
        assert result.returncode == 0 and "match no sensor" not in result.stderr, (script, result.stderr)


# ---------------------------------------------------------------- CSV import

HEADER = "Datetime (UTC),Value,ID,Anomaly\n"


def import_csv(influxd, database, tmp_path, text: str, *extra: str):
    """Run sensor_import.py on one file of ``text`` rows; return its result, the file and what it wrote."""
    path = tmp_path / "export.csv"
    path.write_text(HEADER + text, encoding="utf-8")
    env = {"INFLUX_URL": influxd.url, "INFLUX_DATABASE": database}
    result = run_job("sensor_import.py", [str(path), *extra], env, tmp_path)
    written = rows(influxd.url, database, 'SELECT "val_num" FROM "READINGS" GROUP BY "uniqueID"')
    return result, path, {tags["uniqueID"]: values for tags, values in written}


@pytest.mark.parametrize(
    "text, expected",
    [
        ("2026-01-14 06:00:00", "2026-01-14T06:00:00Z"),
        ("2026-01-14T06:00:00", "2026-01-14T06:00:00Z"),
        ("2026-01-14 06:00", "2026-01-14T06:00:00Z"),
        ("2026-01-14", "2026-01-14T00:00:00Z"),
        ("2026-01-14T06:00:00.123456789Z", "2026-01-14T06:00:00.123456789Z"),
        ("2026-01-14T07:30:00+01:30", "2026-01-14T06:00:00Z"),
        ("2026-01-13 22:00:00-08:00", "2026-01-14T06:00:00Z"),
        (" 2026-01-14 06:00:00 ", "2026-01-14T06:00:00Z"),
    ],
)
def test_csv_times_are_iso_8601_and_utc_without_a_zone(tmp_path, text, expected):
    path = tmp_path / "export.csv"
    path.write_text(f"{HEADER}{text},1,AHU 1,FALSE\n", encoding="utf-8")
    (row,) = labels.read_csv_rows(path)
    assert row.time == pd.Timestamp(expected) and str(row.time.tz) == "UTC"


@pytest.mark.parametrize(
    "bad",
    [
        pytest.param(t, id=t)
        for t in (
            *("now", "today", "yesterday", "-1h", "1h", "01/02/2026", "14/01/2026", "2026/01/14", "Jan 14 2026"),
            *("2300-01-01 00:00:00", "1600-01-01"),  # beyond what InfluxDB's nanosecond times can hold
        )
    ],
)
def test_import_refuses_a_relative_or_ambiguous_time_naming_file_and_line(influxd, database, tmp_path, bad):
    result, path, written = import_csv(
        influxd, database, tmp_path, f"2026-01-14 06:00:00,1,AHU 1,FALSE\n{bad},2,AHU 1,FALSE\n"
    )
    assert result.returncode == 2, result.stderr
    assert f"{path}: line 3: Datetime (UTC) {bad!r} is not a time written YYYY-MM-DD" in result.stderr
    assert written == {}


def test_import_refuses_a_file_mixing_day_and_month_orders(influxd, database, tmp_path):
    # Read row by row, 01/02/2026 was 2 January and 14/01/2026 14 January.
    result, path, written = import_csv(
        influxd, database, tmp_path, "01/02/2026 06:00:00,1,AHU 1,FALSE\n14/01/2026 06:00:00,2,AHU 1,FALSE\n"
    )
    assert result.returncode == 2, result.stderr
    assert f"{path}: line 2: Datetime (UTC) '01/02/2026 06:00:00' is not a time written YYYY-MM-DD" in result.stderr
    assert written == {}


def test_import_takes_only_the_sensors_asked_for_and_refuses_one_not_in_the_files(influxd, database, tmp_path):
    text = "2026-01-14 06:00:00,1,AHU 1,FALSE\n2026-01-14 06:00:00,2,Boiler 2,FALSE\n"
    result, path, written = import_csv(
        influxd, database, tmp_path, text, "--sensor", "AHU 1", "--sensor", "AHU 3", "--sensor", "Boiler"
    )
    assert result.returncode == 2, result.stderr
    assert f"--sensor: no row of {path} has ID 'AHU 3', 'Boiler'; check the spelling" in result.stderr
    assert written == {}
    result, _, written = import_csv(influxd, database, tmp_path, text, "--sensor", "AHU 1")
    assert result.returncode == 0, result.stderr
    assert list(written) == ["AHU 1"]
