"""Properties that must hold for any input: validation, regular grids, windows, scaling, the config parser.

These complement the tables in test_clean.py and test_config.py (whose own properties cover
windows_without_gaps and fill_short_gaps) with hypothesis-generated input, including the junk a
sensor or a person can produce: strings, booleans, infinities, huge numbers, broken or deeply nested JSON.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

import clean
from anomaly import sensor_config
from anomaly.errors import ConfigError

T0 = pd.Timestamp("2026-01-01T00:00:00Z")
INTERVAL = pd.Timedelta(minutes=15)
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

junk = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(10**20), 10**20),
    st.booleans(),
    st.none(),
    st.text(max_size=5),
    st.sampled_from(["1.5", "-2e3", "nan", "inf", " 7 "]),
)


# ---------------------------------------------------------------- validate_series and regularize


@SETTINGS
@given(points=st.lists(st.tuples(st.integers(0, 2000), junk), max_size=40))
def test_validate_series_gives_sorted_unique_float_or_nan(points):
    index = pd.DatetimeIndex([T0 + pd.Timedelta(minutes=m) for m, _ in points], tz="UTC")
    raw = pd.Series([v for _, v in points], index=index, dtype=object)
    result = clean.validate_series(raw)
    assert result.dtype == np.float64
    assert result.index.is_monotonic_increasing and result.index.is_unique
    assert not np.isinf(result.to_numpy()).any()
    assert set(result.index) == set(index)
    last = {m: v for m, v in points}  # a duplicate time keeps the last value written
    for minute, value in last.items():
        got = result[T0 + pd.Timedelta(minutes=minute)]
        if isinstance(value, float) and math.isfinite(value):
            assert got == value
        elif value is None or isinstance(value, float):
            assert math.isnan(got)


@SETTINGS
@given(points=st.lists(st.tuples(st.integers(-3000, 3000), st.floats(-1e6, 1e6)), min_size=1, max_size=40))
def test_regularize_puts_every_point_in_its_interval_on_a_regular_grid(points):
    index = pd.DatetimeIndex([T0 + pd.Timedelta(seconds=30 * s) for s, _ in points], tz="UTC")
    raw = clean.validate_series(pd.Series([v for _, v in points], index=index))
    result = clean.regularize(raw, INTERVAL)
    assert ((result.index[1:] - result.index[:-1]) == INTERVAL).all()
    assert result.index[0] == raw.index.min().floor(INTERVAL) and result.index[-1] == raw.index.max().floor(INTERVAL)
    expected = raw.groupby(raw.index.floor(INTERVAL)).mean()
    np.testing.assert_allclose(result.reindex(expected.index).to_numpy(), expected.to_numpy(), rtol=1e-12, atol=1e-9)
    assert result.drop(expected.index).isna().all()  # an interval without a point is a gap, never made up


# ---------------------------------------------------------------- make_windows


@SETTINGS
@given(values=st.lists(st.floats(-1e6, 1e6), max_size=60), window=st.integers(-2, 70))
def test_make_windows_shape_and_content(values, window):
    array = np.array(values, dtype="float64")
    if 1 <= window <= len(values):
        windows = clean.make_windows(array, window)
        assert windows.shape == (len(values) - window + 1, window, 1) and windows.dtype == np.float32
        for start in range(len(windows)):
            np.testing.assert_array_equal(windows[start, :, 0], array[start : start + window].astype("float32"))
        windows[...] = 0  # a copy: the caller may change it without touching the series
        assert array.tolist() == values
    else:
        with pytest.raises(ValueError, match=f"need at least {window} values to build one window of {window}"):
            clean.make_windows(array, window)


# ---------------------------------------------------------------- scaling


@SETTINGS
@given(values=st.lists(st.one_of(st.none(), st.floats(-1e9, 1e9)), min_size=2, max_size=50))
def test_scaling_round_trips_and_standardizes(values):
    raw = pd.Series(
        [math.nan if v is None else v for v in values],
        index=pd.date_range(T0, periods=len(values), freq=INTERVAL),
        name="s1",
    )
    present = raw.dropna()
    if present.nunique() < 2 or present.std(ddof=0) < 1e-6 * max(1.0, present.abs().max()):
        return  # constant (or nearly): training skips such a sensor before it scales
    scaler = clean.fit_scaler(raw)
    mean, scale = float(scaler.mean_[0]), float(scaler.scale_[0])
    scaled = clean.standardize(raw, mean, scale)
    assert scaled.index.equals(raw.index) and scaled.name == "s1"
    assert scaled.isna().equals(raw.isna())
    np.testing.assert_allclose(
        scaled.to_numpy(), scaler.transform(raw.to_numpy().reshape(-1, 1)).ravel(), rtol=1e-9, atol=1e-12
    )
    assert abs(scaled.mean()) < 1e-6 and abs(scaled.std(ddof=0) - 1) < 1e-6
    np.testing.assert_allclose(
        scaled.to_numpy() * scale + mean, raw.to_numpy(), rtol=1e-9, atol=1e-9 * present.abs().max()
    )


# Counting windows casts the raw readings to float32, which overflows (harmlessly) beyond 3.4e38.
@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")
@SETTINGS
@given(values=st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=2, max_size=30))
def test_unusable_reason_accepts_only_what_can_be_standardized(values):
    """Whatever the readings, a series either gets a reason not to train or scales to finite values."""
    raw = pd.Series(values, index=pd.date_range(T0, periods=len(values), freq=INTERVAL))
    if clean.unusable_reason(raw, window=2, min_windows=1) is None:
        scaler = clean.fit_scaler(raw)
        assert math.isfinite(scaler.mean_[0]) and math.isfinite(scaler.scale_[0]) and scaler.scale_[0] > 0
        assert np.isfinite(clean.standardize(raw, scaler.mean_[0], scaler.scale_[0])).all()


# ---------------------------------------------------------------- the JSON config parser


json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(10**30), 10**30),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=8),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
json_texts = st.one_of(
    st.text(max_size=200),
    json_values.map(json.dumps),
    st.dictionaries(st.text(max_size=10), json_values, max_size=8).map(json.dumps),
    st.tuples(
        st.dictionaries(st.text(max_size=10), json_values, min_size=1, max_size=8).map(json.dumps), st.integers(0, 200)
    ).map(lambda pair: pair[0][: pair[1]]),  # truncated
    st.tuples(st.sampled_from(["[", '{"a": ', '{"a": [']), st.integers(1, 200_000)).map(lambda p: p[0] * p[1]),
    st.integers(1, 6000).map(lambda digits: '{"s1": ' + "7" * digits + "}"),
    st.binary(max_size=100),
)


@pytest.fixture(scope="module")
def config_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("config-properties")


@SETTINGS
@example(text="[" * 100_000)
@example(text='{"s1": ' + "1" * 5000 + "}")
@example(text=b"\xff\xfe{}")
@given(text=json_texts)
def test_config_parser_raises_only_config_errors(config_dir, text):
    ratios, windows = config_dir / "ratios.json", config_dir / "windows.json"
    for path in (ratios, windows):
        path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8", "surrogatepass"))
    try:
        parsed = sensor_config.load_sensor_config(ratios, windows)
    except ConfigError as e:
        assert str(e).startswith(f"{ratios}: ") or str(e).startswith(f"{windows}: ")
        return
    for value in [*parsed.ratios.values(), parsed.default_ratio]:
        assert type(value) is float and 0 < value < math.inf
    for value in [*parsed.windows.values(), parsed.default_window]:
        assert type(value) is int and value >= 2


@SETTINGS
@given(
    ratios=st.dictionaries(st.text(max_size=12), st.floats(1e-300, 1e300) | st.integers(1, 10**6), max_size=20),
    windows=st.dictionaries(st.text(max_size=12), st.integers(2, 10**6), max_size=20),
)
def test_config_parser_keeps_every_valid_entry(config_dir, ratios, windows):
    ratios_path, windows_path = config_dir / "valid-ratios.json", config_dir / "valid-windows.json"
    ratios_path.write_text(json.dumps(ratios), encoding="utf-8")
    windows_path.write_text(json.dumps(windows), encoding="utf-8")
    parsed = sensor_config.load_sensor_config(ratios_path, windows_path)
    for key, value in ratios.items():
        assert parsed.ratio(key) == float(value)
    for key, value in windows.items():
        assert parsed.window(key) == value
    assert parsed.ratio("\x00 not listed") == float(ratios.get("default", sensor_config.DEFAULT_RATIO))
    assert parsed.window("\x00 not listed") == windows.get("default", sensor_config.DEFAULT_WINDOW)
