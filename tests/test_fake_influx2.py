"""The imitation of InfluxDB 2.7 itself (tools/fake_influx2): that it stores what the project writes, answers in
the annotated CSV the Flux dialect reads, runs every query the dialect sends and refuses the Flux it does not
implement, with the errors InfluxDB gives. What its functions compute is checked against InfluxDB's documented
examples in test_fake_flux_docs.py.
"""

from __future__ import annotations

import functools
import json
import urllib.error
import urllib.request

import pandas as pd
import pytest

from anomaly.influx import flux_text
from anomaly.influx.flux_csv import flux_frame
from anomaly.influx.line_protocol import line_protocol
from anomaly.settings import Schema
from tools.fake_influx2 import BUCKET, ORG, TOKEN, Bucket, FakeInflux2, run
from tools.fake_influx2.interpreter import Record
from tools.fake_influx2.storage import WriteError, parse_line
from tools.fake_influx2.tables import FluxError, NotImitated, Table, annotated_csv, csv_cell, error_csv

T0 = pd.Timestamp("2026-01-05T00:00:00Z")
ODD_ID = 'Zone 3, "Café"=Süd'


def at(minutes: float) -> pd.Timestamp:
    return T0 + pd.Timedelta(minutes=minutes)


def bucket(*lines: str) -> dict[str, Bucket]:
    store = Bucket(BUCKET)
    store.write("\n".join(lines), "s")
    return {BUCKET: store}


def flux(
    query: str, buckets: dict[str, Bucket] | None = None, now: pd.Timestamp | None = None, **params
) -> list[Table]:
    """The tables ``query`` gives over ``buckets`` (default: one empty bucket), ``params`` its parameters."""
    return run(query, {"params": Record(params)}, buckets or bucket(), now or at(60))


def line(measurement: str, tags: dict[str, str], fields: dict, minutes: float) -> str:
    return line_protocol(measurement, tags, fields, int(at(minutes).timestamp()))


# ---------------------------------------------------------------- line protocol in


@pytest.mark.parametrize(
    "measurement, tags, fields",
    [
        ("READINGS", {"uniqueID": "AHU-1 supply"}, {"val_num": 20.5}),
        ("READINGS", {"uniqueID": ODD_ID, "siteRef": 'Campus "East", 3=top'}, {"val_num": -1e-05}),
        ("PREDICT_ANOMALY", {"uniqueID": "C:\\temp ü"}, {"loss": 0.25, "anomaly": True, "kind": 'say "hi" \\ end'}),
        ("JOB HEALTH,x", {"job": "sensor_predict"}, {"sensors": 3.0, "windows": 4, "note": ""}),
    ],
)
def test_what_the_project_writes_is_stored_as_it_wrote_it(measurement, tags, fields):
    """Whatever the project's line protocol escapes (spaces, commas, equals signs, quotes, backslashes) is read
    back as it was, with its type: float, integer, boolean, string."""
    assert parse_line(line(measurement, tags, fields, 0)) == (
        measurement,
        tuple(sorted(tags.items())),
        fields,
        int(T0.timestamp()),
    )


@pytest.mark.parametrize(
    "text, fields",
    [
        ("m f=1i,g=t,h=FALSE,i=1.", {"f": 1, "g": True, "h": False, "i": 1.0}),
        ('m f="a,b c=d"', {"f": "a,b c=d"}),
    ],
)
def test_line_protocol_values_and_a_missing_timestamp(text, fields):
    assert parse_line(text) == ("m", (), fields, None)


@pytest.mark.parametrize("text", ["m", "m,t=a", "m f=", "m f=abc 1", "m,t f=1 1", "m f=1 x", "m f=inf 1"])
def test_a_line_that_cannot_be_parsed_refuses_the_write(text):
    store = Bucket(BUCKET)
    with pytest.raises(WriteError, match="unable to parse") as caught:
        store.write(f"m f=1 1\n{text}", "s")
    assert caught.value.status == 400
    assert store.series == {}  # nothing of that body is stored


def test_a_point_written_again_replaces_its_fields_and_keeps_the_others():
    store = bucket(line("m", {"s": "a"}, {"x": 1.0, "y": 2.0}, 0), line("m", {"s": "a"}, {"x": 3.0}, 0))
    frame = store[BUCKET].frame("m", ["x", "y"], s="a")
    assert frame.to_dict("list") == {"x": [3.0], "y": [2.0]}


