"""Faults: the database goes away, training is killed, the disk fills, models are damaged.

Each test runs the jobs as processes, as cron does, against a real influxd of its own, injects one
fault and then checks the database and the models directory: the run that met the fault exits non-zero
with a clear line, and the next run once the fault is gone leaves every sensor with exactly one score per
interval (no gap, no duplicate) and a model that loads.

To kill influxd *during* a read or a write at a known request, the job talks to a small HTTP proxy
(``FaultProxy``) with the real influxd behind it. The proxy forwards every request and, at the N-th one
of a kind, SIGKILLs the real server, either before forwarding the request or after the server answered
it, and drops the job's connection; from then on it drops every connection, as a dead server would.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import ROOT, rows, run_job, tiny_training

import model_predict
from anomaly import errors, runner
from anomaly import store as artifacts
from anomaly.influx.influxql import influxql_string
from tools import local_influxd, sensor_data

NOW = pd.Timestamp("2026-01-15T00:00:00Z")
INTERVAL = pd.Timedelta(minutes=15)
WINDOW = 4
FIRST_RUN = pd.Timedelta(hours=6)
SENSORS = ["AHU-1 supply air temp", 'Boiler,2="hot" loop=ü', "chiller 3"]  # sorted: the jobs' order
DATABASE = "sensors"
TRAIN = tiny_training(NOW - pd.Timedelta(days=4), NOW - pd.Timedelta(days=1))


# ---------------------------------------------------------------- helpers


def seed(url: str, database: str = DATABASE) -> None:
    """Five days of readings every 5 minutes: three to train on, then the days the tests score."""
    local_influxd.query(url, f'CREATE DATABASE "{database}"')
    index = pd.date_range(NOW - pd.Timedelta(days=4), NOW + pd.Timedelta(days=1), freq="5min", inclusive="left")
    lines = []
    for sensor_id in SENSORS:
        lines += sensor_data.readings_lines(sensor_id, index, sensor_data.normal_readings(sensor_id, index, 1))
    local_influxd.write(url, database, lines)


def config_args(directory: Path) -> list[str]:
    (directory / "ratios.json").write_text("{}")
    (directory / "windows.json").write_text(json.dumps({"default": WINDOW}))
    return ["--ratios", str(directory / "ratios.json"), "--windows", str(directory / "windows.json")]


def env(url: str) -> dict[str, str]:
    return {"INFLUX_URL": url, "INFLUX_DATABASE": DATABASE}


def predict(url: str, models_dir: Path, workdir: Path, now: pd.Timestamp, *extra: str) -> subprocess.CompletedProcess:
    return run_job("sensor_predict.py", [*predict_args(models_dir, workdir, now), *extra], env(url), workdir, 120)


def predict_args(models_dir: Path, workdir: Path, now: pd.Timestamp) -> list[str]:
    return [
        "--models-dir",
        str(models_dir),
        "--delay",
        "0s",
        "--first-run",
        "6h",
        "--now",
        now.isoformat(),
        "--no-cold-start",
        *config_args(workdir),
    ]


def scored(url: str, sensor_id: str) -> pd.DatetimeIndex:
    """Times of a sensor's scores, read straight from the server; a point without a loss is not a score."""
    found = rows(
        url,
        DATABASE,
        f'SELECT "loss", "anomaly" FROM "PREDICT_ANOMALY" WHERE "uniqueID" = {influxql_string(sensor_id)}',
    )
    if not found:
        return pd.DatetimeIndex([], tz="UTC")
    ((_, values),) = found
    assert all(loss is not None and anomaly is not None for _, loss, anomaly in values), values
    return pd.DatetimeIndex(pd.to_datetime([v[0] for v in values], unit="s", utc=True))


def grid(first: pd.Timestamp, last: pd.Timestamp) -> pd.DatetimeIndex:
    return pd.date_range(first, last, freq=INTERVAL)


def assert_scored(url: str, sensor_id: str, first: pd.Timestamp, last: pd.Timestamp) -> None:
    """Every interval end in [first, last] scored exactly once, and nothing else."""
    times = scored(url, sensor_id)
    expected = grid(first, last)
    missing, extra = expected.difference(times), times.difference(expected)
    assert times.equals(expected), f"{sensor_id!r}: {len(missing)} missing {list(missing[:3])}, extra {list(extra[:3])}"


def assert_prefix(url: str, sensor_id: str, first: pd.Timestamp) -> pd.Timestamp | None:
    """A run that failed part way may have scored a sensor up to some time, but never with a hole."""
    times = scored(url, sensor_id)
    if times.empty:
        return None
    assert times.equals(grid(first, times[-1])), f"{sensor_id!r} has a hole: {list(times)}"
    return times[-1]


def model_state(models_dir: Path) -> dict[str, str]:
    """Every file under the models directory with its checksum."""
    return {
        str(p.relative_to(models_dir)): artifacts.sha256_file(p) for p in sorted(models_dir.rglob("*")) if p.is_file()
    }


def assert_every_model_loads(models_dir: Path) -> dict[str, str]:
    """Each sensor's committed model passes every checksum and loads; returns the version of each."""
    versions = {}
    for sensor_id in SENSORS:
        directory = artifacts.sensor_dir(models_dir, sensor_id)
        saved = artifacts.load(directory)  # verifies the checksums of all three files
        model = model_predict.load_sensor_model(directory)
        assert model.metadata.sensor_id == sensor_id and model.window == WINDOW and model.threshold > 0
        versions[sensor_id] = saved.metadata.record["version"]
    return versions


