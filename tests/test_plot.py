"""sensor_plot.py and anomaly/plot.py: the pure helpers as small tables, the drawing in-process, and the whole
script as a process.

The score panel draws each window's score (loss / threshold) with a line at 1.0: the score written with the
point, or, for points written before the scorer wrote one, loss / threshold computed here.

End to end, a sensor with a four-hour drop to zero is trained (tiny settings) and scored against a real
InfluxDB 1.x, then drawn; the PNG is checked by its header and its pixels: the top panel holds flag-red
points only when windows were flagged. A sensor with readings and no model gets an empty-state picture
(exit 0, a warning naming the cause); an id with neither readings nor scores gets no picture (exit 1).
"""

from __future__ import annotations

import struct
from pathlib import Path

import matplotlib.image
import numpy as np
import pandas as pd
import pytest
from conftest import run_job

import influx_interact
import sensor_plot
from anomaly import plot, review, store
from anomaly.connection import Connection
from anomaly.errors import ConfigError
from anomaly.settings import Schema
from tools import local_influxd, sensor_data

INTERVAL = pd.Timedelta(minutes=15)
T = pd.Timestamp("2026-03-01T00:00:00Z")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
WIDTH, HEIGHT = (int(inches * plot.DPI) for inches in plot.FIGURE_SIZE_IN)


def at(*steps: int) -> pd.DatetimeIndex:
    return pd.DatetimeIndex([T + n * INTERVAL for n in steps])


# ---------------------------------------------------------------- pure helpers


@pytest.mark.parametrize(
    "steps, flags, spans",
    [
        ([0, 1, 2, 3, 4, 5], [0, 1, 1, 0, 1, 0], [(1, 3), (4, 5)]),
        ([0, 1, 2, 3], [1, 1, 1, 1], [(0, 4)]),
        ([0, 1, 3, 4], [1, 1, 1, 1], [(0, 2), (3, 5)]),  # a missing window ends a run
        ([0, 1, 2], [0, 0, 0], []),
        ([], [], []),
        ([0, 1, 2], [1, None, 1], [(0, 1), (2, 3)]),  # a missing flag is no flag
    ],
)
def test_flag_spans(steps, flags, spans):
    anomaly = pd.Series(flags, index=at(*steps), dtype="object")
    assert plot.flag_spans(anomaly, INTERVAL) == [(T + a * INTERVAL, T + b * INTERVAL) for a, b in spans]


def test_flags_whose_windows_share_a_reading_are_one_band():
    # windows of 3: t1 and t3 share the reading of t1 (one band, as one event); t7 shares none with t3
    anomaly = pd.Series([0, 1, 0, 1, 0, 0, 0, 1], index=at(*range(8)), dtype="object")
    assert plot.flag_spans(anomaly, INTERVAL, window=3) == [
        (T + INTERVAL, T + 4 * INTERVAL),
        (T + 7 * INTERVAL, T + 8 * INTERVAL),
    ]


@pytest.mark.parametrize(
    "loss, log",
    [
        ([0.1, 0.2, 0.3], False),
        ([0.02, 1.0], False),  # 50x: under two decades
        ([0.01, 1.0], True),  # exactly two decades
        ([0.0, 0.1, 20.0], True),  # zero has no logarithm; the rest span 200x
        ([np.nan, np.inf, 0.5], False),  # one usable value spans nothing
        ([], False),
    ],
)
def test_use_log_scale(loss, log):
    assert plot.use_log_scale(pd.Series(loss, dtype="float64")) is log


def test_readings_line_fills_short_gaps_and_breaks_at_long_ones():
    values = [1.0, 2.0, None, None, 5.0, None, None, None, 9.0]
    raw = pd.Series(values, index=at(*range(len(values)))).dropna()
    line = plot.readings_line(raw, INTERVAL, T, T + 10 * INTERVAL, max_gap_points=2)
    assert line.index.equals(at(*range(10)))
    assert line.tolist()[:5] == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert np.isnan(line.tolist()[5:8]).all() and line.tolist()[8] == 9.0 and np.isnan(line.iloc[9])


