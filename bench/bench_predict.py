#!/usr/bin/env python3
"""Benchmark of the scoring job: sensor_predict.py run as whole processes, as cron runs it, against a real
local InfluxDB. Not part of the test suite (tests/test_bench_smoke.py only checks that it runs).

Targets from the issue tracker, on this 2-core machine, for one cron tick scoring 1,000 sensors (one new
15-minute window each, models of the default shape: window 15, 32 units), from process start to exit:
<= 10 s wall, peak RSS <= 500 MB, and >= 20x faster than the per-sensor Keras load-and-predict path
(``--engine keras``) measured in the same run.

Scenarios, each one run of the job with ``--now`` fixed and ``--delay 0s``:

    tick        --sensors sensors, each scored up to the previous interval: one new window each
    tick_keras  the same tick, same data and models, with --engine keras (for keras_ratio)
    catchup     --sensors sensors, each last scored a day ago: 96 windows each
    tick_big    --big sensors, one new window each (numpy engine only)

Set-up (not timed): a throwaway influxd; generated readings at 15-minute samples; a day of earlier scores
per sensor (synthetic points, so each job resumes where the scenario says); ``--trained`` models trained
by sensor_training.py run as a process; every other model derived from one of those by multiplying each
weight by 1 + N(0, 0.01), with a scaler fitted on its own sensor's readings, and saved with
artifacts.save. The derived models of the first --sensors sensors are real Keras files, so both engines
score them; those of the further --big sensors hold the perturbed weights for the numpy engine and a
copy of their base model's Keras file (saving 9,000 Keras models would dominate the run).

Measurement: wall time with time.monotonic around the job's process; peak RSS is the larger of the
kernel's figure for that one process (os.wait4, which covers its waited-for children too) and the sum
of the RSS of its process tree sampled every 50 ms (the kernel keeps a maximum per process, not a sum,
should the job ever run workers side by side). MB are MiB, as ps and top count. Each run must exit 0 and
have written exactly the expected points, or the benchmark fails.

    .venv/bin/python bench/bench_predict.py            # full size: 1,000 and 10,000 sensors
    .venv/bin/python bench/bench_predict.py --quick    # 40 and 200 sensors, about a minute

Progress goes to stderr; stdout gets a table and, as its last line, one JSON object with the figures.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import artifacts  # noqa: E402
import clean  # noqa: E402
from anomaly import logs, times  # noqa: E402
from influx_interact import influxql_ident, influxql_time, line_protocol  # noqa: E402
from tools import local_influxd, sensor_data  # noqa: E402

logger = logging.getLogger("bench_predict")

NOW = pd.Timestamp("2026-01-15T00:00:00Z")
INTERVAL = pd.Timedelta(minutes=15)
# Every scored sensor has readings over the last READINGS_SPAN (enough for a day of windows, their
# first window's earlier points and the gap margin); the --big sensors beyond the first --sensors only
# need one window and the gap margin.
READINGS_SPAN = pd.Timedelta(days=2)
BIG_READINGS_SPAN = pd.Timedelta(hours=6)
TRAINING_START, TRAINING_STOP = NOW - pd.Timedelta(days=6), NOW - pd.Timedelta(days=2)
HISTORY_POINTS = 96  # earlier scores per sensor before its newest one: a day
CATCHUP_WINDOWS = 96  # a day of 15-minute intervals
PERTURBATION = 0.01
SENSOR_TAG = "uniqueID"
TARGETS = {"wall_s": 10.0, "peak_rss_mb": 500.0, "keras_ratio": 20.0}
TARGET_SENSORS = 1000


@dataclass(frozen=True)
class Scenario:
    """One measured run of the job; every sensor's newest score before it is ``last_scored``."""

    name: str
    database: str
    sensor_ids: tuple[str, ...]
    windows_per_sensor: int
    engine: str
    output: str

    @property
    def last_scored(self) -> pd.Timestamp:
        return NOW - (self.windows_per_sensor + 1) * INTERVAL

    @property
    def first_end(self) -> pd.Timestamp:
        return NOW - self.windows_per_sensor * INTERVAL


@dataclass(frozen=True)
class Measurement:
    wall_s: float
    peak_rss_mb: float
    rusage_mb: float
    sampled_mb: float


def sensor_id(number: int) -> str:
    return f"AHU-{number:05d} supply air temp"


# ------------------------------------------------------------------ data


