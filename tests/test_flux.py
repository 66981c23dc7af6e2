"""The Flux dialect (anomaly/influx/flux.py, flux_text.py, flux_csv.py), against an imitation of InfluxDB 2.7.

The InfluxQL dialect is tested against a real InfluxDB 1.6 server, which does not answer Flux, and no
InfluxDB 2.x server can run on this machine. So these tests talk to tools/fake_influx2, an imitation of InfluxDB
2.7 running in a thread of the test process: it keeps the points written to it and runs each query the dialect
sends over them, with the Flux functions those queries use, as InfluxDB's documentation says they behave
(tests/test_fake_flux_docs.py checks it against the documented examples), refusing any other; it answers in
annotated CSV as 2.7 does, errors included, and on request breaks an answer off with an error table
(``fail_after``), as InfluxDB does when it meets an error after it began sending tables.

The parsing of answers (``flux_frame``) is also tested on CSV written by hand the way InfluxDB writes it: one
header shared by the tables of the same columns, a new one where they change.
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import socket

import pandas as pd
import pytest
from conftest import run_job

import influx_interact
from anomaly.connection import Connection
from anomaly.influx.flux import Flux
from anomaly.influx.flux_csv import FluxAnswerError, flux_error_is_transient, flux_frame, frames_by_tag, series_by_tag
from anomaly.influx.flux_text import flux_string
from anomaly.influx.influxql import InfluxQL
from anomaly.influx.line_protocol import line_protocol
from anomaly.settings import Schema
from influx_interact import Database, InfluxError, dialect_for_routes, dialect_for_version
from tools.fake_influx2 import BUCKET, EMPTY_CSV, ORG, TOKEN, V2_ROUTES, FakeInflux2

ODD_ID = 'Zone 3, "Café"=Süd'  # space, comma, quotes, equals sign, non-ASCII
SCHEMA = Schema(
    measurement="READINGS",
    field="val_num",
    sensor_tag="uniqueID",
    where=(("siteRef", 'Campus "Energy" Centre'), ("floor", "3=top")),
    label_field="anomaly",
    output_measurement="PREDICT_ANOMALY",
)
NAN = float("nan")
START = pd.Timestamp("2026-01-05T00:00:00Z")
STOP = pd.Timestamp("2026-01-06T00:00:00Z")
INTERVAL = pd.Timedelta(minutes=15)


def csv_answer(text: str) -> str:
    """InfluxDB ends every CSV line with CRLF and each result with an empty line."""
    return text.strip("\n").replace("\n", "\r\n") + "\r\n\r\n"


MEANS_CSV = csv_answer("""
#datatype,string,long,dateTime:RFC3339,double,string
#group,false,false,false,false,true
#default,_result,,,,
,result,table,_time,_value,uniqueID
,,0,2026-01-05T00:00:00Z,20.5,AHU-1 supply
,,0,2026-01-05T00:15:00Z,21,AHU-1 supply
,,0,2026-01-05T00:45:00Z,22.25,AHU-1 supply
,,1,2026-01-05T00:00:00Z,-3.5,"Zone 3, ""Café""=Süd"
,,1,2026-01-05T00:15:00Z,0.00001,"Zone 3, ""Café""=Süd"
""")

# Two sensors' scores: one (first) wrote only intervals without readings (threshold and anomaly, no loss,
# reading or score), so its table has no such columns; each table schema starts a new annotated block.
SCORES_WITHOUT_LOSS_CSV = csv_answer("""
#datatype,string,long,dateTime:RFC3339,string,double,boolean
#group,false,false,false,true,false,false
#default,_result,,,,,
,result,table,_time,uniqueID,threshold,anomaly
,,0,2026-01-05T00:15:00Z,"Zone 3, ""Café""=Süd",0.5,false
,,0,2026-01-05T00:30:00Z,"Zone 3, ""Café""=Süd",0.5,true

#datatype,string,long,dateTime:RFC3339,string,double,double,boolean,double,double
#group,false,false,false,true,false,false,false,false,false
#default,_result,,,,,,,,
,result,table,_time,uniqueID,loss,threshold,anomaly,val_num,score
,,1,2026-01-05T00:15:00Z,AHU-1 supply,0.25,0.5,false,20.5,0.5
,,1,2026-01-05T00:30:00Z,AHU-1 supply,0.75,0.5,true,21,1.5
""")


def error_table(message: str) -> str:
    """How InfluxDB reports an error that came up after it began a 200 answer: a table with an ``error`` and a
    ``reference`` column (annotated CSV), after any tables already sent."""
    quoted = '"' + message.replace('"', '""') + '"'
    return csv_answer(f"""
