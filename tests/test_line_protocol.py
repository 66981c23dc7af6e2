"""The pure text functions of the InfluxDB layer: line protocol, InfluxQL text and response parsing."""

import json
import math
import re

import numpy as np
import pandas as pd
import pytest

from anomaly.influx.influxql import influxql_ident, influxql_means, influxql_string, parse_influxql, series_by_tag
from anomaly.influx.line_protocol import line_protocol, series_head, series_lines
from anomaly.settings import Schema
from influx_interact import InfluxError, dialect_for_version, redact

# ---------------------------------------------------------------- line protocol


@pytest.mark.parametrize(
    "measurement, tags, fields, expected",
    [
        pytest.param(
            "PREDICT_ANOMALY",
            {"uniqueID": "s1"},
            {"val_num": 1.5, "loss": 0.25, "anomaly": False},
            "PREDICT_ANOMALY,uniqueID=s1 val_num=1.5,loss=0.25,anomaly=false 1700000000",
            id="plain",
        ),
        pytest.param("my m,x=y", {}, {"v": 1.0}, r"my\ m\,x=y v=1.0 1700000000", id="measurement comma and space"),
        pytest.param(
            "m",
            {"site ref": "Campus Energy,Centre=1"},
            {"v": 1.0},
            r"m,site\ ref=Campus\ Energy\,Centre\=1 v=1.0 1700000000",
            id="tag key and value escaped",
        ),
        pytest.param(
            "m", {"b": "2", "a": "1", "C": "3"}, {"v": 1.0}, "m,C=3,a=1,b=2 v=1.0 1700000000", id="tags sorted"
        ),
        pytest.param("m", {"t": 'q"x'}, {"v": 1.0}, 'm,t=q"x v=1.0 1700000000', id="quote in tag kept"),
        pytest.param(
            "Mesure",
            {"capteur": "Température ✓"},
            {"note": "naïve 日本"},
            'Mesure,capteur=Température\\ ✓ note="naïve 日本" 1700000000',
            id="non-ASCII",
        ),
        pytest.param(
            "m",
            {},
            {"s": 'he said "hi" \\ bye'},
            r'm s="he said \"hi\" \\ bye" 1700000000',
            id="string field quotes and backslash",
        ),
        pytest.param("m", {}, {"s": "end\\"}, r'm s="end\\" 1700000000', id="string field trailing backslash"),
        pytest.param("m", {}, {"s": "a\\,b c"}, r'm s="a\\,b c" 1700000000', id="string field backslash comma"),
        pytest.param("m", {}, {"a b,c=d": 1.0}, r"m a\ b\,c\=d=1.0 1700000000", id="field key escaped"),
        pytest.param("m", {}, {"yes": True, "no": False}, "m yes=true,no=false 1700000000", id="booleans"),
        pytest.param("m", {}, {"v": 3}, "m v=3i 1700000000", id="int written as integer"),
        pytest.param("m", {}, {"v": 3.0}, "m v=3.0 1700000000", id="float with no fraction stays float"),
        pytest.param(
            "m",
            {},
            {"v": np.float64(2.5), "w": np.int64(4)},
            "m v=2.5,w=4.0 1700000000",
            id="numpy numbers written as float",
        ),
        pytest.param(
            "m",
            {},
            {"a": -7, "b": 2**63 - 1, "c": -(2**63)},
            f"m a=-7i,b={2**63 - 1}i,c={-(2**63)}i 1700000000",
            id="integers to the int64 limits",
        ),
        pytest.param("m", {}, {"ok": np.bool_(True), "n": 1}, "m ok=true,n=1i 1700000000", id="numpy bool beside int"),
        pytest.param(
            "m",
            {},
            {"a": math.nan, "b": -0.5, "c": math.inf, "d": -math.inf},
            "m b=-0.5 1700000000",
            id="non-finite dropped",
        ),
        pytest.param("m", {}, {"v": 1e300}, "m v=1e+300 1700000000", id="large float"),
    ],
)
def test_line_protocol(measurement, tags, fields, expected):
    assert line_protocol(measurement, tags, fields, 1700000000) == expected


@pytest.mark.parametrize("value", [2**63, -(2**63) - 1])
def test_line_protocol_rejects_integers_beyond_64_bits(value):
    with pytest.raises(ValueError, match=f"field 'v': {value} is outside InfluxDB's integer range"):
        line_protocol("m", {}, {"v": value}, 1)


