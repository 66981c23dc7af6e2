"""Where InfluxDB is and how to reach it: the connection flags, their INFLUX_* variables, and the checks that
turn them into a Connection at start-up.

Secrets (a token, a password) come from the environment or a flag, never from a file, and never leave the
Connection in text: its repr leaves them out, and a URL in a message is shown without a login
(``without_userinfo``).
"""

from __future__ import annotations

import argparse
import os
import urllib.parse
from dataclasses import dataclass, field

from anomaly.errors import ConfigError
from anomaly.times import parse_duration

APIS = ("auto", "flux", "influxql")


@dataclass(frozen=True)
class Connection:
    """Where the database is and how to authenticate; secrets never leave this object in text."""

    url: str
    api: str
    token: str | None = field(default=None, repr=False)
    org: str | None = None
    bucket: str | None = None
    database: str | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout_s: float = 30.0
    retries: int = 3
    backoff_s: float = 1.0


def add_connection_arguments(parser: argparse.ArgumentParser) -> None:
    """The connection flags, each defaulting to its INFLUX_* variable."""
    env = os.environ.get
    conn = parser.add_argument_group("connection (flags override the environment variables)")
    conn.add_argument("--url", default=env("INFLUX_URL", "http://localhost:8086"), help="INFLUX_URL")
    conn.add_argument("--api", choices=APIS, default="auto", help="query dialect; auto asks the server (default)")
    conn.add_argument(
        "--token", default=env("INFLUX_TOKEN"), help="INFLUX_TOKEN; prefer the variable: flags show in ps"
    )
    conn.add_argument("--org", default=env("INFLUX_ORG"), help="INFLUX_ORG (Flux)")
    conn.add_argument("--bucket", default=env("INFLUX_BUCKET"), help="INFLUX_BUCKET (Flux)")
    conn.add_argument("--database", default=env("INFLUX_DATABASE"), help="INFLUX_DATABASE (InfluxQL)")
    conn.add_argument("--username", default=env("INFLUX_USERNAME"), help="INFLUX_USERNAME (InfluxQL)")
    conn.add_argument("--password", default=env("INFLUX_PASSWORD"), help="INFLUX_PASSWORD; prefer the variable")
    conn.add_argument("--timeout", default="30s", help="per-request timeout (default 30s)")
    conn.add_argument(
        "--retries",
        type=int,
        default=3,
        choices=range(0, 11),
        metavar="N",
        help="try a request that failed for a passing reason (no connection, time-out, HTTP 5xx) "
        "again up to N times, waiting 1s, 2s, 4s, ... (default 3)",
    )


def _valid_url(url: str) -> bool:
    try:
        parts = urllib.parse.urlsplit(url)
        _ = parts.port  # raises ValueError for a port that is not a number in range
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname) and not any(c.isspace() for c in url)


def without_userinfo(url: str) -> str:
    """``url`` with everything between ``scheme://`` and its last ``@``, and any query or fragment, shown
    as ``…``, for messages.

    Plain text, not a URL parser: it must hide a password even in a URL too broken to parse, such as one
    whose password holds a ``/``.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    _, at, after = rest.rpartition("@")
    shown = f"{scheme}{sep}…@{after}" if at else url
    # A query may hold a login too (InfluxDB 1.x reads ?u=...&p=...).
    head, mark, _ = shown.partition("?") if "?" in shown else shown.partition("#")
    return f"{head}{mark}…" if mark else shown


def connection_from_args(args: argparse.Namespace) -> Connection:
    """Check that the chosen dialect has what it needs; the message lists the variables to set.

    A user name or password in the URL is refused rather than used: the variables below are the one
    place for them, and dropping them silently would end in an unexplained HTTP 401.
    """
    url = args.url or ""
    if not _valid_url(url):
        raise ConfigError(
            f"--url / INFLUX_URL: {without_userinfo(url)!r} is not an http(s) URL such as http://localhost:8086"
        )
    if "@" in urllib.parse.urlsplit(url).netloc:
        raise ConfigError(
            f"--url / INFLUX_URL: {without_userinfo(url)!r} holds a user name or password, which are not "
            "taken from the URL; remove them and set INFLUX_USERNAME and INFLUX_PASSWORD (InfluxDB 1.x) "
            "or INFLUX_TOKEN (2.x, Cloud, 3.x)"
        )
    parts = urllib.parse.urlsplit(url)
    if parts.query or parts.fragment:
        raise ConfigError(
            f"--url / INFLUX_URL: {without_userinfo(url)!r} has a query or fragment, which is not taken from the "
            "URL (a ?u=...&p=... login included); remove it and set INFLUX_USERNAME and INFLUX_PASSWORD "
            "(InfluxDB 1.x) or INFLUX_TOKEN"
        )
    if args.api == "flux" and not (args.token and args.org and args.bucket):
        raise ConfigError("--api flux needs INFLUX_TOKEN, INFLUX_ORG and INFLUX_BUCKET (or --token, --org, --bucket)")
    if args.api == "influxql" and not (args.database or args.bucket):
        raise ConfigError("--api influxql needs INFLUX_DATABASE (or --database)")
    if args.api == "auto" and not (args.database or args.bucket):
        raise ConfigError(
            "set INFLUX_DATABASE (InfluxDB 1.x/3.x) or INFLUX_BUCKET (2.x), or the --database/--bucket flags"
        )
    return Connection(
        url=args.url.rstrip("/"),
        api=args.api,
        token=args.token or None,
        org=args.org or None,
        bucket=args.bucket or None,
        database=args.database or None,
        username=args.username or None,
        password=args.password or None,
        timeout_s=parse_duration(args.timeout, "--timeout").total_seconds(),
        retries=args.retries,
    )
