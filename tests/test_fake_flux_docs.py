"""The imitation's Flux functions (tools/fake_influx2) against the examples in InfluxDB's Flux documentation: the
documented input tables, the documented call, the documented output tables, each with the page it is on.

The documentation's examples read ``sampledata.int()`` (long values) or tables of doubles; here the same tables
are bound to ``data``. Its tables are printed with ``*`` on group key columns, an empty cell for null, in no
particular order: tables are compared by group key, rows in order within a table, columns by name and type.
Where a page gives the call but no output (range), the expected output follows the rules the page states, as
its test says. Examples that use what the imitation does not implement (a regular expression, a calendar
duration, an offset, a function as ``fn`` with a piped parameter) are checked to be refused.
"""

from __future__ import annotations

import re

import pandas as pd
import pytest

from tools.fake_influx2 import run
from tools.fake_influx2.tables import NotImitated, Table, table

DOCS = "https://docs.influxdata.com/flux/v0/stdlib/universe/"
NOW = pd.Timestamp("2021-01-01T12:00:00Z")


def cell(text: str, double: bool) -> object:
    """A cell as the documentation prints it: empty is null; a time, a number (a double where ``double``), a
    boolean or text."""
    if not text:
        return None
    if re.fullmatch(r"\d{4}-\d\d-\d\dT[\d:.]+Z", text):
        return pd.Timestamp(text)
    if re.fullmatch(r"-?\d+", text):
        return float(text) if double else int(text)
    if re.fullmatch(r"-?\d+\.\d+", text):
        return float(text)
    return {"true": True, "false": False}.get(text, text)


def doc(header: str, *rows: str, doubles: tuple[str, ...] = ()) -> Table:
    """A documented table: ``header`` its column names separated by ``|`` (``*`` on group key columns), each row
    its cells; ``doubles`` the columns of doubles whose printed values look like integers."""
    names = [name.strip() for name in header.split("|")]
    columns = [name.lstrip("*") for name in names]
    parsed = [
        {c: cell(text.strip(), c in doubles) for c, text in zip(columns, row.split("|"), strict=True)} for row in rows
    ]
    return table([n[1:] for n in names if n.startswith("*")], parsed)


def flux(query: str, data: list[Table]) -> list[Table]:
    return run(query, {"data": data}, {}, NOW)


def assert_tables(got: list[Table], expected: list[Table]) -> None:
    def by_key(tables: list[Table]) -> dict[tuple, Table]:
        return {tuple(sorted(t.key.items(), key=lambda item: item[0])): t for t in tables}

    found, wanted = by_key(got), by_key(expected)
    assert found.keys() == wanted.keys()
    for key, want in wanted.items():
        assert found[key].columns == want.columns, key
        assert found[key].rows == want.rows, key


T = "2021-01-01T00:00:{:02d}Z"


def sample_int(include_null: bool = False) -> list[Table]:
    """sampledata.int() as the pages print it: tags t1 and t2, six long values 10 s apart (nulls where the
    documentation's includeNull example has them)."""
    values = {"t1": [-2, 10, 7, 17, 15, 4], "t2": [19, 4, -3, 19, 13, 1]}
    if include_null:
        values = {"t1": [-2, None, 7, None, None, 4], "t2": [None, 4, -3, 19, None, 1]}
    return [
        Table({"tag": tag}, {"_time": "time", "_value": "int", "tag": "string"}, rows)
        for tag, series in values.items()
        for rows in [[{"_time": pd.Timestamp(T.format(10 * i)), "_value": v, "tag": tag} for i, v in enumerate(series)]]
    ]


def ints(tag: str, *pairs: tuple[int, int | None]) -> Table:
    """A table of sampledata.int()'s columns: (second, value) rows."""
    rows = [{"_time": pd.Timestamp(T.format(s)), "_value": v, "tag": tag} for s, v in pairs]
    return Table({"tag": tag}, {"_time": "time", "_value": "int", "tag": "string"}, rows)


