"""Pure parts of scoring and training: which windows are due, losses, thresholds, flags."""

from __future__ import annotations

import dataclasses
import itertools
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import anomaly.chunk
import clean
import model_predict
from anomaly import detect, grid_rules, rescore, thresholds, told
from anomaly.chunk import Chunk
from anomaly.influx.readings import Readings
from anomaly.losses import BLAME, reconstruction_loss
from anomaly.metadata import ModelMetadata
from anomaly.scores import Scores, no_blame
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
    ).frame()


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


@pytest.mark.parametrize(
    "last_scored, overrides, expected",
    [
        pytest.param(FLOOR - H / 2, {}, (FLOOR - H / 4, FLOOR - H / 4), id="one interval due: a range of one window"),
        pytest.param(
            None, {"start": FLOOR - H}, (FLOOR - H, FLOOR - H / 4), id="backfill without a stop: up to the last whole"
        ),
        pytest.param(None, {"start": FLOOR - H / 4, "stop": FLOOR - H / 4}, None, id="backfill of an empty range"),
    ],
)
def test_score_range_edges(last_scored, overrides, expected):
    assert model_predict.score_range(last_scored, settings(**overrides)) == expected


def trained(window: int = 4, threshold: float = 0.4, longest_flat_run=None, levels=None, centered=False):
    """A numpy-engine model as the scorer sees it: only its metadata matters to the rules."""
    metadata = ModelMetadata(
        "s",
        window=window,
        interval=Q,
        threshold=threshold,
        mean=10.0,
        scale=2.0,
        longest_flat_run=longest_flat_run,
        centered=centered,
        levels=levels,
    )
    return SensorModel(metadata)


@pytest.mark.parametrize(
    "levels, margin, expected",
    [
        (None, 0.1, None),  # saved before training recorded its range: no level rule
        ((10.0, 20.0), 0.1, (9.0, 21.0)),
        ((10.0, 20.0), 0.0, (10.0, 20.0)),
        ((-4.0, -2.0), 0.5, (-5.0, -1.0)),
        ((3.0, 3.0), 0.5, (3.0, 3.0)),  # a range of one value has no margin to widen by
    ],
)
def test_levels_widen_the_training_range_by_a_share_of_it_on_each_side(levels, margin, expected):
    assert model_predict.levels(trained(levels=levels), margin) == expected


def test_rules_for_take_the_threshold_times_the_ratio_and_everything_else_from_the_model_and_the_policy():
    model = trained(window=6, threshold=0.4, longest_flat_run=10, levels=(0.0, 10.0))
    policy = model_predict.Policy(
        min_consecutive=3,
        dynamic_history=96,
        dynamic_floor=0.5,
        missing_limit=4,
        missing_is_anomaly=True,
        level_margin=0.5,
    )
    assert model_predict.rules_for(model, 1.5, policy) == detect.Rules(
        threshold=0.4 * 1.5,
        min_consecutive=3,
        dynamic_history=96,
        dynamic_floor=0.5,
        levels=(-5.0, 15.0),
        window=6,
        flat_limit=20,  # twice the longest flat run training saw
        missing_limit=4,
        missing_is_anomaly=True,
    )
    plain = model_predict.rules_for(trained(), 1.0, model_predict.Policy())
    assert plain == detect.Rules(threshold=0.4, window=4, dynamic_floor=model_predict.DYNAMIC_FLOOR)


@pytest.mark.parametrize(
    "policy, longest_flat_run, decided, readings",
    [
        # Window 4 at 15 minutes: a flag is told once, so the 3 windows before the first due one are decided with
        # it; the level detector reads a day (96) before a window's first reading.
        pytest.param({}, None, 3, 4 + 96, id="told once: the window-1 before; a day before their readings"),
        pytest.param({"min_consecutive": 3}, None, 3 + 2, 4 + 96, id="persistence: the k-1 windows before those"),
        pytest.param(
            {"min_consecutive": 2, "dynamic_history": 10},
            None,
            3 + 1 + 10 + 2 * 9,
            4 + 96 - (10 + 2 * 9),
            id="dynamic: history_needed, whose readings count toward the day",
        ),
        pytest.param({"dynamic_history": 96}, None, 3 + 96 + 18, 4, id="a history longer than a day: the window alone"),
        pytest.param({}, 5, 3, 4 + 96, id="a flat-line limit within the day is read anyway"),
        pytest.param({}, 96, 3, 192, id="a flat-line limit of two days is read back"),
        pytest.param({}, 97, 3, 4 + 96, id="a limit beyond two days is not checked, so not read"),
    ],
)
def test_lead_reaches_back_for_what_decides_the_first_due_window(policy, longest_flat_run, decided, readings):
    model = trained(window=4, longest_flat_run=longest_flat_run)
    assert model_predict.lead(model, model_predict.Policy(**policy), Q) == (decided * Q, readings * Q)


@pytest.mark.parametrize("longest_flat_run, flagged", [(96, True), (97, False)])
def test_a_backfill_flags_no_flat_line_a_tick_could_not_see(longest_flat_run, flagged):
    # Training saw flat runs of a day (96 or 97 intervals of 15 minutes): the limit is twice that. A tick reads
    # two days back for flat-lines; a backfill over a week reads the whole week, so a limit past two days
    # would flag there what no tick ever flags.
    model = trained(window=4, longest_flat_run=longest_flat_run)
    ends = pd.date_range("2026-01-01", periods=7 * 96, freq=Q, tz="UTC")
    series = pd.Series(5.0, index=ends)
    rules = model_predict.rules_for(model, 1.0, model_predict.Policy())
    context = detect.Context(interval=Q, series=series, first=ends[0], last=ends[-1])
    scores = detect.decide(ends, series.to_numpy(), np.zeros(len(ends)), rules, context).frame()
    assert (scores["kind"] == "flatline").any() == flagged


@pytest.mark.parametrize("policy", [{"min_consecutive": 2}, {"min_consecutive": 2, "dynamic_history": 8}])
def test_a_tick_reading_from_the_lead_tells_each_excursion_as_a_backfill_does(policy):
    # Readings beyond the range (0, 10) over four days: at 100, 150 and 230 one excursion (each within a day of
    # the last), at 330 and 333 another. A tick that reads from lead() before its one due window flags it as a
    # backfill over everything does: at 230 it must see 150.
    model = trained(window=4, levels=(0.0, 10.0))
    rules = model_predict.rules_for(model, 1.0, model_predict.Policy(**policy, level_margin=0.0))
    ends = pd.date_range("2026-01-01", periods=4 * 96, freq=Q, tz="UTC")
    values = np.full(len(ends), 5.0)
    values[[100, 150, 230, 330, 333]] = 11.0
    series = pd.Series(values, index=ends)
    backfill = detect.decide(
        ends, values, np.zeros(len(ends)), rules, detect.Context(Q, series, ends[0], ends[-1])
    ).frame()
    # Of the windows that take in 100 and 330 (K=2 drops the first), the first tells each excursion.
    assert backfill.index[backfill["kind"] == "level"].equals(ends[[101, 331]])
    decided, readings = model_predict.lead(model, model_predict.Policy(**policy), Q)
    for due in range(200, len(ends)):
        read = series[series.index >= ends[due] - decided - readings]
        kept = read.index >= ends[due] - decided
        context = detect.Context(Q, read, ends[due], ends[due], decided_from=ends[due] - decided)
        tick = detect.decide(read.index[kept], read.to_numpy()[kept], np.zeros(kept.sum()), rules, context).frame()
        assert tick.loc[ends[due], "kind"] == backfill.loc[ends[due], "kind"], ends[due]


