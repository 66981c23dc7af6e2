"""Incidents: concurrent events of sensors that share a group (equipment, site), so one broken boiler is
one message, not twenty. Pure; see docs/alerts.md for the grouping and severity rules."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import pandas as pd

from anomaly.alerts.events import Event, chain
from anomaly.alerts.text import incident_text
from anomaly.influx.line_protocol import line_protocol

SEVERITIES = ("minor", "major", "critical")


@dataclass(frozen=True)
class Incident:
    """Concurrent events of the sensors of one group."""

    group: str
    start: pd.Timestamp
    end: pd.Timestamp
    sensors: tuple[str, ...]  # sorted, each once
    group_size: int  # sensors known in the group
    severity: str
    ongoing: bool
    members: tuple[tuple[str, pd.Timestamp], ...] = ()  # keys of its events

    @property
    def count(self) -> int:
        return len(self.sensors)

    @property
    def key(self) -> tuple[str, pd.Timestamp]:
        return self.group, self.start


def severity(count: int, group_size: int, critical_share: float, critical_count: int) -> str:
    """``minor`` for one sensor; ``critical`` for at least ``critical_count`` sensors or ``critical_share`` of
    the group; ``major`` otherwise."""
    if count <= 1:
        return "minor"
    if count >= critical_count or count >= critical_share * group_size:
        return "critical"
    return "major"


def _check(window: pd.Timedelta, critical_share: float, critical_count: int) -> pd.Timedelta:
    window = pd.Timedelta(window)
    if window < pd.Timedelta(0):
        raise ValueError(f"window must not be negative, not {window}")
    if not 0 < critical_share <= 1:
        raise ValueError(f"critical_share must be in (0, 1], not {critical_share}")
    if critical_count < 2:
        raise ValueError(f"critical_count must be at least 2, not {critical_count}")
    return window


def _by_group(found: Iterable[Event], groups: Mapping[str, str]) -> dict[str, list[Event]]:
    """The grouped events per group value, each key once (the copy ending last)."""
    unique: dict[tuple, Event] = {}
    for event in found:
        if groups.get(event.sensor_id) and (event.key not in unique or event.end >= unique[event.key].end):
            unique[event.key] = event
    by_group: dict[str, list[Event]] = {}
    for event in unique.values():
        by_group.setdefault(groups[event.sensor_id], []).append(event)
    return by_group


def incidents(
    found: Iterable[Event],
    groups: Mapping[str, str],
    window: pd.Timedelta,
    critical_share: float = 0.5,
    critical_count: int = 5,
) -> list[Incident]:
    """Group concurrent events of sensors sharing a group value into incidents, by group then start.

    Parameters
    ----------
    found : events, typically this run's (after ``resume``) plus ``tracked_events``; events with the same
        key are one (the one ending last)
    groups : sensor id -> group value; events of sensors not in it (or with an empty value) are left out
    window : events of a group overlapping or at most this far apart (end to start) are one incident,
        chained: A and C are together when B bridges them
    critical_share, critical_count : see ``severity``; a group's size is its number of sensors in ``groups``
    """
    window = _check(window, critical_share, critical_count)
    sizes: dict[str, int] = {}
    for value in groups.values():
        if value:
            sizes[value] = sizes.get(value, 0) + 1
    by_group = _by_group(found, groups)
    out = []
    for group in sorted(by_group):
        for members in chain(by_group[group], window):
            sensors = tuple(sorted({e.sensor_id for e in members}))
            out.append(
                Incident(
                    group=group,
                    start=min(e.start for e in members),
                    end=max(e.end for e in members),
                    sensors=sensors,
                    group_size=sizes[group],
                    severity=severity(len(sensors), sizes[group], critical_share, critical_count),
                    ongoing=any(e.ongoing for e in members),
                    members=tuple(e.key for e in members),
                )
            )
    return out


def incident_lines(found: Iterable[Incident], group_tag: str, measurement: str = "INCIDENTS") -> list[str]:
    """One point per incident at its start (key: measurement, group tag, time), fields ``text``, ``severity``,
    ``sensors`` (a JSON list: ids may contain commas), ``count``, ``group_size``, ``end_ms``, ``ongoing``;
    second timestamps."""
    return [
        line_protocol(
            measurement,
            {group_tag: i.group},
            {
                "text": incident_text(i, group_tag),
                "severity": i.severity,
                "sensors": json.dumps(list(i.sensors), ensure_ascii=False),
                "count": float(i.count),
                "group_size": float(i.group_size),
                "end_ms": float(int(i.end.timestamp()) * 1000),
                "ongoing": i.ongoing,
            },
            int(i.start.timestamp()),
        )
        for i in found
    ]