#datatype,string,string
#group,true,true
#default,,
,error,reference
,{quoted},
""")


# ---------------------------------------------------------------- the fake server


def seconds(time: str) -> int:
    return int(pd.Timestamp(time).timestamp())


def reading(time: str, value: float | bool, sensor: str, field: str = "val_num", **tags: str) -> str:
    """Line protocol of a reading of ``sensor`` in SCHEMA's measurement, with the --where tags SCHEMA selects
    unless ``tags`` differ."""
    measurement = tags.pop("measurement", SCHEMA.measurement)
    return line_protocol(measurement, {**dict(SCHEMA.where), "uniqueID": sensor, **tags}, {field: value}, seconds(time))


def score(time: str, sensor: str, **fields: float | bool | str) -> str:
    """Line protocol of a point as sensor_predict.py writes it: the output measurement, the sensor tag only."""
    return line_protocol(SCHEMA.output_measurement, {"uniqueID": sensor}, fields, seconds(time))


# Readings whose means per 15 minutes are MEANS_CSV's; a chiller's are in the next day.
MEANS_READINGS = [
    reading("2026-01-05T00:05:00Z", 20.0, "AHU-1 supply"),
    reading("2026-01-05T00:10:00Z", 21.0, "AHU-1 supply"),
    reading("2026-01-05T00:15:00Z", 21.0, "AHU-1 supply"),
    reading("2026-01-05T00:45:00Z", 22.0, "AHU-1 supply"),
    reading("2026-01-05T00:59:59Z", 22.5, "AHU-1 supply"),
    reading("2026-01-05T00:00:00Z", -3.5, ODD_ID),
    reading("2026-01-05T00:20:00Z", 0.00001, ODD_ID),
    reading("2026-01-06T00:00:00Z", 9.0, "chiller 2"),
]


@pytest.fixture
def fake():
    server = FakeInflux2().start()
    yield server
    server.stop()


def connect(url: str, **changes) -> contextlib.AbstractContextManager[Database]:
    settings = dict(url=url, api="auto", token=TOKEN, org=ORG, bucket=BUCKET, timeout_s=5.0, backoff_s=0.01)
    settings.update(changes)
    return influx_interact.connect(Connection(**settings), SCHEMA)


def string_literals(flux: str) -> set[str]:
    """Every string literal in a Flux text, unescaped."""
    found = re.findall(r'"((?:[^"\\]|\\.)*)"', flux)
    return {re.sub(r"\\(.)", r"\1", text) for text in found}


def utc(*stamps: str) -> pd.DatetimeIndex:
    return pd.DatetimeIndex([pd.Timestamp(s) for s in stamps])


# ---------------------------------------------------------------- pure parts


@pytest.mark.parametrize(
    "value, literal",
    [
        ("val_num", '"val_num"'),
        ('say "hi"', r'"say \"hi\""'),
        ("C:\\temp", r'"C:\\temp"'),
        ("${x}", r'"\${x}"'),
        ("$5 {x}", '"$5 {x}"'),
        ('back\\"slash', r'"back\\\"slash"'),
        ("Zürich °C", '"Zürich °C"'),
        ("", '""'),
    ],
)
def test_flux_string_escapes_quotes_backslashes_and_interpolation(value, literal):
    assert flux_string(value) == literal


@pytest.mark.parametrize(
    "version, dialect",
    [
        ("v2.7.10", "flux"),
        ("2.0.4", "flux"),
        ("v1.8.10", "influxql"),
        ("1.6.4", "influxql"),
        ("3.0.1", "influxql"),
        ("", "influxql"),
    ],
)
def test_dialect_for_version(version, dialect):
    assert dialect_for_version(version) == dialect


@pytest.mark.parametrize(
    "message, transient",
    [
        ("context deadline exceeded", True),
        ("query canceled", True),
        ("failed to read: connection reset by peer", True),
        ("service unavailable", True),
        ("runtime error @7:6-7:99: aggregateWindow: unsupported aggregate column type string", False),
        ("pivot: schema collision: cannot group float and string types together", False),
        ("query terminated: reached maximum allowed memory limits", False),
    ],
)
def test_flux_error_is_transient_only_when_the_server_gave_up_for_a_passing_reason(message, transient):
    assert flux_error_is_transient(message) is transient


@pytest.mark.parametrize(
    "status, body, dialect",
    [
        (200, json.dumps(V2_ROUTES).encode(), "flux"),
        (200, json.dumps({"write": "/api/v2/write"}).encode(), "influxql"),
        (200, b"<html>a proxy's page</html>", "influxql"),
        (200, b'["query"]', "influxql"),
        (404, b"404 page not found", "influxql"),
        (401, b'{"code":"unauthorized","message":"unauthorized access"}', "influxql"),
    ],
)
def test_dialect_for_routes(status, body, dialect):
    assert dialect_for_routes(status, body) == dialect


def one_column(datatype: str, *cells: str, default: str = "") -> bytes:
    """An answer of one table with one column ``x`` of ``datatype``, a row per cell."""
    rows = "\n".join(f",,0,{cell}" for cell in cells)
    return csv_answer(f"""
