"""Data-driven thresholds for the reconstruction loss: nonparametric dynamic thresholding. Pure: no I/O.

The fixed threshold (the ``--percentile`` of the training windows' losses, times the sensor's ratio) never
moves after training. The dynamic threshold here follows the sensor's recent losses instead, in the spirit
of Hundman et al. 2018, "Detecting Spacecraft Anomalies Using LSTMs and Nonparametric Dynamic
Thresholding" (KDD; NASA's telemanom), written from the paper's description:

1. **Smooth** the losses with an exponentially weighted moving average (weight ``smoothing`` on the newest
   loss), truncated to a finite span (``smoothing_span``): the weights left out sum to less than 0.001, and
   a smoothed loss depends on its ``span`` newest losses only, so a cron tick and a backfill that read the
   same losses give the same smoothed value.
2. **Fence** the history: a smoothed loss more than ``fence`` robust standard deviations (1.4826 × MAD)
   above the history's median is one of the history's own anomalies and is left out of everything below,
   with the span-1 smoothed losses after it (the anomaly's decaying echo in the smoothing). The rolling
   version also looks at the span-1 smoothed losses just before the history, so the echo of an anomaly
   that has just left the history is still recognised as such.
3. **Candidates**: for each z in ``z_range``, eps = mean + z × std of the fenced history. Each is scored by
   how much it lowers the mean and standard deviation of what stays below it, per error above it:
   ``(Δmean/mean + Δstd/std) / (n_above + n_sequences²)``, where n_above counts the history's losses above
   eps and n_sequences its runs of consecutive ones (fenced losses skipped). Candidates with nothing above
   or with half the history or more above are not eligible. The best score wins, a tie going to the larger
   z; with no eligible candidate (the history is tighter than the smallest z), eps = mean + min(z) × std
   (the paper falls back to the largest z, which would make a quiet sensor nearly blind here).
4. **Floor**: the threshold is max(eps, floor). The floor is the model's percentile threshold times the
   ratio: a loss below it is too small to matter whatever the history says.

The two known traps and how they are handled:

- **Flat errors.** On a sensor whose losses barely move, std and MAD are zero (or nearly), so eps is the
  mean itself and any change would stand out. The floor is the answer: such changes lie far below it.
  ``floor`` must therefore be positive.
- **A threshold that jumps when an anomaly leaves the history.** Plain mean and std grow while an anomaly
  is in the history, which raises the threshold (hiding a second anomaly) and drops it again the moment
  the anomaly leaves. Here the fence sets the anomaly aside, because median and MAD hardly move while it
  fills less than half the history. The threshold then stays where it was before the anomaly entered,
  while it is in and after it leaves. Not recursive: what is fenced depends on the history's losses only,
  not on earlier decisions, so a decision never depends on where a run of the scorer started. Limits: an
  anomaly longer than half the history becomes the new normal, and one less than ``fence`` robust standard
  deviations above the median still counts in the statistics.

A window's decision compares its own *smoothed* loss with the threshold computed from the smoothed
losses of the ``history`` windows before it, so it depends on its own loss and the
``history_needed(history, smoothing)`` losses before it, never on later ones. Steps 2 and 3 are computed
by candidates.py, for every window of every sensor given at once (``rolling_eps``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from anomaly import candidates

SMOOTHING = 0.5
# From the paper's range of z (2.5 up to 12, steps of 0.5).
Z_RANGE = tuple(float(z) for z in np.arange(2.5, 12.01, 0.5))
FENCE = 6.0
# Weight left out of the truncated EWMA.
_TAIL = 1e-3


def smoothing_span(smoothing: float) -> int:
    """Losses a smoothed loss is made of: the smallest k whose left-out weight (1-smoothing)**k < 0.001."""
    _check_smoothing(smoothing)
    if smoothing == 1:
        return 1
    return max(1, math.ceil(math.log(_TAIL) / math.log(1 - smoothing)))


def history_needed(history: int, smoothing: float = SMOOTHING) -> int:
    """Windows before a window that its decision depends on: ``history`` + 2 × (span - 1): the history,
    the span-1 windows before it looked at for the echo of a fenced loss, and the span-1 before those that
    the first of them is smoothed from.

    A scorer that passes at least this many earlier windows' losses (with the ones to decide) to
    ``rolling_dynamic_flags`` gets the same decisions whatever range it scores.
    """
    return history + 2 * (smoothing_span(smoothing) - 1)


def smooth(losses: np.ndarray, smoothing: float = SMOOTHING) -> np.ndarray:
    """Truncated, causal EWMA: entry i is the weighted mean of losses[i-span+1 .. i], weight
    smoothing*(1-smoothing)**age, normalised over the entries that exist (the first span-1 use fewer).

    Parameters
    ----------
    losses : array, shape [n], finite

    Returns
    -------
    array, shape [n]
    """
    values = np.asarray(losses, dtype="float64")
    span = smoothing_span(smoothing)
    if span == 1 or values.size == 0:
        return values.copy()
    weights = smoothing * (1 - smoothing) ** np.arange(span)
    n = values.size
    return np.convolve(values, weights)[:n] / np.convolve(np.ones(n), weights)[:n]


def dynamic_threshold(
    losses: np.ndarray,
    floor: float,
    smoothing: float = SMOOTHING,
    z_range: Sequence[float] = Z_RANGE,
    fence: float = FENCE,
) -> float:
    """The threshold for the next window's smoothed loss, from the losses of the windows before it.

    Parameters
    ----------
    losses : array, shape [n], finite: the history, oldest first (raw losses; smoothed here)
    floor : positive: the model's threshold times the ratio; the result is never below it
    smoothing : EWMA weight of the newest loss, in (0, 1]; 1 is no smoothing
    z_range : candidate z values, positive, increasing
    fence : history losses more than this many robust standard deviations above the median are left out

    Returns
    -------
    float >= floor; the floor itself when fewer than 2 losses are given
    """
    values = _finite_array(losses, "losses")
    _check_floor(floor)
    z = _z_values(z_range)
    _check_fence(fence)
    if values.size < 2:
        return float(floor)
    span = smoothing_span(smoothing)
    eps = candidates.eps_at(smooth(values, smoothing), np.zeros(1, dtype=np.intp), values.size, z, fence, span)
    return max(float(floor), float(eps[0]))


def rolling_dynamic_thresholds(
    losses: pd.Series,
    floor: float,
    history: int,
    smoothing: float = SMOOTHING,
    z_range: Sequence[float] = Z_RANGE,
    fence: float = FENCE,
    min_history: int | None = None,
    start: int = 0,
) -> pd.DataFrame:
    """Each window's dynamic threshold from the ``history`` windows before it, and its decision.

    Causal: entry i depends on losses[i - history_needed(history, smoothing) .. i] only. Windows are taken
    by position: the ``history`` scored windows before, however far back a gap pushes them.

    Parameters
    ----------
    losses : Series of finite losses by window end (sorted, unique DatetimeIndex), one per scored window;
        leave out rows without a loss (the scorer's ``missing`` points)
    floor : positive: the model's threshold times the ratio
    history : windows the threshold is computed from, >= 2 (e.g. 672: a week of 15-minute windows)
    smoothing, z_range, fence : as ``dynamic_threshold``
    min_history : windows with fewer earlier windows than this get the floor as threshold (default
        ``history``); between it and ``history``, the threshold comes from the windows there are
    start : the first position whose threshold is wanted; the windows before it are only history (a tick
        reads a day of them to decide one), get a NaN threshold and are not flagged

    Returns
    -------
    DataFrame by window end: ``smoothed`` (the smoothed loss), ``threshold``, ``anomaly`` (smoothed >
    threshold)
    """
    values = _validate_losses(losses)
    _check_floor(floor)
    z = _z_values(z_range)
    _check_fence(fence)
    min_history = history if min_history is None else min_history
    _check_history(history, min_history)
    smoothed, eps = _rolling_eps(values.tobytes(), history, smoothing, tuple(z), fence, min_history, start)
    # NaN (before start) stays NaN; -inf (too little history) leaves the floor.
    threshold = np.maximum(eps, float(floor))
    return pd.DataFrame(
        {"smoothed": smoothed, "threshold": threshold, "anomaly": smoothed > threshold}, index=losses.index
    )


@functools.lru_cache(maxsize=4)
def _rolling_eps(
    losses: bytes, history: int, smoothing: float, z: tuple[float, ...], fence: float, min_history: int, start: int
) -> tuple[np.ndarray, np.ndarray]:
    """The smoothed losses and each window's eps before the floor (-inf where the floor alone decides, NaN
    before ``start``), read-only. The floor only caps eps from below, so this is cached: tuning decides one
    sensor's losses at every candidate ratio, which moves nothing but the floor."""
    values = np.frombuffer(losses, dtype="float64")
    smoothed, eps = _rolling_eps_many([values], history, smoothing, z, fence, min_history, [start])[0]
    smoothed.flags.writeable = False
    eps.flags.writeable = False
    return smoothed, eps


