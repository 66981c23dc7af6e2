"""Pure data shaping: validate, regularize, fill short gaps, window, scale. No I/O, no globals.

A series here is a ``pd.Series`` of float readings indexed by a UTC ``DatetimeIndex`` holding
the start of each interval, as the database aggregates them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from sklearn.preprocessing import StandardScaler

# Largest standardized reading kept as it is; float32 reaches 3.4e38, so sums over a window stay finite.
MAX_STANDARDIZED = 1e30


def validate_series(series: pd.Series) -> pd.Series:
    """Return a sorted, de-duplicated float copy with non-finite values as NaN.

    Raises
    ------
    TypeError
        If the index is not a timezone-aware ``DatetimeIndex``.
    """
    if not isinstance(series.index, pd.DatetimeIndex):
        raise TypeError(f"series index must be a DatetimeIndex, not {type(series.index).__name__}")
    if series.index.tz is None:
        raise TypeError("series index must be timezone-aware (UTC)")
    values = pd.to_numeric(series, errors="coerce").astype("float64")
    values = values.replace([np.inf, -np.inf], np.nan)
    values.index = values.index.tz_convert("UTC")
    values = values[~values.index.duplicated(keep="last")]
    return values.sort_index()


def regularize(
    series: pd.Series, interval: pd.Timedelta, start: pd.Timestamp | None = None, stop: pd.Timestamp | None = None
) -> pd.Series:
    """Put the series on the full grid of interval starts from ``start`` (or its first point) up to,
    not including, ``stop`` (or past its last point); intervals with no reading become NaN.

    Points off the grid are averaged into the interval they fall in.
    """
    if series.empty and (start is None or stop is None):
        return series.astype("float64")
    floored = series.index.floor(interval)
    # Data the server aggregated is on the grid already; only off-grid points need averaging.
    binned = series if floored.equals(series.index) else series.groupby(floored).mean()
    first = (start if start is not None else binned.index[0]).floor(interval)
    last = (stop - pd.Timedelta(1)).floor(interval) if stop is not None else binned.index[-1]
    grid = pd.date_range(first, last, freq=interval, name=series.index.name)
    return binned.reindex(grid)


def regular(raw: pd.Series, interval: pd.Timedelta, start: pd.Timestamp, stop: pd.Timestamp) -> pd.Series:
    """Readings as the database gives them -> the validated series on the full grid of [start, stop)."""
    return regularize(validate_series(raw), interval, start, stop)


def on_grid(
    row: np.ndarray,
    times: np.ndarray,
    values: np.ndarray,
    usable: np.ndarray,
    interval: pd.Timedelta,
    start: pd.Timestamp,
    stop: pd.Timestamp,
) -> tuple[pd.DatetimeIndex, np.ndarray, np.ndarray]:
    """``regular`` for many series at once, for those that need none of its repairs: readings as the
    database aggregates them (float, UTC, sorted, unique, on the grid of interval starts).

    Parameters
    ----------
    row, times, values : one entry per point, each series' points together: its series (0 .. n_series - 1),
        its time in nanoseconds since 1970 (UTC) and its value (float64)
    usable : bool array, shape [n_series]: series whose values are float and times UTC (the others are left out)

    Returns
    -------
    grid : DatetimeIndex, the interval starts of [start, stop), as ``regular`` makes them
    values : array, shape [n_series, len(grid)]: row k is ``regular``'s values of series k where ``done[k]``
    done : bool array, shape [n_series]; the other rows are NaN: give those series to ``regular`` itself
    """
    grid = pd.date_range(start.floor(interval), (stop - pd.Timedelta(1)).floor(interval), freq=interval)
    on = np.full((len(usable), len(grid)), np.nan)
    origin, step = grid[0].value if len(grid) else 0, interval.value
    offset = np.asarray(times, dtype=np.int64) - origin
    # Strictly increasing within a series, and on the grid: as validate_series would leave it.
    unfit = (offset % step) != 0
    unfit[1:] |= (np.diff(offset) <= 0) & (row[1:] == row[:-1])
    done = np.asarray(usable, dtype=bool).copy()
    done[row[unfit]] = False
    at = offset // step
    keep = done[row] & (at >= 0) & (at < len(grid))
    found = np.asarray(values, dtype="float64")[keep]
    on[row[keep], at[keep]] = np.where(np.isinf(found), np.nan, found)
    return grid, on, done


def fillable(values: np.ndarray, max_gap_points: int) -> np.ndarray:
    """Which rows of regular series' values [n_series, n] hold a gap ``fill_short_gaps`` would fill: a run
    of at most ``max_gap_points`` NaNs with a reading on both sides. Returns bool [n_series]."""
    if max_gap_points < 1 or values.shape[1] == 0:
        return np.zeros(len(values), dtype=bool)
    present = ~np.isnan(values)
    n = values.shape[1]
    position = np.arange(n)
    before = np.maximum.accumulate(np.where(present, position, -1), axis=1)
    after = np.minimum.accumulate(np.where(present, position, n)[:, ::-1], axis=1)[:, ::-1]
    return (~present & (before >= 0) & (after < n) & (after - before - 1 <= max_gap_points)).any(axis=1)


def fill_short_gaps(series: pd.Series, max_gap_points: int) -> pd.Series:
    """Interpolate linearly across runs of at most ``max_gap_points`` NaNs between two readings.

    Longer runs, and runs at either end, stay NaN so no window is built across them.
    """
    missing = series.isna()
    if max_gap_points < 1 or not missing.any():
        return series.copy()
    run = (~missing).cumsum()
    run_length = missing.groupby(run).transform("sum")
    interpolated = series.interpolate(limit_area="inside")
    return series.where(~(missing & (run_length <= max_gap_points)), interpolated)


def center(windows: np.ndarray) -> np.ndarray:
    """Windows [n, window, 1] with each one's own mean removed: what is left is the window's shape, so a
    steady reading reconstructs alike at every level and the level is judged apart (detect.level)."""
    return windows - windows.mean(axis=1, keepdims=True)


def make_windows(values: np.ndarray, window: int) -> np.ndarray:
    """Every run of ``window`` consecutive values, stride 1.

    Parameters
    ----------
    values : array, shape [n]
    window : int, >= 1

    Returns
    -------
    array, shape [n - window + 1, window, 1]

    Raises
    ------
    ValueError
        If ``n < window``.
    """
    values = np.asarray(values, dtype="float32")
    if values.ndim != 1:
        raise ValueError(f"values must be one-dimensional, got shape {values.shape}")
    if window < 1 or len(values) < window:
        raise ValueError(f"need at least {window} values to build one window of {window}, got {len(values)}")
    return np.lib.stride_tricks.sliding_window_view(values, window)[:, :, None].copy()


def windows_without_gaps(series: pd.Series, window: int) -> tuple[np.ndarray, pd.DatetimeIndex]:
    """Windows over every NaN-free stretch of a regular series, and the time of each window's last point.

    Returns
    -------
    windows : array, shape [n_windows, window, 1]
    ends : DatetimeIndex, length n_windows
    """
    starts = full_window_starts(series.notna().to_numpy(), window)
    if starts.size == 0:
        return np.empty((0, window, 1), dtype="float32"), series.index[:0]
    return windows_at(series.fillna(0.0).to_numpy(), window, starts), series.index[starts + window - 1]


def full_window_starts(present: np.ndarray, window: int) -> np.ndarray:
    """Where the windows of ``window`` values that are all ``present`` [n] (bool) start, increasing."""
    if len(present) < window:
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(np.lib.stride_tricks.sliding_window_view(present, window).all(axis=1))


def windows_at(values: np.ndarray, window: int, starts: np.ndarray) -> np.ndarray:
    """The windows [len(starts), window, 1] (float32) of values [n] starting at ``starts``: the rows of
    ``make_windows(values, window)[starts]``, without building the others."""
    values = np.asarray(values, dtype="float32")
    return np.lib.stride_tricks.sliding_window_view(values, window)[starts][:, :, None]


def run_lengths(hit: np.ndarray) -> np.ndarray:
    """For each position, how many consecutive ``hit`` positions end there (0 where not hit); along the last
    axis, so [n_series, n] gives each series' own."""
    hit = np.asarray(hit, dtype=bool)
    position = np.arange(hit.shape[-1])
    last_miss = np.maximum.accumulate(np.where(hit, -1, position), axis=-1)
    return np.where(hit, position - last_miss, 0)


