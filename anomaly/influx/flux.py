"""The Flux dialect: InfluxDB 2.x and Cloud (and 1.9+ with Flux enabled) through influxdb-client.

InfluxDB 1.8's Flux (0.65) predates the schema package (0.88) that lists the sensors; use InfluxQL there,
as ``--api auto`` does for every 1.x.

Every value goes into a query as a bind parameter (``params.name``); only column names are written
into the text, as Flux has no dynamic column access. The query text is made by pure functions, so it
can be tested alone; ``Flux`` sends it. influxdb-client is imported only when a Flux database is used.

Answers are read whole as annotated CSV by pandas' C parser (``flux_frame``), not record by record through
the client's FluxRecord objects: a training read of a 200-sensor chunk over 90 days is 1.7 million rows.
"""

from __future__ import annotations

import csv
import functools
import io
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd
import urllib3
from pandas.api.extensions import take

from anomaly.influx.influxql import influxql_deletes, parse_influxql
from anomaly.settings import Connection, Schema
from influx_interact import MISSING, Database, InfluxError

if TYPE_CHECKING:
    from influxdb_client import InfluxDBClient

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------- query text


def flux_string(value: str) -> str:
    """A Flux string literal of ``value``: backslash, quote and ``${`` (interpolation) escaped; every other
    character, newline and non-ASCII ones included, may stand as it is (Flux spec, String literals)."""
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


def sensor_params(sensor_ids: Sequence[str]) -> dict[str, str]:
    """A chunk's sensor ids as the parameters its sensor filter compares with: ``sensor0``, ``sensor1``, ..."""
    return {f"sensor{i}": sensor_id for i, sensor_id in enumerate(sensor_ids)}


def _any_of(column: str, values: Sequence[str]) -> str:
    """``column`` equal to one of ``values`` (Flux expressions), as comparisons joined with ``or``.

    InfluxDB's planner pushes a filter down to storage only when its predicate is comparisons of a column with
    a literal, joined with ``and``/``or``; ``contains()`` is a call, so every point of the range is read and
    then filtered (influxdata/flux#3546, influxdata/influxdb#23951). A member of a record in scope, such as
    ``params.sensor0``, is replaced by its literal before planning since Flux 0.68 ("Resolve member
    expressions", influxdata/flux#2728), below the 0.88 this dialect needs, so the values can stay parameters.
    """
    if not values:
        raise ValueError("a filter on a list of values needs at least one value")
    return " or ".join(f"{column} == {value}" for value in values)


