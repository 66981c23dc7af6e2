"""The Flux functions the imitation implements, each as its documentation says it behaves
(https://docs.influxdata.com/flux/v0/stdlib/universe/<name>/, checked by tests/test_fake_flux_docs.py), with the
arguments the project's queries use and those the documented examples use; any other argument is refused.

Every function takes the piped stream as ``tables`` (a list of tables.Table) and gives a new one. Aggregates
(mean, count) and windows are in aggregates.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd

from tools.fake_influx2.interpreter import Closure, Context, Source
from tools.fake_influx2.tables import BucketNotFound, FluxRuntimeError, Table, merged

UNIVERSE: dict[str, Callable[..., Any]] = {}


def builtin(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    def register(function: Callable[..., Any]) -> Callable[..., Any]:
        UNIVERSE[name] = function
        return function

    return register


def _time(value: Any, now: pd.Timestamp) -> pd.Timestamp:
    """A time argument: a time, a duration relative to now, or an integer of Unix seconds."""
    if isinstance(value, pd.Timestamp):
        return value.tz_convert("UTC")
    if isinstance(value, pd.Timedelta):
        return now + value
    if isinstance(value, int) and not isinstance(value, bool):
        return pd.Timestamp(value, unit="s", tz="UTC")
    raise FluxRuntimeError(f"value {value!r} is not a time")


def _has(t: Table, *columns: str) -> None:
    for column in columns:
        if column not in t.columns:
            raise FluxRuntimeError(f"column {column!r} does not exist")


@builtin("from")
def from_(*, bucket: str, context: Context) -> Source:
    if bucket not in context.buckets:
        raise BucketNotFound(bucket)
    return Source(context.buckets[bucket])


@builtin("range")
def range_(*, tables: list[Table] | Source, start: Any, stop: Any = None, context: Context) -> list[Table]:
    """Rows with start <= _time < stop (stop: now() when not given); _start and _stop set to the bounds and put
    first in the group key; tables left without rows are dropped. On ``from()``: the bucket's series."""
    first = _time(start, context.now)
    last = context.now if stop is None else _time(stop, context.now)
    if isinstance(tables, Source):
        return tables.bucket.read(first, last)
    bounds = {"_start": first, "_stop": last}
    out = []
    for t in tables:
        _has(t, "_time")
        rows = [{**row, **bounds} for row in t.rows if row["_time"] is not None and first <= row["_time"] < last]
        if rows:
            key = bounds | {c: v for c, v in t.key.items() if c not in bounds}
            columns = {"_start": "time", "_stop": "time"} | {c: k for c, k in t.columns.items() if c not in bounds}
            out.append(Table(key, columns, [{c: row[c] for c in columns} for row in rows]))
    return out


@builtin("filter")
def filter_(*, tables: list[Table], fn: Closure, onEmpty: str = "drop") -> list[Table]:
    """Rows for which ``fn`` is true (null is false); a table left without rows dropped, or kept with
    ``onEmpty: "keep"``. A predicate that reads only columns every row of a table shares (its group key, or
    columns it lacks) is asked once for the table, as storage does for a filter pushed down to it."""
    if onEmpty not in ("drop", "keep"):
        raise FluxRuntimeError(f"onEmpty must be drop or keep, not {onEmpty!r}")
    reads = fn.reads()
    out = []
    for t in tables:
        if reads is not None and all(c in t.key or c not in t.columns for c in reads):
            rows = t.rows if fn(r=dict(t.key)) else []
        else:
            rows = [row for row in t.rows if fn(r=row)]
        if rows or onEmpty == "keep":
            out.append(Table(t.key, t.columns, rows))
    return out


@builtin("group")
def group(*, tables: list[Table], columns: list[str] | None = None, mode: str = "by") -> list[Table]:
    """Regroups by ``columns`` (mode ``by``; default none: one table) or by every other column (``except``).
    Rows keep the order they came in, table after table: group() does not sort."""
    if mode not in ("by", "except"):
        raise FluxRuntimeError(f"unknown group mode {mode!r}")
    listed = columns or []
    parts = []
    for t in tables:
        key_columns = (
            [c for c in listed if c in t.columns] if mode == "by" else [c for c in t.columns if c not in listed]
        )
        by_key: dict[tuple, Table] = {}
        for row in t.rows:
            key = {c: row[c] for c in key_columns}
            by_key.setdefault(tuple(key.items()), Table(key, t.columns, [])).rows.append(row)
        parts.extend(by_key.values())
    return merged(parts)


@builtin("keep")
def keep(*, tables: list[Table], columns: list[str]) -> list[Table]:
    """Only ``columns`` (those a table has), the group key cut to them; tables whose keys become the same are
    one table."""
    kept = []
    for t in tables:
        names = {c: k for c, k in t.columns.items() if c in columns}
        rows = [{c: row[c] for c in names} for row in t.rows]
        kept.append(Table({c: v for c, v in t.key.items() if c in columns}, names, rows))
    return merged(kept)


