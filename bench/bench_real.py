#!/usr/bin/env python3
"""Benchmark: detection on real labelled series (the NAB subset), end to end through the jobs as processes.

Not part of the test suite. Every step is a job run as a process, as cron runs it, against a throwaway
influxd (tools/local_influxd.py), so the figures are what the jobs produce with today's defaults:

1. each NAB series (``timestamp,value``, local-naive times taken as UTC) becomes rows of the CSV shape
   sensor_import.py reads (``Datetime (UTC), Value, ID, Anomaly``; sensor id = ``<folder>/<file stem>``).
   Anomaly is TRUE inside a labelled window ``[start, end]`` of combined_windows.json. A window is a
   time range, not a set of readings, so each interval inside it that holds no reading gets a row with an
   empty Value and TRUE: the labelled intervals are then one run per window, and sensor_evaluate.py sees
   one event per window, as NAB counts them;
2. the rows before each series' split are imported (sensor_import.py), and sensor_training.py trains every
   sensor in one run with the job's model defaults, ``--label-field`` (labelled intervals are left out) and
   ``--seed``. At that moment the database holds only the training part of each series, so one run over
   the whole time span trains each sensor on the start of its own series; the models' training_range is
   that whole span;
3. the rest is imported and sensor_predict.py backfills each series' scored part with ``--start``/``--stop``
   (one run per series, since the parts differ; the job's defaults otherwise, so ``missing`` points, the
   flat-line check and the robust cold-start detector for a sensor without a model all count);
4. the ``PREDICT_ANOMALY`` points are read back and scored below; sensor_evaluate.py is run once over the
   scored span as a cross-check, with its own definitions (its fleet row goes into the final JSON line as
   ``sensor_evaluate_fleet``; its summary.csv and summary.md are kept with ``--keep``).

Protocol: ``--interval 5m``, train on the first 25% of each series' time span, score the other 75%.

- 5m is the sampling step of 26 of the 31 series, so each reading keeps an interval of its own (the others
  are 10m, 30m and 1h: their intervals are filled by the jobs' interpolation of gaps up to --max-gap 1h).
  At the default 15m, a quarter of a two-week series is about 320 windows, and with labels and gaps left
  out five series (iio_us-east-1_i-a2eb1cd9_NetworkIn, rogue_agent_key_hold, both TravelTime, speed_7578)
  fall under --min-windows 200 at any fraction up to 30%: training skips them and sensor_predict.py scores
  them with the robust cold-start detector instead of an autoencoder (``--interval 15m`` measures that; it
  runs in about half the time). Keeping them trainable at 15m needs half of each series, which leaves four
  series with no labelled window in the scored part.
- 25% is the largest fraction that leaves every labelled series (30: ec2_cpu_utilization_c6585a has no
  label) with a labelled window in the scored part: at 30% iio_us-east-1_i-a2eb1cd9_NetworkIn and
  TravelTime_451 lose theirs, at 50% four series do. NAB itself scores after a probationary 15%. Seven
  series still hold a labelled window (or part of one) in their training part; --label-field leaves it out.
- It costs about 70,000 training windows in all (ambient_temperature_system_failure and nyc_taxi, hourly
  and half-hourly readings gridded to 5m, are half of them): a full run took 8.6 minutes on this 2-core
  machine while other test suites ran on it, 12.5 under heavier load, within the 15-minute budget.

Figures, per series and for the fleet. Times are window ends as the job writes them (the start of the
window's last interval); ``window`` is the model's (15), or 1 for a sensor scored by the robust detector.

- labelled event: a window of combined_windows.json. Its detection span is NAB's window on the interval
  grid, extended like evaluation.py's: ``[floor(start), floor(end) + (window-1) intervals]``, since a window
  ending up to window-1 intervals after the label still holds labelled readings. An event is in the scored
  part when any point the job wrote lies in its span; it is found when any flagged point does.
- flagged point: any point with ``anomaly = true``, whatever its kind: ``reconstruction``, ``flatline``,
  ``outlier`` (robust detector) or ``missing`` (the job writes one of those per interval after
  --missing-after of silence, with no loss). Scored windows are the points with a loss; points are windows
  plus ``missing`` points.
- false-alarm run: a maximal run of flagged points outside every span, consecutive meaning one interval
  apart. False-alarm runs per week divide by the scored weeks (last point - first point + one interval).
- false-alarm event: the same, with flagged points at most window-1 intervals apart joined, as
  sensor_predict.py joins flags into the events it annotates and announces (their windows share a reading:
  told once leaves the windows between unflagged when they only retell it).
- flagged windows outside (the issue's criterion, at most 5% per series): flagged scored windows outside
  every span / scored windows. Flagged outside: flagged points of any kind outside every span / all
  points written (the earlier figure, which also counts flagged ``missing`` points and divides by them).
- point F1: points in a span are positive; precision = flagged positive / flagged, recall = flagged
  positive / positive.
- event F1: event recall = found / events in the scored part; event precision = found / (found +
  false-alarm runs).
- fleet: counts and weeks summed over series, rates from the sums.
- the labelled-events table: each event in a scored part, found or not, and how close a missed one came:
  the highest score in its span (the smoothed loss over the effective threshold) and that window's
  threshold over the model's. A score under 1 at a ratio of 1.00 lies below the calibrated threshold
  itself; at a higher ratio, under the dynamic threshold raised by what the day before held.

    .venv/bin/python bench/bench_real.py            # all 31 series, under 15 minutes on two cores
    .venv/bin/python bench/bench_real.py --quick    # 5 series, for development
    .venv/bin/python bench/bench_real.py --keep DIR # keep the models, logs and database of the run
    # other scoring rules on the same models, without training again (a few minutes):
    .venv/bin/python bench/bench_real.py --models-from DIR --predict-flags="--min-consecutive 3"

Progress goes to stderr; stdout gets the per-series table, the labelled-events table and, as its last line, one
JSON object with the figures.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
# Run as a script, this file sees bench/ on sys.path; tools.local_influxd lives at the repository root.
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from anomaly.told import joined_within  # noqa: E402

DATABASE = "nab"
LABEL_FIELD = "manual_anomaly"
OUTPUT_MEASUREMENT = "PREDICT_ANOMALY"
FIELDS = ("anomaly", "kind", "loss", "score", "threshold")
HEADER = ("Datetime (UTC)", "Value", "ID", "Anomaly")
FOLDERS = ("realKnownCause", "realTraffic", "realAWSCloudwatch")
QUICK = (
    "realAWSCloudwatch/ec2_cpu_utilization_5f5533",
    "realAWSCloudwatch/rds_cpu_utilization_e47b3b",
    "realKnownCause/ec2_request_latency_system_failure",
    "realKnownCause/rogue_agent_key_updown",
    "realTraffic/occupancy_6005",
)
WEEK = pd.Timedelta(days=7)


class JobError(RuntimeError):
    """A job exited with a status other than 0; the message holds the end of its log."""


@dataclass(frozen=True)
class Series:
    """One NAB series: readings by UTC time and its labelled windows, both ends inclusive."""

    sensor_id: str
    readings: pd.Series
    windows: tuple[tuple[pd.Timestamp, pd.Timestamp], ...]

    @property
    def step(self) -> pd.Timedelta:
        """The usual time between readings (the median, to the minute)."""
        return pd.Series(self.readings.index).diff().median().round("min")

    def split(self, fraction: float, interval: pd.Timedelta) -> tuple[pd.Timestamp, pd.Timestamp]:
        """[first scored window end, end of the scored part): the split after ``fraction`` of the time span,
        and the interval after the last reading, both on the interval grid."""
        first, last = self.readings.index[0], self.readings.index[-1]
        return (first + fraction * (last - first)).floor(interval), last.floor(interval) + interval


# ---------------------------------------------------------------- data in


def load_series(data: Path, sensor_ids: tuple[str, ...] | None) -> list[Series]:
    """Every series of the three folders (or those named), with its windows from combined_windows.json."""
    windows = json.loads((data / "combined_windows.json").read_text(encoding="utf-8"))
    loaded = []
    for path in sorted(p for folder in FOLDERS for p in (data / folder).glob("*.csv")):
        sensor_id = f"{path.parent.name}/{path.stem}"
        if sensor_ids is not None and sensor_id not in sensor_ids:
            continue
        frame = pd.read_csv(path)
        readings = pd.Series(
            frame["value"].to_numpy(dtype="float64"),
            index=pd.DatetimeIndex(pd.to_datetime(frame["timestamp"])).tz_localize("UTC"),
        )
        marked = tuple((pd.Timestamp(a, tz="UTC"), pd.Timestamp(b, tz="UTC")) for a, b in windows[f"{sensor_id}.csv"])
        loaded.append(Series(sensor_id, readings.sort_index(), marked))
    return loaded


def label_rows(series: Series, interval: pd.Timedelta) -> list[tuple[pd.Timestamp, str, str, str]]:
    """Label-only rows (empty Value, TRUE) for the intervals of each window that hold no reading, at the
    first moment of the interval that lies in the window."""
    sampled = set(series.readings.index.floor(interval))
    rows = []
    for start, end in series.windows:
        for at in pd.date_range(start.floor(interval), end, freq=interval):
            if at not in sampled:
                rows.append((max(at, start), "", series.sensor_id, "TRUE"))
    return rows


def csv_rows(series: Series, interval: pd.Timedelta) -> list[tuple[pd.Timestamp, str, str, str]]:
    """Every row of one series in sensor_import.py's shape, in time order."""
    times = series.readings.index
    inside = np.zeros(len(times), dtype=bool)
    for start, end in series.windows:
        inside |= (times >= start) & (times <= end)
    rows = [
        (at, repr(float(value)), series.sensor_id, "TRUE" if marked else "FALSE")
        for at, value, marked in zip(times, series.readings.to_numpy(), inside, strict=True)
    ]
    return sorted(rows + label_rows(series, interval), key=lambda row: row[0])


