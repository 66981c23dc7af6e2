"""A bucket of the imitation: points written as line protocol, read back as ``from() |> range()`` reads them.

InfluxDB keeps each field of a point as its own series (measurement, tag set, field) and a point as a value at a
time in it: a second write of the same series and time replaces the value, other fields of that point stay.
A field has one type in a measurement; a point of another type is refused (a partial write), as InfluxDB does.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterator
from typing import Any

import pandas as pd

from tools.fake_influx2.tables import FluxError, Table, flux_type

SeriesKey = tuple[str, tuple[tuple[str, str], ...], str]  # measurement, tags sorted by key, field
_PRECISIONS = {"ns": 1, "us": 1_000, "ms": 1_000_000, "s": 1_000_000_000}
_BOOLEANS = {"t": True, "T": True, "true": True, "True": True, "TRUE": True}
_BOOLEANS |= {"f": False, "F": False, "false": False, "False": False, "FALSE": False}
_TYPE_NAMES = {"float": "float", "int": "integer", "string": "string", "bool": "boolean"}  # as write errors say


class WriteError(FluxError):
    """How InfluxDB 2.7 refuses a write: 400 for a line it cannot parse, 422 for points it did not store."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code = status, code


class Bucket:
    """Series -> {time in ns: value}; field types per measurement."""

    def __init__(self, name: str):
        self.name = name
        self.series: dict[SeriesKey, dict[int, Any]] = {}
        self.field_types: dict[tuple[str, str], str] = {}

    def write(self, body: str, precision: str = "ns") -> None:
        """Line protocol, timestamps in ``precision`` (``ns``, ``us``, ``ms``, ``s``); a line without one is
        stored at the time of the write. A bad line refuses the whole body (400); a field whose type differs
        from the one stored is left out and the rest written (422, partial write)."""
        if precision not in _PRECISIONS:
            raise WriteError(400, "invalid", f"invalid precision {precision!r}")
        now = pd.Timestamp.now(tz="UTC").value
        points = [parse_line(line, line_number) for line_number, line in _lines(body)]
        dropped = []
        for measurement, tags, fields, time in points:
            at = now if time is None else time * _PRECISIONS[precision]
            for field, value in fields.items():
                kind = self.field_types.setdefault((measurement, field), flux_type(value))
                if kind != flux_type(value):
                    dropped.append((field, measurement, _TYPE_NAMES[flux_type(value)], _TYPE_NAMES[kind]))
                    continue
                self.series.setdefault((measurement, tags, field), {})[at] = value
        if dropped:
            field, measurement, kind, stored = dropped[0]
            raise WriteError(
                422,
                "unprocessable entity",
                f'failure writing points to database: partial write: field type conflict: input field "{field}" on '
                f'measurement "{measurement}" is type {kind}, already exists as type {stored} dropped={len(dropped)}',
            )

    def read(self, start: pd.Timestamp, stop: pd.Timestamp) -> list[Table]:
        """``from() |> range(start, stop)``: one table per series with a point in [start, stop), in series key
        order, rows in time order; the group key is _start, _stop, _field, _measurement and the tags."""
        first, last = start.value, stop.value
        tables = []
        for (measurement, tags, field), values in sorted(self.series.items()):
            times = sorted(values)
            inside = times[bisect.bisect_left(times, first) : bisect.bisect_left(times, last)]
            if not inside:
                continue
            kind = self.field_types[(measurement, field)]
            key = {"_start": start, "_stop": stop, "_field": field, "_measurement": measurement, **dict(tags)}
            columns = {"_start": "time", "_stop": "time", "_time": "time", "_value": kind}
            columns |= {"_field": "string", "_measurement": "string"} | dict.fromkeys(dict(tags), "string")
            rows = [{**key, "_time": pd.Timestamp(t, tz="UTC"), "_value": values[t]} for t in inside]
            tables.append(Table(key, columns, [{name: row[name] for name in columns} for row in rows]))
        return tables

    def delete(self, measurement: str, tag: tuple[str, str], first: pd.Timestamp, last: pd.Timestamp) -> None:
        """InfluxQL's ``DELETE FROM m WHERE tag = value AND time >= first AND time <= last``: every field of the
        measurement's series with that tag value loses its points in [first, last]."""
        for (m, tags, _), values in self.series.items():
            if m == measurement and tag in tags:
                for time in [t for t in values if first.value <= t <= last.value]:
                    del values[time]

    def frame(self, measurement: str, fields: list[str], **tags: str) -> pd.DataFrame:
        """The points of ``measurement`` whose tags include ``tags``: a column per field of ``fields`` (None where
        a point has none), indexed by UTC time; for tests, as a SELECT reads them from InfluxDB 1.x."""
        found: dict[int, dict[str, Any]] = {}
        for (m, series_tags, field), values in self.series.items():
            if m == measurement and field in fields and tags.items() <= dict(series_tags).items():
                for time, value in values.items():
                    found.setdefault(time, {})[field] = value
        times = sorted(found)
        return pd.DataFrame(
            [[found[t].get(f) for f in fields] for t in times],
            columns=fields,
            index=pd.DatetimeIndex([pd.Timestamp(t, tz="UTC") for t in times]),
        )