def test_output_paths():
    assert sensor_plot.output_paths(Path("out/x.png"), ["a"]) == {"a": Path("out/x.png")}
    assert sensor_plot.output_paths(Path("x.PNG"), ["a"]) == {"a": Path("x.PNG")}
    paths = sensor_plot.output_paths(Path("plots"), ["AHU 1", "AHU_1"])
    assert paths == {s: Path("plots") / (store.sensor_dir(Path(), s).name + ".png") for s in ("AHU 1", "AHU_1")}
    assert len(set(paths.values())) == 2  # ids that read alike still get files of their own
    with pytest.raises(ConfigError, match="names one file but 2 sensors"):
        sensor_plot.output_paths(Path("x.png"), ["a", "b"])


def scores(loss, threshold=0.5, steps=None, value=20.0):
    index = at(*(steps if steps is not None else range(len(loss))))
    loss = pd.Series(loss, index=index, dtype="float64")
    return pd.DataFrame({"loss": loss, "threshold": threshold, "anomaly": loss > threshold, "val_num": value})


def test_describe_counts_windows_flags_and_events():
    end = T + pd.Timedelta(days=1)
    assert plot.describe(scores([]).iloc[0:0], [], T, end) == "2026-03-01 00:00 – 2026-03-02 00:00 UTC  ·  no scores"
    frame = scores([0.1, 0.9, 0.9, 0.1, 0.9])
    text = plot.describe(frame, plot.flag_spans(frame["anomaly"], INTERVAL), T, end)
    assert text.endswith("5 windows scored, 3 flagged in 2 events  ·  threshold 0.5")
    frame["threshold"] = [0.5, 0.5, 0.75, 0.75, 0.75]
    assert plot.describe(frame, [], T, end).endswith("threshold 0.5 – 0.75")


@pytest.mark.parametrize(
    "loss, threshold, written, score",
    [
        ([0.5, 2.0], [0.5, 0.5], None, [1.0, 4.0]),  # no score field anywhere: loss / threshold
        ([0.5, 2.0], [0.5, 0.5], [1.25, None], [1.25, 4.0]),  # the written one wins; the old point computed
        ([None, 0.2], [0.5, 0.5], [None, 0.4], [np.nan, 0.4]),  # a missing interval has no loss and no score
        ([0.3, 0.0], [0.0, 0.0], None, [np.nan, np.nan]),  # a zero threshold gives no ratio
        (["0.1", "x"], [1, 1], ["0.2", "y"], [0.2, np.nan]),  # what is not a number is none
    ],
)
def test_window_scores(loss, threshold, written, score):
    frame = pd.DataFrame({"loss": loss, "threshold": threshold}, index=at(*range(len(loss))))
    if written is not None:
        frame["score"] = written
    out = plot.window_scores(frame)
    assert out.index.equals(frame.index) and out.dtype == "float64"
    assert np.allclose(out.to_numpy(), score, equal_nan=True)


def test_scores_with_score_keeps_the_written_score_of_the_last_duplicate():
    frame = pd.DataFrame(
        {
            "loss": [0.3, "0.1", 0.2, 1.0],
            "threshold": [1, 1, 1, 0.5],
            "anomaly": [None, True, False, True],
            "val_num": [1, 2, 3, 4],
            "score": [0.35, None, 0.25, None],
        },
        index=at(2, 0, 2, 3),
    )
    out = plot.scores_with_score(frame, "val_num")
    assert out.index.equals(at(0, 2, 3))
    assert out["score"].tolist() == [0.1, 0.25, 2.0]
    assert out["anomaly"].tolist() == [True, False, True]
    del frame["score"]  # read from a store that has no score field at all
    assert plot.scores_with_score(frame, "val_num")["score"].tolist() == [0.1, 0.2, 2.0]
    empty = plot.scores_with_score(None, "val_num")
    assert empty.empty and "score" in empty


