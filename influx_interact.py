"""Everything that talks to InfluxDB: one class, two dialects.

Flux goes through influxdb-client (InfluxDB 2.x, Cloud, 1.8+ with Flux enabled). InfluxQL reads and
line-protocol writes go over the v1 HTTP API (/query, /write) for InfluxDB 1.x and 3.x, and for 2.x
through its DBRP mapping. Both dialects aggregate on the server (mean per interval, bucket time =
interval start), fetch a whole chunk of sensors per query, and raise ``InfluxError`` with a message a
person can act on. Query text and response parsing are pure functions so they can be tested alone.
"""
from __future__ import annotations

import base64
import json
import logging
import math
import time
import urllib.parse
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

import numpy as np
import pandas as pd
import urllib3

from anomaly.settings import Connection, Schema

logger = logging.getLogger(__name__)

T = TypeVar("T")
WRITE_BATCH_LINES = 5000
# What InfluxDB unescapes after a backslash in measurements and field keys (tags: only ",= ").
NAME_UNESCAPED = ',= "'
# 1e300 as an InfluxQL float literal (it has no exponent notation): no reading is that large, but a device's
# "no value" sentinel such as 1.8e308 can be, and two of them overflow a mean.
ABSURD_READING = "1" + "0" * 300 + ".0"


class InfluxError(RuntimeError):
    """A database problem: unreachable, refused, missing database, bad query. Never holds a secret.

    ``transient`` errors (no connection, time-out, HTTP 5xx or 429) may succeed when tried again.
    """

    def __init__(self, message: str, transient: bool = False):
        super().__init__(message)
        self.transient = transient


# ---------------------------------------------------------------- line protocol


def _escape(text: str, specials: str, unescaped: str = ",= ") -> str:
    """Backslash-escape ``specials``. Backslashes stay literal, as InfluxDB reads them in names and tags,
    so one right before a character the server unescapes there, or at the end, cannot be written."""
    if text.endswith("\\") or any("\\" + char in text for char in unescaped):
        raise ValueError(f"{text!r} cannot be written as line protocol: a backslash before one of "
                         f"{unescaped!r} or at the end is ambiguous")
    for char in specials:
        text = text.replace(char, "\\" + char)
    return text


def check_name(text: str, what: str) -> None:
    """Line protocol has no escape for newlines, and tag values cannot be empty."""
    if not text or "\n" in text or "\r" in text:
        raise ValueError(f"{what} {text!r} cannot be written as line protocol (empty or contains a line break)")


def line_protocol(measurement: str, tags: dict[str, str], fields: dict[str, float | bool | str],
                  timestamp: int) -> str:
    """One point as line protocol, ``timestamp`` in the write's precision; non-finite floats are left out."""
    check_name(measurement, "measurement")
    tag_text = ""
    for key in sorted(tags):
        check_name(tags[key], f"tag {key}")
        tag_text += f",{_escape(key, ',= ')}={_escape(tags[key], ',= ')}"
    parts = []
    for key, value in fields.items():
        if isinstance(value, (bool, np.bool_)):
            text = "true" if value else "false"
        elif isinstance(value, str):
            text = '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
        elif math.isfinite(value):
            text = repr(float(value))
        else:
            continue
        parts.append(f"{_escape(key, ',= ', unescaped=NAME_UNESCAPED)}={text}")
    if not parts:
        raise ValueError(f"point of {measurement!r} at {timestamp} has no finite field to write")
    return f"{_escape(measurement, ', ', unescaped=NAME_UNESCAPED)}{tag_text} {','.join(parts)} {timestamp}"


# ---------------------------------------------------------------- InfluxQL text


