#!/usr/bin/env python3
"""Benchmark: sensors trained per hour by sensor_training.py, and where the time goes.

Not part of the test suite. Starts a throwaway influxd, writes generated 15-minute readings
(tools.sensor_data) and runs sensor_training.py as a separate process, as cron does, with the default
model settings. Sensors per hour come from the job's wall time, from spawn to exit, so Python and
TensorFlow start-up are included. The job logs one line per sensor with its total time and four phases, so the
finer breakdown (data read, clean, build, fit, threshold, save) is measured in this process afterwards,
for a few sensors, by calling the steps of model_trainer's pipeline in the order train_sensor() calls
them (fit split into building and fitting the model).

When ``sensor_training.py --help`` lists ``--jobs``, the job runs with --jobs 1 and then --jobs 2;
otherwise it runs once with its defaults.

    .venv/bin/python bench/bench_training.py            # full run: 12 sensors x 90 days, default model
    .venv/bin/python bench/bench_training.py --quick    # about a minute, for development
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import model_trainer  # noqa: E402
import sensor_training  # noqa: E402
from anomaly import times  # noqa: E402
from influx_interact import connect  # noqa: E402
from tools import in_memory, local_influxd, measure, sensor_data  # noqa: E402

JOB = ROOT / "sensor_training.py"
# The job trains on [NOW - days, NOW); a fixed time keeps runs comparable.
NOW = pd.Timestamp("2026-01-15T00:00:00Z")
INTERVAL = pd.Timedelta(minutes=15)
DATABASE = "bench"
TARGET_PER_HOUR = 120

TRAINED = re.compile(
    r"sensor (?P<id>.+?): trained in (?P<s>[\d.]+)s(?: \([^)]*\))?: (?P<windows>\d+) windows, "
    r"(?P<epochs>\d+) epochs, val loss (?P<val>[\d.]+), threshold (?P<threshold>[\d.]+)"
)
TRAINED_FIELDS = {"id": str, "s": float, "windows": int, "epochs": int, "val": float, "threshold": float}
DONE = re.compile(r"done in (?P<s>[\d.]+)s: (?P<trained>\d+) trained, (?P<skipped>\d+) skipped, (?P<failed>\d+) failed")


@dataclass
class JobRun:
    label: str
    argv: list[str]
    returncode: int = 0
    wall_s: float = 0.0
    cpu_s: float = 0.0
    peak_rss_mb: float = 0.0
    peak_tree_rss_mb: float = 0.0
    log: str = ""
    sensors: list[dict] = field(default_factory=list)
    done: dict | None = None

    def figures(self, sensors: int) -> dict:
        trained = self.done["trained"] if self.done else len(self.sensors)
        out = {
            "argv": self.argv,
            "returncode": self.returncode,
            "trained": trained,
            "failed": self.done["failed"] if self.done else None,
            "wall_s": round(self.wall_s, 2),
            "sensors_per_hour": round(trained / self.wall_s * 3600, 1) if self.wall_s else 0.0,
            "cpu_s": round(self.cpu_s, 1),
            "cpu_per_wall": round(self.cpu_s / self.wall_s, 2) if self.wall_s else 0.0,
            "peak_rss_mb": round(self.peak_rss_mb, 1),
            "peak_tree_rss_mb": round(self.peak_tree_rss_mb, 1),
        }
        if self.done:
            # "done in" runs from the start of run(): the rest of the wall time is start-up.
            out["job_run_s"] = self.done["s"]
            out["startup_s"] = round(self.wall_s - self.done["s"], 2)
            out["sensors_per_hour_after_startup"] = round(trained / self.done["s"] * 3600, 1) if self.done["s"] else 0.0
        if self.sensors:
            out["per_sensor_logged_s"] = round(statistics.mean(s["s"] for s in self.sensors), 2)
            out["epochs_mean"] = round(statistics.mean(s["epochs"] for s in self.sensors), 1)
            out["epochs_max"] = max(s["epochs"] for s in self.sensors)
            out["val_loss_median"] = statistics.median(s["val"] for s in self.sensors)
            out["threshold_median"] = statistics.median(s["threshold"] for s in self.sensors)
        out["all_sensors_trained"] = trained == sensors
        return out

    def read_log(self, text: str) -> None:
        """The job's own lines: one per trained sensor, and its summary."""
        self.log = text
        for match in TRAINED.finditer(text):
            self.sensors.append({key: kind(match[key]) for key, kind in TRAINED_FIELDS.items()})
        done = DONE.search(text)
        if done:
            self.done = {"s": float(done["s"]), **{k: int(done[k]) for k in ("trained", "skipped", "failed")}}