def flat_run_lengths(values: np.ndarray) -> np.ndarray:
    """For each interval of a regular series' values [n] (or [n_series, n]), how many intervals in a row up to
    it hold exactly its value (1: differs from the one before; 0: no reading). A sensor stuck at one value
    has long runs; noise never repeats exactly."""
    values = np.asarray(values, dtype="float64")
    if not values.size:
        return np.zeros(values.shape, dtype=np.int64)
    repeated = np.zeros(values.shape, dtype=bool)
    repeated[..., 1:] = values[..., 1:] == values[..., :-1]
    lengths = run_lengths(repeated) + 1
    lengths[np.isnan(values)] = 0
    return lengths


def missing_run_lengths(values: np.ndarray) -> np.ndarray:
    """For each interval of a regular series' values [n] (or [n_series, n]), how many intervals in a row up to
    it have no reading (0 where there is one)."""
    return run_lengths(np.isnan(np.asarray(values, dtype="float64")))


def unusable_reason(series: pd.Series, window: int, min_windows: int) -> str | None:
    """Why a cleaned series cannot train a model, or None when it can."""
    values = series.dropna()
    if values.empty:
        return "no data in the training range"
    if values.min() == values.max():
        return f"constant value {values.iloc[0]:g} in the training range"
    with np.errstate(over="ignore", invalid="ignore"):
        spread = float(np.std(values.to_numpy()))
    if not np.isfinite(spread):
        return f"readings up to {values.abs().max():g} are too large to standardize"
    _, ends = windows_without_gaps(series, window)
    if len(ends) < min_windows:
        return f"too little data: {len(ends)} windows of {window} without gaps, need {min_windows}"
    return None


