"""Shared fixtures: a real InfluxDB 1.x server on a free loopback port, and the jobs run as processes."""

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

from tools import local_influxd  # noqa: E402

_databases = itertools.count()


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
