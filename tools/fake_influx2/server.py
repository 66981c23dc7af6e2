"""The imitation's HTTP API, as InfluxDB 2.7 answers it, in a thread of the process that starts it.

``GET /ping``, ``GET /api/v2``, ``POST /api/v2/query`` and ``POST /api/v2/write`` for one org (``my-org``) and
one token (``secret-token``); buckets ``sensors`` and any a test makes. A query is parsed and run over the stored
points (interpreter.py, functions.py, aggregates.py) and answered in annotated CSV; an error before any table as
InfluxDB answers it (JSON ``{"code": ..., "message": ...}``, 400 or 404); a wrong token 401, an unknown
organisation or bucket 404 worded as 2.7 words it for queries and for writes.
"""

from __future__ import annotations

import gzip
import json
import re
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pandas as pd

from tools.fake_influx2.aggregates import PACKAGES
from tools.fake_influx2.functions import UNIVERSE
from tools.fake_influx2.interpreter import Builtin, Context, Interpreter, Record
from tools.fake_influx2.storage import Bucket
from tools.fake_influx2.tables import FluxError, Table, annotated_csv, error_csv

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


def extern_value(node: dict) -> Any:
    """A Flux AST literal, as influxdb-client sends it in ``extern``, as a Python value (a record as a Record)."""
    kind = node["type"]
    if kind in ("StringLiteral", "BooleanLiteral", "FloatLiteral"):
        return node["value"]
    if kind == "IntegerLiteral":
        return int(node["value"])
    if kind == "DateTimeLiteral":
        return pd.Timestamp(node["value"]).tz_convert("UTC")
    if kind == "DurationLiteral":
        return sum(
            (pd.Timedelta(v["magnitude"], unit=_DURATION_UNITS[v["unit"]]) for v in node["values"]), pd.Timedelta(0)
        )
    if kind == "ArrayExpression":
        return [extern_value(element) for element in node["elements"]]
    if kind == "ObjectExpression":
        return Record(
            {p["key"].get("name", p["key"].get("value")): extern_value(p["value"]) for p in node["properties"]}
        )
    raise ValueError(f"unsupported AST node {kind}")


def extern_options(extern: dict | None) -> dict[str, Any]:
    """``option name = value`` statements of the extern file -> {name: value}."""
    options = {}
    for statement in (extern or {}).get("body", []):
        assignment = statement["assignment"]
        options[assignment["id"]["name"]] = extern_value(assignment["init"])
    return options


def run(query: str, bindings: dict[str, Any], buckets: dict[str, Bucket], now: pd.Timestamp) -> list[Table]:
    """The tables a Flux program gives over ``buckets``, ``bindings`` in scope (the extern options)."""
    universe = {name: Builtin(name, function) for name, function in UNIVERSE.items()}
    packages = {path: {n: Builtin(n, f) for n, f in members.items()} for path, members in PACKAGES.items()}
    return Interpreter(Context(buckets, now), universe, packages).run(query, bindings)


class FakeInflux2:
    """Serves org ``my-org`` with token ``secret-token`` and a bucket ``sensors`` (``create_bucket`` makes more).

    ``version`` and ``build`` are the X-Influxdb-* headers (None: not sent) and ``v2_api`` whether GET /api/v2
    lists the v2 routes, so that it can imitate what other products answer there. ``now`` is the time ``now()``
    gives (None: the clock). ``fail_after`` makes the next answer break off with an error table, as InfluxDB ends
    an answer when it meets an error after sending tables. ``gets``, ``queries`` and ``writes`` record requests.

    ``canned_answer``, for the read benchmark only, is sent for every query instead of what it computes.
    """

    def __init__(self) -> None:
        self.buckets = {BUCKET: Bucket(BUCKET)}
        self.version: str | None = "v2.7.10"
        self.build: str | None = "OSS"
        self.v2_api = True
        self.now: pd.Timestamp | None = None
        self.canned_answer: str | None = None
        self.faults: list[tuple[int, str]] = []
        self.gets: list[str] = []
        self.queries: list[dict] = []
        self.writes: list[dict] = []
        self.v1_queries: list[dict] = []
        self.lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.fake = self  # type: ignore[attr-defined]
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def start(self) -> FakeInflux2:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)

    def create_bucket(self, name: str) -> Bucket:
        return self.buckets.setdefault(name, Bucket(name))

    def write(self, lines: list[str], precision: str = "s", bucket: str = BUCKET) -> None:
        """Store line protocol as a write request would, without one (seeding data for a test)."""
        with self.lock:
            self.buckets[bucket].write("\n".join(lines), precision)

    def fail_after(self, tables: int, message: str) -> None:
        """The next query's answer: its first ``tables`` tables, then an error table with ``message``."""
        self.faults.append((tables, message))

    def respond(self, query: str, options: dict[str, Any]) -> str:
        """What a query gets: annotated CSV; raises FluxError for an error InfluxDB sends before any table."""
        if self.canned_answer is not None:
            return self.canned_answer
        now = self.now or pd.Timestamp.now(tz="UTC")
        with self.lock:
            tables = run(query, options, self.buckets, now)
        if self.faults:
            sent, message = self.faults.pop(0)
            return (annotated_csv(tables[:sent]) if sent else "") + error_csv(message)
        return annotated_csv(tables)

    @property
    def query(self) -> dict:
        assert len(self.queries) == 1, f"expected one query, got {len(self.queries)}"
        return self.queries[0]


