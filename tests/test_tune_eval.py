"""End to end: labels -> scores -> sensor_tune.py and sensor_evaluate.py, as processes, against a real InfluxDB.

One sensor gets six injected anomalies, labelled with manual_anomaly as a person would: three in the
tuning range (NOW-8d .. NOW-4d), three in the evaluation range (NOW-4d .. NOW). A second sensor has no
labels. Both are trained (tiny) on the 12 clean days before, then scored over both ranges by backfill.
"""

from __future__ import annotations

import csv
import json

import pandas as pd
import pytest
from conftest import run_job

from tools import local_influxd, sensor_data

NOW = pd.Timestamp("2026-02-01T00:00:00Z")
SAMPLE = pd.Timedelta(minutes=5)
LABELLED = "AHU-7 supply air temp"
UNLABELLED = "quiet sensor"
TUNE = [
    "--tune-start",
    (NOW - pd.Timedelta(days=8)).isoformat(),
    "--tune-stop",
    (NOW - pd.Timedelta(days=4)).isoformat(),
]
EVAL = ["--start", (NOW - pd.Timedelta(days=4)).isoformat(), "--stop", NOW.isoformat()]
INJECTED = [(8, "level_shift"), (7, "spike"), (6, "level_shift"), (4, "level_shift"), (3, "spike"), (2, "flatline")]


def seed(url: str, database: str) -> list[sensor_data.Anomaly]:
    local_influxd.query(url, f'CREATE DATABASE "{database}"')
    index = pd.date_range(NOW - pd.Timedelta(days=20), NOW, freq=SAMPLE, inclusive="left")
    values = sensor_data.normal_readings(LABELLED, index, seed=5)
    anomalies = []
    for days_before, kind in INJECTED:
        at = NOW - pd.Timedelta(days=days_before) + pd.Timedelta(hours=10)
        values, anomaly = sensor_data.inject(values, index, LABELLED, kind, at, SAMPLE)
        anomalies.append(anomaly)
    lines = sensor_data.readings_lines(LABELLED, index, values, labelled=anomalies)
    lines += sensor_data.readings_lines(UNLABELLED, index, sensor_data.normal_readings(UNLABELLED, index, seed=5))
    local_influxd.write(url, database, lines)
    return anomalies


@pytest.fixture(scope="module")
def scored(influxd, tmp_path_factory):
    """Trained and scored once for the module; returns a function that runs a tool against it."""
    workdir = tmp_path_factory.mktemp("tune_eval")
    anomalies = seed(influxd.url, "tune_eval")
    env = {"INFLUX_URL": influxd.url, "INFLUX_DATABASE": "tune_eval"}
    (workdir / "windows.json").write_text('{"default": 8}')
    (workdir / "ratios.json").write_text('{"default": 1}')
    common = [
        "--models-dir",
        str(workdir / "models"),
        "--windows",
        str(workdir / "windows.json"),
        "--health-measurement",
        "",
    ]
    training = run_job(
        "sensor_training.py",
        [
            *common,
            "--ratios",
            str(workdir / "ratios.json"),
            "--start",
            (NOW - pd.Timedelta(days=20)).isoformat(),
            "--stop",
            (NOW - pd.Timedelta(days=8)).isoformat(),
            "--units",
            "8",
            "--epochs",
            "3",
            "--seed",
            "1",
            "--jobs",
            "1",
        ],
        env,
        cwd=workdir,
    )
    assert training.returncode == 0, training.stderr
    scoring = run_job(
        "sensor_predict.py",
        [
            *common,
            "--ratios",
            str(workdir / "ratios.json"),
            "--now",
            NOW.isoformat(),
            "--start",
            (NOW - pd.Timedelta(days=8)).isoformat(),
            "--stop",
            NOW.isoformat(),
            "--delay",
            "0s",
            "--events-measurement",
            "",
        ],
        env,
        cwd=workdir,
    )
    assert scoring.returncode == 0, scoring.stderr

    def tool(script, *args, ratios=None):
        ratios_path = workdir / "ratios.json"
        if ratios is not None:
            ratios_path = workdir / f"ratios-{abs(hash(json.dumps(ratios)))}.json"
            ratios_path.write_text(json.dumps(ratios, indent=2) + "\n")
        result = run_job(
            script, [*common, "--ratios", str(ratios_path), "--now", NOW.isoformat(), *args], env, cwd=workdir
        )
        return result, ratios_path

    return tool, anomalies, workdir


