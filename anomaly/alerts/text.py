"""One-line descriptions of events and incidents: the same words in annotations, incident points and messages."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import pandas as pd

from anomaly.alerts.events import MISSING

if TYPE_CHECKING:
    from anomaly.alerts.events import Event
    from anomaly.alerts.incidents import Incident

LISTED_SENSORS = 10


def when(stamp: pd.Timestamp) -> str:
    return stamp.strftime("%Y-%m-%d %H:%M:%S" if stamp.second else "%Y-%m-%d %H:%M")


def span(start: pd.Timestamp, end: pd.Timestamp) -> str:
    if start == end:
        return f"at {when(start)} UTC"
    later = end.strftime("%H:%M:%S" if end.second else "%H:%M") if end.date() == start.date() else when(end)
    return f"{when(start)} to {later} UTC"


def sensor_list(sensors: Sequence[str]) -> str:
    listed = ", ".join(f"'{s}'" for s in sensors[:LISTED_SENSORS])
    more = len(sensors) - LISTED_SENSORS
    return listed + (f" and {more} more" if more > 0 else "")


def event_text(event: Event) -> str:
    if event.kind == MISSING:
        intervals = f"{event.windows} interval{'s' if event.windows != 1 else ''}"
        return (
            f"no readings from '{event.sensor_id}': {intervals}, {span(event.start, event.end)}"
            f"{', ongoing' if event.ongoing else ''}"
        )
    windows = f"{event.windows} window{'s' if event.windows != 1 else ''}"
    return (
        f"anomaly on '{event.sensor_id}': {windows}, {span(event.start, event.end)}, "
        f"peak loss {event.peak_loss:.4g} > threshold {event.threshold:.4g}{', ongoing' if event.ongoing else ''}"
    )


def incident_text(incident: Incident, group_tag: str) -> str:
    return (
        f"{incident.severity} incident on {group_tag} '{incident.group}': {incident.count} of "
        f"{incident.group_size} sensors, {span(incident.start, incident.end)}"
        f"{', ongoing' if incident.ongoing else ''}: {sensor_list(incident.sensors)}"
    )
