"""Runs of consecutive flagged entries: the one splitter behind events, label events and plot spans."""

from __future__ import annotations

import numpy as np
import pandas as pd


def runs(
    mask: np.ndarray, index: pd.DatetimeIndex | None = None, interval: pd.Timedelta | None = None
) -> list[tuple[int, int]]:
    """(first, last) positions, inclusive, of each run of True in ``mask``.

    Entries are one run when they are next to each other in ``mask`` and, given ``index`` (sorted times of
    the entries) and ``interval``, exactly one interval apart: a missing interval splits a run as an
    unflagged one does.
    """
    positions = np.flatnonzero(np.asarray(mask, dtype=bool))
    if positions.size == 0:
        return []
    breaks = np.diff(positions) != 1
    if index is not None and interval is not None:
        times = index.as_unit("ns").asi8[positions]
        breaks |= np.diff(times) != pd.Timedelta(interval).value
    cuts = np.flatnonzero(breaks) + 1
    return [(int(run[0]), int(run[-1])) for run in np.split(positions, cuts)]