def test_a_field_of_another_type_is_refused_and_the_rest_written():
    store = bucket(line("m", {"s": "a"}, {"x": 1.0}, 0))[BUCKET]
    with pytest.raises(WriteError, match='input field "x" on measurement "m" is type integer') as caught:
        store.write(line("m", {"s": "a"}, {"x": 2, "y": 5.0}, 15), "s")
    assert caught.value.status == 422 and "already exists as type float dropped=1" in caught.value.message
    frame = store.frame("m", ["x", "y"])
    assert frame.fillna(0).to_dict("list") == {"x": [1.0, 0], "y": [0, 5.0]}


# ---------------------------------------------------------------- annotated CSV out


def test_tables_of_the_same_columns_share_one_header_and_a_change_of_type_starts_another():
    tables = [
        Table(
            {"s": "a"}, {"_time": "time", "_value": "float", "s": "string"}, [{"_time": T0, "_value": 1.5, "s": "a"}]
        ),
        Table(
            {"s": "b"}, {"_time": "time", "_value": "float", "s": "string"}, [{"_time": T0, "_value": 2.0, "s": "b"}]
        ),
        Table({"s": "c"}, {"_time": "time", "_value": "int", "s": "string"}, [{"_time": T0, "_value": 3, "s": "c"}]),
    ]
    assert annotated_csv(tables).split("\r\n") == [
        "#datatype,string,long,dateTime:RFC3339,double,string",
        "#group,false,false,false,false,true",
        "#default,_result,,,,",
        ",result,table,_time,_value,s",
        ",,0,2026-01-05T00:00:00Z,1.5,a",
        ",,1,2026-01-05T00:00:00Z,2,b",
        "",
        "#datatype,string,long,dateTime:RFC3339,long,string",
        "#group,false,false,false,false,true",
        "#default,_result,,,,",
        ",result,table,_time,_value,s",
        ",,2,2026-01-05T00:00:00Z,3,c",
        "",
        "",
    ]


def test_a_table_without_rows_is_its_header_with_its_group_key_as_defaults():
    empty = Table({"s": "a"}, {"_value": "float", "s": "string"}, [])
    assert annotated_csv([empty]).split("\r\n")[:4] == [
        "#datatype,string,long,double,string",
        "#group,false,false,false,true",
        "#default,_result,0,,a",
        ",result,table,_value,s",
    ]
    assert annotated_csv([]) == "\r\n"


@pytest.mark.parametrize(
    "value, cell",
    [
        (1e-05, "0.00001"),
        (1e21, "1000000000000000000000"),
        (0.1 + 0.2, "0.30000000000000004"),
        (-2.0, "-2"),
        (float("inf"), "+Inf"),
        (float("nan"), "NaN"),
        (True, "true"),
        (None, ""),
        (pd.Timestamp("2026-01-05T00:15:00.1234Z"), "2026-01-05T00:15:00.1234Z"),
        (pd.Timestamp("2026-01-05T00:15:00.000000001Z"), "2026-01-05T00:15:00.000000001Z"),
    ],
)
def test_cells_are_written_as_influxdb_writes_them(value, cell):
    """Go's strconv.FormatFloat(v, 'f', -1, 64) and time.RFC3339Nano, as InfluxDB's CSV encoder uses."""
    assert csv_cell(value) == cell


def test_the_flux_dialect_reads_back_every_type_and_an_error_table_after_tables():
    """The imitation's CSV through the dialect's reader: the values it wrote, then the error it ended with."""
    row = {"t": at(15), "f": 1e-05, "i": -3, "b": False, "s": ODD_ID}
    written = Table({}, {"t": "time", "f": "float", "i": "int", "b": "bool", "s": "string"}, [row])
    frame = flux_frame(annotated_csv([written]).encode())
    assert frame.iloc[0].to_dict() == row
    with pytest.raises(Exception, match="the server gave up"):
        flux_frame((annotated_csv([written]) + error_csv("the server gave up")).encode())


# ---------------------------------------------------------------- the queries the dialect sends

