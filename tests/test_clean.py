"""Tables of tiny series for clean.py: every expected value can be checked by eye.

Times are written as minutes after T0 (2026-01-01T00:00Z); the interval is 15 minutes.
"""

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import clean

T0 = pd.Timestamp("2026-01-01T00:00:00Z")
INTERVAL = pd.Timedelta(minutes=15)
nan = float("nan")


def at(minutes: list[float]) -> pd.DatetimeIndex:
    return pd.DatetimeIndex([T0 + pd.Timedelta(minutes=m) for m in minutes], tz="UTC")


def series(values: list, minutes: list[float] | None = None) -> pd.Series:
    """Readings at the given minutes after T0 (default: every 15 minutes from T0)."""
    if minutes is None:
        minutes = [15 * i for i in range(len(values))]
    return pd.Series(values, index=at(minutes), dtype=object if any(isinstance(v, str) for v in values) else "float64")


def minutes_of(index: pd.DatetimeIndex) -> list[float]:
    return [(t - T0) / pd.Timedelta(minutes=1) for t in index]


def assert_series(result: pd.Series, minutes: list[float], values: list[float]) -> None:
    assert str(result.index.tz) == "UTC"
    assert minutes_of(result.index) == minutes
    assert result.dtype == np.float64
    np.testing.assert_array_equal(result.to_numpy(), np.array(values, dtype="float64"))


# ---------------------------------------------------------------- validate_series


@pytest.mark.parametrize(
    "values, minutes, expected_minutes, expected",
    [
        pytest.param([3.0, 1.0, 2.0], [120, 0, 60], [0, 60, 120], [1.0, 2.0, 3.0], id="sorted"),
        pytest.param([1.0, 2.0, 9.0], [0, 60, 0], [0, 60], [9.0, 2.0], id="duplicate keeps last"),
        pytest.param([1.0, math.inf, -math.inf], [0, 15, 30], [0, 15, 30], [1.0, nan, nan], id="inf to NaN"),
        pytest.param(
            ["1.5", "x", None, 4], [0, 15, 30, 45], [0, 15, 30, 45], [1.5, nan, nan, 4.0], id="strings coerced"
        ),
        pytest.param([], [], [], [], id="empty"),
    ],
)
def test_validate_series(values, minutes, expected_minutes, expected):
    assert_series(clean.validate_series(series(values, minutes)), expected_minutes, expected)


def test_validate_series_converts_zone_to_utc():
    local = pd.Series(
        [1.0, 2.0], index=pd.DatetimeIndex(["2026-01-01T02:00", "2026-01-01T01:00"]).tz_localize("Europe/Oslo")
    )
    assert_series(clean.validate_series(local), [0, 60], [2.0, 1.0])


def test_validate_series_leaves_input_alone():
    raw = series([3.0, math.inf, 1.0], [30, 15, 30])
    clean.validate_series(raw)
    assert minutes_of(raw.index) == [30, 15, 30]
    assert raw.iloc[1] == math.inf


@pytest.mark.parametrize(
    "raw, match",
    [
        pytest.param(
            pd.Series([1.0, 2.0], index=pd.DatetimeIndex(["2026-01-01T00:00", "2026-01-01T00:15"])),
            r"^series index must be timezone-aware \(UTC\)$",
            id="naive",
        ),
        pytest.param(pd.Series([1.0, 2.0]), "DatetimeIndex, not RangeIndex", id="range index"),
        pytest.param(pd.Series([1.0], index=["2026-01-01T00:00Z"]), "DatetimeIndex, not Index", id="string index"),
    ],
)
def test_validate_series_rejects_index(raw, match):
    with pytest.raises(TypeError, match=match):
        clean.validate_series(raw)


# ---------------------------------------------------------------- regularize


