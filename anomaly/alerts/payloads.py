"""What a webhook receives about an event or an incident, in the shape its service reads: plain JSON,
Slack's incoming webhooks or a Teams Adaptive Card. Pure; the formats' limits are in docs/alerts.md."""

from __future__ import annotations

from dataclasses import dataclass

from anomaly.alerts.events import Event
from anomaly.alerts.incidents import Incident
from anomaly.alerts.state import json_number, subject
from anomaly.alerts.text import event_text, incident_text, sensor_list, when
from anomaly.times import format_time

STYLES = ("json", "slack", "teams")
# Slack refuses longer texts in a section and a header.
_SLACK_SECTION_LIMIT = 3000
_SLACK_HEADER_LIMIT = 150


@dataclass(frozen=True)
class Context:
    """What a message says about where things are."""

    measurement: str = "PREDICT_ANOMALY"
    sensor_tag: str = "uniqueID"
    group_tag: str = "group"
    incident_measurement: str = "INCIDENTS"
    link: str | None = None  # a dashboard URL shown with the message


def message(item: Event | Incident, context: Context = Context()) -> str:
    """One line of plain text about an event or an incident."""
    text = event_text(item) if isinstance(item, Event) else incident_text(item, context.group_tag)
    return text[0].upper() + text[1:]


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _facts(item: Event | Incident, context: Context) -> list[tuple[str, str]]:
    if isinstance(item, Event):
        return [
            ("Sensor", item.sensor_id),
            ("From", f"{when(item.start)} UTC"),
            ("To", f"{when(item.end)} UTC"),
            ("Windows", str(item.windows)),
            ("Peak loss", f"{item.peak_loss:.4g} > threshold {item.threshold:.4g}"),
            ("Status", "ongoing" if item.ongoing else "ended"),
        ]
    return [
        (context.group_tag, item.group),
        ("Severity", item.severity),
        ("Sensors", f"{item.count} of {item.group_size}: {sensor_list(item.sensors)}"),
        ("From", f"{when(item.start)} UTC"),
        ("To", f"{when(item.end)} UTC"),
        ("Status", "ongoing" if item.ongoing else "ended"),
    ]


def _title(item: Event | Incident, context: Context) -> str:
    if isinstance(item, Event):
        return f"Anomaly: {item.sensor_id}"
    return f"{item.severity.capitalize()} incident: {context.group_tag} {item.group}"


def _json_payload(item: Event | Incident, context: Context) -> dict:
    if isinstance(item, Event):
        return {
            "kind": "event",
            "sensor_id": item.sensor_id,
            "sensor_tag": context.sensor_tag,
            "start": format_time(item.start),
            "end": format_time(item.end),
            "windows": item.windows,
            "peak_loss": json_number(item.peak_loss),
            "threshold": json_number(item.threshold),
            "ongoing": item.ongoing,
            "measurement": context.measurement,
            "message": message(item, context),
            "link": context.link,
        }
    return {
        "kind": "incident",
        "group": item.group,
        "group_tag": context.group_tag,
        "sensors": list(item.sensors),
        "count": item.count,
        "group_size": item.group_size,
        "severity": item.severity,
        "start": format_time(item.start),
        "end": format_time(item.end),
        "ongoing": item.ongoing,
        "measurement": context.incident_measurement,
        "message": message(item, context),
        "link": context.link,
    }


def _slack_payload(item: Event | Incident, context: Context) -> dict:
    details = "\n".join(f"*{_slack_escape(name)}:* {_slack_escape(value)}" for name, value in _facts(item, context))
    if context.link:
        details += f"\n<{_slack_escape(context.link)}|Open dashboard>"
    return {
        "text": _slack_escape(message(item, context)),
        "blocks": [
            {
                "type": "header",
                "text": {"type": "plain_text", "text": _cut(_title(item, context), _SLACK_HEADER_LIMIT)},
            },
            {"type": "section", "text": {"type": "mrkdwn", "text": _cut(details, _SLACK_SECTION_LIMIT)}},
        ],
    }


def _teams_payload(item: Event | Incident, context: Context) -> dict:
    card: dict = {
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
    return {
        "type": "message",
        "attachments": [
            {"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None, "content": card}
        ],
    }


def payload(item: Event | Incident, style: str, context: Context = Context()) -> dict:
    """The JSON body (as a dict) announcing an event or an incident, for a webhook of ``style`` (``STYLES``)."""
    subject(item)  # refuses anything but an Event or an Incident
    builders = {"json": _json_payload, "slack": _slack_payload, "teams": _teams_payload}
    if style not in builders:
        raise ValueError(f"style {style!r} is not one of {', '.join(STYLES)}")
    return builders[style](item, context)
