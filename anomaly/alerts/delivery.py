"""Which events and incidents to send now: each at most once, not more often than the cooldown, not when
they are old news. Pure: items and state in, items to send and the new state out; the caller sends them
and records what went through with ``mark_sent``. The rules are in docs/alerts.md."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import pandas as pd

from anomaly.alerts.events import Event
from anomaly.alerts.incidents import SEVERITIES, Incident
from anomaly.alerts.state import copy_state, parse_stamp, subject
from anomaly.times import format_time

Item = Event | Incident


def _rank(severity: str | None) -> int:
    return SEVERITIES.index(severity) if severity in SEVERITIES else -1


def _decide(entry: dict, item: Item) -> None:
    """Record ``item`` as decided (sent or suppressed) in a state entry."""
    decided = parse_stamp(entry["decided"]) if "decided" in entry else None
    if decided is None or item.start > decided:
        entry["decided"] = format_time(item.start)
        if isinstance(item, Incident):
            entry["severity"] = item.severity
    elif item.start == decided and isinstance(item, Incident) and _rank(item.severity) > _rank(entry.get("severity")):
        entry["severity"] = item.severity


def _decide_members(state: dict, incident: Incident) -> None:
    """An incident announces its events too: a later run that sees them without their group keeps quiet."""
    for sensor_id, start in incident.members:
        announced = Event(sensor_id, start, start, 1, math.nan, math.nan, False)
        _decide(state["sensors"].setdefault(sensor_id, {}), announced)


def _told(state: Mapping, incident: Incident) -> bool:
    """Every event of ``incident`` was announced already, in another incident or alone: the same news grouped
    anew (a run that knows fewer of a sensor's events chains them otherwise), never sent again."""
    sensors = state.get("sensors", {})

    def announced(sensor_id: str, start: pd.Timestamp) -> bool:
        decided = sensors.get(sensor_id, {}).get("decided")
        return decided is not None and start <= parse_stamp(decided)

    return bool(incident.members) and all(announced(sensor_id, start) for sensor_id, start in incident.members)


def _by_subject(items: Iterable[Item]) -> dict[tuple[str, str], list[Item]]:
    """Items per sensor or group; items with the same key are one item (the one ending last)."""
    unique: dict[tuple, Item] = {}
    for item in items:
        key = (subject(item)[0], *item.key)
        if key not in unique or item.end >= unique[key].end:
            unique[key] = item
    by_subject: dict[tuple[str, str], list[Item]] = {}
    for item in unique.values():
        by_subject.setdefault(subject(item), []).append(item)
    return by_subject


def _due(
    entry: dict, own: list[Item], cooldown: pd.Timedelta, now: pd.Timestamp, max_age: pd.Timedelta | None
) -> tuple[list[Item], list[Item]]:
    """The items of one sensor or group to send, and those recorded as decided in ``entry`` instead."""
    decided = parse_stamp(entry["decided"]) if "decided" in entry else None
    fresh = sorted((i for i in own if decided is None or i.start > decided), key=lambda i: i.start)
    raised: list[Item] = [
        i
        for i in own
        if isinstance(i, Incident)
        and decided is not None
        and i.start == decided
        and _rank(i.severity) > _rank(entry.get("severity"))
    ]
    recorded: list[Item] = []
    if max_age is not None:
        recorded = [i for i in fresh + raised if i.end < now - max_age]
        fresh = [i for i in fresh if i.end >= now - max_age]
        raised = [i for i in raised if i.end >= now - max_age]
    if not fresh:
        send: list[Item] = raised
    else:
        # The cooldown runs in event time, from the end of the item last sent (files written before it was
        # kept: from the message's time): a catch-up that sends an old blip does not mute a new spike.
        anchor = entry.get("notified_end", entry.get("notified_at"))
        if anchor is not None and fresh[-1].start < parse_stamp(anchor) + cooldown:
            held, send = fresh, []
        elif cooldown > pd.Timedelta(0):
            held, send = fresh[:-1], fresh[-1:]
        else:
            held, send = [], fresh
        recorded += held + raised  # a newer incident supersedes the escalation of an older one
    for item in recorded:
        _decide(entry, item)
    return send, recorded


def due_notifications(
    items: Iterable[Item],
    state: Mapping,
    cooldown: pd.Timedelta,
    now: pd.Timestamp,
    max_age: pd.Timedelta | None = None,
) -> tuple[list[Item], dict]:
    """Which items to send now, and the state with the ones not to send recorded.

    ``items``: Events and/or Incidents; items with the same key are one item (the one ending last).
    The returned state does not record the items to send: pass those that were sent to ``mark_sent``.
    With ``max_age``, items that ended before ``now - max_age`` are recorded, not sent.
    """
    cooldown = pd.Timedelta(cooldown)
    if cooldown < pd.Timedelta(0):
        raise ValueError(f"cooldown must not be negative, not {cooldown}")
    if now.tzinfo is None:
        raise ValueError("now has no time zone; give it in UTC")
    new = copy_state(state)
    to_send: list[Item] = []
    decided_incidents: list[Incident] = []
    for (kind, name), own in _by_subject(items).items():
        entry = dict(new[kind].get(name, {}))
        told = [i for i in own if isinstance(i, Incident) and _told(state, i)]
        send, recorded = _due(entry, [i for i in own if i not in told], cooldown, now, max_age)
        for item in told:
            _decide(entry, item)
        to_send += send
        decided_incidents += [i for i in recorded if isinstance(i, Incident)]
        new[kind][name] = entry
    for incident in decided_incidents:
        _decide_members(new, incident)
    return to_send, new


def mark_sent(state: Mapping, sent: Iterable[Item], now: pd.Timestamp) -> dict:
    """The state with ``sent`` recorded as sent at ``now``: decided, and the cooldown running from the end
    of the newest item sent.

    Sending an incident also records its events as decided for their sensors, so a sensor that later
    loses its group (or grouping is turned off) does not announce them again.
    """
    new = copy_state(state)
    for item in sent:
        kind, name = subject(item)
        entry = new[kind].setdefault(name, {})
        _decide(entry, item)
        entry["notified_at"] = format_time(now)
        ends = [min(now, item.end), *([parse_stamp(entry["notified_end"])] if "notified_end" in entry else [])]
        entry["notified_end"] = format_time(max(ends))
        if isinstance(item, Incident):
            _decide_members(new, item)
    return new