@pytest.mark.parametrize(
    "values, minutes, start, stop, expected_minutes, expected",
    [
        pytest.param([1.0, 3.0], [0, 30], None, None, [0, 15, 30], [1.0, nan, 3.0], id="grid filled with NaN"),
        pytest.param([1.0, 2.0, 6.0, 8.0], [0, 5, 10, 20], None, None, [0, 15], [3.0, 8.0], id="off-grid averaged"),
        pytest.param(
            [1.0, 3.0], [0, 30], -15, 60, [-15, 0, 15, 30, 45], [nan, 1.0, nan, 3.0, nan], id="start and stop widen"
        ),
        pytest.param(
            [7.0, 1.0, 2.0, 9.0],
            [-30, 0, 45, 60],
            0,
            60,
            [0, 15, 30, 45],
            [1.0, nan, nan, 2.0],
            id="points outside start and stop dropped",
        ),
        pytest.param([], [], 0, 45, [0, 15, 30], [nan, nan, nan], id="empty with bounds"),
        pytest.param([], [], None, None, [], [], id="empty without bounds"),
        pytest.param([], [], 0, None, [], [], id="empty with a start only"),
        pytest.param([1.0, 2.0, 3.0], [0, 15, 30], None, 45, [0, 15, 30], [1.0, 2.0, 3.0], id="stop excluded"),
        pytest.param([1.0, 2.0, 3.0], [0, 15, 30], 0, 40, [0, 15, 30], [1.0, 2.0, 3.0], id="stop off the grid"),
    ],
)
def test_regularize(values, minutes, start, stop, expected_minutes, expected):
    bound = lambda m: None if m is None else T0 + pd.Timedelta(minutes=m)  # noqa: E731
    result = clean.regularize(series(values, minutes), INTERVAL, bound(start), bound(stop))
    assert_series(result, expected_minutes, expected)


def test_regular_validates_the_readings_as_read_and_fills_the_whole_read_range():
    raw = pd.Series(["2.0", 1.0, math.inf], index=at([15, 0, 30]).rename("time"))
    result = clean.regular(raw, INTERVAL, T0 - INTERVAL, T0 + 4 * INTERVAL)
    assert_series(result, [-15, 0, 15, 30, 45], [nan, 1.0, 2.0, nan, nan])
    assert result.index.name == "time"


# ---------------------------------------------------------------- fill_short_gaps


@pytest.mark.parametrize(
    "limit, values, expected",
    [
        pytest.param(1, [1, nan, 3], [1, 2, 3], id="one NaN filled"),
        pytest.param(2, [0, nan, nan, 3], [0, 1, 2, 3], id="run equal to limit filled"),
        pytest.param(1, [0, nan, nan, 3], [0, nan, nan, 3], id="run longer than limit kept"),
        pytest.param(1, [0, nan, 2, nan, nan, 5], [0, 1, 2, nan, nan, 5], id="short filled, long kept"),
        pytest.param(5, [nan, nan, 1, nan, 3, nan], [nan, nan, 1, 2, 3, nan], id="leading and trailing kept"),
        pytest.param(0, [1, nan, 3], [1, nan, 3], id="limit 0 fills nothing"),
        pytest.param(3, [1, 2], [1, 2], id="nothing missing"),
        pytest.param(3, [nan, nan], [nan, nan], id="all missing"),
    ],
)
def test_fill_short_gaps(limit, values, expected):
    raw = series(values)
    result = clean.fill_short_gaps(raw, limit)
    assert_series(result, minutes_of(raw.index), expected)
    np.testing.assert_array_equal(raw.to_numpy(), np.array(values, dtype="float64"))  # input untouched
    # fillable, the scorer's check of many series at once, says whether fill_short_gaps fills anything.
    fills = clean.fillable(np.array([values], dtype="float64"), limit)
    assert fills.dtype == bool and fills.tolist() == [not result.equals(raw)]


# ---------------------------------------------------------------- make_windows