def test_prepare_puts_the_readings_as_read_on_the_grid_and_keeps_the_due_windows():
    grid = pd.date_range("2026-01-01", periods=8, freq="15min", tz="UTC")
    # Off the grid, out of order, a duplicate time and nothing read in the last interval.
    raw = pd.Series(
        [14.0, 10.0, 12.0, 16.0, 18.0, 20.0, 22.0, 99.0, 24.0],
        index=grid[[2, 0, 1, 3, 4, 5, 6, 6, 6]] + pd.Timedelta(minutes=1),
    ).iloc[[0, 1, 2, 3, 4, 5, 7, 8]]
    prepared = model_predict.prepare(
        raw, trained(window=3), Q, (grid[0], grid[-1] + Q), max_gap_points=0, first=grid[3], last=grid[-1]
    )
    assert prepared.series.index.equals(grid)
    assert prepared.series.tolist()[:7] == [10.0, 12.0, 14.0, 16.0, 18.0, 20.0, 24.0] and np.isnan(
        prepared.series.iloc[7]
    )
    assert prepared.ends.equals(grid[3:7]) and prepared.values.tolist() == [16.0, 18.0, 20.0, 24.0]
    assert prepared.windows.shape == (4, 3, 1)
    assert prepared.windows[0, :, 0].tolist() == [1.0, 2.0, 3.0]  # (x - 10) / 2


def test_prepare_centres_the_windows_of_a_model_that_learned_shapes():
    grid = pd.date_range("2026-01-01", periods=4, freq="15min", tz="UTC")
    raw = pd.Series([10.0, 12.0, 20.0, 20.0], index=grid)
    prepared = model_predict.prepare(
        raw, trained(window=2, centered=True), Q, (grid[0], grid[-1] + Q), 0, grid[0], grid[-1]
    )
    assert prepared.windows[:, :, 0].tolist() == [[-0.5, 0.5], [-2.0, 2.0], [0.0, 0.0]]


def test_decide_uses_the_lead_windows_and_returns_only_the_due_range():
    grid = pd.date_range("2026-01-01", periods=6, freq="15min", tz="UTC")
    series = pd.Series([1.0, 2.0, 3.0, np.nan, np.nan, np.nan], index=grid)
    prepared = model_predict.Prepared(np.zeros((3, 1, 1)), grid[:3], series.iloc[:3].to_numpy(), series)
    rules = detect.Rules(threshold=0.5, min_consecutive=2, missing_limit=1)
    scores = model_predict.decide(prepared, np.array([0.9, 0.9, 0.1]), rules, Q, grid[1], grid[4]).frame()
    # grid[0] only made grid[1] the second window in a row; the outage is reported from its second interval
    # (grid[4]) up to the last due one (grid[5] is not due).
    assert scores.index.equals(grid[[1, 2, 4]])
    assert scores["kind"].tolist() == ["shape", "none", "missing"]
    assert scores["anomaly"].tolist() == [True, False, False]


@pytest.mark.parametrize(
    "k, spikes, expected",
    [
        pytest.param(1, "........x...", "x...", id="the first due window"),
        pytest.param(2, ".......xx...", "x...", id="the first due window and the one before it"),
        pytest.param(3, "......xxxx..", "xx..", id="k-1 windows before the first due one"),
        pytest.param(2, "........x...", "....", id="one window is not two in a row"),
    ],
)
def test_decide_decides_every_window_persistence_looks_at_under_a_dynamic_threshold(k, spikes, expected):
    # Windows 8 to 11 are due; the ones before are read only to decide them. Losses of 0.1 under a floor of
    # 0.5 (the history is fenced or too short to raise it); a spike (x) of 1.0 smooths to 0.55, above it, and
    # the echo after two of them (0.44) stays below it.
    grid = pd.date_range("2026-01-01", periods=12, freq="15min", tz="UTC")
    series = pd.Series(np.arange(12.0), index=grid)
    prepared = model_predict.Prepared(np.zeros((12, 1, 1)), grid, series.to_numpy(), series)
    losses = np.array([1.0 if c == "x" else 0.1 for c in spikes])
    rules = detect.Rules(threshold=0.5, min_consecutive=k, dynamic_history=8)
    scores = model_predict.decide(prepared, losses, rules, Q, grid[8], grid[11]).frame()
    assert "".join("x" if a else "." for a in scores["anomaly"]) == expected


def test_the_ranges_to_score_again_are_kept_beside_the_state_file_of_their_output():
    # An upgrade looks for them beside the state file an earlier version kept (README, the state directory).
    state = Path("/var/lib/sensor-anomaly/.sensor_predict-state-0123456789ab.json")
    assert rescore.beside(state) == Path("/var/lib/sensor-anomaly/.sensor_predict-state-0123456789ab.rescore.json")


def test_a_failed_write_keeps_each_sensors_earliest_range_start_to_score_again():
    pending = {"a": FLOOR - 2 * H, "b": FLOOR - 3 * H}
    due = {"a": (FLOOR - H, FLOOR - H / 4), "b": (FLOOR - 5 * H, FLOOR - H / 4), "c": (FLOOR - H / 2, FLOOR)}
    assert rescore.failed(pending, due) == {"a": FLOOR - 2 * H, "b": FLOOR - 5 * H, "c": FLOOR - H / 2}
    assert pending == {"a": FLOOR - 2 * H, "b": FLOOR - 3 * H}  # the given ranges are not changed
    assert rescore.failed(pending, {}) == pending


@pytest.mark.parametrize(
    "old, new, move, used, text, moved",
    [
        ("former", None, True, "new", "former", True),  # the upgrade: moved
        ("former", "current", True, "new", "current", False),  # moved already: the copy left is not read
        (None, None, True, "new", None, False),  # nothing kept yet
        ("former", None, False, "old", "former", False),  # a dry run moves nothing and reads it where it is
        ("former", "blocked", True, "old", "former", False),  # cannot be moved: used where it is
    ],
)
def test_a_file_an_earlier_version_kept_in_the_models_directory_is_moved_once(
    tmp_path, old, new, move, used, text, moved
):
    import sensor_predict

    former, path = tmp_path / "models" / "state.json", tmp_path / "state" / "state.json"
    former.parent.mkdir()
    if old:
        former.write_text(old)
    if new == "blocked":
        path.parent.write_text("a file where the state directory should be")
    elif new:
        path.parent.mkdir()
        path.write_text(new)
    found = sensor_predict.settled(former, path, move)
    assert found == (path if used == "new" else former)
    assert (found.read_text() if found.exists() else None) == text
    assert former.exists() is (old is not None and not moved)


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
    _, only, _ = windows_to_score(series, model, max_gap_points=1, first=index[2], last=index[2])
    assert only.tolist() == [index[2]]  # both bounds are inclusive


def test_flags_mark_losses_above_the_effective_threshold():
    ends = pd.date_range("2026-01-01", periods=3, freq="15min", tz="UTC")
    frame = flags(ends, np.array([1.0, 2.0, 3.0]), np.array([0.1, 0.6, 0.61], dtype="float32"), threshold=0.6)
    assert frame["anomaly"].tolist() == [False, False, True]
    assert frame["kind"].tolist() == ["none", "none", "shape"]
    assert frame["threshold"].tolist() == [0.6, 0.6, 0.6] and frame.index.equals(ends)


