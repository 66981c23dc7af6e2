"""detect.decide for a chunk of sensors on one grid at once: what a tick runs.

A tick decides thousands of sensors whose readings share one grid (anomaly.chunk); the rules themselves
cost little, their per-sensor calls more than the database. Here every array is [sensors, grid
positions] and each rule is detect's, applied in detect's order with the same result: the threshold on the
loss (fixed, or dynamic on the smoothed loss), the level, persistence, told once, flat-line and missing, then
the due range. tests/test_scoring.py compares the two on random chunks. ``kind`` is a code into ``KINDS``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

import clean
from anomaly import detect, told
from anomaly.scores import Scores

NONE, SHAPE, LEVEL, FLATLINE, MISSING = range(5)
KINDS = ("none", "shape", "level", "flatline", "missing")


@dataclass(frozen=True)
class GridRules:
    """Each sensor's rules as arrays [S] (detect.Rules, one per row); the rules of the run (persistence,
    missing) are one value. ``low``/``high`` NaN: no level rule; ``flat_limit`` the largest int64: no
    flat-line rule. ``kinds``: the name of each kind code, ``KINDS`` with the threshold's own kind."""

    threshold: np.ndarray
    low: np.ndarray
    high: np.ndarray
    window: np.ndarray
    flat_limit: np.ndarray
    min_consecutive: int
    missing_limit: int | None
    missing_is_anomaly: bool
    kinds: np.ndarray

    @classmethod
    def of(cls, rules: list[detect.Rules]) -> GridRules:
        """The rules of a chunk's sensors; those of the run must be the same for all of them."""
        run = {
            (r.min_consecutive, r.dynamic_history, r.dynamic_floor, r.missing_limit, r.missing_is_anomaly, r.kind)
            for r in rules
        }
        if len(run) > 1:
            raise ValueError(f"a chunk is decided under one policy, not {len(run)}")
        first = rules[0] if rules else detect.Rules(threshold=1.0)
        no_levels = (np.nan, np.nan)
        return cls(
            threshold=np.array([r.threshold for r in rules], dtype="float64"),
            low=np.array([(r.levels or no_levels)[0] for r in rules], dtype="float64"),
            high=np.array([(r.levels or no_levels)[1] for r in rules], dtype="float64"),
            window=np.array([r.window for r in rules], dtype=np.int64),
            flat_limit=np.array(
                [np.iinfo(np.int64).max if r.flat_limit is None else r.flat_limit for r in rules], dtype=np.int64
            ),
            min_consecutive=first.min_consecutive,
            missing_limit=first.missing_limit,
            missing_is_anomaly=first.missing_is_anomaly,
            kinds=np.array([KINDS[NONE], first.kind, *KINDS[LEVEL:]], dtype=object),
        )


@dataclass(frozen=True)
class GridScores:
    """The decisions of a chunk, [S, G] each: ``point`` where a point is written (a window or an interval
    reported missing, in the sensor's due range), the rest as Scores holds them."""

    point: np.ndarray
    value: np.ndarray
    loss: np.ndarray
    compared: np.ndarray
    threshold: np.ndarray
    anomaly: np.ndarray
    kind: np.ndarray
    blame: np.ndarray

    def scores(self, grid, kinds: np.ndarray, smoothed: bool) -> list[Scores]:
        """Each row as the Scores detect.decide gives its sensor (``kinds``: GridRules.kinds; ``smoothed``:
        under a dynamic threshold, which keeps the smoothed loss). Taken out of the grid at once and sliced per
        row: thousands of rows indexed one by one cost more than the rules."""
        row, at = np.nonzero(self.point)
        bounds = np.searchsorted(row, np.arange(len(self.point) + 1)).tolist()
        ends = grid.take(at)
        value, loss, threshold = self.value[row, at], self.loss[row, at], self.threshold[row, at]
        anomaly, kind, blame = self.anomaly[row, at], kinds[self.kind[row, at]], self.blame[row, at]
        compared = self.compared[row, at] if smoothed else None
        return [
            Scores(
                ends=ends[a:b],
                value=value[a:b],
                loss=loss[a:b],
                threshold=threshold[a:b],
                anomaly=anomaly[a:b],
                kind=kind[a:b],
                smoothed_loss=None if compared is None else compared[a:b],
                blame=blame[a:b],
            )
            for a, b in itertools.pairwise(bounds)
        ]


