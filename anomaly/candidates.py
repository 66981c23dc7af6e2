"""eps, the dynamic threshold before its floor, of many histories of smoothed losses at once: steps 2 and 3
of thresholds.py's rules (fence, candidates), one row per history. Pure: no I/O.

Each candidate's statistics come from the row's kept losses sorted once: what lies above a candidate is a
suffix of them, counted by a binary search, and its sums are cumulative sums; the runs above it are the
losses above less the pairs of consecutive kept losses both above. A row costs O(h log h + Z log h), so a
tick decides a chunk's sensors, and a catch-up each of its windows, in one computation.
"""

from __future__ import annotations

import math

import numpy as np

from anomaly.parallel import thread_map

# Cells of the [rows, history] and [rows, candidates] arrays computed at once: a few MB each.
_CELLS_PER_BATCH = 250_000
_MAD_TO_STD = 1.4826


def eps_at(
    flat: np.ndarray, starts: np.ndarray, width: int, z: np.ndarray, fence: float, span: int, lead: int = 0
) -> np.ndarray:
    """eps, before the floor, of each history flat[start : start + width] of smoothed losses, width >= 2;
    the first ``lead`` losses of each come before the history and only serve to recognise the echo of a
    fenced loss. See the module docstring."""
    rows = max(1, _CELLS_PER_BATCH // (width + len(z)))
    columns = np.arange(width)

    def batch(first: int) -> np.ndarray:
        return _eps(flat[starts[first : first + rows, None] + columns], z, fence, span, lead)

    return np.concatenate([np.empty(0), *thread_map(batch, range(0, len(starts), rows))])


def _eps(e: np.ndarray, z: np.ndarray, fence: float, span: int, lead: int) -> np.ndarray:
    """eps of each row of ``e`` [m, lead + h] (see the module docstring)."""
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