def write_parts(
    series: list[Series], splits: dict[str, tuple[pd.Timestamp, pd.Timestamp]], interval: pd.Timedelta, directory: Path
) -> tuple[Path, Path]:
    """Two import files: the training part of every series (before its split) and the scored part."""
    paths = directory / "training.csv", directory / "scored.csv"
    with (
        open(paths[0], "w", newline="", encoding="utf-8") as first,
        open(paths[1], "w", newline="", encoding="utf-8") as second,
    ):
        writers = csv.writer(first), csv.writer(second)
        for writer in writers:
            writer.writerow(HEADER)
        for one in series:
            split = splits[one.sensor_id][0]
            for at, value, sensor_id, label in csv_rows(one, interval):
                part = writers[1] if at >= split else writers[0]
                part.writerow((at.strftime("%Y-%m-%d %H:%M:%S"), value, sensor_id, label))
    return paths


# ---------------------------------------------------------------- jobs


def rfc3339(at: pd.Timestamp) -> str:
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def job_env(url: str) -> dict[str, str]:
    """The environment cron would give a job: the connection in INFLUX_* variables, no other INFLUX_* or
    webhook of the caller's, and no TensorFlow start-up chatter in the logs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFLUX_") and k != "SENSOR_NOTIFY_URL"}
    env.update(INFLUX_URL=url, INFLUX_DATABASE=DATABASE, TF_CPP_MIN_LOG_LEVEL="3")
    return env


def run_job(script: str, argv: list[str], url: str, log_path: Path) -> float:
    """Run one job as a process from the repository root, its output appended to ``log_path``; its seconds.
    Raises JobError unless it exits 0."""
    began = time.monotonic()
    with open(log_path, "ab") as out:
        code = subprocess.run(
            [sys.executable, str(ROOT / script), *argv],
            check=False,
            env=job_env(url),
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        ).returncode
    if code != 0:
        tail = log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-20:]
        raise JobError(f"{script} {' '.join(argv)} exited with {code}; end of {log_path}:\n" + "\n".join(tail))
    return time.monotonic() - began


def trained_models(models_dir: Path) -> dict[str, dict]:
    """metadata.json of every trained model, by sensor id (window, training windows, intervals left out)."""
    facts = {}
    for path in models_dir.glob("*/metadata.json"):
        metadata = json.loads(path.read_text(encoding="utf-8"))
        facts[metadata["sensor_id"]] = metadata
    return facts


def read_points(url: str, sensor_id: str, start: pd.Timestamp, stop: pd.Timestamp) -> pd.DataFrame:
    """What sensor_predict.py wrote for one sensor in [start, stop): anomaly, kind, loss, score and threshold
    by time."""
    from tools import local_influxd

    quoted = sensor_id.replace("\\", "\\\\").replace("'", "\\'")
    fields = ", ".join(f'"{name}"' for name in FIELDS)
    query = (
        f'SELECT {fields} FROM "{OUTPUT_MEASUREMENT}" WHERE "uniqueID" = \'{quoted}\' '
        f"AND time >= '{rfc3339(start)}' AND time < '{rfc3339(stop)}'"
    )
    result = local_influxd.query(url, query, DATABASE)["results"][0]
    found = result.get("series") or [{"columns": ["time", *FIELDS], "values": []}]
    frame = pd.DataFrame(found[0]["values"], columns=found[0]["columns"])
    frame.index = pd.to_datetime(frame.pop("time"), unit="s", utc=True)
    numbers = {k: pd.to_numeric(frame[k], errors="coerce") for k in ("loss", "score", "threshold")}
    return frame.assign(anomaly=frame["anomaly"].fillna(False).astype(bool), **numbers)


# ---------------------------------------------------------------- figures


def runs(times: pd.DatetimeIndex, interval: pd.Timedelta, within: int = 1) -> int:
    """Maximal runs of sorted times that are at most ``within`` intervals apart (1: consecutive)."""
    if len(times) == 0:
        return 0
    return 1 + int(np.count_nonzero((times[1:] - times[:-1]) > within * interval))


def ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else math.nan


def f1(precision: float, recall: float) -> float:
    """Harmonic mean; NaN when recall is, 0 when nothing was flagged."""
    if math.isnan(recall):
        return math.nan
    return 0.0 if math.isnan(precision) or precision + recall == 0 else 2 * precision * recall / (precision + recall)


def score_series(series: Series, points: pd.DataFrame, window: int, interval: pd.Timedelta) -> dict:
    """Counts of one series' points against its labelled windows, as the module docstring defines them."""
    times = points.index
    flagged = points["anomaly"].to_numpy(dtype=bool)
    positive = np.zeros(len(times), dtype=bool)
    events = found = found_by_missing_only = 0
    missing = (points["kind"] == "missing").to_numpy()
    details = []
    for start, end in series.windows:
        span = (times >= start.floor(interval)) & (times <= end.floor(interval) + (window - 1) * interval)
        hit = span & flagged
        positive |= span
        events += bool(span.any())
        found += bool(hit.any())
        found_by_missing_only += bool(hit.any() and not (hit & ~missing).any())
        if span.any():
            details.append(event_detail(start, end, points[span], hit[span]))
    outside = flagged & ~positive
    scored = points["loss"].notna().to_numpy()
    weeks = (times[-1] - times[0] + interval) / WEEK if len(times) else 0.0
    return {
        "points": len(times),
        "windows": int(scored.sum()),
        "missing": int(missing.sum()),
        "flagged": int(flagged.sum()),
        "positive": int(positive.sum()),
        "true_positive": int((flagged & positive).sum()),
        "flagged_outside": int(outside.sum()),
        "flagged_windows_outside": int((outside & scored).sum()),
        "events": events,
        "found": found,
        "found_by_missing_only": found_by_missing_only,
        "false_alarm_runs": runs(times[outside], interval),
        "false_alarm_events": runs(times[outside], interval, joined_within(window)),
        "weeks": weeks,
        "kinds": Counter(points.loc[flagged, "kind"]),
        "event_details": details,
        "first": times[0] if len(times) else None,
        "last": times[-1] if len(times) else None,
    }


