"""A chunk's sensors on one grid: their readings placed, windowed and decided together.

A tick scores thousands of sensors, and doing per sensor in pandas what model_predict.prepare and
detect.decide do cost more than the database. ``Chunk.of`` places a chunk's readings on one grid (one row
per sensor), ``windows`` cuts every sensor's windows from it, and ``decide`` applies the rules to all of
them at once (anomaly.grid_rules). Each sensor gets the windows and the scores.Scores that
model_predict.prepare and model_predict.decide give it alone. A sensor whose readings need repairs or gap
filling is not in ``rows``: model_predict does it alone.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

import clean
from anomaly import detect, grid_rules, thresholds, told
from anomaly.influx.readings import Readings
from anomaly.losses import BLAME
from anomaly.metadata import ModelMetadata
from anomaly.scores import Scores, no_blame

# Cells of the [sensors, grid] arrays decided at once: a dozen arrays of 16 MB at most.
DECIDE_CELLS = 2_000_000


@dataclass(frozen=True)
class Cut:
    """A sensor's windows cut from its chunk's grid: ``windows`` [n, window, 1] (float32) and ``ends``, the grid
    positions of their last points [n], increasing."""

    windows: np.ndarray
    ends: np.ndarray


@dataclass(frozen=True)
class Chunk:
    """A chunk's readings on one grid (clean.on_grid): ``values`` [sensors, grid]; ``rows`` maps a sensor id to
    its row, for the sensors that need no repairs or gap filling."""

    grid: pd.DatetimeIndex
    interval: pd.Timedelta
    values: np.ndarray
    rows: dict[str, int]

    @classmethod
    def of(
        cls,
        data: Mapping[str, pd.Series],
        sensor_ids: list[str],
        interval: pd.Timedelta,
        read: tuple[pd.Timestamp, pd.Timestamp],
        max_gap_points: int,
    ) -> Chunk:
        grid, values, done = clean.on_grid(*_points(data, sensor_ids), interval, *read)
        done &= ~clean.fillable(values, max_gap_points)
        return cls(grid, interval, values, {s: k for k, s in enumerate(sensor_ids) if done[k]})

    def positions(self, ranges: list[tuple[pd.Timestamp, pd.Timestamp]]) -> tuple[np.ndarray, np.ndarray]:
        """Each range [first, last] as grid positions: the first at or after ``first``, the last at or before
        ``last`` (the grid's times are its first + k * interval)."""
        origin, step = self.grid[0].value if len(self.grid) else 0, self.interval.value
        nanoseconds = np.array([(a.value, b.value) for a, b in ranges], dtype=np.int64).reshape(-1, 2) - origin
        return -(-nanoseconds[:, 0] // step), nanoseconds[:, 1] // step

    def windows(
        self, sensor_ids: list[str], models: list[ModelMetadata], ranges: list[tuple[pd.Timestamp, pd.Timestamp]]
    ) -> list[Cut]:
        """Each sensor's windows ending in its range [first, last], as model_predict.prepare cuts them: standardized
        by its model, each window's level removed when the model learned shapes, none across a missing reading."""
        out = [Cut(np.empty((0, m.window, 1), dtype="float32"), np.empty(0, np.int64)) for m in models]
        first, last = self.positions(ranges)
        position = np.arange(len(self.grid))
        for window in sorted({m.window for m in models}):
            members = [k for k, m in enumerate(models) if m.window == window]
            if window > len(self.grid):
                continue
            values = self.values[[self.rows[sensor_ids[k]] for k in members]]
            mean = np.array([[models[k].mean] for k in members])
            scale = np.array([[models[k].scale] for k in members])
            ends = (clean.run_lengths(~np.isnan(values)) >= window) & (position >= first[members, None])
            ends &= position <= last[members, None]
            # NaN where a reading is missing: ``ends`` keeps no window across one.
            standardized = clean.standardized(values, mean, scale).astype("float32")
            row, end = np.nonzero(ends)
            cut = np.lib.stride_tricks.sliding_window_view(standardized, window, axis=1)[row, end - window + 1]
            cut = cut[:, :, None]
            centered = np.array([models[k].centered for k in members])[row]
            if centered.any():
                cut = np.where(centered[:, None, None], clean.center(cut), cut)
            bounds = np.searchsorted(row, np.arange(len(members) + 1))
            for n, k in enumerate(members):
                out[k] = Cut(cut[bounds[n] : bounds[n + 1]], end[bounds[n] : bounds[n + 1]])
        return out

    def decide(
        self,
        sensor_ids: list[str],
        ends: list[np.ndarray],
        losses: list[np.ndarray],
        rules: list[detect.Rules],
        dues: list[tuple[pd.Timestamp, pd.Timestamp]],
        blames: list[np.ndarray],
    ) -> list[Callable[[], Scores]]:
        """Each sensor's scores for its due range [first, last] (model_predict.decide's), from its windows'
        ends (grid positions, sorted), finite losses and losses.BLAME; all under one policy
        (grid_rules.GridRules.of).
        Returned as calls, one per sensor, for the caller's error boundary per sensor. Decided ``DECIDE_CELLS``
        at a time: a backfill's grid is months long."""
        per = max(1, DECIDE_CELLS // max(1, len(self.grid)))
        return [
            decided
            for a in range(0, len(sensor_ids), per)
            for decided in self._decide(
                sensor_ids[a : a + per],
                ends[a : a + per],
                losses[a : a + per],
                rules[a : a + per],
                dues[a : a + per],
                blames[a : a + per],
            )
        ]

    def _decide(
        self,
        sensor_ids: list[str],
        ends: list[np.ndarray],
        losses: list[np.ndarray],
        rules: list[detect.Rules],
        dues: list[tuple[pd.Timestamp, pd.Timestamp]],
        blames: list[np.ndarray],
    ) -> list[Callable[[], Scores]]:
        chosen = grid_rules.GridRules.of(rules)
        values = self.values[[self.rows[s] for s in sensor_ids]]
        shape = values.shape
        sizes = [len(e) for e in ends]
        row, end = np.repeat(np.arange(len(sensor_ids)), sizes), np.concatenate([np.empty(0, np.int64), *ends])
        window_end = np.zeros(shape, dtype=bool)
        window_end[row, end] = True
        dtype = np.result_type(*[np.asarray(x).dtype for x in losses]) if losses else np.float32
        loss = np.full(shape, np.nan, dtype=dtype)
        loss[row, end] = np.concatenate([np.empty(0, dtype), *losses])
        blame = no_blame(values.size).reshape(shape)
        blame[row, end] = np.concatenate([np.empty(0, BLAME), *blames])
        first, last = self.positions(dues)
        history = rules[0].dynamic_history if rules else None
        finite = [bool(np.isfinite(x).all()) for x in losses]
        if history:
            decided_from = first - told.decided_before(chosen.min_consecutive, chosen.window)
            compared, threshold = self._dynamic(ends, losses, finite, history, decided_from, shape)
            threshold = np.maximum(threshold, (chosen.threshold * rules[0].dynamic_floor)[:, None])
        else:
            compared, threshold = loss, np.broadcast_to(chosen.threshold[:, None], shape)
        decided = grid_rules.decide(
            values,
            window_end,
            loss,
            compared,
            threshold,
            blame,
            chosen,
            first,
            last,
            detect.LEVEL_REARM // self.interval,
        )
        return [
            functools.partial(_given, scores) if finite[k] or not history else _not_finite
            for k, scores in enumerate(decided.scores(self.grid, chosen.kinds, history is not None))
        ]

    @staticmethod
    def _dynamic(
        ends: list[np.ndarray],
        losses: list[np.ndarray],
        finite: list[bool],
        history: int,
        decided_from: np.ndarray,
        shape: Any,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The smoothed losses and eps [S, G] of detect.dynamic_threshold, computed for all sensors with finite
        losses in one thresholds.rolling_eps call (NaN where no window, or before a sensor's decided range)."""
        used = [k for k, loss in enumerate(losses) if len(loss) and finite[k]]
        found = thresholds.rolling_eps(
            [np.asarray(losses[k]).astype("float64") for k in used],
            history,
            [int(np.searchsorted(ends[k], decided_from[k])) for k in used],
        )
        smoothed, eps = np.full(shape, np.nan), np.full(shape, np.nan)
        for k, (s, e) in zip(used, found):
            smoothed[k, ends[k]] = s
            eps[k, ends[k]] = e
        return smoothed, eps


def _points(
    data: Mapping[str, pd.Series], sensor_ids: list[str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """clean.on_grid's points and usable series of ``sensor_ids``' readings in ``data`` (absent: none), from the
    arrays of a database read (Readings), else series by series."""
    if isinstance(data, Readings):
        return (*data.points(sensor_ids), np.ones(len(sensor_ids), dtype=bool))
    raws = [data.get(s) for s in sensor_ids]
    usable = np.array(
        [
            raw is None
            or (raw.dtype == np.float64 and isinstance(raw.index, pd.DatetimeIndex) and str(raw.index.tz) == "UTC")
            for raw in raws
        ],
        dtype=bool,
    )
    kept = [raw if raw is not None and ok else None for raw, ok in zip(raws, usable)]
    row = np.repeat(np.arange(len(raws)), [0 if raw is None else len(raw) for raw in kept])
    times = [raw.index.as_unit("ns").asi8 for raw in kept if raw is not None]
    values = [raw.to_numpy() for raw in kept if raw is not None]
    return row, np.concatenate([np.empty(0, np.int64), *times]), np.concatenate([np.empty(0), *values]), usable


def _given(scores: Scores) -> Scores:
    """A sensor decided with its chunk: its call only hands its scores over."""
    return scores


def _not_finite() -> Scores:
    """A sensor whose losses are not all finite, under a dynamic threshold: it fails alone, as it does
    decided by itself (thresholds ranks finite losses only)."""
    raise ValueError("losses must be finite; leave out windows without a loss")