@pytest.mark.parametrize(
    "points, expected",
    [
        pytest.param("wwwwwwww", [], id="a window at every end: nothing to clear"),
        pytest.param("", [(0, 7)], id="no window at all: the whole range"),
        pytest.param("...wwwww", [(0, 2)], id="too little history at the start"),
        pytest.param("ww..ww.w", [(2, 3), (6, 6)], id="windows across gaps: one range per run"),
        pytest.param("wwmmwwmw", [(2, 3), (6, 6)], id="points without a loss count as no window"),
        pytest.param("w.mmw..w", [(1, 3), (5, 6)], id="no point and a point without a loss make one run"),
    ],
)
def test_without_windows_gives_the_runs_of_ends_a_backfill_wrote_no_window_at(points, expected):
    # One character per end of the range T: w a window (a loss), m a point without a loss (missing), . no point.
    at = [i for i, c in enumerate(points) if c != "."]
    n = len(at)
    loss = np.array([0.1 if points[i] == "w" else np.nan for i in at])
    no = np.zeros(n, dtype=bool)
    scores = Scores(T[at], np.zeros(n), loss, np.ones(n), no, np.full(n, "none", dtype=object))
    ranges = model_predict.without_windows(scores, T[0], T[-1], Q)
    assert ranges == [(T[a], T[b]) for a, b in expected]


def test_score_lines_one_point_per_window_in_time_order():
    from anomaly.settings import Schema

    index = pd.date_range("2026-01-01", periods=2, freq="15min", tz="UTC")
    scores = Scores(
        ends=index,
        value=np.array([1.5, np.nan]),
        loss=np.array([0.1, np.nan]),
        threshold=np.array([0.5, 0.5]),
        anomaly=np.array([False, False]),
        kind=np.array(["none", "missing"], dtype=object),
        smoothed_loss=np.array([0.1, np.nan]),
    )
    lines = model_predict.score_lines([model_predict.score_head("AHU 1", Schema())], [scores], Schema())
    assert lines == [
        'PREDICT_ANOMALY,uniqueID=AHU\\ 1 val_num=1.5,loss=0.1,threshold=0.5,anomaly=false,kind="none",'
        f'detector="lstm",smoothed_loss=0.1,score=0.2 {int(index[0].timestamp())}',
        'PREDICT_ANOMALY,uniqueID=AHU\\ 1 threshold=0.5,anomaly=false,kind="missing",'
        f'detector="lstm" {int(index[1].timestamp())}',
    ]


def test_score_lines_carry_the_flag_and_the_smoothed_loss_of_a_dynamic_threshold():
    from anomaly.settings import Schema

    index = pd.date_range("2026-01-01", periods=1, freq="15min", tz="UTC")
    scores = Scores(
        ends=index,
        value=np.array([1.5]),
        loss=np.array([0.9]),
        threshold=np.array([0.5]),
        anomaly=np.array([True]),
        kind=np.array(["shape"], dtype=object),
        smoothed_loss=np.array([0.75]),
    )
    assert model_predict.score_lines(
        [model_predict.score_head("s", Schema())], [scores], Schema(), detector="robust"
    ) == [
        'PREDICT_ANOMALY,uniqueID=s val_num=1.5,loss=0.9,threshold=0.5,anomaly=true,kind="shape",'
        f'detector="robust",smoothed_loss=0.75,score=1.5 {int(index[0].timestamp())}'
    ]


def test_score_lines_of_several_sensors_are_each_sensors_lines_in_turn():
    """A chunk's lines are made at once; each sensor's are what it would get alone, in the chunk's order, and a
    sensor without a window adds none. Times are written in seconds whatever the unit of a sensor's index."""
    from anomaly.settings import Schema

    index = pd.date_range("2026-01-01", periods=3, freq="15min", tz="UTC")

    def scores(at: slice, loss: list[float], kinds: list[str], unit: str = "ns") -> Scores:
        n = len(loss)
        return Scores(
            ends=index[at].as_unit(unit),
            value=np.arange(n, dtype="float64"),
            loss=np.array(loss, dtype="float32"),
            threshold=np.full(n, 0.5),
            anomaly=np.array([k != "none" for k in kinds], dtype=bool),
            kind=np.array(kinds, dtype=object),
        )

    ids = ["b", "none yet", "a=1"]
    scored = [
        scores(slice(0, 2), [0.25, 0.75], ["none", "shape"]),
        scores(slice(0, 0), [], []),
        scores(slice(2, 3), [np.nan], ["missing"], unit="s"),
    ]
    # detect's rules give kinds as a str array (np.where), the chunk's as objects: a chunk's lines take both.
    scored[2] = dataclasses.replace(scored[2], kind=scored[2].kind.astype(str))
    heads = [model_predict.score_head(s, Schema()) for s in ids]
    together = model_predict.score_lines(heads, scored, Schema())
    alone = [line for h, one in zip(heads, scored) for line in model_predict.score_lines([h], [one], Schema())]
    assert together == alone
    assert [line.split(" ")[0] for line in together] == ["PREDICT_ANOMALY,uniqueID=b"] * 2 + [
        "PREDICT_ANOMALY,uniqueID=a\\=1"
    ]
    assert [int(line.split(" ")[-1]) for line in together] == [int(t.timestamp()) for t in index]
    assert model_predict.score_lines([], [], Schema()) == []
    assert model_predict.score_head("AHU 1", Schema()) == "PREDICT_ANOMALY,uniqueID=AHU\\ 1 "
    with pytest.raises(ValueError, match="line break"):
        model_predict.score_head("a\nb", Schema())


@pytest.mark.parametrize(
    "rules",
    [
        detect.Rules(threshold=0.5),
        detect.Rules(threshold=0.5, min_consecutive=2, missing_limit=1),
        detect.Rules(threshold=0.5, dynamic_history=4, missing_limit=1),
        detect.Rules(threshold=6.0, kind="outlier"),
    ],
    ids=["fixed", "fixed, persistence", "dynamic", "fixed, another kind"],
)
def test_every_window_carries_every_field_whatever_the_rules(rules):
    """InfluxDB merges a point into the one at its key: a field written under one configuration and not under
    another (smoothed_loss, which only the dynamic threshold computes) would outlive a backfill (issue 11)."""
    from anomaly.settings import Schema

    ends = pd.date_range("2026-01-01", periods=12, freq="15min", tz="UTC")
    losses = np.array([0.1, 0.2, 0.1, 0.3, 0.1, 0.2, 0.9, 0.1, 0.2, 0.1, 0.2, 0.1])
    context = detect.Context(interval=Q, decided_from=ends[5])
    decided = detect.decide(ends, np.arange(12.0), losses, rules, context).between(ends[5], ends[-1])
    frame = decided.frame()  # before ends[5]: history only
    assert frame["score"].tolist() == pytest.approx((frame["smoothed_loss"] / frame["threshold"]).tolist())
    if not rules.dynamic_history:
        assert frame["smoothed_loss"].tolist() == frame["loss"].tolist()  # the flag compares the loss itself
    fields = {
        tuple(part.split("=")[0] for part in line.split(" ")[1].split(","))
        for line in model_predict.score_lines([model_predict.score_head("s", Schema())], [decided], Schema())
    }
    assert fields == {("val_num", "loss", "threshold", "anomaly", "kind", "detector", "smoothed_loss", "score")}


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
    assert frame["kind"].tolist() == ["shape" if flagged else "none" for flagged in expected]


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
    ).frame()
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
    ).frame()
    assert scores.index.equals(last_day)
    assert scores.index[scores["anomaly"]].tolist() == [index[-40]]
    assert scores.loc[index[-40], "kind"] == "outlier"
    flat = pd.Series(20.0, index=index)
    flat.iloc[-2:] = 20.01  # a MAD of zero must not make a 0.05% change an outlier
    assert not robust_scores(flat, 7 * 96, 2 * 96, 6.0, last_day[0], last_day[-1], period=96).frame()["anomaly"].any()
    young = cycle.where(cycle.index >= index[-130])  # a day and a bit of readings: not enough yet
    assert robust_scores(young, 7 * 96, 2 * 96, 6.0, last_day[0], last_day[-1], period=96).frame().empty
    # Its week of clean cycles raises no day's threshold above z: calibrated, the same flags.
    calibrated = robust_scores(cycle, 7 * 96, 2 * 96, 6.0, last_day[0], last_day[-1], period=96, budget=0.5)
    assert calibrated.frame().equals(scores)