class Influxd:
    """A test's own influxd that can be stopped, killed and restarted on the same data and port."""

    def __init__(self, root: Path):
        self.server = local_influxd.LocalInfluxd(root).start()
        self.url = self.server.url

    def kill(self) -> None:
        if self.server.process is not None and self.server.process.poll() is None:
            self.server.process.kill()
            self.server.process.wait()

    def stop(self) -> None:
        self.server.stop()

    def restart(self) -> None:
        self.kill()
        self.server = local_influxd.LocalInfluxd(self.server.root, port=self.server.port).start()


class FaultProxy:
    """HTTP proxy to a real influxd that SIGKILLs it at the ``nth`` request ``matching`` (method, path).

    ``when`` is ``before`` (the request never reaches the server) or ``after`` (the server handled it, but
    its answer never reaches the job). Either way the job's connection is dropped, and so is every later one.
    ``when`` = ``partial`` kills nothing: that request (a write) reaches the server with only every other
    line, and the job gets ``400 partial write``, as InfluxDB answers when it refuses some points of a batch
    (a field type conflict in an older shard); every other request goes through.
    """

    def __init__(self, influxd: Influxd, matching, nth: int, when: str):
        self.influxd, self.matching, self.nth, self.when = influxd, matching, nth, when
        self.count = 0
        self.killed = False
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def _handle(self):
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                action = proxy.decide(self.command, self.path)
                if action == "drop":
                    self.close_connection = True
                    return
                if action == "partial":
                    lines = (body or b"").split(b"\n")
                    body = b"\n".join(lines[::2])
                upstream = http.client.HTTPConnection("127.0.0.1", proxy.influxd.server.port, timeout=60)
                headers = {
                    k: v for k, v in self.headers.items() if k.lower() not in ("host", "connection", "content-length")
                }
                upstream.request(self.command, self.path, body=body, headers=headers)
                response = upstream.getresponse()
                data = response.read()
                upstream.close()
                if action == "kill after":
                    proxy.influxd.kill()
                    self.close_connection = True
                    return
                if action == "partial":
                    dropped = len(lines) - len(lines[::2])
                    self.send_json(400, {"error": f"partial write: field type conflict dropped={dropped}"})
                    return
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection", "content-length", "date", "server"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def send_json(self, status: int, document: dict) -> None:
                data = json.dumps(document).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _handle

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def decide(self, method: str, path: str) -> str:
        with self.lock:
            if self.killed:
                return "drop"
            if self.matching(method, path):
                self.count += 1
                if self.count == self.nth and self.when == "partial":
                    return "partial"
                if self.count == self.nth:
                    self.killed = True
                    if self.when == "before":
                        self.influxd.kill()
                        return "drop"
                    return "kill after"
            return "forward"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def is_read(method: str, path: str) -> bool:
    query = urllib.parse.parse_qs(urllib.parse.urlsplit(path).query).get("q", [""])[0]
    return query.startswith("SELECT mean(")


def is_write(method: str, path: str) -> bool:
    return path.startswith("/write")


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def trained(influxd, tmp_path_factory):
    """A models directory with a good model of every sensor, trained once for the module."""
    workdir = tmp_path_factory.mktemp("faults-trained")
    database = "faults_training"
    seed(influxd.url, database)
    args = [*TRAIN, "--models-dir", str(workdir / "models"), *config_args(workdir)]
    result = run_job("sensor_training.py", args, {"INFLUX_URL": influxd.url, "INFLUX_DATABASE": database}, workdir)
    assert result.returncode == 0, result.stderr
    assert "3 trained, 0 skipped, 0 failed" in result.stderr
    return workdir / "models"


@pytest.fixture
def models(trained, tmp_path) -> Path:
    """This test's copy of the trained models."""
    copy = tmp_path / "models"
    shutil.copytree(trained, copy)
    return copy


@pytest.fixture
def server(tmp_path):
    """This test's own influxd, seeded; stopped at the end however the test left it."""
    influxd = Influxd(tmp_path / "influxd")
    seed(influxd.url)
    yield influxd
    influxd.stop()


@pytest.fixture
def proxies():
    made = []
    yield made
    for proxy in made:
        proxy.close()


# ---------------------------------------------------------------- the database goes away


def test_server_stopped_before_a_run_then_the_next_run_catches_up(server, models, tmp_path):
    earlier, later = NOW - pd.Timedelta(hours=3), NOW + pd.Timedelta(hours=2)
    assert predict(server.url, models, tmp_path, earlier).returncode == 0
    server.stop()
    result = predict(server.url, models, tmp_path, NOW, "--retries", "1", "--timeout", "2s")
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and f"cannot reach InfluxDB at {server.url}" in errors[0], result.stderr
    assert "Traceback" not in result.stderr
    server.restart()
    for sensor_id in SENSORS:  # the first run's scores survived the stop
        assert_scored(server.url, sensor_id, earlier - FIRST_RUN, earlier - INTERVAL)
    result = predict(server.url, models, tmp_path, later)
    assert result.returncode == 0, result.stderr
    for sensor_id in SENSORS:
        assert_scored(server.url, sensor_id, earlier - FIRST_RUN, later - INTERVAL)


def test_training_with_the_server_stopped_changes_no_model(server, models, tmp_path):
    before = model_state(models)
    server.stop()
    result = run_job(
        "sensor_training.py",
        [*TRAIN, "--models-dir", str(models), "--retries", "0", *config_args(tmp_path)],
        env(server.url),
        tmp_path,
        timeout=120,
    )
    assert result.returncode == 1
    assert f"cannot reach InfluxDB at {server.url}" in result.stderr and "Traceback" not in result.stderr
    assert model_state(models) == before