def test_normalize_scores_makes_types_plain_and_keeps_the_last_duplicate():
    frame = pd.DataFrame(
        {"loss": [0.3, "0.1", 0.2], "threshold": [1, 1, 1], "anomaly": [None, True, False], "val_num": [1, 2, 3]},
        index=at(2, 0, 2),
    )
    out = review.normalize_scores(frame, "val_num")
    assert out.index.equals(at(0, 2))
    assert out["loss"].tolist() == [0.1, 0.2] and out["anomaly"].tolist() == [True, False]
    assert out.dtypes.to_dict() == {"loss": "float64", "threshold": "float64", "anomaly": bool, "val_num": "float64"}
    assert review.normalize_scores(None, "val_num").empty


# ---------------------------------------------------------------- drawing, in-process


def readings(n):
    return pd.Series(20 + np.sin(np.arange(n) / 5), index=at(*range(n)))


def test_draw_marks_flags_shades_runs_and_switches_the_loss_to_log():
    loss = [0.05] * 10 + [30.0, 20.0, 0.05, 0.05, 8.0] + [0.05] * 5
    frame = scores(loss)
    fig = plot.draw("s", readings(20), frame, field="val_num", interval=INTERVAL, start=T, stop=T + 20 * INTERVAL)
    top, bottom = fig.axes
    assert bottom.get_yscale() == "log"
    assert len(top.patches) == len(bottom.patches) == 2  # two events (window 1): [10, 12) and [14, 15)
    assert [len(c.get_offsets()) for c in top.collections] == [3]  # three flagged windows
    assert [t.get_text() for t in top.get_legend().get_texts()] == [
        "mean val_num per 15m",
        "flagged window (reading at its end)",
        "event",
    ]
    assert [t.get_text() for t in bottom.get_legend().get_texts()] == [
        "score (loss / threshold)",
        "threshold (score 1.0)",
        "flagged window",
    ]
    assert fig.get_suptitle() == "s" and "3 flagged in 2 events" in top.get_title(loc="left")
    score, one = bottom.get_lines()
    assert np.allclose(score.get_ydata(), np.array(loss) / 0.5)  # no score column: loss / threshold
    assert list(one.get_ydata()) == [1.0, 1.0] and bottom.get_ylabel() == "score"
    assert bottom.collections[0].get_offsets()[:, 1].tolist() == [60.0, 40.0, 16.0]


def test_draw_prefers_the_written_score_and_keeps_1_0_in_view():
    frame = scores([0.1, 0.2, 0.3, 0.4], threshold=10.0)
    frame["score"] = [0.5, np.nan, 0.25, 0.125]  # the second point was written before the score field
    fig = plot.draw("s", readings(4), frame, field="val_num", interval=INTERVAL, start=T, stop=T + 4 * INTERVAL)
    _, bottom = fig.axes
    score, _ = bottom.get_lines()
    assert np.allclose(score.get_ydata(), [0.5, 0.02, 0.25, 0.125])
    low, high = bottom.get_ylim()
    assert low < 0.02 and high > 1.0 and bottom.get_yscale() == "linear"  # 25x: under two decades
    assert not bottom.collections  # nothing flagged, no points


def test_draw_without_flags_stays_linear_and_has_no_points():
    fig = plot.draw(
        "s", readings(20), scores([0.1, 0.2] * 10), field="val_num", interval=INTERVAL, start=T, stop=T + 20 * INTERVAL
    )
    top, bottom = fig.axes
    assert bottom.get_yscale() == "linear" and not top.patches and not top.collections