def spiky_sensor(days: int = 10) -> pd.Series:
    """15-minute readings with a daily cycle and, in one interval of ten, a burst of 2 to 6 (the cycle swings
    10): noisy as many real sensors are, with no anomaly in it."""
    index = pd.date_range("2026-01-01", periods=days * 96, freq="15min", tz="UTC")
    rng = np.random.default_rng(5)
    steps = np.arange(len(index))
    values = 20 + 5 * np.sin(2 * np.pi * steps / 96) + rng.normal(0, 0.2, len(index))
    bursts = rng.random(len(index)) < 0.1
    values[bursts] += rng.uniform(2.0, 6.0, bursts.sum())
    return pd.Series(values, index=index)


def test_the_cold_start_threshold_of_a_day_is_calibrated_to_the_alarm_budget_on_the_days_before_it():
    from anomaly.cold_start import calibrated_z, robust_scores

    series = spiky_sensor()
    last_day = series.index[-96:]
    series.iloc[-30] += 40.0  # far beyond any burst the sensor had
    plain = robust_scores(series, 7 * 96, 2 * 96, 6.0, last_day[0], last_day[-1], period=96).frame()
    calibrated = robust_scores(
        series, 7 * 96, 2 * 96, 6.0, last_day[0], last_day[-1], period=96, budget=0.5, ratio=1.25
    ).frame()
    assert plain.index.equals(calibrated.index) and (plain["loss"] == calibrated["loss"]).all()
    # One threshold for the day, above z x ratio: the sensor's own week raised more alarms than that at it.
    threshold = calibrated["threshold"].iloc[0]
    assert (calibrated["threshold"] == threshold).all() and threshold > 6.0 * 1.25
    # ... from the week of 15-minute readings before the day began
    assert threshold == 1.25 * calibrated_z(series.to_numpy()[-8 * 96 : -96], 2 * 96, 96, 6.0, 0.5, Q)
    assert plain["anomaly"].sum() >= 5, "the bursts must be outliers at z alone, or this proves nothing"
    assert calibrated.index[calibrated["anomaly"]].tolist() == [series.index[-30]]
    assert (calibrated["kind"] == np.where(calibrated["anomaly"], "outlier", "none")).all()
    assert np.allclose(calibrated["score"], calibrated["loss"] / threshold)


def test_a_cold_start_tick_gives_a_reading_the_threshold_and_flag_a_backfill_of_its_day_gives_it():
    """The day's threshold comes from the history before the day began, which a tick reads (cold.reach), so
    where a run starts changes nothing."""
    from anomaly.cold_start import ColdStartSettings, cold_scores

    series = spiky_sensor()
    cold = ColdStartSettings(pd.Timedelta(days=7), pd.Timedelta(days=2), 6.0, alarm_budget=0.5)
    interval = pd.Timedelta(minutes=15)
    day = series.index[-96:]
    backfill = cold_scores(series, interval, (series.index[0], day[-1] + interval), cold, 1.0, day[0], day[-1])
    assert len(backfill.ends) == 96
    for at in day[[0, 1, 40, 95]]:
        read = (at - cold.reach, at + interval)
        tick = cold_scores(series[series.index >= read[0]], interval, read, cold, 1.0, at, at).frame()
        assert tick.index.tolist() == [at]
        assert tick.iloc[0].equals(backfill.frame().loc[at])


COLUMNS = ["value", "loss", "threshold", "anomaly", "kind", "score"]


def test_the_dynamic_threshold_decides_on_the_smoothed_loss_never_below_its_floor():
    ends = pd.date_range("2026-01-01", periods=60, freq="15min", tz="UTC")
    losses = np.abs(np.random.default_rng(1).normal(0.1, 0.01, 60)).astype("float32")
    losses[[35, 36, 45]] = [0.9, 0.8, 0.3]
    rules = detect.Rules(threshold=0.5, dynamic_history=20, dynamic_floor=0.24)
    frame = detect.decide(ends, np.arange(60.0), losses, rules, detect.Context(Q)).frame()
    expected = thresholds.rolling_dynamic_thresholds(pd.Series(losses.astype("float64"), index=ends), 0.12, 20)
    assert list(frame.columns) == [
        "value",
        "loss",
        "threshold",
        "anomaly",
        "kind",
        "smoothed_loss",
        "score",
        "worst",
        "newest",
    ]
    assert frame["threshold"].tolist() == expected["threshold"].tolist()
    # windows without a full history, and windows of a history too quiet to matter, get the floor
    assert frame["threshold"].iloc[:20].eq(0.5 * 0.24).all() and frame["threshold"].iloc[20:].gt(0.12).any()
    assert frame["smoothed_loss"].tolist() == expected["smoothed"].tolist()
    assert frame["anomaly"].tolist() == expected["anomaly"].tolist() and frame["anomaly"].iloc[35]
    assert frame["kind"].tolist() == ["shape" if a else "none" for a in expected["anomaly"]]
    # the score compares what the flag compares: the smoothed loss, with the threshold of its window
    assert frame["score"].tolist() == pytest.approx((expected["smoothed"] / expected["threshold"]).tolist())
    assert frame["loss"].tolist() == pytest.approx(losses.tolist())


@pytest.mark.parametrize(
    "worst, newest, window, missing, flagged",
    [
        # Windows of 4 at T[2..7] over the threshold (0.5), a spike in the reading at T[2] (position 3 of window
        # T[2], 2 of T[3], ...): the first window that holds it tells it, the three after hold nothing new.
        pytest.param([3, 3, 3, 2, 1, 0, 3, 3], {}, 4, [], [2, 6, 7], id="a spike in four windows: told by the first"),
        pytest.param([0, 0, 3, 3, 3, 3, 3, 3], {}, 4, [], [2, 3, 4, 5, 6, 7], id="a new worst reading in each"),
        pytest.param([1, 1, 1, 0, 1, 0, 1, 1], {}, 2, [], [2, 4, 6, 7], id="window 2: each spike in two windows"),
        pytest.param(None, {}, 4, [], [2, 3, 4, 5, 6, 7], id="worst readings unknown: each window its own"),
        pytest.param([3, 3, 3, 2, 1, 0, 3, 3], {}, 4, [3], [2, 6, 7], id="a window missing between: still told"),
        # T[4]'s newest reading is off by more than the threshold: the anomaly goes on, though T[2] is still worst.
        pytest.param([3, 3, 3, 2, 1, 0, 3, 3], {4: 0.6}, 4, [], [2, 4, 6, 7], id="a bad newest reading is new"),
        pytest.param([3, 3, 3, 2, 1, 0, 3, 3], {4: 0.5}, 4, [], [2, 6, 7], id="one at the threshold is not"),
    ],
)
def test_a_flag_is_told_by_the_first_window_that_holds_its_worst_reading(worst, newest, window, missing, flagged):
    loss = np.array([0.1, 0.1, 0.9, 0.8, 0.8, 0.7, 0.9, 0.9])
    kept = np.ones(8, dtype=bool)
    kept[missing] = False
    rules = detect.Rules(threshold=0.5, window=window)
    frame = detect.decide(
        T[kept],
        np.zeros(kept.sum()),
        loss[kept],
        rules,
        detect.Context(Q),
        blame=None if worst is None else np.array([(w, newest.get(k, 0.0)) for k, w in enumerate(worst)], BLAME)[kept],
    ).frame()
    assert frame.index[frame["anomaly"]].equals(T[flagged])
    assert set(frame["kind"][frame["anomaly"]]) == {"shape"} and frame["score"].gt(1).sum() == kept[2:].sum()


