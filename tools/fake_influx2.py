"""An imitation of InfluxDB 2.7's HTTP API in a thread, for the Flux tests (tests/test_flux.py) and the Flux
read benchmark (bench/bench_flux_read.py): no InfluxDB 2.x server can run on this machine.

It serves ``GET /ping``, ``GET /api/v2``, ``POST /api/v2/query`` and ``POST /api/v2/write`` for one org
(``my-org``), one bucket (``sensors``) and one token (``secret-token``), and the v1 API's ``POST /query`` for
InfluxQL ``DELETE`` statements only (recorded, never applied; any other statement is refused). It records
what influxdb-client sends (Flux text, the ``extern`` options that carry the bind parameters, line protocol,
org, bucket, precision) and answers as InfluxDB 2.7 does: annotated CSV with ``#datatype``/``#group``/``#default`` rows,
CRLF line ends and one table per sensor; 204 for a write; JSON errors ``{"code": ..., "message": ...}`` for a
wrong token (401), an unknown bucket (404, worded as 2.7 words it for queries and for writes) and a query
that uses an identifier its options do not define (400).

A query gets the CSV it is given (``answers``, ``answer``) or, with ``points``, what the few Flux steps the
project's queries use compute over those points (``run_flux``); any other step is refused (HTTP 400), so a
query the imitation does not understand fails instead of passing unchecked.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import re
import threading
import urllib.parse
from collections import defaultdict
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pandas as pd

TOKEN = "secret-token"
ORG = "my-org"
BUCKET = "sensors"
# A query that matches nothing: InfluxDB sends no table at all.
EMPTY_CSV = "\r\n"


# Part of what GET /api/v2 lists on InfluxDB 2.x and Cloud (TSM): the top-level routes of the v2 API.
V2_ROUTES = {
    "authorizations": "/api/v2/authorizations",
    "buckets": "/api/v2/buckets",
    "orgs": "/api/v2/orgs",
    "query": {
        "self": "/api/v2/query",
        "ast": "/api/v2/query/ast",
        "analyze": "/api/v2/query/analyze",
        "suggestions": "/api/v2/query/suggestions",
    },
    "write": "/api/v2/write",
}


_DURATION_UNITS = {"ns": "ns", "us": "us", "ms": "ms", "s": "s", "m": "min", "h": "h", "d": "D", "w": "W"}


def extern_value(node: dict):
    """A Flux AST literal, as influxdb-client sends it in ``extern``, as a Python value."""
    kind = node["type"]
    if kind == "StringLiteral":
        return node["value"]
    if kind == "DateTimeLiteral":
        return pd.Timestamp(node["value"])
    if kind == "DurationLiteral":
        return sum(
            (pd.Timedelta(v["magnitude"], unit=_DURATION_UNITS[v["unit"]]) for v in node["values"]), pd.Timedelta(0)
        )
    if kind == "ArrayExpression":
        return [extern_value(element) for element in node["elements"]]
    if kind == "ObjectExpression":
        return {p["key"].get("name", p["key"].get("value")): extern_value(p["value"]) for p in node["properties"]}
    raise ValueError(f"unsupported AST node {kind}")


def extern_options(extern: dict | None) -> dict:
    """``option name = value`` statements of the extern file -> {name: value}."""
    options = {}
    for statement in (extern or {}).get("body", []):
        assignment = statement["assignment"]
        options[assignment["id"]["name"]] = extern_value(assignment["init"])
    return options


def undefined_parameter(query: str, options: dict) -> str | None:
    """Flux's compile error for the first ``params.x`` the options do not define, like InfluxDB's."""
    for match in re.finditer(r"\bparams\.(\w+)", query):
        line = query.count("\n", 0, match.start()) + 1
        column = match.start() - (query.rfind("\n", 0, match.start()) + 1) + 1
        if "params" not in options:
            return f"error @{line}:{column}-{line}:{column + 6}: undefined identifier params"
        if match.group(1) not in options["params"]:
            end = column + len(match.group(0))
            return f"type error @{line}:{column}-{line}:{end}: record is missing label {match.group(1)}"
    return None


# ---------------------------------------------------------------- a subset of Flux, over stored points
#
# For the queries whose answer depends on how Flux orders and groups rows (which point is a sensor's newest,
# which sensors a bucket holds), canned CSV would only restate the code: the fake server can instead keep
# points and run the few steps those queries use, as InfluxDB does. Any other step is refused (HTTP 400).


@dataclasses.dataclass(frozen=True)
class Point:
    """A stored point; its series is its measurement, tags and field."""

    time: str
    value: float
    tags: tuple[tuple[str, str], ...]
    measurement: str = "READINGS"
    field: str = "val_num"


@dataclasses.dataclass
class Table:
    """A Flux table: its group key and its rows, in the order Flux keeps them."""

    key: tuple[str, ...]
    rows: list[dict]


def stored_series(points: list[Point], start: pd.Timestamp, stop: pd.Timestamp) -> list[Table]:
    """``from() |> range()``: one table per series in series key order, as the storage engine sends them, each
    in time order."""
    series: dict[tuple, list[dict]] = defaultdict(list)
    for p in points:
        time = pd.Timestamp(p.time)
        if start <= time < stop:
            row = {"_start": start, "_stop": stop, "_time": time, "_value": p.value}
            series[(p.measurement, p.tags, p.field)].append(
                {**row, "_measurement": p.measurement, "_field": p.field, **dict(p.tags)}
            )
    return [
        Table(("_start", "_stop", "_measurement", "_field", *(key for key, _ in tags)), sorted(rows, key=by_time))
        for (_, tags, _), rows in sorted(series.items())
    ]


def by_time(row: dict) -> pd.Timestamp:
    return row["_time"]


_STRING = r'"(?:[^"\\]|\\.)*"'
_COLUMN = rf"r\.(\w+)|r\[({_STRING})\]"


def flux_value(text: str, params: dict):
    """A string, boolean or array literal, or a ``params.x``, of the queries' text as a Python value."""
    text = text.strip()
    if text.startswith("params."):
        return params[text.removeprefix("params.")]
    if text in ("true", "false"):
        return text == "true"
    if text.startswith("["):
        return [flux_value(item, params) for item in re.findall(_STRING, text)]
    if re.fullmatch(_STRING, text):
        return re.sub(r"\\(.)", r"\1", text[1:-1])
    raise NotImplementedError(f"the fake server does not imitate the value {text}")


