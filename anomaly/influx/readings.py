"""Readings of many sensors as one read returns them.

A Mapping of sensor id -> Series of readings by UTC time, kept as two arrays for all sensors (times and
values, each sensor's points one run of them): the scorer places a chunk of thousands of sensors on its
grid from the arrays at once (anomaly.chunk), and a sensor's Series is made only when asked for.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import pandas as pd


class Readings(Mapping[str, pd.Series]):
    """``index`` (UTC) and ``readings`` (float64) of every point; ``sizes`` how many of them, in order, belong
    to each of ``sensor_ids``."""

    def __init__(self, sensor_ids: Sequence[str], index: pd.DatetimeIndex, readings: np.ndarray, sizes: Sequence[int]):
        self.index, self.readings = index, readings
        bounds = np.concatenate([[0], np.cumsum(np.asarray(sizes, dtype=np.int64))])
        self.runs = {s: (int(bounds[k]), int(bounds[k + 1])) for k, s in enumerate(sensor_ids)}

    def __getitem__(self, sensor_id: str) -> pd.Series:
        first, stop = self.runs[sensor_id]
        return pd.Series(self.readings[first:stop], index=self.index[first:stop], name=sensor_id)

    def __iter__(self) -> Iterator[str]:
        return iter(self.runs)

    def __len__(self) -> int:
        return len(self.runs)

    def points(self, sensor_ids: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The points of ``sensor_ids`` (absent ones have none): each one's row (position in ``sensor_ids``),
        its time in nanoseconds since 1970 and its value, sensor by sensor in their order."""
        runs = [self.runs.get(s, (0, 0)) for s in sensor_ids]
        take = np.concatenate([np.empty(0, np.int64), *(np.arange(a, b) for a, b in runs)])
        row = np.repeat(np.arange(len(sensor_ids)), [b - a for a, b in runs])
        return row, self.index.as_unit("ns").asi8[take], self.readings[take]
