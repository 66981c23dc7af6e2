"""The InfluxQL dialect (anomaly/influx/influxql.py) against a real InfluxDB 1.x, end to end."""

from __future__ import annotations

import pandas as pd
import pytest

import influx_interact
from anomaly.connection import Connection
from anomaly.influx.influxql import InfluxQL
from anomaly.influx.line_protocol import line_protocol
from anomaly.settings import Schema
from influx_interact import InfluxError
from tools import local_influxd

IDS = ["plain", "with space", "comma,equals=colon:", "quote'double\"", "ümlaut Ωhm 温度", "back\\slash"]
T0 = pd.Timestamp("2026-02-01T00:00:00Z")


def connect(url, database, **schema):
    return influx_interact.connect(Connection(url=url, api="auto", database=database), Schema(**schema))


@pytest.fixture
def readings(influxd, database):
    """Three readings per 15 minutes for an hour for every id; the first interval labelled for two ids."""
    lines = []
    for n, sensor_id in enumerate(IDS):
        for minute in range(0, 60, 5):
            stamp = T0 + pd.Timedelta(minutes=minute)
            fields = {"val_num": float(n * 100 + minute)}
            if minute == 0 and n < 2:
                fields["manual_anomaly"] = True
            site = "Campus Energy Centre" if n % 2 == 0 else "Other site"
            lines.append(
                line_protocol("READINGS", {"uniqueID": sensor_id, "siteRef": site}, fields, int(stamp.timestamp()))
            )
    local_influxd.write(influxd.url, database, lines)
    return database


def test_every_id_round_trips_through_listing_and_aggregated_reads(influxd, readings):
    with connect(influxd.url, readings) as db:
        assert db.dialect == "influxql" and isinstance(db, InfluxQL)
        assert db.sensor_ids(T0, T0 + pd.Timedelta(hours=1)) == sorted(IDS)
        means = db.read_means(IDS, T0, T0 + pd.Timedelta(hours=1), pd.Timedelta(minutes=15))
    assert sorted(means) == sorted(IDS)
    expected_index = pd.date_range(T0, periods=4, freq="15min")
    for n, sensor_id in enumerate(IDS):
        assert means[sensor_id].index.equals(expected_index)
        assert means[sensor_id].tolist() == [n * 100 + m for m in (5.0, 20.0, 35.0, 50.0)]


def test_where_filters_and_sensor_selection(influxd, readings):
    with connect(influxd.url, readings, where=(("siteRef", "Campus Energy Centre"),)) as db:
        assert db.sensor_ids(T0, T0 + pd.Timedelta(hours=1)) == sorted(IDS[0::2])
        means = db.read_means(IDS[:2], T0, T0 + pd.Timedelta(hours=1), pd.Timedelta(minutes=15))
    assert list(means) == [IDS[0]]


def test_labelled_intervals_are_found(influxd, readings):
    with connect(influxd.url, readings, label_field="manual_anomaly") as db:
        labelled = db.labelled_intervals(IDS, T0, T0 + pd.Timedelta(hours=1), pd.Timedelta(minutes=15))
    assert sorted(labelled) == sorted(IDS[:2])
    assert all(index.tolist() == [T0] for index in labelled.values())


def test_written_scores_are_found_by_last_scored(influxd, database):
    lines = [
        line_protocol(
            "PREDICT_ANOMALY",
            {"uniqueID": s},
            {"loss": 0.1, "anomaly": False},
            int((T0 + pd.Timedelta(minutes=15 * k)).timestamp()),
        )
        for s in IDS
        for k in range(3 + IDS.index(s))
    ]
    with connect(influxd.url, database) as db:
        db.write(lines)
        db.write(lines)
        last = db.last_scored([*IDS, "never scored"], T0 - pd.Timedelta(days=1))
    assert last == {s: T0 + pd.Timedelta(minutes=15 * (2 + IDS.index(s))) for s in IDS}
    (series,) = local_influxd.query(influxd.url, 'SELECT count("loss") FROM "PREDICT_ANOMALY"', database)["results"][0][
        "series"
    ]
    assert series["values"][0][1] == len(lines)


