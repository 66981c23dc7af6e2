"""anomaly/evaluation.py on hand-built sequences whose answers can be checked by eye.

Grid: 15-minute intervals t0 .. t11, window 3, so a window ending at t covers t-2 .. t and an event
labelled over ti .. tj is seen by the windows ending ti .. tj+2 (its detection span).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from anomaly import evaluation
from anomaly.evaluation import evaluate, flags_for_ratio, label_events, labels_on_grid, tune_ratio

INTERVAL = pd.Timedelta(minutes=15)
WINDOW = 3
T = pd.date_range("2026-01-01", periods=12, freq=INTERVAL, tz="UTC")
WEEK_MIN = 7 * 24 * 60


def labels(*positions: int) -> pd.Series:
    """Labels on the whole grid t0..t11, True at ``positions``."""
    return pd.Series([i in positions for i in range(12)], index=T)


def flags(text: str, first: int = 2) -> pd.Series:
    """Flags by window end from a string: '.' not flagged, 'x' flagged, ' ' not scored; first end t{first}."""
    return pd.Series({T[first + i]: c == "x" for i, c in enumerate(text) if c != " "}, dtype=bool)


def same(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b)


# ---------------------------------------------------------------- events


@pytest.mark.parametrize(
    "marked, expected",
    [
        ((), []),
        ((2, 3, 9), [(2, 3), (9, 9)]),
        ((0,), [(0, 0)]),
        ((10, 11), [(10, 11)]),
        (tuple(range(12)), [(0, 11)]),
        ((1, 3, 5), [(1, 1), (3, 3), (5, 5)]),
    ],
)
def test_an_event_is_a_run_of_consecutive_labelled_intervals(marked, expected):
    assert label_events(labels(*marked)) == [(T[a], T[b]) for a, b in expected]


def test_with_an_interval_labelled_points_two_intervals_apart_are_two_events():
    sparse = pd.Series([True, True, True], index=T[[2, 3, 5]])
    assert label_events(sparse) == [(T[2], T[5])]  # only adjacency in the series
    assert label_events(sparse, INTERVAL) == [(T[2], T[3]), (T[5], T[5])]


def test_labels_on_grid_floors_to_the_interval_and_ignores_times_outside():
    grid = labels_on_grid([T[2] + pd.Timedelta(minutes=7), T[11] + pd.Timedelta(hours=5)], T[0], T[6], INTERVAL)
    assert list(grid.index) == list(T[:6]) and list(grid) == [False, False, True, False, False, False]


@pytest.mark.parametrize(
    "bad, error, match",
    [
        ([True, False], TypeError, "DatetimeIndex"),
        (pd.Series([True, "yes"], index=T[:2]), ValueError, "booleans"),
        (pd.Series([True, False], index=T[[1, 1]]), ValueError, "duplicate"),
    ],
)
def test_bad_series_raise_with_a_specific_message(bad, error, match):
    with pytest.raises(error, match=match):
        label_events(bad)


@pytest.mark.parametrize("window, interval", [(0, INTERVAL), (2.5, INTERVAL), (3, pd.Timedelta(0))])
def test_a_bad_window_or_interval_raises(window, interval):
    with pytest.raises(ValueError, match=r"window|interval"):
        evaluate(flags(".........."), labels(2), window, interval)


# ---------------------------------------------------------------- metrics

#   labels   t0 t1 [t2 t3] t4 t5 t6 t7 t8 [t9] t10 t11      events A = t2..t3, B = t9
#   spans    A: t2..t5                        B: t9..t11
#   flags          .  x  x  .  .  x  .  .  .  .            ends t2..t11
#   positive       P  P  P  P  .  .  .  P  P  P           7 positive windows; flagged 3, of them 2 positive
#   runs           [t3 t4] detects A (delay 15 min); [t7] is a false alarm; B is missed
BASIC = dict(
    windows=10,
    positive_windows=7,
    flagged_windows=3,
    true_positive_windows=2,
    precision=2 / 3,
    recall=2 / 7,
    f1=0.4,
    events=2,
    events_unscored=0,
    events_detected=1,
    event_recall=0.5,
    flag_runs=2,
    detecting_runs=1,
    event_precision=0.5,
    event_f1=0.5,
    mean_delay_min=15.0,
    max_delay_min=15.0,
    false_alarms=1,
    weeks=150 / WEEK_MIN,
    false_alarms_per_week=WEEK_MIN / 150,
)


@pytest.mark.parametrize(
    "flag_text, marked, changes",
    [
        (".xx..x....", (2, 3, 9), {}),
        # B caught late, at its last window: delays 15 and 30 min, both events detected
        (
            ".xx..x...x",
            (2, 3, 9),
            dict(
                flagged_windows=4,
                true_positive_windows=3,
                precision=0.75,
                recall=3 / 7,
                f1=2 * 0.75 * (3 / 7) / (0.75 + 3 / 7),
                events_detected=2,
                event_recall=1.0,
                flag_runs=3,
                detecting_runs=2,
                event_precision=2 / 3,
                event_f1=0.8,
                mean_delay_min=22.5,
                max_delay_min=30.0,
            ),
        ),
        # nothing flagged: precision undefined, recall and both F1s 0, no false alarm
        (
            "..........",
            (2, 3, 9),
            dict(
                flagged_windows=0,
                true_positive_windows=0,
                precision=math.nan,
                recall=0.0,
                f1=0.0,
                events_detected=0,
                event_recall=0.0,
                flag_runs=0,
                detecting_runs=0,
                event_precision=math.nan,
                event_f1=0.0,
                mean_delay_min=math.nan,
                max_delay_min=math.nan,
                false_alarms=0,
                false_alarms_per_week=0.0,
            ),
        ),
        # no labels: recall and both F1s undefined; every run is a false alarm
        (
            ".xx..x....",
            (),
            dict(
                positive_windows=0,
                true_positive_windows=0,
                precision=0.0,
                recall=math.nan,
                f1=math.nan,
                events=0,
                events_detected=0,
                event_recall=math.nan,
                detecting_runs=0,
                event_precision=0.0,
                event_f1=math.nan,
                mean_delay_min=math.nan,
                max_delay_min=math.nan,
                false_alarms=2,
                false_alarms_per_week=2 * WEEK_MIN / 150,
            ),
        ),
        # one long run over everything: one detecting run (the degenerate flood), both events detected
        (
            "xxxxxxxxxx",
            (2, 3, 9),
            dict(
                flagged_windows=10,
                true_positive_windows=7,
                precision=0.7,
                recall=1.0,
                f1=2 * 0.7 / 1.7,
                events_detected=2,
                event_recall=1.0,
                flag_runs=1,
                detecting_runs=1,
                event_precision=1.0,
                event_f1=1.0,
                mean_delay_min=0.0,
                max_delay_min=0.0,
                false_alarms=0,
                false_alarms_per_week=0.0,
            ),
        ),
    ],
)
def test_metrics_of_hand_built_sequences(flag_text, marked, changes):
    got = evaluate(flags(flag_text), labels(*marked), WINDOW, INTERVAL)
    expected = dict(BASIC, **changes)
    wrong = {k: (getattr(got, k), v) for k, v in expected.items() if not same(getattr(got, k), v)}
    assert not wrong, wrong


def test_an_unscored_window_breaks_a_run_and_an_event_out_of_range_is_left_out():
    # window t5 not scored: flags at t4 and t6 are two runs; event at t0 has span t0..t2, first end t3
    got = evaluate(flags(".x x.", first=3), labels(0, 6), WINDOW, INTERVAL)
    assert (got.windows, got.flag_runs, got.events, got.events_unscored) == (4, 2, 1, 1)
    assert (got.events_detected, got.detecting_runs, got.false_alarms) == (1, 1, 1)  # t6 sees event t6; t4 does not
    assert got.mean_delay_min == 0.0 and got.weeks == pytest.approx(5 * 15 / WEEK_MIN)


def test_no_scored_window_gives_nan_rates_and_no_weeks():
    empty = pd.Series([], index=pd.DatetimeIndex([], tz="UTC"), dtype=bool)
    got = evaluate(empty, labels(2), WINDOW, INTERVAL)
    assert got.windows == 0 and got.events == 0 and got.events_unscored == 1
    assert math.isnan(got.weeks) and math.isnan(got.false_alarms_per_week) and math.isnan(got.event_recall)


def test_the_fleet_sums_counts_and_recomputes_rates():
    a = evaluate(flags(".xx..x...."), labels(2, 3, 9), WINDOW, INTERVAL)
    b = evaluate(flags(".........x"), labels(9), WINDOW, INTERVAL)  # detects B after 30 min
    fleet = evaluation.combine([a, b])
    assert (fleet.events, fleet.events_detected, fleet.flag_runs, fleet.false_alarms) == (3, 2, 3, 1)
    assert fleet.event_recall == pytest.approx(2 / 3) and fleet.event_precision == pytest.approx(2 / 3)
    assert fleet.mean_delay_min == 22.5 and fleet.max_delay_min == 30.0
    assert fleet.weeks == pytest.approx(300 / WEEK_MIN) and fleet.false_alarms_per_week == pytest.approx(WEEK_MIN / 300)


# ---------------------------------------------------------------- ratios


def loss(*values: float) -> pd.Series:
    return pd.Series(values, index=T[2 : 2 + len(values)], dtype="float64")


def test_flags_for_ratio_is_loss_above_threshold_times_ratio():
    got = flags_for_ratio(loss(0.5, 2.0, 2.0001, np.nan), threshold=1.0, ratio=2.0, interval=INTERVAL)
    assert list(got) == [False, False, True, False]


@pytest.mark.parametrize("threshold, ratio", [(-1.0, 1.0), (np.nan, 1.0), (1.0, 0.0), (1.0, -2.0)])
def test_flags_for_ratio_refuses_a_bad_threshold_or_ratio(threshold, ratio):
    with pytest.raises(ValueError, match=r"threshold|ratio"):
        flags_for_ratio(loss(1.0), threshold, ratio, INTERVAL)


#   ends      t2  t3  t4  t5  t6  t7  t8  t9  t10 t11     labels: A = t2..t3 (span t2..t5), B = t9 (span t9..t11)
TWO_EVENTS = loss(0.5, 3.0, 2.5, 0.5, 1.5, 0.5, 0.5, 2.0, 0.5, 0.5)
#   ratio 1.0: flags t3 t4 | t6 | t9 -> 3 runs, 1 false alarm, recall 1, precision 2/3, F1 0.8
#   ratio 1.8 and 1.9: t3 t4 | t9     -> F1 1 (tie: the larger, 1.9, wins)
#   ratio 2.2: t3 t4                   -> recall 1/2, F1 2/3;    ratio 3.5: nothing -> F1 0


def test_tuning_maximises_event_f1_and_ties_go_to_the_larger_ratio():
    best, table = tune_ratio(TWO_EVENTS, 1.0, labels(2, 3, 9), WINDOW, INTERVAL, [3.5, 1.0, 1.8, 1.9, 2.2])
    assert best == 1.9
    assert list(table["ratio"]) == [1.0, 1.8, 1.9, 2.2, 3.5]
    assert list(table["event_f1"].round(3)) == [0.8, 1.0, 1.0, 0.667, 0.0]
    assert list(table["false_alarms"]) == [1, 0, 0, 0, 0]
    assert list(table["chosen"]) == [False, False, True, False, False]


#   one weak event B at t9 (loss 1.2) and a false alarm at t6 (loss 1.5)
#   ratio 1.0: t6 | t9 -> recall 1, 1 false alarm;  1.3: t6 -> recall 0, 1 false alarm;  2.0: nothing
WEAK = loss(0.5, 0.5, 0.5, 0.5, 1.5, 0.5, 0.5, 1.2, 0.5, 0.5)


@pytest.mark.parametrize(
    "budget, expected, within",
    [
        (None, 1.0, [True, True, True]),  # best event F1 (2/3)
        (1000.0, 1.0, [True, True, True]),  # every ratio within budget: highest recall
        (0.0, 2.0, [False, False, True]),  # no false alarm allowed: the event is given up
        (-1.0, 2.0, [False, False, False]),  # budget cannot be met: the fewest false alarms
    ],
)
def test_with_a_false_alarm_budget_tuning_takes_the_best_recall_within_it(budget, expected, within):
    best, table = tune_ratio(WEAK, 1.0, labels(9), WINDOW, INTERVAL, [1.0, 1.3, 2.0], max_false_alarms=budget)
    assert best == expected and list(table["within_budget"]) == within


def test_tuning_without_a_scored_event_or_without_candidates_raises():
    with pytest.raises(ValueError, match="no labelled event"):
        tune_ratio(WEAK, 1.0, labels(), WINDOW, INTERVAL, [1.0])
    with pytest.raises(ValueError, match="no candidate"):
        tune_ratio(WEAK, 1.0, labels(9), WINDOW, INTERVAL, [])
