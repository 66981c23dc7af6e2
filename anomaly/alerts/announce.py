"""After scoring: a run's flags become events, annotations and incidents in InfluxDB and messages to a
webhook, and its intervals without readings become outages, annotated only. The one place in the alerts
that touches the database, the state file and the network; what it calls is pure. The rules are in
docs/alerts.md."""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from anomaly.alerts.annotations import CHRONOGRAF_DATABASE, annotation_lines, chronograf_lines
from anomaly.alerts.delivery import Item, due_notifications, mark_sent
from anomaly.alerts.events import MISSING, Event, as_scores, events, outages
from anomaly.alerts.incidents import Incident, incident_lines, incidents
from anomaly.alerts.payloads import STYLES, Context, payload
from anomaly.alerts.resume import (
    mark_announced,
    outbox_events,
    resume,
    tracked_events,
    unannounced,
    with_outbox,
)
from anomaly.alerts.state import dump_state, load_state
from anomaly.alerts.webhook import NotifyError, post, url_problem
from anomaly.errors import ConfigError
from anomaly.files import check_writable, write_atomic
from anomaly.scores import Scores
from anomaly.settings import Common
from anomaly.times import parse_duration

if TYPE_CHECKING:
    from influx_interact import Database

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AlertSettings:
    """What becomes of events: annotations, incidents, webhook messages (see docs/alerts.md)."""

    events_measurement: str | None
    chronograf_annotations: bool
    incident_tag: str | None
    incidents_measurement: str
    incident_window: pd.Timedelta
    notify_url: str | None = field(repr=False)
    notify_style: str
    notify_cooldown: pd.Timedelta
    notify_max_age: pd.Timedelta
    state_file: Path
    # Where versions before the state directory kept the default state file (the models directory); moved
    # from there once (sensor_predict.py). None with --state-file.
    former_state_file: Path | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.events_measurement or self.incident_tag or self.notify_url or self.chronograf_annotations)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The scoring job's flags for events, incidents and notifications."""
    group = parser.add_argument_group("events, incidents and notifications")
    group.add_argument(
        "--events-measurement",
        default="ANOMALY_EVENTS",
        help="one point per anomaly event (run of flagged windows) and per outage (run of intervals without "
        "readings, field kind=missing) for graph annotations; empty for none (default ANOMALY_EVENTS)",
    )
    group.add_argument(
        "--chronograf-annotations",
        action="store_true",
        help="also write events where Chronograf 1.x keeps its annotations (database chronograf, "
        "which must exist; on 2.x a bucket chronograf mapped to chronograf/autogen)",
    )
    group.add_argument(
        "--incident-tag",
        metavar="KEY",
        help="group concurrent events of sensors sharing this tag (e.g. equipRef) into incidents",
    )
    group.add_argument("--incidents-measurement", default="INCIDENTS", help="where incidents go (default INCIDENTS)")
    group.add_argument(
        "--incident-window",
        default="1h",
        help="events of one group at most this far apart form one incident (default 1h)",
    )
    group.add_argument(
        "--notify-url",
        default=os.environ.get("SENSOR_NOTIFY_URL"),
        help="SENSOR_NOTIFY_URL: webhook that gets one message per new event or incident; "
        "prefer the variable, the URL is a secret",
    )
    group.add_argument(
        "--notify-style",
        choices=STYLES,
        default="json",
        help="message shape: plain JSON, Slack incoming webhook, Teams card (default json)",
    )
    group.add_argument(
        "--notify-cooldown",
        default="1h",
        help="after a message, nothing more for that sensor or group for this long (default 1h)",
    )
    group.add_argument(
        "--notify-max-age",
        default="1d",
        help="events that ended longer ago than this (a catch-up) are recorded, not sent (default 1d)",
    )
    group.add_argument(
        "--state-file",
        type=Path,
        help="memory of ongoing events and sent messages; it must be writable (default "
        ".sensor_predict-state-<hash>.json, one per database, output measurement and --shard, in $STATE_DIRECTORY, "
        "else $XDG_STATE_HOME/sensor-anomaly, else ~/.local/state/sensor-anomaly)",
    )


