"""thresholds.py on small sequences whose answers can be checked by hand.

The hand-checked history is a tiled day of [0.1, 0.2, 0.3, 0.2]: mean 0.2, std sqrt(0.005) = 0.0707, so the
smallest candidate (z = 2.5) is 0.3768, above every loss in it: no candidate is eligible and eps is that
smallest candidate.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from anomaly import thresholds
from anomaly.thresholds import (
    dynamic_threshold,
    history_needed,
    rolling_dynamic_flags,
    rolling_dynamic_thresholds,
    smooth,
)

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


def test_windows_before_min_history_get_the_floor():
    losses = np.abs(np.random.default_rng(5).normal(0.3, 0.05, 60))
    frame = rolling_dynamic_thresholds(by_end(losses), 0.01, history=30, min_history=10)
    assert (frame["threshold"].iloc[:10] == 0.01).all() and (frame["threshold"].iloc[10:] > 0.01).all()


@pytest.mark.parametrize(
    "losses, smoothing, expected",
    [
        ([0, 1, 1], 1, [0, 1, 1]),
        ([0, 1, 1], 0.5, [0, 0.5 / 0.75, 0.75 / 0.875]),
        ([2, 2, 2, 2], 0.3, [2, 2, 2, 2]),
    ],
)
def test_smooth(losses, smoothing, expected):
    assert smooth(np.array(losses, dtype=float), smoothing) == pytest.approx(expected)


@pytest.mark.parametrize("smoothing, span", [(1, 1), (0.5, 10), (0.3, 20)])
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
        ({"history": 1}, ValueError, "history must be"),
        ({"history": 10, "min_history": 11}, ValueError, "min_history"),
        ({"losses": by_end([0.1, float("nan"), 0.2])}, ValueError, "finite"),
        ({"losses": by_end([0.1, 0.2, 0.3]).iloc[::-1]}, ValueError, "sorted"),
        ({"losses": pd.Series([0.1, 0.2, 0.3])}, TypeError, "DatetimeIndex"),
    ],
)
def test_bad_arguments_raise(kwargs, error, match):
    arguments = {"losses": by_end([0.1, 0.2, 0.3]), "floor": 0.5, "history": 2, **kwargs}
    with pytest.raises(error, match=match):
        rolling_dynamic_flags(**arguments)


def test_dynamic_threshold_wants_a_one_dimensional_finite_history():
    with pytest.raises(ValueError, match=r"shape \[n\]"):
        dynamic_threshold(np.ones((3, 2)), 0.5)
    with pytest.raises(ValueError, match="finite"):
        dynamic_threshold(np.array([0.1, np.inf]), 0.5)