def run_job(label: str, argv: list[str], env: dict[str, str], workdir: Path) -> JobRun:
    """Run the job as its own process; wall time from spawn to exit, peak RSS from os.wait4."""
    log_path = workdir / f"job-{label.replace(' ', '_').replace('=', '')}.log"
    usage = measure.run([sys.executable, str(JOB), *argv], env, workdir, log_path, period_s=0.25)
    run = JobRun(label, argv, usage.returncode, usage.wall_s, usage.cpu_s, usage.maxrss_mb, usage.tree_peak_mb)
    run.read_log(log_path.read_text(encoding="utf-8", errors="replace"))
    return run


def job_has_jobs_flag() -> bool:
    result = subprocess.run(
        [sys.executable, str(JOB), "--help"], capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL
    )
    return re.search(r"--jobs\b", result.stdout) is not None


def seed_database(url: str, sensor_ids: list[str], days: int, seed: int) -> int:
    local_influxd.query(url, f'CREATE DATABASE "{DATABASE}"')
    lines, _ = sensor_data.fleet(sensor_ids, NOW - pd.Timedelta(days=days), NOW, INTERVAL, seed)
    local_influxd.write(url, DATABASE, lines)
    return len(lines)


def read_all(settings: sensor_training.TrainingSettings) -> tuple[dict[str, pd.Series], dict[str, float]]:
    """Every sensor's readings in one read_means(), as the job reads a whole chunk per query, and the times."""
    common, plan = settings.common, settings.plan
    with connect(common.connection, common.schema) as db:
        t = time.perf_counter()
        sensor_ids = db.sensor_ids(plan.start, plan.stop)
        list_s = time.perf_counter() - t
        t = time.perf_counter()
        data = db.read_means(sensor_ids, plan.start, plan.stop, plan.interval)
        read_all_s = time.perf_counter() - t
    return {s: data[s] for s in sensor_ids}, {"list": list_s, "read_all": read_all_s}


def measure_phases(argv: list[str], url: str, count: int) -> dict:
    """Each phase of model_trainer.train_sensor() timed in this process, for the first ``count`` sensors.

    The read is one read_means() over every sensor, as the job reads a whole chunk per query; its time
    is divided by the number of sensors. TensorFlow gets the threads it gets under --jobs 1.
    """
    began = time.perf_counter()
    import keras  # noqa: F401  (the import the job pays once per process, timed on its own)

    import_s = time.perf_counter() - began
    # What the job does before training with --jobs 1: all cores to TensorFlow's intra-op pool.
    model_trainer.limit_threads(len(os.sched_getaffinity(0)))
    job = sensor_training.JOB
    settings = job.settings(job.parser().parse_args([*argv, "--url", url, "--database", DATABASE]))
    model_trainer.library_versions()  # its first call imports scikit-learn: not charged to "save"
    data, took = read_all(settings)
    per_sensor = []
    for sensor_id in list(data)[:count]:
        window = settings.common.sensor_config.window(sensor_id)
        phase, windows, epochs = in_memory.timed_train(
            sensor_id, data[sensor_id], window, settings.plan, settings.common.models_dir
        )
        phase = {"read": took["read_all"] / len(data), **phase}
        phase["total"] = sum(phase.values())
        row = {"sensor_id": sensor_id, "windows": windows, "epochs": epochs, "s_per_epoch": phase["fit"] / epochs}
        per_sensor.append({**row, "phases_s": phase})
        times_s = ", ".join(f"{k} {v:.2f}s" for k, v in phase.items())
        print(f"  in-process {sensor_id!r}: {times_s}; {windows} windows, {epochs} epochs", flush=True)
    names = ("read", "clean", "build", "fit", "threshold", "save", "total")
    return {
        "source": f"in-process, first {len(per_sensor)} of {len(data)} sensors, after the job runs",
        "import_tensorflow_s": round(import_s, 2),
        "list_sensors_s": round(took["list"], 3),
        "read_all_sensors_s": round(took["read_all"], 3),
        "per_sensor_mean_s": {n: round(statistics.mean(p["phases_s"][n] for p in per_sensor), 3) for n in names},
        "sensors": per_sensor,
    }


