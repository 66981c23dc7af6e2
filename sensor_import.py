#!/usr/bin/env python3
"""Import CSV exports (readings and labels) into InfluxDB with the configured schema.

    .venv/bin/python sensor_import.py export-2026-01.csv export-2026-02.csv --label-field manual_anomaly

Each row (``Datetime (UTC)``, ``Value``, ``ID``, ``Anomaly``; see labels.py) becomes one point in
--measurement, tagged --sensor-tag=ID, with --field=Value (left out when the cell is empty) and
--label-field=true/false from Anomaly. False is written too, so importing a corrected file again clears
a label: points are keyed by sensor and time and are overwritten, never duplicated. Times are written
to the nanosecond.

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
from pathlib import Path

from anomaly import logs, settings
import labels
from anomaly.errors import ConfigError
from influx_interact import Influx, InfluxError, line_protocol

logger = logging.getLogger("sensor_import")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    settings.add_common_arguments(parser)
    parser.add_argument("files", nargs="+", type=Path, metavar="FILE", help="CSV export, repeatable")
    parser.add_argument("--label-field", default="manual_anomaly",
                        help="boolean field the Anomaly column goes to (default manual_anomaly)")
    parser.add_argument("--batch-size", type=int, default=5000, help="lines per write (default 5000)")
    return parser


def point_lines(rows: list[labels.Row], measurement: str, field: str, sensor_tag: str, label_field: str) -> list[str]:
    """Line protocol (nanosecond times) for checked rows."""
    lines = []
    for row in rows:
        fields: dict[str, float | bool] = {} if row.value is None else {field: row.value}
        fields[label_field] = row.anomaly
        lines.append(line_protocol(measurement, {sensor_tag: row.sensor_id}, fields, row.time.value))
    return lines


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.configure(args.log_level, args.log_format)
    began = time.monotonic()
    try:
        connection = settings.connection_from_args(args)
        schema = settings.schema_from_args(args, label_field=args.label_field)
        if not args.label_field or "\n" in args.label_field:
            raise ConfigError(f"--label-field: {args.label_field!r} must be a non-empty single-line name")
        batch_size = settings.positive_int("--batch-size", args.batch_size)
        if args.where:
            raise ConfigError("--where: the CSV files carry no tags but the sensor id; leave --where out")
        per_file = [(path, list(labels.read_csv_rows(path))) for path in args.files]
    except (ConfigError, labels.LabelError) as e:
        logger.error("configuration: %s", e)
        return 2
    try:
        with Influx(connection, schema) as db:
            for path, rows in per_file:
                lines = point_lines(rows, schema.measurement, schema.field, schema.sensor_tag, args.label_field)
                for first in range(0, len(lines), batch_size):
                    db.write(lines[first:first + batch_size], precision="ns")
                sensors = len({r.sensor_id for r in rows})
                logger.info("%s: %d rows of %d sensors written, %d labelled", path, len(rows), sensors,
                            sum(r.anomaly for r in rows))
    except InfluxError as e:
        logger.error("%s", e)
        return 1
    logger.info("done in %.1fs: %d files, %d rows", time.monotonic() - began, len(per_file),
                sum(len(rows) for _, rows in per_file))
    return 0


if __name__ == "__main__":
    sys.exit(main())
