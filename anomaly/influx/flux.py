"""The Flux dialect: InfluxDB 2.x and Cloud (and 1.9+ with Flux enabled) through influxdb-client.

InfluxDB 1.8's Flux (0.65) predates the schema package (0.88) that lists the sensors; use InfluxQL there,
as ``--api auto`` does for every 1.x.

Every value goes into a query as a bind parameter (``params.name``); only column names are written
into the text, as Flux has no dynamic column access. The query text is made by pure functions, so it
can be tested alone; ``Flux`` sends it. influxdb-client is imported only when a Flux database is used.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd
import urllib3

from anomaly.settings import Connection, Schema
from influx_interact import MISSING, Database, InfluxError

if TYPE_CHECKING:
    from influxdb_client import InfluxDBClient

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------- query text


def flux_string(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("${", "\\${")
    return f'"{escaped}"'


def _flux_tag_filters(schema: Schema) -> str:
    """Tag keys go in as literals (Flux has no dynamic column access); their values are parameters."""
    return "\n".join(
        f"  |> filter(fn: (r) => r[{flux_string(key)}] == params.where{i})" for i, (key, _) in enumerate(schema.where)
    )


def flux_params(schema: Schema, **extra: Any) -> dict[str, Any]:
    params: dict[str, Any] = {f"where{i}": value for i, (_, value) in enumerate(schema.where)}
    params.update(extra)
    return params


def _flux_query(
    schema: Schema,
    *steps: str,
    stop: bool = True,
    field: str | None = "r._field == params.field",
    where: bool = True,
) -> str:
    """The shape every query here shares: bucket, range, measurement (and field), the --where tags, the
    chunk's sensors; then ``steps``, in which ``{tag}`` stands for the quoted sensor tag key."""
    tag = flux_string(schema.sensor_tag)
    measurement = "r._measurement == params.measurement" + (f" and {field}" if field else "")
    lines = [
        "from(bucket: params.bucket)",
        f"  |> range(start: params.start{', stop: params.stop' if stop else ''})",
        f"  |> filter(fn: (r) => {measurement})",
        _flux_tag_filters(schema) if where else "",
        f"  |> filter(fn: (r) => contains(value: r[{tag}], set: params.sensors))",
    ]
    return "\n".join(filter(None, lines + [f"  |> {step.replace('{tag}', tag)}" for step in steps]))


# From this time on, schema.tagValues() lists every sensor the bucket still holds, as InfluxQL's SHOW TAG VALUES
# does (its default start, 30 days ago, would drop a sensor silent for longer).
ALL_TIME = pd.Timestamp(0, tz="UTC")


def flux_sensors(schema: Schema) -> str:
    """The sensor tag's values, in ``_value``, of the measurement's series that match --where and hold a point
    from ``params.start`` on: schema.tagValues(), Flux's counterpart of SHOW TAG VALUES."""
    predicate = " and ".join(
        ["r._measurement == params.measurement"]
        + [f"r[{flux_string(key)}] == params.where{i}" for i, (key, _) in enumerate(schema.where)]
    )
    return "\n".join(
        [
            'import "influxdata/influxdb/schema"',
            "",
            "schema.tagValues(",
            "  bucket: params.bucket,",
            f"  tag: {flux_string(schema.sensor_tag)},",
            f"  predicate: (r) => {predicate},",
            "  start: params.start,",
            ")",
        ]
    )


# group(): one table per sensor even when other tags vary within it, as InfluxQL's GROUP BY gives.
def flux_means(schema: Schema) -> str:
    return _flux_query(
        schema,
        "group(columns: [{tag}])",
        'aggregateWindow(every: params.every, fn: mean, createEmpty: false, timeSrc: "_start")',
        'keep(columns: ["_time", "_value", {tag}])',
    )


def flux_labels(schema: Schema) -> str:
    return _flux_query(
        schema,
        "filter(fn: (r) => r._value == true)",
        "group(columns: [{tag}])",
        'aggregateWindow(every: params.every, fn: count, createEmpty: false, timeSrc: "_start")',
        'keep(columns: ["_time", "_value", {tag}])',
        field="r._field == params.label",
    )


def flux_last_scored(schema: Schema, stop: bool = False) -> str:
    return _flux_query(
        schema,
        "last()",
        'keep(columns: ["_time", "_value", {tag}])',
        stop=stop,
        field='r._field == "loss"',
        where=False,
    )


# Each sensor's newest point: the last of each series, then the latest of a sensor's series by _time. A sensor
# has several series when another tag differs; group() keeps rows in the order its tables came (series key
# order), not in time order, so last() after it would give the point of whichever series comes last.
_NEWEST_PER_SENSOR = ("last()", "group(columns: [{tag}])", 'top(n: 1, columns: ["_time"])')


def flux_last_reading(schema: Schema) -> str:
    return _flux_query(schema, *_NEWEST_PER_SENSOR, 'keep(columns: ["_time", "_value", {tag}])', stop=False)


