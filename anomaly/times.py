"""Durations and times as the flags and logs write them: ``15m``, ``-90d``, ``2026-01-31T00:00:00Z``.

One parser and one formatter for each, so a value logged can always be pasted back into a flag.
"""

from __future__ import annotations

import re

import pandas as pd

from anomaly.errors import ConfigError

_DURATION = re.compile(r"^(\d+)(s|m|h|d|w)$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str, what: str, allow_zero: bool = False) -> pd.Timedelta:
    """``15m``, ``1h``, ``7d``, ``2w`` -> Timedelta; ``what`` names the flag in the error."""
    match = _DURATION.match(text.strip())
    if not match or (int(match.group(1)) == 0 and not allow_zero):
        raise ConfigError(f"{what}: {text!r} is not a positive duration such as 30s, 15m, 1h, 7d or 2w")
    return pd.Timedelta(seconds=int(match.group(1)) * _UNIT_SECONDS[match.group(2)])


def format_duration(delta: pd.Timedelta, largest: str = "w") -> str:
    """The inverse of parse_duration for logs: 900 s -> ``15m``. ``largest`` is the largest unit used:
    ``d`` writes 35 days as ``35d`` rather than ``5w``, as a flag's default is written."""
    seconds = int(delta.total_seconds())
    units = ("w", "d", "h", "m")
    for unit in units[units.index(largest) :]:
        if seconds % _UNIT_SECONDS[unit] == 0:
            return f"{seconds // _UNIT_SECONDS[unit]}{unit}"
    return f"{seconds}s"


# One written form of a time, because pandas guesses: it reads "now" and "today" as the clock, and
# 01/02/2026 as 2 January but 14/01/2026 as 14 January.
ISO_TIME = re.compile(r"\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:\d{2})?)?")


def iso_time(text: str) -> pd.Timestamp | None:
    """An ISO 8601 time (``ISO_TIME``) InfluxDB can store (nanoseconds since 1970 fit in 64 bits: years
    1677 to 2262), or None; without a zone it is naive."""
    if not ISO_TIME.fullmatch(text):
        return None
    try:
        stamp = pd.Timestamp(text)
    except ValueError:
        return None
    utc = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return stamp if pd.Timestamp.min.tz_localize("UTC") <= utc <= pd.Timestamp.max.tz_localize("UTC") else None


def parse_time(text: str, now: pd.Timestamp, what: str) -> pd.Timestamp:
    """RFC3339 (``2026-01-31T00:00:00Z``), ``now`` or a relative time (``-90d``) -> UTC Timestamp."""
    text = text.strip()
    if text == "now":
        return now
    if text.startswith("-"):
        try:
            return now - parse_duration(text[1:], what)
        except ConfigError:
            raise ConfigError(
                f"{what}: {text!r} is not a time; use RFC3339 with a zone "
                f"(2026-01-31T00:00:00Z), now, or a relative time such as -90d"
            ) from None
    stamp = iso_time(text)
    if stamp is None or stamp.tzinfo is None:
        raise ConfigError(
            f"{what}: {text!r} is not a time; use RFC3339 with a zone (2026-01-31T00:00:00Z), now, or -90d"
        )
    return stamp.tz_convert("UTC")


def format_time(stamp: pd.Timestamp) -> str:
    """UTC RFC3339 for logs and metadata: ``2026-01-15T00:00:00Z``."""
    return stamp.tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%SZ")


def current_time(text: str | None) -> pd.Timestamp:
    """The job's notion of now: the clock, or the RFC3339 time of ``--now`` (replays and tests)."""
    return pd.Timestamp.now(tz="UTC") if text is None else parse_time(text, pd.Timestamp(0, tz="UTC"), "--now")


def parse_range(start: str, stop: str, now: pd.Timestamp, interval: pd.Timedelta) -> tuple[pd.Timestamp, pd.Timestamp]:
    """``--start``/``--stop`` -> [start, stop), both on the interval grid, start before stop."""
    first = parse_time(start, now, "--start").floor(interval)
    last = parse_time(stop, now, "--stop").floor(interval)
    if first >= last:
        raise ConfigError(f"--start {start} must be before --stop {stop}")
    return first, last
