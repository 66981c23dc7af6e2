"""anomaly/evaluation.py and anomaly/ratio_choice.py on hand-built sequences whose answers can be checked by eye.

Grid: 15-minute intervals t0 .. t11, window 3, so a window ending at t covers t-2 .. t and an event
labelled over ti .. tj is seen by the windows ending ti .. tj+2 (its detection span).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from anomaly import detect, evaluation, ratio_choice, report, review, tuning
from anomaly.detect import Context, Rules
from anomaly.errors import ConfigError
from anomaly.evaluation import evaluate, label_events, labels_on_grid
from anomaly.losses import BLAME
from anomaly.ratio_choice import decided_flags, flags_for_ratio, tune_ratio
from anomaly.review import ModelFacts

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
    naive = labels_on_grid([T[3].tz_localize(None)], T[0], T[6], INTERVAL)  # times without a zone are UTC
    assert list(naive) == [False, False, False, True, False, False]


def test_boolean_like_values_are_read_as_flags():
    raw = pd.Series([True, None, 0, 1.0, np.nan, np.True_, np.False_, 1, False], index=T[:9], dtype=object)
    got = evaluation.validate_bool_series(raw, "flags")
    assert got.dtype == bool and got.tolist() == [True, False, False, True, False, True, False, True, False]
    # flags as the database returns them: floats, NaN where none was written
    floats = evaluation.validate_bool_series(pd.Series([1.0, np.nan, 0.0], index=T[:3]), "flags")
    assert floats.tolist() == [True, False, False]
    naive = evaluation.validate_bool_series(pd.Series([True], index=T[:1].tz_localize(None)), "flags")
    assert naive.index.equals(T[:1])


@pytest.mark.parametrize(
    "bad, error, match",
    [
        ([True, False], TypeError, "DatetimeIndex"),
        (pd.DataFrame({"a": [True]}, index=T[:1]), TypeError, "^labels must be a pandas Series .* not DataFrame$"),
        (pd.Series([True, "yes"], index=T[:2]), ValueError, "booleans"),
        (pd.Series([True, 2], index=T[:2]), ValueError, "^labels must hold booleans, found 2$"),
        (pd.Series([0, 0.5], index=T[:2]), ValueError, "found 0.5$"),
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


def test_bad_flags_are_named_as_flags():
    with pytest.raises(TypeError, match=r"^flags must be a pandas Series"):
        evaluate(flags("..").to_frame(), labels(2), WINDOW, INTERVAL)


def test_a_window_of_one_interval_sees_only_its_own():
    got = evaluate(flags(".x..x"), labels(3, 5), 1, INTERVAL)
    assert (got.positive_windows, got.true_positive_windows, got.events_detected, got.false_alarms) == (2, 1, 1, 1)


def test_sparse_labels_two_intervals_apart_are_two_events():
    # Labels given only where they are True (not on the whole grid): the interval still splits them.
    sparse = pd.Series(True, index=T[[3, 5]])
    got = evaluate(flags("........."), sparse, 1, INTERVAL)
    assert (got.events, got.positive_windows) == (2, 2)


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


def test_flags_whose_windows_share_no_reading_are_two_runs_and_an_event_out_of_range_is_left_out():
    # windows t5, t6 not scored: flags at t4 and t7 are two runs (windows t2..t4, t5..t7); event at t0 has span
    # t0..t2, first end t3
    got = evaluate(flags(".x  x", first=3), labels(0, 6), WINDOW, INTERVAL)
    assert (got.windows, got.flag_runs, got.events, got.events_unscored) == (3, 2, 1, 1)
    assert (got.events_detected, got.detecting_runs, got.false_alarms) == (1, 1, 1)  # t7 sees event t6; t4 does not
    assert got.mean_delay_min == 15.0 and got.weeks == pytest.approx(5 * 15 / WEEK_MIN)


def test_flags_whose_windows_share_a_reading_are_one_run_whatever_lies_between():
    # t4 and t6 share the reading of t4: one run, even with the window t5 unflagged or not scored (told once
    # leaves a window that only retells a reading unflagged); t7 shares none with t4 but one with t6
    for text in (".x.x..", ".x x..", ".x.xx."):
        assert evaluate(flags(text, first=3), labels(), WINDOW, INTERVAL).flag_runs == 1, text
    assert evaluate(flags(".x..x.", first=3), labels(), WINDOW, INTERVAL).flag_runs == 2


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
    assert (fleet.windows, fleet.positive_windows, fleet.flagged_windows, fleet.true_positive_windows) == (20, 10, 4, 3)
    assert fleet.precision == pytest.approx(3 / 4) and fleet.recall == pytest.approx(3 / 10)
    assert fleet.f1 == pytest.approx(2 * 0.75 * 0.3 / 1.05) and fleet.event_f1 == pytest.approx(2 / 3)
    assert (fleet.events_unscored, fleet.detecting_runs) == (0, 2)


def test_the_fleet_mean_delay_weighs_each_sensor_by_its_detected_events():
    a = evaluate(flags(".x.....x.."), labels(2, 8), WINDOW, INTERVAL)  # two events, each seen after 15 min
    b = evaluate(flags("...x......"), labels(3), WINDOW, INTERVAL)  # one event, seen after 30 min
    assert (a.events_detected, a.mean_delay_min, b.mean_delay_min) == (2, 15.0, 30.0)
    assert evaluation.combine([a, b]).mean_delay_min == pytest.approx(20.0)  # (15 + 15 + 30) / 3


def test_a_fleet_with_nothing_detected_or_nothing_scored_has_nan_rates():
    quiet = evaluation.combine([evaluate(flags(".........."), labels(2), WINDOW, INTERVAL)])
    assert quiet.events == 1 and quiet.events_detected == 0
    assert math.isnan(quiet.mean_delay_min) and math.isnan(quiet.max_delay_min) and quiet.false_alarms_per_week == 0
    nobody = evaluation.combine([])
    assert nobody.windows == 0 and math.isnan(nobody.false_alarms_per_week) and math.isnan(nobody.mean_delay_min)


# ---------------------------------------------------------------- ratios


def loss(*values: float) -> pd.Series:
    return pd.Series(values, index=T[2 : 2 + len(values)], dtype="float64")


def test_flags_for_ratio_is_loss_above_threshold_times_ratio():
    got = flags_for_ratio(loss(0.5, 2.0, 2.0001, np.nan), threshold=1.0, ratio=2.0, interval=INTERVAL)
    assert list(got) == [False, False, True, False]
    assert list(flags_for_ratio(loss(0.4, 0.6), threshold=0.5, ratio=1.0, interval=INTERVAL)) == [False, True]


# (the score, loss / threshold, is then inf or NaN: the flags are what this test is about)
@pytest.mark.filterwarnings("ignore:divide by zero:RuntimeWarning", "ignore:invalid value:RuntimeWarning")
def test_a_threshold_of_zero_flags_any_loss_at_all():
    # metadata allows it: a model whose training windows all reconstructed perfectly
    assert list(flags_for_ratio(loss(0.0, 1e-9), threshold=0.0, ratio=1.0, interval=INTERVAL)) == [False, True]


def test_decided_flags_keep_only_the_windows_from_first_to_last():
    got = decided_flags(loss(2.0, 2.0, 2.0, 2.0, 2.0), Rules(threshold=1.0), Context(INTERVAL, first=T[3], last=T[5]))
    assert list(got.index) == list(T[3:6]) and got.all()


@pytest.mark.parametrize("threshold, ratio", [(-1.0, 1.0), (np.nan, 1.0), (1.0, 0.0), (1.0, -2.0)])
def test_flags_for_ratio_refuses_a_bad_threshold_or_ratio(threshold, ratio):
    with pytest.raises(ValueError, match=r"threshold|ratio"):
        flags_for_ratio(loss(1.0), threshold, ratio, INTERVAL)


#   ends      t2  t3  t4  t5  t6  t7  t8  t9  t10 t11     labels: A = t2..t3 (span t2..t5), B = t10 (span t10..t12)
TWO_EVENTS = loss(0.5, 3.0, 2.5, 0.5, 0.5, 1.5, 0.5, 0.5, 2.0, 0.5)
#   (flags at most 2 intervals apart, whose windows of 3 share a reading, are one run)
#   ratio 1.0: flags t3 t4 | t7 | t10 -> 3 runs, 1 false alarm, recall 1, precision 2/3, F1 0.8
#   ratio 1.8 and 1.9: t3 t4 | t10     -> F1 1 (tie: the smaller change from the current ratio wins)
#   ratio 2.2: t3 t4                   -> recall 1/2, F1 2/3;    ratio 3.5: nothing -> F1 0


def test_tuning_maximises_event_f1_and_ties_go_to_the_smallest_change_from_the_current_ratio():
    # Issue 11: ties went to the largest ratio (1 -> 5 for the same F1, with a longer delay).
    best, table = tune_ratio(TWO_EVENTS, 1.0, labels(2, 3, 10), WINDOW, INTERVAL, [3.5, 1.0, 1.8, 1.9, 2.2])
    assert best == 1.8
    assert list(table["ratio"]) == [1.0, 1.8, 1.9, 2.2, 3.5]
    assert list(table["event_f1"].round(3)) == [0.8, 1.0, 1.0, 0.667, 0.0]
    assert list(table["false_alarms"]) == [1, 0, 0, 0, 0]
    assert list(table["chosen"]) == [False, True, False, False, False]
    assert (table["rule"] == ratio_choice.BY_LABELS).all()
    assert tune_ratio(TWO_EVENTS, 1.0, labels(2, 3, 10), WINDOW, INTERVAL, [1.0, 1.8, 1.9], current=2.5)[0] == 1.9


#   event A = t2..t3 (span t2..t5): ratio 0.8 flags t2 t3 (delay 0), ratio 1.25 flags t3 (delay 15 min); both
#   F1 1 and the same change from 1 (x0.8, x1.25): the shorter delay wins, not the larger ratio
EARLY = loss(0.9, 2.0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5)


def test_equal_quality_and_equal_change_go_to_the_shorter_delay():
    best, table = tune_ratio(EARLY, 1.0, labels(2, 3), WINDOW, INTERVAL, [0.8, 1.25, 3.0])
    assert best == 0.8
    assert list(table["event_f1"]) == [1.0, 1.0, 0.0] and list(table["mean_delay_min"].fillna(-1)) == [0, 15, -1]


NAN = math.nan


@pytest.mark.parametrize(
    "scores, ratios, delays, current, chosen",
    [
        # Issue 11: F1 tied at ratios 1 and 5; the largest was chosen, 75 minutes later. Now the one in place.
        pytest.param([1.0, 1.0], [1.0, 5.0], [0.0, 75.0], 1.0, 0, id="tie: the current ratio stays"),
        pytest.param([1.0, 1.0], [1.0, 5.0], [0.0, 75.0], 5.0, 1, id="tie: the current ratio stays even if slower"),
        pytest.param([1.0, 1.0, 1.0], [1.5, 2.0, 5.0], [0, 0, 0], 1.0, 0, id="tie: the smallest change"),
        pytest.param([1.0, 1.0], [0.8, 1.25], [15.0, 0.0], 1.0, 1, id="same change (x0.8, x1.25): shorter delay"),
        pytest.param([1.0, 1.0], [0.8, 1.25], [NAN, 30.0], 1.0, 1, id="no detection is the longest delay"),
        pytest.param([1.0, 1.0], [0.8, 1.25], [0.0, 0.0], 1.0, 1, id="all else equal: the larger ratio"),
        pytest.param([0.5, 1.0], [1.0, 5.0], [0.0, 75.0], 1.0, 1, id="a better score wins whatever the change"),
        pytest.param([NAN, 0.0], [1.0, 5.0], [NAN, NAN], 1.0, 1, id="an undefined score is the lowest"),
    ],
)
def test_the_preferred_ratio(scores, ratios, delays, current, chosen):
    assert ratio_choice.preferred(scores, ratios, delays, current) == chosen


#   TWO_EVENTS without labels over 10 windows (150 min): each flag run is 10080/150 = 67.2 false alarms a week
#   ratio 1.0: t3 t4 | t7 | t10 -> 3 runs (201.6); 1.6: t3 t4 | t10 -> 2 (134.4); 2.1, 2.6: t3 t4, t3 -> 1; 3.5: 0
@pytest.mark.parametrize(
    "budget, expected, within",
    [
        (150.0, 1.6, [False, True, True, True, True]),
        (100.0, 2.1, [False, False, True, True, True]),
        (0.0, 3.5, [False, False, False, False, True]),
        (-1.0, 3.5, [False, False, False, False, False]),  # cannot be met: the fewest false alarms
    ],
)
def test_without_labelled_events_the_smallest_ratio_within_the_alarm_budget(budget, expected, within):
    # current 3.5: the budget's rule, not the smallest change, decides
    best, table = tune_ratio(
        TWO_EVENTS, 1.0, labels(), WINDOW, INTERVAL, [1.0, 1.6, 2.1, 2.6, 3.5], alarm_budget=budget, current=3.5
    )
    assert best == expected and list(table["within_budget"]) == within
    assert list(table["flag_runs"]) == [3, 2, 1, 1, 0] and (table["rule"] == ratio_choice.BY_BUDGET).all()


# ---------------------------------------------------------------- the scorer's rules

#   readings 20 at t0..t7 (flat-run lengths 1..8), 50 at t8..t11 (1..4; beyond the range (0, 30) from t8, which
#   the windows ending t8..t10 take in, and the first of them flagged tells); losses by window end t2..t11
READINGS = pd.Series([20.0] * 8 + [50.0] * 4, index=T)
STEPS = loss(2.0, 2.0, 0.5, 0.5, 2.0, 0.5, 0.5, 0.5, 0.5, 0.5)


@pytest.mark.parametrize(
    "rules, first, expected",
    [
        pytest.param(Rules(threshold=1.0), None, "xx..x.....", id="threshold"),
        pytest.param(Rules(threshold=1.0, min_consecutive=2), None, ".x........", id="two in a row"),
        pytest.param(Rules(threshold=1.0, levels=(0, 30), window=3), None, "xx..x.x...", id="level onset"),
        pytest.param(
            Rules(threshold=1.0, levels=(0, 30), window=3, min_consecutive=2), None, ".x.....x..", id="level, K 2"
        ),
        pytest.param(Rules(threshold=1.0, flat_limit=3), None, "xxxxxx...x", id="stuck longer than 3"),
        pytest.param(Rules(threshold=1.0, min_consecutive=2), 3, "x........", id="windows before first: persistence"),
    ],
)
def test_decided_flags_apply_the_scorers_rules(rules, first, expected):
    context = Context(INTERVAL, series=READINGS, first=None if first is None else T[first])
    got = decided_flags(STEPS, rules, context)
    assert "".join("x" if f else "." for f in got) == expected
    assert list(got.index) == list(T[12 - len(expected) :])


def test_decided_flags_return_windows_only_even_when_missing_points_are_anomalies():
    silent = READINGS.copy()
    silent[T[:2]] = np.nan  # no readings at t0, t1: with a limit of 1, t1 is a missing point
    rules = Rules(threshold=1.0, missing_limit=1, missing_is_anomaly=True)
    got = decided_flags(STEPS, rules, Context(INTERVAL, series=silent, first=T[0], last=T[11]))
    assert list(got.index) == list(T[2:]) and "".join("x" if f else "." for f in got) == "xx..x....."


def test_tuning_counts_the_flags_no_ratio_removes():
    # WEAK's losses, and the readings beyond the training range at t10 t11: a level anomaly at every ratio
    def rules(ratio: float) -> Rules:
        return Rules(threshold=ratio, levels=(0, 30), window=3)

    context = Context(INTERVAL, series=READINGS)
    _, alone = tune_ratio(WEAK, 1.0, labels(), WINDOW, INTERVAL, [1.0, 1.3, 2.0], alarm_budget=0.0)
    best, table = tune_ratio(
        WEAK, 1.0, labels(), WINDOW, INTERVAL, [1.0, 1.3, 2.0], alarm_budget=0.0, rules=rules, context=context
    )
    assert list(alone["false_alarms"]) == [2, 1, 0] and list(table["false_alarms"]) == [2, 2, 1]
    assert best == 2.0 and not table["within_budget"].any()


# ---------------------------------------------------------------- what review reads back


def test_missing_points_are_neither_scored_nor_flagged_in_a_review():
    # t3, t4: intervals without readings, written by a scorer run with --missing-is-anomaly (no loss)
    stored = pd.DataFrame(
        {
            "loss": [0.1, np.nan, np.nan, 0.1, 2.0],
            "threshold": [1.0] * 5,
            "anomaly": [False, True, True, False, True],
            "val_num": [1.0, np.nan, np.nan, 1.0, 1.0],
        },
        index=T[2:7],
    )
    scores = review.normalize_scores(stored, "val_num")
    assert list(scores.index) == [T[2], T[5], T[6]]
    got = evaluate(scores["anomaly"], labels(), WINDOW, INTERVAL)
    assert (got.windows, got.flagged_windows, got.flag_runs, got.false_alarms) == (3, 1, 1, 1)
    assert list(review.stored_loss(stored).index) == [T[2], T[5], T[6]]


def test_tuning_tells_a_flag_once_from_the_blame_the_scorer_stored():
    """Scores decided with their blame, stored as the scorer writes them (Scores.frame's columns) and read back:
    the tuner's flags at the same rules are the stored ones. A reading off at t4, the worst of the four windows
    of 4 that hold it (t4..t7), is one flag; the reading at t9 is off too, but its window's blame was not
    stored (NaN, as before the scorer stored it): that window tells its own reading, as it would have."""
    losses = np.array([0.1, 0.1, 0.1, 0.1, 2.0, 1.8, 1.6, 1.4, 0.1, 2.0, 0.1, 0.1])
    blame = np.empty(12, dtype=BLAME)
    blame["worst"], blame["newest"] = [3, 3, 3, 3, 3, 2, 1, 0, 3, 3, 3, 3], 0.0
    rules = Rules(threshold=1.0, window=4)
    scored = detect.decide(T, np.zeros(12), losses, rules, Context(INTERVAL), blame=blame)
    assert list(T[scored.anomaly]) == [T[4], T[9]]
    stored = scored.frame()
    stored.loc[T[9], ["worst", "newest"]] = np.nan
    loss = review.stored_loss(stored)
    tuned = decided_flags(loss, rules, Context(INTERVAL), review.stored_blame(stored, loss, 4))
    assert tuned.tolist() == scored.anomaly.tolist()
    # Without the blame, every window that holds t4's reading is its own flag.
    assert list(T[decided_flags(loss, rules, Context(INTERVAL)).to_numpy()]) == [T[4], T[5], T[6], T[7], T[9]]


def test_the_line_of_a_sensor_without_labels_says_so_instead_of_event_counts():
    # Issue 11: its NaN event counts went to a %d and printed a logging traceback instead of the line.
    scores = pd.DataFrame({"anomaly": flags(".xx..x...x")})
    evaluated = [
        report.evaluate_sensor("s", scores, marked, ModelFacts(WINDOW, 1.0, note), T[2], T[11] + INTERVAL, INTERVAL)
        for marked, note in [(None, ""), (None, "no model"), (T[[2, 3]], "")]
    ]
    assert [report.result_line(r) for r in evaluated] == [
        "10 windows, 4 flagged in 3 runs; no labels: nothing to evaluate",
        "10 windows, 4 flagged in 3 runs; no labels: nothing to evaluate (no model)",
        "10 windows, 1 of 1 events detected, 2 false alarms",
    ]


# ---------------------------------------------------------------- ratio and K together

#   an event labelled t7..t8 (span t7..t10) seen by t7 t8 t9; a one-window blip at t3
#   K 1: ratio 1 flags t3 | t7 t8 t9 -> F1 2/3; K 2: t8 t9 -> F1 1, delay 15; K 3: t9 -> F1 1, delay 30
BLIP = loss(0.5, 3.0, 0.5, 0.5, 0.5, 2.0, 2.0, 2.0, 0.5, 0.5)
#   no labels; blips at t3, t6 and t9 (one window each): K 1 needs ratio 2.5 for 1 run, K 2 flags nothing
QUIET = loss(0.5, 1.5, 0.5, 0.5, 1.5, 0.5, 0.5, 3.0, 0.5, 0.5)
# 100 false alarms a week over 150 minutes: at most one run
OBJECTIVE = tuning.Objective(alarm_budget=100.0)


def tune(series: pd.Series, labelled: pd.DatetimeIndex | None, ratio: float = 1.0) -> tuning.SensorTuning:
    return tuning.tune_sensor(
        "s",
        series,
        labelled,
        ModelFacts(WINDOW, 1.0),
        ratio,
        rules=lambda r, k: Rules(threshold=r, min_consecutive=k),
        readings=None,
        start=T[2],
        stop=T[11] + INTERVAL,
        interval=INTERVAL,
        candidates=[1.0, 2.5, 4.0],
        consecutive=[1, 2, 3],
        current_consecutive=1,
        objective=OBJECTIVE,
    )


def test_each_sensor_is_tuned_at_every_k_by_labels_or_by_the_alarm_budget():
    labelled, quiet = tune(BLIP, T[[7, 8]]), tune(QUIET, None)
    assert labelled.rule == ratio_choice.BY_LABELS and quiet.rule == ratio_choice.BY_BUDGET
    assert {k: c.ratio for k, c in labelled.choices.items()} == {1: 1.0, 2: 1.0, 3: 1.0}
    assert [labelled.choices[k].metrics.event_f1 for k in (1, 2, 3)] == pytest.approx([2 / 3, 1, 1])
    assert labelled.before is not None and labelled.before.false_alarms == 1
    assert {k: (c.ratio, c.within_budget) for k, c in quiet.choices.items()} == {
        1: (2.5, True),
        2: (1.0, True),
        3: (1.0, True),
    }
    fleet = tuning.fleet_choices([labelled, quiet], [1, 2, 3])
    assert [(f.within_budget, f.tuned) for f in fleet] == [(2, 2), (2, 2), (2, 2)]
    assert tuning.recommend(fleet, 1, OBJECTIVE) == 2  # F1 1 at K 2 and 3: the smaller change from 1
    assert tuning.recommend(fleet, 3, OBJECTIVE) == 3
    assert tuning.describe(labelled, 2, OBJECTIVE) == (
        "s: ratio 1 -> 1; --min-consecutive 2, from labels, 1 events; event recall 1.00 -> 1.00, event precision "
        "0.50 -> 1.00, event F1 0.67 -> 1.00, false alarms/week 67.2 -> 0.0, mean delay min 0 -> 15"
    )
    assert tuning.describe(quiet, 1, OBJECTIVE) == (
        "s: ratio 1 -> 2.5; --min-consecutive 1, no labelled events: alarm budget 100/week; "
        "false alarms/week 201.6 -> 67.2"
    )


def test_a_sensor_without_a_model_or_scores_is_skipped():
    assert tune(BLIP.iloc[:0], T[[7]]).skipped.startswith("no scores in the tuning range")
    no_model = tuning.tune_sensor(
        "s",
        BLIP,
        None,
        ModelFacts(WINDOW, None, "no usable model"),
        1.0,
        rules=None,
        readings=None,
        start=T[2],
        stop=T[11],
        interval=INTERVAL,
        candidates=[1.0],
        consecutive=[1],
        current_consecutive=1,
        objective=OBJECTIVE,
    )
    assert no_model.skipped == "no usable model"
    assert tuning.describe(no_model, 1, OBJECTIVE) == "s: ratio 1 kept: no usable model"


def fleet_at(k: int, flag_text: str, within: int, tuned: int = 2) -> tuning.FleetChoice:
    return tuning.FleetChoice(k, evaluate(flags(flag_text), labels(2, 3, 9), WINDOW, INTERVAL), within, tuned)


#   flags against events A (t2..t3) and B (t9): ".xx..x...x" F1 0.8, mean delay 22.5 min (15 and 30);
#   "xxx......x" F1 1, mean delay 15 (0 and 30); ".xx......x" F1 1, mean delay 22.5 (15 and 30)
@pytest.mark.parametrize(
    "choices, current, expected",
    [
        pytest.param([(1, "xxx......x", 1), (2, ".xx..x...x", 2)], 1, 2, id="most sensors within budget first"),
        pytest.param([(1, ".xx..x...x", 2), (2, "xxx......x", 2)], 1, 2, id="then the best labelled F1"),
        pytest.param([(1, "xxx......x", 2), (2, "xxx......x", 2), (3, "xxx......x", 2)], 2, 2, id="then no change"),
        pytest.param([(1, ".xx......x", 2), (3, "xxx......x", 2)], 2, 3, id="then the shorter delay"),
        pytest.param([(1, ".xx..x...x", 0, 0), (2, ".xx..x...x", 0, 0)], 2, 2, id="nothing tuned: as now"),
    ],
)
def test_the_fleet_k(choices, current, expected):
    assert tuning.recommend([fleet_at(*c) for c in choices], current, tuning.Objective()) == expected


@pytest.mark.parametrize("text", ["0,1", "a", "", "2,1001"])
def test_a_bad_k_grid_is_refused(text):
    with pytest.raises(ConfigError, match="min-consecutive-grid"):
        tuning.parse_consecutive(text)


#   one weak event B at t9 (loss 1.2) and a false alarm at t5 (loss 1.5)
#   ratio 1.0: t5 | t9 -> recall 1, 1 false alarm;  1.3: t5 -> recall 0, 1 false alarm;  2.0: nothing
WEAK = loss(0.5, 0.5, 0.5, 1.5, 0.5, 0.5, 0.5, 1.2, 0.5, 0.5)


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
    with pytest.raises(ValueError, match=r"^no labelled event"):
        tune_ratio(WEAK, 1.0, labels(), WINDOW, INTERVAL, [1.0])
    with pytest.raises(ValueError, match=r"^no candidate ratio to try$"):
        tune_ratio(WEAK, 1.0, labels(9), WINDOW, INTERVAL, [])


def test_tuning_with_the_scorers_rules_needs_no_context_beyond_the_interval():
    # Persistence reads the interval: without a context, tuning makes one of the interval it was given.
    rules = lambda ratio: Rules(threshold=ratio, min_consecutive=2)  # noqa: E731
    best, table = tune_ratio(TWO_EVENTS, 1.0, labels(2, 3, 10), WINDOW, INTERVAL, [1.0, 1.8], rules=rules)
    with_context = tune_ratio(
        TWO_EVENTS, 1.0, labels(2, 3, 10), WINDOW, INTERVAL, [1.0, 1.8], rules=rules, context=Context(INTERVAL)
    )
    assert best == with_context[0]
    pd.testing.assert_frame_equal(table, with_context[1])
