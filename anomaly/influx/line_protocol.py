"""InfluxDB line protocol: one point as one line of text, escaped as the server reads it.

Pure text, no I/O. Field values keep their InfluxDB type: ``bool`` -> boolean, ``str`` -> string,
``int`` -> integer (``5i``), any other number (NumPy's too) -> float. A field's type is fixed by the
first point written to it, so a caller that once wrote a number as a float must keep passing a float.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

# What InfluxDB unescapes after a backslash in measurements and field keys (tags: only ",= ").
NAME_UNESCAPED = ',= "'
# The range of InfluxDB's integer fields (int64); the server refuses a whole batch for one value beyond it.
INT_MIN, INT_MAX = -(2**63), 2**63 - 1


def _escape(text: str, specials: str, unescaped: str = ",= ") -> str:
    """Backslash-escape ``specials``. Backslashes stay literal, as InfluxDB reads them in names and tags,
    so one right before a character the server unescapes there, or at the end, cannot be written."""
    if "\\" in text and (text.endswith("\\") or any("\\" + char in text for char in unescaped)):
        raise ValueError(
            f"{text!r} cannot be written as line protocol: a backslash before one of "
            f"{unescaped!r} or at the end is ambiguous"
        )
    for char in specials:
        text = text.replace(char, "\\" + char)
    return text


def check_name(text: str, what: str) -> None:
    """Line protocol has no escape for newlines, and tag values cannot be empty."""
    if not text or "\n" in text or "\r" in text:
        raise ValueError(f"{what} {text!r} cannot be written as line protocol (empty or contains a line break)")


def _field_value(key: str, value: float | int | bool | str) -> str | None:
    """A field value as line protocol text; None for a non-finite float, which is left out."""
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, int):
        if not INT_MIN <= value <= INT_MAX:
            raise ValueError(f"field {key!r}: {value} is outside InfluxDB's integer range (64 bits)")
        return f"{value}i"
    if math.isfinite(value):
        return repr(float(value))
    return None


def line_protocol(
    measurement: str, tags: Mapping[str, str], fields: Mapping[str, float | int | bool | str], timestamp: int
) -> str:
    """One point as line protocol, ``timestamp`` in the write's precision; non-finite floats are left out.

    Tags are sorted by key (the order InfluxDB stores them in); fields keep the order they are given in.
    """
    head = series_head(measurement, tags)
    parts = []
    for key, value in fields.items():
        text = _field_value(key, value)
        if text is not None:
            parts.append(f"{_escape(key, ',= ', unescaped=NAME_UNESCAPED)}={text}")
    if not parts:
        raise ValueError(f"point of {measurement!r} at {timestamp} has no finite field to write")
    return f"{head}{','.join(parts)} {timestamp}"


def series_head(measurement: str, tags: Mapping[str, str]) -> str:
    """A series' measurement and tags as they begin each of its lines, the space before the fields included;
    ValueError when they cannot be written."""
    check_name(measurement, "measurement")
    tag_text = ""
    for key in sorted(tags):
        check_name(tags[key], f"tag {key}")
        tag_text += f",{_escape(key, ',= ')}={_escape(tags[key], ',= ')}"
    return f"{_escape(measurement, ', ', unescaped=NAME_UNESCAPED)}{tag_text} "


def series_lines(
    heads: Sequence[str],
    sizes: Sequence[int],
    fields: Mapping[str, Sequence | np.ndarray],
    timestamps: Sequence[int] | np.ndarray,
) -> list[str]:
    """``line_protocol`` for the points of several series: series k begins with ``heads[k]`` (series_head) and
    has the next ``sizes[k]`` points; ``fields`` maps a key to one value per point, in the order of
    ``timestamps`` (None: the point has no such field). The same text, with each name escaped once and whole
    columns formatted at a time (a tick writes a point for each of thousands of sensors)."""
    columns = [
        _column(f"{_escape(key, ',= ', unescaped=NAME_UNESCAPED)}=", key, values) for key, values in fields.items()
    ]
    out = []
    rows = zip(*columns) if columns else ((),) * len(timestamps)
    for head, stamp, parts in zip((h for h, n in zip(heads, sizes) for _ in range(n)), timestamps, rows):
        text = ",".join(part for part in parts if part is not None)
        if not text:
            raise ValueError(f"point of {head.rstrip()!r} at {stamp} has no finite field to write")
        out.append(f"{head}{text} {int(stamp)}")
    return out


def _column(prefix: str, key: str, values: Sequence | np.ndarray) -> list[str | None]:
    """``prefix`` + each value as ``_field_value`` writes it (None: left out)."""
    if isinstance(values, np.ndarray) and values.dtype.kind == "b":
        return [prefix + ("true" if v else "false") for v in values.tolist()]
    if isinstance(values, np.ndarray) and values.dtype.kind in "fiu":
        # NumPy numbers are floats in line protocol, integers too (_field_value: not a Python int).
        return [prefix + repr(v) if math.isfinite(v) else None for v in values.astype("float64").tolist()]
    return [None if v is None or (text := _field_value(key, v)) is None else prefix + text for v in values]
