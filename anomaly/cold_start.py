"""The cold-start detector: scores a sensor that has no model yet from its own recent readings.

Until training gives a sensor its autoencoder, each reading is compared with what the sensor read at
the same time of day on the days before, so a new sensor is watched from its second day on.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np
import pandas as pd

import clean
from anomaly import detect, times


@dataclass(frozen=True)
class ColdStartSettings:
    """The robust detector for sensors with no model yet."""

    history: pd.Timedelta
    min_history: pd.Timedelta
    z: float


def add_arguments(parser: argparse.ArgumentParser) -> None:
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


def settings_from_args(args: argparse.Namespace) -> ColdStartSettings | None:
    if args.no_cold_start:
        return None
    return ColdStartSettings(
        history=times.parse_duration(args.cold_start_history, "--cold-start-history"),
        min_history=times.parse_duration(args.cold_start_min_history, "--cold-start-min-history"),
        z=args.cold_start_z,
    )


def robust_losses(
    series: pd.Series, history: int, min_history: int, first: pd.Timestamp, last: pd.Timestamp, period: int
) -> tuple[np.ndarray, np.ndarray]:
    """Positions in ``series`` of the readings in [first, last] that can be scored, and their robust
    z-scores ``|x - median| / scale`` against the readings at the same time of day (see robust_scores)."""
    values = series.to_numpy(dtype="float64")
    days = max(1, history // period)
    due = np.flatnonzero((series.index >= first) & (series.index <= last) & ~np.isnan(values))
    due = due[due >= period + 1]
    offsets = np.array([-k * period + d for k in range(1, days + 1) for d in (-1, 0, 1)])
    positions = due[:, None] + offsets[None, :]
    padded = np.r_[values, np.nan]  # positions before the series read the NaN at the end
    same_time = padded[np.where(positions >= 0, positions, len(values))]
    enough = (~np.isnan(same_time)).sum(axis=1) >= 3 * max(1, min_history // period)
    due, same_time = due[enough], same_time[enough]
    if not len(due):
        return due, np.empty(0)
    before = np.lib.stride_tricks.sliding_window_view(np.r_[np.full(history, np.nan), values], history)[due]
    with np.errstate(all="ignore"):
        median = np.nanmedian(same_time, axis=1)
        mad = np.nanmedian(np.abs(same_time - median[:, None]), axis=1)
        spread = np.nanpercentile(before, 95, axis=1) - np.nanpercentile(before, 5, axis=1)
    scale = np.maximum.reduce(
        [1.4826 * mad, 0.05 * np.nan_to_num(spread), 1e-3 * np.abs(median), np.full(len(due), 1e-12)]
    )
    return due, np.abs(values[due] - median) / scale


def robust_scores(
    series: pd.Series, history: int, min_history: int, z: float, first: pd.Timestamp, last: pd.Timestamp, period: int
) -> detect.Scores:
    """The cold-start detector, for a sensor with no model yet: each reading in [first, last] against the
    median and MAD of the readings at the same time of day (that interval and its two neighbours) on the
    days within ``history`` intervals before it, so a daily cycle is not mistaken for an outlier.

    ``period`` is the number of intervals in a day. A reading is scored once ``min_history`` intervals of
    such days lie behind it. ``loss`` is the robust z-score ``|x - median| / (1.4826 MAD)``, flagged above
    ``z``. The MAD is floored at 5% of the history's 5-95% range and a thousandth of the median's size, so
    that a sensor that barely moves, whose MAD is zero, does not turn every small change into an outlier.
    Scores as ``detect.decide`` gives, with kind ``outlier`` for flagged intervals.
    """
    due, losses = robust_losses(series, history, min_history, first, last, period)
    values = series.to_numpy(dtype="float64")[due]
    return detect.decide(
        series.index[due],
        values,
        losses,
        detect.Rules(threshold=z, kind="outlier"),
        detect.Context(interval=pd.Timedelta(days=1) / period),
    )


def cold_scores(
    raw: pd.Series,
    interval: pd.Timedelta,
    read: tuple[pd.Timestamp, pd.Timestamp],
    cold: ColdStartSettings,
    threshold: float,
    first: pd.Timestamp,
    last: pd.Timestamp,
) -> detect.Scores:
    """A sensor with no model yet, from its readings as read over ``read``."""
    return robust_scores(
        clean.regular(raw, interval, *read),
        int(cold.history / interval),
        int(cold.min_history / interval),
        threshold,
        first,
        last,
        period=max(1, round(pd.Timedelta(days=1) / interval)),
    )
