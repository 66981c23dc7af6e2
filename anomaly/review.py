"""Reading back what scoring wrote, for the tools that review it (evaluation, tuning, pictures).

The scores come from ``Database.read_scores``, as sensor_predict.py wrote them; a sensor's model is read
through the one metadata schema (``store.load``), so these tools agree with the scorer on which models
are usable. A point with no loss is an interval the scorer found without readings (kind ``missing``), not
a window: it is left out here, so no review counts an outage of the data as scored or flagged, even when
the scorer ran with --missing-is-anomaly.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from anomaly import store
from anomaly.losses import BLAME
from anomaly.metadata import ArtifactError, ModelMetadata
from anomaly.sensor_config import SensorConfig
from anomaly.settings import Common


@dataclass(frozen=True)
class ModelFacts:
    """What evaluation and tuning need of a sensor's model; ``window`` falls back to the configuration without
    one, and ``note`` says why. ``metadata``: the model's, for the scorer's rules (None without a model)."""

    window: int
    threshold: float | None
    note: str = ""
    metadata: ModelMetadata | None = None


def model_facts(models_dir: Path, sensor_id: str, sensor_config: SensorConfig, interval: pd.Timedelta) -> ModelFacts:
    """The model's window and saved threshold; without a usable model, the configured window and no threshold."""
    try:
        metadata = store.load(store.sensor_dir(models_dir, sensor_id), verify=()).metadata
    except ArtifactError as e:
        return ModelFacts(
            sensor_config.window(sensor_id), None, f"no usable model ({str(e)[:80]}): window from time_step_sizes.json"
        )
    if metadata.interval != interval:
        return ModelFacts(
            metadata.window,
            metadata.threshold,
            f"model interval {int(metadata.interval.total_seconds())}s differs from --interval",
            metadata,
        )
    return ModelFacts(metadata.window, metadata.threshold, metadata=metadata)


def distinct_sensors(common: Common) -> Common:
    """``common`` with each --sensor once, in the order given: a tool names a sensor's row or picture once."""
    return dataclasses.replace(common, sensors=tuple(dict.fromkeys(common.sensors)))


def chunks(sensor_ids: Sequence[str], size: int) -> Iterator[list[str]]:
    """The sensors ``size`` at a time: each chunk is read with one query per kind of data."""
    for first in range(0, len(sensor_ids), size):
        yield list(sensor_ids[first : first + size])


def no_readings() -> pd.Series:
    """An empty series of readings, for a sensor the database had none of."""
    return pd.Series(dtype="float64", index=pd.DatetimeIndex([], tz="UTC"))


def normalize_scores(frame: pd.DataFrame | None, field: str) -> pd.DataFrame:
    """read_scores' frame with float loss, threshold and reading and a boolean anomaly, sorted by time, each
    window end once (the last one read), and only windows: points without a loss (missing) are left out."""
    if frame is None or frame.empty:
        return pd.DataFrame(
            {"loss": [], "threshold": [], "anomaly": [], field: []}, index=pd.DatetimeIndex([], tz="UTC")
        ).astype({"anomaly": bool})
    out = pd.DataFrame(
        {
            "loss": pd.to_numeric(frame["loss"], errors="coerce").astype("float64"),
            "threshold": pd.to_numeric(frame["threshold"], errors="coerce").astype("float64"),
            "anomaly": frame["anomaly"].map(lambda v: v is True or v == 1).astype(bool),
            field: pd.to_numeric(frame[field], errors="coerce").astype("float64"),
        },
        index=frame.index,
    )
    out = out[~out.index.duplicated(keep="last")]
    return out[out["loss"].notna()].sort_index()


def stored_loss(frame: pd.DataFrame | None) -> pd.Series:
    """The loss of every stored window by window end, sorted, each window end once (the last one read); a
    loss does not depend on the ratio. Points without a loss that is a number (missing) are left out."""
    if frame is None:
        return no_readings()
    loss = pd.to_numeric(frame["loss"], errors="coerce").astype("float64")
    loss = loss[~loss.index.duplicated(keep="last")]
    return loss[loss.notna()].sort_index()


def stored_blame(frame: pd.DataFrame | None, loss: pd.Series, window: int) -> np.ndarray:
    """The blame (losses.BLAME) of each window of ``loss`` (stored_loss's) as the scorer stored it, so tuning
    tells a flag once as scoring did. A window stored without one (scored before the blame was stored, or
    by the cold-start detector) gets the blame detect.decide assumes without one: its newest reading is its
    worst, and it is not known to be off by itself."""
    blame = np.empty(len(loss), dtype=BLAME)
    blame["worst"], blame["newest"] = window - 1, np.nan
    if frame is None:
        return blame
    stored = frame.reindex(columns=["worst", "newest"]).apply(pd.to_numeric, errors="coerce")
    stored = stored[~stored.index.duplicated(keep="last")].reindex(loss.index)
    worst = stored["worst"].to_numpy(dtype="float64")
    known = np.isfinite(worst)
    blame["worst"][known] = np.clip(worst[known], 0, window - 1)
    blame["newest"][known] = stored["newest"].to_numpy(dtype="float64")[known]
    return blame