def column_name(text: str) -> str:
    """``r.x`` or ``r["x"]`` -> x."""
    match = re.fullmatch(_COLUMN, text.strip())
    if match is None:
        raise NotImplementedError(f"the fake server does not imitate the column {text}")
    return match.group(1) or flux_value(match.group(2), {})


def predicate(body: str, params: dict) -> Callable[[dict], bool]:
    """``(r) => body`` where body joins with ``or`` alternatives that join with ``and`` (which binds tighter, as
    in Flux) terms ``column == value`` and ``exists column``."""

    def term(text: str) -> Callable[[dict], bool]:
        if match := re.fullmatch(r"exists (.+)", text):
            column = column_name(match.group(1))
            return lambda r: r.get(column) is not None
        if match := re.fullmatch(r"(.+) == (.+)", text):
            column, value = column_name(match.group(1)), flux_value(match.group(2), params)
            return lambda r: r.get(column) == value
        raise NotImplementedError(f"the fake server does not imitate the predicate {text}")

    alternatives = [[term(text) for text in part.split(" and ")] for part in body.split(" or ")]
    return lambda r: any(all(t(r) for t in terms) for terms in alternatives)


_AGGREGATES: dict[str, Callable[[list], float | int]] = {"mean": lambda values: sum(values) / len(values), "count": len}


def aggregate_window(table: Table, every: pd.Timedelta, aggregate: Callable[[list], float | int]) -> Table:
    """``aggregateWindow(every:, fn:, createEmpty: false, timeSrc: "_start")`` of one table: its rows in windows
    aligned to the Unix epoch (cut at the range's start), one row per window that holds any, at the window's
    start, with the table's group key."""
    windows: dict[pd.Timestamp, list[dict]] = defaultdict(list)
    for row in table.rows:
        windows[max(row["_time"].floor(every), row["_start"])].append(row)
    return Table(
        table.key,
        [
            {"_time": start, "_value": aggregate([r["_value"] for r in rows]), **{c: rows[0][c] for c in table.key}}
            for start, rows in sorted(windows.items())
        ],
    )


