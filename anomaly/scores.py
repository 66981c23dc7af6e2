"""One sensor's scores: plain arrays while the rules run (detect.py) and after, since a cron tick decides
thousands of sensors and writes their points straight from the arrays. ``Scores.frame()`` gives them as one
frame for the callers that want one:

    frame, indexed by window end (UTC, on the interval grid): ``value``, ``loss``, ``threshold`` (the
    effective one), ``anomaly`` (bool), ``kind`` (why it was flagged; ``none`` when it was not),
    ``smoothed_loss`` (what the flag compares with the threshold: the smoothed loss under a dynamic
    threshold, the loss itself under a fixed one), ``score``, and the window's blame (losses.BLAME) as
    ``worst`` and ``newest`` (NaN where unknown), which tuning decides told once with

These columns are the fields the scorer writes (model_predict.score_lines).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from anomaly.losses import BLAME


@dataclass(frozen=True)
class Scores:
    """One sensor's scores while the rules run: arrays of one length, by window end ``ends``. ``loss``
    keeps the dtype the engine computed it in, so a float32 loss is compared in float32. ``cause``: the time
    (int64 ns) of the reading a window's flag would be about: its worst reconstructed one, the first reading of
    a level excursion, or (unknown) its newest; ``blame``: each window's losses.BLAME (a point without a
    window: worst -1, newest NaN), None when unknown."""

    ends: pd.DatetimeIndex
    value: np.ndarray
    loss: np.ndarray
    threshold: np.ndarray
    anomaly: np.ndarray
    kind: np.ndarray
    smoothed_loss: np.ndarray | None = None
    cause: np.ndarray | None = None
    blame: np.ndarray | None = None

    def flag(self, anomaly: np.ndarray, kind: str) -> Scores:
        return replace(self, anomaly=anomaly, kind=np.where(anomaly, kind, "none"))

    def between(self, first: pd.Timestamp, last: pd.Timestamp) -> Scores:
        """The windows ending in [first, last] (``ends`` are sorted)."""
        at = slice(self.ends.searchsorted(first), self.ends.searchsorted(last, side="right"))
        return Scores(
            ends=self.ends[at],
            value=self.value[at],
            loss=self.loss[at],
            threshold=self.threshold[at],
            anomaly=self.anomaly[at],
            kind=self.kind[at],
            smoothed_loss=None if self.smoothed_loss is None else self.smoothed_loss[at],
            cause=None if self.cause is None else self.cause[at],
            blame=None if self.blame is None else self.blame[at],
        )

    @property
    def compared(self) -> np.ndarray:
        """What the flag compared with the threshold: the smoothed loss under a dynamic threshold, else the loss."""
        return self.loss.astype("float64") if self.smoothed_loss is None else self.smoothed_loss

    def columns(self) -> dict[str, np.ndarray]:
        """The frame's columns, by name, in its order."""
        # Every window gets every column, whatever the rules: InfluxDB merges a point into the one already at its
        # key, so a field one configuration wrote and a later backfill did not would keep its old value.
        compared = self.compared
        blame = self.blame if self.blame is not None else no_blame(len(self.ends))
        return {
            "value": self.value,
            "loss": self.loss.astype("float64"),
            "threshold": self.threshold,
            "anomaly": self.anomaly,
            "kind": self.kind,
            "smoothed_loss": compared,
            "score": compared / self.threshold,
            "worst": np.where(blame["worst"] >= 0, blame["worst"], np.nan),
            "newest": blame["newest"].astype("float64"),
        }

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.columns(), index=self.ends)


def no_blame(n: int) -> np.ndarray:
    """The blame of ``n`` points without a window: no worst reading (-1), no newest error. Not a blame to
    decide a window with (detect.decide takes None for an unknown one); written, it leaves both fields out."""
    blame = np.empty(n, dtype=BLAME)
    blame["worst"], blame["newest"] = -1, np.nan
    return blame
