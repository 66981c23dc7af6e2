"""Transient server errors are tried again with backoff; errors that cannot succeed are not; requests from two
threads at once each keep a connection.

A real influxd cannot be made to answer 503 on cue, so this uses a small local HTTP server that
answers like InfluxDB's v1 API with a scripted sequence of statuses.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pandas as pd
import pytest

import influx_interact
from anomaly.connection import Connection
from anomaly.settings import Schema
from influx_interact import InfluxError


class Scripted(BaseHTTPRequestHandler):
    statuses: ClassVar[list[int]] = []
    seen: ClassVar[list[str]] = []
    requests: ClassVar[list[tuple[str, bytes]]] = []

    def _answer(self):
        path = self.path.split("?")[0]
        self.seen.append(path)
        self.requests.append((self.path, self.rfile.read(int(self.headers.get("Content-Length") or 0))))
        status = self.statuses.pop(0) if self.statuses and path != "/ping" else 204
        body = b'{"error":"try later"}' if status >= 400 else b""
        self.send_response(status)
        self.send_header("X-Influxdb-Version", "1.8.10")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Scripted)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    Scripted.seen = []
    Scripted.requests = []
    yield httpd, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def connect(url):
    return influx_interact.connect(Connection(url=url, api="auto", database="d", retries=3, backoff_s=0.01), Schema())


@pytest.mark.parametrize("statuses, attempts", [([503, 502], 3), ([429], 2), ([500, 500, 500], 4)])
def test_transient_errors_are_tried_again(server, statuses, attempts, caplog):
    _, url = server
    Scripted.statuses = list(statuses)
    with connect(url) as db:
        db.write(["m,uniqueID=a v=1 1"])
    assert Scripted.seen == ["/ping", *["/write"] * attempts]
    assert len([r for r in caplog.records if "trying again" in r.message]) == attempts - 1


def test_transient_errors_give_up_after_the_retries(server):
    _, url = server
    Scripted.statuses = [503] * 5
    with connect(url) as db, pytest.raises(InfluxError, match="HTTP 503") as error:
        db.write(["m,uniqueID=a v=1 1"])
    assert error.value.transient and Scripted.seen.count("/write") == 4


@pytest.mark.parametrize("status", [400, 401, 403, 404])
def test_errors_that_cannot_succeed_are_not_repeated(server, status):
    _, url = server
    Scripted.statuses = [status]
    with connect(url) as db, pytest.raises(InfluxError):
        db.read_means(
            ["a"], pd.Timestamp("2026-01-01", tz="UTC"), pd.Timestamp("2026-01-02", tz="UTC"), pd.Timedelta(minutes=15)
        )
    assert Scripted.seen == ["/ping", "/query"]


def test_record_run_writes_numbers_as_floats_in_nanoseconds(server):
    # JOB_HEALTH has held its numbers as floats since its first point: an integer now would be refused.
    _, url = server
    with connect(url) as db:
        db.record_run(
            "sensor_training", "host-1", {"duration_s": 0.25, "sensors": 12, "exit_status": 0}, 1767571200000000001
        )
    assert Scripted.requests[-1] == (
        "/write?db=d&precision=ns",
        b"JOB_HEALTH,host=host-1,job=sensor_training duration_s=0.25,sensors=12.0,exit_status=0.0 1767571200000000001",
    )


class KeptAlive(BaseHTTPRequestHandler):
    """Answers every request with 204 over connections kept open, counting the connections; a write waits
    until another is in flight too, so two writes are sent at once or neither is answered."""

    protocol_version = "HTTP/1.1"
    connections: ClassVar[int] = 0
    both: ClassVar[threading.Barrier] = threading.Barrier(2, timeout=10)

    def setup(self):
        super().setup()
        type(self).connections += 1

    def _answer(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path.startswith("/write"):
            self.both.wait()
        self.send_response(204)
        self.send_header("X-Influxdb-Version", "1.8.10")
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST = _answer

    def log_message(self, *args):
        pass


def test_two_threads_requests_use_two_connections_kept_open():
    """sensor_predict reads the next chunk while it writes this one: both requests go out at once, each on a
    connection the client keeps for the next, not one opened and dropped per request."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), KeptAlive)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    KeptAlive.connections = 0
    try:
        with connect(f"http://127.0.0.1:{httpd.server_address[1]}") as db:
            for _ in range(3):
                writers = [threading.Thread(target=db.write, args=([f"m v={k}"],)) for k in range(2)]
                for writer in writers:
                    writer.start()
                for writer in writers:
                    writer.join()
        assert KeptAlive.connections == 2
    finally:
        httpd.shutdown()
