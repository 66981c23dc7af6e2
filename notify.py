"""Anomaly events, webhook notifications, graph annotations and incidents, from the scores of a run.

Everything here is pure (frames, dataclasses and JSON-ready dicts in, the same out; no clock, no files,
no database) except ``post``, which sends one HTTP request. The caller, sensor_predict.py, owns the
clock, the state file and the writes.

Concepts
--------
Event
    A run of consecutive flagged windows of one sensor. Two flagged window ends belong to the same event
    exactly when they are less than or equal to one ``interval`` apart. Window ends lie on the interval
    grid, so anything between two flagged windows splits them: one window that is not flagged, or one
    interval that was never scored (a gap in the data longer than --max-gap). An event's ``start`` and
    ``end`` are the ends of its first and last flagged window (UTC); ``windows = (end - start) / interval
    + 1``. ``ongoing`` means the event reaches the last scored window, so the next run may extend it.
Event key
    ``(sensor id, start)``. A run only scores windows not scored before, so an ongoing event reappears in
    the next run starting at that run's first window; ``resume`` joins it to the event remembered in the
    state (when its first window is at most one interval after the remembered end, or overlaps it) and
    gives it back its original start. The key, the annotation points and the notifications all follow.
Incident
    Concurrent events of sensors that share a group value (a tag such as equipRef or siteRef):
    events of one group that overlap or are at most ``window`` apart, chained. Key ``(group, start)``.
    Severity: ``minor`` one sensor; ``critical`` two or more sensors and at least ``critical_share`` of
    the group's sensors, or at least ``critical_count`` sensors; ``major`` otherwise.

State
-----
A JSON-ready dict, kept by the caller in one file (``load_state`` / ``dump_state``)::

    {"format": 1,
     "sensors": {"<sensor id>": {"event": {"start": "2026-01-01T00:00:00Z", "end": "...", "windows": 3,
                                           "peak_loss": 2.5, "threshold": 0.5, "ongoing": true},
                                 "decided": "<start of the newest event sent or suppressed>",
                                 "notified_at": "<time of the last message sent>"}},
     "groups": {"<group value>": {"decided": "...", "severity": "major", "notified_at": "..."}}}

``event`` is the newest event seen (what ``resume`` continues); ``decided`` and ``notified_at`` are what
``due_notifications`` needs. Nothing is ever sent twice for one key: an item is due only when its start
is after ``decided``; an incident is due again only when its severity rises (at most once per level).

API (all times are UTC pandas Timestamps; durations pandas Timedeltas)
---------------------------------------------------------------------
``events(sensor_id, scores, interval) -> list[Event]``
    ``scores`` is model_predict.flags()'s frame (index window ends; columns loss, threshold, anomaly).
``resume(events, state, interval, scored=None) -> (list[Event], state)``
    Continue remembered events; remember each sensor's newest event. Call once per run, before the rest.
    ``scored`` (sensor id -> last window end scored) lets it see that a remembered event has ended.
``tracked_events(state, since=None) -> list[Event]``
    The remembered newest event of every sensor (ending at or after ``since``): pass them along to
    ``incidents`` (so an incident spanning runs stays one) and to ``due_notifications`` (so a message
    whose send failed is tried again next run).
``due_notifications(items, state, cooldown, now, max_age=None) -> (to_send, state)``
    ``items``: Events and/or Incidents. Returns the items to send now and the state with the
    suppressed items recorded; items to send are *not* recorded: call ``mark_sent`` with the ones whose
    ``post`` succeeded. Rules per sensor (Events) or group (Incidents):
      - new = start after ``decided``; an item already decided is never sent again;
      - a sensor/group notified less than ``cooldown`` before ``now`` gets nothing: its new items are
        recorded as decided and are *not sent later either*, even when they go on after the cooldown;
      - otherwise the newest new item is sent and older new items of the same run count as suppressed
        (with ``cooldown`` 0 every new item is sent);
      - an incident whose severity rose above the one decided for its start is sent whatever the
        cooldown (escalation), unless a newer incident of the group supersedes it;
      - with ``max_age``, new items that ended before ``now - max_age`` are recorded, not sent
        (a catch-up or backfill does not page people about last week).
``mark_sent(state, sent, now) -> state``
    Sending or suppressing an incident also records its events as decided for their sensors, so a
    sensor that later loses its group (or grouping is turned off) does not announce them again.
``new_state() -> state``, ``load_state(text) -> (state, problem)``, ``dump_state(state) -> str``
    ``load_state(None)`` (no file) is a fresh state; an empty, corrupt or foreign file also gives a fresh
    state, with ``problem`` a one-line reason for the caller to log (entries that cannot be read are
    dropped and counted the same way). Starting fresh forgets what was sent: each sensor with an ongoing
    event can get one more message, and that event's annotation restarts at the next run's first window.
``payload(item, style, context=Context()) -> dict``, ``message(item, context=Context()) -> str``
    ``style`` in ``STYLES``: ``json`` (below), ``slack`` (incoming webhook: ``{"text", "blocks"}``),
    ``teams`` (an Adaptive Card in the ``{"type": "message", "attachments": [...]}`` envelope).
``post(url, body, timeout) -> None``
    POST ``body`` as JSON; any failure raises ``NotifyError`` whose message names only scheme://host
    (``redact_url``); ``NotifyError.status`` is the HTTP status or None; ``.transient`` says whether
    trying again later may help. Redirects are not followed. Proxies come from the usual environment
    variables (https_proxy, no_proxy).
``annotation_lines(events, sensor_tag, measurement="ANOMALY_EVENTS") -> list[str]``
``chronograf_lines(events, sensor_tag, now) -> list[str]``
``incidents(events, groups, window, critical_share=0.5, critical_count=5) -> list[Incident]``
``incident_lines(incidents, group_tag, measurement="INCIDENTS") -> list[str]``
    Line protocol with second timestamps (write them with precision ``s``).

The JSON payload (style ``json``)::

    event:    {"kind": "event", "sensor_id", "sensor_tag", "start", "end" (RFC3339 UTC), "windows",
               "peak_loss", "threshold" (numbers; null when not finite), "ongoing", "measurement"
               (where the scores are), "message" (one line of text), "link" (context.link or null)}
    incident: {"kind": "incident", "group", "group_tag", "sensors" (list), "count", "group_size",
               "severity", "start", "end", "ongoing", "measurement" (the incidents measurement),
               "message", "link"}

One run, in the caller::

    state, problem = notify.load_state(text_or_None)            # log problem when not None
    found = [e for s, scores in scored.items() for e in notify.events(s, scores, interval)]
    found, state = notify.resume(found, state, interval, {s: f.index[-1] for s, f in scored.items()})
    known = found + notify.tracked_events(state, since=now - lookback)   # lookback >= window
    found_incidents = notify.incidents(known, groups, window)   # groups: {} when grouping is off
    lines = notify.annotation_lines(found, sensor_tag) + notify.incident_lines(found_incidents, group_tag)
    items = found_incidents + [e for e in known if e.sensor_id not in groups]
    due, state = notify.due_notifications(items, state, cooldown, now, max_age)
    sent = []
    for item in due:
        try:
            notify.post(url, notify.payload(item, style, context), timeout)
        except notify.NotifyError as e:
            log e; if e.transient: break                       # the host is down: try next run
        else:
            sent.append(item)
    state = notify.mark_sent(state, sent, now)
    save notify.dump_state(state) atomically, every run      # also when a send failed

Save the state after every run, not only after successful sends: ``resume`` needs each run's newest
events to keep an event's start (and so its annotation and its key) across runs, and an unsent item
is simply not marked, so it is due again (when the caller passes the tracked events along, as above).
With grouping on, grouped sensors are announced through their incidents and the others through their
events; the state keeps sensors and groups apart. Run ``incidents`` once per run over all chunks, since a
group's sensors may sit in different chunks. Two jobs must not share one state file: hosts running
different ``--shard`` parts over a shared models directory need a file each, and a group split across
shards becomes one incident per shard.

Where the graphs read annotations
---------------------------------
Grafana (InfluxDB data source, InfluxQL): an annotation query returns rows whose ``time`` is the
annotation's time, and the editor maps other columns to Text, Tags and TimeEnd; TimeEnd is taken as
is, as epoch milliseconds, and makes a region (grafana/grafana:
public/app/plugins/datasource/influxdb/components/editor/annotation/AnnotationEditor.tsx and
influx_series.ts ``getAnnotations``; PR grafana/grafana#31526 "InfluxDB: Support region annotations").
Tags columns are split at commas. So ``annotation_lines`` writes one point per event at its start
(keyed by measurement, sensor tag and time, so rewriting an event replaces its point), with fields
``text``, ``end_ms`` (end, epoch ms), ``windows``, ``peak_loss``, ``threshold``, ``ongoing``::

    SELECT "text", "end_ms", "uniqueID" FROM "ANOMALY_EVENTS" WHERE $timeFilter
    -- Text: text, TimeEnd: end_ms, Tags: uniqueID (an id containing commas becomes several tags)

``$timeFilter`` tests the start, so an event that began before the dashboard's range is not shown.

Chronograf 1.x keeps its own annotations in InfluxDB (influxdata/chronograf, influx/annotations.go and
the ``AnnotationTags`` code in chronograf.go; server/annotations.go):
  - database ``chronograf``, retention policy ``autogen``, measurement ``annotations``; Chronograf does
    not create them: the database and its ``autogen`` policy must exist and Chronograf's source user
    needs write access (influxdata/chronograf#4852);
  - one point per annotation version: time = the annotation's *end* (ns); tag ``id`` (Chronograf puts
    a UUID there) plus the annotation's own tags; fields ``deleted`` (bool), ``start_time`` (int ns),
    ``modified_time_ns`` (int), ``text`` (string), ``color`` (string, newer versions, optional);
  - read with ``SELECT * FROM "annotations" WHERE "deleted"=false AND time >= <since ns> AND
    "start_time" <= <until ns> [AND tag filters] ORDER BY time DESC``; rows of the same ``id`` are
    reduced to the one with the greatest ``modified_time_ns``; every other string column becomes an
    annotation tag, except the keys deleted, start_time, startTime, end_time, endTime,
    modified_time_ns, text, type and id;
  - an update that moves the end writes the new point and a ``deleted=true`` point at the old end;
  - ``start_time`` and ``modified_time_ns`` are parsed as int64: a point whose value is not (a float
    field, a string) makes Chronograf fail to load *all* annotations of that source ("value at index
    N is not int64", influxdata/chronograf#6160);
  - annotations belong to the InfluxDB source and show on every dashboard using it, not only the one
    they were made on (influxdata/docs-v2#1982); dashboards can filter them by tag.
``chronograf_lines`` therefore writes, per event, a point at the event's end with tags ``id`` (a UUID
derived from the event key, so every run writes the same id) and the sensor tag, fields
``deleted=false``, ``text``, ``start_time=<ns>i``, ``modified_time_ns=<now ns>i``, and, when
``resume`` moved the event's end, a ``deleted=true`` point at the old end, as Chronograf's own update
does. ``influx_interact.line_protocol`` writes numbers as floats only, so the two integer fields are
appended to its output here. It is safe only under those conditions, so it is opt-in; the lines must be
written to the ``chronograf`` database (not the scores' database), and with InfluxDB 2.x that needs a
``chronograf`` bucket with a DBRP mapping ``chronograf``/``autogen``. A person who deletes one of these
annotations in Chronograf sees it come back if a later run rewrites the event (it is still ongoing, or
a backfill covers it).

Message formats
---------------
Slack incoming webhooks take ``text`` (used as the notification fallback) and Block Kit ``blocks``;
``&``, ``<`` and ``>`` are escaped because Slack reads them as markup (``<!channel>`` pings everyone);
a section's text is at most 3000 characters and a header's 150. Teams: Microsoft 365 (Office 365)
connectors are being retired and Workflows ("When a Teams webhook request is received") accept
Adaptive Cards only, in the envelope ``{"type": "message", "attachments": [{"contentType":
"application/vnd.microsoft.card.adaptive", "contentUrl": null, "content": {AdaptiveCard}}]}``, which
connectors accept too (MicrosoftDocs/msteams-docs, webhooks-and-connectors/how-to/connectors-using.md).
Connectors allow about 4 requests a second and 100 an hour and report throttling as "HTTP error 429"
inside a 2xx answer, which ``post`` turns into a transient NotifyError.
"""
from __future__ import annotations