def test_draw_without_scores_says_why_in_the_score_panel():
    fig = plot.draw(
        "s",
        readings(20),
        scores([]),
        field="val_num",
        interval=INTERVAL,
        start=T,
        stop=T + 20 * INTERVAL,
        no_scores="no model in models",
    )
    top, bottom = fig.axes
    assert [t.get_text() for t in bottom.texts] == ["no scores in this range", "no model in models"]
    assert bottom.get_legend() is None and not top.collections


# ---------------------------------------------------------------- the script, end to end

NOW = pd.Timestamp("2026-03-08T00:00:00Z")
SCORED, UNSCORED = "AHU-7 supply air temp", "AHU-8 (no model)"
FLAT_START = NOW - pd.Timedelta(hours=10)


@pytest.fixture(scope="module")
def scored(influxd, tmp_path_factory):
    """Seven days of two sensors; SCORED drops to zero for four hours on the last day, is trained on the
    first five days with tiny settings and scored over the last two; UNSCORED has readings only."""
    workdir = tmp_path_factory.mktemp("plot")
    database = "plotting"
    local_influxd.query(influxd.url, f'CREATE DATABASE "{database}"')
    index = pd.date_range(NOW - pd.Timedelta(days=7), NOW, freq="5min", inclusive="left")
    values, _ = sensor_data.inject(
        sensor_data.normal_readings(SCORED, index, 4), index, SCORED, "flatline", FLAT_START, pd.Timedelta(minutes=5)
    )
    lines = sensor_data.readings_lines(SCORED, index, values)
    lines += sensor_data.readings_lines(UNSCORED, index, sensor_data.normal_readings(UNSCORED, index, 4))
    local_influxd.write(influxd.url, database, lines)
    (workdir / "empty.json").write_text("{}")
    env = {"INFLUX_URL": influxd.url, "INFLUX_DATABASE": database}
    common = [
        "--now",
        NOW.isoformat(),
        "--models-dir",
        str(workdir / "models"),
        "--ratios",
        str(workdir / "empty.json"),
        "--windows",
        str(workdir / "empty.json"),
        "--sensor",
        SCORED,
    ]
    trained = run_job(
        "sensor_training.py", [*common, "--stop=-2d", "--units", "8", "--epochs", "4", "--seed", "1"], env, workdir
    )
    assert trained.returncode == 0, trained.stderr
    # The fixed threshold, so the written score is loss / threshold, which the pictures are checked against.
    fixed = ["--threshold", "fixed", "--min-consecutive", "1"]
    predicted = run_job("sensor_predict.py", [*common, "--first-run", "2d", "--delay", "0s", *fixed], env, workdir)
    assert predicted.returncode == 0, predicted.stderr
    return env, workdir


def run_plot(scored, *args, cwd):
    env, workdir = scored
    return run_job(
        "sensor_plot.py",
        ["--now", NOW.isoformat(), "--start=-3d", "--models-dir", str(workdir / "models"), *args],
        env,
        cwd,
    )


def read_png(path: Path) -> np.ndarray:
    """Check the signature and IHDR of a PNG; return its pixels (height, width, RGBA floats)."""
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    length, kind, width, height = struct.unpack(">I4sII", data[8:24])
    assert (kind, length) == (b"IHDR", 13)
    assert (width, height) == (WIDTH, HEIGHT)
    assert 20_000 < len(data) < 400_000, len(data)
    pixels = matplotlib.image.imread(path)
    assert pixels.shape[:2] == (height, width)
    return pixels


