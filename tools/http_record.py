"""The floor of a job's run: what its HTTP requests to InfluxDB cost with nothing else around them.

``Recorder`` is an HTTP proxy in front of a real InfluxDB that forwards every request and keeps it (method,
path, the headers that shape it, body). ``replay`` sends kept requests again, one after another as the job
sent them, from a bare process, and reads each answer whole: the same queries and the same points written,
without the job's Python work. Run as a script it replays a file ``Recorder.save`` wrote:

    python tools/http_record.py REQUESTS.jsonl URL
"""

from __future__ import annotations

import base64
import http.client
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

# The headers that change what InfluxDB does with a request; the rest (host, lengths) are the transport's.
KEPT_HEADERS = ("content-type", "content-encoding", "accept", "accept-encoding", "authorization")


class Recorder:
    """A recording proxy to the InfluxDB at 127.0.0.1:``port``; ``url`` is where the job should connect."""

    def __init__(self, port: int):
        self.requests: list[dict] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k: v for k, v in self.headers.items() if k.lower() in KEPT_HEADERS}
                recorder.requests.append(
                    {
                        "method": self.command,
                        "path": self.path,
                        "headers": headers,
                        "body": base64.b64encode(body).decode("ascii"),
                    }
                )
                upstream = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
                upstream.request(self.command, self.path, body=body or None, headers=headers)
                response = upstream.getresponse()
                data = response.read()
                upstream.close()
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_HEAD = _handle

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def save(self, path: Path) -> int:
        """Write the requests kept so far, one JSON object per line; how many."""
        path.write_text("".join(json.dumps(r) + "\n" for r in self.requests), encoding="utf-8")
        return len(self.requests)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def replay(requests: list[dict], url: str) -> int:
    """Send ``requests`` to ``url`` in order over one connection, reading each answer whole; raises
    RuntimeError on an answer that is not 2xx. Returns the bytes received."""
    host, _, port = url.removeprefix("http://").partition(":")
    connection = http.client.HTTPConnection(host, int(port or 80), timeout=300)
    received = 0
    for r in requests:
        body = base64.b64decode(r["body"]) or None
        connection.request(r["method"], r["path"], body=body, headers=r["headers"])
        response = connection.getresponse()
        received += len(response.read())
        if not 200 <= response.status < 300:
            raise RuntimeError(f"{r['method']} {r['path'][:80]}: HTTP {response.status}")
    connection.close()
    return received


def main(argv: list[str]) -> int:
    path, url = Path(argv[0]), argv[1]
    requests = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    received = replay(requests, url)
    print(f"{len(requests)} requests replayed, {received} bytes received", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