SCHEMA = Schema(where=(("siteRef", "x"),), label_field="manual_anomaly")
# Every query builder of the dialect, with the arguments it takes beside the schema and the number of sensors,
# and the measurement it reads.
QUERIES = [
    (flux_text.flux_means, "READINGS"),
    (flux_text.flux_labels, "READINGS"),
    (flux_text.flux_last_reading, "READINGS"),
    (functools.partial(flux_text.flux_group_tags, key="equip"), "READINGS"),
    (flux_text.flux_last_scored, "PREDICT_ANOMALY"),
    (functools.partial(flux_text.flux_last_scored, stop=True), "PREDICT_ANOMALY"),
    (flux_text.flux_anomaly_counts, "PREDICT_ANOMALY"),
    (flux_text.flux_missing_counts, "PREDICT_ANOMALY"),
    (flux_text.flux_scores, "PREDICT_ANOMALY"),
]
NOT_QUERIES = {"flux_string", "flux_params", "flux_literal", "flux_sensors"}


def test_every_query_builder_is_listed_here():
    """A query added to the dialect must be added to QUERIES, so that the imitation is shown to run it."""
    listed = {getattr(build, "func", build).__name__ for build, _ in QUERIES}
    found = {name for name in dir(flux_text) if name.startswith("flux_") and callable(getattr(flux_text, name))}
    assert listed == found - NOT_QUERIES


@pytest.mark.parametrize("build, measurement", QUERIES)
def test_every_query_the_dialect_sends_runs_on_the_imitation(build, measurement):
    """Not refused, and an answer: every function and argument it uses is implemented (what they compute is
    checked through the dialect in test_flux.py)."""
    tags = {"uniqueID": "a", "siteRef": "x", "equip": "e"}
    store = bucket(
        line("READINGS", tags, {"val_num": 1.0, "manual_anomaly": True}, 5),
        line("PREDICT_ANOMALY", {"uniqueID": "a"}, {"loss": 0.5, "anomaly": True, "kind": "missing", "score": 1.0}, 30),
    )
    params = dict(flux_text.flux_params(SCHEMA), **flux_text.sensor_params(["a", "b"]))
    params |= {"bucket": BUCKET, "start": T0, "stop": at(120), "every": pd.Timedelta(minutes=15)}
    params |= {"measurement": measurement, "field": "val_num", "label": "manual_anomaly", "kind": "missing"}
    assert flux(build(SCHEMA, 2), store, **params)


def test_the_sensor_list_runs_on_the_imitation():
    store = bucket(line("READINGS", {"uniqueID": "b", "siteRef": "x"}, {"val_num": 1.0}, -(10**6)))
    params = {"bucket": BUCKET, "start": flux_text.ALL_TIME, "measurement": "READINGS", "where0": "x"}
    (found,) = flux(flux_text.flux_sensors(SCHEMA), store, **params)
    assert found.rows == [{"_value": "b"}]


# ---------------------------------------------------------------- what it refuses, and errors as InfluxDB's

DATA = 'from(bucket: "sensors") |> range(start: 2026-01-05T00:00:00Z)'


@pytest.mark.parametrize(
    "query, refused",
    [
        pytest.param(DATA + ' |> drop(columns: ["x"])', "drop", id="a function"),
        pytest.param(DATA + " |> aggregateWindow(every: 1m, fn: mean, period: 2m)", "period", id="an argument"),
        pytest.param(DATA + ' |> keep(fn: (column) => column == "x")', r"keep\(\) with the argument fn", id="keep(fn)"),
        pytest.param('import "strings"\n' + DATA, 'import "strings"', id="a package"),
        pytest.param(DATA + " |> aggregateWindow(every: 1mo, fn: mean)", "calendar", id="a calendar duration"),
        pytest.param(DATA + " |> filter(fn: (r) => r.x =~ /a/)", "operator =~", id="a regular expression"),
        pytest.param(DATA + ' |> filter(fn: (r) => r.x == "${y}")', "interpolation", id="string interpolation"),
        pytest.param(DATA + " |> filter(fn: (r) => r._value + 1 > 2)", r"operator \+", id="arithmetic"),
        pytest.param(DATA + "\n" + DATA, "2 results", id="two results"),
    ],
)
def test_flux_it_does_not_implement_is_refused_not_guessed(query, refused):
    with pytest.raises(NotImitated, match=refused):
        flux(query)


