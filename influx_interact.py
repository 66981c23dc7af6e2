"""Everything that talks to InfluxDB: ``connect`` opens a ``Database`` in the server's dialect.

Flux goes through influxdb-client (InfluxDB 2.x, Cloud, 1.9+ with Flux enabled): anomaly/influx/flux.py.
InfluxQL reads and line-protocol writes go over the v1 HTTP API (/query, /write) for InfluxDB 1.x and
3.x, and for 2.x through its DBRP mapping: anomaly/influx/influxql.py. Both dialects aggregate on the
server (mean per interval, bucket time = interval start), fetch a whole chunk of sensors per query, and
raise ``InfluxError`` with a message a person can act on. This module holds what they share: the
operations every caller uses, retries, batched writes, the job-health point and the error messages.
"""

from __future__ import annotations

import abc
import base64
import contextlib
import json
import logging
import numbers
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import ClassVar, TypeVar, cast

import pandas as pd
import urllib3

from anomaly.connection import Connection
from anomaly.influx.line_protocol import line_protocol
from anomaly.settings import Schema

logger = logging.getLogger(__name__)

T = TypeVar("T")
WRITE_BATCH_LINES = 5000
# The kind anomaly.detect writes on each interval the scorer had no reading for (``missing_counts``).
MISSING = "missing"


class InfluxError(RuntimeError):
    """A database problem: unreachable, refused, missing database, bad query. Never holds a secret.

    ``transient`` errors (no connection, time-out, HTTP 5xx or 429) may succeed when tried again.
    """

    def __init__(self, message: str, transient: bool = False):
        super().__init__(message)
        self.transient = transient