def decide(
    values: np.ndarray,
    window_end: np.ndarray,
    loss: np.ndarray,
    compared: np.ndarray,
    threshold: np.ndarray,
    blame: np.ndarray,
    rules: GridRules,
    first: np.ndarray,
    last: np.ndarray,
    rearm: int,
) -> GridScores:
    """Every rule for every sensor of a chunk.

    Parameters
    ----------
    values : [S, G] float, the readings on the grid (NaN: none)
    window_end : [S, G] bool, where a window to decide ends (its history included)
    loss : [S, G], each window's loss in the engine's dtype (NaN elsewhere)
    compared, threshold : [S, G], what the threshold rule compares (the loss, or the smoothed loss) and the
        threshold it compares it with
    blame : [S, G] losses.BLAME, each window's (no_blame where there is none): the grid position of its worst
        reconstructed reading is what a shape flag is about (told.py)
    first, last : [S] int, each sensor's due range as grid positions (the windows before it are history)
    rearm : detect.LEVEL_REARM in intervals
    """
    position = np.arange(values.shape[1])
    # As detect compares: a float32 loss with a float32 threshold.
    anomaly = window_end & (compared > threshold.astype(compared.dtype))
    kind = np.where(anomaly, SHAPE, NONE).astype(np.int8)
    cause = np.where(window_end, position - (rules.window[:, None] - 1) + blame["worst"], -1)
    anomaly, kind, cause = _level(values, window_end, anomaly, kind, cause, rules, position, rearm)
    if rules.min_consecutive > 1:
        anomaly = clean.run_lengths(anomaly) >= rules.min_consecutive
    if len(rules.window):
        window = int(rules.window.max())
        anomaly = told.kept(anomaly, cause, window, kind == SHAPE, loss, threshold, blame["newest"])
    kind = np.where(anomaly, kind, NONE).astype(np.int8)
    stuck = window_end & (clean.flat_run_lengths(values) > rules.flat_limit[:, None])
    anomaly |= stuck
    kind[stuck] = FLATLINE
    due = (position >= first[:, None]) & (position <= last[:, None])
    point = window_end & due
    loss = loss.astype("float64")
    threshold = threshold.astype("float64")
    if rules.missing_limit is not None:
        silent = due & ~window_end & (clean.missing_run_lengths(values) > rules.missing_limit)
        point |= silent
        threshold = np.where(silent, rules.threshold[:, None], threshold)
        anomaly = np.where(silent, rules.missing_is_anomaly, anomaly)
        kind[silent] = MISSING
    return GridScores(point, values, loss, compared.astype("float64"), threshold, anomaly, kind, blame)


def _level(
    values: np.ndarray,
    window_end: np.ndarray,
    anomaly: np.ndarray,
    kind: np.ndarray,
    cause: np.ndarray,
    rules: GridRules,
    position: np.ndarray,
    rearm: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """detect.level on every row: the ``window`` windows that take in an excursion's first reading, which is
    their cause."""
    beyond = (values > rules.high[:, None]) | (values < rules.low[:, None])
    if not beyond.any():
        return anomaly, kind, cause
    # An excursion begins where no reading was beyond in the ``rearm`` positions before (detect.excursion_starts).
    latest_beyond = np.maximum.accumulate(np.where(beyond, position, np.iinfo(np.int64).min // 2), axis=1)
    before = np.full(values.shape, np.iinfo(np.int64).min // 2)
    before[:, 1:] = latest_beyond[:, :-1]
    starts = beyond & (position - before > rearm)
    window = rules.window[:, None]
    latest = np.maximum.accumulate(np.where(starts, position, -window), axis=1)
    moved = window_end & (position - latest < window) & ~anomaly
    kind = np.where(moved, LEVEL, kind).astype(np.int8)
    return anomaly | moved, kind, np.where(moved, latest, cause)
