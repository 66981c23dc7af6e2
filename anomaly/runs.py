"""Runs of consecutive flagged entries: the one splitter behind events, label events and plot spans, and
persistence (K flagged windows in a row) on the interval grid."""

from __future__ import annotations

import numpy as np
import pandas as pd

import clean


def runs(
    mask: np.ndarray, index: pd.DatetimeIndex | None = None, interval: pd.Timedelta | None = None, within: int = 1
) -> list[tuple[int, int]]:
    """(first, last) positions, inclusive, of each run of True in ``mask``.

    Entries are one run when they are at most ``within`` positions apart in ``mask`` (1: next to each other)
    or, given ``index`` (sorted times of the entries, on the grid) and ``interval``, at most ``within``
    intervals apart: a missing interval splits a run as an unflagged one does.
    """
    positions = np.flatnonzero(np.asarray(mask, dtype=bool))
    if positions.size == 0:
        return []
    if index is None or interval is None:
        breaks = np.diff(positions) > within
    else:
        breaks = np.diff(index.as_unit("ns").asi8[positions]) > within * pd.Timedelta(interval).value
    cuts = np.flatnonzero(breaks) + 1
    return [(int(run[0]), int(run[-1])) for run in np.split(positions, cuts)]


def persistent(ends: pd.DatetimeIndex, above: np.ndarray, min_consecutive: int, interval: pd.Timedelta) -> np.ndarray:
    """Where a window and the ``min_consecutive`` - 1 windows ending in the intervals just before it are all
    ``above``; a window missing among them (a gap) breaks the run. ``ends`` lie on the interval grid."""
    above = np.asarray(above, dtype=bool)
    if min_consecutive <= 1 or not len(above):
        return above
    at = grid_positions(ends, interval)
    return clean.run_lengths(on_grid(above, at, False))[at] >= min_consecutive


def grid_positions(ends: pd.DatetimeIndex, interval: pd.Timedelta) -> np.ndarray:
    """Each window end's position on the interval grid from the first (``ends`` lie on it, sorted)."""
    times = ends.as_unit("ns").asi8
    return (times - times[0]) // pd.Timedelta(interval).value


def on_grid(values: np.ndarray, at: np.ndarray, fill: object) -> np.ndarray:
    """``values`` placed at their grid positions ``at`` (grid_positions), ``fill`` in the intervals between."""
    grid = np.full(at[-1] + 1, fill, dtype=np.asarray(values).dtype)
    grid[at] = values
    return grid