def test_a_window_flagged_only_by_the_smoothed_losses_before_it_tells_nothing_new():
    # Two windows far over the threshold: the smoothed loss stays over it for windows after them whose own loss
    # is back to normal. Those windows are flagged when nothing is known of their readings, not with their blame
    # (each window's newest reading its worst, so no reading is told twice; no newest reading off).
    ends = pd.date_range("2026-01-01", periods=40, freq="15min", tz="UTC")
    losses = np.full(40, 0.1)
    losses[[30, 31]] = 5.0
    rules = detect.Rules(threshold=0.5, dynamic_history=20, window=4)
    blame = np.array([(3, 0.0)] * 40, dtype=BLAME)
    unknown, known = (
        detect.decide(ends, np.zeros(40), losses, rules, detect.Context(Q), blame=b) for b in (None, blame)
    )
    assert unknown.anomaly[32:].any() and unknown.anomaly[30:32].all()
    assert known.anomaly.tolist() == [k in (30, 31) for k in range(40)]


def test_a_window_whose_own_loss_is_at_the_threshold_is_an_echo():
    # Two flagged windows (by the smoothed losses), each its own worst reading, so nothing is retold: the second's
    # own loss is exactly at the threshold, not above, so only the losses before it flagged it; just above, it
    # tells its own reading.
    flagged, cause, threshold, newest = np.ones(2, dtype=bool), np.arange(2), np.full(2, 0.5), np.zeros(2)
    at, above = np.array([0.9, 0.5]), np.array([0.9, np.nextafter(0.5, 1.0)])
    assert told.kept(flagged, cause, 4, flagged, at, threshold, newest).tolist() == [True, False]
    assert told.kept(flagged, cause, 4, flagged, above, threshold, newest).tolist() == [True, True]


def test_a_smoothed_loss_at_the_dynamic_threshold_is_not_over_it():
    # Losses steady at 0.5: the smoothed loss is 0.5, and so is the threshold (its floor, 1.0 x 0.5).
    rules = detect.Rules(threshold=1.0, dynamic_history=4, dynamic_floor=0.5)
    frame = detect.decide(T, np.zeros(8), np.full(8, 0.5), rules, detect.Context(Q)).frame()
    assert frame["smoothed_loss"].eq(0.5).all() and frame["threshold"].eq(0.5).all()
    assert not frame["anomaly"].any() and frame["score"].eq(1.0).all()


def test_readings_are_written_as_floats_whatever_type_they_came_in():
    # InfluxDB keeps one type per field: an integer reading written as such would be refused after floats.
    frame = detect.decide(T, np.arange(8), np.zeros(8), detect.Rules(threshold=0.5), detect.Context(Q)).frame()
    assert frame["value"].dtype == "float64" and frame["value"].tolist() == list(range(8))


def test_missing_points_among_dynamic_scores_have_no_smoothed_loss():
    series = pd.Series([1.0, 2.0, np.nan, np.nan, 5.0, 6.0, 7.0, 8.0], index=T)
    present = series.notna().to_numpy()
    rules = detect.Rules(threshold=0.5, dynamic_history=2, missing_limit=1)
    losses = np.array([0.0, 0.3, 0.3, 0.3, 0.3, 0.3])
    frame = detect.decide(
        T[present], series[present].to_numpy(), losses, rules, detect.Context(Q, series, T[0], T[-1])
    ).frame()
    assert frame.index.equals(T.delete(2))
    assert frame["kind"].tolist() == ["none", "none", "missing", "none", "none", "none", "none"]
    assert np.isnan(frame.loc[T[3], ["value", "loss", "smoothed_loss", "score"]].to_numpy(dtype=float)).all()
    assert frame.loc[T[3], "threshold"] == 0.5  # the fixed threshold: a dynamic one needs losses
    assert frame["value"].drop(T[3]).tolist() == [1.0, 2.0, 5.0, 6.0, 7.0, 8.0]
    # The windows keep their smoothed losses (0, 0.2, 0.257, ...: not the losses themselves) and the scores made
    # of them.
    windows = frame.drop(T[3])
    assert windows["smoothed_loss"].tolist() == pytest.approx(thresholds.smooth(losses).tolist())
    assert windows["smoothed_loss"].iloc[1] == pytest.approx(0.2)
    assert windows["score"].tolist() == pytest.approx((windows["smoothed_loss"] / windows["threshold"]).tolist())


@pytest.mark.parametrize("dynamic_history", [None, 4], ids=["fixed", "dynamic"])
def test_a_sensor_silent_over_the_whole_range_gets_missing_points_without_a_loss_or_score(dynamic_history):
    # No reading since before the range: no window at all, one missing point per interval past the first.
    series = pd.Series(np.nan, index=T)
    rules = detect.Rules(threshold=0.5, dynamic_history=dynamic_history, missing_limit=1)
    frame = detect.decide(T[:0], np.empty(0), np.empty(0), rules, detect.Context(Q, series, T[0], T[-1])).frame()
    assert frame.index.equals(T[1:]) and (frame["kind"] == "missing").all()
    assert frame[["value", "loss", "smoothed_loss", "score"]].isna().all().all()


@pytest.mark.parametrize(
    "rules",
    [
        detect.Rules(threshold=0.5),
        detect.Rules(threshold=0.5, dynamic_history=4),
        detect.Rules(threshold=0.5, dynamic_history=4, min_consecutive=2),
    ],
    ids=["fixed", "dynamic", "dynamic and persistent"],
)
def test_no_windows_give_an_empty_frame_with_the_columns_and_types_of_a_full_one(rules):
    empty = detect.decide(T[:0], np.empty(0), np.empty(0, dtype="float32"), rules, detect.Context(Q)).frame()
    full = detect.decide(T, np.zeros(8), np.zeros(8, dtype="float32"), rules, detect.Context(Q)).frame()
    assert empty.empty and list(empty.columns) == list(full.columns)
    numbers = full.columns.drop("kind")  # (pandas infers a string type for kind only when there are strings)
    assert empty[numbers].dtypes.to_dict() == full[numbers].dtypes.to_dict()
    assert list(full.columns[:5]) == COLUMNS[:5] and list(full.columns[-3:]) == ["score", "worst", "newest"]


@pytest.mark.parametrize(
    "values, window, losses, kinds",
    [
        pytest.param([5, 5, 11, 12, 13, 14, 5, 5], 2, {}, {2: "level"}, id="the first window of its first reading"),
        pytest.param([5, 5, 11, 12, 13, 14, 5, 5], 2, {3: 1.0}, {2: "level", 3: "shape"}, id="a shape flag stays"),
        pytest.param([5, 10, 10, 10, 0, 0, 0, 5], 2, {}, {}, id="at the edges of the range is inside it"),
        pytest.param([5, -1, -2, -3, 5, 5, 5, 5], 2, {}, {1: "level"}, id="below the range"),
        pytest.param([5, 11, 5, 11, 5, 11, 5, 5], 2, {}, {1: "level"}, id="back and forth within a day: once"),
        pytest.param([11, 5, 5, 5, 5, 5, 5, 12], 1, {}, {0: "level"}, id="a window of one, from the start"),
    ],
)
def test_a_move_beyond_the_training_range_is_flagged_where_it_begins(values, window, losses, kinds):
    series = pd.Series(values, index=T, dtype="float64")
    loss = np.array([losses.get(k, 0.1) for k in range(8)])
    rules = detect.Rules(threshold=0.5, levels=(0.0, 10.0), window=window)
    frame = detect.decide(T, series.to_numpy(), loss, rules, detect.Context(Q, series, T[0], T[-1])).frame()
    assert {k: kind for k, kind in enumerate(frame["kind"]) if kind != "none"} == kinds
    assert frame["anomaly"].tolist() == [k in kinds for k in range(8)]