@pytest.mark.parametrize(
    "values, window, expected",
    [
        pytest.param([1, 2, 3, 4], 2, [[1, 2], [2, 3], [3, 4]], id="window 2"),
        pytest.param([1, 2, 3, 4], 4, [[1, 2, 3, 4]], id="window equals length"),
        pytest.param([1, 2, 3], 1, [[1], [2], [3]], id="window 1"),
    ],
)
def test_make_windows(values, window, expected):
    windows = clean.make_windows(np.array(values), window)
    assert windows.shape == (len(values) - window + 1, window, 1)
    assert windows.dtype == np.float32
    assert windows[:, :, 0].tolist() == expected


@pytest.mark.parametrize(
    "values, window, match",
    [
        pytest.param([1, 2], 3, "need at least 3 values to build one window of 3, got 2", id="too short"),
        pytest.param([], 1, "need at least 1 values", id="empty"),
        pytest.param([1, 2, 3], 0, "window of 0", id="window 0"),
        pytest.param([[1, 2], [3, 4]], 2, r"one-dimensional, got shape \(2, 2\)", id="two-dimensional"),
    ],
)
def test_make_windows_rejects(values, window, match):
    with pytest.raises(ValueError, match=match):
        clean.make_windows(np.array(values), window)


# ---------------------------------------------------------------- windows_without_gaps


@pytest.mark.parametrize(
    "values, window, expected, end_minutes",
    [
        pytest.param([1, 2, nan, 4, 5, 6], 2, [[1, 2], [4, 5], [5, 6]], [15, 60, 75], id="window 2 skips the NaN"),
        pytest.param([1, 2, nan, 4, 5, 6], 3, [[4, 5, 6]], [75], id="window 3"),
        pytest.param([1, 2, nan, 4, 5, 6], 4, [], [], id="no stretch long enough"),
        pytest.param([1, 2], 3, [], [], id="shorter than window"),
        pytest.param([], 3, [], [], id="empty"),
        pytest.param([1, 2, 3], 3, [[1, 2, 3]], [30], id="exactly one"),
    ],
)
def test_windows_without_gaps(values, window, expected, end_minutes):
    windows, ends = clean.windows_without_gaps(series(values), window)
    assert windows.shape == (len(expected), window, 1) and windows.dtype == np.float32
    assert windows[:, :, 0].tolist() == expected
    assert minutes_of(ends) == end_minutes


@settings(max_examples=200, deadline=None)
@given(values=st.lists(st.one_of(st.none(), st.floats(-1e6, 1e6)), max_size=40), window=st.integers(1, 6))
def test_windows_without_gaps_never_cross_a_gap(values, window):
    raw = series([nan if v is None else v for v in values])
    windows, ends = clean.windows_without_gaps(raw, window)
    present = raw.notna().to_numpy()
    full_ends = [i for i in range(window - 1, len(raw)) if present[i - window + 1 : i + 1].all()]
    assert not np.isnan(windows).any()
    assert list(ends) == [raw.index[i] for i in full_ends]
    for window_values, i in zip(windows[:, :, 0], full_ends):
        np.testing.assert_array_equal(window_values, raw.to_numpy()[i - window + 1 : i + 1].astype("float32"))


# ---------------------------------------------------------------- unusable_reason


@pytest.mark.parametrize(
    "values, window, min_windows, expected",
    [
        pytest.param([], 2, 1, "no data in the training range", id="empty"),
        pytest.param([nan, nan], 2, 1, "no data in the training range", id="all NaN"),
        pytest.param([5, 5, nan, 5], 2, 1, "constant value 5 in the training range", id="constant"),
        pytest.param([nan, 5.5], 2, 1, "constant value 5.5 in the training range", id="a single reading"),
        pytest.param(
            [1, 2, nan, 3, 4], 2, 3, "too little data: 2 windows of 2 without gaps, need 3", id="too few windows"
        ),
        pytest.param([1, 2, nan, 3, 4], 2, 2, None, id="ok"),
    ],
)
def test_unusable_reason(values, window, min_windows, expected):
    assert clean.unusable_reason(series(values), window, min_windows) == expected


