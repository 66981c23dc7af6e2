"""End to end: both jobs run as processes, as cron runs them, against a real InfluxDB.

The data are generated (tools/sensor_data.py) around a fixed NOW: two weeks of normal history to train
on, then a day in which three sensors get a spike, a level shift and a flat-line, and a fourth stays
normal. Sensor ids carry the characters line protocol, InfluxQL and Flux must escape.

The tests marked ``both_dialects`` (training, the first run's flags, resuming and catching up, a backfill, the
cold-start detector, events and incidents, the health point, a missing database) run twice: against InfluxDB
1.6 in InfluxQL, and against the imitation of InfluxDB 2.7 in Flux (tests/conftest.py, ``influx``); the others
against InfluxDB 1.6 only.
"""

from __future__ import annotations

import base64
import json

import pandas as pd
import pytest
from conftest import rows, run_job

from anomaly import pack
from anomaly.runs import runs
from tools import local_influxd, sensor_data

NOW = pd.Timestamp("2026-01-15T00:00:00Z")
INTERVAL = pd.Timedelta(minutes=15)
WINDOW = 15
SENSORS = ["AHU-1 supply air temp", 'Boiler,2="hot" loop=ü', "chiller:3 'return' C:\\temp"]
QUIET = "quiet sensor"
TRAIN = [
    "--start",
    (NOW - pd.Timedelta(days=15)).isoformat(),
    "--stop",
    (NOW - pd.Timedelta(days=1)).isoformat(),
    "--units",
    "16",
    "--epochs",
    "20",
    "--patience",
    "3",
    "--seed",
    "1",
]


# The decision rules these tests were written for (a fixed threshold, single-window flags); the scoring
# defaults (dynamic threshold, --min-consecutive 2) are covered by tests/test_detection_stories.py.
FIXED_RULES = ("--threshold", "fixed", "--min-consecutive", "1")


def seed_database(influx, database: str) -> list[sensor_data.Anomaly]:
    influx.create(database)
    start, stop, sample = NOW - pd.Timedelta(days=15), NOW + pd.Timedelta(days=1), pd.Timedelta(minutes=5)
    lines, anomalies = sensor_data.fleet(
        SENSORS, start, stop, sample, seed=3, anomalies_after=NOW - pd.Timedelta(days=1)
    )
    quiet, _ = sensor_data.fleet([QUIET], start, stop, sample, seed=3)
    influx.write(database, lines + quiet)
    return anomalies


def write_config(directory, ratios=None, windows=None):
    (directory / "ratios.json").write_text(json.dumps(ratios or {}))
    (directory / "windows.json").write_text(json.dumps(windows or {}))
    return ["--ratios", str(directory / "ratios.json"), "--windows", str(directory / "windows.json")]


@pytest.fixture(scope="module")
def trained(influx, tmp_path_factory):
    """Models trained once for the module (and dialect), from a database of their own."""
    workdir = tmp_path_factory.mktemp(f"trained-{influx.dialect}")
    seed_database(influx, f"training_{influx.dialect}")
    env = influx.env(f"training_{influx.dialect}")
    args = [*TRAIN, "--models-dir", str(workdir / "models"), *write_config(workdir)]
    result = run_job("sensor_training.py", args, env, cwd=workdir)
    assert result.returncode == 0, result.stderr
    return workdir / "models", result


@pytest.fixture
def scoring(influx, trained, tmp_path):
    """A fresh database with the same data, and a function that runs sensor_predict.py against it."""
    database = f"scoring_{tmp_path.name}"[:60]
    anomalies = seed_database(influx, database)
    models_dir, _ = trained

    def predict(*extra, ratios=None, windows=None, env=None):
        args = [
            "--models-dir",
            str(models_dir),
            "--delay",
            "0s",
            *FIXED_RULES,
            *write_config(tmp_path, ratios, windows),
            *extra,
        ]
        return run_job(
            "sensor_predict.py",
            args,
            {**influx.env(database), **(env or {})},
            cwd=tmp_path,
        )

    def scores(sensor_id):
        return influx.points(
            database, "PREDICT_ANOMALY", ["loss", "threshold", "anomaly", "kind", "val_num"], uniqueID=sensor_id
        )

    return predict, scores, anomalies, database