def field_types(url: str, database: str) -> dict[str, dict[str, str]]:
    answer = local_influxd.query(url, "SHOW FIELD KEYS", database)["results"][0]
    return {series["name"]: dict(series["values"]) for series in answer.get("series", [])}


def test_integers_are_integer_fields_but_the_health_point_keeps_floats(influxd, database):
    stamp = int(T0.timestamp())
    with connect(influxd.url, database) as db:
        db.record_run("sensor_predict", "host-1", {"duration_s": 1.5, "sensors": 3, "exit_status": 0}, T0.value)
        db.write([line_protocol("COUNTS", {"uniqueID": "a"}, {"windows": 5}, stamp)])
        # Why record_run keeps floats: a field's type is fixed by its first point.
        with pytest.raises(InfluxError, match="field type conflict"):
            db.write([line_protocol("COUNTS", {"uniqueID": "a"}, {"windows": 5.0}, stamp + 1)])
    assert field_types(influxd.url, database) == {
        "JOB_HEALTH": {"duration_s": "float", "sensors": "float", "exit_status": "float"},
        "COUNTS": {"windows": "integer"},
    }


def test_a_missing_database_is_named(influxd):
    with connect(influxd.url, "nowhere") as db:
        with pytest.raises(InfluxError, match="no database or bucket 'nowhere'; check INFLUX_DATABASE"):
            db.read_means(["x"], T0, T0 + pd.Timedelta(hours=1), pd.Timedelta(minutes=15))
        with pytest.raises(InfluxError, match="no database or bucket 'nowhere'"):
            db.write(["m,uniqueID=x v=1 1"])


def test_bad_credentials_are_reported_without_the_secret(tmp_path):
    server = local_influxd.LocalInfluxd(tmp_path / "auth", auth=True).start()
    try:
        local_influxd.query(server.url, "CREATE USER admin WITH PASSWORD 'right-pass' WITH ALL PRIVILEGES")
        good = Connection(url=server.url, api="auto", database="d", username="admin", password="right-pass")
        with influx_interact.connect(good, Schema()) as db:
            db._influxql('CREATE DATABASE "d"')
            assert db.read_means(["x"], T0, T0 + pd.Timedelta(hours=1), pd.Timedelta(minutes=15)) == {}
        bad = Connection(url=server.url, api="auto", database="d", username="admin", password="wrong-pass")
        with influx_interact.connect(bad, Schema()) as db, pytest.raises(InfluxError) as error:
            db.read_means(["x"], T0, T0 + pd.Timedelta(hours=1), pd.Timedelta(minutes=15))
        message = str(error.value)
        assert "refused the credentials (HTTP 401)" in message and server.url in message
        assert "wrong-pass" not in message and "INFLUX_PASSWORD" in message
    finally:
        server.stop()


def test_an_unreachable_server_is_tried_again_then_reported(caplog):
    url = f"http://127.0.0.1:{local_influxd.free_port()}"
    connection = Connection(url=url, api="auto", database="d", retries=2, backoff_s=0.01)
    with (
        pytest.raises(InfluxError, match=f"cannot reach InfluxDB at {url}"),
        influx_interact.connect(connection, Schema()),
    ):
        pass
    assert [r.message.rsplit("(", 1)[-1] for r in caplog.records] == ["1 of 2)", "2 of 2)"]