def generate_readings(sensor_ids: list[str], trained: set[str], seed: int) -> dict[str, pd.Series]:
    """Readings at 15-minute samples ending just before NOW: training span too for the trained sensors."""
    readings = {}
    for sid in sensor_ids:
        start = TRAINING_START if sid in trained else NOW - READINGS_SPAN
        index = pd.date_range(start, NOW, freq=INTERVAL, inclusive="left")
        readings[sid] = pd.Series(sensor_data.normal_readings(sid, index, seed), index=index)
    return readings


def readings_lines(readings: dict[str, pd.Series], since: pd.Timestamp | None = None) -> list[str]:
    lines = []
    for sid, series in readings.items():
        part = series if since is None else series[series.index >= since]
        lines += sensor_data.readings_lines(sid, part.index, part.to_numpy())
    return lines


def history_lines(measurement: str, series: pd.Series, newest: pd.Timestamp, threshold: float) -> list[str]:
    """HISTORY_POINTS synthetic scores up to ``newest`` (fixed loss, no anomaly), so the job resumes after it."""
    sid = str(series.name)
    template = line_protocol(measurement, {SENSOR_TAG: sid}, {"loss": 0.0}, 0)
    prefix = template[: -len(" loss=0.0 0")]
    times = pd.date_range(end=newest, periods=HISTORY_POINTS, freq=INTERVAL)
    values = series.reindex(times).fillna(float(series.mean())).to_numpy()
    return [f"{prefix} val_num={float(v)!r},loss=0.05,threshold={threshold!r},anomaly=false {int(t.timestamp())}"
            for t, v in zip(times, values)]


def write_history(url: str, scenario: Scenario, readings: dict[str, pd.Series], thresholds: dict[str, float]) -> None:
    lines = []
    for sid in scenario.sensor_ids:
        lines += history_lines(scenario.output, readings[sid].rename(sid), scenario.last_scored, thresholds[sid])
    local_influxd.write(url, scenario.database, lines)


# ------------------------------------------------------------------ models


def job_env(url: str, database: str) -> dict[str, str]:
    """The environment cron would give the job: connection in INFLUX_* variables, nothing else of ours."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFLUX_")}
    env.update(INFLUX_URL=url, INFLUX_DATABASE=database)
    return env


def common_args(workdir: Path) -> list[str]:
    return ["--models-dir", str(workdir / "models"), "--ratios", str(workdir / "ratios.json"),
            "--windows", str(workdir / "windows.json")]


def train(url: str, workdir: Path, trained_ids: list[str], epochs: int) -> None:
    """Train the base models with sensor_training.py as a process (units and window at their defaults)."""
    command = [sys.executable, str(ROOT / "sensor_training.py"), *common_args(workdir),
               "--start", times.format_time(TRAINING_START), "--stop", times.format_time(TRAINING_STOP),
               "--epochs", str(epochs), "--patience", "2", "--seed", "1"]
    for sid in trained_ids:
        command += ["--sensor", sid]
    log = workdir / "logs" / "training.log"
    with open(log, "wb") as out:
        code = subprocess.run(command, env=job_env(url, "fleet"), cwd=workdir, stdout=out, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL).returncode
    if code != 0:
        raise RuntimeError(f"sensor_training.py exited with {code}:\n{tail(log)}")
    missing = [sid for sid in trained_ids
               if not (artifacts.sensor_dir(workdir / "models", sid) / artifacts.METADATA).exists()]
    if missing:
        raise RuntimeError(f"sensor_training.py trained no model for {missing}:\n{tail(log)}")


class CopiedModelFile:
    """Stands in for a Keras model in artifacts.save: its 'save' copies the base sensor's Keras file."""

    def __init__(self, source: Path):
        self.source = source

    def save(self, path: Path) -> None:
        shutil.copyfile(self.source, path)


