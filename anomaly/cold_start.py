"""The cold-start detector: scores a sensor that has no model yet from its own recent readings.

Until training gives a sensor its autoencoder, each reading is compared with what the sensor read at
the same time of day on the days before, once ``--cold-start-min-history`` of them lies behind it. Its
threshold is calibrated as training's is, in alarm runs per week: a sensor whose own last days would
have raised more alarms than the budget at ``--cold-start-z`` gets a higher threshold for the day.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np
import pandas as pd

import clean
from anomaly import calibration, times
from anomaly.errors import ConfigError
from anomaly.scores import Scores


@dataclass(frozen=True)
class ColdStartSettings:
    """The robust detector for sensors with no model yet."""

    history: pd.Timedelta
    min_history: pd.Timedelta
    z: float
    alarm_budget: float = 0.0

    @property
    def reach(self) -> pd.Timedelta:
        """How far before its first due reading a sensor is read: its history, and with a budget the rest of
        the day before it (a day's threshold comes from the ``history`` before the day began)."""
        return self.history + (pd.Timedelta(days=1) if self.alarm_budget else pd.Timedelta(0))


def add_arguments(parser: argparse.ArgumentParser) -> None:  # pragma: no mutate block
    cold = parser.add_argument_group("cold start: sensors with no model yet")
    cold.add_argument(
        "--no-cold-start",
        action="store_true",
        help="skip sensors with no model instead of scoring them with the robust detector",
    )
    cold.add_argument(
        "--cold-start-history",
        default="7d",
        help="each reading is compared with the median and MAD of the readings at the same time of "
        "day over this much before it (default 7d)",
    )
    cold.add_argument(
        "--cold-start-min-history",
        default="2d",
        help="days of readings needed before a sensor is scored at all (default 2d)",
    )
    cold.add_argument(
        "--cold-start-z",
        type=float,
        default=6.0,
        help="flag readings more than this many robust deviations from the median (default 6)",
    )
    cold.add_argument(
        "--cold-start-alarm-budget",
        type=float,
        default=0.5,
        help="alarm runs per week: a day's threshold rises above --cold-start-z when the sensor's readings of "
        "--cold-start-history before the day would have raised more at it, as training calibrates (default "
        "0.5, training's --alarm-budget); 0 for --cold-start-z alone",
    )


def settings_from_args(args: argparse.Namespace) -> ColdStartSettings | None:  # pragma: no mutate block
    if args.no_cold_start:
        return None
    if not args.cold_start_alarm_budget >= 0:
        raise ConfigError(
            f"--cold-start-alarm-budget: {args.cold_start_alarm_budget} must be a number >= 0 (alarm runs per week; "
            "0: --cold-start-z alone)"
        )
    return ColdStartSettings(
        history=times.parse_duration(args.cold_start_history, "--cold-start-history"),
        min_history=times.parse_duration(args.cold_start_min_history, "--cold-start-min-history"),
        z=args.cold_start_z,
        alarm_budget=args.cold_start_alarm_budget,
    )


def _same_time(
    values: np.ndarray, at: np.ndarray, days: int, period: int, min_history: int
) -> tuple[np.ndarray, np.ndarray]:
    """For each position of ``at``: the readings at the same time of day (that interval and its two
    neighbours) on the ``days`` days before it, NaN before the start; and whether they are enough to score
    it (``min_history`` intervals of days behind it)."""
    offsets = np.array([-k * period + d for k in range(1, days + 1) for d in (-1, 0, 1)])
    positions = at[:, None] + offsets[None, :]
    padded = np.r_[values, np.nan]  # positions before the series read the NaN at the end
    same_time = padded[np.where(positions >= 0, positions, len(values))]
    return same_time, (~np.isnan(same_time)).sum(axis=1) >= 3 * max(1, min_history // period)


def _row_medians(a: np.ndarray) -> np.ndarray:
    """``np.nanmedian(a, axis=1)`` (NaN for a row of NaN), from one sort: numpy's goes through a masked
    array, which made a day's calibration several times slower."""
    ordered = np.sort(a, axis=1)  # NaN sort last
    counted = (~np.isnan(a)).sum(axis=1)
    low = np.take_along_axis(ordered, np.maximum(counted - 1, 0)[:, None] // 2, axis=1)[:, 0]
    high = np.take_along_axis(ordered, (counted // 2)[:, None].clip(max=a.shape[1] - 1), axis=1)[:, 0]
    return np.where(counted > 0, (low + high) / 2, np.nan)


def _z_scores(x: np.ndarray, same_time: np.ndarray, spread: np.ndarray) -> np.ndarray:
    """``|x - median| / scale`` against each row of ``same_time``, the scale floored (see robust_scores)."""
    with np.errstate(all="ignore"):
        median = _row_medians(same_time)
        mad = _row_medians(np.abs(same_time - median[:, None]))
    scale = np.maximum.reduce(
        [1.4826 * mad, 0.05 * np.nan_to_num(spread), 1e-3 * np.abs(median), np.full(len(x), 1e-12)]
    )
    return np.abs(x - median) / scale


def robust_losses(
    series: pd.Series, history: int, min_history: int, first: pd.Timestamp, last: pd.Timestamp, period: int
) -> tuple[np.ndarray, np.ndarray]:
    """Positions in ``series`` of the readings in [first, last] that can be scored, and their robust
    z-scores ``|x - median| / scale`` against the readings at the same time of day (see robust_scores)."""
    values = series.to_numpy(dtype="float64")
    due = np.flatnonzero((series.index >= first) & (series.index <= last) & ~np.isnan(values))
    due = due[due >= period + 1]
    same_time, enough = _same_time(values, due, max(1, history // period), period, min_history)
    due, same_time = due[enough], same_time[enough]
    if not len(due):
        return due, np.empty(0)
    before = np.lib.stride_tricks.sliding_window_view(np.r_[np.full(history, np.nan), values], history)[due]
    with np.errstate(all="ignore"):
        spread = np.nanpercentile(before, 95, axis=1) - np.nanpercentile(before, 5, axis=1)
    return due, _z_scores(values[due], same_time, spread)


def calibrated_z(
    values: np.ndarray, min_history: int, period: int, z: float, budget: float, interval: pd.Timedelta
) -> float:
    """The threshold for one day: the smallest, never below ``z``, at which the readings of the days before
    it (``values``, oldest first, NaN where none, ending where the day begins) would have raised at most
    ``budget`` alarm runs a week (calibration.py's rule). Each of them is scored as the detector scores a
    reading, against the same-time readings of the earlier days among ``values``, the scale's floor taken
    from the spread of all of them: out of sample, from what a tick reads anyway."""
    at = np.flatnonzero(~np.isnan(values))
    same_time, enough = _same_time(values, at, max(1, len(values) // period), period, min_history)
    at, same_time = at[enough], same_time[enough]
    if not len(at):
        return z
    with np.errstate(all="ignore"):
        spread = np.full(len(at), np.nanpercentile(values, 95) - np.nanpercentile(values, 5))
    scores = _z_scores(values[at], same_time, spread)
    ends = pd.to_datetime((at - len(values)) * interval.value, unit="ns", utc=True)
    return calibration.calibrate(scores, ends, interval, budget, z).threshold


def day_thresholds(
    series: pd.Series, due: np.ndarray, history: int, min_history: int, z: float, budget: float, period: int
) -> np.ndarray:
    """The threshold of each reading at positions ``due`` of a regular ``series``: ``calibrated_z`` of the
    ``history`` intervals before its day began (UTC), so every run that scores a day gives its readings the
    same threshold; ``z`` for all without a budget."""
    if not budget or not len(due):
        return np.full(len(due), z)
    values = series.to_numpy(dtype="float64")
    interval = pd.Timedelta(days=1) / period
    days = series.index[due].floor("D")
    out = np.empty(len(due))
    for day in days.unique():
        begins = series.index.searchsorted(day)
        window = np.r_[np.full(max(0, history - begins), np.nan), values[max(0, begins - history) : begins]]
        out[days == day] = calibrated_z(window, min_history, period, z, budget, interval)
    return out


def robust_scores(
    series: pd.Series,
    history: int,
    min_history: int,
    z: float,
    first: pd.Timestamp,
    last: pd.Timestamp,
    period: int,
    budget: float = 0.0,
    ratio: float = 1.0,
) -> Scores:
    """The cold-start detector, for a sensor with no model yet: each reading in [first, last] against the
    median and MAD of the readings at the same time of day (that interval and its two neighbours) on the
    days within ``history`` intervals before it, so a daily cycle is not mistaken for an outlier.

    ``period`` is the number of intervals in a day. A reading is scored once ``min_history`` intervals of
    such days lie behind it. ``loss`` is the robust z-score ``|x - median| / (1.4826 MAD)``, flagged above
    ``ratio`` x its day's threshold: ``z``, or with a ``budget`` the calibrated one (day_thresholds). The
    MAD is floored at 5% of the history's 5-95% range and a thousandth of the median's size, so that a
    sensor that barely moves, whose MAD is zero, does not turn every small change into an outlier. Scores
    as ``detect.decide`` gives, with kind ``outlier`` for flagged intervals.
    """
    due, losses = robust_losses(series, history, min_history, first, last, period)
    thresholds = ratio * day_thresholds(series, due, history, min_history, z, budget, period)
    anomaly = losses > thresholds
    return Scores(
        ends=series.index[due],
        value=series.to_numpy(dtype="float64")[due],
        loss=losses,
        threshold=thresholds,
        anomaly=anomaly,
        kind=np.where(anomaly, "outlier", "none"),
    )


def cold_scores(
    raw: pd.Series,
    interval: pd.Timedelta,
    read: tuple[pd.Timestamp, pd.Timestamp],
    cold: ColdStartSettings,
    ratio: float,
    first: pd.Timestamp,
    last: pd.Timestamp,
) -> Scores:
    """A sensor with no model yet, from its readings as read over ``read`` (from ``cold.reach`` before
    ``first``)."""
    return robust_scores(
        clean.regular(raw, interval, *read),
        int(cold.history / interval),
        int(cold.min_history / interval),
        cold.z,
        first,
        last,
        period=max(1, round(pd.Timedelta(days=1) / interval)),
        budget=cold.alarm_budget,
        ratio=ratio,
    )
