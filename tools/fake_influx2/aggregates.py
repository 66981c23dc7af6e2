"""Aggregates, windows and the schema package of the imitation (see functions.py for the rest).

``aggregateWindow()`` is Flux's composition (window, the aggregate, duplicate the time source, window again over
all time) done table by table: each window's rows go to ``fn`` as a table of their own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd

from tools.fake_influx2.functions import builtin, distinct, filter_, from_, group, keep, range_
from tools.fake_influx2.interpreter import Closure, Context
from tools.fake_influx2.tables import FluxRuntimeError, Table

_NUMBERS = ("int", "uint", "float")
_THIRTY_DAYS_AGO = pd.Timedelta(days=-30)
_NO_OFFSET = pd.Timedelta(0)


def _aggregate(
    tables: list[Table], column: str, kind: Callable[[str], str], reduce: Callable[[list], Any]
) -> list[Table]:
    """One row per table: its group key and ``reduce`` of ``column``'s values (of type ``kind(column's type)``)."""
    out = []
    for t in tables:
        if column not in t.columns:
            raise FluxRuntimeError(f"column {column!r} does not exist")
        columns = {c: t.columns[c] for c in t.key} | {column: kind(t.columns[column])}
        out.append(Table(t.key, columns, [{**t.key, column: reduce([row[column] for row in t.rows])}]))
    return out


def _mean_type(kind: str) -> str:
    if kind not in _NUMBERS:
        raise FluxRuntimeError(f"unsupported aggregate column type {kind}")
    return "float"


def _mean(values: list) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


@builtin("mean")
def mean(*, tables: list[Table], column: str = "_value") -> list[Table]:
    """The mean of each table's non-null values (null when none), as a float."""
    return _aggregate(tables, column, _mean_type, _mean)


@builtin("count")
def count(*, tables: list[Table], column: str = "_value") -> list[Table]:
    """The number of each table's rows, null values too (0 for a table without rows)."""
    return _aggregate(tables, column, lambda kind: "int", len)


def _floor(time: pd.Timestamp, every: pd.Timedelta, offset: pd.Timedelta) -> pd.Timestamp:
    """The start of the window of ``every`` that holds ``time``: windows are counted from the Unix epoch, shifted
    by ``offset``."""
    return pd.Timestamp(time.value - (time.value - offset.value) % every.value, tz="UTC")


@builtin("aggregateWindow")
def aggregate_window(
    *,
    tables: list[Table],
    every: pd.Timedelta,
    fn: Callable[..., list[Table]],
    column: str = "_value",
    timeSrc: str = "_stop",
    timeDst: str = "_time",
    createEmpty: bool = True,
    offset: pd.Timedelta = _NO_OFFSET,
) -> list[Table]:
    """Each table's rows in windows of ``every`` from the Unix epoch (shifted by ``offset``), cut at the table's
    _start and _stop; ``fn`` of each window that has rows (and, with ``createEmpty``, of each one that has none:
    an aggregate gives its value of nothing, a selector no row), at the time of the window's ``timeSrc`` bound
    in ``timeDst``. Rows keep the group key, _start and _stop of their table and lose every other column; the
    columns come as in InfluxDB's answers to the documented examples: ``timeDst``, the group key, ``column``."""
    if not isinstance(every, pd.Timedelta) or every <= pd.Timedelta(0):
        raise FluxRuntimeError(f"every must be a positive duration, not {every!r}")
    out = []
    for t in tables:
        for name in ("_start", "_stop", "_time"):
            if name not in t.columns:
                raise FluxRuntimeError(f"missing time column {name!r}")
        if not t.rows:
            continue
        start, stop = t.rows[0]["_start"], t.rows[0]["_stop"]
        windows: dict[pd.Timestamp, list[dict[str, Any]]] = {}
        for row in t.rows:
            windows.setdefault(_floor(row["_time"], every, offset), []).append(row)
        if createEmpty:
            for first in pd.date_range(_floor(start, every, offset), stop, freq=every, inclusive="left"):
                windows.setdefault(first, [])
        bounds = {"_start": start, "_stop": stop}
        key = {**t.key, **bounds}  # _start and _stop join the group key, at its end when not in it
        columns: dict[str, str] = {}
        rows = []
        for first, found in sorted(windows.items()):
            window = {"_start": max(first, start), "_stop": min(first + every, stop)}
            inner = Table({**key, **window}, t.columns, [{**row, **window} for row in found])
            for result in fn(tables=[inner], column=column):
                columns = {timeDst: "time"} | {c: k for c, k in result.columns.items() if c != timeDst}
                rows += [{**row, timeDst: row[timeSrc], **bounds} for row in result.rows]
        if rows:
            out.append(Table(key, columns, [{c: row.get(c) for c in columns} for row in rows]))
    return out


def tag_values(
    *,
    bucket: str,
    tag: str,
    predicate: Closure | None = None,
    start: Any = _THIRTY_DAYS_AGO,
    stop: Any = None,
    context: Context,
) -> list[Table]:
    """``schema.tagValues()``: Flux defines it as from |> range |> filter(predicate) |> keep([tag]) |> group()
    |> distinct(tag); InfluxDB's planner sends that to storage whole (its PushDownReadTagValuesRule), which
    answers each value of the tag in the matching series once, sorted, and none for series without the tag."""
    tables = range_(tables=from_(bucket=bucket, context=context), start=start, stop=stop, context=context)
    if predicate is not None:
        tables = filter_(tables=tables, fn=predicate)
    tables = [t for t in tables if tag in t.columns]
    found = distinct(tables=group(tables=keep(tables=tables, columns=[tag])), column=tag) if tables else []
    values = sorted(row["_value"] for t in found for row in t.rows)
    return [Table({}, {"_value": "string"}, [{"_value": value} for value in values])] if values else []


PACKAGES: dict[str, dict[str, Callable[..., Any]]] = {"influxdata/influxdb/schema": {"tagValues": tag_values}}