def _lines(body: str) -> Iterator[tuple[int, str]]:
    for number, line in enumerate(body.split("\n"), start=1):
        line = line.strip()
        if line and not line.startswith("#"):
            yield number, line


def parse_line(line: str, number: int = 1) -> tuple[str, tuple[tuple[str, str], ...], dict[str, Any], int | None]:
    """One line of line protocol -> measurement, tags (sorted by key), fields, timestamp (None: none given).

    Escapes as InfluxDB reads them: a backslash before a comma or space in the measurement, before a comma, equals
    sign or space in tag keys and values and field keys, before a quote or backslash in a string field value; any
    other backslash is literal.
    """
    try:
        series, i = _until(line, 0, " ")
        names = _split(series, ",")
        measurement = _unescape(names[0], ", ")
        tags = tuple(sorted(_pair(part, ",= ") for part in names[1:]))
        fields: dict[str, Any] = {}
        i += 1
        while True:
            key, i = _until(line, i, "=")
            value, i = _field_value(line, i + 1)
            fields[_unescape(key, ',= "')] = value
            if i >= len(line) or line[i] == " ":
                break
            i += 1  # the comma before the next field
        stamp = line[i + 1 :].strip()
        if not measurement or any(not k or not v for k, v in tags) or not fields:
            raise ValueError("missing measurement, tag or field")
        return measurement, tags, fields, int(stamp) if stamp else None
    except (ValueError, IndexError) as e:
        raise WriteError(400, "invalid", f"unable to parse '{line}': {e} (line {number})") from None


def _until(text: str, i: int, stops: str) -> tuple[str, int]:
    """``text`` from ``i`` up to the first of ``stops`` not escaped by a backslash (escapes kept) and its place."""
    start = i
    while i < len(text) and text[i] not in stops:
        i += 2 if text[i] == "\\" else 1
    return text[start:i], i


def _split(text: str, separator: str) -> list[str]:
    parts, i = [], 0
    while True:
        part, i = _until(text, i, separator)
        parts.append(part)
        if i >= len(text):
            return parts
        i += 1


def _unescape(text: str, specials: str) -> str:
    for char in specials:
        text = text.replace("\\" + char, char)
    return text


def _pair(text: str, specials: str) -> tuple[str, str]:
    key, i = _until(text, 0, "=")
    if i >= len(text):
        raise ValueError(f"tag {text!r} has no value")
    return _unescape(key, specials), _unescape(text[i + 1 :], specials)


def _field_value(line: str, i: int) -> tuple[Any, int]:
    """The field value at ``i`` and where it ends: a quoted string, or up to the next comma or space."""
    if line[i] == '"':
        j = i + 1
        while line[j] != '"':
            j += 2 if line[j] == "\\" else 1
        return line[i + 1 : j].replace('\\"', '"').replace("\\\\", "\\"), j + 1
    j = i
    while j < len(line) and line[j] not in ", ":
        j += 1
    text = line[i:j]
    if text in _BOOLEANS:
        return _BOOLEANS[text], j
    if text.endswith("i"):
        return int(text[:-1]), j
    if text.endswith("u"):
        raise ValueError("unsigned integers are not imitated")
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"invalid number {text}")
    return value, j