def tuned_ratio(stdout: str, sensor: str) -> float:
    (line,) = [text for text in stdout.splitlines() if text.startswith(sensor + ":")]
    return float(line.split(" -> ")[1].split(";")[0].split()[0])


def test_a_ratio_that_floods_with_false_alarms_is_raised(scored):
    tool, _, _ = scored
    result, path = tool("sensor_tune.py", *TUNE, ratios={"default": 1, LABELLED: 0.3})
    assert result.returncode == 0, result.stderr
    new = tuned_ratio(result.stdout, LABELLED)
    assert new > 0.3, result.stdout
    line = next(t for t in result.stdout.splitlines() if t.startswith(LABELLED))
    before, after = line.split("false alarms/week ")[1].split(",")[0].split(" -> ")
    assert float(after) < float(before), line
    assert f"{UNLABELLED}: ratio 1 kept: no labels" in result.stdout
    assert "dry run" in result.stdout and json.loads(path.read_text())[LABELLED] == 0.3
    assert not path.with_name(path.name + ".bak").exists()


def test_a_ratio_that_misses_everything_is_lowered_and_written_keeping_other_keys(scored):
    tool, _, _ = scored
    original = {"default": 1.5, LABELLED: 20, "some other sensor": 2.25}
    result, path = tool("sensor_tune.py", *TUNE, "--write", ratios=original)
    assert result.returncode == 0, result.stderr
    new = tuned_ratio(result.stdout, LABELLED)
    assert new < 20 and "event recall 0.00 -> 1.00" in result.stdout, result.stdout
    text = path.read_text()
    assert json.loads(text) == {"default": 1.5, LABELLED: new, "some other sensor": 2.25}
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True) + "\n"
    assert json.loads(path.with_name(path.name + ".bak").read_text()) == original


def test_a_false_alarm_budget_is_respected(scored):
    tool, _, _ = scored
    result, _ = tool("sensor_tune.py", *TUNE, "--max-false-alarms", "0", "--sensor", LABELLED, ratios={"default": 0.3})
    assert result.returncode == 0, result.stderr
    line = next(t for t in result.stdout.splitlines() if t.startswith(LABELLED))
    assert "false alarms/week" in line and line.split("false alarms/week ")[1].split(",")[0].endswith("-> 0.0"), line


def test_tuning_refuses_to_overlap_the_evaluation_range_unless_told(scored):
    tool, _, _ = scored
    overlap = [
        "--tune-start",
        (NOW - pd.Timedelta(days=5)).isoformat(),
        "--tune-stop",
        NOW.isoformat(),
        "--eval-start",
        (NOW - pd.Timedelta(days=4)).isoformat(),
        "--eval-stop",
        NOW.isoformat(),
    ]
    refused, _ = tool("sensor_tune.py", *overlap)
    assert refused.returncode == 2 and "overlaps the evaluation range" in refused.stderr
    allowed, _ = tool("sensor_tune.py", *overlap, "--allow-overlap")
    assert allowed.returncode == 0, allowed.stderr
    before, _ = tool("sensor_tune.py", "--eval-start", (NOW - pd.Timedelta(days=4)).isoformat())
    assert before.returncode == 0 and "tuning range 2026-01-24T00:00:00Z .. 2026-01-28T00:00:00Z" in before.stdout


def test_the_evaluation_report_has_a_row_per_sensor_a_fleet_row_and_pictures(scored):
    tool, _, workdir = scored
    out = workdir / "report"
    result, _ = tool("sensor_evaluate.py", *EVAL, "--output", str(out))
    assert result.returncode == 0, result.stderr
    with open(out / "summary.csv", newline="") as handle:
        rows = {row["sensor"]: row for row in csv.DictReader(handle)}
    assert list(rows) == [LABELLED, UNLABELLED, "fleet"]
    labelled = rows[LABELLED]
    assert int(labelled["events"]) == 3 and int(labelled["windows"]) == 4 * 96
    assert int(labelled["events_detected"]) >= 2 and float(labelled["event_recall"]) >= 2 / 3
    assert rows[UNLABELLED]["note"] == "no labels" and rows[UNLABELLED]["event_recall"] == ""
    assert rows["fleet"]["events"] == "3" and rows["fleet"]["note"] == "1 of 2 sensors labelled"
    markdown = (out / "summary.md").read_text()
    assert markdown.count("\n| ") == 5  # header, separator, two sensors, fleet
    assert "| **fleet** |" in markdown and f"| {LABELLED} |" in markdown
    pictures = sorted(p.name for p in out.glob("*.png"))
    assert len(pictures) == 2 and all((out / p).stat().st_size > 10_000 for p in pictures)