def state_file_name(common: Common, shard: str | None) -> str:
    """The state file's name for one output: the events it remembers are those of one database's output
    measurement, so a run into a scratch measurement never shares memory with production."""
    where = "\n".join([common.connection.database or common.connection.bucket or "", common.schema.output_measurement])
    digest = hashlib.sha256(f"{where}\n{shard or ''}".encode()).hexdigest()[:12]
    return f".sensor_predict-state-{digest}.json"


def settings_from_args(args: argparse.Namespace, common: Common, state_dir: Path) -> AlertSettings:
    """Validate the flags of ``add_arguments``; ``args.shard`` and the output name the default state file,
    which lies in ``state_dir`` (settings.state_dir)."""
    problem = url_problem(args.notify_url) if args.notify_url else None
    if problem:
        raise ConfigError(
            f"--notify-url / SENSOR_NOTIFY_URL: the webhook URL {problem} (the URL is a secret, so it is not shown)"
        )
    return AlertSettings(
        events_measurement=args.events_measurement or None,
        chronograf_annotations=args.chronograf_annotations,
        incident_tag=args.incident_tag or None,
        incidents_measurement=args.incidents_measurement,
        incident_window=parse_duration(args.incident_window, "--incident-window"),
        notify_url=args.notify_url or None,
        notify_style=args.notify_style,
        notify_cooldown=parse_duration(args.notify_cooldown, "--notify-cooldown", allow_zero=True),
        notify_max_age=parse_duration(args.notify_max_age, "--notify-max-age"),
        state_file=args.state_file or state_dir / state_file_name(common, args.shard),
        former_state_file=None if args.state_file else common.models_dir / state_file_name(common, args.shard),
    )


def _write_lines(
    db: Database,
    settings: AlertSettings,
    common: Common,
    found: list[Event],
    found_incidents: list[Incident],
    found_outages: list[Event],
) -> None:
    sensor_tag = common.schema.sensor_tag
    lines = (
        annotation_lines(found + found_outages, sensor_tag, settings.events_measurement)
        if settings.events_measurement
        else []
    )
    if settings.incident_tag:
        lines += incident_lines(found_incidents, settings.incident_tag, settings.incidents_measurement)
    db.write(lines)
    if settings.chronograf_annotations and found:
        db.write(chronograf_lines(found, sensor_tag, common.now), database=CHRONOGRAF_DATABASE)


def _with_unannounced(
    db: Database, state: dict, scored: Mapping[str, Scores], interval: pd.Timedelta, since: pd.Timestamp
) -> dict[str, Scores]:
    """This run's scores, each preceded by the stored scores of its sensor that an earlier run wrote but
    made no events from (it died in between: resume.unannounced)."""
    due = unannounced(state, {s: f.ends[0] for s, f in scored.items() if len(f.ends)}, interval, since)
    if not due:
        return dict(scored)
    stored = db.read_scores(list(due), min(a for a, _ in due.values()), max(b for _, b in due.values()))
    out = dict(scored)
    for sensor_id, (start, stop) in due.items():
        earlier = stored.get(sensor_id)
        if earlier is not None:
            earlier = earlier[(earlier.index >= start) & (earlier.index < stop)]
            out[sensor_id] = as_scores(pd.concat([earlier, scored[sensor_id].frame()]), kind=True)
    return out


def _events_of(items: list[Item], known: list[Event]) -> list[Event]:
    """The events behind ``items``: an event itself, an incident's member events."""
    by_key = {e.key: e for e in known}
    return [
        e
        for item in items
        for e in ([item] if isinstance(item, Event) else [by_key[k] for k in item.members if k in by_key])
    ]


def _save(path: Path, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, dump_state(state))


def _state_writable(path: Path) -> bool:
    """Whether the state file can be saved. When it cannot, nothing is sent: a message that is not
    remembered would be sent again, looking new, on every run."""
    try:
        check_writable(path.parent, "--state-file's directory")
    except ConfigError as e:
        logger.error("%s; the events are written, their messages are held until it can be", e)
        return False
    return True


