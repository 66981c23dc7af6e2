"""Deciding which windows are anomalies: one small detector per rule, composed by ``decide``.

Scoring, evaluation and tuning all call ``decide``, so they can never disagree on a flag. A detector
takes the scores of one sensor (scores.Scores) and the context it may need and returns the scores with its
decision applied.

The rules, in the order ``decide`` applies them: a threshold on the loss of the window's shape (fixed:
threshold x ratio; or dynamic, from the recent smoothed losses), the level (an excursion to readings beyond
every level seen in training, where it begins), persistence (K windows in a row), told once (a reading lies in
``window`` windows: a flag is kept by the window that brings a bad reading not told yet, not by every window
that holds it),
flat-line (stuck far longer than training saw) and missing (no reading for longer than --missing-after:
reported, an anomaly only when asked for). Every window also gets ``score`` = loss / effective threshold,
which compares sensors: 1.0 is at the threshold. The cold-start detector (cold_start.py) flags a robust
z-score instead of a reconstruction loss, above a threshold per day calibrated from the days before it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

import clean
from anomaly import runs, thresholds, told
from anomaly.scores import Scores, no_blame


@dataclass(frozen=True)
class Context:
    """What detectors may look at besides the scores: the grid, the readings as read (before gaps are
    filled; None when only losses are known, as in tuning), the range whose decisions count,
    ``decided_from``: the windows before it are only history (a tick scores a day of them to decide one),
    so a detector may leave them undecided."""

    interval: pd.Timedelta
    series: pd.Series | None = None
    first: pd.Timestamp | None = None
    last: pd.Timestamp | None = None
    decided_from: pd.Timestamp | None = None


Detector = Callable[[Scores, Context], Scores]


@dataclass(frozen=True)
class Rules:
    """How one sensor is decided. ``threshold`` is the effective fixed threshold (saved threshold x ratio,
    or the cold-start z x ratio); ``kind`` is what a window over it is called."""

    threshold: float
    min_consecutive: int = 1
    dynamic_history: int | None = None
    dynamic_floor: float = 1.0
    levels: tuple[float, float] | None = None
    window: int = 1
    flat_limit: int | None = None
    missing_limit: int | None = None
    missing_is_anomaly: bool = False
    kind: str = "shape"


def fixed_threshold(threshold: float, kind: str) -> Detector:
    """A window is an anomaly when its loss is above ``threshold``."""

    def detect(scores: Scores, context: Context) -> Scores:
        return replace(scores, threshold=np.full(len(scores.ends), threshold)).flag(scores.loss > threshold, kind)

    return detect


def dynamic_threshold(history: int, floor: float, kind: str) -> Detector:
    """Replace the fixed threshold by a dynamic one per window (thresholds.py): from the smoothed losses of
    the ``history`` windows before it, never below ``floor`` (a share of the fixed one). Adds
    ``smoothed_loss``; a window is flagged when its smoothed loss is above its threshold. The scores must
    reach ``thresholds.history_needed`` windows before the first window whose decision counts."""

    def detect(scores: Scores, context: Context) -> Scores:
        if not len(scores.ends):
            return replace(scores, smoothed_loss=np.empty(0))
        losses = pd.Series(scores.loss.astype("float64"), index=scores.ends)
        dynamic = thresholds.rolling_dynamic_thresholds(losses, floor, history, start=_start(scores.ends, context))
        smoothed, threshold = dynamic["smoothed"].to_numpy(), dynamic["threshold"].to_numpy()
        return replace(scores, threshold=threshold, smoothed_loss=smoothed).flag(smoothed > threshold, kind)

    return detect


def _start(ends: pd.DatetimeIndex, context: Context) -> int:
    return 0 if context.decided_from is None else int(ends.searchsorted(context.decided_from))


# An excursion beyond the training range ends when the readings have stayed inside it this long: a sensor that
# hovers at the edge of its range, or goes beyond it at every daily peak, is told once, not at every crossing.
LEVEL_REARM = pd.Timedelta(days=1)


def excursion_starts(beyond: np.ndarray, rearm: int) -> np.ndarray:
    """Where an excursion begins: a position ``beyond`` with no other within the ``rearm`` positions before
    it (or none known: the first one given). Bool [n]."""
    at = np.flatnonzero(beyond)
    starts = np.zeros(len(beyond), dtype=bool)
    if len(at):
        starts[at[np.r_[True, np.diff(at) > rearm]]] = True
    return starts


def level(low: float, high: float, window: int) -> Detector:
    """A move beyond every level the sensor used in training: an excursion begins at a reading beyond
    [low, high] (the training range widened by a margin) after ``LEVEL_REARM`` of readings inside it, and the
    ``window`` windows that take in its first reading are anomalies of kind ``level``, unless their shape is
    flagged already. Levels inside the range are left to the shape and flat-line detectors; an excursion is
    told where it begins, not for as long as it lasts, however often its readings cross back and forth."""

    def detect(scores: Scores, context: Context) -> Scores:
        series = context.series
        if series is None or not len(scores.ends):
            return scores
        values = series.to_numpy(dtype="float64")
        # A missing reading (NaN) is never beyond.
        starts = excursion_starts((values > high) | (values < low), LEVEL_REARM // context.interval)
        position = np.arange(len(values))
        latest = np.maximum.accumulate(np.where(starts, position, -window))
        at = positions(series.index, scores.ends)
        moved = (at >= 0) & ((position - latest)[at] < window) & ~scores.anomaly
        if not moved.any():
            return scores
        cause = None if scores.cause is None else np.where(moved, series.index.asi8[latest[at]], scores.cause)
        return replace(scores, anomaly=scores.anomaly | moved, kind=np.where(moved, "level", scores.kind), cause=cause)

    return detect


def positions(index: pd.Index, ends: pd.DatetimeIndex) -> np.ndarray:
    """``index.get_indexer(ends)``: each end's position in ``index``, -1 where it is not there. A binary search
    when ``index`` is sorted, unique and of the same dtype (the scorer's always are): get_indexer was a
    seventh of deciding a sensor, and a tick decides thousands."""
    if index.dtype != ends.dtype or not len(index) or not (index.is_monotonic_increasing and index.is_unique):
        return index.get_indexer(ends)
    times, wanted = index.asi8, ends.asi8
    at = np.minimum(np.searchsorted(times, wanted), len(times) - 1)
    return np.where(times[at] == wanted, at, -1)


def persistence(min_consecutive: int) -> Detector:
    """Keep a flag only when the K-1 windows ending in the intervals just before it are flagged too."""

    def detect(scores: Scores, context: Context) -> Scores:
        anomaly = runs.persistent(scores.ends, scores.anomaly, min_consecutive, context.interval)
        return replace(scores, anomaly=anomaly, kind=np.where(anomaly, scores.kind, "none"))

    return detect


def told_once(window: int, kind: str) -> Detector:
    """Keep the flags that tell something new (told.py; ``kind``: the shape's). Needs the window - 1 windows
    before the first decided one."""

    def detect(scores: Scores, context: Context) -> Scores:
        if scores.cause is None or not scores.anomaly.any():
            return scores
        at = runs.grid_positions(scores.ends, context.interval)
        newest = np.full(len(at), np.nan) if scores.blame is None else scores.blame["newest"].astype("float64")
        anomaly = told.kept(
            runs.on_grid(scores.anomaly, at, False),
            runs.on_grid(scores.cause, at, -1),
            window,
            runs.on_grid(scores.kind == kind, at, False),
            runs.on_grid(scores.loss.astype("float64"), at, np.nan),
            runs.on_grid(scores.threshold, at, np.nan),
            runs.on_grid(newest, at, np.nan),
        )[at]
        return replace(scores, anomaly=anomaly, kind=np.where(anomaly, scores.kind, "none"))

    return detect


def flatline(limit: int) -> Detector:
    """A sensor stuck at one value for more than ``limit`` intervals: its scored windows are flagged
    ``flatline``, whatever their loss."""

    def detect(scores: Scores, context: Context) -> Scores:
        if context.series is None or not len(scores.ends):
            return scores
        at = positions(context.series.index, scores.ends)
        stuck = (at >= 0) & (clean.flat_run_lengths(context.series.to_numpy(dtype="float64"))[at] > limit)
        if not stuck.any():
            return scores
        return replace(scores, anomaly=scores.anomaly | stuck, kind=np.where(stuck, "flatline", scores.kind))

    return detect


def missing(limit: int, threshold: float, anomaly: bool = False) -> Detector:
    """A sensor with no reading for more than ``limit`` intervals, in [first, last]: one point per such
    interval with kind ``missing``, no value and no loss, and the fixed ``threshold``. An outage of the data
    pipeline is a data-quality fact, not a process anomaly: ``anomaly`` is false unless asked for."""

    def detect(scores: Scores, context: Context) -> Scores:
        series = context.series
        if series is None:
            return scores
        silent = clean.missing_run_lengths(series.to_numpy(dtype="float64")) > limit
        # Only [first, last] is reported: positions, since the index is sorted.
        silent[: series.index.searchsorted(context.first)] = False
        silent[series.index.searchsorted(context.last, side="right") :] = False
        if not silent.any():
            return scores
        silent = series.index[silent].difference(scores.ends)
        if not len(silent):
            return scores
        ends = scores.ends.append(silent)
        order = np.argsort(ends.asi8, kind="stable")
        n = len(silent)

        def joined(present: np.ndarray, absent: object) -> np.ndarray:
            return np.concatenate([present, np.full(n, absent, dtype=present.dtype)])[order]

        return Scores(
            ends=ends[order],
            value=joined(scores.value.astype("float64"), np.nan),
            loss=joined(scores.loss.astype("float64"), np.nan),
            threshold=joined(scores.threshold.astype("float64"), threshold),
            anomaly=joined(scores.anomaly, anomaly),
            kind=joined(scores.kind.astype(object), "missing"),
            smoothed_loss=None if scores.smoothed_loss is None else joined(scores.smoothed_loss, np.nan),
            blame=None if scores.blame is None else joined(scores.blame, no_blame(1)[0]),
        )

    return detect


def detectors(rules: Rules) -> Sequence[Detector]:
    """The detectors ``rules`` ask for, in the order they apply."""
    chain = [
        dynamic_threshold(rules.dynamic_history, rules.threshold * rules.dynamic_floor, rules.kind)
        if rules.dynamic_history
        else fixed_threshold(rules.threshold, rules.kind)
    ]
    if rules.levels is not None:
        chain.append(level(*rules.levels, rules.window))
    if rules.min_consecutive > 1:
        chain.append(persistence(rules.min_consecutive))
    chain.append(told_once(rules.window, rules.kind))
    if rules.flat_limit is not None:
        chain.append(flatline(rules.flat_limit))
    if rules.missing_limit is not None:
        chain.append(missing(rules.missing_limit, rules.threshold, rules.missing_is_anomaly))
    return chain


def decide(
    ends: pd.DatetimeIndex,
    values: np.ndarray,
    losses: np.ndarray,
    rules: Rules,
    context: Context,
    between: tuple[pd.Timestamp, pd.Timestamp] | None = None,
    blame: np.ndarray | None = None,
) -> Scores:
    """The scores of one sensor with every rule applied (see the module docstring); only its windows ending
    in ``between`` (first, last) when given. ``blame``: each window's losses.BLAME; without it a flag's cause is
    its window's newest reading."""
    n = len(ends)
    cause = ends.as_unit("ns").asi8
    if blame is not None:
        cause = cause - (rules.window - 1 - blame["worst"].astype(np.int64)) * context.interval.value
    scores = Scores(
        ends=ends,
        value=np.asarray(values, dtype="float64"),
        loss=np.asarray(losses),
        threshold=np.full(n, rules.threshold, dtype="float64"),
        anomaly=np.zeros(n, dtype=bool),
        kind=np.full(n, "none", dtype=object),
        cause=cause,
        blame=blame,
    )
    for detect in detectors(rules):
        scores = detect(scores, context)
    return scores if between is None else scores.between(*between)
