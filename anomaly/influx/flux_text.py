"""The Flux dialect's query text and its bind parameters, made by pure functions so that they can be tested alone.

Every value goes into a query as a bind parameter (``params.name``); only column names are written into the text,
as Flux has no dynamic column access. The parameters travel as one record option, ``params``, built here from
influxdb-client's public AST classes (``params_option``). ``anomaly.influx.flux`` sends the queries;
``anomaly.influx.flux_csv`` reads the answers.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from anomaly.settings import Schema


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


def flux_scores(schema: Schema, sensors: int) -> str:
    fields = [flux_string(f) for f in schema.score_fields]
    return _flux_query(
        schema,
        f"filter(fn: (r) => {_any_of('r._field', fields)})",
        'pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")',
        f'keep(columns: ["_time", {{tag}}, {", ".join(fields)}])',
        sensors=sensors,
        field=None,
        where=False,
    )


# ---------------------------------------------------------------- bind parameters


def params_option(params: Mapping[str, Any]) -> dict[str, Any]:
    """Bind parameters as influxdb-client's ``params`` argument: one record option named ``params``, which the
    queries read as ``params.name``. None stands for a parameter not given.

    The client turns each entry of ``params`` into its own ``option name = value`` and has no record value; it
    passes an AST expression it is given as it is, so the record is built here from its public AST classes
    (``influxdb_client.domain``). test_flux.py's parameter tests read back what the server received.
    """
    from influxdb_client.domain import Identifier, ModelProperty, ObjectExpression

    properties = [
        ModelProperty("Property", Identifier("Identifier", key), flux_literal(value))
        for key, value in params.items()
        if value is not None
    ]
    return {"params": ObjectExpression("ObjectExpression", properties)}


def flux_literal(value: str | bool | int | float | datetime.datetime | datetime.timedelta) -> Any:
    """A value as a Flux AST literal: text, boolean, integer, float; a time (with a zone) as an RFC3339 time in
    UTC to the nanosecond; a duration, not negative, in nanoseconds.

    Raises ``ValueError`` for a time without a zone or a negative duration, ``TypeError`` for any other value.
    """
    from influxdb_client.domain import (
        BooleanLiteral,
        DateTimeLiteral,
        Duration,
        DurationLiteral,
        FloatLiteral,
        IntegerLiteral,
        StringLiteral,
    )

    if isinstance(value, str):
        return StringLiteral("StringLiteral", value)
    if isinstance(value, bool):  # before int: a bool is an int to Python
        return BooleanLiteral("BooleanLiteral", value)
    if isinstance(value, int):
        return IntegerLiteral("IntegerLiteral", str(value))
    if isinstance(value, float):
        return FloatLiteral("FloatLiteral", value)
    if isinstance(value, datetime.datetime):
        stamp = pd.Timestamp(value)
        if stamp.tzinfo is None:
            raise ValueError(f"a time sent to InfluxDB needs a zone: {value}")
        stamp = stamp.tz_convert("UTC")
        fraction = stamp.microsecond * 1000 + stamp.nanosecond
        return DateTimeLiteral("DateTimeLiteral", f"{stamp:%Y-%m-%dT%H:%M:%S}.{fraction:09d}Z")
    if isinstance(value, datetime.timedelta):
        nanoseconds = pd.Timedelta(value).value
        if nanoseconds < 0:
            raise ValueError(f"a duration sent to InfluxDB must not be negative: {value}")
        return DurationLiteral("DurationLiteral", [Duration("Duration", nanoseconds, "ns")])
    raise TypeError(f"no Flux literal for {type(value).__name__} {value!r}")