def influxql_string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def influxql_ident(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def influxql_time(stamp: pd.Timestamp) -> str:
    return "'" + stamp.tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%SZ") + "'"


def _influxql_filters(schema: Schema, sensor_ids: Sequence[str], start: pd.Timestamp | None,
                      stop: pd.Timestamp | None, with_where: bool = True) -> str:
    tag = influxql_ident(schema.sensor_tag)
    clauses = []
    if start is not None:
        clauses.append(f"time >= {influxql_time(start)}")
    if stop is not None:
        clauses.append(f"time < {influxql_time(stop)}")
    if with_where:
        clauses += [f"{influxql_ident(key)} = {influxql_string(value)}" for key, value in schema.where]
    if sensor_ids:
        clauses.append("(" + " OR ".join(f"{tag} = {influxql_string(s)}" for s in sensor_ids) + ")")
    return " AND ".join(clauses)


def influxql_sensors(schema: Schema) -> str:
    where = " AND ".join(f"{influxql_ident(k)} = {influxql_string(v)}" for k, v in schema.where)
    text = f"SHOW TAG VALUES FROM {influxql_ident(schema.measurement)} WITH KEY = {influxql_ident(schema.sensor_tag)}"
    return text + (f" WHERE {where}" if where else "")


def influxql_means(schema: Schema, sensor_ids: Sequence[str], start: pd.Timestamp, stop: pd.Timestamp,
                   interval: pd.Timedelta, sane_only: bool = False) -> str:
    """``sane_only`` leaves out readings beyond +-ABSURD_READING, so that no mean can overflow."""
    field = influxql_ident(schema.field)
    sane = f" AND {field} > -{ABSURD_READING} AND {field} < {ABSURD_READING}" if sane_only else ""
    return (
        f"SELECT mean({field}) FROM {influxql_ident(schema.measurement)} "
        f"WHERE {_influxql_filters(schema, sensor_ids, start, stop)}{sane} "
        f"GROUP BY time({int(interval.total_seconds())}s), {influxql_ident(schema.sensor_tag)} fill(none)"
    )


def influxql_labels(schema: Schema, sensor_ids: Sequence[str], start: pd.Timestamp, stop: pd.Timestamp,
                    interval: pd.Timedelta) -> str:
    label = influxql_ident(schema.label_field or "")
    return (
        f"SELECT count({label}) FROM {influxql_ident(schema.measurement)} "
        f"WHERE {label} = true AND {_influxql_filters(schema, sensor_ids, start, stop)} "
        f"GROUP BY time({int(interval.total_seconds())}s), {influxql_ident(schema.sensor_tag)} fill(none)"
    )


def influxql_last_scored(schema: Schema, sensor_ids: Sequence[str], since: pd.Timestamp) -> str:
    return (
        f'SELECT last("loss") FROM {influxql_ident(schema.output_measurement)} '
        f"WHERE {_influxql_filters(schema, sensor_ids, since, None, with_where=False)} "
        f"GROUP BY {influxql_ident(schema.sensor_tag)}"
    )


def influxql_last_reading(schema: Schema, sensor_ids: Sequence[str], since: pd.Timestamp) -> str:
    return (
        f"SELECT last({influxql_ident(schema.field)}) FROM {influxql_ident(schema.measurement)} "
        f"WHERE {_influxql_filters(schema, sensor_ids, since, None)} GROUP BY {influxql_ident(schema.sensor_tag)}"
    )


def influxql_group_tags(schema: Schema, sensor_ids: Sequence[str], since: pd.Timestamp, key: str) -> str:
    return (
        f"SELECT last({influxql_ident(schema.field)}) FROM {influxql_ident(schema.measurement)} "
        f"WHERE {_influxql_filters(schema, sensor_ids, since, None)} "
        f"GROUP BY {influxql_ident(schema.sensor_tag)}, {influxql_ident(key)}"
    )


def influxql_anomaly_counts(schema: Schema, sensor_ids: Sequence[str], since: pd.Timestamp) -> str:
    return (
        f'SELECT count("anomaly") FROM {influxql_ident(schema.output_measurement)} '
        f'WHERE "anomaly" = true AND {_influxql_filters(schema, sensor_ids, since, None, with_where=False)} '
        f"GROUP BY {influxql_ident(schema.sensor_tag)}"
    )


def influxql_scores(schema: Schema, sensor_ids: Sequence[str], start: pd.Timestamp, stop: pd.Timestamp) -> str:
    return (
        f'SELECT "loss", "threshold", "anomaly", {influxql_ident(schema.field)} '
        f"FROM {influxql_ident(schema.output_measurement)} "
        f"WHERE {_influxql_filters(schema, sensor_ids, start, stop, with_where=False)} "
        f"GROUP BY {influxql_ident(schema.sensor_tag)}"
    )


def frames_by_tag(series_list: Iterable[dict], tag: str) -> dict[str, pd.DataFrame]:
    """InfluxQL series of several columns grouped by the sensor tag -> {sensor id: frame by UTC time}."""
    out = {}
    for series in series_list:
        sensor_id = series["tags"].get(tag)
        if sensor_id is None or not series["values"]:
            continue
        frame = pd.DataFrame(series["values"], columns=series["columns"])
        frame.index = pd.to_datetime(frame.pop("time"), unit="s", utc=True)
        out[sensor_id] = frame
    return out


def parse_influxql(body: bytes, lost: list[str] | None = None) -> list[dict]:
    """Merge a (possibly chunked) /query response into one list of series, raising on statement errors.

    Each series is ``{"name": str, "tags": dict, "columns": list, "values": list}``. Chunks the server
    could not encode raise, or, when ``lost`` is given, are left out and their errors appended to it.
    """
    merged: dict[tuple, dict] = {}
    for text in body.decode("utf-8").splitlines():
        if not text.strip():
            continue
        if text.startswith("json: "):
            # InfluxDB 1.x sends Go's encoding error in place of a chunk it cannot encode (a mean that
            # overflowed to +Inf); the other chunks are whole, so a caller that can do without it says so.
            if lost is None:
                raise InfluxError(f"could not encode part of its answer: {text.strip()[:300]}")
            lost.append(text.strip())
            continue
        document = json.loads(text)
        if "error" in document:
            raise InfluxError(document["error"])
        for result in document.get("results", []):
            if "error" in result:
                raise InfluxError(result["error"])
            for series in result.get("series", []):
                key = (series.get("name"), tuple(sorted((series.get("tags") or {}).items())))
                target = merged.setdefault(key, {"name": series.get("name"), "tags": series.get("tags") or {},
                                                 "columns": series["columns"], "values": []})
                target["values"].extend(series.get("values") or [])
    return list(merged.values())


def series_by_tag(series_list: Iterable[dict], tag: str) -> dict[str, pd.Series]:
    """InfluxQL series grouped by the sensor tag -> {sensor id: values by UTC time (epoch seconds in)}."""
    out = {}
    for series in series_list:
        sensor_id = series["tags"].get(tag)
        if sensor_id is None or not series["values"]:
            continue
        times, values = zip(*((row[0], row[1]) for row in series["values"]))
        index = pd.to_datetime(list(times), unit="s", utc=True)
        out[sensor_id] = pd.Series(list(values), index=index, dtype="float64", name=sensor_id)
    return out


# ---------------------------------------------------------------- Flux text


def flux_string(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("${", "\\${")
    return f'"{escaped}"'


def _flux_tag_filters(schema: Schema) -> str:
    """Tag keys go in as literals (Flux has no dynamic column access); their values are parameters."""
    lines = [f"  |> filter(fn: (r) => r[{flux_string(key)}] == params.where{i})" for i, (key, _) in enumerate(schema.where)]
    return "\n".join(lines)


def flux_params(schema: Schema, **extra) -> dict:
    params = {f"where{i}": value for i, (_, value) in enumerate(schema.where)}
    params.update(extra)
    return params


def _flux_query(schema: Schema, *steps: str, stop: bool = True, field: str | None = "r._field == params.field",
          where: bool = True, sensors: bool = True) -> str:
    """The shape every query here shares: bucket, range, measurement (and field), the --where tags, the
    chunk's sensors; then ``steps``, in which ``{tag}`` stands for the quoted sensor tag key."""
    tag = flux_string(schema.sensor_tag)
    measurement = "r._measurement == params.measurement" + (f" and {field}" if field else "")
    lines = [
        "from(bucket: params.bucket)",
        f"  |> range(start: params.start{', stop: params.stop' if stop else ''})",
        f"  |> filter(fn: (r) => {measurement})",
        _flux_tag_filters(schema) if where else "",
        f"  |> filter(fn: (r) => contains(value: r[{tag}], set: params.sensors))" if sensors else "",
    ]
    return "\n".join(filter(None, lines + [f"  |> {step.replace('{tag}', tag)}" for step in steps]))


def flux_sensors(schema: Schema) -> str:
    # distinct() puts the values in _value; rename gives them back the tag's name, which callers read.
    return _flux_query(schema, "keep(columns: [{tag}])", "group()", "distinct(column: {tag})",
                 "rename(columns: {_value: {tag}})", sensors=False)


# group(): one table per sensor even when other tags vary within it, as InfluxQL's GROUP BY gives.
def flux_means(schema: Schema) -> str:
    return _flux_query(schema, "group(columns: [{tag}])",
                 'aggregateWindow(every: params.every, fn: mean, createEmpty: false, timeSrc: "_start")',
                 'keep(columns: ["_time", "_value", {tag}])')


def flux_labels(schema: Schema) -> str:
    return _flux_query(schema, "filter(fn: (r) => r._value == true)", "group(columns: [{tag}])",
                 'aggregateWindow(every: params.every, fn: count, createEmpty: false, timeSrc: "_start")',
                 'keep(columns: ["_time", "_value", {tag}])', field="r._field == params.label")


def flux_last_scored(schema: Schema) -> str:
    return _flux_query(schema, "last()", 'keep(columns: ["_time", "_value", {tag}])', stop=False,
                 field='r._field == "loss"', where=False)


def flux_last_reading(schema: Schema) -> str:
    return _flux_query(schema, "group(columns: [{tag}])", "last()", 'keep(columns: ["_time", "_value", {tag}])',
                 stop=False)


def flux_group_tags(schema: Schema, key: str) -> str:
    group = flux_string(key)
    return _flux_query(schema, f"filter(fn: (r) => exists r[{group}])", f"group(columns: [{{tag}}, {group}])", "last()",
                 f"keep(columns: [{{tag}}, {group}])", stop=False)


def flux_anomaly_counts(schema: Schema) -> str:
    return _flux_query(schema, "filter(fn: (r) => r._value == true)", "count()", 'keep(columns: ["_value", {tag}])',
                 stop=False, field='r._field == "anomaly"', where=False)


def flux_scores(schema: Schema) -> str:
    fields = ", ".join(flux_string(f) for f in ("loss", "threshold", "anomaly", schema.field))
    return _flux_query(schema, f"filter(fn: (r) => contains(value: r._field, set: [{fields}]))",
                 'pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")',
                 f'keep(columns: ["_time", {{tag}}, {fields}])', field=None, where=False)


def records_by_tag(records: Iterable[dict], tag: str) -> dict[str, pd.Series]:
    """Flux records (dicts with _time, _value and the tag) -> {sensor id: values by UTC time}."""
    times: dict[str, list] = defaultdict(list)
    values: dict[str, list] = defaultdict(list)
    for record in records:
        sensor_id = record.get(tag)
        if sensor_id is None:
            continue
        times[sensor_id].append(record["_time"])
        values[sensor_id].append(record["_value"])
    return {
        sensor_id: pd.Series(values[sensor_id], index=pd.to_datetime(times[sensor_id], utc=True),
                             dtype="float64", name=sensor_id)
        for sensor_id in times
    }


# ---------------------------------------------------------------- the client


def redact(url: str) -> str:
    """The URL without any user:password part, safe for logs."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))


def dialect_for_version(version: str) -> str:
    """InfluxDB 2.x (and Cloud) speak Flux; 1.x and 3.x speak InfluxQL over the v1 API."""
    text = version.lower().lstrip("v")
    return "flux" if text.startswith("2") or "cloud" in text else "influxql"


class Influx:
    """Reads readings and labels, finds the last scored time, writes scores. Use as a context manager."""

    def __init__(self, connection: Connection, schema: Schema):
        self.connection = connection
        self.schema = schema
        self.url = redact(connection.url)
        self.dialect = connection.api
        self._http = urllib3.PoolManager(
            timeout=urllib3.Timeout(total=connection.timeout_s), retries=False, headers=self._auth_headers()
        )
        self._flux_client = None

    def __enter__(self) -> Influx:
        if self.dialect == "auto":
            self.dialect = dialect_for_version(self.server_version())
            logger.debug("InfluxDB at %s speaks %s", self.url, self.dialect)
        if self.dialect == "flux":
            self._open_flux()
        return self

    def __exit__(self, *exc) -> None:
        if self._flux_client is not None:
            self._flux_client.close()
        self._http.clear()

    # ------------------------------------------------------------ public operations

    def server_version(self) -> str:
        response = self._request("GET", "/ping")
        return response.headers.get("X-Influxdb-Version", "")

    def sensor_ids(self, start: pd.Timestamp, stop: pd.Timestamp) -> list[str]:
        """Every sensor id in the readings measurement (matching --where), sorted."""
        if self.dialect == "flux":
            records = self._flux(flux_sensors(self.schema), start=start, stop=stop,
                                 measurement=self.schema.measurement, field=self.schema.field)
            ids = {r.get(self.schema.sensor_tag) for r in records}
        else:
            series = self._influxql(influxql_sensors(self.schema))
            ids = {row[1] for s in series for row in s["values"]}
        found = sorted(i for i in ids if i is not None)
        if not found:
            where = "".join(f", {key}={value!r}" for key, value in self.schema.where)
            database = self.connection.bucket if self.dialect == "flux" else self._database
            logger.warning("nothing to do: no sensor (tag %r%s) in measurement %r of %r at %s; check --measurement, "
                           "--sensor-tag, --where and the database", self.schema.sensor_tag, where,
                           self.schema.measurement, database, self.url)
        return found

    def read_means(self, sensor_ids: Sequence[str], start: pd.Timestamp, stop: pd.Timestamp,
                   interval: pd.Timedelta) -> dict[str, pd.Series]:
        """Mean reading per interval for each sensor, indexed by interval start; sensors with none are absent."""
        if self.dialect == "flux":
            records = self._flux(flux_means(self.schema), start=start, stop=stop, every=interval,
                                 measurement=self.schema.measurement, field=self.schema.field, sensors=list(sensor_ids))
            return records_by_tag(records, self.schema.sensor_tag)
        lost: list[str] = []
        series = self._influxql(influxql_means(self.schema, sensor_ids, start, stop, interval), lost)
        if lost:
            logger.warning("InfluxDB could not send the mean of some intervals (%s): readings near +-1.8e308 "
                           "overflowed it; reading again without readings beyond +-1e300", lost[0][:200])
            series = self._influxql(influxql_means(self.schema, sensor_ids, start, stop, interval, sane_only=True))
        return series_by_tag(series, self.schema.sensor_tag)

    def labelled_intervals(self, sensor_ids: Sequence[str], start: pd.Timestamp, stop: pd.Timestamp,
                           interval: pd.Timedelta) -> dict[str, pd.DatetimeIndex]:
        """Starts of the intervals that hold at least one point whose label field is true."""
        if self.dialect == "flux":
            counts = records_by_tag(self._flux(flux_labels(self.schema), start=start, stop=stop, every=interval,
                                               measurement=self.schema.measurement, label=self.schema.label_field,
                                               sensors=list(sensor_ids)), self.schema.sensor_tag)
        else:
            query = influxql_labels(self.schema, sensor_ids, start, stop, interval)
            counts = series_by_tag(self._influxql(query), self.schema.sensor_tag)
        return {sensor_id: c.index[c > 0] for sensor_id, c in counts.items()}

    def last_scored(self, sensor_ids: Sequence[str], since: pd.Timestamp) -> dict[str, pd.Timestamp]:
        """Time of each sensor's newest score at or after ``since``; sensors never scored are absent."""
        if self.dialect == "flux":
            found = records_by_tag(self._flux(flux_last_scored(self.schema), start=since,
                                              measurement=self.schema.output_measurement,
                                              sensors=list(sensor_ids)), self.schema.sensor_tag)
        else:
            query = influxql_last_scored(self.schema, sensor_ids, since)
            found = series_by_tag(self._influxql(query), self.schema.sensor_tag)
        return {sensor_id: s.index.max() for sensor_id, s in found.items() if len(s)}

    def last_reading(self, sensor_ids: Sequence[str], since: pd.Timestamp) -> dict[str, pd.Timestamp]:
        """Time of each sensor's newest raw reading at or after ``since``: how fresh its data is."""
        if self.dialect == "flux":
            found = records_by_tag(self._flux(flux_last_reading(self.schema), start=since,
                                              measurement=self.schema.measurement, field=self.schema.field,
                                              sensors=list(sensor_ids)), self.schema.sensor_tag)
        else:
            found = series_by_tag(self._influxql(influxql_last_reading(self.schema, sensor_ids, since)),
                                  self.schema.sensor_tag)
        return {sensor_id: s.index.max() for sensor_id, s in found.items() if len(s)}

    def group_tags(self, sensor_ids: Sequence[str], since: pd.Timestamp, key: str) -> dict[str, str]:
        """Each sensor's value of tag ``key`` (equipment, site) in its readings since ``since``; with several
        values, the one of its newest reading. Sensors without the tag are absent."""
        tag = self.schema.sensor_tag
        if self.dialect == "flux":
            records = self._flux(flux_group_tags(self.schema, key), start=since, measurement=self.schema.measurement,
                                 field=self.schema.field, sensors=list(sensor_ids))
            return {r[tag]: r[key] for r in records if r.get(tag) is not None and r.get(key)}
        series = self._influxql(influxql_group_tags(self.schema, sensor_ids, since, key))
        newest: dict[str, tuple[int, str]] = {}
        for s in series:
            sensor_id, value = s["tags"].get(tag), s["tags"].get(key)
            if sensor_id and value and s["values"] and s["values"][0][0] >= newest.get(sensor_id, (-1, ""))[0]:
                newest[sensor_id] = (s["values"][0][0], value)
        return {sensor_id: value for sensor_id, (_, value) in newest.items()}

    def anomaly_counts(self, sensor_ids: Sequence[str], since: pd.Timestamp) -> dict[str, int]:
        """Flagged windows per sensor at or after ``since``; sensors with none are absent."""
        if self.dialect == "flux":
            records = self._flux(flux_anomaly_counts(self.schema), start=since,
                                 measurement=self.schema.output_measurement, sensors=list(sensor_ids))
            return {r[self.schema.sensor_tag]: int(r["_value"]) for r in records if r.get(self.schema.sensor_tag)}
        series = self._influxql(influxql_anomaly_counts(self.schema, sensor_ids, since))
        return {s["tags"][self.schema.sensor_tag]: int(s["values"][0][1]) for s in series if s["values"]}

    def read_scores(self, sensor_ids: Sequence[str], start: pd.Timestamp,
                    stop: pd.Timestamp) -> dict[str, pd.DataFrame]:
        """What sensor_predict.py wrote: per sensor a frame by window end with loss, threshold, anomaly and
        the reading (named like --field)."""
        if self.dialect == "flux":
            records = self._flux(flux_scores(self.schema), start=start, stop=stop,
                                 measurement=self.schema.output_measurement, sensors=list(sensor_ids))
            frames: dict[str, list[dict]] = defaultdict(list)
            for r in records:
                frames[r[self.schema.sensor_tag]].append(r)
            return {
                sensor_id: pd.DataFrame(rows).set_index(pd.to_datetime([r["_time"] for r in rows], utc=True))[
                    ["loss", "threshold", "anomaly", self.schema.field]]
                for sensor_id, rows in frames.items()
            }
        series = self._influxql(influxql_scores(self.schema, sensor_ids, start, stop))
        return frames_by_tag(series, self.schema.sensor_tag)

    def record_run(self, job: str, host: str, fields: dict[str, float | int | str], time_ns: int) -> None:
        """One point per job run in the health measurement, for dashboards and a deadman alert; nanosecond
        time, so runs that end in the same second (shards on one host) each keep their point.

        Best effort: a failure is logged, never raised, since the run's own work is already done.
        """
        if not self.schema.health_measurement:
            return
        try:
            self.write([line_protocol(self.schema.health_measurement, {"job": job, "host": host}, fields, time_ns)],
                       precision="ns")
        except (InfluxError, ValueError) as e:
            logger.warning("could not record the run in %s: %s", self.schema.health_measurement, e)

    def write(self, lines: Sequence[str], precision: str = "s", database: str | None = None) -> None:
        """Write line protocol in batches; a failed batch raises, earlier ones stay.

        ``precision`` is the unit of the timestamps: ``s`` (scores) or ``ns``. ``database`` writes to
        another database (bucket, with Flux) than the configured one, as Chronograf's annotations need.
        """
        for first in range(0, len(lines), WRITE_BATCH_LINES):
            batch = lines[first:first + WRITE_BATCH_LINES]
            if self.dialect == "flux":
                self._flux_write(batch, precision, database or self.connection.bucket)
            else:
                self._request("POST", "/write", fields={"db": database or self._database, "precision": precision},
                              body="\n".join(batch).encode("utf-8"))

    # ------------------------------------------------------------ v1 HTTP

    @property
    def _database(self) -> str:
        return self.connection.database or self.connection.bucket or ""

    def _auth_headers(self) -> dict[str, str]:
        c = self.connection
        if c.username:
            pair = f"{c.username}:{c.password or ''}".encode("utf-8")
            return {"Authorization": "Basic " + base64.b64encode(pair).decode("ascii")}
        if c.token:
            return {"Authorization": f"Token {c.token}"}
        return {}

    def _influxql(self, query: str, lost: list[str] | None = None) -> list[dict]:
        logger.debug("InfluxQL: %s", query)
        response = self._request("POST", "/query", fields={
            "db": self._database, "q": query, "epoch": "s", "chunked": "true", "chunk_size": "10000"})
        try:
            return parse_influxql(response.data, lost)
        except InfluxError as e:
            raise self._explain(str(e)) from None
        except ValueError as e:
            raise InfluxError(f"InfluxDB at {self.url} sent a response that is not JSON: {e}") from None

    def _retry(self, operation: Callable[[], T]) -> T:
        """Run an operation, trying transient failures again with exponential backoff.

        Writes are safe to repeat: the same points land on the same keys.
        """
        retries = self.connection.retries
        for attempt in range(retries + 1):
            try:
                return operation()
            except InfluxError as e:
                if not e.transient or attempt == retries:
                    raise
                delay = self.connection.backoff_s * 2 ** attempt
                logger.warning("%s; trying again in %gs (%d of %d)", e, delay, attempt + 1, retries)
                time.sleep(delay)
        raise AssertionError("unreachable")

    def _request(self, method: str, path: str, fields: dict | None = None, body: bytes | None = None):
        url = self.connection.url + path
        if fields:
            url += "?" + urllib.parse.urlencode(fields)

        def once():
            try:
                response = self._http.request(method, url, body=body)
            except urllib3.exceptions.HTTPError as e:
                raise self._unreachable(e) from None
            if response.status >= 400:
                raise self._http_error(response.status, response.data.decode("utf-8", "replace"))
            return response

        return self._retry(once)

    def _unreachable(self, error: Exception) -> InfluxError:
        reason = getattr(error, "reason", None) or error
        return InfluxError(
            f"cannot reach InfluxDB at {self.url} ({type(reason).__name__}); "
            f"check INFLUX_URL or --url, the network, and that the server is running",
            transient=True,
        )

    def _http_error(self, status: int, text: str) -> InfluxError:
        if status in (401, 403):
            return InfluxError(
                f"InfluxDB at {self.url} refused the credentials (HTTP {status}); "
                f"check INFLUX_TOKEN, or INFLUX_USERNAME and INFLUX_PASSWORD"
            )
        try:
            message = json.loads(text).get("error") or json.loads(text).get("message") or text
        except (ValueError, AttributeError):
            message = text
        error = self._explain(f"HTTP {status}: {message.strip()[:300]}")
        error.transient = status >= 500 or status == 429
        return error

    def _explain(self, message: str) -> InfluxError:
        lowered = message.lower()
        if "database not found" in lowered or "bucket" in lowered and "not found" in lowered:
            name = self.connection.bucket if self.dialect == "flux" else self._database
            which = "INFLUX_BUCKET or --bucket" if self.dialect == "flux" else "INFLUX_DATABASE or --database"
            return InfluxError(f"InfluxDB at {self.url} has no database or bucket {name!r}; check {which}")
        return InfluxError(f"InfluxDB at {self.url} failed: {message}")

    # ------------------------------------------------------------ Flux

    def _open_flux(self) -> None:
        from influxdb_client import InfluxDBClient

        c = self.connection
        if not (c.token and c.org and c.bucket):
            raise InfluxError(
                f"InfluxDB at {self.url} speaks Flux, which needs INFLUX_TOKEN, INFLUX_ORG and INFLUX_BUCKET; "
                f"set them, or use --api influxql with INFLUX_DATABASE"
            )
        self._flux_client = InfluxDBClient(url=c.url, token=c.token, org=c.org, timeout=int(c.timeout_s * 1000))

    def _flux(self, query: str, **params) -> list[dict]:
        from influxdb_client.client._base import _BaseQueryApi
        from influxdb_client.domain import Identifier, ModelProperty, ObjectExpression
        from influxdb_client.rest import ApiException

        params = flux_params(self.schema, bucket=self.connection.bucket, **params)
        # influxdb-client sends each parameter as its own ``option name = value``, but the queries read
        # them as ``params.name``, so send them as one record option named ``params``.
        record = ObjectExpression("ObjectExpression", [
            ModelProperty("Property", Identifier("Identifier", key), _BaseQueryApi._parm_to_extern_ast(value))
            for key, value in params.items() if value is not None
        ])
        logger.debug("Flux: %s", query)

        def once():
            try:
                return self._flux_client.query_api().query(query, params={"params": record})
            except ApiException as e:
                raise self._api_error(e) from None
            except urllib3.exceptions.HTTPError as e:
                raise self._unreachable(e) from None

        return [row.values for table in self._retry(once) for row in table.records]

    def _flux_write(self, batch: Sequence[str], precision: str, bucket: str) -> None:
        from influxdb_client import WritePrecision
        from influxdb_client.client.write_api import SYNCHRONOUS
        from influxdb_client.rest import ApiException

        def once():
            try:
                with self._flux_client.write_api(write_options=SYNCHRONOUS) as writer:
                    writer.write(bucket=bucket, org=self.connection.org, record=list(batch),
                                 write_precision=WritePrecision.NS if precision == "ns" else WritePrecision.S)
            except ApiException as e:
                raise self._api_error(e) from None
            except urllib3.exceptions.HTTPError as e:
                raise self._unreachable(e) from None

        self._retry(once)

    def _api_error(self, e) -> InfluxError:
        body = e.body.decode("utf-8", "replace") if isinstance(e.body, bytes) else (e.body or e.reason or "")
        if e.status == 404 and "could not find bucket" in body:
            # How a Flux query words a missing bucket; writes say 'bucket "x" not found', which _explain knows.
            return self._explain("bucket not found")
        return self._http_error(e.status or 0, body)