def event_detail(start: pd.Timestamp, end: pd.Timestamp, span: pd.DataFrame, hit: np.ndarray) -> dict:
    """Why one labelled event was found or missed: the highest score in its span, and the effective threshold
    of that window (the dynamic threshold, or its floor: the model's threshold x ratio x --dynamic-floor)."""
    scored = span["score"].dropna()
    peak = scored.idxmax() if len(scored) else None
    return {
        "start": start,
        "end": end,
        "found": bool(hit.any()),
        "kinds": Counter(span.loc[hit, "kind"]),
        "peak_score": math.nan if peak is None else float(scored[peak]),
        "threshold_at_peak": math.nan if peak is None else float(span.at[peak, "threshold"]),
    }


def rates(counts: dict) -> dict:
    """The rates of summed (or one series') counts."""
    precision = ratio(counts["true_positive"], counts["flagged"])
    recall = ratio(counts["true_positive"], counts["positive"])
    event_recall = ratio(counts["found"], counts["events"])
    event_precision = ratio(counts["found"], counts["found"] + counts["false_alarm_runs"])
    return {
        "point_f1": f1(precision, recall),
        "event_recall": event_recall,
        "event_f1": f1(event_precision, event_recall),
        "false_alarm_runs_per_week": ratio(counts["false_alarm_runs"], counts["weeks"]),
        "false_alarm_events_per_week": ratio(counts["false_alarm_events"], counts["weeks"]),
        "flagged_outside_share": ratio(counts["flagged_outside"], counts["points"]),
        "flagged_windows_outside_share": ratio(counts["flagged_windows_outside"], counts["windows"]),
    }