def _flux_query(
    schema: Schema,
    *steps: str,
    sensors: int,
    stop: bool = True,
    field: str | None = "r._field == params.field",
    where: bool = True,
) -> str:
    """The shape every query here shares: bucket, range, measurement (and field), the --where tags, the
    chunk's ``sensors`` (``sensor_params``); then ``steps``, in which ``{tag}`` stands for the quoted sensor tag
    key."""
    tag = flux_string(schema.sensor_tag)
    measurement = "r._measurement == params.measurement" + (f" and {field}" if field else "")
    chunk = _any_of(f"r[{tag}]", [f"params.sensor{i}" for i in range(sensors)])
    lines = [
        "from(bucket: params.bucket)",
        f"  |> range(start: params.start{', stop: params.stop' if stop else ''})",
        f"  |> filter(fn: (r) => {measurement})",
        _flux_tag_filters(schema) if where else "",
        f"  |> filter(fn: (r) => {chunk})",
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
def flux_means(schema: Schema, sensors: int) -> str:
    return _flux_query(
        schema,
        "group(columns: [{tag}])",
        'aggregateWindow(every: params.every, fn: mean, createEmpty: false, timeSrc: "_start")',
        'keep(columns: ["_time", "_value", {tag}])',
        sensors=sensors,
    )


def flux_labels(schema: Schema, sensors: int) -> str:
    return _flux_query(
        schema,
        "filter(fn: (r) => r._value == true)",
        "group(columns: [{tag}])",
        'aggregateWindow(every: params.every, fn: count, createEmpty: false, timeSrc: "_start")',
        'keep(columns: ["_time", "_value", {tag}])',
        sensors=sensors,
        field="r._field == params.label",
    )


def flux_last_scored(schema: Schema, sensors: int, stop: bool = False) -> str:
    return _flux_query(
        schema,
        "last()",
        'keep(columns: ["_time", "_value", {tag}])',
        sensors=sensors,
        stop=stop,
        field='r._field == "loss"',
        where=False,
    )


# Each sensor's newest point: the last of each series, then the latest of a sensor's series by _time. A sensor
# has several series when another tag differs; group() keeps rows in the order its tables came (series key
# order), not in time order, so last() after it would give the point of whichever series comes last.
_NEWEST_PER_SENSOR = ("last()", "group(columns: [{tag}])", 'top(n: 1, columns: ["_time"])')


def flux_last_reading(schema: Schema, sensors: int) -> str:
    return _flux_query(
        schema, *_NEWEST_PER_SENSOR, 'keep(columns: ["_time", "_value", {tag}])', sensors=sensors, stop=False
    )


def flux_group_tags(schema: Schema, sensors: int, key: str) -> str:
    group = flux_string(key)
    return _flux_query(
        schema,
        f"filter(fn: (r) => exists r[{group}])",
        *_NEWEST_PER_SENSOR,
        f"keep(columns: [{{tag}}, {group}])",
        sensors=sensors,
        stop=False,
    )


def flux_anomaly_counts(schema: Schema, sensors: int) -> str:
    return _flux_query(
        schema,
        "filter(fn: (r) => r._value == true)",
        "count()",
        'keep(columns: ["_value", {tag}])',
        sensors=sensors,
        stop=False,
        field='r._field == "anomaly"',
        where=False,
    )


def flux_missing_counts(schema: Schema, sensors: int) -> str:
    return _flux_query(
        schema,
        "filter(fn: (r) => r._value == params.kind)",
        "group(columns: [{tag}])",
        "count()",
        'keep(columns: ["_value", {tag}])',
        sensors=sensors,
        stop=False,
        field='r._field == "kind"',
        where=False,
    )


def score_columns(schema: Schema) -> list[str]:
    """The fields ``read_scores`` reads back, in its frames' column order."""
    return ["loss", "threshold", "anomaly", schema.field, "score"]


def flux_scores(schema: Schema, sensors: int) -> str:
    fields = [flux_string(f) for f in score_columns(schema)]
    return _flux_query(
        schema,
        f"filter(fn: (r) => {_any_of('r._field', fields)})",
        'pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")',
        f'keep(columns: ["_time", {{tag}}, {", ".join(fields)}])',
        sensors=sensors,
        field=None,
        where=False,
    )


# ---------------------------------------------------------------- answers


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


def params_option(params: Mapping[str, Any]) -> dict[str, Any]:
    """Bind parameters as influxdb-client's ``params`` argument: one record option named ``params``.

    influxdb-client sends each parameter as its own ``option name = value``, but the queries read them as
    ``params.name``. Its public ``params`` takes no record (a dict becomes an array of its keys) and it has no
    public way to turn a value into a literal, so its own private conversion is used; test_flux.py's
    parameter tests catch a change. None stands for a parameter not given.
    """
    from influxdb_client.client._base import _BaseQueryApi
    from influxdb_client.domain import Identifier, ModelProperty, ObjectExpression

    record = ObjectExpression(
        "ObjectExpression",
        [
            ModelProperty("Property", Identifier("Identifier", key), _BaseQueryApi._parm_to_extern_ast(value))
            for key, value in params.items()
            if value is not None
        ],
    )
    return {"params": record}


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
        frame = self._flux(flux_sensors(self.schema), start=ALL_TIME, measurement=self.schema.measurement)
        return set(frame["_value"].dropna()) if "_value" in frame else set()

    def read_means(
        self, sensor_ids: Sequence[str], start: pd.Timestamp, stop: pd.Timestamp, interval: pd.Timedelta
    ) -> dict[str, pd.Series]:
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
    ) -> dict[str, pd.Series]:
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
    ) -> dict[str, pd.Series]:
        frame = self._chunk(
            functools.partial(flux_last_scored, stop=until is not None),
            sensor_ids,
            start=since,
            stop=until,
            measurement=self.schema.output_measurement,
        )
        return series_by_tag(frame, self.schema.sensor_tag)

    def _last_readings(self, sensor_ids: Sequence[str], since: pd.Timestamp) -> dict[str, pd.Series]:
        frame = self._chunk(
            flux_last_reading,
            sensor_ids,
            start=since,
            measurement=self.schema.measurement,
            field=self.schema.field,
        )
        return series_by_tag(frame, self.schema.sensor_tag)

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
        return frames_by_tag(frame, self.schema.sensor_tag, score_columns(self.schema))

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
