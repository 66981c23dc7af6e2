"""Labels at the edge: read people's anomaly labels from CSV exports or from InfluxDB.

CSV files are shaped like the original deployment's exports, one reading per row::

    Datetime (UTC),Value,ID,Anomaly
    2026-01-14 06:00:00,21.37,AHU-1 supply air temp,FALSE
    2026-01-14 06:05:00,27.90,AHU-1 supply air temp,TRUE

``Datetime (UTC)``: an ISO 8601 time ``YYYY-MM-DD HH:MM:SS`` (``T`` or a space between date and time;
seconds, a fraction of a second and a zone ``Z`` or ``+01:00`` optional; UTC when it carries no zone);
``Value``: a number, or empty for a row that only carries a label; ``ID``: the sensor id; ``Anomaly``:
TRUE or FALSE (any case; 1/0 and an empty cell, meaning FALSE, are accepted too). Other columns are
ignored. A malformed row raises ``LabelError`` naming the file and line.

Both sources give, per sensor, the starts of the labelled intervals (an interval is labelled when any
raw point in it is labelled); ``evaluation.labels_on_grid`` turns them into a boolean series.
A sensor that appears in a CSV file counts as labelled even when none of its rows is TRUE (a person
looked and found nothing); in InfluxDB only sensors with at least one true label point in the range
count as labelled, since no point there says that a sensor was looked at.

sensor_evaluate.py and sensor_tune.py take their labels the same way: the flags of ``add_arguments``,
the CSV files read once at start-up (``from_files``), InfluxDB otherwise (``read``).
"""

from __future__ import annotations

import argparse
import csv
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, TextIO

import pandas as pd

from anomaly import times
from anomaly.errors import ConfigError

if TYPE_CHECKING:
    from influx_interact import Database

TIME, VALUE, ID, ANOMALY = "Datetime (UTC)", "Value", "ID", "Anomaly"
COLUMNS = (TIME, VALUE, ID, ANOMALY)
_TRUE = {"true", "1"}
_FALSE = {"false", "0", ""}
_TIME_FORMAT = "YYYY-MM-DD HH:MM:SS (ISO 8601: 2026-01-14 06:00:00 in UTC, or 2026-01-14T07:00:00+01:00)"


class LabelError(ConfigError):
    """A label file that cannot be used; the message names the file and line. Bad configuration: exit 2."""


@dataclass(frozen=True)
class Row:
    """One CSV row: time (UTC), value (None when empty), sensor id, label."""

    time: pd.Timestamp
    value: float | None
    sensor_id: str
    anomaly: bool


def _parse_row(record: dict[str, str], where: str) -> Row:
    text = (record.get(TIME) or "").strip()
    stamp = times.iso_time(text)
    if stamp is None:
        raise LabelError(
            f"{where}: {TIME} {text!r} is not a time written {_TIME_FORMAT}; "
            f"relative times (now, -1h) and other orders of day and month (01/02/2026) are refused"
        )
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    sensor_id = record.get(ID) or ""
    if not sensor_id.strip() or "\n" in sensor_id or "\r" in sensor_id:
        raise LabelError(f"{where}: {ID} {sensor_id!r} is empty or holds a line break")
    raw_value = (record.get(VALUE) or "").strip()
    value = None
    if raw_value:
        try:
            value = float(raw_value)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise LabelError(f"{where}: {VALUE} {raw_value!r} is not a finite number (leave it empty for none)")
    label = (record.get(ANOMALY) or "").strip().lower()
    if label not in _TRUE | _FALSE:
        raise LabelError(f"{where}: {ANOMALY} {record.get(ANOMALY)!r} is not TRUE or FALSE")
    return Row(stamp, value, sensor_id, label in _TRUE)