def derive_models(models_dir: Path, trained_ids: list[str], keras_ids: list[str], numpy_ids: list[str],
                  readings: dict[str, pd.Series], seed: int) -> dict[str, float]:
    """Save a model for every sensor of ``keras_ids`` and ``numpy_ids``, derived from a trained one.

    Base model k % len(trained_ids); each weight times 1 + N(0, PERTURBATION); scaler fitted on the
    sensor's own readings; metadata copied from the base with sensor id, scaler and trained_at changed
    (and ``derived_from`` added). Sensors of ``keras_ids`` get a real Keras file with those weights,
    those of ``numpy_ids`` a copy of the base's Keras file. Returns every sensor's threshold.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    import model_trainer

    rng = np.random.default_rng(seed)
    bases = []
    for sid in trained_ids:
        metadata = artifacts.load_metadata(artifacts.sensor_dir(models_dir, sid))
        model = keras.models.load_model(metadata["paths"]["model"])
        bases.append((metadata, model, model.get_weights()))
    thresholds = {sid: float(metadata["threshold"]) for sid, (metadata, _, _) in zip(trained_ids, bases)}
    for number, sid in enumerate(keras_ids + numpy_ids):
        metadata, model, weights = bases[number % len(bases)]
        model.set_weights([(w * (1.0 + rng.normal(0.0, PERTURBATION, w.shape))).astype(w.dtype) for w in weights])
        series = readings[sid]
        scaler = clean.fit_scaler(series)
        record = {key: value for key, value in metadata.items()
                  if key not in ("format_version", "version", "files", "sha256", "paths")}
        record.update(sensor_id=sid, scaler={"mean": float(scaler.mean_[0]), "scale": float(scaler.scale_[0])},
                      trained_at=times.format_time(pd.Timestamp.now(tz="UTC")),
                      derived_from={"sensor_id": metadata["sensor_id"], "weights": f"x (1 + N(0, {PERTURBATION}))",
                                    "keras_file": "perturbed" if number < len(keras_ids) else "copy of the base's"})
        saved = model if number < len(keras_ids) else CopiedModelFile(metadata["paths"]["model"])
        artifacts.save(artifacts.sensor_dir(models_dir, sid), saved, scaler, model_trainer.export_weights(model), record)
        thresholds[sid] = float(metadata["threshold"])
        if (number + 1) % 1000 == 0:
            logger.info("derived %d of %d models", number + 1, len(keras_ids) + len(numpy_ids))
    return thresholds


# ------------------------------------------------------------------ measuring


# Runs the job given after the result path and writes its exit code, wall time and ru_maxrss there. The
# job is spawned from this small interpreter, not from the benchmark: Linux counts the memory of the
# process a child is spawned from, up to its exec, in the child's ru_maxrss, and the benchmark process
# holds TensorFlow. wait4 gives the rusage of that one child, where RUSAGE_CHILDREN would mix in others.
LAUNCHER = """
import json, os, sys, time
began = time.monotonic()
pid = os.posix_spawn(sys.argv[2], sys.argv[2:], os.environ)
_, status, usage = os.wait4(pid, 0)
wall_s = time.monotonic() - began
with open(sys.argv[1], "w") as f:
    json.dump({"exit_code": os.waitstatus_to_exitcode(status), "wall_s": wall_s, "maxrss_kib": usage.ru_maxrss}, f)
"""


def descendants_rss_bytes(root_pid: int) -> int:
    """Sum of the resident set sizes of a process's descendants (not itself), from /proc."""
    parents = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    stat = f.read()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(b")", 1)[1].split()[1])
    found, frontier = set(), {root_pid}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier and pid not in found}
        found |= frontier
    total, page = 0, os.sysconf("SC_PAGE_SIZE")
    for pid in found:
        try:
            with open(f"/proc/{pid}/statm", "rb") as f:
                total += int(f.read().split()[1]) * page
        except (OSError, IndexError, ValueError):
            continue
    return total


class TreeRssSampler(threading.Thread):
    """Largest descendants_rss_bytes of a process seen, sampled every ``period_s`` until stop()."""

    def __init__(self, pid: int, period_s: float = 0.05):
        super().__init__(daemon=True)
        self.pid, self.period_s, self.peak = pid, period_s, 0
        self._stopped = threading.Event()

    def run(self) -> None:
        while not self._stopped.is_set():
            self.peak = max(self.peak, descendants_rss_bytes(self.pid))
            self._stopped.wait(self.period_s)

    def stop(self) -> int:
        self._stopped.set()
        self.join()
        return self.peak