def fleet_counts(rows: list[dict]) -> dict:
    """The counts and weeks of every series summed, flagged points by kind too."""
    keys = (
        "points",
        "windows",
        "missing",
        "flagged",
        "positive",
        "true_positive",
        "flagged_outside",
        "flagged_windows_outside",
        "events",
        "found",
        "found_by_missing_only",
        "false_alarm_runs",
        "false_alarm_events",
        "weeks",
    )
    return {**{k: sum(row[k] for row in rows) for k in keys}, "kinds": sum((row["kinds"] for row in rows), Counter())}


def duration_text(duration: pd.Timedelta) -> str:
    """5m, 1h: as the jobs' flags write durations."""
    minutes = int(duration / pd.Timedelta(minutes=1))
    return f"{minutes // 60}h" if minutes % 60 == 0 else f"{minutes}m"


def rounded(value: float, digits: int) -> float | None:
    """For JSON, which has no NaN."""
    return None if math.isnan(value) else round(value, digits)


def cell(value: float, spec: str) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def print_table(rows: list[dict]) -> None:
    """The per-series table, Markdown, on stdout."""
    header = (
        "series",
        "step",
        "scored range (UTC)",
        "trained windows",
        "labelled intervals left out",
        "scored windows",
        "missing points",
        "flagged points",
        "events",
        "found",
        "false-alarm runs",
        "per week",
        "false-alarm events",
        "flagged windows outside",
        "flagged outside",
        "point F1",
    )
    print("| " + " | ".join(header) + " |")
    print("| --- | --- | --- |" + " ---: |" * (len(header) - 3))
    for row in rows:
        scored = (
            f"{row['first']:%Y-%m-%d %H:%M} .. {row['last']:%Y-%m-%d %H:%M}"
            if row["first"] is not None
            else "nothing scored"
        )
        cells = (
            row["sensor_id"],
            row["step"],
            scored,
            cell(row["trained_windows"], "d"),
            cell(row["labelled_left_out"], "d"),
            str(row["windows"]),
            str(row["missing"]),
            str(row["flagged"]),
            str(row["events"]),
            str(row["found"]),
            str(row["false_alarm_runs"]),
            cell(row["false_alarm_runs_per_week"], ".1f"),
            str(row["false_alarm_events"]),
            cell(100 * row["flagged_windows_outside_share"], ".1f") + "%",
            cell(100 * row["flagged_outside_share"], ".1f") + "%",
            cell(row["point_f1"], ".2f"),
        )
        print("| " + " | ".join(cells) + " |")