def test_integer_fields_give_the_bytes_notify_patched_in_by_hand():
    # notify.chronograf_lines appended ``,start_time=<n>i,modified_time_ns=<n>i`` to a line made without
    # them; passing the ints, last and in that order, must give the same bytes, or Chronograf's points change.
    line = line_protocol(
        "annotations",
        {"id": "5d1c", "uniqueID": "AHU 1"},
        {
            "deleted": False,
            "text": "loss 2.4",
            "start_time": 1700000000000000000,
            "modified_time_ns": 1700000900000000000,
        },
        1700000900,
    )
    assert line == (
        'annotations,id=5d1c,uniqueID=AHU\\ 1 deleted=false,text="loss 2.4",'
        "start_time=1700000000000000000i,modified_time_ns=1700000900000000000i 1700000900"
    )


@pytest.mark.parametrize(
    "measurement, tags, expected",
    [
        pytest.param("m", {"uniqueID": "a\\b"}, r"m,uniqueID=a\b v=1.0 1", id="tag value"),
        pytest.param("m", {"C:\\dir": "x"}, r"m,C:\dir=x v=1.0 1", id="tag key"),
        pytest.param("m\\x", {}, r"m\x v=1.0 1", id="measurement"),
    ],
)
def test_line_protocol_backslash_kept_literal(measurement, tags, expected):
    # InfluxDB reads a backslash in names and tags literally unless a special character follows.
    assert line_protocol(measurement, tags, {"v": 1.0}, 1) == expected


@pytest.mark.parametrize(
    "measurement, tags, fields, bad",
    [
        pytest.param("m", {"uniqueID": "a\\"}, {"v": 1.0}, "a\\", id="tag value ends in backslash"),
        pytest.param("m", {"uniqueID": "x\\,y"}, {"v": 1.0}, "x\\,y", id="tag value backslash comma"),
        pytest.param("m", {"uniqueID": "p\\ q"}, {"v": 1.0}, "p\\ q", id="tag value backslash space"),
        pytest.param("m", {"uniqueID": "a\\=b"}, {"v": 1.0}, "a\\=b", id="tag value backslash equals"),
        pytest.param("m", {"k\\": "v"}, {"v": 1.0}, "k\\", id="tag key ends in backslash"),
        pytest.param("m\\", {}, {"v": 1.0}, "m\\", id="measurement ends in backslash"),
        pytest.param("m\\ x", {}, {"v": 1.0}, "m\\ x", id="measurement backslash space"),
        pytest.param("m", {}, {"f\\": 1.0}, "f\\", id="field key ends in backslash"),
    ],
)
def test_line_protocol_rejects_ambiguous_backslash(measurement, tags, fields, bad):
    with pytest.raises(ValueError, match=re.escape(f"{bad!r} cannot be written as line protocol: a backslash")):
        line_protocol(measurement, tags, fields, 1)


@pytest.mark.parametrize(
    "measurement, fields, bad",
    [
        pytest.param("m\\=x", {"v": 1.0}, "m\\=x", id="measurement backslash equals"),
        pytest.param('m\\"x', {"v": 1.0}, 'm\\"x', id="measurement backslash quote"),
        pytest.param("m", {'f\\"x': 1.0}, 'f\\"x', id="field key backslash quote"),
    ],
)
def test_line_protocol_rejects_backslash_the_server_would_eat(measurement, fields, bad):
    with pytest.raises(ValueError, match=re.escape(f"{bad!r} cannot be written as line protocol: a backslash")):
        line_protocol(measurement, {}, fields, 1)


@pytest.mark.parametrize(
    "measurement, tags, match",
    [
        ("a\nb", {}, r"measurement 'a\\nb' cannot be written as line protocol"),
        ("", {}, "measurement '' cannot be written"),
        ("m", {"uniqueID": "s\n1"}, r"tag uniqueID 's\\n1' cannot be written"),
        ("m", {"uniqueID": "s\r1"}, r"tag uniqueID 's\\r1' cannot be written"),
        ("m", {"uniqueID": ""}, r"tag uniqueID '' cannot be written as line protocol \(empty"),
    ],
)
def test_line_protocol_rejects(measurement, tags, match):
    with pytest.raises(ValueError, match=match):
        line_protocol(measurement, tags, {"v": 1.0}, 1)


# ---------------------------------------------------------------- InfluxQL text


@pytest.mark.parametrize(
    "value, expected",
    [
        ("s1", "'s1'"),
        ("it's", r"'it\'s'"),
        ("a\\b", r"'a\\b'"),
        ('q"x', "'q\"x'"),
        ("Température", "'Température'"),
        ("", "''"),
    ],
)
def test_influxql_string(value, expected):
    assert influxql_string(value) == expected