def measure(command: list[str], env: dict[str, str], cwd: Path, log: Path) -> Measurement:
    """Run one command as a process: its wall time, and the peak RSS of it (and of its process tree)."""
    result_path = log.with_suffix(".result.json")
    with open(log, "wb") as out:
        launcher = subprocess.Popen([sys.executable, "-I", "-S", "-c", LAUNCHER, str(result_path), *command],
                                    env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        sampler = TreeRssSampler(launcher.pid)
        sampler.start()
        launcher.wait()
        sampled = sampler.stop()
    if launcher.returncode != 0:
        raise RuntimeError(f"the launcher of {Path(command[1]).name} exited with {launcher.returncode}:\n{tail(log)}")
    result = json.loads(result_path.read_text())
    if result["exit_code"] != 0:
        raise RuntimeError(f"{Path(command[1]).name} exited with {result['exit_code']}:\n{tail(log)}")
    rusage_mb = result["maxrss_kib"] / 1024
    sampled_mb = sampled / 2**20
    return Measurement(round(result["wall_s"], 3), round(max(rusage_mb, sampled_mb), 1), round(rusage_mb, 1),
                       round(sampled_mb, 1))


def tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])


def run_scenario(url: str, workdir: Path, scenario: Scenario, extra: list[str]) -> Measurement:
    command = [sys.executable, str(ROOT / "sensor_predict.py"), *common_args(workdir),
               "--now", times.format_time(NOW), "--delay", "0s", "--engine", scenario.engine,
               "--output-measurement", scenario.output, "--log-level", "WARNING", *extra]
    logger.info("running %s: %d sensors x %d windows, --engine %s", scenario.name, len(scenario.sensor_ids),
                scenario.windows_per_sensor, scenario.engine)
    result = measure(command, job_env(url, scenario.database), workdir, workdir / "logs" / f"{scenario.name}.log")
    check_written(url, scenario)
    logger.info("%s: %.2f s, peak RSS %.0f MB", scenario.name, result.wall_s, result.peak_rss_mb)
    return result


def query_series(url: str, database: str, query: str) -> dict[str, list]:
    """Values of each series of an InfluxQL answer grouped by the sensor tag, by sensor id."""
    result = local_influxd.query(url, query, database)["results"][0]
    if "error" in result:
        raise RuntimeError(f"{query}: {result['error']}")
    return {s["tags"][SENSOR_TAG]: s["values"] for s in result.get("series", [])}


def scored_range(scenario: Scenario) -> str:
    return (f"time >= {influxql_time(scenario.first_end)} AND time < {influxql_time(NOW)} "
            f"GROUP BY {influxql_ident(SENSOR_TAG)}")


def check_written(url: str, scenario: Scenario) -> None:
    """Every sensor has exactly one point per window it was due, and no other sensor has any."""
    found = query_series(url, scenario.database,
                         f'SELECT count("loss") FROM {influxql_ident(scenario.output)} WHERE {scored_range(scenario)}')
    counts = {sid: values[0][1] for sid, values in found.items()}
    wrong = {sid: counts.get(sid, 0) for sid in scenario.sensor_ids if counts.get(sid, 0) != scenario.windows_per_sensor}
    extra = counts.keys() - set(scenario.sensor_ids)
    if wrong or extra:
        sample = dict(list(wrong.items())[:5])
        raise RuntimeError(f"{scenario.name}: expected {scenario.windows_per_sensor} points per sensor in "
                           f"{scenario.output}; {len(wrong)} sensors differ (e.g. {sample}), "
                           f"{len(extra)} unexpected sensors")


def anomalies(url: str, scenario: Scenario) -> int:
    found = query_series(url, scenario.database, f'SELECT count("loss") FROM {influxql_ident(scenario.output)} '
                                                 f'WHERE "anomaly" = true AND {scored_range(scenario)}')
    return sum(values[0][1] for values in found.values())


def losses(url: str, scenario: Scenario) -> dict[str, float]:
    found = query_series(url, scenario.database,
                         f'SELECT "loss" FROM {influxql_ident(scenario.output)} WHERE {scored_range(scenario)}')
    return {sid: values[-1][1] for sid, values in found.items()}


# ------------------------------------------------------------------ report


def figures(scenario: Scenario, result: Measurement) -> dict:
    sensors = len(scenario.sensor_ids)
    return {"sensors": sensors, "windows": sensors * scenario.windows_per_sensor,
            "windows_per_sensor": scenario.windows_per_sensor, "engine": scenario.engine,
            "wall_s": result.wall_s, "peak_rss_mb": result.peak_rss_mb}


