"""Told once: which flagged windows tell something new.

A reading lies in ``window`` windows, so one bad reading raises the loss of every window that holds it, and
the smoothed loss of the windows after those; flagging each would tell the same news ``window`` times and
more. Each window's blame (losses.BLAME) says which of its readings it reconstructed worst and how far off its
newest reading was. A window flagged for its shape is kept when it brings a bad reading no flag has told
yet: its worst reading was not the worst of a flagged window before it, or its newest reading is itself off
by more than the threshold; never when its own loss is not above the threshold (only the smoothed losses of
the windows before it flagged it). A level window is kept when no window before it told its excursion. So a
spike is one flag, while an anomaly that goes on keeps being flagged.

Pure: arrays along the last axis on the interval grid ([..., G]); detect (one sensor) and grid_rules (a chunk)
both decide with ``kept``.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np

Window = TypeVar("Window", int, np.ndarray)  # a window, or one per sensor


def retold(flagged: np.ndarray, cause: np.ndarray, window: int) -> np.ndarray:
    """Where a ``flagged`` window's ``cause`` (the grid position or time of the reading it is about) is that
    of a flagged window among the ``window`` - 1 before it. A reading lies in ``window`` windows at most, so no
    cause repeats further apart."""
    out = np.zeros_like(flagged)
    for lag in range(1, min(window, flagged.shape[-1])):
        out[..., lag:] |= flagged[..., lag:] & flagged[..., :-lag] & (cause[..., lag:] == cause[..., :-lag])
    return out


def kept(
    flagged: np.ndarray,
    cause: np.ndarray,
    window: int,
    shape: np.ndarray,
    loss: np.ndarray,
    threshold: np.ndarray,
    newest: np.ndarray,
) -> np.ndarray:
    """The flags that tell something new (see the module docstring).

    Parameters
    ----------
    flagged, shape : bool, the windows flagged, and those of them flagged for their shape (the others: level)
    cause : int, each window's worst reading, or its level excursion's first reading (time or grid position)
    window : the longest window among the rows
    loss, threshold : each window's own loss and the threshold its flag compared with
    newest : its newest reading's error; NaN where the blame is unknown (each window then tells its own)
    """
    fresh = shape & (newest > threshold)
    echo = shape & ~np.isnan(newest) & ~(loss > threshold)
    return flagged & ~((retold(flagged, cause, window) & ~fresh) | echo)


def decided_before(min_consecutive: int, window: Window) -> Window:
    """How many windows before a sensor's first due one are decided with it: a flag is told once, so the
    window - 1 before it, and persistence looks at the K - 1 before each of those. Those before are history."""
    return min_consecutive - 1 + window - 1


def joined_within(window: int) -> int:
    """How many intervals apart two flags of a sensor may be and still be one event: flags whose windows share
    a reading (ends less than ``window`` intervals apart) are about one stretch of readings, and told once
    leaves the windows between them unflagged when they only retell a reading. Consecutive flags are always
    one event."""
    return max(1, window - 1)