def print_events(rows: list[dict]) -> None:
    """The labelled events in the scored parts, Markdown, on stdout: which were found, and how close the
    others came (a peak score under 1 with the threshold at the model's: below the floor; above it: under
    the dynamic threshold)."""
    header = ("series", "labelled window (UTC)", "found", "kinds flagged", "highest score", "its threshold / model's")
    print("| " + " | ".join(header) + " |")
    print("| --- | --- | --- | --- |" + " ---: |" * (len(header) - 4))
    for row in rows:
        for event in row["event_details"]:
            kinds = ", ".join(f"{n} {kind}" for kind, n in sorted(event["kinds"].items()))
            cells = (
                row["sensor_id"],
                f"{event['start']:%Y-%m-%d %H:%M} .. {event['end']:%Y-%m-%d %H:%M}",
                "yes" if event["found"] else "no",
                kinds or "–",
                cell(event["peak_score"], ".2f"),
                cell(event["threshold_at_peak"] / row["model_threshold"], ".2f"),
            )
            print("| " + " | ".join(cells) + " |")


def evaluate_fleet(summary: Path) -> dict:
    """sensor_evaluate.py's fleet row (its own definitions, see the README's Metrics)."""
    with open(summary, newline="", encoding="utf-8") as handle:
        fleet = next(row for row in csv.DictReader(handle) if row["sensor"] == "fleet")
    keys = ("events", "events_detected", "event_recall", "event_f1", "f1", "false_alarms", "false_alarms_per_week")
    return {k: float(fleet[k]) if fleet[k] else None for k in keys}