@pytest.mark.parametrize("apart, kinds", [(4, {0: "level"}), (5, {0: "level", 5: "level"})])
def test_an_excursion_after_a_day_of_readings_inside_the_range_is_told_again(apart, kinds):
    # Six-hour intervals: a day is four of them. Readings beyond the range at 0 and at `apart`.
    grid = pd.date_range("2026-03-01", periods=8, freq="6h", tz="UTC")
    values = np.full(8, 5.0)
    values[[0, apart]] = 11.0
    rules = detect.Rules(threshold=0.5, levels=(0.0, 10.0), window=1)
    context = detect.Context(pd.Timedelta("6h"), pd.Series(values, index=grid), grid[0], grid[-1])
    frame = detect.decide(grid, values, np.full(8, 0.1), rules, context).frame()
    assert {k: kind for k, kind in enumerate(frame["kind"]) if kind != "none"} == kinds


def test_without_readings_the_rules_that_read_them_are_left_out():
    # Tuning knows only the losses: the level, flat-line and missing rules then decide nothing.
    rules = detect.Rules(threshold=0.5, levels=(0.0, 1.0), window=2, flat_limit=2, missing_limit=1)
    frame = detect.decide(T, np.full(8, 99.0), np.array([0.1] * 7 + [0.9]), rules, detect.Context(Q)).frame()
    assert frame.index.equals(T) and frame["kind"].tolist() == ["none"] * 7 + ["shape"]


def test_an_outage_is_reported_from_the_first_to_the_last_due_interval_inclusive():
    series = pd.Series([1.0, np.nan, np.nan, np.nan, np.nan, np.nan, 7.0, 8.0], index=T)
    rules = detect.Rules(threshold=0.5, missing_limit=1, missing_is_anomaly=True)
    present = series.notna().to_numpy()
    frame = detect.decide(
        T[present], series[present].to_numpy(), np.full(3, 0.1), rules, detect.Context(Q, series, T[3], T[4])
    ).frame()
    assert frame.loc[frame["kind"] == "missing"].index.tolist() == [T[3], T[4]]
    assert frame.loc[T[3], "threshold"] == 0.5 and frame.loc[T[3], "anomaly"]


CHUNK_NOW = pd.Timestamp("2026-03-02T00:00:00Z")


def test_a_chunk_shapes_each_series_as_prepare_does():
    """Chunk.windows (the scorer's chunk-wide shaping) against model_predict.prepare, sensor by sensor, on series
    with every repair: gaps (filled or not), infinities, points off the grid, duplicates, unsorted, outside the
    read range. Pure, so the mutation run's fast selection has it (tests/test_scoring_paths.py compares the
    whole paths)."""
    read = (CHUNK_NOW - pd.Timedelta(days=1), CHUNK_NOW)
    index = pd.date_range(*read, freq=Q, inclusive="left")
    rng = np.random.default_rng(3)
    data = {}
    for n in range(12):
        values = rng.normal(20, 3, len(index))
        values[rng.integers(0, len(index), n)] = np.nan
        data[f"s{n}"] = pd.Series(values, index=index, name=f"s{n}").dropna()
    data["inf"] = data["s0"].where(data["s0"].index != index[0], -np.inf)  # at the edge: nothing to fill
    # The repairs, of s0, which has no gap (a gap to fill alone would leave a series out of the chunk's rows).
    data["off grid"] = data["s0"].set_axis(data["s0"].index + pd.Timedelta(minutes=1))
    data["duplicates"] = pd.concat([data["s0"], data["s0"].iloc[:5] + 1])
    data["duplicates, sorted"] = data["duplicates"].sort_index(kind="stable")
    data["unsorted"] = data["s0"].iloc[::-1]
    data["wider"] = pd.Series(
        1.0 + np.arange(200.0), index=pd.date_range(CHUNK_NOW - pd.Timedelta(days=2), periods=200, freq=Q)
    )
    data["ints"] = data["s0"].astype("int64")
    data["other zone"] = data["s0"].tz_convert("Europe/Berlin")
    data["not by time"] = data["s0"].reset_index(drop=True)  # regular refuses it, for this sensor alone
    sensor_ids = [*data, "absent"]
    chunk = Chunk.of(data, sensor_ids, Q, read, max_gap_points=4)
    assert set(chunk.rows) >= {"s0", "inf", "wider", "absent"}
    left = {"off grid", "duplicates", "duplicates, sorted", "unsorted", "ints", "other zone", "not by time"}
    assert not left & set(chunk.rows)
    # The due range ends at the read range's last interval (a tick), or before it; each sensor gets one of the
    # models and ranges, so one call cuts windows of two lengths, centered or not.
    hour = pd.Timedelta(hours=1)
    ranges = [(CHUNK_NOW - 5 * hour, CHUNK_NOW - Q), (CHUNK_NOW - 9 * hour, CHUNK_NOW - 4 * Q)]
    kinds = list(itertools.product(((True, 6), (False, 15), (False, 200)), ranges))
    for turn in range(len(kinds)):
        placed = list(chunk.rows)
        chosen = [kinds[(turn + k) % len(kinds)] for k in range(len(placed))]
        metadata = [
            ModelMetadata(sensor_id, window, Q, 0.1, 19.0 + k, 2.5, centered=centered)
            for k, (sensor_id, ((centered, window), _)) in enumerate(zip(placed, chosen))
        ]
        cut = chunk.windows(placed, metadata, [due for _, due in chosen])
        for sensor_id, meta, (_, (first, last)), (windows, ends) in zip(
            placed, metadata, chosen, ((c.windows, c.ends) for c in cut)
        ):
            raw = data.get(sensor_id, pd.Series(dtype="float64", index=pd.DatetimeIndex([], tz="UTC")))
            want = model_predict.prepare(raw, SensorModel(meta), Q, read, 4, first, last)
            assert windows.dtype == want.windows.dtype and np.array_equal(windows, want.windows), sensor_id
            assert windows.shape[1:] == (meta.window, 1)
            assert chunk.grid[ends].equals(want.ends)
            values = chunk.values[chunk.rows[sensor_id]]
            assert np.array_equal(values[ends], want.values, equal_nan=True)
            assert np.array_equal(values, want.series.to_numpy(), equal_nan=True)
    assert clean.fillable(np.array([[1, np.nan, 2], [np.nan, 1, np.nan]]), 1).tolist() == [True, False]


@pytest.mark.parametrize(
    "index, ends",
    [
        (T, T[[0, 3, 7]]),
        (T[2:6], T),  # ends before, inside and after the index
        (T[:0], T[:3]),  # an empty index
        (T[[0, 2, 4]], T[[1, 2, 3, 4, 5]]),  # a gap in the index
        (T[::-1], T[[1, 5]]),  # not sorted: pandas itself
        (T.as_unit("s"), T[[1, 5]]),  # another unit: pandas itself
        (T.tz_localize(None), T[[1, 5]]),  # no time zone: nothing matches, as in pandas
    ],
)
def test_positions_are_those_of_get_indexer(index, ends):
    assert detect.positions(index, ends).tolist() == index.get_indexer(ends).tolist()