def read_csv_rows(path: Path) -> Iterator[Row]:
    """Every row of one CSV file, checked; raises LabelError naming ``path`` and the line of a bad row."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            yield from _checked_rows(path, handle)
    except OSError as e:
        raise LabelError(f"{path}: cannot be read ({e.strerror})") from None


def _checked_rows(path: Path, handle: TextIO) -> Iterator[Row]:
    reader = csv.reader(handle)
    line = 1
    try:
        header = next(reader, [])
        missing = [c for c in COLUMNS if c not in header]
        if missing:
            raise LabelError(
                f"{path}: line 1: missing column{'s' if len(missing) > 1 else ''} "
                f"{', '.join(repr(c) for c in missing)}; expected {', '.join(COLUMNS)}"
            )
        for cells in reader:
            line = reader.line_num
            if not cells:
                continue
            if len(cells) != len(header):
                raise LabelError(f"{path}: line {line}: {len(cells)} columns where the header has {len(header)}")
            yield _parse_row(dict(zip(header, cells)), f"{path}: line {line}")
    except (UnicodeDecodeError, csv.Error) as e:
        raise LabelError(f"{path}: after line {line}: not readable CSV ({e})") from None


def labels_from_rows(rows: Iterable[Row], interval: pd.Timedelta) -> dict[str, pd.DatetimeIndex]:
    """Per sensor, the sorted starts of intervals holding at least one TRUE row (possibly none)."""
    marked: dict[str, set[pd.Timestamp]] = {}
    for row in rows:
        starts = marked.setdefault(row.sensor_id, set())
        if row.anomaly:
            starts.add(row.time.floor(interval))
    return {sensor_id: pd.DatetimeIndex(sorted(starts), tz="UTC") for sensor_id, starts in marked.items()}


def labels_from_csv(paths: Sequence[Path], interval: pd.Timedelta) -> dict[str, pd.DatetimeIndex]:
    """Labelled interval starts per sensor from CSV files; every sensor in the files is present."""

    def rows() -> Iterator[Row]:
        for path in paths:
            yield from read_csv_rows(path)

    return labels_from_rows(rows(), interval)


def labels_from_influx(
    db: Database,
    sensor_ids: Sequence[str],
    start: pd.Timestamp,
    stop: pd.Timestamp,
    interval: pd.Timedelta,
    chunk_size: int,
) -> dict[str, pd.DatetimeIndex]:
    """Labelled interval starts per sensor from the label field (``db.schema.label_field``) of the readings
    measurement, through ``Database.labelled_intervals``; sensors with no true label are absent."""
    found: dict[str, pd.DatetimeIndex] = {}
    for first in range(0, len(sensor_ids), chunk_size):
        chunk = list(sensor_ids[first : first + chunk_size])
        for sensor_id, starts in db.labelled_intervals(chunk, start, stop, interval).items():
            if len(starts):
                found[sensor_id] = pd.DatetimeIndex(starts).sort_values()
    return found


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags that say where labels come from: CSV files, or a field of the readings in InfluxDB."""
    group = parser.add_argument_group("labels")
    group.add_argument(
        "--labels-csv",
        nargs="+",
        action="extend",
        default=[],
        type=Path,
        metavar="FILE",
        help="CSV exports with columns Datetime (UTC) (YYYY-MM-DD HH:MM:SS), Value, ID, Anomaly (TRUE/FALSE); "
        "default: the --label-field in InfluxDB",
    )
    group.add_argument(
        "--label-field",
        default="manual_anomaly",
        help="boolean field on the readings marking labelled points (default manual_anomaly)",
    )


def field_from_args(args: argparse.Namespace) -> str | None:
    """The label field to read from InfluxDB; None when the labels come from --labels-csv."""
    if args.labels_csv:
        return None
    if not args.label_field or "\n" in args.label_field:
        raise ConfigError(f"--label-field: {args.label_field!r} must be a non-empty single-line name")
    return args.label_field


def from_files(paths: Sequence[Path], interval: pd.Timedelta) -> Mapping[str, pd.DatetimeIndex] | None:
    """Labels of --labels-csv files, read once at start-up; None when labels come from InfluxDB."""
    return MappingProxyType(labels_from_csv(paths, interval)) if paths else None


def read(
    db: Database,
    sensor_ids: Sequence[str],
    start: pd.Timestamp,
    stop: pd.Timestamp,
    interval: pd.Timedelta,
    chunk_size: int,
    csv_labels: Mapping[str, pd.DatetimeIndex] | None,
) -> dict[str, pd.DatetimeIndex]:
    """Labelled interval starts of the sensors that have labels: from the CSV files when given, else InfluxDB."""
    if csv_labels is not None:
        return {s: csv_labels[s] for s in sensor_ids if s in csv_labels}
    return labels_from_influx(db, sensor_ids, start, stop, interval, chunk_size)
