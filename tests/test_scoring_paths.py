"""The fast scoring path (models from the packed store, a chunk's readings shaped and decided at once on one
grid, points written a column at a time) writes exactly the points of the per-sensor path it replaced (each
model from its own files, each series shaped in pandas, each sensor decided by detect.decide alone, each point
by line_protocol), on the same data, to the last digit."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import rows
from test_pack import save

import model_predict
import sensor_predict
from anomaly import losses, pack, pack_build, runner, store
from anomaly.chunk import Chunk
from anomaly.influx.line_protocol import line_protocol
from anomaly.settings import Schema
from tools import local_influxd, sensor_data

NOW = pd.Timestamp("2026-03-02T00:00:00Z")
INTERVAL = pd.Timedelta(minutes=15)
SENSORS = [
    "plain",
    "short gaps",
    "long gap",
    "absurd reading",
    "stuck",
    "beyond its range",
    "silent",
    'Boiler,2="hot" loop=ü',
    "retrained since packed",
    "not packed",
    "no readings at all",
]


def readings(sensor_id: str, index: pd.DatetimeIndex) -> np.ndarray:
    values = sensor_data.normal_readings(sensor_id, index, seed=5)
    if sensor_id == "short gaps":
        values[[40, 41, 100, 150, 151, 152]] = np.nan  # filled by interpolation
    elif sensor_id == "long gap":
        values[60:75] = np.nan
    elif sensor_id == "absurd reading":
        values[-20] = 1e300
    elif sensor_id == "stuck":
        values[-60:] = 21.5
    elif sensor_id == "silent":
        values[-30:] = np.nan
    elif sensor_id == "beyond its range":
        values[-60:] += np.linspace(0, 20, 60)  # a slow rise past every reading before it: a level excursion
    return values


@pytest.fixture
def fleet(influxd, database, tmp_path):
    index = pd.date_range(NOW - pd.Timedelta(days=3), NOW, freq=INTERVAL, inclusive="left")
    values = {sensor_id: readings(sensor_id, index) for sensor_id in SENSORS}
    lines = []
    for sensor_id in SENSORS[:-1]:
        present = ~np.isnan(values[sensor_id])
        lines += sensor_data.readings_lines(sensor_id, index[present], values[sensor_id][present])
    local_influxd.write(influxd.url, database, lines)
    models = tmp_path / "models"
    for seed, sensor_id in enumerate(SENSORS):
        if sensor_id != "not packed":
            # The range of the readings of the day before, which only "beyond its range" leaves for good.
            before = values[sensor_id][-160:-60]
            levels = {"low": float(np.nanmin(before)), "high": float(np.nanmax(before))}
            # Small thresholds, so that some windows of every kind are flagged.
            threshold = 0.02 * (1 + seed % 3)
            save(models, sensor_id, seed, window=6, units=3, threshold=threshold, longest_flat_run=4, levels=levels)
    pack_build.rebuild(models)
    save(models, "retrained since packed", 20, window=6, units=3, threshold=0.03)
    save(models, "not packed", 21, window=6, units=3, threshold=0.03)
    (tmp_path / "ratios.json").write_text("{}")
    (tmp_path / "windows.json").write_text('{"default": 6}')
    return influxd.url, database, models, tmp_path


def old_paths(monkeypatch) -> None:
    """The per-sensor path: no packs, each series through model_predict.prepare, each sensor decided by
    detect.decide alone, each point by line_protocol."""
    monkeypatch.setattr(pack.PackedStore, "open", classmethod(lambda cls, models_dir: cls(models_dir, [])))
    nothing = Chunk(pd.DatetimeIndex([], tz="UTC"), INTERVAL, np.empty((0, 0)), {})
    monkeypatch.setattr(Chunk, "of", classmethod(lambda cls, *args: nothing))

    schema = Schema()
    tags = {model_predict.score_head(s, schema): {schema.sensor_tag: s} for s in SENSORS}

    def series_lines(heads, sizes, fields, timestamps):
        each = [tags[h] for h, n in zip(heads, sizes) for _ in range(n)]
        return [
            line_protocol(schema.output_measurement, each[i], {k: v[i] for k, v in fields.items()}, int(stamp))
            for i, stamp in enumerate(timestamps)
        ]

    monkeypatch.setattr(model_predict, "series_lines", series_lines)


def dry_run(fleet, capsys, *extra: str) -> list[str]:
    url, database, models, workdir = fleet
    argv = [
        "--url",
        url,
        "--database",
        database,
        "--models-dir",
        str(models),
        "--ratios",
        str(workdir / "ratios.json"),
        "--windows",
        str(workdir / "windows.json"),
        "--now",
        NOW.isoformat(),
        "--delay",
        "0s",
        "--chunk-size",
        "4",
        "--dry-run",
        *extra,
    ]
    capsys.readouterr()
    assert runner.main(sensor_predict.JOB, argv) == 0
    return capsys.readouterr().out.splitlines()


EVERY_KIND = {"shape", "level", "flatline", "missing"}


@pytest.mark.parametrize(
    "flags, kinds",
    [
        pytest.param(["--first-run", "2d"], EVERY_KIND, id="defaults: dynamic threshold, a catch-up of two days"),
        pytest.param(["--first-run", "1h"], EVERY_KIND - {"level"}, id="a tick"),
        pytest.param(
            ["--first-run", "2d", "--threshold", "fixed", "--min-consecutive", "1"],
            EVERY_KIND - {"level"},  # a window whose shape is flagged is not called a level anomaly
            id="fixed threshold",
        ),
    ],
)
def test_the_fast_path_writes_exactly_the_points_of_the_per_sensor_path(fleet, capsys, monkeypatch, flags, kinds):
    new = dry_run(fleet, capsys, *flags)
    with monkeypatch.context() as patched:
        old_paths(patched)
        old = dry_run(fleet, capsys, *flags)
    assert new == old
    scored = {line.split(" ", 1)[0] for line in new}
    assert len(scored) == len(SENSORS) - 1  # all but the sensor without readings, missing points included
    assert {kind for line in new for kind in EVERY_KIND if f'kind="{kind}"' in line} == kinds


def test_the_fast_path_reads_the_packed_models_and_the_per_sensor_path_does_not(fleet, capsys, monkeypatch):
    """Both paths above really ran: the pack served the packed sensors, their own files the others."""
    loaded = []
    original = model_predict.load_sensor_model
    monkeypatch.setattr(
        model_predict, "load_sensor_model", lambda d, e="numpy": loaded.append(d.name) or original(d, e)
    )
    dry_run(fleet, capsys, "--first-run", "1h")
    models = fleet[2]
    assert sorted(loaded) == sorted(store.sensor_dir(models, s).name for s in SENSORS[-3:-1])
    loaded.clear()
    old_paths(monkeypatch)
    dry_run(fleet, capsys, "--first-run", "1h")
    assert len(loaded) == len(SENSORS) - 1  # every sensor the database lists


def test_written_points_are_the_dry_run_lines(fleet, capsys):
    """The dry run above prints what a run writes: the same lines land in the database."""
    url, database, _, _ = fleet
    lines = dry_run(fleet, capsys, "--first-run", "1h")
    argv_lines = len(lines)
    url, database, models, workdir = fleet
    args = ["--url", url, "--database", database, "--models-dir", str(models), "--ratios", str(workdir / "ratios.json")]
    args += ["--windows", str(workdir / "windows.json"), "--now", NOW.isoformat(), "--delay", "0s", "--first-run", "1h"]
    assert runner.main(sensor_predict.JOB, args) == 0
    found = rows(url, database, 'SELECT count("anomaly") FROM "PREDICT_ANOMALY"')
    assert found[0][1][0][1] == argv_lines


def test_a_run_of_many_chunks_gathered_ahead_writes_the_points_of_every_chunk(fleet, capsys):
    """Each chunk is gathered while the one before is scored (parallel.ahead): a run of many chunks writes
    every point its dry run prints, and the client warns of nothing (test_retries.py: its connections)."""
    url, database, models, workdir = fleet
    flags = ["--first-run", "2d", "--output-measurement", "CHUNKED"]
    lines = dry_run(fleet, capsys, *flags)
    args = ["--url", url, "--database", database, "--models-dir", str(models), "--ratios", str(workdir / "ratios.json")]
    args += ["--windows", str(workdir / "windows.json"), "--now", NOW.isoformat(), "--delay", "0s", "--chunk-size", "2"]
    assert runner.main(sensor_predict.JOB, [*args, *flags]) == 0
    assert "urllib3" not in capsys.readouterr().err
    assert rows(url, database, 'SELECT count("anomaly") FROM "CHUNKED"')[0][1][0][1] == len(lines)


def test_a_tick_takes_its_history_losses_from_the_tick_before_and_writes_what_computing_them_writes(
    fleet, capsys, monkeypatch, state_dir
):
    """Each tick keeps the losses it computed (anomaly/loss_memory.py) and the next takes those of its history
    windows from there, computing only its new windows: its points are those of a tick that computes them all.
    """
    url, database, models, workdir = fleet
    args = ["--url", url, "--database", database, "--models-dir", str(models), "--ratios", str(workdir / "ratios.json")]
    args += ["--windows", str(workdir / "windows.json"), "--delay", "0s", "--chunk-size", "4", "--first-run", "1h"]
    assert runner.main(sensor_predict.JOB, [*args, "--now", (NOW - INTERVAL).isoformat()]) == 0
    (memory_file,) = state_dir.glob("*.losses.npz")

    computed: list[int] = []
    fleet_losses = losses.fleet_losses

    def counted(models, windows, engine="numpy"):
        computed.append(sum(map(len, windows)))
        return fleet_losses(models, windows, engine)

    monkeypatch.setattr(losses, "fleet_losses", counted)
    remembered = dry_run(fleet, capsys, "--first-run", "1h")
    with_memory, computed[:] = sum(computed), []
    memory_file.unlink()
    everything = dry_run(fleet, capsys, "--first-run", "1h")
    # The same points and flags; a loss computed in another batch may differ in its last float32 bit, and so
    # what is made from the history's losses (the smoothed loss, the dynamic threshold, the score).
    assert [_fields(line)[0] for line in everything] == [_fields(line)[0] for line in remembered]
    for line, again in zip(everything, remembered):
        assert _fields(again)[1] == pytest.approx(_fields(line)[1], rel=1e-6)
    # One new window for each sensor with a model and a window that ends at NOW - INTERVAL: the rest of the day
    # came from the memory.
    new_windows = sum('kind="missing"' not in line for line in remembered)
    assert with_memory == new_windows < sum(computed) / 20


def _fields(line: str) -> tuple[tuple[str, ...], dict[str, float]]:
    """A score line as its series, time and text fields (exact), and its number fields."""
    head, fields, stamp = line.rsplit(" ", 2)
    pairs = [field.split("=", 1) for field in fields.split(",")]
    numbers = {k: float(v) for k, v in pairs if v[0] not in '"tf'}
    return (head, stamp, *sorted(f"{k}={v}" for k, v in pairs if k not in numbers)), numbers