def bounded(t: Table, start: pd.Timestamp, stop: pd.Timestamp) -> Table:
    """``t`` with the _start and _stop columns range() adds, first in the group key."""
    bounds = {"_start": start, "_stop": stop}
    columns = {"_start": "time", "_stop": "time", **t.columns}
    return Table({**bounds, **t.key}, columns, [{**bounds, **row} for row in t.rows])


# ---------------------------------------------------------------- range: the page gives calls, not tables


@pytest.mark.parametrize(
    "bounds, start, stop",
    [
        ("start: 2021-01-01T00:00:10Z, stop: 2021-01-01T00:00:40Z", T.format(10), T.format(40)),
        ("start: 1609459210, stop: 1609459240", T.format(10), T.format(40)),
        ("start: -11h59m35s", T.format(25), NOW),
    ],
    ids=["absolute", "Unix seconds", "relative to now"],
)
def test_range(bounds, start, stop):
    """https://docs.influxdata.com/flux/v0/stdlib/universe/range/ (its three calls; expected by its rules): rows
    with start <= _time < stop, stop now() when not given; a time, Unix seconds or a duration from now(); _start
    and _stop added to the group key."""
    start, stop = pd.Timestamp(start), pd.Timestamp(stop)
    t1 = [(s, v) for s, v in zip(range(0, 60, 10), [-2, 10, 7, 17, 15, 4]) if start <= pd.Timestamp(T.format(s)) < stop]
    t2 = [(s, v) for s, v in zip(range(0, 60, 10), [19, 4, -3, 19, 13, 1]) if start <= pd.Timestamp(T.format(s)) < stop]
    got = flux(f"data |> range({bounds})", sample_int())
    assert_tables(got, [bounded(ints("t1", *t1), start, stop), bounded(ints("t2", *t2), start, stop)])


# ---------------------------------------------------------------- filter


def test_filter_values_based_on_thresholds():
    """https://docs.influxdata.com/flux/v0/stdlib/universe/filter/ "Filter values based on thresholds"."""
    got = flux("data |> filter(fn: (r) => r._value > 0 and r._value < 10)", sample_int())
    assert_tables(got, [ints("t1", (20, 7), (50, 4)), ints("t2", (10, 4), (50, 1))])


def test_filter_keep_empty_tables():
    """https://docs.influxdata.com/flux/v0/stdlib/universe/filter/ "Keep empty tables when filtering": the page
    prints the table with rows; by its onEmpty parameter the emptied one is kept, and dropped by default."""
    got = flux('data |> filter(fn: (r) => r._value > 18, onEmpty: "keep")', sample_int())
    assert_tables(got, [ints("t1"), ints("t2", (0, 19), (30, 19))])
    (only,) = flux("data |> filter(fn: (r) => r._value > 18)", sample_int())
    assert only.key == {"tag": "t2"}


# ---------------------------------------------------------------- aggregateWindow

AGGREGATE_INPUT = [
    bounded(
        Table(
            {"tag": tag},
            {"_time": "time", "tag": "string", "_value": "float"},
            [{"_time": pd.Timestamp(T.format(10 * i)), "tag": tag, "_value": v} for i, v in enumerate(values)],
        ),
        pd.Timestamp(T.format(0)),
        pd.Timestamp("2021-01-01T00:01:00Z"),
    )
    for tag, values in [
        ("t1", [-2.18, 10.92, 7.35, 17.53, 15.23, 4.43]),
        ("t2", [19.85, 4.97, -3.75, 19.77, 13.86, 1.86]),
    ]
]


def test_aggregate_window_with_default_parameters():
    """https://docs.influxdata.com/flux/v0/stdlib/universe/aggregatewindow/ "Use an aggregate function with
    default parameters": every 20s, mean, at each window's stop, _start and _stop those of the input."""
    header = "_time | *_start | *_stop | *tag | _value"
    start, stop = "2021-01-01T00:00:00Z", "2021-01-01T00:01:00Z"
    expected = [
        doc(
            header,
            f"2021-01-01T00:00:20Z | {start} | {stop} | t1 | 4.37",
            f"2021-01-01T00:00:40Z | {start} | {stop} | t1 | 12.440000000000001",
            f"2021-01-01T00:01:00Z | {start} | {stop} | t1 | 9.83",
        ),
        doc(
            header,
            f"2021-01-01T00:00:20Z | {start} | {stop} | t2 | 12.41",
            f"2021-01-01T00:00:40Z | {start} | {stop} | t2 | 8.01",
            f"2021-01-01T00:01:00Z | {start} | {stop} | t2 | 7.859999999999999",
        ),
    ]
    assert_tables(flux("data |> aggregateWindow(every: 20s, fn: mean)", AGGREGATE_INPUT), expected)


