"""Events: runs of flagged windows of one sensor (flags whose windows share a reading are one run), the unit
that is annotated and announced; and outages: runs of consecutive intervals of one sensor without readings,
annotated and never announced.

Pure: a sensor's scores (scores.Scores, or a frame of them) in, Event objects out. See docs/alerts.md for
what makes two windows one event.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from anomaly.runs import runs
from anomaly.scores import Scores
from anomaly.told import joined_within

# An event's kind: a run of flagged windows, or an outage (a run of intervals without readings, the points
# the scorer wrote with kind ``missing`` and anomaly=false).
ANOMALY = "anomaly"
MISSING = "missing"


@dataclass(frozen=True)
class Event:
    """A run of flagged windows of one sensor (kind ``anomaly``), or of consecutive intervals
    without readings (kind ``missing``: ``windows`` counts those intervals, ``peak_loss`` and ``threshold``
    are NaN); times are window ends (UTC)."""

    sensor_id: str
    start: pd.Timestamp
    end: pd.Timestamp
    windows: int
    peak_loss: float
    threshold: float  # effective threshold of the window with the peak loss
    ongoing: bool
    # Set by resume() when this run moved the end of a remembered event: where its annotation was.
    previous_end: pd.Timestamp | None = None
    kind: str = ANOMALY

    @property
    def key(self) -> tuple[str, pd.Timestamp]:
        return self.sensor_id, self.start


def chain(found: list[Event], gap: pd.Timedelta) -> list[list[Event]]:
    """Events that overlap or follow one another within ``gap`` (end to start), chained: A and C are together
    when B bridges them; oldest first."""
    clusters: list[list[Event]] = []
    for event in sorted(found, key=lambda e: (e.start, e.end)):
        if clusters and event.start <= max(e.end for e in clusters[-1]) + gap:
            clusters[-1].append(event)
        else:
            clusters.append([event])
    return clusters


def check_interval(interval: pd.Timedelta) -> pd.Timedelta:
    interval = pd.Timedelta(interval)
    if interval <= pd.Timedelta(0):
        raise ValueError(f"interval must be positive, not {interval}")
    return interval


def as_scores(scores: pd.DataFrame | Scores, kind: bool = False) -> Scores:
    """``scores`` as Scores: a frame is checked, sorted and put in UTC (a missing ``anomaly`` counts as
    False); Scores, as the scorer decides them (window ends sorted, unique, UTC), are taken as they are."""
    if isinstance(scores, Scores):
        return scores
    if not isinstance(scores, pd.DataFrame):
        raise TypeError(f"scores must be a DataFrame, not {type(scores).__name__}")
    if not isinstance(scores.index, pd.DatetimeIndex):
        raise TypeError(
            f"scores must be indexed by window end times (DatetimeIndex), not {type(scores.index).__name__}"
        )
    if scores.index.tz is None and len(scores):
        raise ValueError("scores' window end times have no time zone; give them in UTC")
    missing = [c for c in ("loss", "threshold", "anomaly", *(["kind"] if kind else [])) if c not in scores.columns]
    if missing:
        raise ValueError(f"scores lack the column(s) {', '.join(missing)}")
    if scores.index.has_duplicates:
        raise ValueError("scores hold the same window end twice")
    ends = scores.index.tz_localize("UTC") if scores.index.tz is None else scores.index.tz_convert("UTC")
    order = np.argsort(ends.asi8, kind="stable")
    n = len(scores)
    return Scores(
        ends=ends[order],
        value=np.full(n, np.nan),
        loss=scores["loss"].to_numpy(dtype="float64")[order],
        threshold=scores["threshold"].to_numpy(dtype="float64")[order],
        anomaly=scores["anomaly"].astype("boolean").fillna(False).to_numpy(dtype=bool)[order],
        kind=(scores["kind"].to_numpy(dtype=object) if kind else np.full(n, None, dtype=object))[order],
    )


def events(sensor_id: str, scores: pd.DataFrame | Scores, interval: pd.Timedelta, window: int = 1) -> list[Event]:
    """Runs of flagged windows of one sensor, oldest first: flags whose windows share a reading are one event
    (told.joined_within).

    Parameters
    ----------
    scores : the scorer's Scores, or a frame indexed by window end (tz-aware, on the ``interval`` grid),
        columns ``loss``, ``threshold``, ``anomaly`` (extra columns are ignored, a missing ``anomaly`` value
        counts as False)
    interval : the scoring interval
    window : the sensor's window (its model's; 1 for the cold-start detector): two flags more than
        ``joined_within(window)`` intervals apart are two events

    Returns
    -------
    list of Event; ``ongoing`` on the one that ends at the last scored window
    """
    interval = check_interval(interval)
    checked = as_scores(scores)
    losses, limits, ends = checked.loss.astype("float64"), checked.threshold, checked.ends
    found = []
    for first, last in runs(checked.anomaly, ends, interval, joined_within(window)):
        part = losses[first : last + 1]
        peak = first + (int(np.nanargmax(part)) if np.isfinite(part).any() else 0)
        found.append(
            Event(
                sensor_id=sensor_id,
                start=ends[first],
                end=ends[last],
                windows=int((ends[last] - ends[first]) // interval) + 1,
                peak_loss=float(losses[peak]),
                threshold=float(limits[peak]),
                ongoing=last == len(ends) - 1,
            )
        )
    return found


def outages(sensor_id: str, scores: pd.DataFrame | Scores, interval: pd.Timedelta) -> list[Event]:
    """Runs of consecutive intervals without readings of one sensor, oldest first: the points of kind
    ``missing`` that are not anomalies (with --missing-is-anomaly they are, and belong to ``events``).

    ``scores`` as for ``events``, a frame with a ``kind`` column. Returns Events of kind ``missing``:
    ``windows`` counts the intervals, ``peak_loss`` and ``threshold`` are NaN, ``ongoing`` on the one that
    reaches the last point of ``scores``.
    """
    interval = check_interval(interval)
    checked = as_scores(scores, kind=True)
    ends = checked.ends
    silent = (checked.kind == MISSING) & ~checked.anomaly
    return [
        Event(
            sensor_id=sensor_id,
            start=ends[first],
            end=ends[last],
            windows=last - first + 1,
            peak_loss=math.nan,
            threshold=math.nan,
            ongoing=last == len(ends) - 1,
            kind=MISSING,
        )
        for first, last in runs(silent, ends, interval)
    ]