@pytest.mark.parametrize(
    "kind, matching, when, survivors",
    [
        # The next chunk is read while this one is scored and written (parallel.ahead): the second read goes out
        # before or after the first write lands, whichever comes first.
        pytest.param("read", is_read, "before", (0, 1), id="killed during the second read"),
        pytest.param("write", is_write, "before", (1,), id="killed before the second write lands"),
        pytest.param(
            "write", is_write, "after", (2,), id="killed after the second write landed, before it was answered"
        ),
    ],
)
def test_server_killed_during_a_run_then_the_next_run_scores_every_missed_interval(
    server, models, tmp_path, proxies, kind, matching, when, survivors
):
    """With one sensor per chunk, the job reads and writes once per sensor; the server dies at the second.
    ``survivors``: how many sensors' scores may have landed before it did."""
    earlier, later = NOW - pd.Timedelta(hours=3), NOW + pd.Timedelta(hours=2)
    assert predict(server.url, models, tmp_path, earlier).returncode == 0
    proxy = FaultProxy(server, matching, nth=2, when=when)
    proxies.append(proxy)
    result = predict(proxy.url, models, tmp_path, NOW, "--chunk-size", "1", "--retries", "1", "--timeout", "5s")
    assert proxy.killed and server.server.process.poll() is not None
    assert result.returncode == 1, result.stderr
    assert f"cannot reach InfluxDB at {proxy.url}" in result.stderr and "Traceback" not in result.stderr
    server.restart()
    # What the failed run left: whole sensors before the fault, untouched sensors after it, no holes.
    reached = [assert_prefix(server.url, s, earlier - FIRST_RUN) for s in SENSORS]
    assert reached in [[NOW - INTERVAL] * n + [earlier - INTERVAL] * (len(SENSORS) - n) for n in survivors]
    result = predict(server.url, models, tmp_path, later)
    assert result.returncode == 0, result.stderr
    for sensor_id in SENSORS:
        assert_scored(server.url, sensor_id, earlier - FIRST_RUN, later - INTERVAL)


def test_server_killed_and_restarted_between_runs_loses_no_acknowledged_score(server, models, tmp_path):
    earlier = NOW - pd.Timedelta(hours=3)
    assert predict(server.url, models, tmp_path, earlier).returncode == 0
    server.restart()  # SIGKILL, then a new influxd on the same data and port
    for sensor_id in SENSORS:
        assert_scored(server.url, sensor_id, earlier - FIRST_RUN, earlier - INTERVAL)
    result = predict(server.url, models, tmp_path, NOW)
    assert result.returncode == 0, result.stderr
    assert "0 up to date" in result.stderr
    for sensor_id in SENSORS:
        assert_scored(server.url, sensor_id, earlier - FIRST_RUN, NOW - INTERVAL)


def test_a_server_that_never_answers_times_out(models, tmp_path):
    """A listening socket that never accepts: the request times out, is tried once more, and the job ends."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        began = time.monotonic()
        result = predict(url, models, tmp_path, NOW, "--retries", "1", "--timeout", "1s")
        took = time.monotonic() - began
    assert result.returncode == 1
    assert f"cannot reach InfluxDB at {url} (ReadTimeoutError)" in result.stderr
    assert "trying again in 1s (1 of 1)" in result.stderr and "Traceback" not in result.stderr
    assert took < 30


# ---------------------------------------------------------------- training is killed, the disk fills


# Runs the training job with anomaly.files.fsync_path traced: at its N-th call (N from the environment) it says so
# on stderr and waits to be killed, so the SIGKILL lands at a known step of a save.
KILL_POINTS = """
import os, sys, time
sys.path.insert(0, {root!r})
import sensor_training
from anomaly import files, runner

fsync, calls, kill_at = files.fsync_path, [0], int(os.environ["KILL_AT_FSYNC"])

def fsync_then_wait(path):
    fsync(path)
    calls[0] += 1
    if calls[0] == kill_at:
        os.write(2, ("FAULT POINT " + str(calls[0]) + " after fsync of " + str(path) + "\\n").encode())
        time.sleep(60)

files.fsync_path = fsync_then_wait
sys.exit(runner.main(sensor_training.JOB, sys.argv[1:]))
"""
# A save fsyncs the model, scaler and weights files, the temporary metadata (then os.replace commits it),
# and the directory (then the old version is pruned): five calls per sensor. Killing after the 2nd or 3rd
# leaves the same kind of state as after the 1st (new files nothing names), so those are not repeated.
FSYNCS_PER_SAVE = 5
SAVE_STEPS = {
    1: "new model file written",
    4: "temporary metadata written, not yet committed",
    5: "metadata committed, old version not yet pruned",
}


def train_and_kill(command: list[str], url: str, cwd: Path, when, extra_env: dict[str, str] | None = None) -> str:
    """Run training as a process and SIGKILL it ``when(line)`` seconds after the first stderr line for
    which that is not None; return its stderr. Fails when the job ended before it could be killed."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("INFLUX_")}
    full_env.update(env(url), **(extra_env or {}))
    process = subprocess.Popen(
        command,
        env=full_env,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        encoding="utf-8",
        errors="replace",
    )
    watchdog = threading.Timer(120, process.kill)
    watchdog.start()
    lines = []
    try:
        for line in process.stderr:
            lines.append(line)
            delay = when(line)
            if delay is not None:
                time.sleep(delay)
                process.send_signal(signal.SIGKILL)
                break
        lines.append(process.stderr.read())
        process.wait()
    finally:
        watchdog.cancel()
        process.stderr.close()
    stderr = "".join(lines)
    assert process.returncode == -signal.SIGKILL, f"the job was not killed (exit {process.returncode}):\n{stderr}"
    return stderr