@pytest.mark.both_dialects
def test_training_saves_a_model_per_sensor_with_its_metadata(trained):
    models_dir, result = trained
    metadata = {}
    for path in models_dir.glob("*/metadata.json"):
        record = json.loads(path.read_text())
        metadata[record["sensor_id"]] = record
    assert sorted(metadata) == sorted([*SENSORS, QUIET])
    record = metadata[SENSORS[1]]
    assert record["window"] == WINDOW and record["interval_s"] == 900 and record["percentile"] == 99.5
    assert record["threshold"] > 0 and record["windows"] > 1200
    assert record["training_range"]["stop"] == "2026-01-14T00:00:00Z"
    assert {"tensorflow", "keras", "numpy"} <= set(record["versions"])
    assert "done in" in result.stderr and "4 trained, 0 skipped, 0 failed" in result.stderr
    # The scorer's packed store holds every model as its own files give it.
    assert f"packed 4 models (window {WINDOW}, 16 units: 4)" in result.stderr
    packs = pack.PackedStore.open(models_dir)
    try:
        found = packs.models([*SENSORS, QUIET])
    finally:
        packs.close()
    assert {s: m.record["version"] for s, (m, *_) in found.items()} == {s: r["version"] for s, r in metadata.items()}


def holding(anomaly: sensor_data.Anomaly) -> pd.DatetimeIndex:
    """The window ends whose window holds an interval of ``anomaly``: from its first interval to WINDOW - 1
    intervals after its last (README, How it decides: a window's score belongs to its last point)."""
    return pd.date_range(anomaly.start, anomaly.stop - INTERVAL + (WINDOW - 1) * INTERVAL, freq=INTERVAL)


def assert_quiet(frame: pd.DataFrame, normal: pd.DatetimeIndex, name: str) -> None:
    """At most one run of at most WINDOW flagged windows among ``normal`` windows of a day. Training raises the
    threshold until held-out normal windows give at most --alarm-budget (0.5) alarm runs a week, 0.07 a day;
    one run allows for the small model's luck, and one odd reading raises at most the WINDOW windows holding it."""
    flags = frame["anomaly"].reindex(normal).astype(bool).to_numpy()
    found = runs(flags, normal, INTERVAL)
    assert len(found) <= 1 and flags.sum() <= WINDOW, f"{name}: false alarms at {list(normal[flags])}"


@pytest.mark.both_dialects
def test_first_run_scores_the_last_day_and_flags_the_injected_anomalies(scoring):
    predict, scores, anomalies, _ = scoring
    result = predict("--now", NOW.isoformat())
    assert result.returncode == 0, result.stderr
    for anomaly in anomalies:
        frame = scores(anomaly.sensor_id)
        assert len(frame) == 96, anomaly.sensor_id
        assert frame.index[0] == NOW - pd.Timedelta(days=1) and frame.index[-1] == NOW - INTERVAL
        flagged = frame.index[frame["anomaly"].astype(bool)]
        # With one window enough (K=1), the window that ends in the anomaly's first interval flags it.
        assert anomaly.start in flagged, f"{anomaly.kind} on {anomaly.sensor_id!r} not flagged at its start"
        assert_quiet(frame, frame.index.difference(holding(anomaly)), anomaly.sensor_id)
    quiet = scores(QUIET)
    assert len(quiet) == 96
    assert_quiet(quiet, quiet.index, QUIET)


@pytest.mark.both_dialects
def test_a_rerun_adds_nothing_and_a_missed_schedule_is_caught_up(scoring):
    predict, scores, _, _ = scoring
    assert predict("--now", NOW.isoformat()).returncode == 0
    again = predict("--now", (NOW + pd.Timedelta(minutes=5)).isoformat())
    assert again.returncode == 0 and "4 up to date" in again.stderr
    assert len(scores(QUIET)) == 96
    later = predict("--now", (NOW + pd.Timedelta(hours=6, minutes=3)).isoformat())
    assert later.returncode == 0, later.stderr
    for sensor_id in [*SENSORS, QUIET]:
        frame = scores(sensor_id)
        expected = pd.date_range(NOW - pd.Timedelta(days=1), NOW + pd.Timedelta(hours=6) - INTERVAL, freq=INTERVAL)
        assert frame.index.equals(expected), sensor_id