#datatype,string,long,{datatype}
#group,false,false,false
#default,_result,,{default}
,result,table,x
{rows}
""").encode()


@pytest.mark.parametrize(
    "datatype, cells, values, dtype",
    [
        ("double", ["1.5", "-Inf", "+Inf", "NaN", "1e-05", ""], [1.5, -math.inf, math.inf, NAN, 1e-05, NAN], "float64"),
        ("long", ["3", "-7"], [3, -7], "int64"),
        ("long", ["3", ""], [3.0, NAN], "float64"),
        ("unsignedLong", ["18446744073709551615"], [18446744073709551615], "uint64"),
        ("boolean", ["true", "false"], [True, False], "bool"),
        ("boolean", ["true", ""], [True, NAN], "object"),
        (
            "string",
            ["NA", "null", "None", '"Zone 3, ""Café""=Süd"', ""],
            ["NA", "null", "None", ODD_ID, NAN],
            "category",
        ),
        ("string", ["007", "8", "true", "1e3"], ["007", "8", "true", "1e3"], "category"),
        ("dateTime:RFC3339", ["2026-01-05T00:15:00Z", ""], [utc("2026-01-05T00:15Z")[0], NAN], "datetime64[us, UTC]"),
        (
            "dateTime:RFC3339Nano",
            ["2026-01-05T00:15:00.123456789Z", "2026-01-05T00:30:00Z"],
            [pd.Timestamp("2026-01-05T00:15:00.123456789Z"), pd.Timestamp("2026-01-05T00:30Z")],
            "datetime64[ns, UTC]",
        ),
    ],
)
def test_flux_frame_types_each_column_by_its_datatype(datatype, cells, values, dtype):
    """An empty cell is missing; a sensor id that reads like a missing value ("NA", "null"), a number or a
    boolean is an id, as it came."""
    frame = flux_frame(one_column(datatype, *cells))
    assert list(frame.columns) == ["x"]
    assert frame["x"].dtype == dtype
    assert len(frame) == len(values)
    for got, expected in zip(frame["x"], values):
        assert (pd.isna(got) and pd.isna(expected)) or got == expected, (got, expected)


@pytest.mark.parametrize("datatype, value", [("long", 7), ("double", 0.5), ("string", "x y")])
def test_flux_frame_fills_empty_cells_with_the_columns_default(datatype, value):
    frame = flux_frame(one_column(datatype, "", default=str(value)))
    assert frame["x"].tolist() == [value]


def header_per_table(answer: str) -> str:
    """The same tables, with the annotations and header written again before each (as the fake server writes
    them) instead of once for all tables of the same columns (as InfluxDB does)."""
    head, rows = answer.split(",result,table,", 1)
    header, *lines = rows.strip().split("\r\n")
    tables: dict[str, list[str]] = {}
    for line in lines:
        tables.setdefault(line.split(",")[2], []).append(line)
    return "".join(f"{head},result,table,{header}\r\n" + "\r\n".join(t) + "\r\n\r\n" for t in tables.values())


def test_flux_frame_is_the_same_whether_tables_share_their_header_or_not():
    shared = flux_frame(MEANS_CSV.encode())
    assert header_per_table(MEANS_CSV).count("#datatype") == 2
    pd.testing.assert_frame_equal(flux_frame(header_per_table(MEANS_CSV).encode()), shared)
    assert shared["uniqueID"].tolist() == ["AHU-1 supply"] * 3 + [ODD_ID] * 2


def test_flux_frame_gives_each_row_every_column_any_table_has():
    """Tables of different columns (pivoted scores: a field never written makes no column) in one frame, in the
    order they came, a column a table lacks missing in its rows."""
    frame = flux_frame(SCORES_WITHOUT_LOSS_CSV.encode())
    assert list(frame.columns) == ["_time", "uniqueID", "threshold", "anomaly", "loss", "val_num", "score"]
    assert frame["uniqueID"].tolist() == [ODD_ID, ODD_ID, "AHU-1 supply", "AHU-1 supply"]
    assert frame["loss"].isna().tolist() == [True, True, False, False]
    assert frame["anomaly"].tolist() == [False, True, False, True]


@pytest.mark.parametrize("answer", [EMPTY_CSV, "", "\r\n\r\n"])
def test_flux_frame_of_no_table_is_empty(answer):
    assert flux_frame(answer.encode()).empty


def test_flux_frame_raises_what_an_error_table_says_even_after_tables():
    message = 'runtime error: "quoted", with a comma'
    with pytest.raises(FluxAnswerError) as caught:
        flux_frame((MEANS_CSV + error_table(message)).encode())
    assert str(caught.value) == message


@pytest.mark.parametrize(
    "answer", [",result,table,_value\r\n,,0,1\r\n", '{"code":"invalid"}', "#datatype,string,long\r\n#group,false"]
)
def test_flux_frame_refuses_what_is_not_annotated_csv(answer):
    with pytest.raises(FluxAnswerError):
        flux_frame(answer.encode())


def test_series_by_tag_groups_values_by_sensor_as_float_series_on_utc_time():
    answer = csv_answer("""