def test_training_killed_at_random_points_leaves_every_model_loadable(server, models, tmp_path):
    """SIGKILL at each distinct step of a save (of a sensor picked at random) and once at a random moment
    of a fit: every sensor's committed model passes its checksums and loads after every kill, and the
    models score afterwards. A sensor's new model counts only once its metadata is committed."""
    rng = random.Random(7)
    args = [*TRAIN, "--models-dir", str(models), *config_args(tmp_path)]
    (tmp_path / "kill_points.py").write_text(KILL_POINTS.format(root=str(ROOT)))
    versions = assert_every_model_loads(models)
    for step, name in SAVE_STEPS.items():
        victim = rng.randrange(len(SENSORS))  # saves of the sensors before it complete
        fsync_call = victim * FSYNCS_PER_SAVE + step
        stderr = train_and_kill(
            [sys.executable, str(tmp_path / "kill_points.py"), *args],
            server.url,
            tmp_path,
            lambda line: 0 if line.startswith("FAULT POINT") else None,
            {"KILL_AT_FSYNC": str(fsync_call)},
        )
        assert f"FAULT POINT {fsync_call} after fsync of {artifacts.sensor_dir(models, SENSORS[victim])}" in stderr
        uncommitted = list(artifacts.sensor_dir(models, SENSORS[victim]).glob(".metadata.json.*.tmp"))
        assert bool(uncommitted) == (step == 4), name
        now = assert_every_model_loads(models)
        committed = victim + 1 if step == FSYNCS_PER_SAVE else victim
        for number, sensor_id in enumerate(SENSORS):
            changed = now[sensor_id] != versions[sensor_id]
            assert changed == (number < committed), f"killed when {name} for {SENSORS[victim]!r}: {sensor_id!r}"
        versions = now
    delay = rng.uniform(0.0, 0.5)
    train_and_kill(
        [sys.executable, str(ROOT / "sensor_training.py"), *args],
        server.url,
        tmp_path,
        lambda line: delay if ": trained in " in line else None,
    )
    assert_every_model_loads(models)
    result = predict(server.url, models, tmp_path, NOW)
    assert result.returncode == 0, result.stderr
    for sensor_id in SENSORS:
        assert_scored(server.url, sensor_id, NOW - FIRST_RUN, NOW - INTERVAL)


def test_disk_full_during_a_save_keeps_the_previous_model(server, models, tmp_path):
    """A full disk is simulated with RLIMIT_FSIZE in the job's process: writing any file past 16 KiB fails
    with EFBIG, which the Keras model file (about 40 KiB) reaches part way through being written."""
    limit = 16 * 1024

    def limit_file_size():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    before = assert_every_model_loads(models)
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("INFLUX_")}
    full_env.update(env(server.url))
    result = subprocess.run(
        [sys.executable, str(ROOT / "sensor_training.py"), *TRAIN, "--models-dir", str(models), *config_args(tmp_path)],
        env=full_env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
        preexec_fn=limit_file_size,
    )
    assert result.returncode == 1, result.stderr
    for sensor_id in SENSORS:
        assert f"sensor {sensor_id!r}: failed:" in result.stderr
    assert "File too large" in result.stderr and "0 trained, 0 skipped, 3 failed" in result.stderr
    assert assert_every_model_loads(models) == before
    for sensor_id in SENSORS:  # the half-written file is there, and nothing names it
        directory = artifacts.sensor_dir(models, sensor_id)
        named = set(json.loads((directory / artifacts.METADATA).read_text())["files"].values())
        partial = [p for p in directory.glob("model-*.keras") if p.name not in named]
        assert len(partial) == 1 and partial[0].stat().st_size == limit
    result = predict(server.url, models, tmp_path, NOW)
    assert result.returncode == 0, result.stderr
    for sensor_id in SENSORS:
        assert_scored(server.url, sensor_id, NOW - FIRST_RUN, NOW - INTERVAL)


def test_a_sensor_whose_model_cannot_be_written_fails_alone(server, models, tmp_path):
    """Tests run as root, for whom a read-only directory is still writable, so the sensor's model
    directory is made impossible to create instead: a regular file stands at its path."""
    blocked = artifacts.sensor_dir(models, SENSORS[1])
    shutil.rmtree(blocked)
    blocked.write_text("not a directory")
    result = run_job(
        "sensor_training.py",
        [*TRAIN, "--models-dir", str(models), *config_args(tmp_path)],
        env(server.url),
        tmp_path,
        timeout=300,
    )
    assert result.returncode == 1, result.stderr
    assert f"sensor {SENSORS[1]!r}: failed:" in result.stderr and "FileExistsError" in result.stderr
    assert "2 trained, 0 skipped, 1 failed" in result.stderr
    for sensor_id in (SENSORS[0], SENSORS[2]):
        assert f"sensor {sensor_id!r}: trained in" in result.stderr
        model_predict.load_sensor_model(artifacts.sensor_dir(models, sensor_id))
    assert blocked.read_text() == "not a directory"
    result = predict(server.url, models, tmp_path, NOW)
    assert result.returncode == 0, result.stderr
    assert f"sensor {SENSORS[1]!r}: skipped: no model" in result.stderr
    assert_scored(server.url, SENSORS[0], NOW - FIRST_RUN, NOW - INTERVAL)
    assert scored(server.url, SENSORS[1]).empty


