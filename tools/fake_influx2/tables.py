"""Flux tables as the imitation keeps them, the errors it answers with, and the annotated CSV InfluxDB 2.7 writes.

A table is a group key (columns whose value every row shares), typed columns in order and rows; a stream is a
list of tables, each group key at most once. Values are Python's: str, float, int, bool, a UTC pd.Timestamp for
a time, None for null.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

# Flux's column types, and how annotated CSV names them in its #datatype row.
DATATYPES = {
    "string": "string",
    "float": "double",
    "int": "long",
    "uint": "unsignedLong",
    "bool": "boolean",
    "time": "dateTime:RFC3339",
}


class FluxError(Exception):
    """An error InfluxDB answers a query with before it sends any table: HTTP ``status`` with a JSON body
    ``{"code": code, "message": message}``."""

    status, code = 400, "invalid"

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class FluxRuntimeError(FluxError):
    """A function met data it cannot work on (a type, a missing column); the interpreter adds where."""


class NotImitated(FluxError):
    """Flux the imitation does not implement: refused, so that a query it cannot answer never passes."""

    def __init__(self, what: str):
        super().__init__(f"the fake server does not imitate {what}")


class BucketNotFound(FluxError):
    status, code = 404, "not found"

    def __init__(self, bucket: str):
        super().__init__(f'failed to initialize execute state: could not find bucket "{bucket}"')


def flux_type(value: Any) -> str:
    """The Flux type of a Python value (not None)."""
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, pd.Timestamp):
        return "time"
    raise TypeError(f"no Flux type for {value!r}")


@dataclasses.dataclass
class Table:
    """``key``: group key column -> value, in key order; ``columns``: column -> Flux type, in order; ``rows``:
    one dict per row with every column (None: null)."""

    key: dict[str, Any]
    columns: dict[str, str]
    rows: list[dict[str, Any]]

    def key_id(self) -> tuple:
        return tuple(self.key.items())


def table(key: Iterable[str], rows: list[dict[str, Any]], types: dict[str, str] | None = None) -> Table:
    """A table of ``rows`` (at least one, all with the same columns), ``key`` naming its group key columns, each
    column's type that of its first value that is not null, or given in ``types``."""
    columns = {name: (types or {}).get(name) or _first_type(rows, name) for name in rows[0]}
    return Table({name: rows[0][name] for name in key}, columns, rows)


def _first_type(rows: list[dict[str, Any]], name: str) -> str:
    for row in rows:
        if row[name] is not None:
            return flux_type(row[name])
    raise ValueError(f"column {name} holds only nulls: give its type")


def merged(tables: Iterable[Table]) -> list[Table]:
    """Tables with the same group key made one, rows in the order they came and the columns of all of them
    (null where a table lacked one), as Flux's table builders do when a transformation changes group keys."""
    out: dict[tuple, Table] = {}
    ragged: set[tuple] = set()  # tables made of parts with different columns: their rows get nulls
    for t in tables:
        if t.key_id() in out and out[t.key_id()].columns.keys() != t.columns.keys():
            ragged.add(t.key_id())
        into = out.setdefault(t.key_id(), Table(dict(t.key), {}, []))
        for name, kind in t.columns.items():
            if into.columns.setdefault(name, kind) != kind:
                raise FluxRuntimeError(f"schema collision: cannot group {into.columns[name]} and {kind} types together")
        into.rows.extend(t.rows)
    for key in ragged:
        out[key].rows = [{name: row.get(name) for name in out[key].columns} for row in out[key].rows]
    return list(out.values())


# ---------------------------------------------------------------- annotated CSV


def annotated_csv(tables: list[Table]) -> str:
    """Tables as InfluxDB 2.7 writes one result (flux's csv.ResultEncoder): the #datatype, #group and #default rows
    and the header again only when the column names or types change (not the group key), or around a table
    without rows, which is only that header with its group key values and table number as the defaults; an empty
    line before each header but the first and after the result; CRLF line ends. No table: an empty line."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    last: list[tuple[str, str]] | None = None
    last_empty = False
    for number, t in enumerate(tables):
        names = list(t.columns)
        this = [(name, t.columns[name]) for name in names]
        if this != last or last_empty or not t.rows:
            if last is not None:
                out.write("\r\n")
            defaults = [csv_cell(t.key.get(n)) if not t.rows else "" for n in names]
            writer.writerow(["#datatype", "string", "long", *(DATATYPES[t.columns[n]] for n in names)])
            writer.writerow(["#group", "false", "false", *("true" if n in t.key else "false" for n in names)])
            writer.writerow(["#default", "_result", "" if t.rows else number, *defaults])
            writer.writerow(["", "result", "table", *names])
        writer.writerows(["", "", number, *(csv_cell(row[n]) for n in names)] for row in t.rows)
        last, last_empty = this, not t.rows
    out.write("\r\n")
    return out.getvalue()


def error_csv(message: str) -> str:
    """The table InfluxDB ends an answer with when it meets an error after it began it (EncodeError); after
    tables, the empty line that ends ``annotated_csv`` is the one it writes first."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerows([["#datatype", "string", "string"], ["#group", "true", "true"], ["#default", "", ""]])
    writer.writerow(["", "error", "reference"])
    writer.writerow(["", message, ""])
    return out.getvalue()


def csv_cell(value: Any) -> str:
    """A value as InfluxDB writes it: floats in Go's shortest form without exponent (``0.00001``, ``+Inf``),
    times in RFC3339 with as many fraction digits as needed, null as an empty cell."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "+Inf" if value > 0 else "-Inf"
        return np.format_float_positional(value, unique=True, trim="-")
    if isinstance(value, pd.Timestamp):
        return rfc3339(value)
    return str(value)


def rfc3339(stamp: pd.Timestamp) -> str:
    """Go's RFC3339Nano: trailing zeros of the fraction dropped, no fraction for a whole second."""
    fraction = f"{stamp.microsecond * 1000 + stamp.nanosecond:09d}".rstrip("0")
    return f"{stamp:%Y-%m-%dT%H:%M:%S}" + (f".{fraction}" if fraction else "") + "Z"