import copy
import http.client
import json
import math
import socket
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from influx_interact import line_protocol

STATE_FORMAT = 1
STYLES = ("json", "slack", "teams")
SEVERITIES = ("minor", "major", "critical")
CHRONOGRAF_DATABASE = "chronograf"
CHRONOGRAF_RETENTION_POLICY = "autogen"
CHRONOGRAF_MEASUREMENT = "annotations"
# Keys Chronograf refuses as annotation tags (chronograf.go annotationTagsBlacklist), plus the fields it writes.
CHRONOGRAF_RESERVED = frozenset({"deleted", "start_time", "startTime", "end_time", "endTime", "modified_time_ns",
                                 "text", "type", "id", "color"})
# Fixed forever: Chronograf annotation ids are derived from it, and a new namespace would duplicate every annotation.
_ANNOTATION_NAMESPACE = uuid.UUID("5b0f3f5e-2d0c-4c6e-9a57-3f1c8a9d2e41")
_SLACK_SECTION_LIMIT = 3000
_SLACK_HEADER_LIMIT = 150
_LISTED_SENSORS = 10


class NotifyError(RuntimeError):
    """A webhook could not be reached or refused the message. The text never holds the URL's path or query.

    ``status`` is the HTTP status when there was an answer, else None.
    """

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status

    @property
    def transient(self) -> bool:
        """No answer, throttled or a server error: the same request may succeed later."""
        return self.status is None or self.status == 429 or self.status >= 500