def test_labels_from_csv_give_the_same_events_and_a_bad_row_names_its_line(scored):
    tool, anomalies, workdir = scored
    path = workdir / "labels.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["Datetime (UTC)", "Value", "ID", "Anomaly"])
        for a in anomalies:
            for stamp in pd.date_range(a.start, a.stop, freq=SAMPLE, inclusive="left"):
                writer.writerow([stamp.strftime("%Y-%m-%d %H:%M:%S"), "1.0", LABELLED, "TRUE"])
        writer.writerow([(NOW - pd.Timedelta(days=1)).strftime("%Y-%m-%d %H:%M:%S"), "20.0", UNLABELLED, "FALSE"])
    out = workdir / "report-csv"
    result, _ = tool("sensor_evaluate.py", *EVAL, "--output", str(out), "--no-plots", "--labels-csv", str(path))
    assert result.returncode == 0, result.stderr
    with open(out / "summary.csv", newline="") as handle:
        rows = {row["sensor"]: row for row in csv.DictReader(handle)}
    assert rows[LABELLED]["events"] == "3" and rows[UNLABELLED]["events"] == "0" and rows[UNLABELLED]["note"] == ""
    assert not list(out.glob("*.png"))

    path.write_text(path.read_text() + "2026-01-31 00:00:00,20.0,quiet sensor,maybe\n")
    bad, _ = tool("sensor_evaluate.py", *EVAL, "--output", str(out), "--labels-csv", str(path))
    lines = len(path.read_text().splitlines())
    assert bad.returncode == 2 and f"{path}: line {lines}: Anomaly 'maybe' is not TRUE or FALSE" in bad.stderr


def test_import_writes_values_and_labels_and_refuses_a_malformed_file(influxd, database, tmp_path):
    good = tmp_path / "export.csv"
    good.write_text(
        "Datetime (UTC),Value,ID,Anomaly\n"
        "2026-01-14 06:00:00,21.5,AHU 1,FALSE\n"
        "2026-01-14 06:05:00,27.9,AHU 1,TRUE\n"
        "2026-01-14 06:20:00,,AHU 1,true\n"
        '2026-01-14 06:00:00,3,"Boiler, 2",FALSE\n'
    )
    env = {"INFLUX_URL": influxd.url, "INFLUX_DATABASE": database}
    result = run_job("sensor_import.py", [str(good), "--batch-size", "2"], env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    answer = local_influxd.query(
        influxd.url, 'SELECT "val_num", "manual_anomaly" FROM "READINGS" GROUP BY "uniqueID"', database
    )["results"][0]["series"]
    got = {s["tags"]["uniqueID"]: [row[1:] for row in s["values"]] for s in answer}
    assert got == {"AHU 1": [[21.5, False], [27.9, True], [None, True]], "Boiler, 2": [[3, False]]}

    bad = tmp_path / "bad.csv"
    bad.write_text(
        "Datetime (UTC),Value,ID,Anomaly\n2026-01-15 06:00:00,1,AHU 1,FALSE\n2026-01-15 06:05:00,abc,AHU 1,FALSE\n"
    )
    refused = run_job("sensor_import.py", [str(bad)], env, cwd=tmp_path)
    assert refused.returncode == 2 and f"{bad}: line 3: Value 'abc' is not a finite number" in refused.stderr
    count = local_influxd.query(
        influxd.url, 'SELECT count("val_num") FROM "READINGS" WHERE time >= \'2026-01-15T00:00:00Z\'', database
    )["results"][0]
    assert "series" not in count  # nothing of the bad file was written