_DELETE = re.compile(
    r'DELETE FROM "((?:[^"\\]|\\.)*)" WHERE "((?:[^"\\]|\\.)*)" = \'((?:[^\'\\]|\\.)*)\' '
    r"AND time >= '([^']*)' AND time <= '([^']*)'"
)


def _unescape(text: str) -> str:
    """An InfluxQL identifier's or string's text: a backslash takes the next character as it is."""
    return re.sub(r"\\(.)", r"\1", text)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:
        pass

    @property
    def fake(self) -> FakeInflux2:
        return self.server.fake  # type: ignore[attr-defined]

    def _send(self, status: int, body: bytes = b"", content_type: str | None = None) -> None:
        self.send_response(status)
        for name, value in [("X-Influxdb-Build", self.fake.build), ("X-Influxdb-Version", self.fake.version)]:
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
        path = urllib.parse.urlsplit(self.path).path
        self.fake.gets.append(path)
        if path == "/ping":
            self._send(204)
        elif path == "/api/v2" and self.fake.v2_api:
            if self.headers.get("Authorization") != f"Token {TOKEN}":
                self._error(401, "unauthorized", "unauthorized access")
            else:
                self._send(200, json.dumps(V2_ROUTES).encode("utf-8"))
        else:
            self._error(404, "not found", "path not found")

    def do_POST(self) -> None:
        parts = urllib.parse.urlsplit(self.path)
        fields = dict(urllib.parse.parse_qsl(parts.query))
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        if self.headers.get("Authorization") != f"Token {TOKEN}":
            self._error(401, "unauthorized", "unauthorized access")
        elif parts.path == "/query":
            self._v1_query(fields)
        elif fields.get("org") != ORG:
            self._error(404, "not found", f'organization name "{fields.get("org")}" not found')
        elif parts.path == "/api/v2/query":
            self._query(fields, json.loads(body))
        elif parts.path == "/api/v2/write":
            self._write(fields, body)
        else:
            self._error(404, "not found", "path not found")

    def _query(self, fields: dict, request: dict) -> None:
        options = extern_options(request.get("extern"))
        self.fake.queries.append({"fields": fields, "text": request["query"], "options": options})
        try:
            answer = self.fake.respond(request["query"], options)
        except FluxError as e:
            self._error(e.status, e.code, e.message)
            return
        self._send(200, answer.encode("utf-8"), "text/csv; charset=utf-8")

    def _v1_query(self, fields: dict) -> None:
        """InfluxQL on the v1 API, as 2.x answers it for a bucket's DBRP mapping (database = bucket name): the
        DELETE statements the scorer sends (one measurement, one tag value, a closed time range), applied to
        the stored points; any other statement is refused."""
        self.fake.v1_queries.append(fields)
        bucket = self.fake.buckets.get(fields.get("db", ""))
        deletes = [_DELETE.fullmatch(s.strip()) for s in fields.get("q", "").split(";")]
        if bucket is None or not all(deletes):
            self._error(400, "invalid", "the imitation answers DELETE statements on a bucket only")
            return
        with self.fake.lock:
            for found in deletes:
                measurement, tag, value, first, last = found.groups()  # type: ignore[union-attr]
                bucket.delete(
                    _unescape(measurement), (_unescape(tag), _unescape(value)), pd.Timestamp(first), pd.Timestamp(last)
                )
        results = [{"statement_id": i} for i in range(len(deletes))]
        self._send(200, json.dumps({"results": results}).encode("utf-8"))

    def _write(self, fields: dict, body: bytes) -> None:
        self.fake.writes.append({"fields": fields, "body": body.decode("utf-8")})
        bucket = self.fake.buckets.get(fields.get("bucket", ""))
        if bucket is None:
            self._error(404, "not found", f'bucket "{fields.get("bucket")}" not found')
            return
        try:
            with self.fake.lock:
                bucket.write(body.decode("utf-8"), fields.get("precision", "ns"))
        except FluxError as e:
            self._error(e.status, e.code, e.message)
            return
        self._send(204)