# ---------------------------------------------------------------- the run


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def train_and_score(
    series: list[Series], args: argparse.Namespace, interval: pd.Timedelta, workdir: Path, url: str
) -> tuple[dict[str, dict], dict, dict[str, float]]:
    """Import the training parts, train, import the scored parts, backfill each series, evaluate; the models'
    metadata by sensor id, sensor_evaluate.py's fleet row and the seconds of each step."""
    splits = {s.sensor_id: s.split(args.train_fraction, interval) for s in series}
    training_csv, scored_csv = write_parts(series, splits, interval, workdir)
    models, logs = workdir / "models", workdir / "logs"
    logs.mkdir()
    common = ["--interval", args.interval, "--models-dir", str(models)]
    seconds = {
        "import": run_job(
            "sensor_import.py", [str(training_csv), "--label-field", LABEL_FIELD], url, logs / "import.log"
        )
    }
    log(f"imported the training parts in {seconds['import']:.0f}s; training")
    start = min(s.readings.index[0] for s in series).floor(interval)
    stop = max(split for split, _ in splits.values())
    argv = [
        *common,
        "--start",
        rfc3339(start),
        "--stop",
        rfc3339(stop),
        "--label-field",
        LABEL_FIELD,
        "--seed",
        str(args.seed),
        *(["--jobs", str(args.jobs)] if args.jobs is not None else []),
    ]
    if args.models_from is None:
        seconds["training"] = run_job("sensor_training.py", argv, url, logs / "training.log")
        log(f"trained in {seconds['training']:.0f}s; scoring")
    else:
        shutil.copytree(args.models_from / "models", models)
        log(f"models copied from {args.models_from}; scoring")
    seconds["import"] += run_job(
        "sensor_import.py", [str(scored_csv), "--label-field", LABEL_FIELD], url, logs / "import.log"
    )
    seconds["predict"] = 0.0
    for sensor_id, (first, end) in splits.items():
        argv = [*common, "--sensor", sensor_id, "--start", rfc3339(first), "--stop", rfc3339(end), *args.predict_flags]
        seconds["predict"] += run_job("sensor_predict.py", argv, url, logs / "predict.log")
    log(f"scored in {seconds['predict']:.0f}s ({len(splits)} runs); evaluating")
    argv = [
        *common,
        "--start",
        rfc3339(min(first for first, _ in splits.values())),
        "--stop",
        rfc3339(max(end for _, end in splits.values())),
        "--label-field",
        LABEL_FIELD,
        "--output",
        str(workdir / "evaluation"),
        "--no-plots",
    ]
    seconds["evaluate"] = run_job("sensor_evaluate.py", argv, url, logs / "evaluate.log")
    return trained_models(models), evaluate_fleet(workdir / "evaluation" / "summary.csv"), seconds