@pytest.mark.parametrize(
    "name, expected",
    [
        ("uniqueID", '"uniqueID"'),
        ('a"b', r'"a\"b"'),
        ("a\\b", r'"a\\b"'),
        ("site ref", '"site ref"'),
        ("it's", '"it\'s"'),
    ],
)
def test_influxql_ident(name, expected):
    assert influxql_ident(name) == expected


def test_influxql_means_exact_text():
    schema = Schema(where=(("siteRef", "Campus Energy Centre"),))
    text = influxql_means(
        schema,
        ["s1", "it's"],
        pd.Timestamp("2026-01-01T01:00:00+01:00"),
        pd.Timestamp("2026-01-02T00:00:00.9Z"),
        pd.Timedelta(minutes=15),
    )
    assert text == (
        'SELECT mean("val_num") FROM "READINGS" '
        "WHERE time >= '2026-01-01T00:00:00Z' AND time < '2026-01-02T00:00:00Z' "
        "AND \"siteRef\" = 'Campus Energy Centre' "
        "AND (\"uniqueID\" = 's1' OR \"uniqueID\" = 'it\\'s') "
        'GROUP BY time(900s), "uniqueID" fill(none)'
    )


def test_influxql_means_custom_schema_without_where():
    schema = Schema(measurement="Raw data", field='val "num"', sensor_tag="id")
    text = influxql_means(
        schema, ["a"], pd.Timestamp("2026-01-01T00:00Z"), pd.Timestamp("2026-01-01T01:00Z"), pd.Timedelta(hours=1)
    )
    assert text == (
        'SELECT mean("val \\"num\\"") FROM "Raw data" '
        "WHERE time >= '2026-01-01T00:00:00Z' AND time < '2026-01-01T01:00:00Z' AND (\"id\" = 'a') "
        'GROUP BY time(3600s), "id" fill(none)'
    )


# ---------------------------------------------------------------- responses


def lines(*documents: dict) -> bytes:
    return ("\n".join(json.dumps(d) for d in documents) + "\n").encode("utf-8")


def series_doc(sensor_id: str, values: list, partial: bool = False) -> dict:
    doc = {"name": "READINGS", "tags": {"uniqueID": sensor_id}, "columns": ["time", "mean"], "values": values}
    return dict(doc, partial=True) if partial else doc


CHUNKED = lines(
    {
        "results": [
            {"statement_id": 0, "series": [series_doc("s1", [[0, 1.0], [900, 2.0]], partial=True)], "partial": True}
        ]
    },
    {"results": [{"statement_id": 0, "series": [series_doc("s1", [[1800, None]]), series_doc("s2", [[0, 5.0]])]}]},
)


def test_parse_influxql_merges_chunks():
    assert parse_influxql(CHUNKED) == [
        {
            "name": "READINGS",
            "tags": {"uniqueID": "s1"},
            "columns": ["time", "mean"],
            "values": [[0, 1.0], [900, 2.0], [1800, None]],
        },
        {"name": "READINGS", "tags": {"uniqueID": "s2"}, "columns": ["time", "mean"], "values": [[0, 5.0]]},
    ]


@pytest.mark.parametrize("body", [b"", b"\n\n", lines({"results": [{"statement_id": 0}]})])
def test_parse_influxql_empty(body):
    assert parse_influxql(body) == []


@pytest.mark.parametrize(
    "body, match",
    [
        (
            lines({"results": [{"statement_id": 0, "error": "database not found: sensors"}]}),
            "^database not found: sensors$",
        ),
        (lines({"error": "error parsing query: found EOF"}), "^error parsing query: found EOF$"),
        (
            lines(
                {
                    "results": [
                        {"statement_id": 0, "series": [series_doc("s1", [[0, 1.0]], partial=True)], "partial": True}
                    ]
                },
                {"results": [{"statement_id": 0, "error": "max-select-point limit exceeded"}]},
            ),
            "^max-select-point limit exceeded$",
        ),
    ],
)
def test_parse_influxql_raises_statement_errors(body, match):
    with pytest.raises(InfluxError, match=match):
        parse_influxql(body)


def test_parse_influxql_not_json_is_a_value_error():
    with pytest.raises(ValueError):
        parse_influxql(b"<html>502 Bad Gateway</html>")


