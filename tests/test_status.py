"""sensor_status.py: small tables for the pure shaping (anomaly/status.py, anomaly/status_models.py,
anomaly/table.py), then the script run as a process after both jobs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import rows, run_job

import sensor_status
from anomaly import status as st
from anomaly import status_models, store, table
from anomaly.metadata import FORMAT_VERSION
from anomaly.sensor_config import SensorConfig
from tools import local_influxd, sensor_data

NOW = pd.Timestamp("2026-01-15T00:00:00Z")
INTERVAL = pd.Timedelta(minutes=15)
HEADERS = [header for header, _ in table.COLUMNS]
LIMITS = st.Limits(
    stale_after=pd.Timedelta(hours=1), unscored_after=pd.Timedelta(hours=1), old_model_after=pd.Timedelta(days=35)
)
LOOKBACK = pd.Timedelta(days=7)
CONFIG = SensorConfig({"b": 2.0}, {"c": 20})


def metadata(sensor_id: str, **changes) -> dict:
    record = {
        "sensor_id": sensor_id,
        "window": 15,
        "interval_s": 900,
        "threshold": 0.125,
        "scaler": {"mean": 20.5, "scale": 3.0},
        "trained_at": "2026-01-03T00:00:00Z",
        "training_range": {"start": "2025-10-16T00:00:00Z", "stop": "2026-01-03T00:00:00Z"},
    }
    record.update(changes)
    return {k: v for k, v in record.items() if v is not ...}


def model(sensor_id: str, **changes) -> status_models.ModelInfo:
    return status_models.model_info(store.sensor_dir(Path(), sensor_id).name, metadata(sensor_id, **changes))


def damaged(directory: str, sensor_id: str | None = None) -> status_models.ModelInfo:
    return status_models.ModelInfo(directory, sensor_id, problem="broken")


# ---------------------------------------------------------------- model_info


def test_model_info_reads_what_the_status_shows():
    info = model("a")
    assert info.problem is None and info.sensor_id == "a"
    assert (info.window, info.interval, info.threshold) == (15, INTERVAL, 0.125)
    assert info.trained_at == pd.Timestamp("2026-01-03T00:00:00Z")
    assert (info.training_start, info.training_stop) == (
        pd.Timestamp("2025-10-16T00:00:00Z"),
        pd.Timestamp("2026-01-03T00:00:00Z"),
    )


@pytest.mark.parametrize(
    "changes, problem",
    [
        ({"window": ...}, "window None"),
        ({"window": "15"}, "window '15'"),
        ({"window": True}, "window True"),
        ({"interval_s": 0}, "interval_s 0"),
        ({"threshold": float("nan")}, "threshold nan"),
        ({"threshold": None}, "threshold None"),
        ({"scaler": {"mean": 1.0}}, "scaler {'mean': 1.0}"),
    ],
)
def test_model_info_calls_a_field_the_scorer_needs_damaged_and_names_it(changes, problem):
    info = model("a", **changes)
    assert info.sensor_id == "a" and info.window is None
    assert f"metadata.json has {problem}" in info.problem


@pytest.mark.parametrize(
    "changes, age, training",
    [
        ({"trained_at": "2026-01-03 00:00"}, "-", "2025-10-16..2026-01-03"),  # no zone
        ({"trained_at": "yesterday"}, "-", "2025-10-16..2026-01-03"),
        ({"trained_at": ...}, "-", "2025-10-16..2026-01-03"),
        ({"training_range": {"start": "2025-10-16T00:00:00Z"}}, "12d", "2025-10-16..?"),
        ({"training_range": ...}, "12d", "?..?"),
    ],
)
def test_model_info_leaves_out_unreadable_fields_that_are_only_shown(changes, age, training):
    info = model("a", **changes)
    assert info.problem is None and info.window == 15
    (row,) = st.build_rows([("a", info)], CONFIG, INTERVAL, NOW, LIMITS, st.Found())
    cells = dict(zip(HEADERS, table.table_cells(row, NOW, LOOKBACK)))
    assert (cells["model"], cells["training range"]) == (age, training)


CALIBRATION = {"alarm_budget": 0.5, "alarms_per_week": 0.375, "windows": 600, "weeks": 6.25, "peaks": 9}


@pytest.mark.parametrize(
    "changes, rate, cell",
    [
        ({"calibration": CALIBRATION}, 0.375, "0.38"),
        ({"calibration": dict(CALIBRATION, alarms_per_week=0)}, 0.0, "0.00"),
        ({}, None, "-"),  # trained before thresholds were calibrated, or with --alarm-budget 0
        ({"calibration": {"alarm_budget": 0.5}}, None, "-"),
        ({"calibration": dict(CALIBRATION, alarms_per_week="many")}, None, "-"),
    ],
)
def test_the_expected_alarm_rate_comes_from_the_models_calibration(changes, rate, cell):
    info = model("a", **changes)
    assert info.problem is None and info.alarms_per_week == rate
    (row,) = st.build_rows([("a", info)], CONFIG, INTERVAL, NOW, LIMITS, st.Found())
    assert dict(zip(HEADERS, table.table_cells(row, NOW, LOOKBACK)))["alarms"] == cell
    assert st.row_json(row)["alarms_per_week"] == rate


def test_model_info_without_a_sensor_id_or_in_another_sensors_directory_names_no_sensor():
    assert status_models.model_info("x-1", metadata(...)).sensor_id is None
    moved = status_models.model_info(store.sensor_dir(Path(), "b").name, metadata("a"))
    assert moved.sensor_id is None
    assert "names sensor 'a'" in moved.problem and store.sensor_dir(Path(), "a").name in moved.problem


# ---------------------------------------------------------------- status rules

OLD = NOW - pd.Timedelta(hours=1, seconds=1)
RECENT = NOW - pd.Timedelta(hours=1)


@pytest.mark.parametrize(
    "info, changed, reading, scored, word",
    [
        (model("a"), False, RECENT, RECENT, st.OK),
        (model("a"), False, NOW + pd.Timedelta(days=1), NOW, st.OK),  # a reading from the future is not stale
        (model("a"), False, OLD, RECENT, st.STALE),
        (model("a"), False, None, RECENT, st.STALE),
        (model("a"), False, RECENT, OLD, st.UNSCORED),
        (model("a"), False, RECENT, None, st.UNSCORED),
        (model("a"), False, OLD, None, st.STALE),  # stale data explains the missing scores
        (model("a"), True, OLD, None, st.WINDOW_CHANGED),  # the scorer skips it whatever its data
        (None, False, RECENT, RECENT, st.NO_MODEL),
        (None, False, None, None, st.NO_MODEL),
        (damaged("d", "a"), False, RECENT, RECENT, st.DAMAGED),
    ],
)
def test_status_word_is_the_first_that_applies(info, changed, reading, scored, word):
    assert st.sensor_status(info, changed, reading, scored, NOW, LIMITS) == word


# ---------------------------------------------------------------- which sensors


def _ids(selected):
    return [(sensor_id, m.directory if m else None) for sensor_id, m in selected]


def test_sensors_are_those_with_a_model_and_those_found_sorted():
    a, b = model("a"), model("b")
    selected = st.select_sensors([b, a], ["c", "a"], [], None)
    assert _ids(selected) == [("a", a.directory), ("b", b.directory), ("c", None)]


def test_a_damaged_model_is_matched_to_its_sensor_by_directory_or_listed_by_directory():
    named = damaged(store.sensor_dir(Path(), "c").name)
    stray = damaged("zz-000000000000")
    selected = st.select_sensors([stray, named, model("a")], ["a", "c"], [], None)
    assert _ids(selected) == [("a", model("a").directory), ("c", named.directory), (None, stray.directory)]


def test_requested_sensors_are_exactly_those_shown():
    stray = damaged("zz-000000000000")
    selected = st.select_sensors([model("a"), model("b"), stray], ["a", "b", "c"], ["b", "x", "b"], None)
    assert _ids(selected) == [("b", model("b").directory), ("x", None)]


def test_shards_split_the_named_sensors_and_each_shows_the_unnamed_damaged_models():
    ids = [f"s{k}" for k in range(20)]
    stray = damaged("zz-000000000000")
    parts = [st.select_sensors([stray], ids, [], (k, 3)) for k in (1, 2, 3)]
    named = [{s for s, _ in part if s is not None} for part in parts]
    assert set().union(*named) == set(ids) and sum(map(len, named)) == len(ids)
    assert all(part[-1] == (None, stray) for part in parts)


def test_with_where_a_model_not_found_in_influxdb_is_of_another_site():
    selected = st.select_sensors([model("a"), model("b")], ["b"], [], None, only_found=True)
    assert _ids(selected) == [("b", model("b").directory)]


# ---------------------------------------------------------------- rows and summary


def _rows(
    selected, scored=None, readings=None, day=None, week=None, interval=INTERVAL, missing_day=None, missing_week=None
):
    found = st.Found(scored or {}, readings or {}, day or {}, week or {}, missing_day or {}, missing_week or {})
    return st.build_rows(selected, CONFIG, interval, NOW, LIMITS, found)


def test_rows_join_models_configuration_and_query_results():
    selected = [
        ("a", model("a")),
        ("b", model("b")),
        ("c", model("c")),
        ("d", None),
        ("e", damaged("e-x", "e")),
        (None, damaged("zz")),
    ]
    fresh = NOW - INTERVAL
    everyone = {s: fresh for s in "abcde"}
    result = _rows(
        selected, everyone, everyone, {"b": 3}, {"b": 5, "a": 1}, missing_day={"a": 4}, missing_week={"a": 9, "c": 2}
    )
    assert [(r.sensor_id, r.status) for r in result] == [
        ("a", st.OK),
        ("b", st.OK),
        ("c", st.WINDOW_CHANGED),
        ("d", st.NO_MODEL),
        ("e", st.DAMAGED),
        (None, st.DAMAGED),
    ]
    a, b, c = result[:3]
    assert (a.ratio, a.effective_threshold, a.anomalies_24h, a.anomalies_7d) == (1.0, 0.125, 0, 1)
    assert (b.ratio, b.effective_threshold, b.anomalies_24h, b.anomalies_7d) == (2.0, 0.25, 3, 5)
    assert (c.configured_window, c.usable.window) == (20, 15)
    assert result[3].effective_threshold is None and result[4].usable is None
    assert [(r.missing_24h, r.missing_7d) for r in result] == [(4, 9), (0, 0), (0, 2), (0, 0), (0, 0), (None, None)]


def test_a_model_of_another_interval_counts_as_a_changed_window():
    (row,) = _rows([("a", model("a"))], {"a": NOW}, {"a": NOW}, interval=pd.Timedelta(minutes=5))
    assert row.status == st.WINDOW_CHANGED
    assert table.table_cells(row, NOW, LOOKBACK)[3] == "15x15m->15x5m"


def test_summary_counts_statuses_old_models_and_anomalous_sensors():
    selected = [
        ("a", model("a", trained_at="2025-12-11T00:00:00Z")),  # exactly 35 days: not older
        ("b", model("b", trained_at="2025-12-10T23:59:59Z")),
        ("c", None),
        (
            "d",
            damaged(
                "d-x",
                "d",
            ),
        ),
    ]
    result = _rows(
        selected,
        {"a": NOW, "b": NOW},
        {"a": NOW},
        {"a": 2, "c": 1},
        {"a": 4, "c": 1, "b": 7},
        missing_day={"b": 12},
        missing_week={"b": 20, "a": 3},
    )
    summary = st.summarize(result, NOW, LIMITS, LOOKBACK)
    assert summary["status"] == {
        st.OK: 1,
        st.STALE: 1,
        st.UNSCORED: 0,
        st.NO_MODEL: 1,
        st.DAMAGED: 1,
        st.WINDOW_CHANGED: 0,
    }
    assert summary["old_models"] == ["b"] and summary["old_model_after"] == "35d"
    assert summary["anomalous_24h"] == ["a", "c"]
    assert (summary["sensors"], summary["anomalies_24h"], summary["anomalies_7d"]) == (4, 3, 12)
    assert summary["missing_data_24h"] == ["b"]  # 'a' missed data earlier in the week only
    assert (summary["missing_24h"], summary["missing_7d"]) == (12, 23)
    assert summary["now"] == "2026-01-15T00:00:00Z" and summary["lookback"] == "7d"
    text = table.render_summary(result, summary)
    assert text.splitlines()[:4] == [
        "4 sensors: ok 1, stale data 1, not scored recently 0, no model 1, damaged model 1, window changed 0",
        "models older than 35d: 1: 'b'",
        "sensors with anomalies in the last 24h: 2: 'a', 'c' (3 anomalies; 12 in 7d)",
        "sensors with missing data in the last 24h: 1: 'b' (12 intervals missing; 23 in 7d)",
    ]
    assert "damaged model 'd': broken" in text


def test_summary_names_at_most_ten_sensors():
    selected = [(f"s{k:02}", None) for k in range(12)]
    result = _rows(selected, day={f"s{k:02}": 1 for k in range(12)})
    text = table.render_summary(result, st.summarize(result, NOW, LIMITS, LOOKBACK))
    assert "'s09' and 2 more" in text and "s10" not in text


# ---------------------------------------------------------------- text and JSON


@pytest.mark.parametrize(
    "seconds, text",
    [
        (0, "0s"),
        (59, "59s"),
        (60, "1m"),
        (3599, "59m"),
        (3600, "1h"),
        (86399, "23h"),
        (86400, "1d"),
        (12.5 * 86400, "12d"),
        (-300, "future"),  # Issue 11: was -5m; a time after --now is in the future, not a negative age
        (-300 * 86400, "future"),
        (-0.5, "0s"),
    ],
)
def test_format_age(seconds, text):
    assert table.format_age(pd.Timedelta(seconds=seconds)) == text


@pytest.mark.parametrize(
    "text, width, cut",
    [
        ("short", 10, "short"),
        ("exactly-10", 10, "exactly-10"),
        ("eleven-char", 10, "eleven-ch…"),
        ("日本語のセンサー", 7, "日本語…"),  # wide characters take two cells
        ("日本語のセンサー", 8, "日本語…"),
    ],
)
def test_truncate_counts_display_cells(text, width, cut):
    assert table.truncate(text, width) == cut
    assert table.display_width(cut) <= width


LONG = 'Boiler,2="hot" loop=ü with\ta very long name indeed'


def _table_rows():
    selected = [
        ("a", model("a", calibration=CALIBRATION)),
        ("c", model("c")),
        (LONG, None),
        (None, damaged("zz-000000000000")),
    ]
    return _rows(
        selected,
        {"a": NOW - INTERVAL},
        {"a": NOW - pd.Timedelta(minutes=5), "c": OLD},
        {"a": 2},
        {"a": 9},
        missing_day={"a": 3},
        missing_week={"a": 12, "c": 4},
    )


def test_the_table_is_aligned_fits_160_columns_and_cuts_long_ids():
    text = table.render_table(_table_rows(), NOW, LOOKBACK)
    title, header, a, c, long, stray = text.splitlines()
    assert "2026-01-15T00:00:00Z" in title
    assert max(map(len, text.splitlines()[1:])) <= 160
    assert a.split() == [
        "a",
        "ok",
        "12d",
        "15",
        "1",
        "0.125",
        "0.125",
        "0.38",
        "2025-10-16..2026-01-03",
        "2026-01-14",
        "23:45",
        "5m",
        "2",
        "9",
        "3/12",
    ]
    assert "15->20" in c and "window changed" in c and c.split()[-4:] == ["1h", "0", "0", "0/4"]
    assert c.split()[-7] == "-"  # no calibration: no expected alarm rate
    shown = long.split("  ")[0]
    assert shown.startswith('Boiler,2="hot" loop=ü with\\') and shown.endswith("…") and len(shown) == table.ID_WIDTH
    assert "no model" in long and ">7d" in long and LONG not in text
    assert stray.split() == ["(zz-000000000000)", "damaged", "model"] + ["-"] * 12
    body = (a, c, long, stray)
    for column in ("status", "training range", "last scored"):  # left-aligned: all cells start together
        at = header.index(column)
        assert all(line[at - 2 : at] == "  " and line[at] != " " for line in body), column
    for column in ("window", "threshold", "alarms", "24h", "7d", "missing"):  # right-aligned: cells end together
        end = header.index(column) + len(column)
        assert all(line[end - 1] != " " and line[end : end + 2] in ("  ", "") for line in body), column


def test_json_is_sorted_and_indented_with_rfc3339_times():
    result = _table_rows()
    text = st.render_json(result, st.summarize(result, NOW, LIMITS, LOOKBACK))
    document = json.loads(text)
    assert text == json.dumps(document, sort_keys=True, indent=2) + "\n"
    a, c, long, stray = document["sensors"]
    assert a == {
        "sensor_id": "a",
        "status": "ok",
        "directory": model("a").directory,
        "problem": None,
        "trained_at": "2026-01-03T00:00:00Z",
        "window": 15,
        "interval": "15m",
        "configured_window": 15,
        "configured_interval": "15m",
        "ratio": 1.0,
        "threshold": 0.125,
        "effective_threshold": 0.125,
        "training_range": {"start": "2025-10-16T00:00:00Z", "stop": "2026-01-03T00:00:00Z"},
        "last_scored": "2026-01-14T23:45:00Z",
        "last_reading": "2026-01-14T23:55:00Z",
        "alarms_per_week": 0.375,
        "anomalies_24h": 2,
        "anomalies_7d": 9,
        "missing_24h": 3,
        "missing_7d": 12,
    }
    assert (c["window"], c["configured_window"], c["status"]) == (15, 20, "window changed")
    assert long["sensor_id"] == LONG and long["window"] is None and long["last_reading"] is None
    assert (stray["sensor_id"], stray["problem"], stray["directory"]) == (None, "broken", "zz-000000000000")
    assert stray["anomalies_24h"] is None and stray["last_reading"] is None
    assert (stray["missing_24h"], stray["missing_7d"], stray["alarms_per_week"]) == (None, None, None)
    assert (c["alarms_per_week"], c["missing_24h"], c["missing_7d"]) == (None, 0, 4)
    assert document["summary"]["status"]["damaged model"] == 1
    assert document["summary"]["missing_data_24h"] == ["a"]
    assert (document["summary"]["missing_24h"], document["summary"]["missing_7d"]) == (3, 16)


# ---------------------------------------------------------------- the models directory


UNITS = 2  # LSTM units of the weights _write_model writes


def _write_model(models_dir: Path, sensor_id: str, **changes) -> Path:
    """A model directory as training commits it: weights the scorer can load, the other files stand-ins (the
    default engine reads neither), every checksum true."""
    directory = store.sensor_dir(models_dir, sensor_id)
    directory.mkdir(parents=True)
    files = {key: f"{key}-1.bin" for key in store.FILES}
    for name in files.values():
        (directory / name).write_bytes(b"x")
    shapes = {"encoder_kernel": (1, 4 * UNITS), "output_kernel": (UNITS, 1), "output_bias": (1,)}
    with open(directory / files["weights"], "wb") as f:
        np.savez(f, **{name: np.zeros(shapes.get(name, (UNITS, 4 * UNITS)), "float32") for name in store.WEIGHT_NAMES})
    record = dict(
        metadata(sensor_id),
        format_version=FORMAT_VERSION,
        files=files,
        sha256={key: store.sha256_file(directory / name) for key, name in files.items()},
    )
    record.update(changes)
    (directory / store.METADATA).write_text(json.dumps(record))
    return directory


def test_read_models_lists_usable_and_damaged_models_and_skips_the_rest(tmp_path):
    good = _write_model(tmp_path, "good")
    (_write_model(tmp_path, "truncated") / store.METADATA).write_text('{"sensor_id": "trunc')
    (_write_model(tmp_path, "no weights") / "weights-1.bin").unlink()
    _write_model(tmp_path, "future format", format_version=999)
    (_write_model(tmp_path, "uncommitted") / store.METADATA).unlink()
    # Issue 11: weights that fail their checksum fail every scoring run, yet the status called them ok.
    cut = _write_model(tmp_path, "cut weights") / "weights-1.bin"
    cut.write_bytes(cut.read_bytes()[:100])
    flipped = _write_model(tmp_path, "flipped weights") / "weights-1.bin"
    flipped.write_bytes(flipped.read_bytes()[:-1] + b"!")
    (tmp_path / "README").write_text("not a model")
    found = {m.directory: m for m in status_models.read_models(tmp_path, sensor_status.scorer_metadata)}
    assert len(found) == 6
    assert found[good.name].problem is None and found[good.name].sensor_id == "good"
    problems = {d.rsplit("-", 1)[0]: m.problem for d, m in found.items() if m.problem}
    assert "unreadable metadata" in problems["truncated"]
    assert "missing or damaged" in problems["no_weights"]
    assert "format version 999" in problems["future_format"]
    for name, path in (("cut weights", cut), ("flipped weights", flipped)):
        info = found[path.parent.name]
        assert (
            info.sensor_id == name
            and info.problem == f"{path}: missing or damaged (checksum mismatch); retrain this sensor"
        )
    assert status_models.read_models(tmp_path / "nowhere", sensor_status.scorer_metadata) == []


# ---------------------------------------------------------------- errors at the edges


def test_bad_configuration_exits_2(tmp_path):
    result = run_job(
        "sensor_status.py", ["--models-dir", str(tmp_path), "--lookback", "30m"], {"INFLUX_DATABASE": "x"}, tmp_path
    )
    assert result.returncode == 2 and result.stdout == ""
    assert "--lookback 30m must be at least --stale-after (1h)" in result.stderr


def test_an_unreachable_server_is_one_line_and_exit_1(tmp_path):
    port = local_influxd.free_port()
    result = run_job(
        "sensor_status.py",
        ["--retries", "0", "--models-dir", str(tmp_path)],
        {"INFLUX_URL": f"http://127.0.0.1:{port}", "INFLUX_DATABASE": "x"},
        tmp_path,
    )
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and f"cannot reach InfluxDB at http://127.0.0.1:{port}" in result.stderr


# ---------------------------------------------------------------- end to end

TRAINED = ["AHU-1 supply air temp", "chiller:3 'return'"]
UNTRAINED = 'Boiler,2="hot" loop=ü, a sensor with a very long name'
# Outages of TRAINED[0]'s data, longer than --max-gap: one in the last 24 h, one the day before (both scored).
GAPS = [
    (NOW - pd.Timedelta(hours=40), NOW - pd.Timedelta(hours=37)),
    (NOW - pd.Timedelta(hours=14), NOW - pd.Timedelta(hours=11)),
]


@pytest.fixture(scope="module")
def fleet(influxd, tmp_path_factory):
    """Two sensors trained and scored, one of them with two outages of its data, a third with data only.
    Returns (database, work directory, the flags every job gets, environment, metadata by sensor id)."""
    workdir = tmp_path_factory.mktemp("status")
    database = "status_fleet"
    local_influxd.query(influxd.url, f'CREATE DATABASE "{database}"')
    env = {"INFLUX_URL": influxd.url, "INFLUX_DATABASE": database}
    index = pd.date_range(NOW - pd.Timedelta(days=3), NOW, freq="15min", inclusive="left")
    lines = []
    for number, sensor_id in enumerate([*TRAINED, UNTRAINED]):
        values = pd.Series(sensor_data.normal_readings(sensor_id, index, number), index=index)
        if sensor_id == TRAINED[0]:
            for start, stop in GAPS:
                values = values[(values.index < start) | (values.index >= stop)]
        lines += sensor_data.readings_lines(sensor_id, values.index, values.to_numpy())
    local_influxd.write(influxd.url, database, lines)
    (workdir / "ratios.json").write_text(json.dumps({TRAINED[0]: 0.01}))  # flags nearly every window
    (workdir / "windows.json").write_text("{}")
    common = [
        "--models-dir",
        str(workdir / "models"),
        "--ratios",
        str(workdir / "ratios.json"),
        "--windows",
        str(workdir / "windows.json"),
        "--now",
        NOW.isoformat(),
    ]
    train = run_job(
        "sensor_training.py",
        [
            *common,
            "--start=-3d",
            "--units",
            "8",
            "--epochs",
            "2",
            "--seed",
            "1",
            "--jobs",
            "1",
            "--sensor",
            TRAINED[0],
            "--sensor",
            TRAINED[1],
        ],
        env,
        workdir,
    )
    assert train.returncode == 0, train.stderr
    predict = run_job(
        "sensor_predict.py",
        [*common, "--delay", "0s", "--first-run", "2d", "--no-cold-start", "--threshold", "fixed"],
        env,
        workdir,
    )
    assert predict.returncode == 0, predict.stderr
    saved = {}
    for path in (workdir / "models").glob("*/metadata.json"):
        record = json.loads(path.read_text())
        saved[record["sensor_id"]] = record
    assert sorted(saved) == sorted(TRAINED)
    return database, workdir, common, env, saved


def test_status_after_training_and_scoring(influxd, fleet):
    """The status of the fleet, with a stray damaged directory and a window changed, agrees with the models
    and the database."""
    database, workdir, common, env, saved = fleet
    stray = workdir / "models" / "stray-000000000000"
    stray.mkdir()
    (stray / "metadata.json").write_text("{")
    (workdir / "windows-now.json").write_text(json.dumps({TRAINED[1]: 20}))

    def status(*extra):
        args = [*common, "--windows", str(workdir / "windows-now.json"), *extra]
        result = run_job("sensor_status.py", args, env, workdir)
        assert result.returncode == 0, result.stderr
        assert "Traceback" not in result.stderr
        return result.stdout

    document = json.loads(status("--json"))
    by_id = {s["sensor_id"]: s for s in document["sensors"]}
    assert list(by_id) == [*sorted([*TRAINED, UNTRAINED]), None]
    scores = {
        tags["uniqueID"]: values
        for tags, values in rows(
            influxd.url, database, 'SELECT "anomaly", "kind" FROM "PREDICT_ANOMALY" GROUP BY "uniqueID"'
        )
    }
    for sensor_id in TRAINED:
        row, record = by_id[sensor_id], saved[sensor_id]
        assert (row["window"], row["interval"], row["threshold"]) == (record["window"], "15m", record["threshold"])
        assert row["training_range"] == {k: record["training_range"][k] for k in ("start", "stop")}
        assert row["trained_at"] == record["trained_at"]
        assert row["last_scored"] == "2026-01-14T23:45:00Z" and row["last_reading"] == "2026-01-14T23:45:00Z"
        flagged = [pd.Timestamp(t, unit="s", tz="UTC") for t, anomaly, _ in scores[sensor_id] if anomaly]
        assert row["anomalies_24h"] == sum(t >= NOW - pd.Timedelta(days=1) for t in flagged)
        assert row["anomalies_7d"] == len(flagged)
        missing = [pd.Timestamp(t, unit="s", tz="UTC") for t, _, kind in scores[sensor_id] if kind == "missing"]
        assert row["missing_24h"] == sum(t >= NOW - pd.Timedelta(days=1) for t in missing)
        assert row["missing_7d"] == len(missing)
        assert row["alarms_per_week"] == record.get("calibration", {}).get("alarms_per_week")
    assert any(by_id[s]["alarms_per_week"] is not None for s in TRAINED), "no model was calibrated"
    first, second = by_id[TRAINED[0]], by_id[TRAINED[1]]
    assert (first["status"], first["ratio"]) == ("ok", 0.01)
    assert first["effective_threshold"] == pytest.approx(0.01 * saved[TRAINED[0]]["threshold"])
    assert 0 < first["anomalies_24h"] < first["anomalies_7d"]  # scored two days back
    # Each outage is reported interval by interval, and is no anomaly: those intervals are not flagged.
    assert 0 < first["missing_24h"] < first["missing_7d"] and by_id[TRAINED[1]]["missing_7d"] == 0
    assert not [t for t, anomaly, kind in scores[TRAINED[0]] if kind == "missing" and anomaly]
    assert (second["status"], second["ratio"], second["configured_window"]) == ("window changed", 1.0, 20)
    untrained = by_id[UNTRAINED]
    assert (untrained["status"], untrained["window"], untrained["last_scored"]) == ("no model", None, None)
    assert untrained["last_reading"] == "2026-01-14T23:45:00Z"
    assert by_id[None]["status"] == "damaged model" and by_id[None]["directory"] == stray.name
    summary = document["summary"]
    assert summary["status"] == {
        "ok": 1,
        "stale data": 0,
        "not scored recently": 0,
        "no model": 1,
        "damaged model": 1,
        "window changed": 1,
    }
    assert summary["anomalous_24h"] == [s for s in TRAINED if by_id[s]["anomalies_24h"]]
    assert summary["missing_data_24h"] == [TRAINED[0]]
    assert (summary["missing_24h"], summary["missing_7d"]) == (first["missing_24h"], first["missing_7d"])

    text = status().splitlines()
    line = next(x for x in text if x.startswith(TRAINED[0]))
    age = table.format_age(NOW - pd.Timestamp(first["trained_at"]))  # training stamps the clock's time, not --now
    rate = first["alarms_per_week"]
    assert line.split()[4:13] == [
        "ok",
        age,
        "15",
        "0.01",
        f"{first['threshold']:.4g}",
        f"{first['effective_threshold']:.4g}",
        f"{rate:.2f}" if rate is not None else "-",
        "2026-01-12..2026-01-15",
        "2026-01-14",
    ]
    assert line.split()[-3:] == [
        str(first["anomalies_24h"]),
        str(first["anomalies_7d"]),
        f"{first['missing_24h']}/{first['missing_7d']}",
    ]
    assert "15->20" in next(x for x in text if x.startswith(TRAINED[1]))
    assert any(x.startswith(UNTRAINED[:20]) and "…" in x and "no model" in x for x in text)
    assert not any(UNTRAINED in x for x in text)
    summary_line = "4 sensors: ok 1, stale data 0, not scored recently 0, no model 1, damaged model 1, window changed 1"
    assert summary_line in text
    assert (
        f"sensors with missing data in the last 24h: 1: {TRAINED[0]!r} ({first['missing_24h']} intervals"
        in "\n".join(text)
    )

    later = json.loads(
        status("--json", "--now", (NOW + pd.Timedelta(minutes=40)).isoformat(), "--unscored-after", "30m")
    )
    assert by_id_status(later)[TRAINED[0]] == "not scored recently"
    much_later = json.loads(status("--json", "--now", (NOW + pd.Timedelta(hours=2)).isoformat()))
    assert by_id_status(much_later)[TRAINED[0]] == "stale data"
    assert by_id_status(much_later)[TRAINED[1]] == "window changed"
    elsewhere = json.loads(status("--json", "--where", "siteRef=Another Site"))  # models of this site are not listed
    assert by_id_status(elsewhere) == {None: "damaged model"}


def by_id_status(document):
    return {s["sensor_id"]: s["status"] for s in document["sensors"]}


def test_a_model_whose_weights_the_scorer_refuses_is_a_damaged_model(fleet, tmp_path):
    """Issue 11: weights cut short or changed fail every scoring run, yet the status called the sensor ok."""
    _, workdir, common, env, _ = fleet
    models = shutil.copytree(workdir / "models", tmp_path / "models")
    weights = {}
    for sensor_id in TRAINED:
        record = json.loads((store.sensor_dir(models, sensor_id) / store.METADATA).read_text())
        weights[sensor_id] = store.sensor_dir(models, sensor_id) / record["files"]["weights"]
    cut, changed = (weights[s] for s in TRAINED)
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    changed.write_bytes(changed.read_bytes()[:-1] + b"!")
    args = [*common, "--models-dir", str(models), *[f"--sensor={s}" for s in TRAINED]]
    scoring = run_job("sensor_predict.py", [*args, "--dry-run", "--health-measurement", ""], env, tmp_path)
    assert scoring.returncode == 1 and scoring.stdout == ""
    for sensor_id in TRAINED:
        problem = f"{weights[sensor_id]}: missing or damaged (checksum mismatch); retrain this sensor"
        assert f"sensor {sensor_id!r}: failed: {problem}" in scoring.stderr, scoring.stderr
    result = run_job("sensor_status.py", [*args, "--json"], env, tmp_path)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    by_id = {s["sensor_id"]: s for s in json.loads(result.stdout)["sensors"]}
    assert list(by_id) == TRAINED
    for sensor_id in TRAINED:
        assert by_id[sensor_id]["status"] == "damaged model"
        assert (
            by_id[sensor_id]["problem"]
            == f"{weights[sensor_id]}: missing or damaged (checksum mismatch); retrain this sensor"
        )
    text = run_job("sensor_status.py", args, env, tmp_path).stdout
    assert "2 sensors: ok 0, stale data 0, not scored recently 0, no model 0, damaged model 2, window changed 0" in text
    assert f"damaged model {TRAINED[0]!r}: {weights[TRAINED[0]]}: missing or damaged (checksum mismatch)" in text


def test_ages_after_now_read_future(fleet):
    """Issue 11: with --now before a model's training and its newest reading, their ages came out negative."""
    _, workdir, common, env, saved = fleet
    earlier = NOW - pd.Timedelta(hours=1)  # before the last reading and score (23:45) and the training
    assert pd.Timestamp(saved[TRAINED[0]]["trained_at"]) > earlier
    result = run_job("sensor_status.py", [*common, "--now", earlier.isoformat(), "--sensor", TRAINED[0]], env, workdir)
    assert result.returncode == 0, result.stderr
    line = next(x for x in result.stdout.splitlines() if x.startswith(TRAINED[0]))
    cells = line.split()
    assert (cells[4], cells[5], cells[-4]) == ("ok", "future", "future"), line  # status, model age, data age
    assert "2026-01-14 23:45" in line  # the last score is a time, shown as it is
