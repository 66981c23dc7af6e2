"""The memory of a run for the next: each sensor's newest event and outage, and what was decided and sent.

A JSON-ready dict (its layout is in docs/alerts.md) that the caller keeps in one file. Reading it never
raises for bad content: a run that cannot trust the file starts afresh and says why, because losing the
memory costs at most one repeated message per sensor, while stopping would cost every message.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Mapping

import pandas as pd

from anomaly.alerts.events import ANOMALY, MISSING, Event
from anomaly.alerts.incidents import SEVERITIES, Incident
from anomaly.times import format_time

STATE_FORMAT = 1
_FRESH = "starting with no notification history"
# Where a sensor's entry keeps its newest event of each kind (outages came later; files without stay valid).
SLOTS = {ANOMALY: "event", MISSING: "outage"}
# Where a sensor's entry keeps its events whose message is due but has not gone through yet.
OUTBOX = "outbox"


def new_state() -> dict:
    return {"format": STATE_FORMAT, "sensors": {}, "groups": {}}


def copy_state(state: Mapping) -> dict:
    """A deep copy, so the functions that return a new state never change the one they were given."""
    return {
        "format": STATE_FORMAT,
        "sensors": _copied(dict(state.get("sensors", {}))),
        "groups": _copied(dict(state.get("groups", {}))),
    }


def _copied(value: object) -> object:
    """A deep copy of JSON data (dicts, lists and immutable leaves): copy.deepcopy's result on such data, in
    a third of its time, which a tick over 10,000 sensors' state, copied several times, notices."""
    if type(value) is dict:
        return {key: _copied(item) for key, item in value.items()}
    if type(value) is list:
        return [_copied(item) for item in value]
    return value


def subject(item: Event | Incident) -> tuple[str, str]:
    """Where an item is remembered: ``("sensors", sensor id)`` or ``("groups", group value)``."""
    if isinstance(item, Event):
        return "sensors", item.sensor_id
    if isinstance(item, Incident):
        return "groups", item.group
    raise TypeError(f"expected an Event or an Incident, not {type(item).__name__}")


def parse_stamp(text: object) -> pd.Timestamp:
    """A time as the state writes it (``format_time``), back to a UTC Timestamp; ValueError otherwise."""
    if not isinstance(text, str):
        raise ValueError(f"{text!r} is not a time")
    stamp = pd.Timestamp(text)
    if stamp.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone")
    return stamp.tz_convert("UTC")


def json_number(value: float) -> float | None:
    """A float as JSON can carry it: null when not finite."""
    return float(value) if math.isfinite(value) else None


def event_to_dict(event: Event) -> dict:
    return {
        "start": format_time(event.start),
        "end": format_time(event.end),
        "windows": event.windows,
        "peak_loss": json_number(event.peak_loss),
        "threshold": json_number(event.threshold),
        "ongoing": event.ongoing,
    }


def event_from_dict(sensor_id: str, data: Mapping, kind: str = ANOMALY) -> Event:
    """The event of ``event_to_dict`` (its kind is where it was kept: ``SLOTS``); ValueError, KeyError or
    TypeError when it cannot be read."""
    windows = data["windows"]
    if not isinstance(windows, int) or isinstance(windows, bool) or windows < 1:
        raise ValueError(f"windows {windows!r} is not a whole number >= 1")
    if not isinstance(data["ongoing"], bool):
        raise ValueError(f"ongoing {data['ongoing']!r} is not true or false")
    values = []
    for name in ("peak_loss", "threshold"):
        value = data[name]
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise ValueError(f"{name} {value!r} is not a number")
        values.append(math.nan if value is None else float(value))
    start, end = parse_stamp(data["start"]), parse_stamp(data["end"])
    if end < start:
        raise ValueError("event ends before it starts")
    return Event(sensor_id, start, end, windows, values[0], values[1], data["ongoing"], kind=kind)


@functools.lru_cache(maxsize=1024)
def _restamped(text: object) -> str:
    """``format_time(parse_stamp(text))``, once per distinct time: after a tick every sensor holds the same."""
    return format_time(parse_stamp(text))


def _clean_entry(kind: str, name: object, entry: object) -> dict:
    """A state entry with only known, readable keys; raises ValueError (or KeyError) when it cannot be read."""
    if not isinstance(name, str) or not name or not isinstance(entry, dict):
        raise ValueError("not an object under a name")
    out: dict[str, object] = {}
    for key in ("decided", "notified_at", "notified_end", "announced"):
        if entry.get(key) is not None:
            out[key] = _restamped(entry[key])
    for event_kind, slot in SLOTS.items():
        if kind == "sensors" and entry.get(slot) is not None:
            out[slot] = event_to_dict(event_from_dict(name, entry[slot], event_kind))
    if kind == "sensors" and entry.get(OUTBOX):
        if not isinstance(entry[OUTBOX], list):
            raise ValueError(f"{OUTBOX} is not a list")
        out[OUTBOX] = [event_to_dict(event_from_dict(name, e)) for e in entry[OUTBOX]]
    if kind == "groups" and entry.get("severity") is not None:
        if entry["severity"] not in SEVERITIES:
            raise ValueError(f"severity {entry['severity']!r}")
        out["severity"] = entry["severity"]
    return out


def _parse(text: str) -> tuple[dict | None, str | None]:
    """The file's JSON object of the right format, or None and why not."""
    if not text.strip():
        return None, f"the notification state file is empty; {_FRESH}"
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as e:
        where = f" at line {e.lineno} column {e.colno}" if isinstance(e, json.JSONDecodeError) else ""
        return None, f"the notification state file is not valid JSON{where}; {_FRESH}"
    if not isinstance(data, dict) or data.get("format") != STATE_FORMAT:
        return None, (
            f"the notification state file is not format {STATE_FORMAT} state "
            f"(format {data.get('format') if isinstance(data, dict) else None!r}); {_FRESH}"
        )
    return data, None


def load_state(text: str | None) -> tuple[dict, str | None]:
    """The state from the text of its file (None: no file yet) and, if it could not all be read, why.

    Never raises for bad content: an empty, corrupt or foreign file gives a fresh state, entries that
    cannot be read are dropped; the second value then says so in one line, for the caller to log.
    """
    if text is None:
        return new_state(), None
    data, problem = _parse(text)
    if data is None:
        return new_state(), problem
    state, dropped = new_state(), 0
    for kind in ("sensors", "groups"):
        entries = data.get(kind, {})
        if not isinstance(entries, dict):
            dropped += 1
            continue
        for name, entry in entries.items():
            try:
                state[kind][name] = _clean_entry(kind, name, entry)
            except (ValueError, KeyError, TypeError):
                dropped += 1
    problem = (
        (
            f"{dropped} unreadable entr{'y' if dropped == 1 else 'ies'} of the notification state file dropped; "
            f"those sensors or groups start with no notification history"
        )
        if dropped
        else None
    )
    return state, problem


def dump_state(state: Mapping) -> str:
    """The state as the text of its file: sorted keys and indentation, so it diffs well."""
    return json.dumps(copy_state(state), sort_keys=True, indent=1, ensure_ascii=False, allow_nan=False) + "\n"