def fit_scaler(series: pd.Series) -> StandardScaler:
    """Standardizer fitted on the present values of a training series."""
    from sklearn.preprocessing import StandardScaler

    return StandardScaler().fit(series.dropna().to_numpy().reshape(-1, 1))


def standardize(series: pd.Series, mean: float, scale: float) -> pd.Series:
    """``(x - mean) / scale``, as the fitted scaler does, keeping the index and the NaNs; the one formula
    both training and scoring use.

    An absurd reading (1e300) would overflow float32 to inf and the loss with it, which line protocol
    cannot carry (and 0 * inf is NaN, which no threshold flags); clipped at +-MAX_STANDARDIZED, its windows
    still score far above any threshold.
    """
    return pd.Series(standardized(series.to_numpy(dtype="float64"), mean, scale), index=series.index, name=series.name)


def standardized(values: np.ndarray, mean: float | np.ndarray, scale: float | np.ndarray) -> np.ndarray:
    """``standardize`` of an array of readings (any shape, float64; NaN stays NaN); ``mean`` and ``scale`` may
    be arrays that broadcast with it (one per row of [n_series, n])."""
    return np.clip((values - mean) / scale, -MAX_STANDARDIZED, MAX_STANDARDIZED)


def drop_intervals(series: pd.Series, labelled: pd.DatetimeIndex) -> pd.Series:
    """Blank the intervals that hold a manually labelled anomaly, so training never learns them."""
    return series.mask(series.index.isin(labelled))
