"""Pure parts of scoring and training: which windows are due, losses, thresholds, flags."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import sensor_predict
from config import SensorConfig
from model_predict import SensorModel, flags, reconstruction_loss, windows_to_score

NOW = pd.Timestamp("2026-01-15T10:07:00Z")
H = pd.Timedelta(hours=1)


def settings(**overrides) -> sensor_predict.PredictSettings:
    values = dict(connection=None, schema=None, sensors=(), shard=None, sensor_config=SensorConfig({}, {}),
                  interval=pd.Timedelta(minutes=15), max_gap=H, models_dir=Path("models"), chunk_size=200, now=NOW,
                  start=None, stop=None, max_catchup=pd.Timedelta(days=7), first_run=pd.Timedelta(days=1),
                  dry_run=False, delay=pd.Timedelta(0), engine="numpy", announce=None)
    values.update(overrides)
    return sensor_predict.PredictSettings(**values)


FLOOR = pd.Timestamp("2026-01-15T10:00:00Z")


@pytest.mark.parametrize("last_scored, overrides, expected", [
    pytest.param(None, {}, (FLOOR - 24 * H, FLOOR - H / 4), id="first run: the last day of complete intervals"),
    pytest.param(FLOOR - 2 * H, {}, (FLOOR - 2 * H + H / 4, FLOOR - H / 4), id="resumes after the last score"),
    pytest.param(FLOOR - H / 4, {}, None, id="up to date"),
    pytest.param(FLOOR - 30 * 24 * H, {}, (FLOOR - 7 * 24 * H, FLOOR - H / 4), id="catch-up bounded by max-catchup"),
    pytest.param(None, {"delay": pd.Timedelta(minutes=8)}, (FLOOR - 24 * H - H / 4, FLOOR - H / 2),
                 id="an interval that ended less than the delay ago waits"),
    pytest.param(None, {"first_run": 2 * H}, (FLOOR - 2 * H, FLOOR - H / 4), id="first-run setting"),
    pytest.param(FLOOR - H / 4, {"start": FLOOR - 3 * H, "stop": FLOOR - H}, (FLOOR - 3 * H, FLOOR - H - H / 4),
                 id="backfill ignores what is scored"),
])
def test_score_range(last_scored, overrides, expected):
    assert sensor_predict.score_range(last_scored, settings(**overrides)) == expected


class Identity:
    """Stands in for a model that reconstructs perfectly except where told: loss is then known exactly."""

    def __init__(self, offset: float = 0.0):
        self.offset = offset

    def __call__(self, batch, training=False):
        return batch + self.offset


def test_reconstruction_loss_is_the_mean_absolute_error_per_window():
    windows = np.arange(12, dtype="float32").reshape(3, 4, 1)
    assert reconstruction_loss(Identity(0.5), windows, batch_size=2).tolist() == [0.5, 0.5, 0.5]
    assert reconstruction_loss(Identity(), np.empty((0, 4, 1), dtype="float32")).shape == (0,)


def test_windows_to_score_fills_short_gaps_standardizes_and_keeps_the_range():
    index = pd.date_range("2026-01-01", periods=8, freq="15min", tz="UTC")
    series = pd.Series([1.0, 2.0, np.nan, 4.0, np.nan, np.nan, np.nan, 8.0], index=index)
    model = SensorModel("s", window=3, interval=pd.Timedelta(minutes=15), threshold=0.4, mean=1.0, scale=2.0)
    windows, ends, values = windows_to_score(series, model, max_gap_points=1, first=index[0], last=index[-1])
    # the one-point gap is filled (3.0); the three-point gap is not, so only windows ending at 2, 3 are whole
    assert ends.tolist() == [index[2], index[3]]
    assert values.tolist() == [3.0, 4.0]
    assert windows[:, :, 0].tolist() == [[0.0, 0.5, 1.0], [0.5, 1.0, 1.5]]
    _, later, _ = windows_to_score(series, model, max_gap_points=1, first=index[3], last=index[-1])
    assert later.tolist() == [index[3]]


def test_flags_mark_losses_above_the_effective_threshold():
    ends = pd.date_range("2026-01-01", periods=3, freq="15min", tz="UTC")
    frame = flags(ends, np.array([1.0, 2.0, 3.0]), np.array([0.1, 0.6, 0.61], dtype="float32"), threshold=0.6)
    assert frame["anomaly"].tolist() == [False, False, True]
    assert frame["threshold"].tolist() == [0.6, 0.6, 0.6] and frame.index.equals(ends)


def test_score_lines_one_point_per_window_in_time_order():
    from config import Schema

    index = pd.date_range("2026-01-01", periods=2, freq="15min", tz="UTC")
    scores = pd.DataFrame({"value": [1.5, 2.5], "loss": [0.1, 0.9], "threshold": [0.5, 0.5], "anomaly": [False, True]},
                          index=index)
    lines = sensor_predict.score_lines("AHU 1", scores, Schema())
    assert lines == [
        f"PREDICT_ANOMALY,uniqueID=AHU\\ 1 val_num=1.5,loss=0.1,threshold=0.5,anomaly=false {int(index[0].timestamp())}",
        f"PREDICT_ANOMALY,uniqueID=AHU\\ 1 val_num=2.5,loss=0.9,threshold=0.5,anomaly=true {int(index[1].timestamp())}",
    ]


def test_model_shapes_and_threshold():
    model_trainer = pytest.importorskip("model_trainer")
    model = model_trainer.build_model(window=6, units=4, dropout=0.0)
    assert model.input_shape == (None, 6, 1) and model.output_shape == (None, 6, 1)
    assert model_trainer.loss_threshold(np.arange(101, dtype=float), 99.5) == pytest.approx(99.5)