def rolling_eps(
    losses: Sequence[np.ndarray],
    history: int,
    starts: Sequence[int],
    smoothing: float = SMOOTHING,
    z_range: Sequence[float] = Z_RANGE,
    fence: float = FENCE,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``rolling_dynamic_thresholds`` of many sensors at once (with ``min_history`` = ``history``), before the
    floor: a scorer decides a chunk of sensors with one computation instead of one per sensor, and gets the
    same thresholds.

    Parameters
    ----------
    losses : arrays, shape [n_k] each, finite: each sensor's losses, oldest first
    history, smoothing, z_range, fence : as ``rolling_dynamic_thresholds``
    starts : each sensor's first position whose threshold is wanted

    Returns
    -------
    per sensor: the smoothed losses [n_k] and eps [n_k], -inf where the floor alone decides, NaN before its
    start; the threshold is max(eps, floor)
    """
    values = [_finite_array(v, "losses") for v in losses]
    z = _z_values(z_range)
    _check_fence(fence)
    _check_history(history, history)
    return _rolling_eps_many(values, history, smoothing, tuple(z), fence, history, list(starts))


def _rolling_eps_many(
    losses: list[np.ndarray],
    history: int,
    smoothing: float,
    z: tuple[float, ...],
    fence: float,
    min_history: int,
    starts: list[int],
) -> list[tuple[np.ndarray, np.ndarray]]:
    """The smoothed losses and eps of each series in ``losses``, computed together: every wanted window of
    every series is one row of ``candidates.eps_at``, the rows of one width in one call."""
    span = smoothing_span(smoothing)
    smoothed = [smooth(v, smoothing) for v in losses]
    sizes = np.array([v.size for v in losses], dtype=np.intp)
    offsets = np.cumsum(sizes) - sizes
    flat = np.concatenate(smoothed) if smoothed else np.empty(0)
    position = np.arange(flat.size) - np.repeat(offsets, sizes)
    first = np.repeat(np.asarray(starts, dtype=np.intp).reshape(-1), sizes)
    eps = np.where(position < first, np.nan, -np.inf)
    # A window's history is the ``history`` smoothed losses before it and, to recognise the echo of an
    # anomaly that has just left it, the span-1 before those: fewer where the series begins.
    width = np.minimum(position, history + span - 1)
    wanted = position >= np.maximum(first, min_history)
    for w in np.unique(width[wanted]):
        at = np.flatnonzero(wanted & (width == w))
        eps[at] = candidates.eps_at(flat, at - w, int(w), np.asarray(z), fence, span, max(0, int(w) - history))
    return [(smoothed[k], eps[o : o + n]) for k, (o, n) in enumerate(zip(offsets, sizes))]


def rolling_dynamic_flags(
    losses: pd.Series,
    floor: float,
    history: int,
    smoothing: float = SMOOTHING,
    z_range: Sequence[float] = Z_RANGE,
    fence: float = FENCE,
    min_history: int | None = None,
) -> pd.Series:
    """Boolean Series by window end: the ``anomaly`` column of ``rolling_dynamic_thresholds``."""
    return rolling_dynamic_thresholds(losses, floor, history, smoothing, z_range, fence, min_history)["anomaly"]


def _check_history(history: int, min_history: int) -> None:
    if isinstance(history, bool) or not isinstance(history, (int, np.integer)) or history < 2:
        raise ValueError(f"history must be a whole number of windows >= 2, not {history!r}")
    if (
        isinstance(min_history, bool)
        or not isinstance(min_history, (int, np.integer))
        or not 2 <= min_history <= history
    ):
        raise ValueError(f"min_history must be a whole number in [2, history={history}], not {min_history!r}")


def _check_smoothing(smoothing: float) -> None:
    if not isinstance(smoothing, (int, float, np.floating)) or isinstance(smoothing, bool) or not 0 < smoothing <= 1:
        raise ValueError(f"smoothing must be a number in (0, 1] (1: no smoothing), not {smoothing!r}")


def _check_floor(floor: float) -> None:
    # A floor of 0 would leave flat errors to std and MAD of 0: every change an outlier.
    if (
        not isinstance(floor, (int, float, np.floating))
        or isinstance(floor, bool)
        or not (math.isfinite(floor) and floor > 0)
    ):
        raise ValueError(
            f"floor must be a positive finite number (the model's threshold times the ratio), not {floor!r}"
        )


def _check_fence(fence: float) -> None:
    if not isinstance(fence, (int, float, np.floating)) or isinstance(fence, bool) or not fence > 0:
        raise ValueError(f"fence must be a positive number of robust standard deviations (inf: none), not {fence!r}")


def _z_values(z_range: Sequence[float]) -> np.ndarray:
    z = np.asarray(z_range, dtype="float64").ravel()
    if z.size == 0 or not np.all(np.isfinite(z)) or np.any(z <= 0) or np.any(np.diff(z) <= 0):
        raise ValueError(f"z_range must be finite positive numbers in increasing order, not {list(z_range)!r}")
    return z


def _finite_array(losses: np.ndarray, name: str) -> np.ndarray:
    values = np.asarray(losses, dtype="float64")
    if values.ndim != 1:
        raise ValueError(f"{name} must have shape [n], not {values.shape}")
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{name} must be finite; leave out windows without a loss")
    return values


def _validate_losses(losses: pd.Series) -> np.ndarray:
    if not isinstance(losses, pd.Series) or not isinstance(losses.index, pd.DatetimeIndex):
        raise TypeError(f"losses must be a pandas Series by window end (DatetimeIndex), not {type(losses).__name__}")
    if not losses.index.is_monotonic_increasing or losses.index.has_duplicates:
        raise ValueError("losses must be sorted by window end, without duplicate times")
    return _finite_array(pd.to_numeric(losses, errors="coerce").to_numpy(dtype="float64"), "losses")