def flux_step(step: str, tables: list[Table], params: dict) -> list[Table]:
    """One ``|> step`` of a pipeline, as Flux runs it: ``group()`` keeps each row's order of arrival (tables in
    turn), not time order; ``last()`` takes each table's last row."""
    if match := re.fullmatch(r"filter\(fn: \(r\) => (.+)\)", step):
        keep = predicate(match.group(1), params)
        kept = [Table(t.key, [row for row in t.rows if keep(row)]) for t in tables]
        return [t for t in kept if t.rows]
    if match := re.fullmatch(r"group\((?:columns: (\[.*\]))?\)", step):
        key = tuple(flux_value(match.group(1), params)) if match.group(1) else ()
        groups: dict[tuple, Table] = {}
        for table in tables:
            for row in table.rows:
                groups.setdefault(tuple(row.get(c) for c in key), Table(key, [])).rows.append(row)
        return list(groups.values())
    if match := re.fullmatch(
        r'aggregateWindow\(every: (\S+), fn: (\w+), createEmpty: false, timeSrc: "_start"\)', step
    ):
        every, aggregate = flux_value(match.group(1), params), _AGGREGATES[match.group(2)]
        return [aggregate_window(t, every, aggregate) for t in tables]
    if step == "last()":
        return [Table(t.key, t.rows[-1:]) for t in tables]
    if match := re.fullmatch(r"top\(n: (\d+), columns: (\[.*\])\)", step):
        n, columns = int(match.group(1)), flux_value(match.group(2), params)
        return [Table(t.key, sorted(t.rows, key=lambda r: [r[c] for c in columns], reverse=True)[:n]) for t in tables]
    if match := re.fullmatch(r"keep\(columns: (\[.*\])\)", step):
        columns = flux_value(match.group(1), params)
        return [
            Table(tuple(c for c in t.key if c in columns), [{c: r[c] for c in columns if c in r} for r in t.rows])
            for t in tables
        ]
    raise NotImplementedError(f"the fake server does not imitate the step {step}")


def run_flux(query: str, params: dict, points: list[Point]) -> list[Table]:
    """The tables one of the project's queries gives over ``points``: a pipeline from ``from()``, or a call of
    ``schema.tagValues()``."""
    now = pd.Timestamp.now(tz="UTC")
    if query.startswith('import "influxdata/influxdb/schema"'):
        return tag_values(query, params, points, now)
    source, window, *steps = query.split("\n  |> ")
    match = re.fullmatch(r"range\(start: params\.start(, stop: params\.stop)?\)", window)
    if source != "from(bucket: params.bucket)" or match is None:
        raise NotImplementedError(f"the fake server does not imitate {source} |> {window}")
    tables = stored_series(points, params["start"], params["stop"] if match.group(1) else now)
    for step in steps:
        tables = flux_step(step, tables, params)
    return tables


def tag_values(query: str, params: dict, points: list[Point], now: pd.Timestamp) -> list[Table]:
    """``schema.tagValues()``: one table with the distinct values of ``tag`` in the series that match the
    predicate and have a point in [start, stop), sorted; stop defaults to now, start to 30 days before."""
    arguments = dict(
        line.strip().rstrip(",").split(": ", 1) for line in query.splitlines() if re.match(r"  \w+: ", line)
    )
    tag = flux_value(arguments["tag"], params)
    keep = predicate(arguments["predicate"].removeprefix("(r) => "), params)
    start = flux_value(arguments["start"], params) if "start" in arguments else now - pd.Timedelta(days=30)
    stop = flux_value(arguments["stop"], params) if "stop" in arguments else now
    rows = [row for t in stored_series(points, start, stop) for row in t.rows if keep(row)]
    values = sorted({row[tag] for row in rows if row.get(tag) is not None})
    return [Table((), [{"_value": value} for value in values])] if values else []


_DATATYPES = {bool: "boolean", int: "long", float: "double", str: "string", pd.Timestamp: "dateTime:RFC3339"}


def annotated_csv(tables: list[Table]) -> str:
    """Tables as InfluxDB 2.7 sends them: annotations and a header before each table, an empty line after."""
    if not tables:
        return EMPTY_CSV
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    for number, table in enumerate(tables):
        columns = list(table.rows[0])
        writer.writerow(["#datatype", "string", "long", *(_DATATYPES[type(table.rows[0][c])] for c in columns)])
        writer.writerow(["#group", "false", "false", *("true" if c in table.key else "false" for c in columns)])
        writer.writerow(["#default", "_result", "", *([""] * len(columns))])
        writer.writerow(["", "result", "table", *columns])
        writer.writerows(["", "", number, *(csv_cell(row[c]) for c in columns)] for row in table.rows)
        writer.writerow([])
    return out.getvalue()


def csv_cell(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, pd.Timestamp):
        return value.strftime("%Y-%m-%dT%H:%M:%SZ")
    return str(value)


