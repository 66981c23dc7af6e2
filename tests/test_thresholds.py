"""thresholds.py and calibration.py on small sequences whose answers can be checked by hand.

The hand-checked history is a tiled day of [0.1, 0.2, 0.3, 0.2]: mean 0.2, std sqrt(0.005) = 0.0707, so the
smallest candidate (z = 2.5) is 0.3768, above every loss in it: no candidate is eligible and eps is that
smallest candidate.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest

from anomaly import thresholds
from anomaly.calibration import calibrate, run_peaks
from anomaly.thresholds import (
    dynamic_threshold,
    history_needed,
    rolling_dynamic_flags,
    rolling_dynamic_thresholds,
    smooth,
)

Q = pd.Timedelta(minutes=15)
TILE = [0.1, 0.2, 0.3, 0.2]
TIGHT = 0.2 + 2.5 * math.sqrt(0.005)


def by_end(values) -> pd.Series:
    index = pd.date_range("2026-01-01", periods=len(values), freq="15min", tz="UTC")
    return pd.Series(np.asarray(values, dtype="float64"), index=index)


@pytest.mark.parametrize(
    "losses, floor, expected",
    [
        (TILE * 10, 0.05, TIGHT),  # no outlier: mean + smallest z * std
        (TILE * 10, 1.0, 1.0),  # ... below the floor: the floor
        ([0.2] * 40, 0.5, 0.5),  # flat: std and MAD 0, eps = 0.2, the floor decides
        ([0.2] * 39 + [0.2001], 0.5, 0.5),  # flat with a tiny change: still the floor
        (TILE * 10 + [5.0], 0.05, TIGHT),  # a clear outlier is fenced off: the threshold does not move
        ([0.3], 0.05, 0.05),  # too short a history: the floor
        ([0.1, 0.3], 0.05, 0.2 + 2.5 * 0.1),  # two losses are enough: mean + smallest z * std
    ],
)
def test_dynamic_threshold_without_smoothing(losses, floor, expected):
    assert dynamic_threshold(np.array(losses), floor, smoothing=1) == pytest.approx(expected, rel=1e-9)


def test_without_the_fence_a_clear_outlier_raises_the_threshold():
    fenced = dynamic_threshold(np.array(TILE * 10 + [5.0]), 0.05, smoothing=1)
    unfenced = dynamic_threshold(np.array(TILE * 10 + [5.0]), 0.05, smoothing=1, fence=np.inf)
    assert fenced == pytest.approx(TIGHT) and unfenced > 3 * TIGHT


def test_a_clear_outlier_stands_above_the_threshold_from_its_history():
    history = TILE * 10
    assert dynamic_threshold(np.array(history), 0.05, smoothing=1) < 5.0
    frame = rolling_dynamic_thresholds(by_end([*history, 5.0, *TILE]), 0.05, history=40, smoothing=1)
    assert frame["anomaly"].iloc[40:].tolist() == [True] + [False] * 4


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("floor", [1e-6, 0.3, 10.0])
def test_the_threshold_is_never_below_the_floor(seed, floor):
    losses = np.abs(np.random.default_rng(seed).normal(0.3, 0.1, 200))
    assert dynamic_threshold(losses, floor) >= floor
    frame = rolling_dynamic_thresholds(by_end(losses), floor, history=50)
    assert (frame["threshold"] >= floor).all()


@pytest.mark.parametrize(
    "floor, flagged",
    [
        (0.5, []),  # the floor ignores a change too small to matter
        (1e-9, [60]),  # without a real floor, a flat history makes the tiny change an outlier: the trap
    ],
)  # (windows 0-39 have no full history: their threshold is the floor, left out here)
def test_flat_losses_flag_a_tiny_change_only_without_a_floor(floor, flagged):
    losses = [0.2] * 60 + [0.2001] + [0.2] * 5
    flags = rolling_dynamic_flags(by_end(losses), floor, history=40, smoothing=1)
    assert list(40 + np.flatnonzero(flags.iloc[40:].to_numpy())) == flagged


def enter_and_leave(fence: float) -> tuple[float, float, np.ndarray]:
    """Thresholds around an anomaly that enters the history and leaves it again.

    The normal losses repeat a random day of 24 windows, so the history before the anomaly and the one a
    whole number of days later, after it has left (history and smoothing span included), hold the same
    losses: any difference between their thresholds is memory of the anomaly. Returns the threshold just
    before the anomaly, the one after, and every one in between."""
    day = np.abs(np.random.default_rng(3).normal(0.3, 0.05, 24))
    losses = np.tile(day, 25)
    start, length, history = 300, 10, 96
    losses[start : start + length] += 3.0
    thresholds_ = rolling_dynamic_thresholds(by_end(losses), 0.01, history=history, fence=fence)["threshold"]
    after = start + 5 * 24
    assert after - history - thresholds.smoothing_span(thresholds.SMOOTHING) >= start + length  # it has left
    return thresholds_.iloc[start], thresholds_.iloc[after], thresholds_.iloc[start : after + 1].to_numpy()


def test_the_threshold_does_not_jump_when_an_anomaly_enters_or_leaves_the_history():
    before, after, between = enter_and_leave(thresholds.FENCE)
    assert after == pytest.approx(before, rel=1e-9)
    assert np.max(np.abs(between - before)) <= 0.02 * before


def test_without_the_fence_the_anomaly_lifts_the_threshold_while_it_is_in_the_history():
    before, after, between = enter_and_leave(np.inf)
    assert after == pytest.approx(before, rel=1e-9)
    assert np.max(between) > 2 * before


@pytest.mark.parametrize("changed", [60, 150, 299])
def test_changing_a_loss_never_changes_an_earlier_decision(changed):
    losses = np.abs(np.random.default_rng(7).normal(0.3, 0.05, 300))
    original = rolling_dynamic_thresholds(by_end(losses), 0.3, history=50)
    losses[changed] = 10.0
    altered = rolling_dynamic_thresholds(by_end(losses), 0.3, history=50)
    pd.testing.assert_frame_equal(original.iloc[:changed], altered.iloc[:changed])
    assert altered["anomaly"].iloc[changed] and not original["anomaly"].iloc[changed]


def test_a_decision_depends_on_a_bounded_history_only():
    losses = np.abs(np.random.default_rng(8).normal(0.3, 0.05, 300))
    original = rolling_dynamic_thresholds(by_end(losses), 0.01, history=50)
    losses[100] = 10.0
    altered = rolling_dynamic_thresholds(by_end(losses), 0.01, history=50)
    reach = 100 + history_needed(50)
    assert not np.allclose(original["threshold"].iloc[100 : reach + 1], altered["threshold"].iloc[100 : reach + 1])
    pd.testing.assert_frame_equal(original.iloc[reach + 1 :], altered.iloc[reach + 1 :])


def test_a_scorer_given_history_needed_windows_decides_as_a_backfill_does():
    losses = by_end(np.abs(np.random.default_rng(9).normal(0.3, 0.05, 400)))
    backfill = rolling_dynamic_flags(losses, 0.3, history=100)
    tick = rolling_dynamic_flags(losses.iloc[-(history_needed(100) + 5) :], 0.3, history=100)
    pd.testing.assert_series_equal(tick.iloc[-5:], backfill.iloc[-5:])


def test_rolling_without_smoothing_matches_dynamic_threshold_on_the_windows_before():
    losses = np.abs(np.random.default_rng(4).normal(0.3, 0.05, 120))
    frame = rolling_dynamic_thresholds(by_end(losses), 0.01, history=30, smoothing=1)
    for i in (30, 77, 119):
        assert frame["threshold"].iloc[i] == pytest.approx(dynamic_threshold(losses[i - 30 : i], 0.01, smoothing=1))


@pytest.mark.parametrize("start", [0, 5, 30, 39, 40, 41, 119, 120])
def test_thresholds_from_a_start_are_those_of_the_whole_range(start):
    """A tick computes thresholds only for the windows it decides; they are those of the whole range."""
    losses = np.abs(np.random.default_rng(6).normal(0.3, 0.05, 120))
    losses[[20, 50, 51, 90]] = [3.0, 2.0, 2.5, 4.0]
    whole = rolling_dynamic_thresholds(by_end(losses), 0.01, history=30, min_history=10)
    part = rolling_dynamic_thresholds(by_end(losses), 0.01, history=30, min_history=10, start=start)
    pd.testing.assert_frame_equal(part.iloc[start:], whole.iloc[start:])
    assert part["threshold"].iloc[:start].isna().all() and not part["anomaly"].iloc[:start].any()


def test_a_sensor_that_spikes_every_few_windows_still_gets_a_threshold():
    """When the fence and its echo set aside every loss of the history, the floor is the threshold (it was
    0/0 = NaN, and such a sensor was never flagged)."""
    losses = np.full(120, 0.1)
    losses[::8] = 1.0  # more often than the smoothing span (10): every smoothed loss is a spike's echo
    frame = rolling_dynamic_thresholds(by_end(losses), 0.2, history=40)
    assert (frame["threshold"] >= 0.2).all()  # "float >= floor", as dynamic_threshold promises


def test_a_history_the_fence_leaves_one_loss_of_gets_that_loss_as_eps():
    # Smoothing 0.99 spans two windows. Window 3's history is windows 1 and 2 (0.109 and 0.1), and window 0,
    # just before it, is fenced (1.0 is far above them) and sets aside its echo, window 1: one loss is kept,
    # so eps is its mean (0.1) plus z times a std of 0. The smoothed loss of window 3 (0.12) is over it.
    frame = rolling_dynamic_thresholds(by_end([1.0, 0.1, 0.1, 0.12]), 0.01, history=2, smoothing=0.99)
    assert frame["threshold"].iloc[3] == pytest.approx(0.1)
    assert frame["anomaly"].iloc[3]


def test_a_history_mostly_at_one_loss_gets_that_loss_as_eps():
    # A MAD of 0: the fence keeps the losses equal to the median and sets the others aside, so eps is that
    # loss (std 0), above the floor.
    assert dynamic_threshold(np.array([0.3] * 7 + [0.5, 0.6, 0.7]), 0.01, smoothing=1) == pytest.approx(0.3)


def test_windows_before_min_history_get_the_floor():
    losses = np.abs(np.random.default_rng(5).normal(0.3, 0.05, 60))
    frame = rolling_dynamic_thresholds(by_end(losses), 0.01, history=30, min_history=10)
    assert (frame["threshold"].iloc[:10] == 0.01).all() and (frame["threshold"].iloc[10:] > 0.01).all()


@pytest.mark.parametrize(
    "losses, smoothing, expected",
    [
        ([0, 1, 1], 1, [0, 1, 1]),
        ([0, 1, 1], 0.5, [0, 0.5 / 0.75, 0.75 / 0.875]),
        ([0, 1, 1], 0.99, [0, 0.99 / 0.9999, 1]),  # a span of two
        ([2, 2, 2, 2], 0.3, [2, 2, 2, 2]),
    ],
)
def test_smooth(losses, smoothing, expected):
    assert smooth(np.array(losses, dtype=float), smoothing) == pytest.approx(expected)


@pytest.mark.parametrize("smoothing", [1, 0.5])
def test_smooth_and_rolling_thresholds_of_short_series(smoothing):
    assert smooth(np.empty(0), smoothing).shape == (0,)
    lead = thresholds.smoothing_span(smoothing) - 1
    for n in (lead + 1, lead + 20, lead + 21):  # shorter than history + lead, exactly as long, one more
        frame = rolling_dynamic_thresholds(by_end(TILE * 10)[:n], 0.05, history=20, smoothing=smoothing)
        assert len(frame) == n and (frame["threshold"] >= 0.05).all()


@pytest.mark.parametrize("smoothing, span", [(1, 1), (0.9995, 1), (0.5, 10), (0.3, 20)])
def test_smoothing_span_leaves_out_less_than_a_thousandth(smoothing, span):
    assert thresholds.smoothing_span(smoothing) == span
    assert history_needed(672, smoothing) == 672 + 2 * (span - 1)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"floor": 0}, ValueError, "floor must be a positive"),
        ({"floor": float("nan")}, ValueError, "floor must be a positive"),
        ({"smoothing": 0}, ValueError, "smoothing must be"),
        ({"smoothing": 1.5}, ValueError, "smoothing must be"),
        ({"z_range": []}, ValueError, "z_range"),
        ({"z_range": [3, 2]}, ValueError, "z_range"),
        ({"fence": 0}, ValueError, "fence"),
        ({"history": 1}, ValueError, "^history must be"),
        ({"history": 10, "min_history": 11}, ValueError, "min_history"),
        ({"losses": by_end([0.1, float("nan"), 0.2])}, ValueError, "^losses must be finite"),
        ({"losses": by_end([0.1, 0.2, 0.3]).iloc[::-1]}, ValueError, "^losses must be sorted"),
        (
            {"losses": pd.Series(["0.1", "x", "0.2"], index=by_end([0, 0, 0]).index)},
            ValueError,
            "^losses must be finite",
        ),
        ({"losses": pd.Series([0.1, 0.2, 0.3])}, TypeError, r"DatetimeIndex\), not Series$"),
        # booleans are numbers to Python, never here
        ({"smoothing": True}, ValueError, "smoothing must be"),
        ({"floor": True}, ValueError, "floor must be a positive"),
        ({"fence": True}, ValueError, "fence"),
        ({"history": True}, ValueError, "^history must be"),
        ({"history": 10, "min_history": True}, ValueError, "min_history"),
        # numbers of the wrong kind are refused as such, not by a comparison that happens to fail
        ({"smoothing": "0.5"}, ValueError, "smoothing must be"),
        ({"floor": "1"}, ValueError, "floor must be a positive"),
        ({"fence": "6"}, ValueError, "fence"),
        ({"history": 3.0}, ValueError, "^history must be"),
        ({"history": 10, "min_history": 3.0}, ValueError, "min_history"),
        ({"z_range": [0, 1]}, ValueError, "z_range"),
        ({"z_range": [2, 2]}, ValueError, "z_range"),
        ({"z_range": [1, np.inf]}, ValueError, "z_range"),
    ],
)
def test_bad_arguments_raise(kwargs, error, match):
    arguments = {"losses": by_end([0.1, 0.2, 0.3]), "floor": 0.5, "history": 2, **kwargs}
    with pytest.raises(error, match=match):
        rolling_dynamic_flags(**arguments)


def test_dynamic_threshold_wants_a_one_dimensional_finite_history():
    with pytest.raises(ValueError, match=r"^losses must have shape \[n\]"):
        dynamic_threshold(np.ones((3, 2)), 0.5)
    with pytest.raises(ValueError, match=r"^losses must be finite"):
        dynamic_threshold(np.array([0.1, np.inf]), 0.5)


def test_small_positive_z_and_fence_are_valid():
    assert dynamic_threshold(np.array(TILE * 10), 1e-9, smoothing=1, z_range=[0.5], fence=0.5) > 0


# ---------------------------------------------------------------- calibration (calibration.py)

WEEK_OF_WINDOWS = 7 * 96  # 15-minute windows


def held_out(spikes: list[float], weeks: int = 1, base: float = 0.1) -> tuple[np.ndarray, pd.DatetimeIndex]:
    """Losses of ``weeks`` of 15-minute windows at ``base``, with one single-window spike of each height above
    it, spread out; by window end."""
    losses = np.full(weeks * WEEK_OF_WINDOWS, base)
    losses[10::50][: len(spikes)] = base + np.asarray(spikes)
    return losses, by_end(losses).index


def test_calibration_solves_the_exponential_tail_for_the_alarm_budget():
    # The 95% quantile is the base (0.1); ten runs above it in a week, mean excess 5.5: the rate above t is
    # 10 * exp(-(t - 0.1) / 5.5) per week, one per week at t = 0.1 + 5.5 * ln(10).
    losses, ends = held_out([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0])
    found = calibrate(losses, ends, Q, budget=1.0, floor=0.01)
    assert found.threshold == pytest.approx(0.1 + 5.5 * math.log(10))
    assert found.alarms_per_week == pytest.approx(1.0)
    assert (found.weeks, found.peaks) == (1.0, 10)
    twice = calibrate(np.tile(losses, 2), by_end(np.tile(losses, 2)).index, Q, budget=1.0, floor=0.01)
    assert twice.weeks == 2.0 and twice.threshold == pytest.approx(found.threshold)  # a rate, not a count


@pytest.mark.parametrize(
    "spikes, budget",
    [
        ([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0], 2.0),
        ([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0], 1.0),  # a mean excess below 1
        ([1.0, 2.0, 3.0, 4.0, 5.0], 1.0),  # just enough runs to model the tail
    ],
)
def test_calibration_solves_the_tail_for_any_budget_and_excess(spikes, budget):
    losses, ends = held_out(spikes)
    found = calibrate(losses, ends, Q, budget=budget, floor=0.01)
    rate, excess = len(spikes), float(np.mean(spikes))
    assert found.threshold == pytest.approx(0.1 + excess * math.log(rate / budget))
    assert found.alarms_per_week == pytest.approx(budget) and found.peaks == len(spikes)


def test_calibration_counts_windows_apart_in_time_as_separate_runs():
    losses, ends = held_out([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0])
    losses[11::50][:10] = losses[10::50][:10]  # each spike lasts two windows ...
    split = np.cumsum(np.isin(np.arange(len(losses)), 11 + 50 * np.arange(10)))
    apart = ends + split * Q  # ... with an interval missing between them: twenty runs
    assert calibrate(losses, ends, Q, budget=1.0, floor=0.01).peaks == 10
    found = calibrate(losses, apart, Q, budget=1.0, floor=0.01)
    assert found.peaks == 20 and found.threshold == pytest.approx(0.1 + 5.5 * math.log(20))


def test_calibration_never_goes_below_the_floor_and_reports_the_rate_at_the_floor():
    losses, ends = held_out([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0])
    found = calibrate(losses, ends, Q, budget=1.0, floor=20.0)
    assert found.threshold == 20.0
    assert found.alarms_per_week == pytest.approx(10 * math.exp(-(20.0 - 0.1) / 5.5))


def test_a_budget_above_the_measured_rate_keeps_the_tail_level():
    losses, ends = held_out([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0])
    found = calibrate(losses, ends, Q, budget=20.0, floor=0.01)
    assert found.threshold == pytest.approx(0.1) and found.alarms_per_week == pytest.approx(10.0)


def test_too_few_runs_above_the_tail_level_take_the_largest_loss_at_one_run_per_held_out_span():
    losses, ends = held_out([1.0, 4.0, 2.0], weeks=2)
    found = calibrate(losses, ends, Q, budget=1.0, floor=0.01)
    assert (found.threshold, found.alarms_per_week, found.weeks, found.peaks) == (4.1, 0.5, 2.0, 3)
    assert calibrate(losses, ends, Q, budget=1.0, floor=9.0).threshold == 9.0


def test_no_held_out_window_gives_the_floor_and_no_rate():
    found = calibrate(np.empty(0), by_end([]).index, Q, budget=1.0, floor=0.5)
    assert (found.threshold, found.weeks, found.peaks) == (0.5, 0.0, 0) and math.isnan(found.alarms_per_week)


def test_run_peaks_are_the_largest_loss_of_each_run_and_a_missing_window_splits_a_run():
    losses = np.array([0.0, 3.0, 5.0, 0.0, 2.0, 2.5, 1.0])
    ends = by_end(losses).index
    assert run_peaks(losses, ends, Q, level=1.0).tolist() == [5.0, 2.5]
    assert run_peaks(losses, ends, Q, level=2.0).tolist() == [5.0, 2.5]
    assert run_peaks(losses, ends, Q, level=2.5).tolist() == [5.0]  # above, not at
    gap = ends.delete(2).insert(2, ends[2] + Q / 3)  # the window ending at ends[2] came late: off the grid
    assert run_peaks(losses, gap, Q, level=1.0).tolist() == [3.0, 5.0, 2.5]


def reference_eps(history: list[float], z_range: tuple[float, ...], fence: float, span: int, lead: int) -> float:
    """The module docstring's eps, one candidate at a time and one loss at a time: the slow, plain reading of
    the rules that the vectorized ``_eps`` must agree with. ``history`` holds ``lead`` smoothed losses before
    the history proper."""
    own = history[lead:]
    median = float(np.median(own))
    mad = 1.4826 * float(np.median([abs(x - median) for x in own]))
    fenced = [math.isfinite(fence) and x > median + fence * mad for x in history]
    # A loss is kept when neither it nor one of the span-1 losses before it is fenced (its echo).
    kept = [not any(fenced[max(0, j - span + 1) : j + 1]) for j in range(lead, len(history))]
    values = [x for x, k in zip(own, kept) if k]
    mean = sum(values) / len(values)
    std = math.sqrt(sum((x - mean) ** 2 for x in values) / len(values))
    best, best_score = None, -math.inf
    for z in z_range:
        eps = mean + z * std
        above = [x > eps for x in values]
        n_above = sum(above)
        if n_above < 1 or 2 * n_above >= len(values):
            continue
        below = [x for x, a in zip(values, above) if not a]
        mean_below = sum(below) / len(below)
        std_below = math.sqrt(sum((x - mean_below) ** 2 for x in below) / len(below))
        sequences = sum(a and (i == 0 or not above[i - 1]) for i, a in enumerate(above))
        drop = ((mean - mean_below) / mean if mean > 0 else 0.0) + ((std - std_below) / std if std > 0 else 0.0)
        score = drop / (n_above + sequences**2)
        if score >= best_score:  # a tie goes to the larger z
            best, best_score = eps, score
    return mean + z_range[0] * std if best is None else best


def bursts(seed: int, n: int) -> np.ndarray:
    """Noisy losses at a random scale with a few bursts of raised ones (one may open the history) and huge
    spikes (one may open it, one may sit inside a burst): several candidates are eligible, some are fenced."""
    rng = np.random.default_rng(seed)
    losses = np.abs(rng.normal(1.0, rng.uniform(0.05, 0.3), n))
    starts = rng.choice(n - 4, size=rng.integers(1, 5), replace=False)
    if rng.random() < 0.3:
        starts[0] = rng.integers(0, 2)
    for start in starts:
        losses[start : start + rng.integers(1, 5)] += rng.uniform(0.2, 1.5)
    spikes = rng.choice(n, size=rng.integers(0, 3), replace=False)
    if rng.random() < 0.3:
        spikes = np.append(spikes, rng.choice([0, starts[0] + 1]))
    losses[spikes] += 20.0
    return losses * rng.choice([0.1, 1.0, 10.0])


Z_CANDIDATES = (0.1, 0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0)


@pytest.mark.parametrize("fence", [thresholds.FENCE, 2.0, np.inf])
def test_dynamic_threshold_agrees_with_the_plain_reading_of_the_rules(fence):
    for seed in range(40):
        losses = bursts(seed, int(np.random.default_rng(seed).integers(12, 60)))
        got = dynamic_threshold(losses, 1e-9, smoothing=1, z_range=Z_CANDIDATES, fence=fence)
        expected = reference_eps(list(losses), Z_CANDIDATES, fence, span=1, lead=0)
        assert got == pytest.approx(expected, rel=1e-9), seed


def test_a_candidate_with_half_the_history_above_it_is_not_eligible():
    # mean 0.3, std 0.2: both candidates (0.35, 0.4) leave exactly half above: the smallest is the fallback.
    assert dynamic_threshold(np.array([0.1, 0.5] * 10), 1e-9, smoothing=1, z_range=[0.25, 0.5]) == pytest.approx(0.35)


@pytest.mark.parametrize("seed", range(12))
def test_rolling_thresholds_agree_with_the_plain_reading_of_the_rules_echo_included(seed):
    losses = bursts(seed, 80)
    smoothed = smooth(losses, 0.6)
    span = thresholds.smoothing_span(0.6)  # 8: a fenced loss echoes in the 7 smoothed losses after it
    history, lead = 30, span - 1
    frame = rolling_dynamic_thresholds(by_end(losses), 1e-9, history, smoothing=0.6, z_range=Z_CANDIDATES, fence=2.0)
    for i in (history, history + 3, history + lead, history + lead + 1, 55, 79):
        start = max(0, i - history - lead)
        expected = reference_eps(list(smoothed[start:i]), Z_CANDIDATES, 2.0, span, lead=i - history - start)
        assert frame["threshold"].iloc[i] == pytest.approx(expected, rel=1e-9), i


def test_thresholds_of_many_sensors_at_once_are_those_of_each_alone():
    """A scorer computes a chunk's thresholds together (rolling_eps); each sensor's must be exactly what it
    gets alone: series of any length (shorter than the history, empty), any start, bursts and spikes."""
    rng = np.random.default_rng(11)
    series = [bursts(seed, n) for seed, n in enumerate([80, 45, 120, 31, 60])]
    series[1:1] = [np.array([0.3, 0.1, 0.2]), np.empty(0), np.array([0.2, 0.4])]
    starts = [int(rng.integers(0, max(1, len(s)))) for s in series]
    together = thresholds.rolling_eps(series, 30, starts, smoothing=0.6, z_range=Z_CANDIDATES, fence=2.0)
    for losses, start, (smoothed, eps) in zip(series, starts, together):
        alone = rolling_dynamic_thresholds(
            by_end(losses), 1e-9, 30, smoothing=0.6, z_range=Z_CANDIDATES, fence=2.0, start=start
        )
        np.testing.assert_array_equal(smoothed, alone["smoothed"].to_numpy())
        np.testing.assert_array_equal(np.maximum(eps, 1e-9), alone["threshold"].to_numpy())


def test_rolling_eps_wants_finite_losses():
    with pytest.raises(ValueError, match="finite"):
        thresholds.rolling_eps([np.array([0.1, np.nan, 0.2])], 2, [0])


@pytest.mark.parametrize("k", [1, 2, 3])
def test_the_calibrated_values_raise_the_runs_the_scorers_rule_raises(k):
    """calibration.decided: a run of its values above any level is a run of the scorer's flags (smoothed loss
    above the level, K windows in a row, a missing interval breaking the run) above it, and no more."""
    from anomaly.calibration import decided
    from anomaly.runs import persistent, runs

    rng = np.random.default_rng(k)
    losses = rng.gamma(2.0, 0.1, 600)
    losses[rng.choice(600, 40, replace=False)] += rng.uniform(0.2, 2.0, 40)
    steps = np.cumsum(np.where(rng.random(600) < 0.03, 2, 1))  # a few intervals missing
    ends = pd.DatetimeIndex(pd.Timestamp("2026-01-01", tz="UTC") + steps * Q)
    values, at = decided(losses, ends, Q, thresholds.SMOOTHING, k)
    smoothed = smooth(losses, thresholds.SMOOTHING)
    for level in np.quantile(smoothed, [0.5, 0.8, 0.9, 0.95, 0.99]):
        flagged = persistent(ends, smoothed > level, k, Q)
        assert len(runs(values > level, at, Q)) == len(runs(flagged, ends, Q))
        assert at[values > level].equals(ends[flagged])


def test_training_calibrates_on_what_the_scorer_compares_not_on_raw_spikes():
    """One-window spikes of the raw loss, a few a week: the scorer's rule (smoothed, two windows in a row)
    sees each at well under half its height, and the threshold is set there, not at the spikes."""
    import model_trainer

    n, fitted = 4 * WEEK_OF_WINDOWS, 3 * WEEK_OF_WINDOWS
    rng = np.random.default_rng(3)
    wanted = rng.gamma(4.0, 0.025, n)  # about 0.1
    wanted[fitted + 7 :: 97] += 1.0  # seven single-window spikes in the held-out week

    def model(batch, training=False):
        """A stand-in whose loss for window i is wanted[i]: the windows carry their own index."""
        return batch + wanted[batch[:, 0, 0].astype(int)][:, None, None]

    windows = np.repeat(np.arange(n, dtype="float32"), 3).reshape(n, 3, 1)
    ends = by_end(np.zeros(n)).index
    prepared = model_trainer.Prepared(pd.Series(dtype=float), None, windows, ends, 0)
    plan = model_trainer.Plan(ends[0], ends[-1], Q, pd.Timedelta(hours=1))
    found = model_trainer.threshold(model, prepared, fitted, plan)
    assert found["calibration"]["smoothing"] == thresholds.SMOOTHING and found["calibration"]["min_consecutive"] == 2
    spikes = wanted[fitted + 7 :: 97]
    assert found["threshold"] < 0.5 * spikes.min()
    single = model_trainer.threshold(model, prepared, fitted, dataclasses.replace(plan, min_consecutive=1))
    assert found["threshold"] < single["threshold"]


def test_the_calibrated_values_are_the_smallest_smoothed_loss_of_k_windows_and_none_from_fewer():
    from anomaly.calibration import decided

    losses, ends = np.array([0.1, 0.9, 0.3, 0.5]), by_end([0, 0, 0, 0]).index
    smoothed = smooth(losses, 0.25)
    values, at = decided(losses, ends, Q, 0.25, 3)
    assert values.tolist() == [smoothed[:3].min(), smoothed[1:].min()] and at.equals(ends[2:])
    values, at = decided(losses[:3], ends[:3], Q, 0.25, 3)
    assert values.tolist() == [smoothed[:3].min()] and at.equals(ends[2:3])
    values, at = decided(losses[:2], ends[:2], Q, 0.25, 3)
    assert len(values) == 0 and len(at) == 0
    assert decided(losses, ends, Q, 1.0, 1)[0].tolist() == losses.tolist()  # no smoothing, one window: the losses
