"""Events drawn on graphs: one point per event for Grafana annotation queries, and optionally the points
Chronograf 1.x reads as its own annotations. Pure line protocol (second timestamps: write with precision
``s``); where each tool reads them, and why Chronograf's fields must be integers, is in docs/alerts.md."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

import pandas as pd

from anomaly.alerts.events import Event
from anomaly.alerts.text import event_text
from anomaly.influx.line_protocol import line_protocol
from anomaly.times import format_time

CHRONOGRAF_DATABASE = "chronograf"
CHRONOGRAF_MEASUREMENT = "annotations"
# Keys Chronograf refuses as annotation tags (chronograf.go annotationTagsBlacklist), plus the fields it writes.
CHRONOGRAF_RESERVED = frozenset(
    {"deleted", "start_time", "startTime", "end_time", "endTime", "modified_time_ns", "text", "type", "id", "color"}
)
# Fixed forever: Chronograf annotation ids are derived from it, and a new namespace would duplicate every annotation.
_ANNOTATION_NAMESPACE = uuid.UUID("5b0f3f5e-2d0c-4c6e-9a57-3f1c8a9d2e41")


def annotation_lines(found: Iterable[Event], sensor_tag: str, measurement: str = "ANOMALY_EVENTS") -> list[str]:
    """One point per event at its start, fields ``text``, ``end_ms`` (end, epoch ms), ``windows``,
    ``peak_loss``, ``threshold``, ``ongoing``, ``kind`` (``anomaly``, or ``missing`` for an outage, which
    has no ``peak_loss`` nor ``threshold``).

    Rewriting an event (it grew, or a rerun) replaces its point: measurement, sensor tag and time are its key.
    """
    return [
        line_protocol(
            measurement,
            {sensor_tag: e.sensor_id},
            {
                "text": event_text(e),
                "end_ms": float(int(e.end.timestamp()) * 1000),
                "windows": float(e.windows),
                "peak_loss": float(e.peak_loss),
                "threshold": float(e.threshold),
                "ongoing": e.ongoing,
                "kind": e.kind,
            },
            int(e.start.timestamp()),
        )
        for e in found
    ]


def annotation_id(event: Event) -> str:
    """Chronograf annotation id of an event: a UUID derived from its key, the same in every run."""
    return str(uuid.uuid5(_ANNOTATION_NAMESPACE, f"{event.sensor_id}\n{format_time(event.start)}"))


def chronograf_lines(found: Iterable[Event], sensor_tag: str, now: pd.Timestamp) -> list[str]:
    """Events as Chronograf 1.x annotations: write them to database ``CHRONOGRAF_DATABASE``.

    One point per event at its end, tags ``id`` (``annotation_id``) and the sensor tag; when ``resume``
    moved the event's end, also a ``deleted=true`` point at the old end, as Chronograf's own update does.
    ``now`` becomes ``modified_time_ns``: Chronograf shows, per id, the version modified last.
    ``start_time`` and ``modified_time_ns`` are integer fields: Chronograf fails on any other type.
    """
    if sensor_tag in CHRONOGRAF_RESERVED:
        raise ValueError(f"sensor tag {sensor_tag!r} clashes with a key of Chronograf's annotations")
    modified = int(now.value)
    lines = []
    for e in found:
        tags = {"id": annotation_id(e), sensor_tag: e.sensor_id}
        versions: list[tuple[dict[str, bool | str | int], pd.Timestamp]] = [
            ({"deleted": False, "text": event_text(e), "start_time": int(e.start.value)}, e.end)
        ]
        if e.previous_end is not None and e.previous_end != e.end:
            versions.append(({"deleted": True, "text": "", "start_time": 0}, e.previous_end))
        lines += [
            line_protocol(CHRONOGRAF_MEASUREMENT, tags, {**fields, "modified_time_ns": modified}, int(at.timestamp()))
            for fields, at in versions
        ]
    return lines