@dataclass(frozen=True)
class Event:
    """A run of consecutive flagged windows of one sensor; times are window ends (UTC)."""

    sensor_id: str
    start: pd.Timestamp
    end: pd.Timestamp
    windows: int
    peak_loss: float
    threshold: float  # effective threshold of the window with the peak loss
    ongoing: bool
    # Set by resume() when this run moved the end of a remembered event: where its annotation was.
    previous_end: pd.Timestamp | None = None

    @property
    def key(self) -> tuple[str, pd.Timestamp]:
        return self.sensor_id, self.start


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


@dataclass(frozen=True)
class Context:
    """What a message says about where things are."""

    measurement: str = "PREDICT_ANOMALY"
    sensor_tag: str = "uniqueID"
    group_tag: str = "group"
    incident_measurement: str = "INCIDENTS"
    link: str | None = None  # a dashboard URL shown with the message


# ---------------------------------------------------------------- events


def _check_interval(interval: pd.Timedelta) -> pd.Timedelta:
    interval = pd.Timedelta(interval)
    if interval <= pd.Timedelta(0):
        raise ValueError(f"interval must be positive, not {interval}")
    return interval


def _validate_scores(scores: pd.DataFrame) -> pd.DataFrame:
    if not isinstance(scores, pd.DataFrame):
        raise TypeError(f"scores must be a DataFrame, not {type(scores).__name__}")
    if not isinstance(scores.index, pd.DatetimeIndex):
        raise TypeError(f"scores must be indexed by window end times (DatetimeIndex), "
                        f"not {type(scores.index).__name__}")
    if scores.index.tz is None and len(scores):
        raise ValueError("scores' window end times have no time zone; give them in UTC")
    missing = [c for c in ("loss", "threshold", "anomaly") if c not in scores.columns]
    if missing:
        raise ValueError(f"scores lack the column(s) {', '.join(missing)}")
    if scores.index.has_duplicates:
        raise ValueError("scores hold the same window end twice")
    frame = scores[["loss", "threshold"]].astype("float64")
    frame["anomaly"] = scores["anomaly"].astype("boolean").fillna(False).to_numpy(dtype=bool)
    frame.index = scores.index.tz_localize("UTC") if scores.index.tz is None else scores.index.tz_convert("UTC")
    return frame.sort_index()


