"""Answers of the Flux dialect: annotated CSV as InfluxDB 2.x sends it, read whole by pandas' C parser.

Not record by record through influxdb-client's FluxRecord objects: a training read of a 200-sensor chunk over 90
days is 1.7 million rows. ``flux_frame`` makes the rows a frame, typed by the #datatype annotations; the
``*_by_tag`` functions shape it per sensor; an error table InfluxDB sent inside the answer is raised. Pure: no I/O.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from typing import Any

import pandas as pd
from pandas.api.extensions import take


class FluxAnswerError(Exception):
    """What InfluxDB reported in an error table, which ends an answer it had begun with status 200 when it met an
    error while the query ran; or an answer that is not annotated CSV."""


_LEFT_OUT = ("", "result", "table")  # the annotation column, and the result and table of each row


def flux_frame(body: bytes) -> pd.DataFrame:
    """An answer in annotated CSV -> its rows, in the order they came, with a column per column the answer
    has (but the annotation, result and table columns), typed by the #datatype row (``_typed``); a column
    some tables lack is NaN in their rows. No table: an empty frame.

    Raises ``FluxAnswerError`` with InfluxDB's message for an error table.
    """
    starts = _header_starts(body)
    if body[: starts[0] if starts else len(body)].strip():
        raise FluxAnswerError("the answer is not annotated CSV")
    frames = [_block_frame(body[start:end]) for start, end in zip(starts, [*starts[1:], len(body)])]
    if len(frames) < 2:
        return frames[0] if frames else pd.DataFrame()
    # Tables under different headers have categories of their own, which concat turns into plain text.
    text = {c for f in frames for c in f.columns if isinstance(f[c].dtype, pd.CategoricalDtype)}
    return pd.concat(frames, ignore_index=True).astype(dict.fromkeys(text, "category"))


def _header_starts(body: bytes) -> list[int]:
    """Where each annotated header begins: its #datatype row. InfluxDB writes the annotations and the header
    again only when the columns change, so one header may stand for many tables (often a chunk's sensors).
    (bytes.find, not a regular expression: this scans the whole answer, and a multiline ^ takes 25 times as
    long.)"""
    starts = [0] if body.startswith(b"#datatype,") else []
    found = body.find(b"\n#datatype,")
    while found >= 0:
        starts.append(found + 1)
        found = body.find(b"\n#datatype,", found + 1)
    return starts


def _block_frame(block: bytes) -> pd.DataFrame:
    """One annotated header (#datatype, #group, #default rows and the column names) and the rows under it."""
    end = 0
    for _ in range(4):
        end = block.find(b"\n", end) + 1
        if end == 0:
            raise FluxAnswerError("the answer ends inside the header of a table")
    datatypes, _groups, defaults, names = csv.reader(block[:end].decode("utf-8").splitlines())
    if names[1:3] == ["error", "reference"]:
        error = next(csv.reader(block[end:].decode("utf-8").splitlines()), ["", ""])
        raise FluxAnswerError(error[1])
    columns = [name for name in names if name not in _LEFT_OUT]
    datatype, default = dict(zip(names, datatypes)), dict(zip(names, defaults))
    floats = {c for c in columns if datatype[c] == "double" and not default[c]}
    rows = io.BytesIO(block)  # shares the bytes: no copy of the rows, the bulk of the answer
    rows.seek(end)
    frame = pd.read_csv(
        rows,
        header=None,
        names=names,
        usecols=columns,
        # Doubles straight to floats, the rest as text: read_csv's own categories would turn a sensor id "007"
        # into the number 7.
        dtype={c: "float64" if c in floats else str for c in columns},
        # Only an empty cell is missing (a sensor id "NA" or "null" is an id), and NaN where a double is.
        keep_default_na=False,
        na_values={c: ["", "NaN"] if c in floats else [""] for c in columns},
        encoding="utf-8",
    )
    return pd.DataFrame(
        {c: _typed(frame[c] if not default[c] else frame[c].fillna(default[c]), datatype[c]) for c in columns}
    )


# How the distinct texts of a column of each #datatype (up to its colon: dateTime:RFC3339) become values.
_CONVERSIONS: dict[str, Callable[[pd.Index], Any]] = {
    "long": lambda texts: pd.to_numeric(texts).to_numpy(),
    "unsignedLong": lambda texts: pd.to_numeric(texts).to_numpy(),
    "boolean": lambda texts: texts.map({"true": True, "false": False}).to_numpy(),
    "dateTime": lambda texts: pd.to_datetime(texts, utc=True, format="ISO8601").array,
}


def _typed(column: pd.Series, datatype: str) -> pd.Series:
    """A column as its #datatype says: double -> float64, long -> int64 (float64 where a cell is empty),
    boolean -> bool (object with NaN where a cell is empty), dateTime -> UTC datetime64 (microseconds, or
    nanoseconds where the answer has them), anything else -> categorical text; an empty cell is NaN or NaT.
    Each distinct text is converted once: a time repeats in every sensor's table, a tag on every row of its
    table."""
    if datatype == "double":
        return column.astype("float64")
    texts = column.astype("category")
    convert = _CONVERSIONS.get(datatype.split(":")[0])
    if convert is None:
        return texts
    values = convert(texts.cat.categories)
    return pd.Series(take(values, texts.cat.codes.to_numpy(), allow_fill=True), index=column.index)


def series_by_tag(frame: pd.DataFrame, tag: str) -> dict[str, pd.Series]:
    """Rows with ``_time``, ``_value`` and the tag -> {sensor id: float values by UTC time}, sensors in the order
    they first came and each sensor's values in theirs. A row without the tag is no sensor's."""
    if tag not in frame:
        return {}
    return {
        sensor_id: pd.Series(
            rows["_value"].to_numpy(dtype="float64"), index=pd.DatetimeIndex(rows["_time"].array), name=sensor_id
        )
        for sensor_id, rows in frame.groupby(tag, sort=False, observed=True)
    }


def newest_by_tag(frame: pd.DataFrame, tag: str) -> dict[str, pd.Timestamp]:
    """Rows with ``_time`` and the tag -> {sensor id: its newest ``_time``}. A row without the tag is no sensor's."""
    if tag not in frame or frame.empty:
        return {}
    return {sensor_id: time for sensor_id, time in frame.groupby(tag, sort=False, observed=True)["_time"].max().items()}


def frames_by_tag(frame: pd.DataFrame, tag: str, columns: list[str]) -> dict[str, pd.DataFrame]:
    """Pivoted rows (``_time``, the tag and ``columns``) -> {sensor id: ``columns`` by UTC time}.

    A column no row has (a field never written in the range: pivot makes no column for it) is all NaN.
    """
    if tag not in frame:
        return {}
    return {
        sensor_id: rows.set_index(pd.DatetimeIndex(rows["_time"].array)).reindex(columns=columns)
        for sensor_id, rows in frame.groupby(tag, sort=False, observed=True)
    }


def values_by_tag(frame: pd.DataFrame, tag: str, column: str) -> dict[str, Any]:
    """One row per sensor (a count, a tag of its newest point) -> {sensor id: its ``column``}; rows without
    the tag or the column are left out."""
    if tag not in frame or column not in frame:
        return {}
    rows = frame.dropna(subset=[tag, column])
    return dict(zip(rows[tag], rows[column]))


# What an error InfluxDB reports inside a 200 answer says when the server gave up for a reason that passes (a
# deadline, a cancellation, a restart); any other such error (a type or schema error met while running the
# query, a memory limit) comes back the same however often the query is sent.
_PASSING_ERRORS = (
    "deadline exceeded",
    "timeout",
    "timed out",
    "canceled",
    "cancelled",
    "unavailable",
    "connection reset",
)


def flux_error_is_transient(message: str) -> bool:
    """Whether a query that met this error (reported by InfluxDB inside its answer) may succeed if sent again."""
    lowered = message.lower()
    return any(words in lowered for words in _PASSING_ERRORS)