class FakeInflux2:
    """Serves one org (``my-org``) with one bucket (``sensors``) and token ``secret-token``.

    ``answers`` are the CSV the next queries get, one each, and ``answer`` the CSV every query gets after them;
    with ``points``, queries are answered from them instead (``run_flux``). ``version`` and ``build`` are the
    X-Influxdb-* headers (None: not sent) and ``v2_api`` whether GET /api/v2 lists the v2 routes, so that it
    can imitate what other products answer there. ``gets``, ``queries``, ``writes`` and ``v1_queries``
    record the requests.
    """

    def __init__(self) -> None:
        self.answers: list[str] = []
        self.answer = EMPTY_CSV
        self.points: list[Point] | None = None
        self.version: str | None = "v2.7.10"
        self.build: str | None = "OSS"
        self.v2_api = True
        self.gets: list[str] = []
        self.queries: list[dict] = []
        self.writes: list[dict] = []
        self.v1_queries: list[dict] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.fake = self
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def start(self) -> FakeInflux2:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)

    @property
    def query(self) -> dict:
        assert len(self.queries) == 1, f"expected one query, got {len(self.queries)}"
        return self.queries[0]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def _send(self, status: int, body: bytes = b"", content_type: str | None = None) -> None:
        fake = self.server.fake
        self.send_response(status)
        for name, value in [("X-Influxdb-Build", fake.build), ("X-Influxdb-Version", fake.version)]:
            if value is not None:
                self.send_header(name, value)
        if status != 204:
            self.send_header("Content-Type", content_type or "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if status != 204:
            self.wfile.write(body)

    def _error(self, status: int, code: str, message: str) -> None:
        self._send(status, json.dumps({"code": code, "message": message}).encode("utf-8"))

    def do_GET(self) -> None:
        fake = self.server.fake
        path = urllib.parse.urlsplit(self.path).path
        fake.gets.append(path)
        if path == "/ping":
            self._send(204)
        elif path == "/api/v2" and fake.v2_api:
            if self.headers.get("Authorization") != f"Token {TOKEN}":
                self._error(401, "unauthorized", "unauthorized access")
            else:
                self._send(200, json.dumps(V2_ROUTES).encode("utf-8"))
        else:
            self._error(404, "not found", "path not found")

    def do_POST(self) -> None:
        fake = self.server.fake
        parts = urllib.parse.urlsplit(self.path)
        fields = dict(urllib.parse.parse_qsl(parts.query))
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.headers.get("Authorization") != f"Token {TOKEN}":
            self._error(401, "unauthorized", "unauthorized access")
        elif parts.path == "/query":
            self._v1_query(fake, fields)
        elif fields.get("org") != ORG:
            self._error(404, "not found", f'organization name "{fields.get("org")}" not found')
        elif parts.path == "/api/v2/query":
            self._query(fake, fields, json.loads(body))
        elif parts.path == "/api/v2/write":
            self._write(fake, fields, body)
        else:
            self._error(404, "not found", "path not found")

    def _query(self, fake: FakeInflux2, fields: dict, request: dict) -> None:
        options = extern_options(request.get("extern"))
        fake.queries.append({"fields": fields, "text": request["query"], "options": options})
        undefined = undefined_parameter(request["query"], options)
        if undefined:
            self._error(400, "invalid", undefined)
            return
        bucket = options.get("params", {}).get("bucket")
        if bucket != BUCKET:
            self._error(404, "not found", f'failed to initialize execute state: could not find bucket "{bucket}"')
            return
        if fake.points is not None:
            try:
                answer = annotated_csv(run_flux(request["query"], options["params"], fake.points))
            except NotImplementedError as e:
                self._error(400, "invalid", str(e))
                return
        else:
            answer = fake.answers.pop(0) if fake.answers else fake.answer
        self._send(200, answer.encode("utf-8"), "text/csv; charset=utf-8")

    def _v1_query(self, fake: FakeInflux2, fields: dict) -> None:
        """InfluxQL on the v1 API, as 2.x answers it for a bucket's virtual DBRP mapping (database = bucket)."""
        fake.v1_queries.append(fields)
        statements = [s.strip() for s in fields.get("q", "").split(";")]
        if fields.get("db") != BUCKET or not all(s.startswith("DELETE FROM ") for s in statements):
            self._error(400, "invalid", "the imitation answers DELETE statements on its bucket only")
        else:
            results = [{"statement_id": i} for i in range(len(statements))]
            self._send(200, json.dumps({"results": results}).encode("utf-8"))

    def _write(self, fake: FakeInflux2, fields: dict, body: bytes) -> None:
        fake.writes.append({"fields": fields, "body": body.decode("utf-8")})
        if fields.get("bucket") != BUCKET:
            self._error(404, "not found", f'bucket "{fields.get("bucket")}" not found')
        else:
            self._send(204)
