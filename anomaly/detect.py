"""Deciding which windows are anomalies: one small detector per rule, composed by ``decide``.

Scoring, evaluation and tuning all call ``decide``, so they can never disagree on a flag. A detector
takes the scores frame and the context it may need and returns the frame with its decision applied:

    frame, indexed by window end (UTC, on the interval grid): ``value``, ``loss``, ``threshold`` (the
    effective one), ``anomaly`` (bool) and ``kind`` (why it was flagged; ``none`` when it was not)

The rules, in the order ``decide`` applies them: a threshold (fixed: threshold x ratio; or dynamic,
from the recent smoothed losses), persistence (K windows in a row), flat-line (stuck far longer than
training saw) and missing (no reading for longer than --missing-after). The cold-start detector is the
same fixed threshold applied to a robust z-score instead of a reconstruction loss (cold_start.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

import clean
from anomaly import thresholds


@dataclass(frozen=True)
class Context:
    """What detectors may look at besides the scores: the grid, the readings as read (before gaps are
    filled; None when only losses are known, as in tuning), and the range whose decisions count."""

    interval: pd.Timedelta
    series: pd.Series | None = None
    first: pd.Timestamp | None = None
    last: pd.Timestamp | None = None


Detector = Callable[[pd.DataFrame, Context], pd.DataFrame]


@dataclass(frozen=True)
class Rules:
    """How one sensor is decided. ``threshold`` is the effective fixed threshold (saved threshold x ratio,
    or the cold-start z x ratio); ``kind`` is what a window over it is called."""

    threshold: float
    min_consecutive: int = 1
    dynamic_history: int | None = None
    flat_limit: int | None = None
    missing_limit: int | None = None
    kind: str = "reconstruction"


def scores_frame(ends: pd.DatetimeIndex, values: np.ndarray, losses: np.ndarray, threshold: float) -> pd.DataFrame:
    """The frame detectors work on, nothing flagged yet. The losses keep their dtype until ``decide`` is done,
    so a float32 loss is compared with the threshold in float32, as the engines compute it."""
    return pd.DataFrame(
        {
            "value": values,
            "loss": np.asarray(losses),
            "threshold": threshold,
            "anomaly": np.zeros(len(ends), dtype=bool),
            "kind": "none",
        },
        index=ends,
    )


def _flag(scores: pd.DataFrame, anomaly: np.ndarray, kind: str) -> pd.DataFrame:
    return scores.assign(anomaly=anomaly, kind=np.where(anomaly, kind, "none"))


def fixed_threshold(threshold: float, kind: str) -> Detector:
    """A window is an anomaly when its loss is above ``threshold``."""

    def detect(scores: pd.DataFrame, context: Context) -> pd.DataFrame:
        return _flag(scores.assign(threshold=threshold), scores["loss"].to_numpy() > threshold, kind)

    return detect


def dynamic_threshold(history: int, kind: str) -> Detector:
    """Replace the fixed threshold by a dynamic one per window (thresholds.py): from the smoothed losses of
    the ``history`` windows before it, never below the fixed one, which is its floor. Adds
    ``smoothed_loss``; a window is flagged when its smoothed loss is above its threshold. The frame must
    reach ``thresholds.history_needed`` windows before the first window whose decision counts."""

    def detect(scores: pd.DataFrame, context: Context) -> pd.DataFrame:
        if scores.empty:
            return scores.assign(smoothed_loss=pd.Series(dtype="float64"))
        floor = float(scores["threshold"].iloc[0])
        dynamic = thresholds.rolling_dynamic_thresholds(scores["loss"].astype("float64"), floor, history)
        anomaly = (dynamic["smoothed"] > dynamic["threshold"]).to_numpy()
        return _flag(
            scores.assign(threshold=dynamic["threshold"].to_numpy(), smoothed_loss=dynamic["smoothed"].to_numpy()),
            anomaly,
            kind,
        )

    return detect


def persistent(above: pd.Series, min_consecutive: int, interval: pd.Timedelta | None) -> np.ndarray:
    """Where a window and the ``min_consecutive`` - 1 windows ending in the intervals just before it are all
    ``above``; a window missing among them (a gap) breaks the run."""
    if min_consecutive > 1 and len(above):
        grid = pd.date_range(above.index[0], above.index[-1], freq=interval)
        run = above.reindex(grid, fill_value=False).astype(int).rolling(min_consecutive, min_periods=1).sum()
        above = (run.reindex(above.index) >= min_consecutive) & above
    return above.to_numpy(dtype=bool)


def persistence(min_consecutive: int) -> Detector:
    """Keep a flag only when the K-1 windows ending in the intervals just before it are flagged too."""

    def detect(scores: pd.DataFrame, context: Context) -> pd.DataFrame:
        anomaly = persistent(scores["anomaly"], min_consecutive, context.interval)
        return scores.assign(anomaly=anomaly, kind=np.where(anomaly, scores["kind"], "none"))

    return detect


def flatline(limit: int) -> Detector:
    """A sensor stuck at one value for more than ``limit`` intervals: its scored windows are flagged
    ``flatline``, whatever their loss."""

    def detect(scores: pd.DataFrame, context: Context) -> pd.DataFrame:
        if context.series is None or scores.empty:
            return scores
        at = context.series.index.get_indexer(scores.index)
        stuck = (at >= 0) & (clean.flat_run_lengths(context.series.to_numpy(dtype="float64"))[at] > limit)
        if not stuck.any():
            return scores
        return scores.assign(
            anomaly=scores["anomaly"].to_numpy() | stuck, kind=np.where(stuck, "flatline", scores["kind"])
        )

    return detect


def missing(limit: int, threshold: float) -> Detector:
    """A sensor with no reading for more than ``limit`` intervals, in [first, last]: one point per such
    interval with kind ``missing``, no value and no loss, and the fixed ``threshold``."""

    def detect(scores: pd.DataFrame, context: Context) -> pd.DataFrame:
        series = context.series
        if series is None:
            return scores
        silent = (
            (clean.missing_run_lengths(series.to_numpy(dtype="float64")) > limit)
            & (series.index >= context.first)
            & (series.index <= context.last)
        )
        silent = series.index[silent].difference(scores.index) if silent.any() else series.index[:0]
        if not len(silent):
            return scores
        rows = pd.DataFrame(
            {"value": np.nan, "loss": np.nan, "threshold": threshold, "anomaly": True, "kind": "missing"}, index=silent
        )
        return pd.concat([scores, rows]).sort_index() if len(scores) else rows

    return detect


def detectors(rules: Rules) -> Sequence[Detector]:
    """The detectors ``rules`` ask for, in the order they apply."""
    chain = [
        dynamic_threshold(rules.dynamic_history, rules.kind)
        if rules.dynamic_history
        else fixed_threshold(rules.threshold, rules.kind)
    ]
    if rules.min_consecutive > 1:
        chain.append(persistence(rules.min_consecutive))
    if rules.flat_limit is not None:
        chain.append(flatline(rules.flat_limit))
    if rules.missing_limit is not None:
        chain.append(missing(rules.missing_limit, rules.threshold))
    return chain


def decide(
    ends: pd.DatetimeIndex, values: np.ndarray, losses: np.ndarray, rules: Rules, context: Context
) -> pd.DataFrame:
    """The scores frame of one sensor with every rule applied (see the module docstring)."""
    scores = scores_frame(ends, values, losses, rules.threshold)
    for detect in detectors(rules):
        scores = detect(scores, context)
    return scores.assign(loss=scores["loss"].astype("float64"))