@pytest.mark.parametrize(
    "query, message",
    [
        ('from(bucket: "sensors")', 'error @1:1-1:24: cannot submit unbounded read to "sensors"'),
        ("from(bucket: nope) |> range(start: 0)", "error @1:14-1:18: undefined identifier nope"),
        ("from(bucket: params.bucket) |> range(start: 0)", "type error @1:14-1:27: record is missing label bucket"),
        ('from(bucket: "sensors") |> range()', "error @1:28-1:35: missing required argument start"),
        (DATA + ' |> filter(fn: (r) => r._value == "x")', "unsupported binary expression float == string"),
        (DATA + " |> filter(fn: (r) => r._value > true)", "unsupported binary expression float > bool"),
        (DATA + ' |> aggregateWindow(every: 15m, fn: mean, column: "nope")', "column 'nope' does not exist"),
    ],
)
def test_errors_are_worded_as_influxdb_words_them(query, message):
    store = bucket(line("READINGS", {"s": "a"}, {"val_num": 1.0}, 5))
    with pytest.raises(FluxError) as caught:
        flux(query, store)
    assert message in caught.value.message
    assert caught.value.status == 400


def test_a_runtime_error_says_where_and_in_which_function():
    store = bucket(line("READINGS", {"s": "a"}, {"kind": "none"}, 5))
    with pytest.raises(FluxError) as caught:
        flux(DATA + "\n  |> aggregateWindow(every: 15m, fn: mean)", store)
    assert caught.value.message == (
        "runtime error @2:6-2:43: aggregateWindow: unsupported aggregate column type string"
    )


def test_an_unknown_bucket_is_a_404_as_influxdb_words_it():
    with pytest.raises(FluxError, match='could not find bucket "other"') as caught:
        flux('from(bucket: "other") |> range(start: 0)')
    assert caught.value.status == 404


def test_range_holds_its_start_and_not_its_stop_and_relative_times_count_from_now():
    store = bucket(*(line("m", {"s": "a"}, {"x": float(m)}, m) for m in (-1, 0, 14, 15)))
    (table,) = flux(
        'from(bucket: "sensors") |> range(start: params.start, stop: params.stop)', store, start=T0, stop=at(15)
    )
    assert [row["_value"] for row in table.rows] == [0.0, 14.0]
    assert table.key == {"_start": T0, "_stop": at(15), "_field": "x", "_measurement": "m", "s": "a"}
    (table,) = flux('from(bucket: "sensors") |> range(start: -46m)', store, now=at(60))
    assert [row["_value"] for row in table.rows] == [14.0, 15.0]


def test_pivot_of_series_from_storage_sorts_rows_by_time_and_columns_by_name():
    """InfluxDB's planner gives pivot() of storage's series (each sorted by time, the field in the group key)
    to flux's sorted pivot (pivotTransformation2): rows by time, the row key first, then the group key, then
    the new columns by name; not rows in the order the series (by field name) bring them."""
    store = bucket(
        *(line("m", {"s": "a"}, {field: 1.0}, minutes) for field, minutes in [("a", 30), ("b", 15), ("c", 0)])
    )
    (got,) = flux(DATA + ' |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")', store)
    assert [row["_time"] for row in got.rows] == [at(0), at(15), at(30)]
    assert list(got.columns) == ["_time", "_start", "_stop", "_measurement", "s", "a", "b", "c"]


# ---------------------------------------------------------------- over HTTP


def post(fake: FakeInflux2, path: str, body: bytes) -> tuple[int, str]:
    request = urllib.request.Request(
        f"{fake.url}{path}?org={ORG}&bucket={BUCKET}&precision=s",
        data=body,
        headers={"Authorization": f"Token {TOKEN}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


@pytest.fixture
def fake():
    server = FakeInflux2().start()
    yield server
    server.stop()


def test_a_refused_query_is_an_http_400_with_influxdbs_json_error(fake):
    status, body = post(fake, "/api/v2/query", json.dumps({"query": DATA + " |> yield()"}).encode())
    assert status == 400
    assert json.loads(body) == {"code": "invalid", "message": "the fake server does not imitate yield()"}


def test_a_write_is_stored_and_a_type_conflict_is_a_422(fake):
    assert post(fake, "/api/v2/write", b"m,s=a x=1 1767571200")[0] == 204
    status, body = post(fake, "/api/v2/write", b"m,s=a x=1i 1767571500")
    assert status == 422 and "field type conflict" in json.loads(body)["message"]
    assert fake.buckets[BUCKET].frame("m", ["x"]).to_dict("list") == {"x": [1.0]}