def series_rows(
    series: list[Series], facts: dict[str, dict], args: argparse.Namespace, interval: pd.Timedelta, url: str
) -> list[dict]:
    """One row of counts and rates per series, from the points read back."""
    rows = []
    for one in series:
        first, end = one.split(args.train_fraction, interval)
        model = facts.get(one.sensor_id, {})
        # Without a model the robust detector scored single readings: a window of one.
        counts = score_series(one, read_points(url, one.sensor_id, first, end), model.get("window", 1), interval)
        rows.append(
            {
                "sensor_id": one.sensor_id,
                "step": duration_text(one.step),
                "trained_windows": model.get("windows"),
                "labelled_left_out": model.get("labelled_intervals_dropped"),
                "model_threshold": model.get("threshold", math.nan),
                **counts,
                **rates(counts),
            }
        )
    return rows


def summary(
    rows: list[dict], evaluated: dict, args: argparse.Namespace, seconds: dict[str, float], wall: float
) -> dict:
    """The final line's figures."""
    fleet = fleet_counts(rows)
    figures = rates(fleet)
    return {
        "event_recall": rounded(figures["event_recall"], 4),
        "event_f1": rounded(figures["event_f1"], 4),
        "false_alarm_runs_per_series_week": rounded(figures["false_alarm_runs_per_week"], 3),
        "false_alarm_events_per_series_week": rounded(figures["false_alarm_events_per_week"], 3),
        "point_f1": rounded(figures["point_f1"], 4),
        "max_flagged_windows_outside_share": rounded(max(row["flagged_windows_outside_share"] for row in rows), 4),
        "max_flagged_outside_share": rounded(max(row["flagged_outside_share"] for row in rows), 4),
        "series": len(rows),
        "series_with_events_scored": sum(row["events"] > 0 for row in rows),
        "series_without_model": sum(row["trained_windows"] is None for row in rows),
        "events": fleet["events"],
        "found": fleet["found"],
        "found_by_missing_only": fleet["found_by_missing_only"],
        "false_alarm_runs": fleet["false_alarm_runs"],
        "false_alarm_events": fleet["false_alarm_events"],
        "series_weeks": round(fleet["weeks"], 2),
        "points": fleet["points"],
        "flagged": fleet["flagged"],
        "missing_points": fleet["missing"],
        "flagged_by_kind": dict(sorted(fleet["kinds"].items())),
        "sensor_evaluate_fleet": evaluated,
        "wall_s": round(wall, 1),
        "step_s": {k: round(v, 1) for k, v in seconds.items()},
        "protocol": {
            "interval": args.interval,
            "train_fraction": args.train_fraction,
            "seed": args.seed,
            "jobs": args.jobs,
            "quick": args.quick,
            "label_field": True,
            "event_span": "NAB window on the interval grid + (window-1) intervals",
            "flags": "anomaly=true of every kind, missing included",
            "model": "job defaults",
            "models_from": None if args.models_from is None else str(args.models_from),
            "predict_flags": args.predict_flags,
        },
    }


