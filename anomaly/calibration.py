"""Thresholds calibrated out of sample, in the operator's unit: false-alarm runs per week.

A threshold taken from the losses of the very windows a model was fitted on runs hot: new data
reconstructs a little worse than the data the model learned. Training therefore keeps its newest
windows out of fitting and sets the threshold from their losses, so that those windows would have
raised at most ``budget`` alarm runs per week (a run: consecutive windows above the threshold, which
an operator sees as one alarm).

The runs counted are those the scorer would raise: its default rule compares each window's smoothed
loss with the threshold and flags a window only when it and the ``min_consecutive`` - 1 windows before
it are all above (``decided``). Calibrated on raw losses instead, a threshold sits where single-window
spikes of the raw loss put it, above anything the smoothed, persistent rule would have flagged.

A held-out part is often shorter than the 1/budget weeks in which one alarm is allowed, so the count
of runs alone cannot place the threshold. The rate of runs above a high level ``u`` is measured, and
the peaks of the runs above ``u`` are taken as exponentially distributed (the peaks-over-threshold
model with shape 0): the rate above ``t > u`` is then ``rate(u) * exp(-(t - u) / mean excess)``, which
is solved for the budget. Pure: no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from anomaly import thresholds
from anomaly.runs import runs

WEEK = pd.Timedelta(days=7)
# The level u: the loss exceeded by this share of the held-out windows.
TAIL_SHARE = 0.05
# Fewer run peaks above u than this say too little about the tail: the threshold is then the largest
# held-out loss, and its rate is at most one run per held-out span.
MIN_PEAKS = 5


@dataclass(frozen=True)
class Calibration:
    """A calibrated threshold and the alarm rate it is expected to give on data like the held-out part."""

    threshold: float
    alarms_per_week: float
    weeks: float
    peaks: int


def decided(
    losses: np.ndarray, ends: pd.DatetimeIndex, interval: pd.Timedelta, smoothing: float, min_consecutive: int
) -> tuple[np.ndarray, pd.DatetimeIndex]:
    """What the scorer's default rule compares with the threshold, one value per window that can raise an
    alarm, by its end: the smallest smoothed loss (thresholds.smooth, over ``losses`` in window order, as
    the scorer smooths) of the window and the ``min_consecutive`` - 1 windows before it, where those
    windows are one interval apart. A run of the rule's flags above a threshold is then a run of these
    values above it."""
    smoothed = thresholds.smooth(losses, smoothing)
    k = min_consecutive
    if len(smoothed) < k:
        return np.empty(0), ends[:0]
    lowest = np.lib.stride_tricks.sliding_window_view(smoothed, k).min(axis=1)
    times = ends.as_unit("ns").asi8
    together = times[k - 1 :] - times[: len(times) - k + 1] == (k - 1) * pd.Timedelta(interval).value
    return lowest[together], ends[k - 1 :][together]


def run_peaks(losses: np.ndarray, ends: pd.DatetimeIndex, interval: pd.Timedelta, level: float) -> np.ndarray:
    """The largest loss of each run of consecutive windows (window ends one interval apart) above ``level``."""
    return np.array([losses[a : b + 1].max() for a, b in runs(losses > level, ends, interval)])


def calibrate(
    losses: np.ndarray, ends: pd.DatetimeIndex, interval: pd.Timedelta, budget: float, floor: float
) -> Calibration:
    """The smallest threshold, never below ``floor``, at which the held-out windows (losses [n], by window
    end) are expected to raise at most ``budget`` alarm runs per week."""
    losses = np.asarray(losses, dtype="float64")
    weeks = len(losses) * interval / WEEK
    if len(losses) == 0:
        return Calibration(floor, math.nan, 0.0, 0)
    level = float(np.quantile(losses, 1 - TAIL_SHARE))
    peaks = run_peaks(losses, ends, interval, level)
    if len(peaks) < MIN_PEAKS:
        threshold = max(floor, float(losses.max()))
        return Calibration(
            threshold, len(run_peaks(losses, ends, interval, threshold)) / weeks or 1 / weeks, weeks, len(peaks)
        )
    rate, excess = len(peaks) / weeks, float(np.mean(peaks - level))
    threshold = level + excess * math.log(rate / budget) if rate > budget and excess > 0 else level
    threshold = max(floor, threshold)
    expected = rate * math.exp(-(threshold - level) / excess) if excess > 0 else rate
    return Calibration(threshold, expected, weeks, len(peaks))
