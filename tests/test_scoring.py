"""Pure parts of scoring and training: which windows are due, losses, thresholds, flags."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import model_predict
from anomaly import detect
from anomaly.losses import reconstruction_loss
from anomaly.metadata import ModelMetadata
from model_predict import SensorModel, windows_to_score

NOW = pd.Timestamp("2026-01-15T10:07:00Z")
H = pd.Timedelta(hours=1)


def settings(**overrides) -> model_predict.Schedule:
    values = dict(
        interval=pd.Timedelta(minutes=15),
        now=NOW,
        start=None,
        stop=None,
        max_catchup=pd.Timedelta(days=7),
        first_run=pd.Timedelta(days=1),
        delay=pd.Timedelta(0),
    )
    values.update(overrides)
    return model_predict.Schedule(**values)


def flags(ends, values, losses, threshold, min_consecutive=1, interval=None) -> pd.DataFrame:
    """The scores frame of the one decision step with a fixed threshold and persistence only."""
    return detect.decide(
        ends,
        values,
        losses,
        detect.Rules(threshold, min_consecutive),
        detect.Context(interval or pd.Timedelta(minutes=15)),
    )


FLOOR = pd.Timestamp("2026-01-15T10:00:00Z")


@pytest.mark.parametrize(
    "last_scored, overrides, expected",
    [
        pytest.param(None, {}, (FLOOR - 24 * H, FLOOR - H / 4), id="first run: the last day of complete intervals"),
        pytest.param(FLOOR - 2 * H, {}, (FLOOR - 2 * H + H / 4, FLOOR - H / 4), id="resumes after the last score"),
        pytest.param(
            FLOOR - H / 2,
            {"delay": pd.Timedelta(minutes=2)},
            (FLOOR - H / 4, FLOOR - H / 4),
            id="the normal cron tick: exactly one interval due",
        ),
        pytest.param(FLOOR - H / 4, {}, None, id="up to date"),
        pytest.param(
            FLOOR - 30 * 24 * H, {}, (FLOOR - 7 * 24 * H, FLOOR - H / 4), id="catch-up bounded by max-catchup"
        ),
        pytest.param(
            None,
            {"delay": pd.Timedelta(minutes=8)},
            (FLOOR - 24 * H - H / 4, FLOOR - H / 2),
            id="an interval that ended less than the delay ago waits",
        ),
        pytest.param(None, {"first_run": 2 * H}, (FLOOR - 2 * H, FLOOR - H / 4), id="first-run setting"),
        pytest.param(
            FLOOR - H / 4,
            {"start": FLOOR - 3 * H, "stop": FLOOR - H},
            (FLOOR - 3 * H, FLOOR - H - H / 4),
            id="backfill ignores what is scored",
        ),
    ],
)
def test_score_range(last_scored, overrides, expected):
    assert model_predict.score_range(last_scored, settings(**overrides)) == expected


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
    model = SensorModel(
        ModelMetadata("s", window=3, interval=pd.Timedelta(minutes=15), threshold=0.4, mean=1.0, scale=2.0)
    )
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
    assert frame["kind"].tolist() == ["none", "none", "shape"]
    assert frame["threshold"].tolist() == [0.6, 0.6, 0.6] and frame.index.equals(ends)


def test_score_lines_one_point_per_window_in_time_order():
    from anomaly.settings import Schema

    index = pd.date_range("2026-01-01", periods=2, freq="15min", tz="UTC")
    scores = pd.DataFrame(
        {
            "value": [1.5, np.nan],
            "loss": [0.1, np.nan],
            "threshold": [0.5, 0.5],
            "anomaly": [False, False],
            "kind": ["none", "missing"],
            "score": [0.2, np.nan],
        },
        index=index,
    )
    lines = model_predict.score_lines("AHU 1", scores, Schema())
    assert lines == [
        'PREDICT_ANOMALY,uniqueID=AHU\\ 1 val_num=1.5,loss=0.1,threshold=0.5,anomaly=false,kind="none",'
        f'detector="lstm",score=0.2 {int(index[0].timestamp())}',
        'PREDICT_ANOMALY,uniqueID=AHU\\ 1 threshold=0.5,anomaly=false,kind="missing",'
        f'detector="lstm" {int(index[1].timestamp())}',
    ]


def test_model_shapes_and_threshold():
    model_trainer = pytest.importorskip("model_trainer")
    model = model_trainer.build_model(window=6, units=4, dropout=0.0)
    assert model.input_shape == (None, 6, 1) and model.output_shape == (None, 6, 1)
    assert model_trainer.loss_threshold(np.arange(101, dtype=float), 99.5) == pytest.approx(99.5)


T = pd.date_range("2026-01-01", periods=8, freq="15min", tz="UTC")
Q = pd.Timedelta(minutes=15)


@pytest.mark.parametrize(
    "losses, k, expected",
    [
        ([1, 1, 0, 1, 1, 1, 0, 1], 1, [1, 1, 0, 1, 1, 1, 0, 1]),
        ([1, 1, 0, 1, 1, 1, 0, 1], 2, [0, 1, 0, 0, 1, 1, 0, 0]),
        ([1, 1, 0, 1, 1, 1, 0, 1], 3, [0, 0, 0, 0, 0, 1, 0, 0]),
        ([0, 0, 0, 0, 0, 0, 0, 0], 2, [0, 0, 0, 0, 0, 0, 0, 0]),
    ],
)
def test_min_consecutive_needs_k_windows_in_a_row_above_the_threshold(losses, k, expected):
    frame = flags(T, np.zeros(8), np.array(losses, dtype="float32"), threshold=0.5, min_consecutive=k, interval=Q)
    assert frame["anomaly"].astype(int).tolist() == expected


def test_a_gap_between_windows_breaks_the_run():
    ends = T[[0, 1, 3, 4]]  # the window ending at T[2] could not be built
    frame = flags(ends, np.zeros(4), np.ones(4, dtype="float32"), threshold=0.5, min_consecutive=2, interval=Q)
    assert frame["anomaly"].tolist() == [False, True, False, True]


@pytest.mark.parametrize(
    "values, flat_limit, missing_limit, kinds",
    [
        ([1, 2, 3, 4, 5, 6, 7, 8], 2, 1, {}),
        ([1, 2, 5, 5, 5, 5, 7, 8], 2, 1, {T[4]: "flatline", T[5]: "flatline"}),
        ([1, 2, 5, 5, 5, 5, 7, 8], None, 1, {}),
        ([1, 2, np.nan, np.nan, np.nan, 6, 7, 8], 2, 1, {T[3]: "missing", T[4]: "missing"}),
        ([1, 2, np.nan, np.nan, np.nan, 6, 7, 8], 2, 3, {}),
    ],
)
@pytest.mark.parametrize("missing_is_anomaly", [False, True])
def test_data_checks_flag_stuck_and_silent_sensors(values, flat_limit, missing_limit, kinds, missing_is_anomaly):
    series = pd.Series(values, index=T, dtype="float64")
    present = series.notna().to_numpy()
    checked = detect.decide(
        T[present],
        series[present].to_numpy(),
        np.zeros(present.sum(), dtype="float32"),
        detect.Rules(0.5, flat_limit=flat_limit, missing_limit=missing_limit, missing_is_anomaly=missing_is_anomaly),
        detect.Context(Q, series, T[0], T[-1]),
    )
    assert {t: k for t, k in checked["kind"].items() if k != "none"} == kinds
    # An outage is reported (kind missing) but is an anomaly only when asked for.
    flagged_kinds = checked["kind"].isin(["flatline", "missing"] if missing_is_anomaly else ["flatline"])
    assert (checked["anomaly"] == flagged_kinds).all()
    assert checked.loc[checked["kind"] == "missing", "loss"].isna().all()


def test_the_cold_start_detector_follows_the_daily_cycle_and_ignores_tiny_changes_of_a_flat_sensor():
    from anomaly.cold_start import robust_scores

    index = pd.date_range("2026-01-01", periods=8 * 96, freq="15min", tz="UTC")  # 8 days, 96 intervals a day
    steps = np.arange(len(index))
    cycle = pd.Series(20 + 5 * np.sin(2 * np.pi * steps / 96) + 0.1 * (steps % 3), index=index)
    cycle.iloc[-40] += 5.0  # half the cycle's swing: ordinary for the day, far off for that time of day
    last_day = index[-96:]
    scores = robust_scores(
        cycle, history=7 * 96, min_history=2 * 96, z=6.0, first=last_day[0], last=last_day[-1], period=96
    )
    assert scores.index.equals(last_day)
    assert scores.index[scores["anomaly"]].tolist() == [index[-40]]
    assert scores.loc[index[-40], "kind"] == "outlier"
    flat = pd.Series(20.0, index=index)
    flat.iloc[-2:] = 20.01  # a MAD of zero must not make a 0.05% change an outlier
    assert not robust_scores(flat, 7 * 96, 2 * 96, 6.0, last_day[0], last_day[-1], period=96)["anomaly"].any()
    young = cycle.where(cycle.index >= index[-130])  # a day and a bit of readings: not enough yet
    assert robust_scores(young, 7 * 96, 2 * 96, 6.0, last_day[0], last_day[-1], period=96).empty