@pytest.mark.both_dialects
def test_backfill_rewrites_the_same_points(scoring):
    predict, scores, _, _ = scoring
    assert predict("--now", NOW.isoformat()).returncode == 0
    before = scores(SENSORS[0])
    start, stop = (NOW - pd.Timedelta(hours=12)).isoformat(), (NOW - pd.Timedelta(hours=6)).isoformat()
    result = predict("--now", NOW.isoformat(), "--start", start, "--stop", stop)
    assert result.returncode == 0, result.stderr
    after = scores(SENSORS[0])
    assert after.index.equals(before.index)
    pd.testing.assert_frame_equal(after, before, check_exact=False, rtol=1e-5)


def test_the_ratio_scales_the_threshold(scoring, trained):
    predict, scores, anomalies, _ = scoring
    assert predict("--now", NOW.isoformat(), ratios={QUIET: 2.5}).returncode == 0
    models_dir, _ = trained
    saved = {}
    for path in models_dir.glob("*/metadata.json"):
        record = json.loads(path.read_text())
        saved[record["sensor_id"]] = record["threshold"]
    quiet, other = scores(QUIET), scores(SENSORS[0])
    assert quiet["threshold"].tolist() == pytest.approx([2.5 * saved[QUIET]] * 96)
    assert other["threshold"].tolist() == pytest.approx([saved[SENSORS[0]]] * 96)
    # README: "Raising a ratio makes a sensor flag less by its shape". The spike's worst window is `peak` times
    # its threshold: scored again with a ratio just above that, no shape is flagged (the spike, beyond the
    # training range, stays a level anomaly at any ratio); just below, that window still is.
    (spike,) = [a for a in anomalies if a.sensor_id == SENSORS[0]]
    peak = (other["loss"] / other["threshold"]).max()
    worst = (other["loss"] / other["threshold"]).idxmax()
    assert worst in holding(spike) and peak > 1.5
    again = ("--now", NOW.isoformat(), "--start", (NOW - pd.Timedelta(days=1)).isoformat())
    assert predict(*again, ratios={SENSORS[0]: peak * 1.01}).returncode == 0
    kinds = scores(SENSORS[0]).query("anomaly")["kind"]
    assert set(kinds) <= {"level"} and kinds.index.isin(holding(spike)).all()
    assert predict(*again, ratios={SENSORS[0]: peak * 0.99}).returncode == 0
    flagged = scores(SENSORS[0]).query("anomaly").index
    assert worst in flagged and flagged.isin(other.query("anomaly").index).all()


def test_dry_run_prints_line_protocol_and_writes_nothing(scoring):
    predict, scores, _, _ = scoring
    result = predict("--now", NOW.isoformat(), "--dry-run")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 4 * 96
    assert all(line.startswith("PREDICT_ANOMALY,uniqueID=") for line in lines)
    assert any('uniqueID=Boiler\\,2\\="hot"\\ loop\\=ü ' in line for line in lines)
    assert scores(QUIET).empty


def test_a_sensor_whose_window_changed_is_skipped_and_the_rest_scored(scoring):
    predict, scores, _, _ = scoring
    result = predict("--now", NOW.isoformat(), windows={QUIET: 20})
    assert result.returncode == 0, result.stderr
    assert "window 15" in result.stderr and "window 20" in result.stderr and "retrain" in result.stderr
    assert scores(QUIET).empty and len(scores(SENSORS[0])) == 96