def test_aggregate_window_as_the_project_uses_it():
    """The same example with the project's arguments, by the page's parameters: timeSrc "_start" puts each
    value at its window's start."""
    got = flux('data |> aggregateWindow(every: 20s, fn: mean, createEmpty: false, timeSrc: "_start")', AGGREGATE_INPUT)
    assert [[row["_time"] for row in t.rows] for t in got] == [[pd.Timestamp(T.format(s)) for s in (0, 20, 40)]] * 2
    assert [row["_value"] for row in got[0].rows] == [4.37, 12.440000000000001, 9.83]


@pytest.mark.parametrize("create_empty, counts", [("false", [1, 1]), ("true", [0, 1, 1])])
def test_aggregate_window_creates_empty_windows_only_when_asked(create_empty, counts):
    """By the page's createEmpty parameter (and count()'s page: 0 for no rows): t1's values above 15 fall in the
    second and third of three windows."""
    window = f"aggregateWindow(every: 20s, fn: count, createEmpty: {create_empty})"
    query = f"data |> filter(fn: (r) => r._value > 15.0) |> {window}"
    (t1,) = [t for t in flux(query, AGGREGATE_INPUT) if t.key["tag"] == "t1"]
    assert [row["_value"] for row in t1.rows] == counts
    assert t1.rows[-1]["_time"] == pd.Timestamp("2021-01-01T00:01:00Z") and t1.columns["_value"] == "int"


JANUARY = [(1, 2), (3, 2.2), (6, 4.1), (9, 3.8), (11, 1.7), (12, 2.1), (15, 3.8), (16, 4.2), (20, 5), (24, 5.8)]
WEEKS_INPUT = [
    doc(
        "_start | _stop | _time | *tag | _value",
        *(
            f"2022-01-01T00:00:00Z | 2022-01-31T23:59:59Z | 2022-01-{day:02d}T00:00:00Z | t1 | {value}"
            for day, value in [*JANUARY, (28, 3.9)]
        ),
        doubles=("_value",),
    )
]


def test_aggregate_window_by_calendar_week_starting_on_monday():
    """https://docs.influxdata.com/flux/v0/stdlib/universe/aggregatewindow/ "Downsample by calendar week starting
    on Monday": weeks from the epoch (a Thursday) shifted by -3d; the last window cut at the input's _stop, empty,
    so null (createEmpty is true by default); _start and _stop join the group key."""
    expected = doc(
        "_time | *tag | *_start | *_stop | _value",
        "2022-01-03T00:00:00Z | t1 | 2022-01-01T00:00:00Z | 2022-01-31T23:59:59Z | 2",
        "2022-01-10T00:00:00Z | t1 | 2022-01-01T00:00:00Z | 2022-01-31T23:59:59Z | 3.3666666666666667",
        "2022-01-17T00:00:00Z | t1 | 2022-01-01T00:00:00Z | 2022-01-31T23:59:59Z | 2.95",
        "2022-01-24T00:00:00Z | t1 | 2022-01-01T00:00:00Z | 2022-01-31T23:59:59Z | 5",
        "2022-01-31T00:00:00Z | t1 | 2022-01-01T00:00:00Z | 2022-01-31T23:59:59Z | 4.85",
        "2022-01-31T23:59:59Z | t1 | 2022-01-01T00:00:00Z | 2022-01-31T23:59:59Z | ",
        doubles=("_value",),
    )
    assert_tables(flux("data |> aggregateWindow(every: 1w, offset: -3d, fn: mean)", WEEKS_INPUT), [expected])