def test_a_second_training_run_refuses_to_start(server, models, tmp_path):
    before = model_state(models)
    with runner.job_lock(models, "sensor_training"):
        result = run_job(
            "sensor_training.py",
            [*TRAIN, "--models-dir", str(models), *config_args(tmp_path)],
            env(server.url),
            tmp_path,
            timeout=120,
        )
    assert result.returncode == errors.EXIT_LOCKED
    assert "another sensor_training run" in result.stderr and "still going" in result.stderr
    assert model_state(models) == before


# ---------------------------------------------------------------- damaged models


def flip_a_byte(path: Path) -> None:
    content = bytearray(path.read_bytes())
    content[len(content) // 2] ^= 0xFF
    path.write_bytes(bytes(content))


def damage(directory: Path, how: str) -> None:
    metadata_path = directory / artifacts.METADATA
    record = json.loads(metadata_path.read_text())
    files = {key: directory / name for key, name in record["files"].items()}
    if how == "weights corrupted":
        flip_a_byte(files["weights"])
    elif how == "weights truncated":
        files["weights"].write_bytes(files["weights"].read_bytes()[:100])
    elif how == "weights missing":
        files["weights"].unlink()
    elif how == "Keras model truncated":
        files["model"].write_bytes(files["model"].read_bytes()[:1000])
    elif how == "metadata truncated":
        metadata_path.write_text(metadata_path.read_text()[:200])
    elif how == "format version 999":
        metadata_path.write_text(json.dumps(dict(record, format_version=999)))
    elif how == "metadata without its scaler":
        metadata_path.write_text(json.dumps({key: value for key, value in record.items() if key != "scaler"}))
    elif how == "metadata emptied":
        metadata_path.write_text("")
    else:
        raise AssertionError(how)


@pytest.mark.parametrize(
    "how, engine, message",
    [
        ("weights corrupted", "numpy", "weights-.*: missing or damaged \\(checksum mismatch\\); retrain this sensor"),
        ("weights truncated", "numpy", "weights-.*: missing or damaged \\(checksum mismatch\\)"),
        ("weights missing", "numpy", "weights-.*: missing or damaged"),
        ("Keras model truncated", "keras", "model-.*: missing or damaged \\(checksum mismatch\\)"),
        ("metadata truncated", "numpy", "metadata.json: unreadable metadata"),
        ("metadata emptied", "numpy", "metadata.json: unreadable metadata"),
        ("format version 999", "numpy", "metadata.json: format version 999 is not 1; retrain this sensor"),
        ("metadata without its scaler", "numpy", "metadata.json has scaler None; retrain this sensor"),
    ],
)
def test_a_damaged_model_fails_its_sensor_and_the_rest_are_scored(server, models, tmp_path, how, engine, message):
    damage(artifacts.sensor_dir(models, SENSORS[1]), how)
    result = predict(server.url, models, tmp_path, NOW, "--engine", engine)
    assert result.returncode == 1, result.stderr
    assert re.search(
        re.escape(f"ERROR sensor_predict: sensor {SENSORS[1]!r}: failed: ") + ".*" + message, result.stderr
    ), result.stderr
    assert "2 sensors scored" in result.stderr and "1 failed" in result.stderr
    assert "Traceback" not in result.stderr
    assert scored(server.url, SENSORS[1]).empty
    for sensor_id in (SENSORS[0], SENSORS[2]):
        assert_scored(server.url, sensor_id, NOW - FIRST_RUN, NOW - INTERVAL)


# ---------------------------------------------------------------- scoring and alerting never stop silently


def ratios_file(directory: Path, ratio: float) -> list[str]:
    """A ratio for every sensor under a fixed threshold: tiny flags every window, huge flags none."""
    path = directory / f"ratios-{ratio:g}.json"
    path.write_text(json.dumps({"default": ratio}))
    return ["--ratios", str(path), "--threshold", "fixed", "--min-consecutive", "1"]


def event_points(url: str) -> dict[str, list[tuple[pd.Timestamp, pd.Timestamp]]]:
    """(start, end) of each sensor's points in ANOMALY_EVENTS, read straight from the server."""
    found = rows(url, DATABASE, 'SELECT "end_ms" FROM "ANOMALY_EVENTS" GROUP BY "uniqueID"')
    return {
        tags["uniqueID"]: [
            (pd.Timestamp(t, unit="s", tz="UTC"), pd.Timestamp(end_ms, unit="ms", tz="UTC")) for t, end_ms in values
        ]
        for tags, values in found
    }


def test_a_score_dated_in_the_future_does_not_stop_scoring(server, models, tmp_path):
    earlier = NOW - pd.Timedelta(hours=3)
    assert predict(server.url, models, tmp_path, earlier).returncode == 0
    future = NOW + pd.Timedelta(days=30)
    local_influxd.write(
        server.url,
        DATABASE,
        [f"PREDICT_ANOMALY,uniqueID=chiller\\ 3 loss=0.1,threshold=1.0,anomaly=false {int(future.timestamp())}"],
    )
    result = predict(server.url, models, tmp_path, NOW)
    assert result.returncode == 0, result.stderr
    assert (
        f"WARNING sensor_predict: sensor 'chiller 3': a score in PREDICT_ANOMALY is dated {future:%Y-%m-%dT%H:%M:%SZ}, "
        f"after now ({NOW:%Y-%m-%dT%H:%M:%SZ})"
    ) in result.stderr
    for sensor_id in SENSORS:
        times = scored(server.url, sensor_id)
        assert times[times <= NOW].equals(grid(earlier - FIRST_RUN, NOW - INTERVAL)), sensor_id


def test_a_damaged_loss_memory_costs_time_not_scores(server, models, tmp_path, state_dir):
    """The losses a tick keeps for the next (anomaly/loss_memory.py) are a cache: damaged, they are reported, every
    loss is computed, every interval is scored, and the file is written anew."""
    earlier = NOW - pd.Timedelta(hours=3)
    assert predict(server.url, models, tmp_path, earlier).returncode == 0
    (memory,) = state_dir.glob("*.losses.npz")
    memory.write_bytes(memory.read_bytes()[:-40])
    result = predict(server.url, models, tmp_path, NOW)
    assert result.returncode == 0, result.stderr
    assert f"WARNING anomaly.loss_memory: {memory}: unreadable" in result.stderr
    for sensor_id in SENSORS:
        assert_scored(server.url, sensor_id, earlier - FIRST_RUN, NOW - INTERVAL)
    with np.load(memory, allow_pickle=False) as saved:
        assert sorted(saved["sensor_ids"].tolist()) == sorted(SENSORS)


def test_a_run_killed_between_its_scores_and_its_events_loses_no_event(server, models, tmp_path, proxies):
    """The events of a run that died after writing its scores are made by the next run, as if it had not died."""
    earlier, later = NOW - pd.Timedelta(hours=3), NOW + pd.Timedelta(hours=1)
    flag_all = ratios_file(tmp_path, 1e-9)
    assert predict(server.url, models, tmp_path, earlier, *flag_all).returncode == 0
    proxy = FaultProxy(server, is_write, nth=2, when="before")  # the scores are the first write, events the second
    proxies.append(proxy)
    result = predict(proxy.url, models, tmp_path, NOW, *flag_all, "--retries", "0", "--timeout", "5s")
    assert proxy.killed and result.returncode == 1, result.stderr
    server.restart()
    for sensor_id in SENSORS:
        assert_scored(server.url, sensor_id, earlier - FIRST_RUN, NOW - INTERVAL)
    result = predict(server.url, models, tmp_path, later, *flag_all)
    assert result.returncode == 0, result.stderr
    events = event_points(server.url)
    for sensor_id in SENSORS:
        # every window is flagged: one event from the first window scored to the last, never two
        assert events[sensor_id] == [(earlier - FIRST_RUN, later - INTERVAL)], sensor_id


def test_events_that_ended_while_the_webhook_was_down_are_sent_once_it_is_back(server, models, tmp_path, webhook):
    url, received = webhook.url, webhook.received
    notify = ["--notify-url", url, "--notify-cooldown", "0s"]
    webhook.down = True
    down = predict(server.url, models, tmp_path, NOW, *ratios_file(tmp_path, 1e-9), *notify)
    assert down.returncode == 1 and "notification not sent" in down.stderr
    webhook.down = False
    later = NOW + pd.Timedelta(hours=3)  # longer than --incident-window + 2 intervals
    back = predict(server.url, models, tmp_path, later, *ratios_file(tmp_path, 1e9), *notify)
    assert back.returncode == 0, back.stderr
    assert sorted(body["sensor_id"] for body in received) == sorted(SENSORS), received
    again = predict(server.url, models, tmp_path, later + INTERVAL, *ratios_file(tmp_path, 1e9), *notify)
    assert again.returncode == 0 and len(received) == len(SENSORS)


def test_a_mistyped_models_dir_is_refused(server, models, tmp_path):
    typo = tmp_path / "modles"
    result = predict(server.url, typo, tmp_path, NOW)
    assert result.returncode == errors.EXIT_CONFIG, result.stderr
    assert f"--models-dir {typo}: no such directory" in result.stderr and "Traceback" not in result.stderr
    assert not typo.exists()
    assert all(scored(server.url, s).empty for s in SENSORS)


def test_training_into_a_models_dir_that_cannot_be_written_stops_before_any_fit(server, tmp_path):
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the directory should be")  # root may write read-only directories
    result = run_job(
        "sensor_training.py",
        [*TRAIN, "--models-dir", str(blocked / "models"), *config_args(tmp_path)],
        env(server.url),
        tmp_path,
        timeout=120,
    )
    assert result.returncode == errors.EXIT_CONFIG, result.stderr
    assert f"--models-dir {blocked / 'models'} cannot be written" in result.stderr
    assert "Traceback" not in result.stderr and "sensor " not in result.stderr


def test_messages_are_held_while_the_state_file_cannot_be_written_then_sent_once(server, models, tmp_path, webhook):
    url, received = webhook.url, webhook.received
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the state file's directory should be")
    flag_all = [*ratios_file(tmp_path, 1e-9), "--notify-url", url, "--notify-cooldown", "0s"]
    for now in (NOW, NOW + INTERVAL):
        result = predict(server.url, models, tmp_path, now, *flag_all, "--state-file", str(blocked / "state.json"))
        assert result.returncode == 1
        assert f"--state-file's directory {blocked} cannot be written" in result.stderr
        assert "Traceback" not in result.stderr and received == []
    state = ["--state-file", str(tmp_path / "state.json")]
    assert predict(server.url, models, tmp_path, NOW + 2 * INTERVAL, *flag_all, *state).returncode == 0
    assert predict(server.url, models, tmp_path, NOW + 3 * INTERVAL, *flag_all, *state).returncode == 0
    assert sorted(body["sensor_id"] for body in received) == sorted(SENSORS)


@pytest.fixture
def read_only(tmp_path):
    """Makes a directory read-only for this process, root included (chattr +i where chmod does not bind);
    skips the test where neither can. Undone at the end, so the temporary directory can be removed."""
    made = []

    def make(directory: Path) -> None:
        directory.chmod(0o555)
        made.append(directory)
        if os.access(directory, os.W_OK) and subprocess.run(["chattr", "+i", str(directory)]).returncode != 0:
            pytest.skip("cannot make a directory read-only for root here (no chattr +i)")

    yield make
    for directory in made:
        subprocess.run(["chattr", "-i", str(directory)], capture_output=True)
        directory.chmod(0o755)


def test_a_read_only_models_directory_does_not_hold_messages(server, models, tmp_path, webhook, read_only, state_dir):
    """Issue 11: the state file defaulted to the models directory, which scorers may use read-only; every message
    was then held (exit 1) until --state-file was set. It is kept in the state directory now."""
    read_only(models)
    flag_all = [*ratios_file(tmp_path, 1e-9), "--notify-url", webhook.url, "--notify-cooldown", "0s"]
    for now in (NOW, NOW + INTERVAL):
        result = predict(server.url, models, tmp_path, now, *flag_all)
        assert result.returncode == 0, result.stderr
    assert sorted(body["sensor_id"] for body in webhook.received) == sorted(SENSORS)  # sent once each
    assert len(list(state_dir.glob(".sensor_predict-state-*.json"))) == 1


def test_an_upgrade_keeps_the_state_and_the_ranges_to_score_again_from_the_models_directory(
    server, models, tmp_path, webhook, state_dir
):
    """A state file and a rescore file where earlier versions kept them (the models directory) are moved to the
    state directory by the first run after an upgrade: it sends no ongoing event again, and scores again the
    range a failed write left."""
    flag_all = [*ratios_file(tmp_path, 1e-9), "--notify-url", webhook.url, "--notify-cooldown", "0s"]
    assert predict(server.url, models, tmp_path, NOW, *flag_all).returncode == 0
    assert sorted(body["sensor_id"] for body in webhook.received) == sorted(SENSORS)  # one ongoing event each
    (state,) = state_dir.glob(".sensor_predict-state-*.json")
    former = models / state.name
    state.rename(former)  # where the version before kept it
    again = NOW - pd.Timedelta(hours=2)
    former.with_suffix(".rescore.json").write_text(json.dumps({"sensors": {SENSORS[0]: again.isoformat()}}))
    result = predict(server.url, models, tmp_path, NOW + INTERVAL, *flag_all)
    assert result.returncode == 0, result.stderr
    assert len(webhook.received) == len(SENSORS), webhook.received  # nothing sent twice
    assert f"{former} moved to {state}" in result.stderr
    assert f"sensor {SENSORS[0]!r}: scored again from {again.strftime('%Y-%m-%dT%H:%M:%SZ')}" in result.stderr
    assert state.exists() and not former.exists() and not former.with_suffix(".rescore.json").exists()
    assert not state.with_suffix(".rescore.json").exists()  # scored again, so forgotten


def test_a_scratch_output_shares_no_memory_with_production(server, models, tmp_path, webhook):
    url, received = webhook.url, webhook.received
    webhook.down = True
    scratch = ["--output-measurement", "SCRATCH", "--notify-url", url]
    assert predict(server.url, models, tmp_path, NOW, *ratios_file(tmp_path, 1e-9), *scratch).returncode == 1
    webhook.down = False
    production = predict(server.url, models, tmp_path, NOW + INTERVAL, *ratios_file(tmp_path, 1e9), "--notify-url", url)
    assert production.returncode == 0, production.stderr
    assert received == []  # the scratch measurement's events are not production's


def test_a_replay_with_now_moved_back_sends_nothing_from_its_future(server, models, tmp_path, webhook):
    url, received = webhook.url, webhook.received
    notify = ["--notify-url", url, "--notify-cooldown", "0s"]
    webhook.down = True
    assert predict(server.url, models, tmp_path, NOW, *ratios_file(tmp_path, 1e-9), *notify).returncode == 1
    webhook.down = False
    replay = NOW - FIRST_RUN - pd.Timedelta(hours=1)  # before every event the first run found
    result = predict(server.url, models, tmp_path, replay, *ratios_file(tmp_path, 1e9), *notify)
    assert result.returncode == 0, result.stderr
    assert received == []


def test_a_catch_up_message_does_not_mute_a_new_spike(server, models, tmp_path, webhook):
    """The cooldown runs in event time: the old event a catch-up sends does not hold back a spike that
    comes after it by more than the cooldown, even when the spike's run is within the cooldown of the send."""
    url, received = webhook.url, webhook.received
    sensor_id = SENSORS[2]
    blip = pd.date_range(NOW - pd.Timedelta(hours=5), periods=6, freq="5min")
    spike = pd.date_range(NOW + pd.Timedelta(minutes=15), periods=6, freq="5min")
    local_influxd.write(server.url, DATABASE, sensor_data.readings_lines(sensor_id, blip.append(spike), [500.0] * 12))
    notify = ["--notify-url", url, "--notify-cooldown", "1h", "--sensor", sensor_id]
    assert predict(server.url, models, tmp_path, NOW, *notify).returncode == 0
    assert [body["sensor_id"] for body in received] == [sensor_id]
    caught_up = pd.Timestamp(received[0]["start"])
    assert caught_up < NOW - pd.Timedelta(hours=3), received  # the blip, not a later false alarm
    result = predict(server.url, models, tmp_path, NOW + pd.Timedelta(minutes=45), *notify)
    assert result.returncode == 0, result.stderr
    assert len(received) == 2 and pd.Timestamp(received[1]["start"]) >= spike[0], received


def test_a_partial_write_is_scored_again_by_the_next_run(server, models, tmp_path, proxies):
    earlier, later = NOW - pd.Timedelta(hours=3), NOW + pd.Timedelta(hours=1)
    assert predict(server.url, models, tmp_path, earlier).returncode == 0
    proxy = FaultProxy(server, is_write, nth=1, when="partial")
    proxies.append(proxy)
    result = predict(proxy.url, models, tmp_path, NOW)
    assert proxy.count >= 1 and not proxy.killed and result.returncode == 1, result.stderr
    assert "partial write" in result.stderr
    # every other point landed: each sensor's newest score is there, with holes before it
    assert all(scored(server.url, s)[-1] >= NOW - 2 * INTERVAL for s in SENSORS)
    result = predict(server.url, models, tmp_path, later)
    assert result.returncode == 0, result.stderr
    assert "where an earlier run's write failed" in result.stderr
    for sensor_id in SENSORS:
        assert_scored(server.url, sensor_id, earlier - FIRST_RUN, later - INTERVAL)


def stored_events(url: str, sensor_id: str) -> set[tuple[str, str]]:
    """The (sensor id, start) of every event in a sensor's stored scores, made by the same rules as the job's."""
    from anomaly.alerts.events import events

    found = rows(
        url,
        DATABASE,
        f'SELECT "loss", "threshold", "anomaly" FROM "PREDICT_ANOMALY" WHERE "uniqueID" = {influxql_string(sensor_id)}',
    )
    if not found:
        return set()
    ((_, values),) = found
    frame = pd.DataFrame(values, columns=["time", "loss", "threshold", "anomaly"])
    frame.index = pd.to_datetime(frame.pop("time"), unit="s", utc=True)
    return {(sensor_id, f"{e.start:%Y-%m-%dT%H:%M:%SZ}") for e in events(sensor_id, frame, INTERVAL, WINDOW)}


def test_thirty_ticks_of_kills_and_a_flaky_webhook_deliver_every_event_once(server, models, tmp_path, webhook):
    """Thirty scoring ticks, as cron runs them, with the job SIGKILLed or the server killed at seeded random
    moments and the webhook refusing a third of the time; then two quiet ticks. Every interval is scored
    exactly once, and every event in the stored scores reached the webhook exactly once."""
    url, received = webhook.url, webhook.received
    rng = random.Random(7)
    for sensor_id in SENSORS:  # excursions to a level far beyond training, at random times of the ticks' span
        for _ in range(4):
            start = NOW - FIRST_RUN + pd.Timedelta(minutes=15 * rng.randrange(0, 52))
            index = pd.date_range(start, periods=18, freq="5min")
            local_influxd.write(server.url, DATABASE, sensor_data.readings_lines(sensor_id, index, [400.0] * 18))
    args = [
        "--threshold",
        "fixed",
        "--min-consecutive",
        "1",
        "--notify-url",
        url,
        "--notify-cooldown",
        "0s",
        "--notify-max-age",
        "7d",
        "--state-file",
        str(tmp_path / "state.json"),
        "--retries",
        "0",
        "--timeout",
        "5s",
    ]
    faults = []
    for tick in range(30):
        now = NOW + tick * INTERVAL + pd.Timedelta(seconds=rng.randrange(0, 120))
        webhook.down = rng.random() < 1 / 3
        fault = rng.choice(["none", "none", "kill the job", "kill the server"])
        faults.append(fault)
        command = [sys.executable, str(ROOT / "sensor_predict.py"), *predict_args(models, tmp_path, now), *args]
        job_env = {**{k: v for k, v in os.environ.items() if not k.startswith("INFLUX_")}, **env(server.url)}
        process = subprocess.Popen(
            command, env=job_env, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        if fault == "kill the job":
            time.sleep(rng.uniform(0.5, 4.0))
            process.kill()
        elif fault == "kill the server":
            time.sleep(rng.uniform(0.5, 4.0))
            server.kill()
        _, stderr = process.communicate(timeout=120)
        assert b"Traceback" not in stderr or fault != "none", stderr.decode()
        if fault == "kill the server":
            server.restart()
    webhook.down = False
    for quiet in (1, 2):
        now = NOW + (30 + quiet) * INTERVAL
        result = run_job("sensor_predict.py", [*predict_args(models, tmp_path, now), *args], env(server.url), tmp_path)
        assert result.returncode == 0, result.stderr
    assert {"kill the job", "kill the server"} <= set(faults)
    delivered = [(body["sensor_id"], body["start"]) for body in received]
    expected = set()
    for sensor_id in SENSORS:
        assert_scored(server.url, sensor_id, NOW - FIRST_RUN, NOW + 32 * INTERVAL - INTERVAL)
        expected |= stored_events(server.url, sensor_id)
    assert len(expected) >= 6, expected
    duplicates = [key for key in set(delivered) if delivered.count(key) > 1]
    assert not duplicates, duplicates
    assert set(delivered) == expected, (sorted(set(delivered) - expected), sorted(expected - set(delivered)))