def print_report(runs: list[JobRun], phases: dict | None, sensors: int) -> None:
    print("\njob runs (sensor_training.py as a process; wall time from spawn to exit):")
    header = (
        f"{'run':<10} {'rc':>3} {'trained':>7} {'wall s':>8} {'sensors/h':>9} {'startup s':>9} "
        f"{'s/sensor':>8} {'epochs':>6} {'CPU/wall':>8} {'peak RSS MB':>11} {'tree RSS MB':>11}"
    )
    print(header)
    print("-" * len(header))
    for run in runs:
        f = run.figures(sensors)
        print(
            f"{run.label:<10} {f['returncode']:>3} {f['trained']:>7} {f['wall_s']:>8.1f} "
            f"{f['sensors_per_hour']:>9.1f} {f.get('startup_s', float('nan')):>9.1f} "
            f"{f.get('per_sensor_logged_s', float('nan')):>8.1f} "
            f"{f.get('epochs_mean', float('nan')):>6.1f} {f['cpu_per_wall']:>8.2f} {f['peak_rss_mb']:>11.0f} "
            f"{f['peak_tree_rss_mb']:>11.0f}"
        )
    print(
        "  s/sensor: mean of the job's own 'trained in' lines; startup: wall time minus the job's 'done in';\n"
        "  peak RSS: ru_maxrss from os.wait4 (largest single process: the job or a reaped worker);\n"
        "  tree RSS: the job and its descendants summed, sampled every 0.25 s"
    )
    if phases:
        mean = phases["per_sensor_mean_s"]
        total = mean["total"] or 1.0
        print(f"\nwhere the time goes per sensor ({phases['source']}):")
        for name in ("read", "clean", "build", "fit", "threshold", "save"):
            print(f"  {name:<10} {mean[name]:8.2f}s {100 * mean[name] / total:5.1f}%")
        print(f"  {'total':<10} {mean['total']:8.2f}s  -> {3600 / total:.0f} sensors/hour in one process")
        print(
            f"  once per process: import TensorFlow {phases['import_tensorflow_s']:.1f}s, "
            f"list sensors {phases['list_sensors_s']:.2f}s, read all sensors {phases['read_all_sensors_s']:.2f}s"
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--quick", action="store_true", help="about a minute: 3 sensors, 14 days, 2 epochs, 1 sensor timed in-process"
    )
    parser.add_argument("--sensors", type=int, help="sensors (default 12; quick 3)")
    parser.add_argument("--days", type=int, help="days of readings, all trained on (default 90; quick 14)")
    parser.add_argument("--epochs", type=int, help="epoch limit passed to the job (default: the job's own; quick 2)")
    parser.add_argument(
        "--phase-sensors", type=int, help="sensors timed phase by phase in-process (default 2; quick 1)"
    )
    parser.add_argument("--seed", type=int, default=7, help="seed of the generated readings (default 7)")
    return parser


def resolve_sizes(args: argparse.Namespace) -> None:
    """Fill in the sizes --quick or the full run gives (epochs None: the job's own)."""
    quick = args.quick
    args.sensors = args.sensors or (3 if quick else 12)
    args.days = args.days or (14 if quick else 90)
    args.epochs = args.epochs or (2 if quick else None)
    phase_sensors = args.phase_sensors if args.phase_sensors is not None else (1 if quick else 2)
    args.phase_sensors = min(args.sensors, phase_sensors)