@builtin("last")
def last(*, tables: list[Table], column: str = "_value") -> list[Table]:
    """The last row of each table whose ``column`` is not null; a table without one is dropped."""
    out = []
    for t in tables:
        _has(t, column)
        rows = [row for row in t.rows if row[column] is not None]
        if rows:
            out.append(Table(t.key, t.columns, rows[-1:]))
    return out


def _sort_key(row: dict[str, Any], columns: list[str]) -> list[tuple[bool, Any]]:
    """Null after every value; Python's sort keeps equal rows in order, reversed too."""
    return [(row.get(c) is None, row.get(c)) for c in columns]


@builtin("sort")
def sort(*, tables: list[Table], columns: list[str] | None = None, desc: bool = False) -> list[Table]:
    """Rows ordered by ``columns`` (default _value), left to right; nulls last, or first when ``desc``; equal
    rows keep their order."""
    by = columns or ["_value"]
    return [Table(t.key, t.columns, sorted(t.rows, key=lambda row: _sort_key(row, by), reverse=desc)) for t in tables]


@builtin("limit")
def limit(*, tables: list[Table], n: int, offset: int = 0) -> list[Table]:
    return [Table(t.key, t.columns, t.rows[offset : offset + n]) for t in tables]


@builtin("top")
def top(*, tables: list[Table], n: int, columns: list[str] | None = None) -> list[Table]:
    """sort(columns, desc: true) |> limit(n), empty tables dropped (Flux defines top() so)."""
    return [t for t in limit(tables=sort(tables=tables, columns=columns, desc=True), n=n) if t.rows]


@builtin("distinct")
def distinct(*, tables: list[Table], column: str = "_value") -> list[Table]:
    """Each table's values of ``column``, once each in the order they first come (null is one), as ``_value``
    beside the group key columns."""
    out = []
    for t in tables:
        _has(t, column)
        seen = list(dict.fromkeys(row[column] for row in t.rows))
        columns = {c: t.columns[c] for c in t.key} | {"_value": t.columns[column]}
        out.append(Table(t.key, columns, [{**t.key, "_value": value} for value in seen]))
    return out


@builtin("pivot")
def pivot(*, tables: list[Table], rowKey: list[str], columnKey: list[str], valueColumn: str) -> list[Table]:
    """A row per distinct ``rowKey`` and a column per distinct ``columnKey`` (values joined by ``_``, null as
    "null") holding ``valueColumn`` (the last one given, null where none); the group key loses ``columnKey``
    and ``valueColumn`` and tables that then share a key are one; other columns are dropped.

    Input sorted by a one-column row key, with a one-column column key in the group key (as from() |> range()
    gives), goes the way InfluxDB's planner sends it (its sorted pivot): rows sorted by the row key, the row key
    column first, then the group key, then the new columns in name order. Otherwise rows and new columns come in
    the order first met, after the group key and row key columns in the input's order."""
    left_out = {*columnKey, valueColumn}
    groups: dict[tuple, tuple[Table, dict[tuple, dict[str, Any]], dict[str, str]]] = {}
    for t in tables:
        _has(t, *rowKey, *columnKey, valueColumn)
        key = {c: v for c, v in t.key.items() if c not in left_out}
        kept = {c: k for c, k in t.columns.items() if c not in left_out and (c in key or c in rowKey)}
        into, rows, new = groups.setdefault(tuple(key.items()), (Table(key, kept, []), {}, {}))
        value_type = t.columns[valueColumn]
        for row in t.rows:
            label = "_".join("null" if row[c] is None else str(row[c]) for c in columnKey)
            if new.setdefault(label, value_type) != value_type:
                raise FluxRuntimeError("value columns with the same column key have different types")
            record = rows.setdefault(tuple(row[c] for c in rowKey), {c: row[c] for c in kept})
            record[label] = row[valueColumn]
    sorted_input = (
        len(rowKey) == 1 and len(columnKey) == 1 and all(_sorted_by(t, rowKey[0], columnKey[0]) for t in tables)
    )
    out = []
    for into, rows, new in groups.values():
        if sorted_input:
            rows = dict(sorted(rows.items()))
            into.columns = {rowKey[0]: into.columns[rowKey[0]]} | {
                c: k for c, k in into.columns.items() if c in into.key
            }
            new = dict(sorted(new.items()))
        into.columns = into.columns | new
        into.rows = [{c: record.get(c) for c in into.columns} for record in rows.values()]
        out.append(into)
    return out


def _sorted_by(t: Table, row_key: str, column_key: str) -> bool:
    times = [row[row_key] for row in t.rows]
    return column_key in t.key and None not in times and times == sorted(times)
