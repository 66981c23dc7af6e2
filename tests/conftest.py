"""Shared fixtures: a real InfluxDB 1.x server on a free loopback port, and the jobs run as processes."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tools import local_influxd  # noqa: E402

_databases = itertools.count()


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


def rows(url: str, database: str, query: str) -> list[tuple[dict, list]]:
    """(tags, values) per series of an InfluxQL answer, read directly from the server."""
    result = local_influxd.query(url, query, database)["results"][0]
    assert "error" not in result, result
    return [(s.get("tags", {}), s["values"]) for s in result.get("series", [])]