def table(rows: list[tuple[Scenario, Measurement, int]], ratio: float) -> str:
    header = (f"{'scenario':<11} {'engine':<6} {'sensors':>8} {'windows':>8} {'wall s':>8} {'peak RSS MB':>12} "
              f"{'(wait4':>7} {'tree)':>6} {'ms/sensor':>10} {'anomalies':>10}")
    out = [header, "-" * len(header)]
    for scenario, result, flagged in rows:
        sensors = len(scenario.sensor_ids)
        out.append(f"{scenario.name:<11} {scenario.engine:<6} {sensors:>8} {sensors * scenario.windows_per_sensor:>8} "
                   f"{result.wall_s:>8.2f} {result.peak_rss_mb:>12.0f} {result.rusage_mb:>7.0f} "
                   f"{result.sampled_mb:>6.0f} {1000 * result.wall_s / sensors:>10.2f} {flagged:>10}")
    out.append(f"keras_ratio (tick_keras wall / tick wall): {ratio:.1f}x")
    return "\n".join(out)


def target_lines(tick: dict, sensors: int) -> list[str]:
    checks = [("wall_s", tick["wall_s"] <= TARGETS["wall_s"], f"wall {tick['wall_s']:.2f} s <= {TARGETS['wall_s']:g} s"),
              ("peak_rss_mb", tick["peak_rss_mb"] <= TARGETS["peak_rss_mb"],
               f"peak RSS {tick['peak_rss_mb']:.0f} MB <= {TARGETS['peak_rss_mb']:g} MB"),
              ("keras_ratio", tick["keras_ratio"] >= TARGETS["keras_ratio"],
               f"{tick['keras_ratio']:.1f}x >= {TARGETS['keras_ratio']:g}x faster than --engine keras")]
    scope = "" if sensors == TARGET_SENSORS else f" (the targets are for {TARGET_SENSORS} sensors; this run has {sensors})"
    return [f"targets for the tick{scope}:"] + [f"  {'met' if ok else 'MISSED'}: {text}" for _, ok, text in checks]


# ------------------------------------------------------------------ main