def flux_group_tags(schema: Schema, key: str) -> str:
    group = flux_string(key)
    return _flux_query(
        schema,
        f"filter(fn: (r) => exists r[{group}])",
        *_NEWEST_PER_SENSOR,
        f"keep(columns: [{{tag}}, {group}])",
        stop=False,
    )


def flux_anomaly_counts(schema: Schema) -> str:
    return _flux_query(
        schema,
        "filter(fn: (r) => r._value == true)",
        "count()",
        'keep(columns: ["_value", {tag}])',
        stop=False,
        field='r._field == "anomaly"',
        where=False,
    )


def flux_missing_counts(schema: Schema) -> str:
    return _flux_query(
        schema,
        "filter(fn: (r) => r._value == params.kind)",
        "group(columns: [{tag}])",
        "count()",
        'keep(columns: ["_value", {tag}])',
        stop=False,
        field='r._field == "kind"',
        where=False,
    )


def score_columns(schema: Schema) -> list[str]:
    """The fields ``read_scores`` reads back, in its frames' column order."""
    return ["loss", "threshold", "anomaly", schema.field, "score"]


def flux_scores(schema: Schema) -> str:
    fields = ", ".join(flux_string(f) for f in score_columns(schema))
    return _flux_query(
        schema,
        f"filter(fn: (r) => contains(value: r._field, set: [{fields}]))",
        'pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")',
        f'keep(columns: ["_time", {{tag}}, {fields}])',
        field=None,
        where=False,
    )


# ---------------------------------------------------------------- answers


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
        sensor_id: pd.Series(
            values[sensor_id], index=pd.to_datetime(times[sensor_id], utc=True), dtype="float64", name=sensor_id
        )
        for sensor_id in times
    }


def record_frames_by_tag(records: Iterable[dict], tag: str, columns: list[str]) -> dict[str, pd.DataFrame]:
    """Pivoted Flux records (dicts with _time, the tag and ``columns``) -> {sensor id: ``columns`` by UTC time}.

    A column no record has (a field never written in the range: pivot makes no column for it) is all NaN.
    """
    rows_by_tag: dict[str, list[dict]] = defaultdict(list)
    for record in records:
        rows_by_tag[record[tag]].append(record)
    return {
        sensor_id: pd.DataFrame(rows)
        .set_index(pd.to_datetime([r["_time"] for r in rows], utc=True))
        .reindex(columns=columns)
        for sensor_id, rows in rows_by_tag.items()
    }


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


# ---------------------------------------------------------------- the client


