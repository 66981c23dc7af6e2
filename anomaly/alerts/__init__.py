"""What becomes of flagged windows: events, incidents, graph annotations and webhook messages.

The scoring job needs only ``add_arguments``, ``settings_from_args`` and ``announce``; the concepts live
one per module (events, resume, state, delivery, incidents, annotations, text, payloads, webhook), all
pure but ``webhook.post`` and ``announce``. docs/alerts.md gives the rules.
"""
from anomaly.alerts.announce import AnnounceSettings, add_arguments, announce, settings_from_args

__all__ = ["AnnounceSettings", "add_arguments", "announce", "settings_from_args"]