def workspace(keep: Path | None) -> Path:
    """The working directory: --keep's (made, must be empty) or a temporary one."""
    if keep is None:
        return Path(tempfile.mkdtemp(prefix="bench_real-"))
    keep.mkdir(parents=True, exist_ok=True)
    if any(keep.iterdir()):
        raise FileExistsError(f"--keep {keep} is not empty")
    return keep.resolve()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--data",
        type=Path,
        default=ROOT.parent / "shared" / "data" / "nab",
        help="the NAB subset (default <repo>/../shared/data/nab)",
    )
    parser.add_argument("--quick", action="store_true", help=f"only {len(QUICK)} series, for development")
    parser.add_argument("--interval", default="5m", help="the jobs' --interval (default 5m; see above)")
    parser.add_argument(
        "--train-fraction",
        type=float,
        default=0.25,
        help="share of each series' time span trained on (default 0.25; see above)",
    )
    parser.add_argument("--seed", type=int, default=1, help="sensor_training.py --seed (default 1)")
    parser.add_argument("--jobs", type=int, help="sensor_training.py --jobs (default: the job's, one per core)")
    parser.add_argument(
        "--keep",
        type=Path,
        metavar="DIR",
        help="work in DIR (made, must be empty) and keep it: CSVs, logs, models, evaluation",
    )
    parser.add_argument(
        "--models-from",
        type=Path,
        metavar="DIR",
        help="score with the models of an earlier run kept with --keep DIR instead of training (same --interval, "
        "--train-fraction and --seed): compares scoring rules on the same models in a few minutes",
    )
    parser.add_argument(
        "--predict-flags",
        type=shlex.split,
        default=[],
        metavar="FLAGS",
        help="extra sensor_predict.py flags for every scoring run, e.g. '--min-consecutive 3'",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    from tools import local_influxd

    args = build_parser().parse_args(argv)
    began = time.monotonic()
    try:
        interval = pd.Timedelta(args.interval)
    except ValueError:
        log(f"--interval {args.interval!r} is not a duration such as 5m or 15m")
        return 2
    if not 0 < args.train_fraction < 1:
        log(f"--train-fraction {args.train_fraction} must be between 0 and 1")
        return 2
    if not (args.data / "combined_windows.json").exists():
        log(f"no NAB data at {args.data} (combined_windows.json missing); pass --data")
        return 2
    try:
        workdir = workspace(args.keep)
    except FileExistsError as e:
        log(str(e))
        return 2
    if args.models_from is not None and not (args.models_from / "models").is_dir():
        log(f"--models-from {args.models_from}: no models directory in it; pass a directory kept with --keep")
        return 2
    series = load_series(args.data, QUICK if args.quick else None)
    log(
        f"bench_real: {len(series)} series, --interval {args.interval}, training on the first "
        f"{args.train_fraction:.0%} of each; working in {workdir}"
    )
    # The jobs' state (notifications, ranges to score again) stays with the run, not in the user's home.
    os.environ["STATE_DIRECTORY"] = str(workdir / "state")
    server = local_influxd.LocalInfluxd(workdir / "influxd").start()
    try:
        local_influxd.query(server.url, f'CREATE DATABASE "{DATABASE}"')
        facts, evaluated, seconds = train_and_score(series, args, interval, workdir, server.url)
        rows = series_rows(series, facts, args, interval, server.url)
    except JobError as e:
        log(str(e))
        return 1
    finally:
        server.stop()
        if args.keep is None:
            shutil.rmtree(workdir, ignore_errors=True)
        else:
            log(f"kept {workdir}")
    print_table(rows)
    print()
    print_events(rows)
    print(json.dumps(summary(rows, evaluated, args, seconds, time.monotonic() - began), sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
