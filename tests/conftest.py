"""Shared fixtures: a real InfluxDB 1.x server on a free loopback port, the imitation of InfluxDB 2.x, and the jobs
run as processes.

A test that takes the ``influx`` fixture runs against InfluxDB 1.6 (InfluxQL); marked ``both_dialects``, it runs
a second time against the imitation of InfluxDB 2.7 (Flux, tools/fake_influx2), with the same assertions.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402

from tools import local_influxd  # noqa: E402
from tools.fake_influx2 import ORG, TOKEN, FakeInflux2  # noqa: E402

_databases = itertools.count()
DIALECTS = ("influxql", "flux")


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "both_dialects: run against InfluxDB 1.6 (InfluxQL) and the imitation of InfluxDB 2.7 (Flux)"
    )


def pytest_generate_tests(metafunc):
    """Every test that takes ``influx`` gets the dialect as a parameter (so that the module-scoped fixtures built
    on it are made once per dialect): InfluxQL, and Flux too for a test marked ``both_dialects``."""
    if "influx" in metafunc.fixturenames:
        both = metafunc.definition.get_closest_marker("both_dialects") is not None
        metafunc.parametrize("influx", DIALECTS if both else DIALECTS[:1], indirect=True, scope="module")


@pytest.fixture(scope="session", autouse=True)
def _session_state_home(tmp_path_factory):
    """The scoring job keeps its state under $XDG_STATE_HOME (anomaly.settings.state_dir): in the tests,
    never under the real home, nor in a $STATE_DIRECTORY of the machine's."""
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("STATE_DIRECTORY", raising=False)
        patch.setenv("XDG_STATE_HOME", str(tmp_path_factory.mktemp("state-home")))
        yield


@pytest.fixture(autouse=True)
def state_dir(monkeypatch, tmp_path_factory) -> Path:
    """This test's state directory: every job a test runs keeps its state here, so no test sees another's
    (the fixtures trained once per module keep the session's). Returns where the scoring job puts it."""
    home = tmp_path_factory.mktemp("state-home")
    monkeypatch.setenv("XDG_STATE_HOME", str(home))
    return home / "sensor-anomaly"


@pytest.fixture(scope="session")
def influxd(tmp_path_factory):
    """One throwaway influxd for the session; each test takes a database of its own."""
    server = local_influxd.LocalInfluxd(tmp_path_factory.mktemp("influxd")).start()
    yield server
    server.stop()


@pytest.fixture
def database(influxd):
    name = f"test_{next(_databases)}"
    local_influxd.query(influxd.url, f'CREATE DATABASE "{name}"')
    return name


class InfluxQLServer:
    """The session's influxd, spoken to in InfluxQL: a store is a database."""

    dialect = "influxql"
    store_variable = "INFLUX_DATABASE"

    def __init__(self, url: str):
        self.url = url

    def create(self, name: str) -> str:
        local_influxd.query(self.url, f'CREATE DATABASE "{name}"')
        return name

    def env(self, name: str) -> dict[str, str]:
        return {"INFLUX_URL": self.url, "INFLUX_DATABASE": name}

    def write(self, name: str, lines: list[str]) -> None:
        local_influxd.write(self.url, name, lines)

    def points(self, name: str, measurement: str, fields: list[str], **tags: str) -> pd.DataFrame:
        """``fields`` of the points of ``measurement`` with ``tags``, by UTC time (second precision), read with
        InfluxQL straight from the server: a row per time any of them has, NaN or None where one has none."""
        where = " AND ".join(f'"{key}" = {_influxql_string(value)}' for key, value in tags.items())
        columns = ", ".join(f'"{field}"' for field in fields)
        query = f'SELECT {columns} FROM "{measurement}"' + (f" WHERE {where}" if where else "")
        found = rows(self.url, name, query)
        values = found[0][1] if found else []
        frame = pd.DataFrame(values, columns=["time", *fields])
        return frame.set_index(pd.DatetimeIndex(pd.to_datetime(frame.pop("time"), unit="s", utc=True)))


class FluxServer:
    """The imitation of InfluxDB 2.7 (tools/fake_influx2), spoken to in Flux: a store is a bucket."""

    dialect = "flux"
    store_variable = "INFLUX_BUCKET"

    def __init__(self, fake: FakeInflux2):
        self.fake = fake
        self.url = fake.url

    def create(self, name: str) -> str:
        self.fake.create_bucket(name)
        return name

    def env(self, name: str) -> dict[str, str]:
        return {"INFLUX_URL": self.url, "INFLUX_TOKEN": TOKEN, "INFLUX_ORG": ORG, "INFLUX_BUCKET": name}

    def write(self, name: str, lines: list[str]) -> None:
        self.fake.write(lines, "s", name)

    def points(self, name: str, measurement: str, fields: list[str], **tags: str) -> pd.DataFrame:
        """As InfluxQLServer.points, read from the imitation's storage, not through Flux."""
        frame = self.fake.buckets[name].frame(measurement, fields, **tags)
        frame.index = frame.index.floor("s")
        return frame


def _influxql_string(text: str) -> str:
    from anomaly.influx.influxql import influxql_string

    return influxql_string(text)


@pytest.fixture(scope="module")
def influx(request):
    """InfluxDB to run the jobs against, in the dialect of the test's parameter (pytest_generate_tests)."""
    if request.param == "influxql":
        yield InfluxQLServer(request.getfixturevalue("influxd").url)
        return
    fake = FakeInflux2().start()
    yield FluxServer(fake)
    fake.stop()


def run_job(
    script: str, args: list[str], env: dict[str, str], cwd: Path, timeout: float = 600
) -> subprocess.CompletedProcess:
    """Run a job the way cron does: a fresh process, settings from the environment, no terminal."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("INFLUX_")}
    full_env.update(env)
    return subprocess.run(
        [sys.executable, str(ROOT / script), *args],
        env=full_env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def tiny_training(start, stop) -> list[str]:
    """sensor_training.py flags for models that train in seconds (4 units, 2 epochs, one process), for the
    tests that need a model and not its quality; ``start`` and ``stop`` are Timestamps."""
    flags = ["--units", "4", "--epochs", "2", "--patience", "1", "--min-windows", "50", "--seed", "1"]
    return ["--start", start.isoformat(), "--stop", stop.isoformat(), *flags, "--jobs", "1"]


def rows(url: str, database: str, query: str) -> list[tuple[dict, list]]:
    """(tags, values) per series of an InfluxQL answer, read directly from the server."""
    result = local_influxd.query(url, query, database)["results"][0]
    assert "error" not in result, result
    return [(s.get("tags", {}), s["values"]) for s in result.get("series", [])]


class Webhook:
    """A local receiver standing in for Slack/Teams (no real one is reachable here): it keeps every body
    and every Authorization header; while ``down`` it answers 503, as an outage would."""

    def __init__(self) -> None:
        self.received: list[dict] = []
        self.authorizations: list[str | None] = []
        self.down = False
        hook = self

        class Receiver(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if hook.down:
                    self.send_response(503)
                else:
                    hook.received.append(body)
                    hook.authorizations.append(self.headers["Authorization"])
                    self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/secret-path"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def webhook():
    hook = Webhook()
    yield hook
    hook.server.shutdown()
    hook.server.server_close()