def events(sensor_id: str, scores: pd.DataFrame, interval: pd.Timedelta) -> list[Event]:
    """Runs of consecutive flagged windows of one sensor, oldest first.

    Parameters
    ----------
    scores : frame indexed by window end (tz-aware), columns ``loss``, ``threshold``, ``anomaly``
        (model_predict.flags(); extra columns are ignored, a missing ``anomaly`` value counts as False)
    interval : the scoring interval; flagged window ends more than one interval apart are two events

    Returns
    -------
    list of Event; ``ongoing`` on the one that ends at the last scored window
    """
    interval = _check_interval(interval)
    frame = _validate_scores(scores)
    flagged = frame[frame["anomaly"]]
    if flagged.empty:
        return []
    times = flagged.index
    breaks = np.flatnonzero((times[1:] - times[:-1]) > interval) + 1
    bounds = [0, *breaks.tolist(), len(times)]
    last_scored = frame.index[-1]
    found = []
    for first, stop in zip(bounds[:-1], bounds[1:]):
        part = flagged.iloc[first:stop]
        losses = part["loss"].to_numpy()
        peak = int(np.nanargmax(losses)) if np.isfinite(losses).any() else 0
        found.append(Event(sensor_id=sensor_id, start=part.index[0], end=part.index[-1], windows=len(part),
                           peak_loss=float(losses[peak]), threshold=float(part["threshold"].iloc[peak]),
                           ongoing=bool(part.index[-1] == last_scored)))
    return found


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
    return Event(sensor_id=members[0].sensor_id, start=start, end=end, windows=int((end - start) // interval) + 1,
                 peak_loss=peak.peak_loss, threshold=peak.threshold, ongoing=last.ongoing,
                 previous_end=tracked.end if moved else None)


def resume(found: Sequence[Event], state: Mapping, interval: pd.Timedelta,
           scored: Mapping[str, pd.Timestamp] | None = None) -> tuple[list[Event], dict]:
    """Join this run's events to the events remembered in ``state``; remember each sensor's newest event.

    An event is the continuation of the remembered one of its sensor when its first window is at most
    one interval after the remembered end, or when the two overlap (a backfill); the result keeps the
    remembered start, spans both, and has ``previous_end`` = the remembered end when the end moved.

    Parameters
    ----------
    scored : sensor id -> last window end scored in this run, for every sensor scored (flagged or not);
        a remembered ongoing event that this run scored past without continuing it is then remembered
        as ended. Without it, such an event stays ``ongoing`` in the state until a later event replaces it.

    Returns
    -------
    (events, state): the events in the order of their sensors' first appearance, oldest first per sensor;
    the new state (the given one is not changed)
    """
    interval = _check_interval(interval)
    scored = scored or {}
    new = _copy_state(state)
    by_sensor: dict[str, list[Event]] = {}
    for event in found:
        by_sensor.setdefault(event.sensor_id, []).append(event)
    out = []
    for sensor_id in dict.fromkeys([*by_sensor, *scored]):
        own, entry = by_sensor.get(sensor_id, []), new["sensors"].get(sensor_id, {})
        tracked = _event_from_dict(sensor_id, entry["event"]) if "event" in entry else None
        candidates = sorted(own + ([tracked] if tracked else []), key=lambda e: (e.start, e.end))
        clusters: list[list[Event]] = []
        for event in candidates:
            if clusters and event.start <= max(e.end for e in clusters[-1]) + interval:
                clusters[-1].append(event)
            else:
                clusters.append([event])
        joined, alone = [], None
        for members in clusters:
            if all(e is tracked for e in members):
                ended = tracked.ongoing and sensor_id in scored and scored[sensor_id] > tracked.end
                alone = replace(tracked, ongoing=False) if ended else tracked
                continue
            joined.append(members[0] if len(members) == 1 else _merge(members, tracked, interval))
        out += joined
        if joined or alone:
            newest = max(joined + ([alone] if alone else []), key=lambda e: (e.start, e.end))
            new["sensors"][sensor_id] = {**entry, "event": _event_to_dict(newest)}
    return out, new


def tracked_events(state: Mapping, since: pd.Timestamp | None = None) -> list[Event]:
    """The newest event remembered for each sensor, ending at or after ``since``, by sensor id."""
    out = []
    for sensor_id in sorted(state.get("sensors", {})):
        entry = state["sensors"][sensor_id]
        if "event" in entry:
            event = _event_from_dict(sensor_id, entry["event"])
            if since is None or event.end >= since:
                out.append(event)
    return out


# ---------------------------------------------------------------- notification state


def new_state() -> dict:
    return {"format": STATE_FORMAT, "sensors": {}, "groups": {}}


def _copy_state(state: Mapping) -> dict:
    return {"format": STATE_FORMAT, "sensors": copy.deepcopy(dict(state.get("sensors", {}))),
            "groups": copy.deepcopy(dict(state.get("groups", {})))}


def _iso(stamp: pd.Timestamp) -> str:
    return stamp.tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%SZ")


def _time(text: object) -> pd.Timestamp:
    if not isinstance(text, str):
        raise ValueError(f"{text!r} is not a time")
    stamp = pd.Timestamp(text)
    if stamp.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone")
    return stamp.tz_convert("UTC")


def _number(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _event_to_dict(event: Event) -> dict:
    return {"start": _iso(event.start), "end": _iso(event.end), "windows": event.windows,
            "peak_loss": _number(event.peak_loss), "threshold": _number(event.threshold), "ongoing": event.ongoing}


def _event_from_dict(sensor_id: str, data: Mapping) -> Event:
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
    start, end = _time(data["start"]), _time(data["end"])
    if end < start:
        raise ValueError("event ends before it starts")
    return Event(sensor_id, start, end, windows, values[0], values[1], data["ongoing"])


def _clean_entry(kind: str, name: object, entry: object) -> dict:
    """A state entry with only known, readable keys; raises ValueError (or KeyError) when it cannot be read."""
    if not isinstance(name, str) or not name or not isinstance(entry, dict):
        raise ValueError("not an object under a name")
    out = {}
    for key in ("decided", "notified_at"):
        if entry.get(key) is not None:
            out[key] = _iso(_time(entry[key]))
    if kind == "sensors" and entry.get("event") is not None:
        out["event"] = _event_to_dict(_event_from_dict(name, entry["event"]))
    if kind == "groups" and entry.get("severity") is not None:
        if entry["severity"] not in SEVERITIES:
            raise ValueError(f"severity {entry['severity']!r}")
        out["severity"] = entry["severity"]
    return out


def load_state(text: str | None) -> tuple[dict, str | None]:
    """The state from the text of its file (None: no file yet) and, if it could not all be read, why.

    Never raises for bad content: an empty, corrupt or foreign file gives a fresh state, entries that
    cannot be read are dropped; the second value then says so in one line, for the caller to log.
    """
    if text is None:
        return new_state(), None
    if not text.strip():
        return new_state(), "the notification state file is empty; starting with no notification history"
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as e:
        where = f" at line {e.lineno} column {e.colno}" if isinstance(e, json.JSONDecodeError) else ""
        return new_state(), (f"the notification state file is not valid JSON{where}; "
                             f"starting with no notification history")
    if not isinstance(data, dict) or data.get("format") != STATE_FORMAT:
        return new_state(), (f"the notification state file is not format {STATE_FORMAT} state "
                             f"(format {data.get('format') if isinstance(data, dict) else None!r}); "
                             f"starting with no notification history")
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
    problem = (f"{dropped} unreadable entr{'y' if dropped == 1 else 'ies'} of the notification state file dropped; "
               f"those sensors or groups start with no notification history") if dropped else None
    return state, problem


def dump_state(state: Mapping) -> str:
    """The state as the text of its file: sorted keys and indentation, so it diffs well."""
    return json.dumps(_copy_state(state), sort_keys=True, indent=1, ensure_ascii=False, allow_nan=False) + "\n"


def _subject(item: Event | Incident) -> tuple[str, str]:
    if isinstance(item, Event):
        return "sensors", item.sensor_id
    if isinstance(item, Incident):
        return "groups", item.group
    raise TypeError(f"expected an Event or an Incident, not {type(item).__name__}")


def _rank(severity: str | None) -> int:
    return SEVERITIES.index(severity) if severity in SEVERITIES else -1


def _decide(entry: dict, item: Event | Incident) -> None:
    """Record ``item`` as decided (sent or suppressed) in a state entry."""
    decided = _time(entry["decided"]) if "decided" in entry else None
    if decided is None or item.start > decided:
        entry["decided"] = _iso(item.start)
        if isinstance(item, Incident):
            entry["severity"] = item.severity
    elif item.start == decided and isinstance(item, Incident) and _rank(item.severity) > _rank(entry.get("severity")):
        entry["severity"] = item.severity


def _decide_members(state: dict, incident: Incident) -> None:
    """An incident announces its events too: a later run that sees them without their group keeps quiet."""
    for sensor_id, start in incident.members:
        announced = Event(sensor_id, start, start, 1, math.nan, math.nan, False)
        _decide(state["sensors"].setdefault(sensor_id, {}), announced)


def due_notifications(items: Iterable[Event | Incident], state: Mapping, cooldown: pd.Timedelta, now: pd.Timestamp,
                      max_age: pd.Timedelta | None = None) -> tuple[list[Event | Incident], dict]:
    """Which items to send now, and the state with the ones not to send recorded (see the module docstring).

    Items with the same key are one item (the one ending last). The returned state does not record the
    items to send: pass those that were sent to ``mark_sent``.
    """
    cooldown = pd.Timedelta(cooldown)
    if cooldown < pd.Timedelta(0):
        raise ValueError(f"cooldown must not be negative, not {cooldown}")
    if now.tzinfo is None:
        raise ValueError("now has no time zone; give it in UTC")
    unique: dict[tuple, Event | Incident] = {}
    for item in items:
        key = (_subject(item)[0], *item.key)
        if key not in unique or item.end >= unique[key].end:
            unique[key] = item
    by_subject: dict[tuple[str, str], list[Event | Incident]] = {}
    for item in unique.values():
        by_subject.setdefault(_subject(item), []).append(item)
    new = _copy_state(state)
    to_send: list[Event | Incident] = []
    decided_incidents: list[Incident] = []
    for (kind, name), own in by_subject.items():
        entry = dict(new[kind].get(name, {}))
        decided = _time(entry["decided"]) if "decided" in entry else None
        fresh = sorted((i for i in own if decided is None or i.start > decided), key=lambda i: i.start)
        raised = [i for i in own if isinstance(i, Incident) and decided is not None and i.start == decided
                  and _rank(i.severity) > _rank(entry.get("severity"))]
        if max_age is not None:
            stale = [i for i in fresh + raised if i.end < now - max_age]
            fresh = [i for i in fresh if i.end >= now - max_age]
            raised = [i for i in raised if i.end >= now - max_age]
            for item in stale:
                _decide(entry, item)
            decided_incidents += [i for i in stale if isinstance(i, Incident)]
        if fresh:
            notified_at = _time(entry["notified_at"]) if "notified_at" in entry else None
            if notified_at is not None and now - notified_at < cooldown:
                held, send = fresh, []
            elif cooldown > pd.Timedelta(0):
                held, send = fresh[:-1], fresh[-1:]
            else:
                held, send = [], fresh
            for item in held + raised:  # a newer incident supersedes the escalation of an older one
                _decide(entry, item)
            decided_incidents += [i for i in held + raised if isinstance(i, Incident)]
            to_send += send
        else:
            to_send += raised
        new[kind][name] = entry
    for incident in decided_incidents:
        _decide_members(new, incident)
    return to_send, new


def mark_sent(state: Mapping, sent: Iterable[Event | Incident], now: pd.Timestamp) -> dict:
    """The state with ``sent`` recorded as sent at ``now`` (decided, and the start of the cooldown)."""
    new = _copy_state(state)
    for item in sent:
        kind, name = _subject(item)
        entry = new[kind].setdefault(name, {})
        _decide(entry, item)
        entry["notified_at"] = _iso(now)
        if isinstance(item, Incident):
            _decide_members(new, item)
    return new


# ---------------------------------------------------------------- messages


def _when(stamp: pd.Timestamp) -> str:
    return stamp.strftime("%Y-%m-%d %H:%M:%S" if stamp.second else "%Y-%m-%d %H:%M")


def _span(start: pd.Timestamp, end: pd.Timestamp) -> str:
    if start == end:
        return f"at {_when(start)} UTC"
    later = end.strftime("%H:%M:%S" if end.second else "%H:%M") if end.date() == start.date() else _when(end)
    return f"{_when(start)} to {later} UTC"


def _event_text(event: Event) -> str:
    windows = f"{event.windows} window{'s' if event.windows != 1 else ''}"
    return (f"anomaly on '{event.sensor_id}': {windows}, {_span(event.start, event.end)}, "
            f"peak loss {event.peak_loss:.4g} > threshold {event.threshold:.4g}{', ongoing' if event.ongoing else ''}")


def _sensor_list(sensors: Sequence[str]) -> str:
    listed = ", ".join(f"'{s}'" for s in sensors[:_LISTED_SENSORS])
    more = len(sensors) - _LISTED_SENSORS
    return listed + (f" and {more} more" if more > 0 else "")


def _incident_text(incident: Incident, group_tag: str) -> str:
    return (f"{incident.severity} incident on {group_tag} '{incident.group}': {incident.count} of "
            f"{incident.group_size} sensors, {_span(incident.start, incident.end)}"
            f"{', ongoing' if incident.ongoing else ''}: {_sensor_list(incident.sensors)}")


def message(item: Event | Incident, context: Context = Context()) -> str:
    """One line of plain text about an event or an incident."""
    text = _event_text(item) if isinstance(item, Event) else _incident_text(item, context.group_tag)
    return text[0].upper() + text[1:]


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _facts(item: Event | Incident, context: Context) -> list[tuple[str, str]]:
    if isinstance(item, Event):
        return [("Sensor", item.sensor_id), ("From", f"{_when(item.start)} UTC"), ("To", f"{_when(item.end)} UTC"),
                ("Windows", str(item.windows)),
                ("Peak loss", f"{item.peak_loss:.4g} > threshold {item.threshold:.4g}"),
                ("Status", "ongoing" if item.ongoing else "ended")]
    return [(context.group_tag, item.group), ("Severity", item.severity),
            ("Sensors", f"{item.count} of {item.group_size}: {_sensor_list(item.sensors)}"),
            ("From", f"{_when(item.start)} UTC"), ("To", f"{_when(item.end)} UTC"),
            ("Status", "ongoing" if item.ongoing else "ended")]


def _title(item: Event | Incident, context: Context) -> str:
    if isinstance(item, Event):
        return f"Anomaly: {item.sensor_id}"
    return f"{item.severity.capitalize()} incident: {context.group_tag} {item.group}"


def _json_payload(item: Event | Incident, context: Context) -> dict:
    if isinstance(item, Event):
        return {"kind": "event", "sensor_id": item.sensor_id, "sensor_tag": context.sensor_tag,
                "start": _iso(item.start), "end": _iso(item.end), "windows": item.windows,
                "peak_loss": _number(item.peak_loss), "threshold": _number(item.threshold), "ongoing": item.ongoing,
                "measurement": context.measurement, "message": message(item, context), "link": context.link}
    return {"kind": "incident", "group": item.group, "group_tag": context.group_tag, "sensors": list(item.sensors),
            "count": item.count, "group_size": item.group_size, "severity": item.severity,
            "start": _iso(item.start), "end": _iso(item.end), "ongoing": item.ongoing,
            "measurement": context.incident_measurement, "message": message(item, context), "link": context.link}


def _slack_payload(item: Event | Incident, context: Context) -> dict:
    details = "\n".join(f"*{_slack_escape(name)}:* {_slack_escape(value)}" for name, value in _facts(item, context))
    if context.link:
        details += f"\n<{_slack_escape(context.link)}|Open dashboard>"
    return {
        "text": _slack_escape(message(item, context)),
        "blocks": [
            {"type": "header",
             "text": {"type": "plain_text", "text": _cut(_title(item, context), _SLACK_HEADER_LIMIT)}},
            {"type": "section", "text": {"type": "mrkdwn", "text": _cut(details, _SLACK_SECTION_LIMIT)}},
        ],
    }


def _teams_payload(item: Event | Incident, context: Context) -> dict:
    card = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.2",
        "body": [
            {"type": "TextBlock", "text": _title(item, context), "weight": "Bolder", "size": "Medium", "wrap": True},
            {"type": "TextBlock", "text": message(item, context), "wrap": True},
            {"type": "FactSet", "facts": [{"title": name, "value": value} for name, value in _facts(item, context)]},
        ],
    }
    if context.link:
        card["actions"] = [{"type": "Action.OpenUrl", "title": "Open dashboard", "url": context.link}]
    return {"type": "message",
            "attachments": [{"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None,
                             "content": card}]}


def payload(item: Event | Incident, style: str, context: Context = Context()) -> dict:
    """The JSON body (as a dict) announcing an event or an incident, for a webhook of ``style``."""
    _subject(item)
    builders = {"json": _json_payload, "slack": _slack_payload, "teams": _teams_payload}
    if style not in builders:
        raise ValueError(f"style {style!r} is not one of {', '.join(STYLES)}")
    return builders[style](item, context)


# ---------------------------------------------------------------- HTTP


def redact_url(url: str) -> str:
    """``scheme://host[:port]`` of an http(s) URL, the only part of a webhook URL that may be logged;
    ``<invalid URL>`` for anything else."""
    try:
        parts = urllib.parse.urlsplit(url)
        host, port = parts.hostname, parts.port
    except (ValueError, TypeError, AttributeError):
        return "<invalid URL>"
    if parts.scheme not in ("http", "https") or not host or any(c.isspace() for c in url):
        return "<invalid URL>"
    netloc = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{netloc}" + (f":{port}" if port is not None else "")


def _scrub(text: str, url: str) -> str:
    """Remove every secret part of ``url`` from a text that may be logged."""
    parts = urllib.parse.urlsplit(url)
    secrets = [url, parts.path + ("?" + parts.query if parts.query else ""), parts.path, parts.query,
               parts.netloc.rpartition("@")[0], urllib.parse.unquote(parts.path)]
    for secret in sorted(filter(None, set(secrets)), key=len, reverse=True):
        if secret != "/":
            text = text.replace(secret, "…")
    return " ".join(text.split())


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect would send the message (and maybe the secret path) somewhere not configured: refuse it."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        return None


def _reason(error: BaseException) -> str:
    if isinstance(error, urllib.error.URLError) and isinstance(error.reason, BaseException):
        error = error.reason
    if isinstance(error, (TimeoutError, socket.timeout)):
        return "timed out"
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return type(error).__name__


def post(url: str, body: Mapping, timeout: float) -> None:
    """POST ``body`` as UTF-8 JSON to a webhook; return on a 2xx answer, else raise ``NotifyError``.

    ``timeout`` (seconds) bounds the connection and each read. The error message and its traceback
    name only scheme://host: the path and query of webhook URLs are their secret.
    """
    where = redact_url(url)
    if where == "<invalid URL>":
        raise NotifyError("the webhook URL is not an http(s) URL with a host")
    data = json.dumps(body, ensure_ascii=False, allow_nan=False).encode("utf-8")
    request = urllib.request.Request(url, data=data, method="POST",
                                     headers={"Content-Type": "application/json; charset=utf-8",
                                              "User-Agent": "sensor-anomaly-notify"})
    opener = urllib.request.build_opener(_NoRedirect)
    try:
        with opener.open(request, timeout=timeout) as response:
            answer = response.read(4096)
    except urllib.error.HTTPError as e:
        try:
            detail = _scrub(e.read(300).decode("utf-8", "replace"), url)
        except (OSError, http.client.HTTPException):
            detail = ""
        finally:
            e.close()
        raise NotifyError(f"webhook at {where} answered HTTP {e.code}" + (f": {detail[:200]}" if detail else ""),
                          status=e.code) from None
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
        raise NotifyError(f"cannot reach the webhook at {where}: {_scrub(_reason(e), url)}") from None
    # Teams connectors answer throttling with a success status and this text in the body.
    if b"HTTP error 429" in answer:
        raise NotifyError(f"webhook at {where} is throttling (HTTP error 429 in its answer)", status=429)


# ---------------------------------------------------------------- annotations


def annotation_lines(found: Iterable[Event], sensor_tag: str, measurement: str = "ANOMALY_EVENTS") -> list[str]:
    """One point per event at its start, for Grafana annotation queries (see the module docstring).

    Rewriting an event (it grew, or a rerun) replaces its point: measurement, sensor tag and time are its key.
    """
    return [
        line_protocol(measurement, {sensor_tag: e.sensor_id},
                      {"text": _event_text(e), "end_ms": float(int(e.end.timestamp()) * 1000),
                       "windows": float(e.windows), "peak_loss": e.peak_loss, "threshold": e.threshold,
                       "ongoing": e.ongoing},
                      int(e.start.timestamp()))
        for e in found
    ]


def annotation_id(event: Event) -> str:
    """Chronograf annotation id of an event: a UUID derived from its key, the same in every run."""
    return str(uuid.uuid5(_ANNOTATION_NAMESPACE, f"{event.sensor_id}\n{_iso(event.start)}"))


def _with_integers(line: str, fields: Mapping[str, int]) -> str:
    """Append integer fields (``name=123i``) to a line from line_protocol, which writes numbers as floats."""
    head, _, stamp = line.rpartition(" ")
    return head + "".join(f",{name}={int(value)}i" for name, value in fields.items()) + " " + stamp


def chronograf_lines(found: Iterable[Event], sensor_tag: str, now: pd.Timestamp) -> list[str]:
    """Events as Chronograf 1.x annotations; write to database ``chronograf`` (see the module docstring).

    ``now`` becomes ``modified_time_ns``: Chronograf shows, per id, the version modified last.
    """
    if sensor_tag in CHRONOGRAF_RESERVED:
        raise ValueError(f"sensor tag {sensor_tag!r} clashes with a key of Chronograf's annotations")
    modified = int(now.value)
    lines = []
    for e in found:
        tags = {"id": annotation_id(e), sensor_tag: e.sensor_id}
        live = line_protocol(CHRONOGRAF_MEASUREMENT, tags, {"deleted": False, "text": _event_text(e)},
                             int(e.end.timestamp()))
        lines.append(_with_integers(live, {"start_time": e.start.value, "modified_time_ns": modified}))
        if e.previous_end is not None and e.previous_end != e.end:
            gone = line_protocol(CHRONOGRAF_MEASUREMENT, tags, {"deleted": True, "text": ""},
                                 int(e.previous_end.timestamp()))
            lines.append(_with_integers(gone, {"start_time": 0, "modified_time_ns": modified}))
    return lines


# ---------------------------------------------------------------- incidents


def _severity(count: int, group_size: int, critical_share: float, critical_count: int) -> str:
    if count <= 1:
        return "minor"
    if count >= critical_count or count >= critical_share * group_size:
        return "critical"
    return "major"


def incidents(found: Iterable[Event], groups: Mapping[str, str], window: pd.Timedelta,
              critical_share: float = 0.5, critical_count: int = 5) -> list[Incident]:
    """Group concurrent events of sensors sharing a group value into incidents, by group then start.

    Parameters
    ----------
    found : events, typically this run's (after ``resume``) plus ``tracked_events``; events with the same
        key are one (the one ending last)
    groups : sensor id -> group value; events of sensors not in it (or with an empty value) are left out
    window : events of a group overlapping or at most this far apart (end to start) are one incident,
        chained: A and C are together when B bridges them
    critical_share, critical_count : see the module docstring; a group's size is its number of sensors
        in ``groups``
    """
    window = pd.Timedelta(window)
    if window < pd.Timedelta(0):
        raise ValueError(f"window must not be negative, not {window}")
    if not 0 < critical_share <= 1:
        raise ValueError(f"critical_share must be in (0, 1], not {critical_share}")
    if critical_count < 2:
        raise ValueError(f"critical_count must be at least 2, not {critical_count}")
    sizes: dict[str, int] = {}
    for value in groups.values():
        if value:
            sizes[value] = sizes.get(value, 0) + 1
    unique: dict[tuple, Event] = {}
    for event in found:
        if groups.get(event.sensor_id) and (event.key not in unique or event.end >= unique[event.key].end):
            unique[event.key] = event
    by_group: dict[str, list[Event]] = {}
    for event in unique.values():
        by_group.setdefault(groups[event.sensor_id], []).append(event)
    out = []
    for group in sorted(by_group):
        clusters: list[list[Event]] = []
        for event in sorted(by_group[group], key=lambda e: (e.start, e.end)):
            if clusters and event.start <= max(e.end for e in clusters[-1]) + window:
                clusters[-1].append(event)
            else:
                clusters.append([event])
        for members in clusters:
            sensors = tuple(sorted({e.sensor_id for e in members}))
            out.append(Incident(group=group, start=min(e.start for e in members), end=max(e.end for e in members),
                                sensors=sensors, group_size=sizes[group],
                                severity=_severity(len(sensors), sizes[group], critical_share, critical_count),
                                ongoing=any(e.ongoing for e in members), members=tuple(e.key for e in members)))
    return out


def incident_lines(found: Iterable[Incident], group_tag: str, measurement: str = "INCIDENTS") -> list[str]:
    """One point per incident at its start (key: measurement, group tag, time), fields ``text``, ``severity``,
    ``sensors`` (a JSON list: ids may contain commas), ``count``, ``group_size``, ``end_ms``, ``ongoing``."""
    return [
        line_protocol(measurement, {group_tag: i.group},
                      {"text": _incident_text(i, group_tag), "severity": i.severity,
                       "sensors": json.dumps(list(i.sensors), ensure_ascii=False), "count": float(i.count),
                       "group_size": float(i.group_size), "end_ms": float(int(i.end.timestamp()) * 1000),
                       "ongoing": i.ongoing},
                      int(i.start.timestamp()))
        for i in found
    ]