@pytest.mark.parametrize(
    "ratios, message",
    [
        ('{"quiet sensor": -1}', "key 'quiet sensor' has ratio -1"),
        ('{"quiet sensor": 1,', "not valid JSON at line 1"),
        ('["quiet sensor"]', "must be a JSON object"),
    ],
)
def test_a_bad_config_stops_the_job_before_it_writes(scoring, tmp_path, ratios, message):
    predict, scores, _, _ = scoring
    bad = tmp_path / "bad-ratios.json"
    bad.write_text(ratios)
    result = predict("--now", NOW.isoformat(), "--ratios", str(bad))
    assert result.returncode == 2
    assert str(bad) in result.stderr and message in result.stderr
    assert "Traceback" not in result.stderr
    assert scores(QUIET).empty


def test_an_unreachable_server_gives_one_clear_line(scoring, tmp_path):
    predict, _, _, _ = scoring
    port = local_influxd.free_port()
    result = predict("--now", NOW.isoformat(), "--retries", "1", env={"INFLUX_URL": f"http://127.0.0.1:{port}"})
    assert result.returncode == 1
    assert f"cannot reach InfluxDB at http://127.0.0.1:{port}" in result.stderr
    assert "trying again in 1s (1 of 1)" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "netloc, message",
    [
        pytest.param("admin:hunter2@127.0.0.1:badport", "'http://…@127.0.0.1:badport' is not an http(s) URL", id="bad"),
        pytest.param("admin:hunter2@{host}", "'http://…@{host}' holds a user name or password", id="valid"),
    ],
)
def test_credentials_in_influx_url_stop_the_job_and_are_never_shown(scoring, influx, netloc, message):
    predict, scores, _, _ = scoring
    host = influx.url.removeprefix("http://")
    result = predict("--now", NOW.isoformat(), env={"INFLUX_URL": "http://" + netloc.format(host=host)})
    assert result.returncode == 2
    assert "--url / INFLUX_URL: " + message.format(host=host) in result.stderr
    assert "hunter2" not in result.stderr and "admin" not in result.stderr
    assert scores(QUIET).empty


@pytest.mark.both_dialects
def test_a_missing_database_is_named(scoring, influx):
    predict, _, _, _ = scoring
    result = predict("--now", NOW.isoformat(), env={influx.store_variable: "no_such_db"})
    assert result.returncode == 1
    assert "no database or bucket 'no_such_db'" in result.stderr and influx.store_variable in result.stderr