def chunk_of_every_case(seed: int) -> tuple[dict[str, pd.Series], tuple[pd.Timestamp, pd.Timestamp]]:
    """Readings of a chunk's sensors on one grid, for deciding: gaps (long ones reported missing), a stretch
    stuck at one value or a move beyond the range and back, a sensor silent at the end."""
    rng = np.random.default_rng(seed)
    read = (CHUNK_NOW - pd.Timedelta(days=2), CHUNK_NOW)
    index = pd.date_range(*read, freq=Q, inclusive="left")
    data = {}
    for n in range(10):
        values = rng.normal(5, 1, len(index))
        for _ in range(n % 4):
            at = int(rng.integers(0, len(index) - 12))
            values[at : at + int(rng.integers(6, 12))] = np.nan
        if n % 3 == 0:
            values[-22 - n % 2 : -2] = 4.25  # stuck: past the flat-line limit (12) inside the due range
        else:
            values[-6 - n : -4 - n] = -3.0 * n  # beyond the range in the due range: where the excursion begins
        if n == 4:
            values[-8:] = 4.25  # stuck to the end, with no flat-line rule: never told flat
        if n == 5:
            values[-10:-7] = np.nan  # a gap that begins in the due range: told missing from its limit on
        if n == 9:
            values[-30:] = np.nan
        data[f"s{n}"] = pd.Series(values, index=index).dropna()
    return data, read


