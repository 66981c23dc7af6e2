"""The Flux dialect: InfluxDB 2.x and Cloud (and 1.9+ with Flux enabled) through influxdb-client.

InfluxDB 1.8's Flux (0.65) predates the schema package (0.88) that lists the sensors; use InfluxQL there,
as ``--api auto`` does for every 1.x.

``Flux`` sends the queries of ``anomaly.influx.flux_text`` with their values as bind parameters and reads the
answers with ``anomaly.influx.flux_csv``; influxdb-client is imported only when a Flux database is used.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd
import urllib3

from anomaly.connection import Connection
from anomaly.influx.flux_csv import (
    FluxAnswerError,
    flux_error_is_transient,
    flux_frame,
    frames_by_tag,
    newest_by_tag,
    series_by_tag,
    values_by_tag,
)
from anomaly.influx.flux_text import (
    ALL_TIME,
    flux_anomaly_counts,
    flux_group_tags,
    flux_labels,
    flux_last_reading,
    flux_last_scored,
    flux_means,
    flux_missing_counts,
    flux_params,
    flux_scores,
    flux_sensors,
    params_option,
    sensor_params,
)
from anomaly.influx.influxql import influxql_deletes, parse_influxql
from anomaly.settings import Schema
from influx_interact import MISSING, Database, InfluxError

if TYPE_CHECKING:
    from influxdb_client import InfluxDBClient

logger = logging.getLogger(__name__)


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
        frame = self._flux(flux_sensors(self.schema), start=ALL_TIME, measurement=self.schema.measurement)
        return set(frame["_value"].dropna()) if "_value" in frame else set()

    def read_means(
        self, sensor_ids: Sequence[str], start: pd.Timestamp, stop: pd.Timestamp, interval: pd.Timedelta
    ) -> Mapping[str, pd.Series]:
        frame = self._chunk(
            flux_means,
            sensor_ids,
            start=start,
            stop=stop,
            every=interval,
            measurement=self.schema.measurement,
            field=self.schema.field,
        )
        return series_by_tag(frame, self.schema.sensor_tag)

    def _label_counts(
        self, sensor_ids: Sequence[str], start: pd.Timestamp, stop: pd.Timestamp, interval: pd.Timedelta
    ) -> Mapping[str, pd.Series]:
        frame = self._chunk(
            flux_labels,
            sensor_ids,
            start=start,
            stop=stop,
            every=interval,
            measurement=self.schema.measurement,
            label=self.schema.label_field,
        )
        return series_by_tag(frame, self.schema.sensor_tag)

    def _last_scores(
        self, sensor_ids: Sequence[str], since: pd.Timestamp, until: pd.Timestamp | None
    ) -> dict[str, pd.Timestamp]:
        frame = self._chunk(
            functools.partial(flux_last_scored, stop=until is not None),
            sensor_ids,
            start=since,
            stop=until,
            measurement=self.schema.output_measurement,
        )
        return newest_by_tag(frame, self.schema.sensor_tag)

    def _last_readings(self, sensor_ids: Sequence[str], since: pd.Timestamp) -> dict[str, pd.Timestamp]:
        frame = self._chunk(
            flux_last_reading,
            sensor_ids,
            start=since,
            measurement=self.schema.measurement,
            field=self.schema.field,
        )
        return newest_by_tag(frame, self.schema.sensor_tag)

    def group_tags(self, sensor_ids: Sequence[str], since: pd.Timestamp, key: str) -> dict[str, str]:
        frame = self._chunk(
            functools.partial(flux_group_tags, key=key),
            sensor_ids,
            start=since,
            measurement=self.schema.measurement,
            field=self.schema.field,
        )
        return values_by_tag(frame, self.schema.sensor_tag, key)

    def anomaly_counts(self, sensor_ids: Sequence[str], since: pd.Timestamp) -> dict[str, int]:
        frame = self._chunk(flux_anomaly_counts, sensor_ids, start=since, measurement=self.schema.output_measurement)
        return {s: int(n) for s, n in values_by_tag(frame, self.schema.sensor_tag, "_value").items()}

    def missing_counts(self, sensor_ids: Sequence[str], since: pd.Timestamp) -> dict[str, int]:
        frame = self._chunk(
            flux_missing_counts, sensor_ids, start=since, measurement=self.schema.output_measurement, kind=MISSING
        )
        return {s: int(n) for s, n in values_by_tag(frame, self.schema.sensor_tag, "_value").items()}

    def read_scores(
        self, sensor_ids: Sequence[str], start: pd.Timestamp, stop: pd.Timestamp
    ) -> dict[str, pd.DataFrame]:
        frame = self._chunk(flux_scores, sensor_ids, start=start, stop=stop, measurement=self.schema.output_measurement)
        return frames_by_tag(frame, self.schema.sensor_tag, self.schema.score_fields)

    def delete_scores(self, ranges: Mapping[str, Sequence[tuple[pd.Timestamp, pd.Timestamp]]]) -> None:
        """InfluxQL's DELETE on the v1 API, which InfluxDB 2.x takes from a token that may write the bucket (each
        bucket has a DBRP mapping of its name): the predicates of /api/v2/delete cannot name every sensor id
        (influxdb#23014: parentheses; quotes)."""
        for query in influxql_deletes(self.schema, ranges):
            response = self._request("POST", "/query", fields={"db": self._store, "q": query})
            try:
                parse_influxql(response.data)
            except InfluxError as e:
                raise self._explain(str(e)) from None

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

    def _chunk(self, query: Callable[[Schema, int], str], sensor_ids: Sequence[str], **params: Any) -> pd.DataFrame:
        """``query`` (a text builder taking the schema and the number of sensors) for a chunk of sensors; no
        sensor: no query, as no row could match."""
        if not sensor_ids:
            return pd.DataFrame()
        return self._flux(query(self.schema, len(sensor_ids)), **params, **sensor_params(sensor_ids))

    def _flux(self, query: str, **params: Any) -> pd.DataFrame:
        from influxdb_client.rest import ApiException

        client = self._opened_client()
        option = params_option(flux_params(self.schema, bucket=self.connection.bucket, **params))
        logger.debug("Flux: %s", query)

        def once() -> pd.DataFrame:
            try:
                response = client.query_api().query_raw(query, params=option)
                try:
                    body = response.read()
                finally:
                    response.close()
                return flux_frame(body)
            except ApiException as e:
                raise self._api_error(e) from None
            except FluxAnswerError as e:
                # An error met after the answer began (status 200 sent): InfluxDB ends it with an error table.
                error = self._explain(f"query error: {e}")
                error.transient = flux_error_is_transient(str(e))
                raise error from None
            except urllib3.exceptions.HTTPError as e:
                raise self._unreachable(e) from None

        return self._retry(once)

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
