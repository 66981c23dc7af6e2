"""Events across runs: a run scores only windows not scored before, so an event that goes on is seen in
pieces; joining each piece to the event remembered in the state keeps one start, one key, one annotation
and one message for it. Anomalies and outages are remembered apart (state.SLOTS), so an outage that
lasts several runs stays one outage. Pure: state in, new state out."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import replace

import pandas as pd

from anomaly.alerts.events import ANOMALY, Event, chain, check_interval
from anomaly.alerts.state import OUTBOX, SLOTS, copy_state, event_from_dict, event_to_dict
from anomaly.times import format_time
from anomaly.told import joined_within


def _peak_key(event: Event) -> float:
    return event.peak_loss if math.isfinite(event.peak_loss) else -math.inf


def _merge(members: list[Event], tracked: Event | None, interval: pd.Timedelta) -> Event:
    """One event from overlapping or adjacent ones of a sensor; ``tracked`` (if among them) is the remembered one."""
    start = min(e.start for e in members)
    end = max(e.end for e in members)
    peak = max(members, key=_peak_key)
    # The newest information about the end wins: this run's event over the remembered one at the same end.
    last = max(members, key=lambda e: (e.end, e is not tracked))
    moved = tracked is not None and any(e is tracked for e in members) and tracked.end != end
    return Event(
        sensor_id=members[0].sensor_id,
        start=start,
        end=end,
        windows=int((end - start) // interval) + 1,
        peak_loss=peak.peak_loss,
        threshold=peak.threshold,
        ongoing=last.ongoing,
        previous_end=tracked.end if moved and tracked is not None else None,
        kind=members[0].kind,
    )


def resume(
    found: Sequence[Event],
    state: Mapping,
    interval: pd.Timedelta,
    scored: Mapping[str, pd.Timestamp] | None = None,
    kind: str = ANOMALY,
    windows: Mapping[str, int] | None = None,
) -> tuple[list[Event], dict]:
    """Join this run's events of one ``kind`` (all of ``found``) to the events of that kind remembered in
    ``state``; remember each sensor's newest one.

    An event is the continuation of the remembered one of its sensor when its first window is at most
    ``joined_within(window)`` intervals after the remembered end (as ``events`` joins flags; one interval for
    outages), or when the two overlap (a backfill); the result keeps the remembered start, spans both, and
    has ``previous_end`` = the remembered end when the end moved.
    Call it once per run, before the rest.

    Parameters
    ----------
    scored : sensor id -> last window end scored in this run, for every sensor scored (flagged or not);
        a remembered ongoing event that this run scored past without continuing it is then remembered
        as ended. Without it, such an event stays ``ongoing`` in the state until a later event replaces it.
    windows : sensor id -> its window, as given to ``events`` (1 where none is given)

    Returns
    -------
    (events, state): the events in the order of their sensors' first appearance, oldest first per sensor;
    the new state (the given one is not changed)
    """
    interval = check_interval(interval)
    if kind not in SLOTS:
        raise ValueError(f"kind must be one of {', '.join(SLOTS)}, not {kind!r}")
    if any(e.kind != kind for e in found):
        raise ValueError(f"resume joins events of one kind at a time; {kind!r} asked, others given")
    slot = SLOTS[kind]
    scored = scored or {}
    new = copy_state(state)
    by_sensor: dict[str, list[Event]] = {}
    for event in found:
        by_sensor.setdefault(event.sensor_id, []).append(event)
    out = []
    for sensor_id in dict.fromkeys([*by_sensor, *scored]):
        own, entry = by_sensor.get(sensor_id, []), new["sensors"].get(sensor_id, {})
        tracked = event_from_dict(sensor_id, entry[slot], kind) if slot in entry else None
        joined, alone = [], None
        within = joined_within((windows or {}).get(sensor_id, 1)) if kind == ANOMALY else 1
        for members in chain(own + ([tracked] if tracked else []), within * interval):
            if tracked is not None and all(e is tracked for e in members):
                ended = tracked.ongoing and sensor_id in scored and scored[sensor_id] > tracked.end
                alone = replace(tracked, ongoing=False) if ended else tracked
                continue
            joined.append(members[0] if len(members) == 1 else _merge(members, tracked, interval))
        out += joined
        if joined or alone:
            newest = max(joined + ([alone] if alone else []), key=lambda e: (e.start, e.end))
            new["sensors"][sensor_id] = {**entry, slot: event_to_dict(newest)}
    return out, new


def tracked_events(state: Mapping, since: pd.Timestamp | None = None, kind: str = ANOMALY) -> list[Event]:
    """The newest event of ``kind`` remembered for each sensor, ending at or after ``since``, by sensor id.

    Pass them along to ``incidents`` (so an incident spanning runs stays one) and to ``due_notifications``
    (so a message whose send failed is tried again next run).
    """
    out = []
    for sensor_id in sorted(state.get("sensors", {})):
        entry, slot = state["sensors"][sensor_id], SLOTS[kind]
        if slot in entry:
            event = event_from_dict(sensor_id, entry[slot], kind)
            if since is None or event.end >= since:
                out.append(event)
    return out


def unannounced(
    state: Mapping, first_scored: Mapping[str, pd.Timestamp], interval: pd.Timedelta, since: pd.Timestamp
) -> dict[str, tuple[pd.Timestamp, pd.Timestamp]]:
    """The stored scores each sensor's events have not been made from yet: [start, stop) between the
    newest window announced (the state's ``announced``) and this run's first scored window. A run that
    died after writing its scores and before its events leaves such a stretch; the next run reads it
    back, so its events and messages are the same as if it had not died. Reaches back to ``since`` at most."""
    out = {}
    for sensor_id, first in first_scored.items():
        announced = state.get("sensors", {}).get(sensor_id, {}).get("announced")
        if announced is None:
            continue
        start = max(pd.Timestamp(announced) + interval, since)
        if start < first:
            out[sensor_id] = (start, first)
    return out


def mark_announced(state: Mapping, last_scored: Mapping[str, pd.Timestamp]) -> dict:
    """The state with each sensor's newest window whose events are made (``unannounced`` reads after it);
    a backfill of older windows never moves it back."""
    new = copy_state(state)
    for sensor_id, last in last_scored.items():
        entry = new["sensors"].setdefault(sensor_id, {})
        if entry.get("announced") is None or pd.Timestamp(entry["announced"]) < last:
            entry["announced"] = format_time(last)
    return new


def outbox_events(state: Mapping) -> list[Event]:
    """The events whose message was due but did not go through (the webhook was down, the run died): the
    state keeps only each sensor's newest event, so an older one waiting for its message is kept here."""
    return [
        event_from_dict(sensor_id, data)
        for sensor_id, entry in sorted(state.get("sensors", {}).items())
        for data in entry.get(OUTBOX, [])
    ]


def with_outbox(state: Mapping, waiting: Sequence[Event]) -> dict:
    """The state whose outbox holds exactly ``waiting``."""
    new = copy_state(state)
    for entry in new["sensors"].values():
        entry.pop(OUTBOX, None)
    for event in waiting:
        new["sensors"].setdefault(event.sensor_id, {}).setdefault(OUTBOX, []).append(event_to_dict(event))
    return new