def test_series_by_tag():
    found = series_by_tag(
        [
            *parse_influxql(CHUNKED),
            {"name": "READINGS", "tags": {}, "columns": ["time", "mean"], "values": [[0, 9.0]]},
            {"name": "READINGS", "tags": {"uniqueID": "s3"}, "columns": ["time", "mean"], "values": []},
        ],
        "uniqueID",
    )
    assert sorted(found) == ["s1", "s2"]
    s1 = found["s1"]
    assert s1.name == "s1" and s1.dtype == "float64"
    assert list(s1.index) == [
        pd.Timestamp("1970-01-01T00:00Z"),
        pd.Timestamp("1970-01-01T00:15Z"),
        pd.Timestamp("1970-01-01T00:30Z"),
    ]
    assert str(s1.index.tz) == "UTC"
    assert s1.iloc[:2].tolist() == [1.0, 2.0] and math.isnan(s1.iloc[2])
    assert found["s2"].tolist() == [5.0]


# ---------------------------------------------------------------- redact and dialect


@pytest.mark.parametrize(
    "url, expected",
    [
        ("http://user:secret@db.example:8086/influx", "http://db.example:8086/influx"),
        ("https://user@db.example", "https://db.example"),
        ("http://localhost:8086/", "http://localhost:8086/"),
        ("http://u:p@localhost:8086/query?u=x&p=secret#f", "http://localhost:8086/query"),
        pytest.param("http://u:secret@[::1]:8086", "http://[::1]:8086", id="ipv6"),
    ],
)
def test_redact(url, expected):
    assert redact(url) == expected


@pytest.mark.parametrize(
    "version, expected",
    [
        ("1.6.7~rc0", "influxql"),
        ("1.8.10", "influxql"),
        ("v2.7.10", "flux"),
        ("2.7.1", "flux"),
        ("3.0.0", "influxql"),
        ("OSS v2 cloud", "flux"),
        ("", "influxql"),
    ],
)
def test_dialect_for_version(version, expected):
    assert dialect_for_version(version) == expected


def test_series_lines_write_each_point_as_line_protocol_does():
    """The columnar writer of several series' points gives, point for point, the text of line_protocol with
    each point's own series' tags."""
    tags = [{"uniqueID": 'Boiler,2="hot" loop=ü', "site": "a b"}, {"uniqueID": "empty"}, {"uniqueID": "AHU 1"}]
    sizes = [4, 0, 2]
    fields = {
        "val_num": np.array([1.5, np.nan, -0.0, 1e300, np.inf, 3.0]),
        "loss": np.array([0.1, 0.2, np.nan, 0.25, 1e-7, 0.3], dtype="float32"),
        "count": np.array([1, 2, 3, 4, 5, 6]),
        "anomaly": np.array([True, False, True, False, False, True]),
        "kind": np.array(["none", 'say "hi"', "back\\slash", "none", "x,y=z", "ü"], dtype=object),
        "whole": [1, 2, 3, -4, 5, 2**62],
        "maybe": [None, 1.0, float("nan"), True, "t", 0.5],
        "field key,with=specials": ["a"] * 6,
    }
    stamps = np.array([0, 1, 2, 3, 1767225600, 2**40], dtype=np.int64)
    got = series_lines([series_head('PREDICT ANOMALY,"x"', t) for t in tags], sizes, fields, stamps)
    of_point = [tags[0]] * 4 + [tags[2]] * 2
    want = [
        line_protocol(
            'PREDICT ANOMALY,"x"',
            of_point[i],
            {k: v[i] for k, v in fields.items() if v[i] is not None},
            int(stamps[i]),
        )
        for i in range(len(stamps))
    ]
    assert got == want
    assert [series_head('PREDICT ANOMALY,"x"', t) for t in (tags[0], tags[2])] == [
        'PREDICT\\ ANOMALY\\,"x",site=a\\ b,uniqueID=Boiler\\,2\\="hot"\\ loop\\=ü ',
        'PREDICT\\ ANOMALY\\,"x",uniqueID=AHU\\ 1 ',
    ]


def test_series_lines_refuse_what_line_protocol_refuses():
    with pytest.raises(ValueError, match="no finite field"):
        series_lines(["m,id=a "], [2], {"loss": np.array([1.0, np.nan])}, [1, 2])
    with pytest.raises(ValueError, match="line break"):
        series_head("m", {"id": "a\nb"})
    with pytest.raises(ValueError, match="integer range"):
        series_lines(["m,id=a "], [1], {"n": [2**63]}, [1])
    assert series_lines(["m,id=a "], [0], {"loss": np.array([])}, []) == []
    assert series_lines([], [], {"loss": np.array([])}, []) == []