def test_aggregate_window_cuts_the_first_window_at_the_start():
    """The same weeks at each window's start (timeSrc "_start"): the first window, from Monday 2021-12-27, is
    cut at the input's _start (the page: windows keep within _start and _stop)."""
    (got,) = flux('data |> aggregateWindow(every: 1w, offset: -3d, fn: mean, timeSrc: "_start")', WEEKS_INPUT)
    assert [row["_time"].day for row in got.rows] == [1, 3, 10, 17, 24, 31]


@pytest.mark.parametrize(
    "call",
    [
        "aggregateWindow(every: 1mo, fn: mean)",
        "aggregateWindow(every: 20s, fn: (column, tables=<-) => tables |> quantile(q: 0.99, column: column))",
    ],
    ids=["calendar month", "fn with a piped parameter"],
)
def test_aggregate_window_examples_it_does_not_implement_are_refused(call):
    """https://docs.influxdata.com/flux/v0/stdlib/universe/aggregatewindow/: the other two examples."""
    with pytest.raises(NotImitated):
        flux(f"data |> {call}", AGGREGATE_INPUT)


# ---------------------------------------------------------------- group


def test_group_by_specific_columns():
    """https://docs.influxdata.com/flux/v0/stdlib/universe/group/ "Group by specific columns"."""
    got = flux('data |> group(columns: ["_time", "tag"])', sample_int())
    expected = [
        doc("*_time | _value | *tag", f"{T.format(s)} | {v} | {tag}")
        for tag, values in [("t1", [-2, 10, 7, 17, 15, 4]), ("t2", [19, 4, -3, 19, 13, 1])]
        for s, v in zip(range(0, 60, 10), values)
    ]
    assert_tables(got, expected)


def test_group_by_everything_except_time():
    """https://docs.influxdata.com/flux/v0/stdlib/universe/group/ "Group by everything except time"."""
    got = flux('data |> group(columns: ["_time"], mode: "except")', sample_int())
    header = "_time | *_value | *tag"
    expected = [
        doc(header, f"{T.format(20)} | -3 | t2"),
        doc(header, f"{T.format(0)} | -2 | t1"),
        doc(header, f"{T.format(50)} | 1 | t2"),
        doc(header, f"{T.format(50)} | 4 | t1"),
        doc(header, f"{T.format(10)} | 4 | t2"),
        doc(header, f"{T.format(20)} | 7 | t1"),
        doc(header, f"{T.format(10)} | 10 | t1"),
        doc(header, f"{T.format(40)} | 13 | t2"),
        doc(header, f"{T.format(40)} | 15 | t1"),
        doc(header, f"{T.format(30)} | 17 | t1"),
        doc(header, f"{T.format(0)} | 19 | t2", f"{T.format(30)} | 19 | t2"),
    ]
    assert_tables(got, expected)


def test_ungroup():
    """https://docs.influxdata.com/flux/v0/stdlib/universe/group/ "Ungroup data": one table, rows table after
    table in the order they came."""
    (got,) = flux("data |> group()", sample_int())
    assert got.key == {}
    assert [(row["_value"], row["tag"]) for row in got.rows] == [
        *((v, "t1") for v in [-2, 10, 7, 17, 15, 4]),
        *((v, "t2") for v in [19, 4, -3, 19, 13, 1]),
    ]


# ---------------------------------------------------------------- pivot


def test_pivot_align_fields_into_rows_based_on_time():
    """https://docs.influxdata.com/flux/v0/stdlib/universe/pivot/ "Align fields into rows based on time" (its
    input printed as one table; _field is in the group key, so it is a table per field)."""
    rows = {"f1": [(1, 1), (2, 4), (3, None)], "f2": [(1, 2), (2, 5), (3, 7)], "f3": [(1, None), (2, 6), (4, 8)]}
    data = [
        Table(
            {"_measurement": "m1", "_field": field},
            {"_time": "time", "_measurement": "string", "_field": "string", "_value": "int"},
            [
                {"_time": pd.Timestamp(s, unit="s", tz="UTC"), "_measurement": "m1", "_field": field, "_value": v}
                for s, v in pairs
            ],
        )
        for field, pairs in rows.items()
    ]
    expected = doc(
        "_time | *_measurement | f1 | f2 | f3",
        "1970-01-01T00:00:01Z | m1 | 1 | 2 | ",
        "1970-01-01T00:00:02Z | m1 | 4 | 5 | 6",
        "1970-01-01T00:00:03Z | m1 |  | 7 | ",
        "1970-01-01T00:00:04Z | m1 |  |  | 8",
    )
    got = flux('data |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")', data)
    assert_tables(got, [expected])
    assert list(got[0].columns) == ["_time", "_measurement", "f1", "f2", "f3"]