def flag_red_pixels(pixels: np.ndarray) -> int:
    """Pixels of the flag colour in the top panel (upper half), where only flagged-window points use it."""
    red = np.array([int(plot.FLAG_COLOR[i : i + 2], 16) / 255 for i in (1, 3, 5)])
    top = pixels[: pixels.shape[0] // 2, :, :3]
    return int((np.abs(top - red).max(axis=2) < 0.08).sum())


def test_a_scored_sensor_is_drawn_with_its_flags(scored, tmp_path):
    result = run_plot(scored, "--sensor", SCORED, "--output", str(tmp_path / "out" / "ahu7.png"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert f"sensor {SCORED!r}: wrote {tmp_path / 'out' / 'ahu7.png'}: 192 windows scored" in result.stderr
    assert "1 drawn, 0 not" in result.stderr
    assert flag_red_pixels(read_png(tmp_path / "out" / "ahu7.png")) > 50
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["ahu7.png"]  # no temporary file left behind


def test_the_score_drawn_is_the_one_the_scorer_wrote(scored):
    env, _ = scored
    connection = Connection(url=env["INFLUX_URL"], api="influxql", database=env["INFLUX_DATABASE"])
    with influx_interact.connect(connection, Schema()) as db:
        frames = db.read_scores([SCORED, UNSCORED], NOW - pd.Timedelta(days=3), NOW)
    assert list(frames) == [SCORED]
    frame = frames[SCORED]
    written = pd.to_numeric(frame["score"])
    assert len(frame) == 192 and written.notna().all()
    assert np.allclose(written, frame["loss"] / frame["threshold"])
    drawn = plot.scores_with_score(frame, "val_num")["score"]
    assert np.allclose(drawn.to_numpy(), written.sort_index().to_numpy())


def test_several_sensors_go_to_a_directory_and_one_without_scores_gets_an_empty_state(scored, tmp_path):
    result = run_plot(scored, "--sensor", SCORED, "--sensor", UNSCORED, "--output", "plots", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    paths = sensor_plot.output_paths(tmp_path / "plots", [SCORED, UNSCORED])
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == sorted(p.name for p in paths.values())
    assert f"sensor {UNSCORED!r}: no scores in" in result.stderr and "no model in" in result.stderr
    assert flag_red_pixels(read_png(paths[SCORED])) > 50
    assert flag_red_pixels(read_png(paths[UNSCORED])) == 0


def test_an_unknown_sensor_gets_no_picture_and_exit_1_and_the_others_are_drawn(scored, tmp_path):
    result = run_plot(scored, "--sensor", "no such sensor", "--sensor", SCORED, "--output", "plots", cwd=tmp_path)
    assert result.returncode == 1
    assert (
        "sensor 'no such sensor': nothing to draw: no readings in 'READINGS' and no scores in "
        "'PREDICT_ANOMALY'" in result.stderr
    )
    assert [p.name for p in (tmp_path / "plots").iterdir()] == [sensor_plot.output_paths(Path(), [SCORED])[SCORED].name]
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--sensor", "a", "--sensor", "b", "--output", "x.png"], "names one file but 2 sensors"),
        (["--sensor", "a", "--start", "2026-03-02T00:00:00Z", "--stop", "2026-03-01T00:00:00Z"], "must be before"),
        (["--sensor", "a", "--shard", "1/2"], "--shard"),
        (["--sensor", "a", "--start=-7x"], "--start"),
    ],
)
def test_bad_flags_are_configuration_errors(args, message, monkeypatch):
    monkeypatch.setenv("INFLUX_DATABASE", "db")
    parsed = sensor_plot.JOB.parser().parse_args(args)
    with pytest.raises(ConfigError, match=message):
        sensor_plot.JOB.settings(parsed)


def test_exit_status_2_without_a_sensor_and_1_for_an_unreachable_server(tmp_path):
    missing = run_job("sensor_plot.py", [], {"INFLUX_DATABASE": "db"}, tmp_path)
    assert missing.returncode == 2 and "--sensor" in missing.stderr
    port = local_influxd.free_port()
    down = run_job(
        "sensor_plot.py",
        ["--sensor", "a", "--retries", "0"],
        {"INFLUX_URL": f"http://127.0.0.1:{port}", "INFLUX_DATABASE": "db"},
        tmp_path,
    )
    assert down.returncode == 1
    assert down.stderr.strip().endswith("check INFLUX_URL or --url, the network, and that the server is running")
    assert "Traceback" not in down.stderr and not list(tmp_path.iterdir())