@pytest.mark.parametrize("seed", [4, 5])
@pytest.mark.parametrize(
    "policy",
    [
        model_predict.Policy(),
        model_predict.Policy(min_consecutive=2, dynamic_history=24, missing_limit=3),
        model_predict.Policy(min_consecutive=3, dynamic_history=40, dynamic_floor=0.5, missing_limit=2),
        model_predict.Policy(min_consecutive=2, missing_limit=4, missing_is_anomaly=True, level_margin=0.0),
        model_predict.Policy(min_consecutive=1, dynamic_history=24, missing_limit=1, missing_is_anomaly=True),
    ],
    ids=["fixed", "dynamic, K=2", "dynamic, K=3, floor", "fixed, K=2, missing anomalies", "dynamic, K=1, missing"],
)
def test_deciding_a_chunk_at_once_gives_each_sensor_what_deciding_it_alone_gives(policy, seed, monkeypatch):
    """Chunk.decide (every sensor of a chunk on its grid at once) against model_predict.decide, sensor by sensor:
    fixed and dynamic thresholds, K 1 to 3, missing points, level and flat-line rules or none, windows of two
    lengths, due ranges of a tick and of a catch-up, a sensor without windows and one whose losses are not
    finite. Pure, so the mutation run's fast selection has it."""
    rng = np.random.default_rng(seed)
    data, read = chunk_of_every_case(seed)
    sensor_ids = [*data, "never read"]
    chunk = Chunk.of(data, sensor_ids, Q, read, max_gap_points=0)
    assert set(chunk.rows) == set(sensor_ids)
    models, dues, ranges = [], [], []
    for k, sensor_id in enumerate(sensor_ids):
        window = (4, 6)[k % 2]
        levels = None if k % 4 == 3 else (2.0, 8.0)
        flat = None if k % 5 == 4 else 6
        meta = ModelMetadata(sensor_id, window, Q, 0.05 * (1 + k % 3), 5.0, 1.0, levels=levels, longest_flat_run=flat)
        models.append(SensorModel(meta))
        last = CHUNK_NOW - Q
        first = last - (1 + k % 3) * 12 * Q if k % 2 else last
        decided, _ = model_predict.lead(models[-1], policy, Q)
        dues.append((first, last))
        ranges.append((first - decided, last))
    cut = chunk.windows(sensor_ids, [m.metadata for m in models], ranges)
    losses, blames = [], []
    for k, found in enumerate(cut):
        blame = np.empty(len(found.windows), dtype=BLAME)
        blame["worst"] = rng.integers(0, models[k].window, len(blame))
        blame["newest"] = rng.gamma(2.0, 0.06, len(blame))  # above some thresholds, below others
        blames.append(blame)
        loss = rng.gamma(2.0, 0.04, len(found.windows)).astype("float32")
        if k != 1 and len(loss):  # s1's excursion is told as a level, never taken by a shape flag
            # Three anomalies of three windows each: persistence keeps some, so told once has flags to judge.
            at = rng.integers(0, len(loss), 3)
            loss[np.minimum(np.concatenate([at, at + 1, at + 2]), len(loss) - 1)] += 1.0
        if k == 7 and len(loss):
            loss[len(loss) // 2] = np.nan
        losses.append(loss)
    rules = [model_predict.rules_for(m, 1.0 + 0.25 * (k % 2), policy) for k, m in enumerate(models)]
    # A loss at the threshold itself is not above it: 0.125, and 0.15, which float32 rounds up (compared in
    # float32, as detect compares them, the two are equal).
    for k in (1, 8):
        losses[k][-1] = rules[k].threshold
    decided = chunk.decide(sensor_ids, [c.ends for c in cut], losses, rules, dues, blames)
    # A long grid is decided a few sensors at a time, the last of 11 alone: the same scores.
    monkeypatch.setattr(anomaly.chunk, "DECIDE_CELLS", 2 * len(chunk.grid))
    in_parts = chunk.decide(sensor_ids, [c.ends for c in cut], losses, rules, dues, blames)
    kinds = set()
    for k, sensor_id in enumerate(sensor_ids):
        alone = model_predict.prepare(
            data.get(sensor_id, pd.Series(dtype="float64", index=pd.DatetimeIndex([], tz="UTC"))),
            models[k],
            Q,
            read,
            0,
            *ranges[k],
        )
        try:
            want = model_predict.decide(alone, losses[k], rules[k], Q, *dues[k], blames[k]).frame()
        except ValueError as e:
            with pytest.raises(ValueError, match=f"^{re.escape(str(e))}$"):
                decided[k]()
            continue
        got = decided[k]().frame()
        # An empty frame's kind column has no strings to tell its dtype by.
        pd.testing.assert_frame_equal(got, want, check_freq=False, check_dtype=not want.empty, obj=sensor_id)
        pd.testing.assert_frame_equal(in_parts[k]().frame(), got, check_freq=False, obj=sensor_id)
        kinds |= set(got["kind"][got["anomaly"]])
    assert {"shape", "level" if policy.level_margin else "shape", "flatline"} <= kinds


@pytest.mark.parametrize("history", [None, 12])
def test_deciding_between_two_times_gives_the_rows_of_the_whole_frame_between_them(history):
    # detect.decide(between=...) keeps the windows before making the frame: the same rows, every column.
    rng = np.random.default_rng(8)
    grid = pd.date_range("2026-01-01", periods=80, freq=Q, tz="UTC")
    series = pd.Series(rng.normal(5, 1, len(grid)), index=grid)
    series.iloc[30:36] = np.nan  # missing points inside the range
    series.iloc[60] = 40.0  # beyond the range: a level excursion
    kept = series.notna().to_numpy()
    ends, values = grid[kept], series.to_numpy()[kept]
    losses = rng.gamma(2.0, 0.05, len(ends))
    losses[[20, 21, 50]] += 1.0
    rules = detect.Rules(0.15, 2, history, levels=(0.0, 10.0), window=3, missing_limit=2)
    context = detect.Context(Q, series, grid[10], grid[70], decided_from=grid[9])
    whole = detect.decide(ends, values, losses, rules, context).frame()
    for first, last in [(grid[10], grid[70]), (grid[25], grid[40]), (grid[0], grid[79]), (grid[71], grid[79])]:
        part = detect.decide(ends, values, losses, rules, context, between=(first, last)).frame()
        expected = whole[(whole.index >= first) & (whole.index <= last)]
        pd.testing.assert_frame_equal(part, expected)
    assert whole["anomaly"].any() and (whole["kind"] == "missing").any() and whole["value"].notna().any()


def level_rule_on_grid_and_alone(values: np.ndarray, rules: detect.Rules) -> tuple[Scores, Scores]:
    """One sensor's readings [G] decided by grid_rules.decide and by detect.decide, every window (of 4, zero
    loss, under a threshold of 1) due: only the level rule can flag."""
    grid = pd.date_range("2026-01-01", periods=len(values), freq=Q, tz="UTC")
    ends = grid[3:]
    alone = detect.decide(
        ends, values[3:], np.zeros(len(ends)), rules, detect.Context(Q, pd.Series(values, index=grid))
    )
    window_end = np.zeros((1, len(values)), dtype=bool)
    window_end[0, 3:] = True
    zeros = np.where(window_end, 0.0, np.nan)
    # Each window's worst reading its newest, none off by itself: what detect.decide assumes without a blame.
    unknown = no_blame(len(values))
    unknown["worst"] = rules.window - 1
    chosen = grid_rules.GridRules.of([rules])
    together = grid_rules.decide(
        values[None, :],
        window_end,
        zeros,
        zeros,
        np.ones((1, len(values))),
        unknown[None, :],
        chosen,
        np.array([0]),
        np.array([len(values) - 1]),
        detect.LEVEL_REARM // Q,
    ).scores(grid, chosen.kinds, smoothed=False)[0]
    return together, alone


@pytest.mark.parametrize("gap, excursions", [(95, 1), (96, 1), (97, 2)])
def test_the_grid_rules_tell_an_excursion_again_only_after_the_rearm_as_detect_does(gap, excursions):
    # Two readings beyond the range, ``gap`` intervals apart; LEVEL_REARM is a day, 96 intervals of 15 minutes.
    values = 5.0 + np.arange(300) * 1e-3
    values[[100, 100 + gap]] = 20.0
    rules = detect.Rules(threshold=1.0, levels=(0.0, 10.0), window=4)
    together, alone = level_rule_on_grid_and_alone(values, rules)
    assert together.ends.equals(alone.ends) and (together.kind == alone.kind).all()
    assert (alone.kind == "level").sum() == excursions


@pytest.mark.parametrize("reading, beyond", [(0.0, False), (10.0, False), (-1e-9, True), (10.0 + 1e-9, True)])
def test_a_reading_on_a_level_of_the_range_is_inside_it_on_the_grid_as_alone(reading, beyond):
    values = np.full(40, 5.0)
    values[20] = reading
    together, alone = level_rule_on_grid_and_alone(values, detect.Rules(threshold=1.0, levels=(0.0, 10.0), window=4))
    assert (together.kind == alone.kind).all()
    assert (together.kind == "level").sum() == (1 if beyond else 0)


def test_a_chunk_is_decided_under_one_policy():
    rules = [detect.Rules(threshold=1.0), detect.Rules(threshold=2.0, min_consecutive=2)]
    assert grid_rules.GridRules.of(rules[:1] * 3).threshold.tolist() == [1.0] * 3
    with pytest.raises(ValueError, match=r"^a chunk is decided under one policy, not 2$"):
        grid_rules.GridRules.of(rules)


def test_a_chunk_of_a_reads_arrays_is_the_chunk_of_its_series():
    """Chunk.of from Readings (the arrays of a database read: what the scorer gives it) places what it places
    from the same readings as Series, for sensor ids in another order, one of them never read."""
    data, read = chunk_of_every_case(4)
    joined = pd.concat(list(data.values()))
    readings = Readings(list(data), joined.index, joined.to_numpy(), [len(s) for s in data.values()])
    sensor_ids = ["never read", *reversed(data)]
    arrays, series = (Chunk.of(d, sensor_ids, Q, read, max_gap_points=0) for d in (readings, data))
    assert arrays.grid.equals(series.grid) and arrays.rows == series.rows
    assert np.array_equal(arrays.values, series.values, equal_nan=True)


def test_a_days_calibration_counts_readings_apart_in_time_as_separate_alarm_runs():
    """calibrated_z on a steady sensor with bursts of two outliers: the same readings, either next to each other
    (one alarm run each) or with a missing reading between them (two runs), and nothing else different. Above
    the tail level (0 here: the rest scores 0) the rate doubles, so the threshold rises by mean excess x ln 2."""
    from anomaly.cold_start import calibrated_z

    n, day = 7 * 96, 96
    starts = np.arange(2 * day + 10, n - 3, 50)  # under 5% of the readings: the tail level and the spread stay 0
    heights = np.random.default_rng(2).uniform(0.5, 2.0, len(starts))
    together, apart = np.full(n, 20.0), np.full(n, 20.0)
    for start, height in zip(starts, heights):
        together[[start, start + 1]] = 20.0 + height
        together[start + 2] = np.nan
        apart[[start, start + 2]] = 20.0 + height
        apart[start + 1] = np.nan
    one_run = calibrated_z(together, 2 * day, day, 6.0, 0.5, Q)
    two_runs = calibrated_z(apart, 2 * day, day, 6.0, 0.5, Q)
    # MAD 0 and no spread: the scale is a thousandth of the level, so a burst scores height / 0.02.
    excess = float(np.mean(heights / 0.02))
    assert one_run > 6.0
    assert two_runs - one_run == pytest.approx(excess * np.log(2))


def test_the_cold_start_row_medians_are_numpys_nanmedian():
    from anomaly.cold_start import _row_medians

    rng = np.random.default_rng(4)
    for rows, columns in [(1, 1), (5, 2), (40, 21), (30, 7)]:
        a = np.round(rng.normal(0, 1, (rows, columns)), 1)  # ties too
        a[rng.random((rows, columns)) < 0.3] = np.nan
        a[0] = np.nan  # a row of NaN: NaN
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            expected = np.nanmedian(a, axis=1)
        assert np.array_equal(_row_medians(a), expected, equal_nan=True), (rows, columns)


def test_a_cold_start_score_is_the_reading_against_the_same_time_of_day_on_the_days_before():
    """The robust z-score of one reading, from the docstring: the readings of that interval and its two
    neighbours on each of the days before, their median and MAD, the scale floored by the spread."""
    from anomaly.cold_start import ColdStartSettings, cold_scores

    series = spiky_sensor()
    at, day = len(series) - 30, 96
    same = np.array([series.iloc[at - k * day + d] for k in range(1, 8) for d in (-1, 0, 1)])
    before = series.to_numpy()[at - 7 * day : at]
    median = np.median(same)
    scale = max(
        1.4826 * np.median(np.abs(same - median)), 0.05 * (np.percentile(before, 95) - np.percentile(before, 5))
    )
    cold = ColdStartSettings(pd.Timedelta(days=7), pd.Timedelta(days=2), 6.0, alarm_budget=0.5)
    interval, when = pd.Timedelta(minutes=15), series.index[at]
    read = (when - cold.reach, when + interval)
    scores = cold_scores(series[series.index >= read[0]], interval, read, cold, 2.0, when, when).frame()
    assert scores.index.tolist() == [when] and scores["value"].iloc[0] == series.iloc[at]
    assert scores["loss"].iloc[0] == pytest.approx(abs(series.iloc[at] - median) / scale)
    # the budget and the ratio both reach the threshold: above 2 x z on this spiky sensor
    assert scores["threshold"].iloc[0] > 2.0 * 6.0
    fixed = ColdStartSettings(pd.Timedelta(days=7), pd.Timedelta(days=2), 6.0, alarm_budget=0.0)
    plain = cold_scores(series[series.index >= read[0]], interval, read, fixed, 2.0, when, when).frame()
    assert plain["threshold"].iloc[0] == 12.0 and plain["loss"].iloc[0] == scores["loss"].iloc[0]
