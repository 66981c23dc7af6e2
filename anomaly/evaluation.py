"""Detection quality: labelled events and metrics of flags against labels. Pure: no I/O. The choice of a
ratio from these metrics is ratio_choice.py's.

Two time axes meet here, both on the same interval grid (UTC):

- **labels**: boolean, indexed by interval start; True when a person marked a reading in that interval.
- **flags** and **loss**: indexed by window end (the start of a window's last interval), as
  sensor_predict.py writes them; one entry per scored window.

A window ending at ``t`` covers the intervals ``t - (window-1)*interval .. t``, so a labelled event
whose intervals run from ``start`` to ``end`` (both interval starts) is seen by every window whose end
lies in its **detection span** ``[start, end + (window-1)*interval]``.

Metric definitions (the README repeats them):

- A scored window is **positive** when its end lies in some event's detection span (it covers a labelled
  interval). Point-wise precision = flagged positive windows / flagged windows; recall = flagged
  positive windows / positive windows; F1 their harmonic mean.
- An **event** is a run of consecutive labelled intervals. It is **scored** when at least one scored
  window ends in its detection span, and **detected** when at least one *flagged* window ends there.
  Event recall = detected events / scored events. Events with no scored window are left out (counted in
  ``events_unscored``): nothing could have flagged them.
- **Detection delay** of a detected event = end of the first flagged window in its detection span -
  event start. Mean and max over detected events, in minutes.
- A **flag run** is a run of flagged windows whose windows share a reading: ends at most window-1
  intervals apart (one apart when window is 1 or 2), as sensor_predict.py joins flags into events
  (told.joined_within: a reading is told once, so one anomaly's flags may lie a few windows apart). A run
  **detects** when one of its windows ends in some event's detection span; otherwise it is a **false
  alarm**. Event precision = detecting runs / all runs; event F1 = harmonic mean of event recall and event
  precision.
- **False alarms per week** = false-alarm runs / scored weeks, where scored weeks =
  (last window end - first window end + one interval) / 7 days.

A point the scorer wrote for an interval with no reading (kind ``missing``, no loss) is not a window: the
review tools leave it out before anything here sees it (review.py), so an outage of the data is never
scored, flagged or a false alarm, whatever its ``anomaly`` field says.

Rules for empty cases: a ratio whose denominator is zero is NaN (precision with no flags, recall with
no positive windows or no scored events, delays with no detection, false alarms per week with no scored
window). An F1 is NaN only when its recall is NaN; when recall is defined and precision is NaN (nothing
flagged) or both are 0, F1 is 0: flagging nothing detects nothing. False alarms per week is 0 when windows
were scored and nothing was flagged.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields

import numpy as np
import pandas as pd

from anomaly.runs import runs
from anomaly.told import joined_within

WEEK = pd.Timedelta(days=7)


@dataclass(frozen=True)
class Metrics:
    """Detection quality of one sensor (or a fleet, from ``combine``) over one time range.

    Counts are whole numbers; rates are in [0, 1] or NaN; delays are in minutes or NaN.
    """

    windows: int  # scored windows
    positive_windows: int  # scored windows covering a labelled interval
    flagged_windows: int
    true_positive_windows: int  # flagged and positive
    precision: float
    recall: float
    f1: float
    events: int  # labelled events with at least one scored window in their detection span
    events_unscored: int  # labelled events with none (left out of event recall)
    events_detected: int
    event_recall: float
    flag_runs: int
    detecting_runs: int  # flag runs touching a detection span
    event_precision: float
    event_f1: float
    mean_delay_min: float
    max_delay_min: float
    false_alarms: int  # flag runs touching no detection span
    weeks: float  # scored time span in weeks
    false_alarms_per_week: float


METRIC_NAMES = tuple(f.name for f in fields(Metrics))


# ---------------------------------------------------------------- validation


def validate_bool_series(series: pd.Series, name: str) -> pd.Series:
    """A copy with a UTC DatetimeIndex, sorted, without duplicate times, values bool (NaN -> False).

    Raises TypeError when ``series`` is not a Series on a DatetimeIndex, ValueError when the index has
    a duplicate time or a value is not boolean-like (True/False/1/0/NaN).
    """
    if not isinstance(series, pd.Series) or not isinstance(series.index, pd.DatetimeIndex):
        raise TypeError(f"{name} must be a pandas Series with a DatetimeIndex, not {type(series).__name__}")
    out = series.copy()
    index = pd.DatetimeIndex(out.index)
    if index.tz is None:
        out.index = index.tz_localize("UTC")
    out = out.sort_index()
    if out.index.has_duplicates:
        raise ValueError(f"{name} has duplicate times, e.g. {out.index[out.index.duplicated()][0]}")
    values = out.to_numpy(dtype=object)
    known = np.array(
        [
            v is None
            or v is True
            or v is False
            or v is np.True_
            or v is np.False_
            or (isinstance(v, (int, float, np.number)) and (v in (0, 1) or v != v))
            for v in values
        ],
        dtype=bool,
    )
    if not known.all():
        raise ValueError(f"{name} must hold booleans, found {values[~known][0]!r}")
    # A missing value (None, NaN) is no flag; built from the checked values, as fillna(False) on a float
    # column is deprecated by pandas.
    return pd.Series([v is not None and v == v and bool(v) for v in values], index=out.index, name=out.name, dtype=bool)


def _check_window(window: int, interval: pd.Timedelta) -> None:
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 1:
        raise ValueError(f"window must be a whole number >= 1, not {window!r}")
    if not isinstance(interval, pd.Timedelta) or interval <= pd.Timedelta(0):
        raise ValueError(f"interval must be a positive Timedelta, not {interval!r}")


# ---------------------------------------------------------------- events and runs


def label_events(labels: pd.Series, interval: pd.Timedelta | None = None) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
    """Runs of consecutive labelled intervals -> [(start, end), ...], both interval starts, inclusive.

    ``labels``: boolean by interval start. Without ``interval``, labelled entries next to each other in
    the series form one event (the series must then hold every interval of the grid, as
    ``labels_on_grid`` gives); with it, they must also be exactly one interval apart.

    >>> t = pd.date_range("2026-01-01", periods=6, freq="15min", tz="UTC")
    >>> label_events(pd.Series([0, 1, 1, 0, 1, 0], index=t).astype(bool))  # doctest: +NORMALIZE_WHITESPACE
    [(Timestamp('2026-01-01 00:15:00+0000', tz='UTC'), Timestamp('2026-01-01 00:30:00+0000', tz='UTC')),
     (Timestamp('2026-01-01 01:00:00+0000', tz='UTC'), Timestamp('2026-01-01 01:00:00+0000', tz='UTC'))]
    """
    labels = validate_bool_series(labels, "labels")
    index = pd.DatetimeIndex(labels.index)
    return [(index[a], index[b]) for a, b in runs(labels.to_numpy(), index, interval)]


def labels_on_grid(
    labelled: Iterable[pd.Timestamp], start: pd.Timestamp, stop: pd.Timestamp, interval: pd.Timedelta
) -> pd.Series:
    """Boolean series on the interval grid of [start, stop) (start floored to the interval), True at the
    starts in ``labelled`` (floored to the interval; those outside the range are ignored)."""
    index = pd.date_range(start.floor(interval), stop, freq=interval, inclusive="left")
    marked = pd.DatetimeIndex(list(labelled))
    if marked.tz is None:
        marked = marked.tz_localize("UTC")
    return pd.Series(index.isin(marked.floor(interval)), index=index, dtype=bool)


def detection_spans(
    events: Sequence[tuple[pd.Timestamp, pd.Timestamp]], window: int, interval: pd.Timedelta
) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
    """[(start, end + (window-1)*interval), ...]: the window ends that see each event (inclusive)."""
    return [(start, end + (window - 1) * interval) for start, end in events]


# ---------------------------------------------------------------- metrics


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else math.nan


def _f1(precision: float, recall: float) -> float:
    if math.isnan(recall):
        return math.nan
    if math.isnan(precision) or precision + recall == 0:
        return 0.0
    return 2 * precision * recall / (precision + recall)


def evaluate(flags: pd.Series, labels: pd.Series, window: int, interval: pd.Timedelta) -> Metrics:
    """Metrics of ``flags`` against ``labels``, as defined in the module docstring.

    Parameters
    ----------
    flags : boolean Series by window end, one entry per scored window (NaN counts as not flagged)
    labels : boolean Series by interval start, on the interval grid (``labels_on_grid``); it should reach
        back (window-1) intervals before the first window end, or events starting earlier are cut
    window : intervals per window (the model's), >= 1
    interval : the grid's step
    """
    _check_window(window, interval)
    flags = validate_bool_series(flags, "flags")
    events = label_events(labels, interval)
    ends = pd.DatetimeIndex(flags.index)
    flagged = flags.to_numpy()
    positive = np.zeros(len(ends), dtype=bool)
    scored_events = detected = 0
    delays: list[float] = []
    for start, last in detection_spans(events, window, interval):
        inside = (ends >= start) & (ends <= last)
        if not inside.any():
            continue
        scored_events += 1
        positive |= inside
        hits = ends[inside & flagged]
        if len(hits):
            detected += 1
            delays.append((hits[0] - start) / pd.Timedelta(minutes=1))
    flag_runs = runs(flagged, ends, interval, joined_within(window))
    detecting = sum(bool(positive[a : b + 1].any()) for a, b in flag_runs)
    true_positive = int((flagged & positive).sum())
    precision = _ratio(true_positive, int(flagged.sum()))
    recall = _ratio(true_positive, int(positive.sum()))
    event_recall = _ratio(detected, scored_events)
    event_precision = _ratio(detecting, len(flag_runs))
    weeks = ((ends[-1] - ends[0]) + interval) / WEEK if len(ends) else math.nan
    false_alarms = len(flag_runs) - detecting
    return Metrics(
        windows=len(ends),
        positive_windows=int(positive.sum()),
        flagged_windows=int(flagged.sum()),
        true_positive_windows=true_positive,
        precision=precision,
        recall=recall,
        f1=_f1(precision, recall),
        events=scored_events,
        events_unscored=len(events) - scored_events,
        events_detected=detected,
        event_recall=event_recall,
        flag_runs=len(flag_runs),
        detecting_runs=detecting,
        event_precision=event_precision,
        event_f1=_f1(event_precision, event_recall),
        mean_delay_min=float(np.mean(delays)) if delays else math.nan,
        max_delay_min=float(np.max(delays)) if delays else math.nan,
        false_alarms=false_alarms,
        weeks=weeks,
        false_alarms_per_week=false_alarms / weeks if len(ends) else math.nan,
    )


def combine(parts: Sequence[Metrics]) -> Metrics:
    """Fleet metrics: counts and weeks summed over sensors, rates recomputed from the sums (micro-average),
    mean delay over all detected events, max delay the largest."""
    total = {
        name: sum(getattr(m, name) for m in parts)
        for name in (
            "windows",
            "positive_windows",
            "flagged_windows",
            "true_positive_windows",
            "events",
            "events_unscored",
            "events_detected",
            "flag_runs",
            "detecting_runs",
            "false_alarms",
        )
    }
    weeks = sum(m.weeks for m in parts if m.windows)
    delay_sum = sum(m.mean_delay_min * m.events_detected for m in parts if m.events_detected)
    delay_max = max((m.max_delay_min for m in parts if m.events_detected), default=math.nan)
    precision = _ratio(total["true_positive_windows"], total["flagged_windows"])
    recall = _ratio(total["true_positive_windows"], total["positive_windows"])
    event_recall = _ratio(total["events_detected"], total["events"])
    event_precision = _ratio(total["detecting_runs"], total["flag_runs"])
    return Metrics(
        **{k: total[k] for k in ("windows", "positive_windows", "flagged_windows", "true_positive_windows")},
        precision=precision,
        recall=recall,
        f1=_f1(precision, recall),
        events=total["events"],
        events_unscored=total["events_unscored"],
        events_detected=total["events_detected"],
        event_recall=event_recall,
        flag_runs=total["flag_runs"],
        detecting_runs=total["detecting_runs"],
        event_precision=event_precision,
        event_f1=_f1(event_precision, event_recall),
        mean_delay_min=delay_sum / total["events_detected"] if total["events_detected"] else math.nan,
        max_delay_min=delay_max,
        false_alarms=total["false_alarms"],
        weeks=weeks,
        false_alarms_per_week=total["false_alarms"] / weeks if total["windows"] else math.nan,
    )