# ---------------------------------------------------------------- scaling and labels


def test_fit_scaler_ignores_nan_and_scale_keeps_index_and_nan():
    raw = series([1, 3, nan, 5]).rename("s1")
    scaler = clean.fit_scaler(raw)
    assert scaler.mean_.tolist() == [3.0]
    assert scaler.scale_.tolist() == pytest.approx([math.sqrt(8 / 3)])
    scaled = clean.standardize(raw, float(scaler.mean_[0]), float(scaler.scale_[0]))
    assert scaled.name == "s1"
    assert scaled.index.equals(raw.index)
    np.testing.assert_allclose(scaled.to_numpy(), [-1.224744871391589, 0.0, nan, 1.224744871391589])
    back = scaler.inverse_transform(scaled.to_numpy().reshape(-1, 1)).ravel()
    np.testing.assert_allclose(back, [1, 3, nan, 5])


def test_standardize_clips_absurd_readings_on_both_sides():
    scaled = clean.standardize(series([1e300, -1e300, 4.0]), mean=2.0, scale=0.5)
    assert scaled.tolist() == [clean.MAX_STANDARDIZED, -clean.MAX_STANDARDIZED, 4.0]


@pytest.mark.parametrize(
    "values, flat, missing",
    [
        pytest.param([1, 2, 2, 2, 3], [1, 1, 2, 3, 1], [0, 0, 0, 0, 0], id="a run of three"),
        pytest.param([4, 4, nan, 4, 4], [1, 2, 0, 1, 2], [0, 0, 1, 0, 0], id="a gap ends a run"),
        pytest.param([nan, nan, 7, nan], [0, 0, 1, 0], [1, 2, 0, 1], id="no reading: no flat run"),
        pytest.param([], [], [], id="no intervals"),
    ],
)
def test_flat_and_missing_run_lengths(values, flat, missing):
    assert clean.flat_run_lengths(np.array(values, dtype=float)).tolist() == flat
    assert clean.missing_run_lengths(np.array(values, dtype=float)).tolist() == missing


@pytest.mark.parametrize(
    "labelled, expected",
    [
        pytest.param([15, 45], [1, nan, 3], id="labelled interval blanked, unknown ignored"),
        pytest.param([], [1, 2, 3], id="nothing labelled"),
        pytest.param([0, 15, 30], [nan, nan, nan], id="all labelled"),
    ],
)
def test_drop_intervals(labelled, expected):
    raw = series([1, 2, 3])
    assert_series(clean.drop_intervals(raw, at(labelled)), [0, 15, 30], expected)


# ---------------------------------------------------------------- fill_short_gaps properties


def nan_runs(values: np.ndarray) -> list[tuple[int, int]]:
    """(first, stop) of every run of NaN."""
    runs, i = [], 0
    while i < len(values):
        if np.isnan(values[i]):
            j = i
            while j < len(values) and np.isnan(values[j]):
                j += 1
            runs.append((i, j))
            i = j
        else:
            i += 1
    return runs


@settings(max_examples=200, deadline=None)
@given(values=st.lists(st.one_of(st.none(), st.floats(-1e6, 1e6)), max_size=40), limit=st.integers(0, 5))
def test_fill_short_gaps_keeps_readings_and_long_gaps(values, limit):
    raw = series([nan if v is None else v for v in values])
    before = raw.to_numpy()
    after = clean.fill_short_gaps(raw, limit).to_numpy()
    present = ~np.isnan(before)
    np.testing.assert_array_equal(after[present], before[present])
    for first, stop in nan_runs(before):
        inside = first > 0 and stop < len(before)
        if inside and stop - first <= limit:
            assert not np.isnan(after[first:stop]).any(), (first, stop)
        else:
            assert np.isnan(after[first:stop]).all(), (first, stop)