class Flux(Database):
    """Flux queries and line-protocol writes through influxdb-client, to the configured org and bucket."""

    dialect = "flux"
    store_setting = "INFLUX_BUCKET or --bucket"

    def __init__(self, connection: Connection, schema: Schema):
        super().__init__(connection, schema)
        self._client: InfluxDBClient | None = None

    @property
    def _store(self) -> str:
        return self.connection.bucket or ""

    def open(self) -> None:
        from influxdb_client import InfluxDBClient

        c = self.connection
        if not (c.token and c.org and c.bucket):
            raise InfluxError(
                f"InfluxDB at {self.url} speaks Flux, which needs INFLUX_TOKEN, INFLUX_ORG and INFLUX_BUCKET; "
                f"set them, or use --api influxql with INFLUX_DATABASE"
            )
        self._client = InfluxDBClient(url=c.url, token=c.token, org=c.org, timeout=int(c.timeout_s * 1000))

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
        super().close()

    def _tag_values(self, start: pd.Timestamp, stop: pd.Timestamp) -> set[str | None]:
        records = self._flux(flux_sensors(self.schema), start=ALL_TIME, measurement=self.schema.measurement)
        return {r.get("_value") for r in records}

    def read_means(
        self, sensor_ids: Sequence[str], start: pd.Timestamp, stop: pd.Timestamp, interval: pd.Timedelta
    ) -> dict[str, pd.Series]:
        records = self._flux(
            flux_means(self.schema),
            start=start,
            stop=stop,
            every=interval,
            measurement=self.schema.measurement,
            field=self.schema.field,
            sensors=list(sensor_ids),
        )
        return records_by_tag(records, self.schema.sensor_tag)

    def _label_counts(
        self, sensor_ids: Sequence[str], start: pd.Timestamp, stop: pd.Timestamp, interval: pd.Timedelta
    ) -> dict[str, pd.Series]:
        records = self._flux(
            flux_labels(self.schema),
            start=start,
            stop=stop,
            every=interval,
            measurement=self.schema.measurement,
            label=self.schema.label_field,
            sensors=list(sensor_ids),
        )
        return records_by_tag(records, self.schema.sensor_tag)

    def _last_scores(
        self, sensor_ids: Sequence[str], since: pd.Timestamp, until: pd.Timestamp | None
    ) -> dict[str, pd.Series]:
        records = self._flux(
            flux_last_scored(self.schema, stop=until is not None),
            start=since,
            stop=until,
            measurement=self.schema.output_measurement,
            sensors=list(sensor_ids),
        )
        return records_by_tag(records, self.schema.sensor_tag)

    def _last_readings(self, sensor_ids: Sequence[str], since: pd.Timestamp) -> dict[str, pd.Series]:
        records = self._flux(
            flux_last_reading(self.schema),
            start=since,
            measurement=self.schema.measurement,
            field=self.schema.field,
            sensors=list(sensor_ids),
        )
        return records_by_tag(records, self.schema.sensor_tag)

    def group_tags(self, sensor_ids: Sequence[str], since: pd.Timestamp, key: str) -> dict[str, str]:
        tag = self.schema.sensor_tag
        records = self._flux(
            flux_group_tags(self.schema, key),
            start=since,
            measurement=self.schema.measurement,
            field=self.schema.field,
            sensors=list(sensor_ids),
        )
        return {r[tag]: r[key] for r in records if r.get(tag) is not None and r.get(key)}

    def anomaly_counts(self, sensor_ids: Sequence[str], since: pd.Timestamp) -> dict[str, int]:
        tag = self.schema.sensor_tag
        records = self._flux(
            flux_anomaly_counts(self.schema),
            start=since,
            measurement=self.schema.output_measurement,
            sensors=list(sensor_ids),
        )
        return {r[tag]: int(r["_value"]) for r in records if r.get(tag)}

    def missing_counts(self, sensor_ids: Sequence[str], since: pd.Timestamp) -> dict[str, int]:
        tag = self.schema.sensor_tag
        records = self._flux(
            flux_missing_counts(self.schema),
            start=since,
            measurement=self.schema.output_measurement,
            kind=MISSING,
            sensors=list(sensor_ids),
        )
        return {r[tag]: int(r["_value"]) for r in records if r.get(tag)}

    def read_scores(
        self, sensor_ids: Sequence[str], start: pd.Timestamp, stop: pd.Timestamp
    ) -> dict[str, pd.DataFrame]:
        records = self._flux(
            flux_scores(self.schema),
            start=start,
            stop=stop,
            measurement=self.schema.output_measurement,
            sensors=list(sensor_ids),
        )
        return record_frames_by_tag(records, self.schema.sensor_tag, score_columns(self.schema))

    def _write_batch(self, batch: Sequence[str], precision: str, database: str) -> None:
        from influxdb_client import WritePrecision
        from influxdb_client.client.write_api import SYNCHRONOUS
        from influxdb_client.rest import ApiException

        client = self._opened_client()

        def once() -> None:
            try:
                with client.write_api(write_options=SYNCHRONOUS) as writer:
                    writer.write(
                        bucket=database,
                        org=self.connection.org,
                        record=list(batch),
                        write_precision=WritePrecision.NS if precision == "ns" else WritePrecision.S,
                    )
            except ApiException as e:
                raise self._api_error(e) from None
            except urllib3.exceptions.HTTPError as e:
                raise self._unreachable(e) from None

        self._retry(once)

    def _flux(self, query: str, **params: Any) -> list[dict]:
        from influxdb_client.client._base import _BaseQueryApi
        from influxdb_client.client.flux_csv_parser import FluxQueryException
        from influxdb_client.domain import Identifier, ModelProperty, ObjectExpression
        from influxdb_client.rest import ApiException

        client = self._opened_client()
        params = flux_params(self.schema, bucket=self.connection.bucket, **params)
        # influxdb-client sends each parameter as its own ``option name = value``, but the queries read
        # them as ``params.name``, so send them as one record option named ``params``. Its public ``params``
        # takes no record (a dict becomes an array of its keys) and it has no public way to turn a value into
        # a literal, so its own private conversion is used; test_flux.py's parameter tests catch a change.
        record = ObjectExpression(
            "ObjectExpression",
            [
                ModelProperty("Property", Identifier("Identifier", key), _BaseQueryApi._parm_to_extern_ast(value))
                for key, value in params.items()
                if value is not None
            ],
        )
        logger.debug("Flux: %s", query)

        def once() -> Any:
            try:
                return client.query_api().query(query, params={"params": record})
            except ApiException as e:
                raise self._api_error(e) from None
            except FluxQueryException as e:
                # An error met after the answer began (status 200 sent): InfluxDB ends it with an error table.
                error = self._explain(f"query error: {e.message}")
                error.transient = flux_error_is_transient(e.message)
                raise error from None
            except urllib3.exceptions.HTTPError as e:
                raise self._unreachable(e) from None

        return [row.values for table in self._retry(once) for row in table.records]

    def _opened_client(self) -> InfluxDBClient:
        if self._client is None:
            raise RuntimeError("Flux database used before open(); get it from influx_interact.connect")
        return self._client

    def _api_error(self, e: Any) -> InfluxError:
        body = e.body.decode("utf-8", "replace") if isinstance(e.body, bytes) else (e.body or e.reason or "")
        if e.status == 404 and "could not find bucket" in body:
            # How a Flux query words a missing bucket; writes say 'bucket "x" not found', which _explain knows.
            return self._explain("bucket not found")
        return self._http_error(e.status or 0, body)