def test_freshness_anomaly_counts_and_scores_read_back(influxd, readings):
    scores = [
        line_protocol(
            "PREDICT_ANOMALY",
            {"uniqueID": s},
            {"val_num": 1.5 * k, "loss": 0.1 * k, "threshold": 0.25, "anomaly": 0.1 * k > 0.25},
            int((T0 + pd.Timedelta(minutes=15 * k)).timestamp()),
        )
        for s in IDS[:2]
        for k in range(5)
    ]
    local_influxd.write(influxd.url, readings, scores)
    with connect(influxd.url, readings) as db:
        fresh = db.last_reading(IDS, T0 - pd.Timedelta(days=1))
        counts = db.anomaly_counts(IDS, T0 - pd.Timedelta(days=1))
        frames = db.read_scores(IDS, T0, T0 + pd.Timedelta(hours=2))
    assert fresh == {s: T0 + pd.Timedelta(minutes=55) for s in IDS}
    assert counts == {IDS[0]: 2, IDS[1]: 2}
    assert sorted(frames) == sorted(IDS[:2])
    frame = frames[IDS[1]]
    assert list(frame.columns) == ["loss", "threshold", "anomaly", "val_num", "score", "worst", "newest"]
    assert frame["anomaly"].tolist() == [False, False, False, True, True]
    assert frame.index[-1] == T0 + pd.Timedelta(hours=1)
    assert frame["score"].isna().all()  # written before the score field was: plots compute it


def test_missing_intervals_are_counted_apart_from_anomalies_and_scores_read_back(influxd, database):
    """Per sensor, from ``since`` on: the points of kind missing, flagged or not; no other kind."""
    kinds = {
        IDS[0]: ["none", "missing", "missing", "shape", "missing", "none"],
        IDS[2]: ["missing", "level", "none", "none", "none", "none"],
        IDS[4]: ["none", "shape", "flatline", "none", "none", "none"],
    }
    lines = []
    for sensor_id, row in kinds.items():
        for k, kind in enumerate(row):
            fields = {"threshold": 0.5, "anomaly": kind not in ("none", "missing"), "kind": kind}
            if kind != "missing":  # the scorer writes no value, loss or score for an interval without data
                fields.update({"val_num": 20.0 + k, "loss": 0.25 * k, "score": 0.5 * k})
            lines.append(line_protocol("PREDICT_ANOMALY", {"uniqueID": sensor_id}, fields, int(at(k).timestamp())))
    lines.append(line_protocol("PREDICT_ANOMALY", {"uniqueID": IDS[0]}, {"anomaly": True, "kind": "missing"}, 0))
    # --where selects readings; the scores carry no such tag and are found without it.
    with connect(influxd.url, database, where=(("siteRef", "Campus Energy Centre"),)) as db:
        db.write(lines)
        counts = db.missing_counts(IDS, at(0))
        later = db.missing_counts(IDS, at(2))  # at or after: the point at ``since`` counts
        chunk = db.missing_counts(IDS[1:], at(0))
        anomalies = db.anomaly_counts(IDS, at(0))
        frames = db.read_scores(IDS, at(0), at(6))
    assert counts == {IDS[0]: 3, IDS[2]: 1}
    assert later == {IDS[0]: 2} and chunk == {IDS[2]: 1}
    assert anomalies == {IDS[0]: 1, IDS[2]: 1, IDS[4]: 2}
    frame = frames[IDS[0]]
    assert list(frame.columns) == ["loss", "threshold", "anomaly", "val_num", "score", "worst", "newest"]
    assert frame["score"].dropna().tolist() == [0.0, 1.5, 2.5]
    assert frame["score"].isna().tolist() == [False, True, True, False, True, False]


def at(k: int) -> pd.Timestamp:
    return T0 + pd.Timedelta(minutes=15 * k)


def test_group_tags_give_each_sensor_its_tag_value(influxd, readings):
    with connect(influxd.url, readings) as db:
        groups = db.group_tags(IDS, T0 - pd.Timedelta(days=1), "siteRef")
        assert db.group_tags(IDS, T0 - pd.Timedelta(days=1), "no such tag") == {}
    assert groups == {s: "Campus Energy Centre" if n % 2 == 0 else "Other site" for n, s in enumerate(IDS)}
