#!/usr/bin/env python3
"""Import CSV exports (readings and labels) into InfluxDB with the configured schema.

    .venv/bin/python sensor_import.py export-2026-01.csv export-2026-02.csv --label-field manual_anomaly

Each row (``Datetime (UTC)``, ``Value``, ``ID``, ``Anomaly``; see anomaly/labels.py) becomes one point in
--measurement, tagged --sensor-tag=ID, with --field=Value (left out when the cell is empty) and
--label-field=true/false from Anomaly. False is written too, so importing a corrected file again clears
a label: points are keyed by sensor and time and are overwritten, never duplicated. Times are written
to the nanosecond.

Times are ISO 8601, YYYY-MM-DD HH:MM:SS (2026-01-14 06:00:00, UTC; or 2026-01-14T07:00:00+01:00, with
T or a space, seconds, a fraction of a second and the zone optional); nothing else is guessed at, so a
relative time (now, today, -1h) or another order of day and month (01/02/2026) stops the import.

--sensor imports only the rows of the sensors named (--shard only those of its part); a --sensor that
no file holds stops the import, so a misspelt id cannot pass for a sensor without readings.

Every file is read and checked before anything is written: a malformed row stops the import with the
file and line, and nothing is written. Points then go out in batches of --batch-size lines.

Connection flags and variables are the jobs' (INFLUX_URL, INFLUX_DATABASE, ...). Exit status: 0 when
everything was written, 1 when the database failed (batches before the failure stay written), 2 for bad
configuration or a malformed file.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from anomaly import labels, runner, settings
from anomaly.errors import EXIT_OK, ConfigError
from anomaly.influx.line_protocol import line_protocol
from anomaly.settings import Common
from influx_interact import Database

logger = logging.getLogger("sensor_import")


@dataclass(frozen=True)
class ImportSettings:
    common: Common
    label_field: str
    batch_size: int
    files: tuple[tuple[Path, tuple[labels.Row, ...]], ...]  # every file's selected rows, read and checked at start-up


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE", help="CSV export, repeatable")
    parser.add_argument(
        "--label-field",
        default="manual_anomaly",
        help="boolean field the Anomaly column goes to (default manual_anomaly)",
    )
    parser.add_argument("--batch-size", type=int, default=5000, help="lines per write (default 5000)")


def settings_from_args(args: argparse.Namespace) -> ImportSettings:
    """The settings, and every file read and checked: a malformed row is bad configuration (LabelError)."""
    common = settings.common_from_args(args, label_field=args.label_field)
    if not args.label_field or "\n" in args.label_field:
        raise ConfigError(f"--label-field: {args.label_field!r} must be a non-empty single-line name")
    batch_size = settings.positive_int("--batch-size", args.batch_size)
    if args.where:
        raise ConfigError("--where: the CSV files carry no tags but the sensor id; leave --where out")
    rows = tuple((path, tuple(labels.read_csv_rows(path))) for path in args.files)
    return ImportSettings(
        common=common, label_field=args.label_field, batch_size=batch_size, files=selected_rows(rows, common)
    )


def selected_rows(
    files: Sequence[tuple[Path, Sequence[labels.Row]]], common: Common
) -> tuple[tuple[Path, tuple[labels.Row, ...]], ...]:
    """Each file's rows of the sensors --sensor and --shard select; a --sensor in no file is refused."""
    found = {row.sensor_id for _, rows in files for row in rows}
    missing = [s for s in common.sensors if s not in found]
    if missing:
        raise ConfigError(
            f"--sensor: no row of {', '.join(str(path) for path, _ in files)} has ID "
            f"{', '.join(repr(s) for s in missing)}; check the spelling (nothing was written)"
        )
    chosen = set(common.selected(sorted(found)))
    return tuple((path, tuple(row for row in rows if row.sensor_id in chosen)) for path, rows in files)


def point_lines(
    rows: Sequence[labels.Row], measurement: str, field: str, sensor_tag: str, label_field: str
) -> list[str]:
    """Line protocol (nanosecond times) for checked rows."""
    lines = []
    for row in rows:
        fields: dict[str, float | bool] = {} if row.value is None else {field: row.value}
        fields[label_field] = row.anomaly
        lines.append(line_protocol(measurement, {sensor_tag: row.sensor_id}, fields, row.time.value))
    return lines


def run(settings: ImportSettings, db: Database) -> runner.Outcome:
    began = time.monotonic()
    schema = settings.common.schema
    for path, rows in settings.files:
        lines = point_lines(rows, schema.measurement, schema.field, schema.sensor_tag, settings.label_field)
        for first in range(0, len(lines), settings.batch_size):
            db.write(lines[first : first + settings.batch_size], precision="ns")
        sensors = len({r.sensor_id for r in rows})
        logger.info(
            "%s: %d rows of %d sensors written, %d labelled", path, len(rows), sensors, sum(r.anomaly for r in rows)
        )
    logger.info(
        "done in %.1fs: %d files, %d rows",
        time.monotonic() - began,
        len(settings.files),
        sum(len(rows) for _, rows in settings.files),
    )
    return runner.Outcome(EXIT_OK)


JOB = runner.Job("sensor_import", __doc__, add_arguments, settings_from_args, run)

if __name__ == "__main__":
    sys.exit(runner.main(JOB))