def _send(
    url: str,
    due: list[Item],
    settings: AlertSettings,
    common: Common,
    counts: dict[str, int],
    went_through: Callable[[Item], None],
) -> int:
    """Post each due item, calling ``went_through`` for each one that did; how many did. A host that may
    be back later stops the rest."""
    context = Context(
        measurement=common.schema.output_measurement,
        sensor_tag=common.schema.sensor_tag,
        group_tag=settings.incident_tag or "group",
        incident_measurement=settings.incidents_measurement,
    )
    sent = 0
    for item in due:
        try:
            post(url, payload(item, settings.notify_style, context), common.connection.timeout_s)
        except NotifyError as e:
            logger.error("notification not sent: %s", e)
            counts["notifications_failed"] += 1
            if e.transient:
                break
        else:
            went_through(item)
            sent += 1
    return sent


def announce(
    db: Database,
    settings: AlertSettings,
    common: Common,
    max_catchup: pd.Timedelta,
    scored: Mapping[str, Scores],
    windows: Mapping[str, int],
    counts: dict[str, int],
) -> None:
    """Turn this run's flags into events: annotations and incidents in InfluxDB, messages to the webhook;
    and its intervals without readings into outages: annotations only, never an incident or a message.

    ``scored``: sensor id -> the run's scores (scores.Scores: window ends, ``loss``, ``threshold``,
    ``anomaly``, ``kind``); ``windows``: sensor id -> its window (flags whose windows share a reading are
    one event); ``max_catchup`` bounds how far back group tags are read; failed sends are
    counted in ``counts["notifications_failed"]``. The state file remembers ongoing events and outages and
    what was sent, so an event or an outage that lasts several runs stays one and nothing is sent twice.
    Raises OSError when the state file cannot be written, and the database's error when a write fails.
    """
    if not settings.enabled:
        return
    now, interval = common.now, common.interval
    text = settings.state_file.read_text(encoding="utf-8") if settings.state_file.exists() else None
    state, problem = load_state(text)
    if problem:
        logger.warning("%s: %s; starting with no memory of earlier events", settings.state_file, problem)
    scored = _with_unannounced(db, state, scored, interval, now - max_catchup)
    found = [
        e
        for sensor_id, scores in scored.items()
        if scores.anomaly.any()
        for e in events(sensor_id, scores, interval, windows.get(sensor_id, 1))
    ]
    last_scored = {s: f.ends[-1] for s, f in scored.items() if len(f.ends)}
    found, state = resume(found, state, interval, last_scored, windows=windows)
    silent = [
        e
        for sensor_id, scores in scored.items()
        if (scores.kind == MISSING).any()
        for e in outages(sensor_id, scores, interval)
    ]
    silent, state = resume(silent, state, interval, last_scored, kind=MISSING)
    # Remembered events are carried as far back as a message may still be sent, so one whose send failed
    # (the webhook down for hours) is tried again on every run until it goes through or grows too old.
    lookback = settings.incident_window + interval * 2
    if settings.notify_url:
        lookback = max(lookback, settings.notify_max_age)
    waiting = outbox_events(state) if settings.notify_url else []
    known = list({e.key: e for e in [*waiting, *found, *tracked_events(state, since=now - lookback)]}.values())
    groups = db.group_tags(list(scored), now - max_catchup, settings.incident_tag) if settings.incident_tag else {}
    found_incidents = incidents(known, groups, settings.incident_window)
    _write_lines(db, settings, common, found, found_incidents, silent)
    sent = 0
    writable = _state_writable(settings.state_file)
    if not writable:
        counts["alerts_failed"] = 1
    if settings.notify_url and writable:
        # An item that starts after now (a replay with --now moved back) is not news yet.
        candidates: list[Item] = [*found_incidents, *(e for e in known if e.sensor_id not in groups)]
        items = [i for i in candidates if i.start <= now]
        due, state = due_notifications(items, state, settings.notify_cooldown, now, settings.notify_max_age)

        delivered: set[tuple] = set()

        def went_through(item: Item) -> None:
            # Saved at once: a run killed right after a send must not send it again.
            nonlocal state
            state = mark_sent(state, [item], now)
            delivered.add(item.key)
            _save(settings.state_file, state)

        sent = _send(settings.notify_url, due, settings, common, counts, went_through)
        state = with_outbox(state, _events_of([i for i in due if i.key not in delivered], known))
    state = mark_announced(state, last_scored)
    if writable and (scored or text is not None):
        _save(settings.state_file, state)
    logger.info(
        "%d events (%d incidents), %d outages, %d notifications sent",
        len(found),
        len(found_incidents),
        len(silent),
        sent,
    )