def print_header(args: argparse.Namespace, defaults: argparse.ArgumentParser, has_jobs: bool) -> None:
    print(
        f"bench_training: {args.sensors} sensors x {args.days} days of 15m readings, training range "
        f"{times.format_time(NOW - pd.Timedelta(days=args.days))} .. {times.format_time(NOW)}; "
        f"units {defaults.get_default('units')}, epochs <= {args.epochs or defaults.get_default('epochs')}, "
        f"patience {defaults.get_default('patience')}, batch {defaults.get_default('batch_size')}, no seed"
        + ("  [--quick: fewer sensors, days and epochs than the full run]" if args.quick else "")
    )
    jobs = (
        f"present (default {defaults.get_default('jobs')}), measuring --jobs 1 and --jobs 2"
        if has_jobs
        else "not present, measuring the default (one process, sequential)"
    )
    print(f"sensor_training.py --jobs: {jobs}")
    print(f"{os.cpu_count()} CPUs; load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)


def run_all(
    args: argparse.Namespace, modes: list[tuple[str, list[str]]], workdir: Path
) -> tuple[list[JobRun], dict | None]:
    """Seed a throwaway influxd, run the job once per mode, then time the phases in-process."""
    sensor_ids = [f"bench sensor {n + 1:03d}" for n in range(args.sensors)]
    runs: list[JobRun] = []
    phases = None
    server = local_influxd.LocalInfluxd(workdir / "influxd")
    try:
        server.start()
        t = time.perf_counter()
        points = seed_database(server.url, sensor_ids, args.days, args.seed)
        print(
            f"wrote {points} readings to a throwaway influxd at {server.url} in {time.perf_counter() - t:.1f}s",
            flush=True,
        )
        env = measure.job_env(server.url, DATABASE)
        epochs = ["--epochs", str(args.epochs)] if args.epochs else []
        common = ["--now", times.format_time(NOW), f"--start=-{args.days}d", *epochs]
        for label, extra in modes:
            job_argv = [*common, "--models-dir", str(workdir / f"models-{label}"), *extra]
            print(f"running sensor_training.py {' '.join(job_argv)}", flush=True)
            run = run_job(label, job_argv, env, workdir)
            runs.append(run)
            print(f"  {label}: exit {run.returncode}, {len(run.sensors)} trained in {run.wall_s:.1f}s wall", flush=True)
            if run.returncode != 0 or not run.done:
                print(
                    "  the job did not finish cleanly; the end of its log:\n"
                    + "\n".join("    " + line for line in run.log.splitlines()[-20:]),
                    flush=True,
                )
        if args.phase_sensors:
            print(f"timing phases in-process for {args.phase_sensors} sensor(s)", flush=True)
            phases = measure_phases(
                [*common, "--models-dir", str(workdir / "models-phases")], server.url, args.phase_sensors
            )
    finally:
        server.stop()
    return runs, phases


def target_line(run: JobRun, sensors: int) -> str:
    rate = run.figures(sensors)["sensors_per_hour"]
    verdict = (
        "met" if rate >= TARGET_PER_HOUR else f"not met ({TARGET_PER_HOUR / rate:.1f}x short)" if rate else "no data"
    )
    return f"target >= {TARGET_PER_HOUR} sensors/hour, {run.label}: {rate:.1f} -> {verdict}"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    resolve_sizes(args)
    sensors, epochs = args.sensors, args.epochs
    has_jobs = job_has_jobs_flag()
    modes = [("jobs=1", ["--jobs", "1"]), ("jobs=2", ["--jobs", "2"])] if has_jobs else [("default", [])]
    defaults = sensor_training.JOB.parser()
    print_header(args, defaults, has_jobs)
    with tempfile.TemporaryDirectory(prefix="bench-training-") as tmp:
        runs, phases = run_all(args, modes, Path(tmp))

    print_report(runs, phases, sensors)
    for run in runs:
        print(target_line(run, sensors))
    if args.quick:
        print("(--quick: fewer days and epochs than the full run, so these rates say nothing about the target)")
    print(
        json.dumps(
            {
                "sensors": sensors,
                "days": args.days,
                "interval": "15m",
                "epochs_limit": epochs or defaults.get_default("epochs"),
                "units": defaults.get_default("units"),
                "quick": args.quick,
                "jobs_flag": has_jobs,
                "jobs_default": defaults.get_default("jobs") if has_jobs else None,
                "cpus": os.cpu_count(),
                "runs": {run.label: run.figures(sensors) for run in runs},
                "wall_s": {run.label: round(run.wall_s, 2) for run in runs},
                "sensors_per_hour": {run.label: run.figures(sensors)["sensors_per_hour"] for run in runs},
                "peak_rss_mb": {run.label: round(run.peak_rss_mb, 1) for run in runs},
                "phases_s": phases["per_sensor_mean_s"] if phases else None,
                "phases": phases,
                "phase_source": phases["source"] if phases else None,
            },
            sort_keys=True,
        )
    )
    return 0 if all(run.returncode == 0 and run.done for run in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