def test_pivot_takes_the_last_value_for_a_row_and_column_met_twice():
    """https://docs.influxdata.com/flux/v0/stdlib/universe/pivot/: "the last value encountered in the set of
    table rows is used"."""
    data = [ints("t1", (0, 1), (0, 2), (10, 3))]
    got = flux('data |> pivot(rowKey: ["_time"], columnKey: ["tag"], valueColumn: "_value")', data)
    assert_tables(got, [doc("_time | t1", f"{T.format(0)} | 2", f"{T.format(10)} | 3")])


def test_pivot_associate_values_to_tags_by_time():
    """https://docs.influxdata.com/flux/v0/stdlib/universe/pivot/ "Associate values to tags by time"."""
    expected = doc(
        "_time | t1 | t2",
        *(
            f"{T.format(s)} | {a} | {b}"
            for s, a, b in zip(range(0, 60, 10), [-2, 10, 7, 17, 15, 4], [19, 4, -3, 19, 13, 1])
        ),
    )
    got = flux('data |> pivot(rowKey: ["_time"], columnKey: ["tag"], valueColumn: "_value")', sample_int())
    assert_tables(got, [expected])


# ---------------------------------------------------------------- selectors and aggregates


def test_last():
    """https://docs.influxdata.com/flux/v0/stdlib/universe/last/ "Return the last row from each input table"."""
    assert_tables(flux("data |> last()", sample_int()), [ints("t1", (50, 4)), ints("t2", (50, 1))])


def test_last_skips_a_null_value():
    """https://docs.influxdata.com/flux/v0/stdlib/universe/last/, its column parameter: a null in the last row
    gives the row before with a value."""
    data = [ints("t1", (0, 1), (10, None))]
    assert_tables(flux("data |> last()", data), [ints("t1", (0, 1))])


def test_keep_a_list_of_columns():
    """https://docs.influxdata.com/flux/v0/stdlib/universe/keep/ "Keep a list of columns": the tag leaves the
    group key, so both tables become one."""
    (got,) = flux('data |> keep(columns: ["_time", "_value"])', sample_int())
    expected = doc(
        "_time | _value",
        *(f"{T.format(s)} | {v}" for s, v in zip(range(0, 60, 10), [-2, 10, 7, 17, 15, 4])),
        *(f"{T.format(s)} | {v}" for s, v in zip(range(0, 60, 10), [19, 4, -3, 19, 13, 1])),
    )
    assert_tables([got], [expected])


def test_keep_columns_matching_a_predicate_is_refused():
    """https://docs.influxdata.com/flux/v0/stdlib/universe/keep/ "Keep columns matching a predicate"."""
    with pytest.raises(NotImitated):
        flux("data |> keep(fn: (column) => column =~ /^_?t/)", sample_int())


@pytest.mark.parametrize(
    "query, data, expected",
    [
        pytest.param(
            "data |> distinct()",
            sample_int(),
            [
                doc("*tag | _value", "t1 | -2", "t1 | 10", "t1 | 7", "t1 | 17", "t1 | 15", "t1 | 4"),
                doc("*tag | _value", "t2 | 19", "t2 | 4", "t2 | -3", "t2 | 13", "t2 | 1"),
            ],
            id="the _value column",
        ),
        pytest.param(
            'data |> distinct(column: "tag")',
            sample_int(),
            [doc("*tag | _value", "t1 | t1"), doc("*tag | _value", "t2 | t2")],
            id="a non-default column",
        ),
        pytest.param(
            "data |> distinct()",
            sample_int(include_null=True),
            [
                doc("*tag | _value", "t1 | -2", "t1 | ", "t1 | 7", "t1 | 4"),
                doc("*tag | _value", "t2 | ", "t2 | 4", "t2 | -3", "t2 | 19", "t2 | 1"),
            ],
            id="data with null values",
        ),
    ],
)
def test_distinct(query, data, expected):
    """https://docs.influxdata.com/flux/v0/stdlib/universe/distinct/: its three examples."""
    assert_tables(flux(query, data), expected)


