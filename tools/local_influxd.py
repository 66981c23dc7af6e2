"""A throwaway InfluxDB 1.x server for tests, benchmarks and the demo: own directory, free loopback ports.

python -m tools.local_influxd DIR     # runs until interrupted, prints the URL
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

CONFIG = """\
reporting-disabled = true
bind-address = "127.0.0.1:{rpc_port}"

[meta]
  dir = "{root}/meta"
  logging-enabled = false

[data]
  dir = "{root}/data"
  wal-dir = "{root}/wal"
  query-log-enabled = false
  wal-fsync-delay = "0s"

[monitor]
  store-enabled = false

[http]
  enabled = true
  bind-address = "127.0.0.1:{port}"
  log-enabled = false
  auth-enabled = {auth}

[continuous_queries]
  enabled = false
"""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_influxd() -> str:
    """Path of influxd, installing Debian's influxdb package when it is missing and apt can be used."""
    found = shutil.which("influxd")
    if found:
        return found
    if shutil.which("apt-get") is None:
        raise RuntimeError("influxd is not on PATH and apt-get is not available; install InfluxDB 1.x")
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run([*sudo, "apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run([*sudo, "apt-get", "install", "-y", "-qq", "influxdb"], check=True, env=env)
    found = shutil.which("influxd") or ("/usr/bin/influxd" if Path("/usr/bin/influxd").exists() else None)
    if not found:
        raise RuntimeError("installed the influxdb package but influxd is still not on PATH")
    return found


class LocalInfluxd:
    """Start with ``start()``, stop with ``stop()``; ``url`` is where it answers.

    Pass the ``port`` of an earlier server on the same ``root`` to restart it where clients expect it.
    """

    def __init__(self, root: Path, auth: bool = False, port: int | None = None):
        self.root = Path(root)
        self.auth = auth
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self, timeout_s: float = 60.0) -> LocalInfluxd:
        binary = ensure_influxd()
        self.root.mkdir(parents=True, exist_ok=True)
        conf = self.root / "influxdb.conf"
        conf.write_text(
            CONFIG.format(root=self.root, port=self.port, rpc_port=free_port(), auth="true" if self.auth else "false")
        )
        # The server keeps its own copy of the log's descriptor; ours is closed once it has started.
        with open(self.root / "influxd.log", "ab") as log:
            self.process = subprocess.Popen(
                [binary, "-config", str(conf)], stdout=log, stderr=log, stdin=subprocess.DEVNULL
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                # The end of the log goes into the message: callers often remove the directory it is in.
                log_tail = (self.root / "influxd.log").read_text(errors="replace").splitlines()[-5:]
                raise RuntimeError(
                    f"influxd exited with {self.process.returncode}; end of {self.root / 'influxd.log'}:\n"
                    + "\n".join(log_tail)
                )
            try:
                urllib.request.urlopen(self.url + "/ping", timeout=1)
                return self
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"influxd did not answer on {self.url} within {timeout_s}s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


def query(url: str, q: str, database: str | None = None) -> dict:
    """Run InfluxQL directly (tests check what the jobs wrote with this, independently of the jobs)."""
    fields = {"q": q, "epoch": "s"}
    if database:
        fields["db"] = database
    data = urllib.parse.urlencode(fields).encode()
    with urllib.request.urlopen(url + "/query", data=data, timeout=30) as response:
        return json.loads(response.read())


def write(url: str, database: str, lines: list[str]) -> None:
    """Write line protocol (second precision) in large batches."""
    for first in range(0, len(lines), 20000):
        body = "\n".join(lines[first : first + 20000]).encode("utf-8")
        request = urllib.request.Request(
            f"{url}/write?db={urllib.parse.quote(database)}&precision=s", data=body, method="POST"
        )
        with urllib.request.urlopen(request, timeout=60):
            pass


def main(argv: list[str]) -> int:
    root = Path(argv[0]) if argv else Path("influxd-data")
    server = LocalInfluxd(root.resolve()).start()
    print(server.url, flush=True)
    try:
        server.process.wait()
    except KeyboardInterrupt:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
