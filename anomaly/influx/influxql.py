"""The InfluxQL dialect: InfluxDB 1.x and 3.x, and 2.x through its DBRP mapping, over the v1 HTTP API.

Queries go to /query (chunked JSON answers), writes to /write. The query text and the parsing of the
answers are pure functions, so they can be tested alone; ``InfluxQL`` sends them.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from anomaly.influx.readings import Readings
from anomaly.settings import Schema
from influx_interact import MISSING, Database, InfluxError

logger = logging.getLogger(__name__)

# 1e300 as an InfluxQL float literal (it has no exponent notation): no reading is that large, but a device's
# "no value" sentinel such as 1.8e308 can be, and two of them overflow a mean.
ABSURD_READING = "1" + "0" * 300 + ".0"


# ---------------------------------------------------------------- query text


def influxql_string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def influxql_ident(name: str) -> str:
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def influxql_time(stamp: pd.Timestamp) -> str:
    return "'" + stamp.tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%SZ") + "'"


def _influxql_filters(
    schema: Schema,
    sensor_ids: Sequence[str],
    start: pd.Timestamp | None,
    stop: pd.Timestamp | None,
    with_where: bool = True,
) -> str:
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


def influxql_means(
    schema: Schema,
    sensor_ids: Sequence[str],
    start: pd.Timestamp,
    stop: pd.Timestamp,
    interval: pd.Timedelta,
    sane_only: bool = False,
) -> str:
    """``sane_only`` leaves out readings beyond +-ABSURD_READING, so that no mean can overflow."""
    field = influxql_ident(schema.field)
    sane = f" AND {field} > -{ABSURD_READING} AND {field} < {ABSURD_READING}" if sane_only else ""
    return (
        f"SELECT mean({field}) FROM {influxql_ident(schema.measurement)} "
        f"WHERE {_influxql_filters(schema, sensor_ids, start, stop)}{sane} "
        f"GROUP BY time({int(interval.total_seconds())}s), {influxql_ident(schema.sensor_tag)} fill(none)"
    )


def influxql_labels(
    schema: Schema, sensor_ids: Sequence[str], start: pd.Timestamp, stop: pd.Timestamp, interval: pd.Timedelta
) -> str:
    label = influxql_ident(schema.label_field or "")
    return (
        f"SELECT count({label}) FROM {influxql_ident(schema.measurement)} "
        f"WHERE {label} = true AND {_influxql_filters(schema, sensor_ids, start, stop)} "
        f"GROUP BY time({int(interval.total_seconds())}s), {influxql_ident(schema.sensor_tag)} fill(none)"
    )


def influxql_last_scored(
    schema: Schema, sensor_ids: Sequence[str], since: pd.Timestamp, until: pd.Timestamp | None = None
) -> str:
    return (
        f'SELECT last("loss") FROM {influxql_ident(schema.output_measurement)} '
        f"WHERE {_influxql_filters(schema, sensor_ids, since, until, with_where=False)} "
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


def influxql_missing_counts(schema: Schema, sensor_ids: Sequence[str], since: pd.Timestamp) -> str:
    return (
        f'SELECT count("kind") FROM {influxql_ident(schema.output_measurement)} '
        f'WHERE "kind" = {influxql_string(MISSING)} '
        f"AND {_influxql_filters(schema, sensor_ids, since, None, with_where=False)} "
        f"GROUP BY {influxql_ident(schema.sensor_tag)}"
    )


def influxql_scores(schema: Schema, sensor_ids: Sequence[str], start: pd.Timestamp, stop: pd.Timestamp) -> str:
    return (
        f"SELECT {', '.join(influxql_ident(f) for f in schema.score_fields)} "
        f"FROM {influxql_ident(schema.output_measurement)} "
        f"WHERE {_influxql_filters(schema, sensor_ids, start, stop, with_where=False)} "
        f"GROUP BY {influxql_ident(schema.sensor_tag)}"
    )


# DELETE statements sent in one request: a backfill may clear a range per outage of every sensor of a chunk.
DELETE_BATCH = 100


def influxql_deletes(schema: Schema, ranges: Mapping[str, Sequence[tuple[pd.Timestamp, pd.Timestamp]]]) -> list[str]:
    """Queries of ``DELETE_BATCH`` DELETE statements each, one statement per sensor and (first, last) range of
    its points in the output measurement, both ends included."""
    statements = [
        f"DELETE FROM {influxql_ident(schema.output_measurement)} WHERE {influxql_ident(schema.sensor_tag)} = "
        f"{influxql_string(sensor_id)} AND time >= {influxql_time(first)} AND time <= {influxql_time(last)}"
        for sensor_id, spans in ranges.items()
        for first, last in spans
    ]
    return ["; ".join(statements[i : i + DELETE_BATCH]) for i in range(0, len(statements), DELETE_BATCH)]


# ---------------------------------------------------------------- answers


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
                target = merged.setdefault(
                    key,
                    {
                        "name": series.get("name"),
                        "tags": series.get("tags") or {},
                        "columns": series["columns"],
                        "values": [],
                    },
                )
                target["values"].extend(series.get("values") or [])
    return list(merged.values())


def series_by_tag(series_list: Iterable[dict], tag: str) -> Readings:
    """InfluxQL series grouped by the sensor tag -> {sensor id: values by UTC time (epoch seconds in)}."""
    kept = [(s["tags"].get(tag), s["values"]) for s in series_list if s["tags"].get(tag) is not None and s["values"]]
    # Every sensor's times and values converted at once: a chunk holds thousands of sensors.
    index = pd.to_datetime([row[0] for _, values in kept for row in values], unit="s", utc=True)
    found = np.array([row[1] for _, values in kept for row in values], dtype="float64")
    return Readings([s for s, _ in kept], index, found, [len(values) for _, values in kept])


def newest_by_tag(series_list: Iterable[dict], tag: str) -> dict[str, pd.Timestamp]:
    """InfluxQL series grouped by the sensor tag -> {sensor id: the time of its newest point (epoch seconds
    in)}; no Series per sensor, since a tick asks this of thousands of sensors."""
    newest: dict[str, int] = {}
    for s in series_list:
        sensor_id = s["tags"].get(tag)
        if sensor_id is not None and s["values"]:
            newest[sensor_id] = max(newest.get(sensor_id, -(2**63)), *(row[0] for row in s["values"]))
    return {sensor_id: pd.Timestamp(at, unit="s", tz="UTC") for sensor_id, at in newest.items()}


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


def newest_tag_values(series_list: Iterable[dict], tag: str, key: str) -> dict[str, str]:
    """Series grouped by the sensor tag and ``key``, holding each one's last point -> {sensor id: the
    ``key`` value of its newest point}; series without either tag are left out."""
    newest: dict[str, tuple[int, str]] = {}
    for s in series_list:
        sensor_id, value = s["tags"].get(tag), s["tags"].get(key)
        if sensor_id and value and s["values"] and s["values"][0][0] >= newest.get(sensor_id, (-1, ""))[0]:
            newest[sensor_id] = (s["values"][0][0], value)
    return {sensor_id: value for sensor_id, (_, value) in newest.items()}


# ---------------------------------------------------------------- the client


class InfluxQL(Database):
    """InfluxQL over /query and line protocol over /write, to the configured database (or DBRP bucket)."""

    dialect = "influxql"
    store_setting = "INFLUX_DATABASE or --database"

    @property
    def _store(self) -> str:
        return self.connection.database or self.connection.bucket or ""

    def open(self) -> None:
        """Nothing to prepare: every request carries the credentials."""

    def _tag_values(self, start: pd.Timestamp, stop: pd.Timestamp) -> set[str | None]:
        series = self._influxql(influxql_sensors(self.schema))
        return {row[1] for s in series for row in s["values"]}

    def read_means(
        self, sensor_ids: Sequence[str], start: pd.Timestamp, stop: pd.Timestamp, interval: pd.Timedelta
    ) -> Mapping[str, pd.Series]:
        lost: list[str] = []
        series = self._influxql(influxql_means(self.schema, sensor_ids, start, stop, interval), lost)
        if lost:
            logger.warning(
                "InfluxDB could not send the mean of some intervals (%s): readings near +-1.8e308 "
                "overflowed it; reading again without readings beyond +-1e300",
                lost[0][:200],
            )
            series = self._influxql(influxql_means(self.schema, sensor_ids, start, stop, interval, sane_only=True))
        return series_by_tag(series, self.schema.sensor_tag)

    def _label_counts(
        self, sensor_ids: Sequence[str], start: pd.Timestamp, stop: pd.Timestamp, interval: pd.Timedelta
    ) -> Mapping[str, pd.Series]:
        query = influxql_labels(self.schema, sensor_ids, start, stop, interval)
        return series_by_tag(self._influxql(query), self.schema.sensor_tag)

    def _last_scores(
        self, sensor_ids: Sequence[str], since: pd.Timestamp, until: pd.Timestamp | None
    ) -> dict[str, pd.Timestamp]:
        query = influxql_last_scored(self.schema, sensor_ids, since, until)
        return newest_by_tag(self._influxql(query), self.schema.sensor_tag)

    def _last_readings(self, sensor_ids: Sequence[str], since: pd.Timestamp) -> dict[str, pd.Timestamp]:
        query = influxql_last_reading(self.schema, sensor_ids, since)
        return newest_by_tag(self._influxql(query), self.schema.sensor_tag)

    def group_tags(self, sensor_ids: Sequence[str], since: pd.Timestamp, key: str) -> dict[str, str]:
        series = self._influxql(influxql_group_tags(self.schema, sensor_ids, since, key))
        return newest_tag_values(series, self.schema.sensor_tag, key)

    def anomaly_counts(self, sensor_ids: Sequence[str], since: pd.Timestamp) -> dict[str, int]:
        series = self._influxql(influxql_anomaly_counts(self.schema, sensor_ids, since))
        return {s["tags"][self.schema.sensor_tag]: int(s["values"][0][1]) for s in series if s["values"]}

    def missing_counts(self, sensor_ids: Sequence[str], since: pd.Timestamp) -> dict[str, int]:
        series = self._influxql(influxql_missing_counts(self.schema, sensor_ids, since))
        return {s["tags"][self.schema.sensor_tag]: int(s["values"][0][1]) for s in series if s["values"]}

    def read_scores(
        self, sensor_ids: Sequence[str], start: pd.Timestamp, stop: pd.Timestamp
    ) -> dict[str, pd.DataFrame]:
        series = self._influxql(influxql_scores(self.schema, sensor_ids, start, stop))
        return frames_by_tag(series, self.schema.sensor_tag)

    def delete_scores(self, ranges: Mapping[str, Sequence[tuple[pd.Timestamp, pd.Timestamp]]]) -> None:
        for query in influxql_deletes(self.schema, ranges):
            self._influxql(query)

    def _write_batch(self, batch: Sequence[str], precision: str, database: str) -> None:
        self._request(
            "POST", "/write", fields={"db": database, "precision": precision}, body="\n".join(batch).encode("utf-8")
        )

    def _influxql(self, query: str, lost: list[str] | None = None) -> list[dict]:
        logger.debug("InfluxQL: %s", query)
        response = self._request(
            "POST",
            "/query",
            fields={"db": self._store, "q": query, "epoch": "s", "chunked": "true", "chunk_size": "10000"},
        )
        try:
            return parse_influxql(response.data, lost)
        except InfluxError as e:
            raise self._explain(str(e)) from None
        except ValueError as e:
            raise InfluxError(f"InfluxDB at {self.url} sent a response that is not JSON: {e}") from None