def test_training_skips_unusable_sensors_and_trains_the_rest(influxd, database, tmp_path):
    start = NOW - pd.Timedelta(days=3)
    index = pd.date_range(start, NOW, freq="15min", inclusive="left")
    lines = sensor_data.readings_lines("good", index, sensor_data.normal_readings("good", index, 1))
    lines += sensor_data.readings_lines("flat", index, [21.5] * len(index))
    lines += sensor_data.readings_lines("sparse", index[::8], sensor_data.normal_readings("sparse", index[::8], 1))
    local_influxd.write(influxd.url, database, lines)
    args = [
        "--now",
        NOW.isoformat(),
        "--start=-3d",
        "--units",
        "8",
        "--epochs",
        "2",
        "--seed",
        "1",
        "--models-dir",
        str(tmp_path / "models"),
        *write_config(tmp_path),
    ]
    result = run_job("sensor_training.py", args, {"INFLUX_URL": influxd.url, "INFLUX_DATABASE": database}, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "sensor 'flat': skipped: constant value 21.5" in result.stderr
    assert "sensor 'sparse': skipped: too little data: 0 windows" in result.stderr
    assert "1 trained, 2 skipped, 0 failed" in result.stderr
    assert len(list((tmp_path / "models").glob("*/metadata.json"))) == 1


def test_labelled_intervals_are_left_out_and_the_seed_gives_the_same_threshold_in_or_out_of_workers(
    influxd, database, tmp_path
):
    start = NOW - pd.Timedelta(days=4)
    index = pd.date_range(start, NOW, freq="15min", inclusive="left")
    values, anomaly = sensor_data.inject(
        sensor_data.normal_readings("s1", index, 2), index, "s1", "level_shift", NOW - pd.Timedelta(days=2), INTERVAL
    )
    local_influxd.write(influxd.url, database, sensor_data.readings_lines("s1", index, values, labelled=[anomaly]))
    thresholds = []
    for jobs in (1, 2):
        models = tmp_path / f"models{jobs}"
        args = [
            "--now",
            NOW.isoformat(),
            "--start=-4d",
            "--units",
            "8",
            "--epochs",
            "3",
            "--seed",
            "5",
            "--jobs",
            str(jobs),
            "--label-field",
            "manual_anomaly",
            "--models-dir",
            str(models),
            *write_config(tmp_path),
        ]
        result = run_job("sensor_training.py", args, {"INFLUX_URL": influxd.url, "INFLUX_DATABASE": database}, tmp_path)
        assert result.returncode == 0, result.stderr
        (path,) = models.glob("*/metadata.json")
        record = json.loads(path.read_text())
        assert record["labelled_intervals_dropped"] == 12
        thresholds.append(record["threshold"])
    assert thresholds[0] == thresholds[1]


def test_two_shards_score_disjoint_parts_that_cover_the_fleet(scoring):
    predict, scores, _, _ = scoring
    scored_by = []
    for shard in ("1/2", "2/2"):
        result = predict("--now", NOW.isoformat(), "--shard", shard)
        assert result.returncode == 0, result.stderr
        scored_by.append({s for s in [*SENSORS, QUIET] if f"sensor {s!r}: 96 windows" in result.stderr})
    assert scored_by[0].isdisjoint(scored_by[1])
    assert scored_by[0] | scored_by[1] == set([*SENSORS, QUIET])
    assert all(len(scores(s)) == 96 for s in [*SENSORS, QUIET])


def test_a_second_run_refuses_to_start_while_the_first_holds_the_lock(scoring, trained):
    from anomaly import errors, runner

    predict, scores, _, _ = scoring
    models_dir, _ = trained
    with runner.job_lock(models_dir, "sensor_predict"):
        result = predict("--now", NOW.isoformat())
    assert result.returncode == errors.EXIT_LOCKED
    assert "another sensor_predict run" in result.stderr and "still going" in result.stderr
    assert scores(QUIET).empty
    assert predict("--now", NOW.isoformat()).returncode == 0  # the lock goes with its holder


HEALTH_FIELDS = [
    "alerts_failed",
    "anomalies",
    "duration_s",
    "exit_status",
    "host",
    "missing",
    "notifications_failed",
    "sensors_done",
    "sensors_failed",
    "sensors_selected",
    "sensors_skipped",
    "windows",
]


@pytest.mark.both_dialects
def test_every_run_leaves_a_health_point_and_json_logs_parse(scoring, influx):
    predict, _, _, database = scoring
    result = predict("--now", NOW.isoformat(), "--log-format", "json")
    assert result.returncode == 0, result.stderr
    entries = [json.loads(line) for line in result.stderr.splitlines()]
    assert {"time", "level", "logger", "message"} <= set(entries[-1])
    assert entries[-1]["message"].startswith("done in")
    assert predict("--now", (NOW + INTERVAL).isoformat()).returncode == 0
    frame = influx.points(database, "JOB_HEALTH", HEALTH_FIELDS, job="sensor_predict")
    assert len(influx.points(database, "JOB_HEALTH", HEALTH_FIELDS)) == len(frame)  # no point of another job
    assert frame["sensors_selected"].tolist() == [4, 4] and frame["windows"].tolist() == [4 * 96, 4]
    assert frame["exit_status"].tolist() == [0, 0] and (frame["duration_s"] > 0).all()
    assert frame["notifications_failed"].tolist() == [0, 0] and frame["alerts_failed"].tolist() == [0, 0]


@pytest.mark.parametrize("what", ["webhook refuses the connection", "state file cannot be written"])
def test_a_failed_notification_or_alert_step_is_named_in_the_summary_and_the_health_point(
    scoring, influx, tmp_path, what
):
    """Exit status 1 with no sensor failed: the summary line and the health point say what did fail."""
    predict, _, _, database = scoring
    if what == "webhook refuses the connection":
        state, env = tmp_path / "state.json", {"SENSOR_NOTIFY_URL": f"http://127.0.0.1:{local_influxd.free_port()}/x"}
        expected = (1, 0)
    else:
        (tmp_path / "a-file").write_text("")
        state, env = tmp_path / "a-file" / "state.json", {}
        expected = (0, 1)
    result = predict("--now", NOW.isoformat(), "--state-file", str(state), env=env)
    assert result.returncode == 1, result.stderr
    summary = result.stderr.splitlines()[-1]
    assert f"0 failed, {expected[0]} notifications failed" in summary
    assert ("the events, incidents and notifications step failed" in summary) is bool(expected[1])
    health = influx.points(
        database, "JOB_HEALTH", ["sensors_failed", "notifications_failed", "alerts_failed", "exit_status"]
    )
    assert health.values.tolist() == [[0, *expected, 1]]


@pytest.mark.both_dialects
def test_events_become_annotations_incidents_and_one_message_each(scoring, influx, webhook, tmp_path):
    predict, _scores, anomalies, database = scoring
    url, received = webhook.url, webhook.received
    args = ["--notify-cooldown", "0s", "--incident-tag", "siteRef", "--state-file", str(tmp_path / "state.json")]
    first = predict("--now", (NOW - pd.Timedelta(hours=9)).isoformat(), *args, env={"SENSOR_NOTIFY_URL": url})
    assert first.returncode == 0, first.stderr
    assert "secret-path" not in first.stderr
    later = predict("--now", NOW.isoformat(), *args, env={"SENSOR_NOTIFY_URL": url})
    assert later.returncode == 0, later.stderr
    # every sensor shares siteRef, so concurrent events arrive as incidents of that site, never twice
    assert received and all(body["kind"] == "incident" for body in received)
    keys = [(body["group"], body["start"], body["severity"]) for body in received]
    assert len(keys) == len(set(keys))
    flagged = set().union(*(body["sensors"] for body in received))
    assert {a.sensor_id for a in anomalies} <= flagged
    sites = {body["group"] for body in received}
    for site in sites:
        assert len(influx.points(database, "INCIDENTS", ["text", "severity", "sensors"], siteRef=site)) >= 1, site
    for anomaly in anomalies:
        starts = influx.points(database, "ANOMALY_EVENTS", ["text", "end_ms"], uniqueID=anomaly.sensor_id).index
        assert any(anomaly.start <= s < anomaly.stop + WINDOW * INTERVAL for s in starts), anomaly
    again = predict("--now", NOW.isoformat(), *args, env={"SENSOR_NOTIFY_URL": url})
    assert again.returncode == 0 and len(received) == len(keys)  # nothing new: nothing sent


def test_a_webhook_url_with_a_user_and_password_sends_them_as_basic_auth_and_logs_neither(scoring, webhook, tmp_path):
    predict, _, _, _ = scoring
    url, received, authorizations = webhook.url, webhook.received, webhook.authorizations
    with_credentials = url.replace("http://", "http://hook:hunter2@")
    result = predict(
        "--now", NOW.isoformat(), "--state-file", str(tmp_path / "s.json"), env={"SENSOR_NOTIFY_URL": with_credentials}
    )
    assert result.returncode == 0, result.stderr
    assert received and set(authorizations) == {"Basic " + base64.b64encode(b"hook:hunter2").decode("ascii")}
    assert "hunter2" not in result.stderr and "secret-path" not in result.stderr


def test_a_bad_webhook_url_stops_the_job_before_it_scores_without_showing_the_url(scoring):
    predict, scores, _, _ = scoring
    url = "http://hook:hunter2@127.0.0.1:badport/hooks/secret-path"
    result = predict("--now", NOW.isoformat(), env={"SENSOR_NOTIFY_URL": url})
    assert result.returncode == 2
    assert "--notify-url / SENSOR_NOTIFY_URL: the webhook URL has a port that is not a number" in result.stderr
    assert "hunter2" not in result.stderr and "secret-path" not in result.stderr and "badport" not in result.stderr
    assert scores(QUIET).empty


@pytest.mark.both_dialects
def test_a_sensor_without_a_model_is_scored_by_the_robust_detector_until_it_has_one(scoring, influx):
    predict, _, _, database = scoring
    index = pd.date_range(NOW - pd.Timedelta(days=4), NOW, freq="15min", inclusive="left")
    values, spike = sensor_data.inject(
        sensor_data.normal_readings("new sensor", index, 9),
        index,
        "new sensor",
        "spike",
        NOW - pd.Timedelta(hours=5),
        INTERVAL,
    )
    influx.write(database, sensor_data.readings_lines("new sensor", index, values))
    result = predict("--now", NOW.isoformat())
    assert result.returncode == 0, result.stderr
    assert "sensor 'new sensor': 96 readings (no model yet: robust detector)" in result.stderr
    found = influx.points(database, "PREDICT_ANOMALY", ["anomaly", "kind", "detector"], uniqueID="new sensor")
    flagged = found.index[found["anomaly"].astype(bool)]
    assert flagged.tolist() == [spike.start] and set(found["detector"]) == {"robust"}
    assert set(found["kind"][found["anomaly"].astype(bool)]) == {"outlier"}
    trained_sensor = influx.points(database, "PREDICT_ANOMALY", ["detector"], uniqueID=QUIET)
    assert len(trained_sensor) == 96 and set(trained_sensor["detector"]) == {"lstm"}  # trained: still the LSTM
    # Each sensor's log line gives the threshold its newest window was compared with, as written: the
    # cold-start detector's of the day, the LSTM's dynamic one.
    for sensor_id in ("new sensor", QUIET):
        written = influx.points(database, "PREDICT_ANOMALY", ["threshold"], uniqueID=sensor_id)["threshold"]
        (line,) = [x for x in result.stderr.splitlines() if f"sensor {sensor_id!r}: 96 " in x]
        assert line.endswith(f", threshold {written.dropna().iloc[-1]:.4f} at the newest window"), line
    skipped = predict("--now", (NOW + INTERVAL).isoformat(), "--no-cold-start")
    assert "sensor 'new sensor': skipped: no model" in skipped.stderr


def test_a_dynamic_threshold_never_drops_below_its_floor_and_still_flags_the_anomalies(scoring, trained):
    """Floored at half the calibrated threshold, so that on this data the dynamic part shows: it moves."""
    predict, scores, anomalies, _ = scoring
    result = predict(
        "--now", NOW.isoformat(), "--threshold", "dynamic", "--dynamic-history", "2d", "--dynamic-floor", "0.5"
    )
    assert result.returncode == 0, result.stderr
    models_dir, _ = trained
    saved = {
        json.loads(p.read_text())["sensor_id"]: json.loads(p.read_text())["threshold"]
        for p in models_dir.glob("*/metadata.json")
    }
    for anomaly in anomalies:
        frame = scores(anomaly.sensor_id)
        assert len(frame) == 96
        assert (frame["threshold"] >= 0.5 * saved[anomaly.sensor_id] * (1 - 1e-6)).all()
        affected = frame[(frame.index >= anomaly.start) & (frame.index < anomaly.stop + WINDOW * INTERVAL)]
        assert affected["anomaly"].any(), anomaly
    assert scores(QUIET)["threshold"].nunique() > 1  # it moves with the recent losses


def test_events_can_also_go_where_chronograf_keeps_its_annotations(scoring, influx, tmp_path):
    predict, _, anomalies, _ = scoring
    influx.create("chronograf")
    result = predict("--now", NOW.isoformat(), "--chronograf-annotations", "--state-file", str(tmp_path / "s.json"))
    assert result.returncode == 0, result.stderr
    found = rows(
        influx.url,
        "chronograf",
        'SELECT "text", "start_time", "deleted", "uniqueID" FROM "annotations" WHERE "deleted" = false GROUP BY "id"',
    )
    assert found
    by_sensor = {values[0][4] for _, values in found}
    assert {a.sensor_id for a in anomalies} <= by_sensor
    for _, ((end, text, start_ns, deleted, _),) in found:
        assert isinstance(start_ns, int) and start_ns <= end * 10**9 and text and deleted is False