def test_sort_ascending():
    """https://docs.influxdata.com/flux/v0/stdlib/universe/sort/ "Sort values in ascending order" (the two 19s of
    t2 in the order they came)."""
    expected = [
        ints("t1", (0, -2), (50, 4), (20, 7), (10, 10), (40, 15), (30, 17)),
        ints("t2", (20, -3), (50, 1), (10, 4), (40, 13), (0, 19), (30, 19)),
    ]
    assert_tables(flux("data |> sort()", sample_int()), expected)


def test_sort_puts_nulls_last_and_first_when_descending():
    """https://docs.influxdata.com/flux/v0/stdlib/universe/sort/ "Sorting with null values"."""
    data = [ints("t1", (0, 2), (10, None), (20, 1))]
    assert_tables(flux("data |> sort()", data), [ints("t1", (20, 1), (0, 2), (10, None))])
    assert_tables(flux("data |> sort(desc: true)", data), [ints("t1", (10, None), (0, 2), (20, 1))])


def test_top():
    """https://docs.influxdata.com/flux/v0/stdlib/universe/top/ "Return rows with the three highest values in
    each input table"."""
    expected = [ints("t1", (30, 17), (40, 15), (10, 10)), ints("t2", (0, 19), (30, 19), (40, 13))]
    assert_tables(flux("data |> top(n: 3)", sample_int()), expected)


def test_top_drops_empty_tables():
    """https://docs.influxdata.com/flux/v0/stdlib/universe/top/: "top() drops empty tables"."""
    got = flux('data |> filter(fn: (r) => r._value > 18, onEmpty: "keep") |> top(n: 3)', sample_int())
    assert_tables(got, [ints("t2", (0, 19), (30, 19))])


def test_limit():
    """https://docs.influxdata.com/flux/v0/stdlib/universe/limit/ "Limit results to the first three rows in each
    table"."""
    expected = [ints("t1", (0, -2), (10, 10), (20, 7)), ints("t2", (0, 19), (10, 4), (20, -3))]
    assert_tables(flux("data |> limit(n: 3)", sample_int()), expected)


def test_count_the_records_with_a_specific_value():
    """https://docs.influxdata.com/flux/v0/stdlib/universe/count/ "Count the number of records with a specific
    value": its input is sampledata.int() filtered to values above 10."""
    data = [ints("t1", (30, 17), (40, 15)), ints("t2", (0, 19), (30, 19), (40, 13))]
    assert_tables(flux("data |> count()", data), [doc("*tag | _value", "t1 | 2"), doc("*tag | _value", "t2 | 3")])
    assert_tables(
        flux("data |> filter(fn: (r) => r._value > 10) |> count()", sample_int()), flux("data |> count()", data)
    )


def test_count_counts_null_values_too():
    """https://docs.influxdata.com/flux/v0/stdlib/universe/count/: "counts both null and non-null records"."""
    expected = [doc("*tag | _value", "t1 | 6"), doc("*tag | _value", "t2 | 6")]
    assert_tables(flux("data |> count()", sample_int(include_null=True)), expected)


def test_mean_of_the_non_null_values():
    """https://docs.influxdata.com/flux/v0/stdlib/universe/mean/: "the average of non-null values"."""
    expected = [doc("*tag | _value", "t1 | 3.0"), doc("*tag | _value", "t2 | 5.25")]
    assert_tables(flux("data |> mean()", sample_int(include_null=True)), expected)


def test_mean():
    """https://docs.influxdata.com/flux/v0/stdlib/universe/mean/ "Return the average of values in each input
    table"."""
    expected = [doc("*tag | _value", "t1 | 8.5"), doc("*tag | _value", "t2 | 8.833333333333334")]
    assert_tables(flux("data |> mean()", sample_int()), expected)
