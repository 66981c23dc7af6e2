"""What becomes of flagged windows: events, incidents, graph annotations and webhook messages.

The scoring job needs only announce.py (``add_arguments``, ``settings_from_args``, ``announce``); the concepts live
one per module (events, resume, state, delivery, incidents, annotations, text, payloads, webhook), all
pure but ``webhook.post`` and ``announce``. docs/alerts.md gives the rules.
"""