#datatype,string,long,dateTime:RFC3339,long,string
#group,false,false,false,false,true
#default,_result,,,,
,result,table,_time,_value,uniqueID
,,0,2026-01-05T00:00:00Z,1,a
,,1,2026-01-05T00:00:00Z,2,"Zone 3, ""Café""=Süd"
,,0,2026-01-05T00:15:00Z,3,a
,,2,2026-01-05T00:15:00Z,9,
,,3,2026-01-05T01:15:00+01:00,7,b
""")
    out = series_by_tag(flux_frame(answer.encode()), "uniqueID")
    assert list(out) == ["a", ODD_ID, "b"]  # the row without the tag is no sensor's
    assert out["a"].tolist() == [1.0, 3.0]
    assert out["a"].dtype == "float64"
    assert out["a"].name == "a"
    assert out["a"].index.equals(utc("2026-01-05T00:00Z", "2026-01-05T00:15Z"))
    assert out["a"].index.name is None
    assert str(out["a"].index.tz) == "UTC"
    assert out[ODD_ID].tolist() == [2.0]
    assert out["b"].index.equals(utc("2026-01-05T00:15Z"))
    assert str(out["b"].index.tz) == "UTC"


def test_by_tag_of_nothing_is_empty():
    assert series_by_tag(flux_frame(EMPTY_CSV.encode()), "uniqueID") == {}
    assert frames_by_tag(flux_frame(EMPTY_CSV.encode()), "uniqueID", ["loss"]) == {}


# ---------------------------------------------------------------- through the fake server


@pytest.mark.parametrize(
    "version, build, v2_api, dialect, asked",
    [
        pytest.param("v2.7.10", "OSS", True, Flux, ["/ping"], id="InfluxDB 2.7: its version"),
        pytest.param(None, "Cloud", True, Flux, ["/ping", "/api/v2"], id="InfluxDB Cloud: no version, a v2 API"),
        pytest.param("1.8.10", "OSS", False, InfluxQL, ["/ping"], id="InfluxDB 1.8: its version"),
        pytest.param("3.0.1", "Core", False, InfluxQL, ["/ping"], id="InfluxDB 3 Core: its version"),
        pytest.param(None, None, False, InfluxQL, ["/ping", "/api/v2"], id="no version, no v2 API"),
    ],
)
def test_auto_detects_the_dialect_by_the_version_or_else_the_v2_api(fake, version, build, v2_api, dialect, asked):
    """Fake server imitating each product's answer to /ping (InfluxDB Cloud sends no X-Influxdb-Version) and to
    GET /api/v2 (the v2 routes, with the Flux query route, on 2.x and Cloud; 404 where there is no v2 API)."""
    fake.version, fake.build, fake.v2_api = version, build, v2_api
    with connect(fake.url) as db:
        assert isinstance(db, dialect)
    assert fake.gets == asked


def test_a_cloud_token_that_is_refused_names_the_token_variable(fake):
    """Fake server imitating InfluxDB Cloud (no version header; GET /api/v2 refuses a wrong token)."""
    fake.version = None
    with (
        pytest.raises(InfluxError, match="INFLUX_TOKEN") as caught,
        connect(fake.url, token="wrong-secret-42") as db,
    ):
        db.read_means(["AHU-1 supply"], START, STOP, INTERVAL)
    assert "wrong-secret-42" not in str(caught.value)


def test_sensor_ids_are_sorted_and_exact(fake):
    """schema.tagValues(): the call, its predicate and its parameters (every value one, the start Unix time 0),
    and the ids read back exactly."""
    fake.write(MEANS_READINGS)
    with connect(fake.url) as db:
        ids = db.sensor_ids(START, STOP)
    assert ids == ["AHU-1 supply", 'Zone 3, "Café"=Süd', "chiller 2"]
    query = fake.query
    assert query["fields"] == {"org": ORG}
    assert query["text"].startswith('import "influxdata/influxdb/schema"\n')
    for piece in [
        "schema.tagValues(",
        "bucket: params.bucket,",
        'tag: "uniqueID",',
        'predicate: (r) => r._measurement == params.measurement and r["siteRef"] == params.where0 '
        'and r["floor"] == params.where1,',
        "start: params.start,",
    ]:
        assert piece in query["text"]
    assert string_literals(query["text"]) == {"influxdata/influxdb/schema", "siteRef", "floor", "uniqueID"}
    assert query["options"]["params"] == {
        "bucket": BUCKET,
        "where0": 'Campus "Energy" Centre',
        "where1": "3=top",
        "start": pd.Timestamp(0, tz="UTC"),
        "measurement": "READINGS",
    }


def test_sensor_ids_are_every_sensor_the_bucket_holds_however_long_it_has_been_silent(fake):
    """As InfluxQL's SHOW TAG VALUES, the list holds every sensor of
    the measurement that matches --where, whenever it last wrote (the chiller, ten months before the window)
    and whatever field it wrote; not the sensors of another measurement or site."""
    fake.write(
        [
            reading("2026-01-05T10:00:00Z", 1.0, "AHU-1 supply"),
            reading("2025-03-01T00:00:00Z", 2.0, "chiller 2"),
            reading("2026-01-05T10:00:00Z", True, ODD_ID, field="manual_anomaly"),
            reading("2026-01-05T10:00:00Z", 1.0, "other site", siteRef="Other site"),
            reading("2026-01-05T10:00:00Z", 1.0, "weather", measurement="WEATHER"),
        ]
    )
    with connect(fake.url) as db:
        assert db.sensor_ids(START, STOP) == ["AHU-1 supply", ODD_ID, "chiller 2"]


def test_read_means_returns_float_series_per_sensor_on_interval_starts(fake):
    """The mean of each interval's readings at its start, start inclusive (00:15 is the second interval's), the
    stop exclusive (the chiller's reading at STOP is not read)."""
    fake.write(MEANS_READINGS)
    with connect(fake.url) as db:
        means = db.read_means(["AHU-1 supply", ODD_ID, "chiller 2"], START, STOP, INTERVAL)
    assert list(means) == ["AHU-1 supply", ODD_ID]
    ahu = means["AHU-1 supply"]
    assert ahu.tolist() == [20.5, 21.0, 22.25]
    assert ahu.dtype == "float64"
    assert ahu.index.equals(utc("2026-01-05T00:00Z", "2026-01-05T00:15Z", "2026-01-05T00:45Z"))
    assert str(ahu.index.tz) == "UTC"
    assert means[ODD_ID].tolist() == [-3.5, 1e-05]
    assert means[ODD_ID].name == ODD_ID


def test_read_means_sends_the_pipeline_with_every_value_as_a_parameter(fake):
    fake.write(MEANS_READINGS)
    sensors = ["AHU-1 supply", ODD_ID]
    with connect(fake.url) as db:
        db.read_means(sensors, START, STOP, INTERVAL)
    text, options = fake.query["text"], fake.query["options"]
    for piece in [
        "from(bucket: params.bucket)",
        "|> range(start: params.start, stop: params.stop)",
        "|> filter(fn: (r) => r._measurement == params.measurement and r._field == params.field)",
        '|> filter(fn: (r) => r["siteRef"] == params.where0)',
        '|> filter(fn: (r) => r["floor"] == params.where1)',
        '|> filter(fn: (r) => r["uniqueID"] == params.sensor0 or r["uniqueID"] == params.sensor1)',
        '|> aggregateWindow(every: params.every, fn: mean, createEmpty: false, timeSrc: "_start")',
    ]:
        assert piece in text
    # Only column names are written into the text; every value travels as a parameter.
    assert string_literals(text) == {"siteRef", "floor", "uniqueID", "_start", "_time", "_value"}
    assert list(options) == ["params"]
    assert options["params"] == {
        "bucket": BUCKET,
        "measurement": "READINGS",
        "field": "val_num",
        "where0": 'Campus "Energy" Centre',
        "where1": "3=top",
        "start": START,
        "stop": STOP,
        "every": INTERVAL,
        "sensor0": "AHU-1 supply",
        "sensor1": ODD_ID,
    }


def test_labelled_intervals_are_the_starts_of_intervals_with_a_true_label(fake):
    """Intervals holding a point whose label field (SCHEMA: anomaly) is true, not those whose labels are all
    false, nor a true label of another field or site."""
    fake.write(
        [
            reading("2026-01-05T00:20:00Z", True, "AHU-1 supply", field="anomaly"),
            reading("2026-01-05T00:25:00Z", True, "AHU-1 supply", field="anomaly"),
            reading("2026-01-05T00:50:00Z", False, "AHU-1 supply", field="anomaly"),
            reading("2026-01-05T01:00:00Z", True, "AHU-1 supply", field="manual_anomaly"),
            reading("2026-01-05T02:00:00Z", True, "AHU-1 supply", field="anomaly", siteRef="elsewhere"),
            reading("2026-01-05T00:00:00Z", True, ODD_ID, field="anomaly"),
            reading("2026-01-05T01:44:59Z", True, ODD_ID, field="anomaly"),
            reading("2026-01-05T03:00:00Z", False, ODD_ID, field="anomaly"),
        ]
    )
    with connect(fake.url) as db:
        labelled = db.labelled_intervals(["AHU-1 supply", ODD_ID], START, STOP, INTERVAL)
    assert set(labelled) == {"AHU-1 supply", ODD_ID}
    assert labelled["AHU-1 supply"].equals(utc("2026-01-05T00:15Z"))
    assert labelled[ODD_ID].equals(utc("2026-01-05T00:00Z", "2026-01-05T01:30Z"))
    assert str(labelled[ODD_ID].tz) == "UTC"
    text, params = fake.query["text"], fake.query["options"]["params"]
    assert "r._field == params.label" in text
    assert "|> filter(fn: (r) => r._value == true)" in text
    assert '|> aggregateWindow(every: params.every, fn: count, createEmpty: false, timeSrc: "_start")' in text
    assert params["label"] == "anomaly"
    assert params["every"] == INTERVAL
    assert (params["sensor0"], params["sensor1"]) == ("AHU-1 supply", ODD_ID)


def test_last_scored_is_the_newest_score_time_per_sensor(fake):
    """The newest loss at or after ``since``, whatever came later in other fields (a missing interval writes no
    loss) or before ``since``; a sensor scored only before it is absent."""
    since = pd.Timestamp("2026-01-01T00:00:00Z")
    fake.write(
        [
            score("2026-01-05T23:30:00Z", "AHU-1 supply", loss=0.5),
            score("2026-01-05T23:45:00Z", "AHU-1 supply", loss=0.125),
            score("2026-01-06T00:00:00Z", "AHU-1 supply", threshold=1.0, kind="missing"),
            score("2026-01-04T06:00:00Z", ODD_ID, loss=3.75),
            score("2025-12-31T23:45:00Z", "chiller 2", loss=1.0),
            reading("2026-01-05T12:00:00Z", 1.0, "chiller 2", field="loss"),
        ]
    )
    with connect(fake.url) as db:
        last = db.last_scored(["AHU-1 supply", ODD_ID, "chiller 2"], since)
    assert last == {"AHU-1 supply": pd.Timestamp("2026-01-05T23:45:00Z"), ODD_ID: pd.Timestamp("2026-01-04T06:00:00Z")}
    assert all(str(stamp.tz) == "UTC" for stamp in last.values())
    text, params = fake.query["text"], fake.query["options"]["params"]
    assert "|> range(start: params.start)" in text
    assert "|> last()" in text
    assert params["measurement"] == "PREDICT_ANOMALY"
    assert params["start"] == since
    assert [params[f"sensor{i}"] for i in range(3)] == ["AHU-1 supply", ODD_ID, "chiller 2"]


def test_last_reading_and_group_tag_come_from_the_newest_point_whichever_series_holds_it(fake):
    """AHU-1's equipment tag changed from AHU-2 to AHU-1, so its
    readings are in two series, and its newest point is in the series that comes first (series key order),
    not in the table that comes last. The other sensor's newest point has no equipment tag: its tag comes
    from its newest point that has one."""
    fake.write(
        [
            reading("2026-01-05T08:00:00Z", 3.0, "AHU-1 supply", equip="AHU-2"),
            reading("2026-01-05T09:00:00Z", 1.0, "AHU-1 supply", equip="AHU-1"),
            reading("2026-01-05T09:30:00Z", 4.0, "AHU-1 supply", equip="AHU-2"),
            reading("2026-01-05T10:00:00Z", 2.0, "AHU-1 supply", equip="AHU-1"),
            reading("2026-01-05T07:00:00Z", 5.0, ODD_ID, equip="chiller"),
            reading("2026-01-05T11:00:00Z", 6.0, ODD_ID),
            reading("2026-01-05T12:00:00Z", 7.0, "AHU-1 supply", equip="AHU-3", siteRef="elsewhere"),
        ]
    )
    since = pd.Timestamp("2026-01-05T00:00:00Z")
    sensors = ["AHU-1 supply", ODD_ID, "chiller 2"]
    with connect(fake.url) as db:
        fresh = db.last_reading(sensors, since)
        groups = db.group_tags(sensors, since, "equip")
    assert fresh == {"AHU-1 supply": pd.Timestamp("2026-01-05T10:00Z"), ODD_ID: pd.Timestamp("2026-01-05T11:00Z")}
    assert groups == {"AHU-1 supply": "AHU-1", ODD_ID: "chiller"}


def test_read_means_gives_only_the_chunks_sensors(fake):
    """The sensor filter (equalities joined with or) keeps the chunk's sensors and no other, however alike their
    ids ("AHU-1 supply 2", "ahu-1 supply") or their series (another sensor with the chunk's other tags); each
    mean is of its own sensor's points, per interval, whichever of its series they are in (AHU-1's readings with
    and without an equipment tag: one mean, not one per series)."""
    fake.write(
        [
            reading("2026-01-05T00:05:00Z", 20.0, "AHU-1 supply"),
            reading("2026-01-05T00:10:00Z", 21.0, "AHU-1 supply"),
            reading("2026-01-05T00:12:00Z", 22.0, "AHU-1 supply", equip="AHU-1"),
            reading("2026-01-05T00:40:00Z", 23.0, "AHU-1 supply", equip="AHU-1"),
            reading("2026-01-05T00:20:00Z", -1.5, ODD_ID),
            reading("2026-01-05T00:05:00Z", 99.0, "AHU-1 supply 2"),
            reading("2026-01-05T00:05:00Z", 98.0, "ahu-1 supply"),
            reading("2026-01-05T00:05:00Z", 97.0, "chiller 2", equip="AHU-1"),
            reading("2026-01-06T00:05:00Z", 96.0, ODD_ID),  # after the range
        ]
    )
    with connect(fake.url) as db:
        means = db.read_means(["AHU-1 supply", ODD_ID, "no such sensor"], START, STOP, INTERVAL)
    assert list(means) == ["AHU-1 supply", ODD_ID]
    assert means["AHU-1 supply"].to_dict() == {
        pd.Timestamp("2026-01-05T00:00Z"): 21.0,
        pd.Timestamp("2026-01-05T00:30Z"): 23.0,
    }
    assert means[ODD_ID].to_dict() == {pd.Timestamp("2026-01-05T00:15Z"): -1.5}
    params = fake.query["options"]["params"]
    assert [params[f"sensor{i}"] for i in range(3)] == ["AHU-1 supply", ODD_ID, "no such sensor"]


def test_no_sensor_asks_the_server_nothing(fake):
    """No sensor, no row could match: nothing is sent (a filter of no comparison is no Flux)."""
    since = pd.Timestamp("2026-01-01T00:00:00Z")
    with connect(fake.url) as db:
        assert db.read_means([], START, STOP, INTERVAL) == {}
        assert db.labelled_intervals([], START, STOP, INTERVAL) == {}
        assert db.last_scored([], since) == {}
        assert db.last_reading([], since) == {}
        assert db.group_tags([], since, "equip") == {}
        assert db.anomaly_counts([], since) == {}
        assert db.missing_counts([], since) == {}
        assert db.read_scores([], START, STOP) == {}
    assert fake.queries == []


def test_no_data_gives_empty_results(fake):
    with connect(fake.url) as db:
        assert db.sensor_ids(START, STOP) == []
        assert db.read_means(["AHU-1 supply"], START, STOP, INTERVAL) == {}
        assert db.labelled_intervals(["AHU-1 supply"], START, STOP, INTERVAL) == {}
        assert db.last_scored(["AHU-1 supply"], START) == {}
    assert len(fake.queries) == 4


def test_missing_counts_are_the_missing_intervals_per_sensor_since_a_time(fake):
    """Points of kind "missing" at or after ``since``, flagged or not; not other kinds, nor earlier ones."""
    since = pd.Timestamp("2026-01-04T00:00:00Z")
    fake.write(
        [
            *(score(f"2026-01-05T0{h}:00:00Z", "AHU-1 supply", kind="missing", anomaly=h == 1) for h in range(3)),
            score("2026-01-05T03:00:00Z", "AHU-1 supply", kind="none", anomaly=False),
            score("2026-01-03T23:45:00Z", "AHU-1 supply", kind="missing", anomaly=False),
            *(score(f"2026-01-04T{h:02d}:00:00Z", ODD_ID, kind="missing", anomaly=False) for h in range(24)),
            score("2026-01-05T00:00:00Z", "chiller 2", kind="flatline", anomaly=True),
        ]
    )
    with connect(fake.url) as db:
        counts = db.missing_counts(["AHU-1 supply", ODD_ID, "chiller 2"], since)
    assert counts == {"AHU-1 supply": 3, ODD_ID: 24}
    assert all(type(n) is int for n in counts.values())
    text, params = fake.query["text"], fake.query["options"]["params"]
    assert 'r._field == "kind"' in text and "r._value == params.kind" in text and "|> count()" in text
    assert "missing" not in text
    assert params == {
        "bucket": BUCKET,
        "where0": 'Campus "Energy" Centre',
        "where1": "3=top",
        "start": since,
        "measurement": "PREDICT_ANOMALY",
        "kind": "missing",
        "sensor0": "AHU-1 supply",
        "sensor1": ODD_ID,
        "sensor2": "chiller 2",
    }
    with connect(fake.url) as db:
        assert db.missing_counts(["no such sensor"], since) == {}


def test_anomaly_counts_are_the_flagged_windows_per_sensor_since_a_time(fake):
    """Points flagged at or after ``since``, not those that were not, nor earlier ones."""
    since = pd.Timestamp("2026-01-04T00:00:00Z")
    fake.write(
        [
            *(score(f"2026-01-05T0{h}:00:00Z", "AHU-1 supply", anomaly=h < 2, kind="spike") for h in range(5)),
            score("2026-01-03T23:45:00Z", "AHU-1 supply", anomaly=True, kind="spike"),
            score("2026-01-04T00:00:00Z", ODD_ID, anomaly=True, kind="missing"),
            score("2026-01-05T00:00:00Z", "chiller 2", anomaly=False, kind="none"),
        ]
    )
    with connect(fake.url) as db:
        counts = db.anomaly_counts(["AHU-1 supply", ODD_ID, "chiller 2"], since)
    assert counts == {"AHU-1 supply": 2, ODD_ID: 1}
    assert all(type(n) is int for n in counts.values())


def test_read_scores_gives_the_score_column_even_where_none_was_written(fake):
    """Each point's fields by its time, NaN for a field a point lacks (an interval without readings has no loss,
    reading or score); points written before the score field was have no score column at all."""
    columns = ["loss", "threshold", "anomaly", "val_num", "score", "worst", "newest"]
    fake.write(
        [
            score(
                "2026-01-05T00:15:00Z", "AHU-1 supply", loss=0.25, threshold=0.5, anomaly=False, val_num=20.5, score=0.5
            ),
            score("2026-01-05T00:30:00Z", "AHU-1 supply", threshold=0.5, anomaly=False, kind="missing"),
            score(
                "2026-01-05T00:45:00Z", "AHU-1 supply", loss=0.75, threshold=0.5, anomaly=True, val_num=21.0, score=1.5
            ),
            score("2026-01-05T00:15:00Z", "chiller 2", loss=0.25, threshold=0.5, anomaly=False, val_num=20.5),
            score("2026-01-05T00:30:00Z", "chiller 2", loss=0.75, threshold=0.5, anomaly=True, val_num=21.0),
        ]
    )
    with connect(fake.url) as db:
        frames = db.read_scores(["AHU-1 supply", "chiller 2"], START, STOP)
    frame = frames["AHU-1 supply"]
    assert list(frame.columns) == columns
    assert frame.index.equals(utc("2026-01-05T00:15Z", "2026-01-05T00:30Z", "2026-01-05T00:45Z"))
    assert frame["score"].tolist()[::2] == [0.5, 1.5] and pd.isna(frame["score"].iloc[1])
    assert frame["anomaly"].tolist() == [False, False, True]
    frame = frames["chiller 2"]
    assert list(frame.columns) == columns
    assert frame["score"].isna().all() and frame["loss"].tolist() == [0.25, 0.75]
    assert fake.queries[-1]["options"]["params"]["measurement"] == "PREDICT_ANOMALY"


# A sensor whose points in range are all intervals without readings (threshold and anomaly only) beside one
# scored in full.
SCORES_WITHOUT_LOSS = [
    score("2026-01-05T00:15:00Z", ODD_ID, threshold=0.5, anomaly=False, kind="missing"),
    score("2026-01-05T00:30:00Z", ODD_ID, threshold=0.5, anomaly=True, kind="missing"),
    score("2026-01-05T00:15:00Z", "AHU-1 supply", loss=0.25, threshold=0.5, anomaly=False, val_num=20.5, score=0.5),
    score("2026-01-05T00:30:00Z", "AHU-1 supply", loss=0.75, threshold=0.5, anomaly=True, val_num=21.0, score=1.5),
]


def test_read_scores_gives_every_column_as_influxql_does_when_a_sensor_wrote_no_loss_or_reading(fake):
    """A sensor whose points in range are all intervals without readings has no loss, reading or score column
    in its pivoted table. Its frame has all five columns, as InfluxQL's (which names every column it selects)
    has, NaN where nothing was written; the other sensor's frame is whole."""
    fake.write(SCORES_WITHOUT_LOSS)
    with connect(fake.url) as db:
        frames = db.read_scores(["AHU-1 supply", ODD_ID], START, STOP)
    assert set(frames) == {"AHU-1 supply", ODD_ID}
    silent, whole = frames[ODD_ID], frames["AHU-1 supply"]
    assert (
        list(silent.columns)
        == list(whole.columns)
        == [
            "loss",
            "threshold",
            "anomaly",
            "val_num",
            "score",
            "worst",
            "newest",
        ]
    )
    assert silent[["loss", "val_num", "score"]].isna().all().all()
    assert silent["threshold"].tolist() == [0.5, 0.5] and silent["anomaly"].tolist() == [False, True]
    assert whole["loss"].tolist() == [0.25, 0.75] and whole["val_num"].tolist() == [20.5, 21.0]


def test_sensor_plot_draws_every_sensor_when_one_wrote_no_loss_or_reading(fake, tmp_path):
    """sensor_plot.py run as cron runs it: the sensor whose scores have no loss column gets its picture (no
    windows scored) and the other sensors theirs; exit 0."""
    fake.write([*MEANS_READINGS, *SCORES_WITHOUT_LOSS])
    env = {"INFLUX_URL": fake.url, "INFLUX_TOKEN": TOKEN, "INFLUX_ORG": ORG, "INFLUX_BUCKET": BUCKET}
    sensors = ["--sensor", "AHU-1 supply", "--sensor", ODD_ID]
    window = ["--start", "2026-01-05T00:00:00Z", "--stop", "2026-01-06T00:00:00Z"]
    result = run_job("sensor_plot.py", [*sensors, *window, "--output", "plots"], env, tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "2 drawn, 0 not" in result.stderr
    assert f"sensor {ODD_ID!r}: wrote" in result.stderr and "0 windows scored" in result.stderr
    assert len(list((tmp_path / "plots").iterdir())) == 2


def test_write_sends_exact_line_protocol_in_seconds_to_the_org_and_bucket(fake, monkeypatch):
    monkeypatch.setattr(influx_interact, "WRITE_BATCH_LINES", 2)
    lines = [
        line_protocol("PREDICT_ANOMALY", {"uniqueID": sensor_id}, {"loss": loss, "anomaly": loss > 1}, time_s)
        for sensor_id, loss, time_s in [
            ("AHU-1 supply", 0.25, 1767571200),
            (ODD_ID, 1.5, 1767571200),
            (ODD_ID, 0.5, 1767572100),
        ]
    ]
    assert lines[1] == 'PREDICT_ANOMALY,uniqueID=Zone\\ 3\\,\\ "Café"\\=Süd loss=1.5,anomaly=true 1767571200'
    with connect(fake.url) as db:
        db.write(lines)
    assert [w["fields"] for w in fake.writes] == [{"org": ORG, "bucket": BUCKET, "precision": "s"}] * 2
    assert [w["body"] for w in fake.writes] == ["\n".join(lines[:2]), lines[2]]


def test_delete_scores_sends_influxql_deletes_on_the_v1_api(fake):
    """Fake server: it records the v1 request and applies it. InfluxDB 2.x takes InfluxQL's DELETE on /query for
    the bucket's DBRP mapping; /api/v2/delete's predicates could not name an id with parentheses or quotes."""
    first, last = START, START + 3 * INTERVAL
    stamps = [int((START + i * INTERVAL).timestamp()) for i in range(6)]
    kept = "AHU-1 supply"
    fake.write(
        [
            line_protocol("PREDICT_ANOMALY", {"uniqueID": s}, {"loss": 1.0, "kind": "none"}, t)
            for s in (ODD_ID, kept)
            for t in stamps
        ]
    )
    with connect(fake.url) as db:
        db.delete_scores({ODD_ID: [(first, first), (first + INTERVAL, last)], "AHU-1 supply": []})
    assert fake.v1_queries == [
        {
            "db": BUCKET,
            "q": 'DELETE FROM "PREDICT_ANOMALY" WHERE "uniqueID" = \'Zone 3, "Café"=Süd\' '
            "AND time >= '2026-01-05T00:00:00Z' AND time <= '2026-01-05T00:00:00Z'; "
            'DELETE FROM "PREDICT_ANOMALY" WHERE "uniqueID" = \'Zone 3, "Café"=Süd\' '
            "AND time >= '2026-01-05T00:15:00Z' AND time <= '2026-01-05T00:45:00Z'",
        }
    ]
    remaining = fake.buckets[BUCKET].frame("PREDICT_ANOMALY", ["loss", "kind"], uniqueID=ODD_ID)
    assert list(remaining.index) == [START + 4 * INTERVAL, START + 5 * INTERVAL]
    assert len(fake.buckets[BUCKET].frame("PREDICT_ANOMALY", ["loss", "kind"], uniqueID=kept)) == 6


def test_record_run_writes_numbers_as_floats_in_nanoseconds(fake):
    # JOB_HEALTH has held its numbers as floats since its first point: an integer now would be refused.
    with connect(fake.url) as db:
        db.record_run(
            "sensor_predict",
            "host 1",
            {"duration_s": 12.5, "sensors": 3, "anomalies": 0, "exit_status": 1, "note": "ok"},
            1767571200123456789,
        )
    assert [w["fields"] for w in fake.writes] == [{"org": ORG, "bucket": BUCKET, "precision": "ns"}]
    assert [w["body"] for w in fake.writes] == [
        "JOB_HEALTH,host=host\\ 1,job=sensor_predict "
        'duration_s=12.5,sensors=3.0,anomalies=0.0,exit_status=1.0,note="ok" 1767571200123456789'
    ]


@pytest.mark.parametrize("api, dialect", [("flux", Flux), ("influxql", InfluxQL)])
def test_a_named_dialect_is_used_without_asking_the_server(fake, api, dialect):
    with connect(fake.url, api=api) as db:
        assert isinstance(db, dialect) and db.dialect == api
    assert fake.gets == []


def test_wrong_token_names_the_url_and_variable_but_not_the_token(fake):
    with connect(fake.url, token="wrong-secret-42") as db, pytest.raises(InfluxError, match="INFLUX_TOKEN") as caught:
        db.read_means(["AHU-1 supply"], START, STOP, INTERVAL)
    message = str(caught.value)
    assert fake.url in message
    assert "HTTP 401" in message
    assert "wrong-secret-42" not in message
    assert len(fake.queries) == 0  # refused before the query was looked at


def test_wrong_token_on_write_does_not_leak_the_token(fake):
    with connect(fake.url, token="wrong-secret-42") as db, pytest.raises(InfluxError, match="INFLUX_TOKEN") as caught:
        db.write(["PREDICT_ANOMALY,uniqueID=a loss=1.0 1767571200"])
    assert "wrong-secret-42" not in str(caught.value)


@pytest.mark.parametrize("operation", ["query", "write"])
def test_unknown_bucket_names_the_bucket_and_variable(fake, operation):
    with connect(fake.url, bucket="sensorz") as db, pytest.raises(InfluxError, match="INFLUX_BUCKET") as caught:
        if operation == "query":
            db.read_means(["AHU-1 supply"], START, STOP, INTERVAL)
        else:
            db.write(["PREDICT_ANOMALY,uniqueID=a loss=1.0 1767571200"])
    assert "'sensorz'" in str(caught.value)
    assert fake.url in str(caught.value)


def test_an_error_inside_a_200_answer_is_an_influx_error_with_the_servers_message(fake):
    """InfluxDB sends a query's first tables, then meets an error, which it reports as an error table in the
    same 200 answer. That is an InfluxError quoting the server, not a traceback, and it is not tried again: the
    same query would meet the same error."""
    message = "runtime error @7:6-7:99: aggregateWindow: unsupported aggregate column type string"
    fake.write(MEANS_READINGS)
    fake.fail_after(1, message)
    with connect(fake.url) as db, pytest.raises(InfluxError) as caught:
        db.read_means(["AHU-1 supply", ODD_ID], START, STOP, INTERVAL)
    assert str(caught.value) == f"InfluxDB at {fake.url} failed: query error: {message}"
    assert not caught.value.transient
    assert len(fake.queries) == 1


def test_an_error_inside_a_200_answer_that_may_pass_is_tried_again(fake):
    """The first answer breaks off after a table with an error table for a query the server gave up on (its
    deadline); the query is sent again and the second answer is read whole."""
    fake.write(MEANS_READINGS)
    fake.fail_after(1, "context deadline exceeded")
    with connect(fake.url) as db:
        means = db.read_means(["AHU-1 supply", ODD_ID], START, STOP, INTERVAL)
    assert list(means) == ["AHU-1 supply", ODD_ID]
    assert len(fake.queries) == 2


@pytest.mark.parametrize("api", ["auto", "flux"])
def test_unreachable_server_says_it_cannot_reach_influxdb(api):
    with socket.socket() as bound:  # bound but not listening: connections are refused
        bound.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{bound.getsockname()[1]}"
        with pytest.raises(InfluxError, match="cannot reach InfluxDB") as caught, connect(url, api=api) as db:
            db.read_means(["AHU-1 supply"], START, STOP, INTERVAL)
    assert url in str(caught.value)
    assert TOKEN not in str(caught.value)


def test_flux_without_org_says_which_variables_to_set(fake):
    with pytest.raises(InfluxError, match="INFLUX_ORG"), connect(fake.url, org=None):
        pass
