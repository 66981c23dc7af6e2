"""The fleet status as text for a terminal: a fixed-width table, one line per sensor, then the summary lines.

Widths are counted in terminal cells (wide CJK and emoji characters take two, combining ones none), and
control characters are shown as escapes, so no sensor id can break the table's lines or alignment.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from anomaly import times
from anomaly.status import DAMAGED, STATUSES, Row, duration
from anomaly.status_models import ModelInfo

ID_WIDTH = 28  # display cells of the sensor id column; the whole table then fits in 160 (see COLUMNS)
NAMES_LISTED = 10  # sensor ids named in a summary line before "and N more"
# Headers are short where the title line says what they mean (model, data, alarms, missing): with the
# sensor id cut at ID_WIDTH, a line then fits in 160 cells.
COLUMNS = (  # header, right-aligned
    ("sensor id", False),
    ("status", False),
    ("model", True),
    ("window", True),
    ("ratio", True),
    ("threshold", True),
    ("x ratio", True),
    ("alarms", True),
    ("training range", False),
    ("last scored", False),
    ("data", True),
    ("24h", True),
    ("7d", True),
    ("missing", True),
)


# ---------------------------------------------------------------- cells


def format_age(delta: pd.Timedelta) -> str:
    """An age in its largest whole unit: 59 s -> ``59s``, 90 s -> ``1m``, 5 h -> ``5h``, 12.5 d -> ``12d``.
    Cut, not exact: for reading, not for flags.

    A negative age is a time after now: --now replays a moment before the model was trained or the reading
    stamped, or a clock runs ahead. It reads ``future``, which says just that: ``-5m`` looks like a fault of
    the tool, and ``0s`` would call the model or the data brand new.
    """
    seconds = int(delta.total_seconds())
    if seconds < 0:
        return "future"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def printable(text: str) -> str:
    """Control characters as escapes (a tab as \\t), so an id cannot break the table's lines."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _cells(char: str) -> int:
    if unicodedata.combining(char):
        return 0
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def display_width(text: str) -> int:
    """Terminal cells of a printable string: wide (CJK, emoji) characters take two, combining ones none."""
    return sum(_cells(c) for c in text)


def truncate(text: str, width: int) -> str:
    """``text`` cut to at most ``width`` cells, ending in an ellipsis when anything was cut."""
    if display_width(text) <= width:
        return text
    kept, used = [], 1
    for char in text:
        if used + _cells(char) > width:
            break
        kept.append(char)
        used += _cells(char)
    return "".join(kept) + "…"


def _pad(text: str, width: int, right: bool) -> str:
    fill = " " * (width - display_width(text))
    return fill + text if right else text + fill


def aligned(lines: Sequence[Sequence[str]], right: Sequence[bool]) -> list[str]:
    """Lines of cells as text: each column as wide as its widest cell, two spaces between columns, cells
    right-aligned where ``right`` says so, no trailing spaces."""
    widths = [max(display_width(line[k]) for line in lines) for k in range(len(right))]
    return ["  ".join(_pad(cell, width, r) for cell, width, r in zip(line, widths, right)).rstrip() for line in lines]


# ---------------------------------------------------------------- the status table


def _range_text(model: ModelInfo | None) -> str:
    """``2025-10-16..2026-01-14``; a missing end is a ``?``."""
    if model is None:
        return "-"
    start, stop = (f"{t:%Y-%m-%d}" if t is not None else "?" for t in (model.training_start, model.training_stop))
    return f"{start}..{stop}"


def _window_text(row: Row) -> str:
    """The model's window; ``15->20`` when the configuration now wants another, with the intervals when
    those differ (``15x1h->15x15m``)."""
    model = row.usable
    if model is None or model.interval is None:
        return "-"
    if model.interval != row.configured_interval:
        return f"{model.window}x{duration(model.interval)}->{row.configured_window}x{duration(row.configured_interval)}"
    return str(model.window) if model.window == row.configured_window else f"{model.window}->{row.configured_window}"


def table_cells(row: Row, now: pd.Timestamp, lookback: pd.Timedelta) -> list[str]:
    """A row's cells as the table shows them, in COLUMNS order; ``-`` where there is nothing."""
    model = row.usable
    name = row.sensor_id if row.sensor_id is not None else f"({row.model.directory if row.model else ''})"
    if row.sensor_id is None:
        data_age = "-"
    elif row.last_reading is None:
        data_age = f">{duration(lookback)}"
    else:
        data_age = format_age(now - row.last_reading)
    return [
        truncate(printable(name), ID_WIDTH),
        row.status,
        format_age(now - model.trained_at) if model and model.trained_at is not None else "-",
        _window_text(row),
        f"{row.ratio:g}" if row.ratio is not None else "-",
        f"{model.threshold:.4g}" if model else "-",
        f"{row.effective_threshold:.4g}" if model else "-",
        f"{model.alarms_per_week:.2f}" if model and model.alarms_per_week is not None else "-",
        _range_text(model),
        f"{row.last_scored:%Y-%m-%d %H:%M}" if row.last_scored is not None else "-",
        data_age,
        str(row.anomalies_24h) if row.anomalies_24h is not None else "-",
        str(row.anomalies_7d) if row.anomalies_7d is not None else "-",
        f"{row.missing_24h}/{row.missing_7d}" if row.missing_24h is not None else "-",
    ]


def render_table(rows: Sequence[Row], now: pd.Timestamp, lookback: pd.Timedelta) -> str:
    """Plain fixed-width text: a title line, a header, one line per sensor. Column widths fit the
    contents; sensor ids longer than ID_WIDTH cells are cut with an ellipsis (in the table only)."""
    cells = [[header for header, _ in COLUMNS]] + [table_cells(r, now, lookback) for r in rows]
    title = (
        f"sensor status at {times.format_time(now)} (times UTC; model, data: age of the model and of the newest "
        f"reading; alarms: false-alarm runs a week the model's threshold was calibrated to; 24h, 7d: anomalies "
        f"flagged; missing: intervals without data in 24h/7d, not anomalies; -: none in the last "
        f"{duration(lookback)})"
    )
    return "\n".join([title, *aligned(cells, [right for _, right in COLUMNS])]) + "\n"


def _names(ids: Sequence[str]) -> str:
    shown = ", ".join(repr(i) for i in ids[:NAMES_LISTED])
    more = f" and {len(ids) - NAMES_LISTED} more" if len(ids) > NAMES_LISTED else ""
    return f": {shown}{more}" if ids else ""


def render_summary(rows: Sequence[Row], summary: Mapping[str, Any]) -> str:
    """The fleet summary lines printed after the table, then one line per damaged model with its problem."""
    counts = ", ".join(f"{word} {summary['status'][word]}" for word in STATUSES)
    old, anomalous, missing = summary["old_models"], summary["anomalous_24h"], summary["missing_data_24h"]
    lines = [
        f"{summary['sensors']} sensors: {counts}",
        f"models older than {summary['old_model_after']}: {len(old)}{_names(old)}",
        f"sensors with anomalies in the last 24h: {len(anomalous)}{_names(anomalous)} "
        f"({summary['anomalies_24h']} anomalies; {summary['anomalies_7d']} in 7d)",
        f"sensors with missing data in the last 24h: {len(missing)}{_names(missing)} "
        f"({summary['missing_24h']} intervals missing; {summary['missing_7d']} in 7d)",
    ]
    for row in rows:
        if row.status == DAMAGED and row.model is not None:
            name = repr(row.sensor_id) if row.sensor_id is not None else row.model.directory
            lines.append(f"damaged model {name}: {printable(row.model.problem or '')}")
    return "\n".join(lines) + "\n"