def redact(url: str) -> str:
    """The URL without any user:password part, safe for logs."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))


def dialect_for_version(version: str) -> str:
    """InfluxDB 2.x (and Cloud) speak Flux; 1.x and 3.x speak InfluxQL over the v1 API."""
    text = version.lower().lstrip("v")
    return "flux" if text.startswith("2") or "cloud" in text else "influxql"


def dialect_for_routes(status: int, body: bytes) -> str:
    """For a server whose /ping gives no version (InfluxDB Cloud): Flux when GET /api/v2 lists the Flux query
    route, as the v2 API of InfluxDB 2.x and Cloud (TSM) does; InfluxQL for any other answer, as where there is
    no such API or it takes writes only (1.x, 3.x, InfluxDB Cloud Serverless). A refused token is no answer
    here: the first query says so."""
    if status != 200:
        return "influxql"
    try:
        routes = json.loads(body)
    except ValueError:
        return "influxql"
    return "flux" if isinstance(routes, dict) and "query" in routes else "influxql"


@contextlib.contextmanager
def connect(connection: Connection, schema: Schema) -> Iterator[Database]:
    """The database, in the dialect ``connection.api`` names, open for a ``with`` block and closed after it.

    ``auto`` asks the server its version (/ping): 2.x speaks Flux, 1.x and 3.x InfluxQL. InfluxDB Cloud gives
    no version, so without one the server speaks Flux if its v2 API lists the query route (GET /api/v2).
    """
    db = _opened(connection, schema)
    try:
        yield db
    finally:
        db.close()


def _opened(connection: Connection, schema: Schema) -> Database:
    # Imported here, not at the top: the dialects import this module for Database.
    from anomaly.influx.flux import Flux
    from anomaly.influx.influxql import InfluxQL

    dialects: dict[str, type[Database]] = {Flux.dialect: Flux, InfluxQL.dialect: InfluxQL}
    # ``auto`` starts as InfluxQL to ask: every version answers /ping on the v1 API, which InfluxQL speaks.
    db = dialects.get(connection.api, InfluxQL)(connection, schema)
    try:
        if connection.api == "auto":
            dialect = db.server_dialect()
            logger.debug("InfluxDB at %s speaks %s", db.url, dialect)
            if dialect != db.dialect:
                db.close()
                db = dialects[dialect](connection, schema)
        db.open()
    except BaseException:
        db.close()
        raise
    return db


def _as_float(value: float | int | str) -> float | str:
    """Numbers as floats, bools and text as they are."""
    return float(value) if isinstance(value, numbers.Real) and not isinstance(value, bool) else value


class Database(abc.ABC):
    """Reads readings and labels, finds the last scored time, writes scores. Get one from ``connect``.

    A subclass speaks one dialect. ``dialect`` is its name (``flux`` or ``influxql``), ``url`` the
    server's URL without credentials, ``connection`` and ``schema`` the settings it was opened with.
    Every dialect answers /ping over the v1 HTTP API, so the requests to it live here.
    """

    dialect: ClassVar[str]
    # The settings that name the database, for messages.
    store_setting: ClassVar[str]

    def __init__(self, connection: Connection, schema: Schema):
        self.connection = connection
        self.schema = schema
        self.url = redact(connection.url)
        # Two connections: sensor_predict reads the next chunk in a thread while it writes this one.
        self._http = urllib3.PoolManager(
            maxsize=2, timeout=urllib3.Timeout(total=connection.timeout_s), retries=False, headers=self._auth_headers()
        )

    @abc.abstractmethod
    def open(self) -> None:
        """Get ready to talk to the server (``connect`` calls it); InfluxError if a setting is missing."""

    def close(self) -> None:
        self._http.clear()

    @property
    @abc.abstractmethod
    def _store(self) -> str:
        """The database (bucket) read from and written to."""

    # ------------------------------------------------------------ public operations

    def server_version(self) -> str:
        response = self._request("GET", "/ping")
        return response.headers.get("X-Influxdb-Version", "")

    def server_dialect(self) -> str:
        """``flux`` or ``influxql``: by the server's version, or without one by its v2 API's routes."""
        version = self.server_version()
        if version:
            return dialect_for_version(version)
        response = self._request("GET", "/api/v2", refusal_ok=True)
        return dialect_for_routes(response.status, response.data)

    def sensor_ids(self, start: pd.Timestamp, stop: pd.Timestamp) -> list[str]:
        """Every sensor id in the readings measurement (matching --where), sorted, whenever it last wrote and
        whatever field: the series the database holds, not the points of [start, stop), so a sensor silent
        for a while is still listed and reported as such."""
        found = sorted(i for i in self._tag_values(start, stop) if i is not None)
        if not found:
            where = "".join(f", {key}={value!r}" for key, value in self.schema.where)
            logger.warning(
                "nothing to do: no sensor (tag %r%s) in measurement %r of %r at %s; check --measurement, "
                "--sensor-tag, --where and the database",
                self.schema.sensor_tag,
                where,
                self.schema.measurement,
                self._store,
                self.url,
            )
        return found

    @abc.abstractmethod
    def _tag_values(self, start: pd.Timestamp, stop: pd.Timestamp) -> set[str | None]:
        """The sensor tag's values in the readings measurement's series (matching --where), of all time."""

    @abc.abstractmethod
    def read_means(
        self, sensor_ids: Sequence[str], start: pd.Timestamp, stop: pd.Timestamp, interval: pd.Timedelta
    ) -> Mapping[str, pd.Series]:
        """Mean reading per interval for each sensor, indexed by interval start; sensors with none are absent."""

    def labelled_intervals(
        self, sensor_ids: Sequence[str], start: pd.Timestamp, stop: pd.Timestamp, interval: pd.Timedelta
    ) -> dict[str, pd.DatetimeIndex]:
        """Starts of the intervals that hold at least one point whose label field is true."""
        counts = self._label_counts(sensor_ids, start, stop, interval)
        return {sensor_id: cast(pd.DatetimeIndex, c.index[c > 0]) for sensor_id, c in counts.items()}

    @abc.abstractmethod
    def _label_counts(
        self, sensor_ids: Sequence[str], start: pd.Timestamp, stop: pd.Timestamp, interval: pd.Timedelta
    ) -> Mapping[str, pd.Series]:
        """Points whose label field is true, per sensor and interval (indexed by interval start)."""

    def last_scored(
        self, sensor_ids: Sequence[str], since: pd.Timestamp, until: pd.Timestamp | None = None
    ) -> dict[str, pd.Timestamp]:
        """Time of each sensor's newest score at or after ``since`` (and before ``until``); sensors never
        scored there are absent."""
        return self._last_scores(sensor_ids, since, until)

    @abc.abstractmethod
    def _last_scores(
        self, sensor_ids: Sequence[str], since: pd.Timestamp, until: pd.Timestamp | None
    ) -> dict[str, pd.Timestamp]:
        """The time of each sensor's newest loss at or after ``since`` and before ``until`` (None: no end)."""

    def last_reading(self, sensor_ids: Sequence[str], since: pd.Timestamp) -> dict[str, pd.Timestamp]:
        """Time of each sensor's newest raw reading at or after ``since``: how fresh its data is."""
        return self._last_readings(sensor_ids, since)

    @abc.abstractmethod
    def _last_readings(self, sensor_ids: Sequence[str], since: pd.Timestamp) -> dict[str, pd.Timestamp]:
        """The time of each sensor's newest reading at or after ``since``."""

    @abc.abstractmethod
    def group_tags(self, sensor_ids: Sequence[str], since: pd.Timestamp, key: str) -> dict[str, str]:
        """Each sensor's value of tag ``key`` (equipment, site) in its readings since ``since``; with several
        values, the one of its newest reading. Sensors without the tag are absent."""

    @abc.abstractmethod
    def anomaly_counts(self, sensor_ids: Sequence[str], since: pd.Timestamp) -> dict[str, int]:
        """Flagged windows per sensor at or after ``since``; sensors with none are absent."""

    @abc.abstractmethod
    def missing_counts(self, sensor_ids: Sequence[str], since: pd.Timestamp) -> dict[str, int]:
        """Intervals reported missing (kind ``missing``: no reading for longer than the scorer allows) per
        sensor at or after ``since``, whether or not they were flagged; sensors with none are absent."""

    @abc.abstractmethod
    def read_scores(
        self, sensor_ids: Sequence[str], start: pd.Timestamp, stop: pd.Timestamp
    ) -> dict[str, pd.DataFrame]:
        """What sensor_predict.py wrote: per sensor a frame by window end with loss, threshold, anomaly, the
        reading (named like --field) and score (NaN where a point has none: written before the field was)."""

    @abc.abstractmethod
    def delete_scores(self, ranges: Mapping[str, Sequence[tuple[pd.Timestamp, pd.Timestamp]]]) -> None:
        """Delete each sensor's points in the output measurement whose time lies in one of its (first, last)
        ranges, both ends included (a backfill clears what it does not write over: sensor_predict.py)."""

    def record_run(self, job: str, host: str, fields: Mapping[str, float | int | str], time_ns: int) -> None:
        """One point per job run in the health measurement, for dashboards and a deadman alert; nanosecond
        time, so runs that end in the same second (shards on one host) each keep their point.

        Numbers are written as floats, integers too: the measurement has held them as floats since its
        first point, and a field written with another type is refused. Best effort: a failure is logged,
        never raised, since the run's own work is already done.
        """
        if not self.schema.health_measurement:
            return
        values = {key: _as_float(value) for key, value in fields.items()}
        try:
            self.write(
                [line_protocol(self.schema.health_measurement, {"job": job, "host": host}, values, time_ns)],
                precision="ns",
            )
        except (InfluxError, ValueError) as e:
            logger.warning("could not record the run in %s: %s", self.schema.health_measurement, e)

    def write(self, lines: Sequence[str], precision: str = "s", database: str | None = None) -> None:
        """Write line protocol in batches; a failed batch raises, earlier ones stay.

        ``precision`` is the unit of the timestamps: ``s`` (scores) or ``ns``. ``database`` writes to
        another database (bucket, with Flux) than the configured one, as Chronograf's annotations need.
        """
        for first in range(0, len(lines), WRITE_BATCH_LINES):
            self._write_batch(lines[first : first + WRITE_BATCH_LINES], precision, database or self._store)

    @abc.abstractmethod
    def _write_batch(self, batch: Sequence[str], precision: str, database: str) -> None:
        """One request's worth of ``write``."""

    # ------------------------------------------------------------ requests and errors

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
                delay = self.connection.backoff_s * 2**attempt
                logger.warning("%s; trying again in %gs (%d of %d)", e, delay, attempt + 1, retries)
                time.sleep(delay)
        raise AssertionError("unreachable")

    def _auth_headers(self) -> dict[str, str]:
        c = self.connection
        if c.username:
            pair = f"{c.username}:{c.password or ''}".encode()
            return {"Authorization": "Basic " + base64.b64encode(pair).decode("ascii")}
        if c.token:
            return {"Authorization": f"Token {c.token}"}
        return {}

    def _request(
        self,
        method: str,
        path: str,
        fields: dict[str, str] | None = None,
        body: bytes | None = None,
        refusal_ok: bool = False,
    ) -> urllib3.BaseHTTPResponse:
        """One request to the HTTP API (v1, or /api/v2 to tell the dialect), tried again while it fails for a
        passing reason. ``refusal_ok`` returns an answer with a 4xx status instead of raising it."""
        url = self.connection.url + path
        if fields:
            url += "?" + urllib.parse.urlencode(fields)

        def once() -> urllib3.BaseHTTPResponse:
            try:
                response = self._http.request(method, url, body=body)
            except urllib3.exceptions.HTTPError as e:
                raise self._unreachable(e) from None
            if response.status >= 400 and not (refusal_ok and response.status < 500):
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
        if "database not found" in lowered or ("bucket" in lowered and "not found" in lowered):
            return InfluxError(
                f"InfluxDB at {self.url} has no database or bucket {self._store!r}; check {self.store_setting}"
            )
        return InfluxError(f"InfluxDB at {self.url} failed: {message}")