def resolve_sizes(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    args.sensors = args.sensors or (40 if args.quick else 1000)
    args.big = (200 if args.quick else 10000) if args.big is None else args.big
    args.epochs = args.epochs or (2 if args.quick else 5)
    if not 1 <= args.trained <= args.sensors:
        parser.error(f"--trained {args.trained} must be between 1 and --sensors {args.sensors}")
    if args.big and args.big < args.sensors:
        parser.error(f"--big {args.big} must be 0 (skip the big tick) or at least --sensors {args.sensors}")


def prepare(args: argparse.Namespace, url: str, workdir: Path) -> list[Scenario]:
    """Readings, models and earlier scores for every scenario; returns the scenarios in the order to run."""
    began = time.monotonic()
    (workdir / "logs").mkdir(parents=True, exist_ok=True)
    (workdir / "ratios.json").write_text("{}")
    (workdir / "windows.json").write_text("{}")
    fleet_ids = [sensor_id(n) for n in range(args.sensors)]
    big_ids = [sensor_id(n) for n in range(args.big)]
    trained_ids = fleet_ids[:args.trained]

    readings = generate_readings(big_ids or fleet_ids, set(trained_ids), args.seed)
    local_influxd.query(url, 'CREATE DATABASE "fleet"')
    local_influxd.write(url, "fleet", readings_lines({sid: readings[sid] for sid in fleet_ids}))
    if args.big:
        local_influxd.query(url, 'CREATE DATABASE "big"')
        local_influxd.write(url, "big", readings_lines(readings, since=NOW - BIG_READINGS_SPAN))
    logger.info("wrote the readings (%.0f s so far)", time.monotonic() - began)

    train(url, workdir, trained_ids, args.epochs)
    logger.info("trained %d models (%.0f s so far)", len(trained_ids), time.monotonic() - began)
    thresholds = derive_models(workdir / "models", trained_ids, fleet_ids[args.trained:], big_ids[args.sensors:],
                               readings, args.seed)
    logger.info("derived %d models (%.0f s so far)", len(thresholds) - len(trained_ids), time.monotonic() - began)

    fleet = tuple(fleet_ids)
    scenarios = [Scenario("tick", "fleet", fleet, 1, "numpy", "PREDICT_ANOMALY"),
                 Scenario("tick_keras", "fleet", fleet, 1, "keras", "PREDICT_ANOMALY_KERAS"),
                 Scenario("catchup", "fleet", fleet, CATCHUP_WINDOWS, "numpy", "PREDICT_ANOMALY_CATCHUP")]
    if args.big:
        scenarios.append(Scenario("tick_big", "big", tuple(big_ids), 1, "numpy", "PREDICT_ANOMALY"))
    for scenario in scenarios:
        write_history(url, scenario, readings, thresholds)
    logger.info("wrote a day of earlier scores per sensor and scenario (%.0f s so far)", time.monotonic() - began)
    return scenarios


def run(args: argparse.Namespace, workdir: Path) -> dict:
    """Prepare, run every scenario, check what was written; print the table and return the figures."""
    began = time.monotonic()
    derived, numpy_only = args.sensors - args.trained, max(0, args.big - args.sensors)
    logger.info("models: %d trained by sensor_training.py, %d derived from them by perturbing their weights "
                "(x (1 + N(0, %g))), %d more with perturbed weights for the numpy engine only (their Keras "
                "file is a copy of the base model's)", args.trained, derived, PERTURBATION, numpy_only)
    server = local_influxd.LocalInfluxd(workdir / "influxd").start()
    try:
        scenarios = prepare(args, server.url, workdir)
        rows = []
        for scenario in scenarios:
            result = run_scenario(server.url, workdir, scenario, args.predict_arg)
            rows.append((scenario, result, anomalies(server.url, scenario)))
        numpy_losses, keras_losses = losses(server.url, scenarios[0]), losses(server.url, scenarios[1])
    finally:
        server.stop()
    difference = max(abs(numpy_losses[sid] - keras_losses[sid]) for sid in scenarios[0].sensor_ids)
    if difference > 1e-3:
        raise RuntimeError(f"the numpy and keras ticks disagree: largest loss difference {difference:.2e}")

    report = {scenario.name: figures(scenario, result) for scenario, result, _ in rows}
    ratio = report["tick_keras"]["wall_s"] / report["tick"]["wall_s"]
    report["tick"]["keras_ratio"] = round(ratio, 2)
    print(table(rows, ratio))
    print(f"largest |loss numpy - loss keras| over the tick: {difference:.1e}")
    print(f"models: {args.trained} trained by sensor_training.py ({args.epochs} epochs at most), {derived} derived "
          f"by perturbing their weights x (1 + N(0, {PERTURBATION}))" + (
              f", {numpy_only} more derived the same way for the numpy engine only (Keras file copied from the base)"
              if numpy_only else ""))
    print("data: readings at 15-minute samples; a day of synthetic earlier scores per sensor; job flags: --now "
          f"{times.format_time(NOW)} --delay 0s --log-level WARNING {' '.join(args.predict_arg)}".rstrip())
    print("\n".join(target_lines(report["tick"], args.sensors)))
    print(f"benchmark took {time.monotonic() - began:.0f} s in all")
    report["models"] = {"trained": args.trained, "derived": derived, "derived_numpy_only": numpy_only,
                        "perturbation": PERTURBATION}
    report["max_loss_difference"] = float(f"{difference:.3g}")
    report["targets"] = dict(TARGETS, sensors=TARGET_SENSORS)
    return report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes for development: 40 and 200 sensors, 2 epochs")
    parser.add_argument("--sensors", type=int, help="sensors of the tick, keras and catch-up scenarios (default 1000)")
    parser.add_argument("--big", type=int, help="sensors of the big tick, 0 to skip it (default 10000)")
    parser.add_argument("--trained", type=int, default=4, help="models trained for real; the rest are derived (default 4)")
    parser.add_argument("--epochs", type=int, help="training epochs at most (default 5, --quick 2)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the readings and the perturbations (default 7)")
    parser.add_argument("--predict-arg", action="append", default=[], metavar="ARG",
                        help="extra argument for every measured sensor_predict.py run, repeatable (e.g. --predict-arg=--chunk-size=500)")
    parser.add_argument("--workdir", type=Path, help="keep everything here (default: a temporary directory, removed)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    resolve_sizes(parser, args)
    logs.configure("INFO")
    try:
        if args.workdir:
            if args.workdir.exists() and any(args.workdir.iterdir()):
                raise RuntimeError(f"--workdir {args.workdir} is not empty")
            report = run(args, args.workdir.resolve())
        else:
            with tempfile.TemporaryDirectory(prefix="bench-predict-") as directory:
                report = run(args, Path(directory))
    except RuntimeError as e:
        logger.error("%s", e)
        return 1
    print(json.dumps(report, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
