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
``history_needed(history, smoothing)`` losses before it, never on later ones.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

SMOOTHING = 0.5
# From the paper's range of z (2.5 up to 12, steps of 0.5).
Z_RANGE = tuple(float(z) for z in np.arange(2.5, 12.01, 0.5))
FENCE = 6.0
# Weight left out of the truncated EWMA.
_TAIL = 1e-3
# Cells of the [histories, candidates, history] arrays computed at once: bounds memory to tens of MB.
_CELLS_PER_BATCH = 2_000_000
_MAD_TO_STD = 1.4826


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
    eps = _eps_at(smooth(values, smoothing), np.zeros(1, dtype=np.intp), values.size, z, fence, span)
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
    """``rolling_dynamic_thresholds`` of many sensors at once, before the floor: a scorer decides a chunk of
    sensors with one computation instead of one per sensor, and gets the same thresholds.

    Parameters
    ----------
    losses : arrays, shape [n_k] each, finite: each sensor's losses, oldest first (``min_history`` is
        ``history``)
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
    every series is one row of ``_eps_at``, rows of one width in one call."""
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
        eps[at] = _eps_at(flat, at - w, int(w), np.asarray(z), fence, span, max(0, int(w) - history))
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


def _eps_at(
    flat: np.ndarray, starts: np.ndarray, width: int, z: np.ndarray, fence: float, span: int, lead: int = 0
) -> np.ndarray:
    """eps, before the floor, of each history flat[start : start + width] of smoothed losses, width >= 2;
    the first ``lead`` losses of each come before the history and only serve to recognise the echo of a
    fenced loss. See the module docstring."""
    out = np.empty(len(starts))
    rows = max(1, _CELLS_PER_BATCH // (len(z) * width))
    columns = np.arange(width)
    for first in range(0, len(starts), rows):
        at = starts[first : first + rows]
        out[first : first + rows] = _eps(flat[at[:, None] + columns], z, fence, span, lead)
    return out


def _eps(e: np.ndarray, z: np.ndarray, fence: float, span: int, lead: int) -> np.ndarray:
    """eps of each row of ``e`` [m, lead + h]. Each candidate's statistics come from the row's kept losses
    sorted once: what lies above a candidate is a suffix of them, counted by a binary search, and its sums
    are cumulative sums; so a row costs O(h log h + Z log h), not O(Z h)."""
    kept = _kept(e, fence, span, lead)
    e = e[:, lead:]
    m, h = e.shape
    n = kept.sum(axis=1)
    # A history whose every loss the fence set aside (a spike more often than the smoothing span) leaves
    # nothing to learn from: eps is 0 there, so the floor decides, rather than 0/0 leaving no threshold.
    counted = np.maximum(n, 1)
    mean = np.where(kept, e, 0.0).sum(axis=1) / counted
    std = np.sqrt(np.where(kept, (e - mean[:, None]) ** 2, 0.0).sum(axis=1) / counted)
    eps = mean[:, None] + z[None, :] * std[:, None]  # [m, Z]
    # The fenced losses sort first, as -inf: below every candidate, and counted out by n.
    ordered = np.sort(np.where(kept, e, -np.inf), axis=1)
    n_above = h - _count_at_most(ordered, eps)
    n_below = np.maximum(n[:, None] - n_above, 1)
    # Sums of the kept losses below each candidate, about the mean (fenced ones add 0): mean and std below.
    offset = np.where(np.isfinite(ordered), ordered - mean[:, None], 0.0)
    first = np.zeros((m, 1))
    sums = np.take_along_axis(np.concatenate([first, np.cumsum(offset, axis=1)], axis=1), h - n_above, axis=1)
    squares = np.take_along_axis(np.concatenate([first, np.cumsum(offset**2, axis=1)], axis=1), h - n_above, axis=1)
    shift = sums / n_below
    mean_below = mean[:, None] + shift
    std_below = np.sqrt(np.maximum(squares / n_below - shift**2, 0.0))
    # Runs of losses above eps, in time order over the kept losses (a fenced loss neither starts nor breaks
    # one): the losses above, less the pairs of consecutive kept losses both above, i.e. whose smaller is.
    position = np.where(kept, np.arange(h)[None, :], -1)
    previous = np.concatenate([np.full((m, 1), -1), np.maximum.accumulate(position, axis=1)[:, :-1]], axis=1)
    pairs = np.where(
        kept & (previous >= 0), np.minimum(e, np.take_along_axis(e, np.maximum(previous, 0), axis=1)), -np.inf
    )
    sequences = n_above - (h - _count_at_most(np.sort(pairs, axis=1), eps))
    with np.errstate(divide="ignore", invalid="ignore"):
        drop = np.where(mean[:, None] > 0, (mean[:, None] - mean_below) / mean[:, None], 0.0) + np.where(
            std[:, None] > 0, (std[:, None] - std_below) / std[:, None], 0.0
        )
        score = drop / (n_above + sequences**2)
    eligible = (n_above >= 1) & (2 * n_above < n[:, None])
    score = np.where(eligible, score, -np.inf)
    # Ties go to the larger z: argmax over the candidates in reverse order.
    best = len(z) - 1 - np.argmax(score[:, ::-1], axis=1)
    chosen = eps[np.arange(m), best]
    return np.where(eligible.any(axis=1), chosen, eps[:, 0])


def _kept(e: np.ndarray, fence: float, span: int, lead: int) -> np.ndarray:
    """Which losses of each row's history [m, h] count: not fenced, nor within span-1 after a fenced one."""
    if not math.isfinite(fence):
        return np.ones((len(e), e.shape[1] - lead), dtype=bool)
    median = np.median(e[:, lead:], axis=1, keepdims=True)
    mad = _MAD_TO_STD * np.median(np.abs(e[:, lead:] - median), axis=1, keepdims=True)
    # A MAD of 0 keeps the losses equal to the median and sets the rest aside; what is left has std 0,
    # so eps is its mean and the floor decides.
    count = np.cumsum(e > median + fence * mad, axis=1)
    # A smoothed loss within span-1 windows after a fenced one still carries part of it.
    earlier = np.zeros_like(count)
    if span < count.shape[1]:
        earlier[:, span:] = count[:, :-span]
    return (count == earlier)[:, lead:]


def _count_at_most(ordered: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Per row, how many entries of ``ordered`` [m, h] (sorted) are <= each of ``values`` [m, k]: a binary
    search of all rows at once, with the exact comparison (np.searchsorted takes one row at a time)."""
    h = ordered.shape[1]
    low = np.zeros(values.shape, dtype=np.intp)
    high = np.full(values.shape, h, dtype=np.intp)
    for _ in range(h.bit_length()):
        middle = (low + high) // 2
        at_most = np.take_along_axis(ordered, np.minimum(middle, h - 1), axis=1) <= values
        searching = low < high
        low = np.where(searching & at_most, middle + 1, low)
        high = np.where(searching & ~at_most, middle, high)
    return low


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
