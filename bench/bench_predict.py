#!/usr/bin/env python3
"""Benchmark of the scoring job: sensor_predict.py run as whole processes, as cron runs it, against a real
local InfluxDB. Not part of the test suite (tests/test_bench_smoke.py only checks that it runs).

Targets from the issue tracker (issue 12), on this 2-core machine, ratios measured in one run: a cron tick
of 10,000 sensors (one new 15-minute window each, models of the default shape: window 15, 32 units) within
2x its floor (below) and at most 300 MB peak RSS; the 1,000-sensor tick >= 100x faster than the per-sensor
Keras load-and-predict path (``--engine keras``); a catch-up of 96 windows per sensor at most 1.5x the
one-window tick.

Scenarios, each one run of the job with ``--now`` fixed and ``--delay 0s``:

    tick        --sensors sensors, each scored up to the previous interval: one new window each
    tick_cold   the same tick with no losses kept from a tick before it (the first tick after the state
                directory was lost): it computes its history's losses too
    tick_keras  the same tick, same data and models, with --engine keras (for keras_ratio)
    catchup     --sensors sensors, each last scored a day ago: 96 windows each
    tick_big    --big sensors, one new window each (numpy engine only)

Every scenario but tick_cold is warm: the job first runs once, not timed, one interval earlier (the tick
before it, which keeps its losses for the next: anomaly/loss_memory.py), as in a fleet scored every interval.
    floor       the tick once more, into a measurement of its own, through a recording proxy (not timed);
                then its requests to InfluxDB (the same queries, the same points written) replayed in order
                from a bare process (tools/http_record.py): what the tick costs the database and the
                network alone. Every timed scenario's wall time is also given as a multiple of it.
    floor_catchup  the same for catchup: its 96 windows per sensor read and written, nothing computed; its
                ratio to the tick says what the catch-up's reads and writes alone cost against a whole tick
    floor_big   the same for tick_big (with --big)

Set-up (not timed; tools/scoring_fleet.py): a throwaway influxd; generated readings at 15-minute
samples; a day of earlier scores per sensor (synthetic points, so each job resumes where the scenario
says); ``--trained`` models trained by sensor_training.py run as a process; every other model derived
from one of those by multiplying each weight by 1 + N(0, 0.01), with a scaler fitted on its own sensor's
readings, and saved with anomaly.store.save. The derived models of the first --sensors sensors are real
Keras files, so both engines score them; those of the further --big sensors hold the perturbed weights
for the numpy engine and a copy of their base model's Keras file (saving 9,000 Keras models would
dominate the run).

Measurement (tools/measure.py): wall time with time.monotonic around the job's process; peak RSS is
the larger of the kernel's figure for that one process (os.wait4, which covers its waited-for children
too) and the sum of the RSS of its process tree sampled every 50 ms (the kernel keeps a maximum per
process, not a sum, should the job ever run workers side by side). MB are MiB, as ps and top count. Each
run must exit 0 and have written exactly the expected points, or the benchmark fails.

    .venv/bin/python bench/bench_predict.py            # full size: 1,000 and 10,000 sensors
    .venv/bin/python bench/bench_predict.py --quick    # 40 and 200 sensors, about a minute

Progress goes to stderr; stdout gets a table and, as its last line, one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from anomaly import logs, times  # noqa: E402
from tools import http_record, local_influxd, measure  # noqa: E402
from tools import scoring_fleet as fleet  # noqa: E402
from tools.measure import Measurement  # noqa: E402
from tools.scoring_fleet import NOW, PERTURBATION, Scenario  # noqa: E402

logger = logging.getLogger("bench_predict")

CATCHUP_WINDOWS = 96  # a day of 15-minute intervals
TARGETS = {"floor_ratio_big": 2.0, "peak_rss_mb_big": 300.0, "keras_ratio": 100.0, "catchup_ratio": 1.5}
TARGET_SENSORS, TARGET_BIG = 1000, 10000


# ------------------------------------------------------------------ measuring


def job_command(workdir: Path, scenario: Scenario, extra: list[str], now: pd.Timestamp = NOW) -> list[str]:
    return [
        sys.executable,
        str(ROOT / "sensor_predict.py"),
        *fleet.job_args(workdir),
        "--now",
        times.format_time(now),
        "--delay",
        "0s",
        "--engine",
        scenario.engine,
        "--output-measurement",
        scenario.output,
        "--log-level",
        "WARNING",
        *extra,
    ]


def warm_up(url: str, workdir: Path, scenario: Scenario, extra: list[str]) -> None:
    """The run before a warm scenario's (not timed): it scores the interval the synthetic scores stop short of,
    and keeps its losses for the scenario's run, as the tick before does in a fleet scored every interval."""
    if scenario.warm:
        now = scenario.last_scored + fleet.INTERVAL
        log = workdir / "logs" / f"{scenario.name}-warm-up.log"
        measure.run_checked(
            job_command(workdir, scenario, extra, now), measure.job_env(url, scenario.database), workdir, log
        )


def run_scenario(url: str, workdir: Path, scenario: Scenario, extra: list[str]) -> Measurement:
    warm_up(url, workdir, scenario, extra)
    command = job_command(workdir, scenario, extra)
    logger.info(
        "running %s: %d sensors x %d windows, --engine %s",
        scenario.name,
        len(scenario.sensor_ids),
        scenario.windows_per_sensor,
        scenario.engine,
    )
    result = measure.measure(
        command, measure.job_env(url, scenario.database), workdir, workdir / "logs" / f"{scenario.name}.log"
    )
    fleet.check_written(url, scenario)
    logger.info("%s: %.2f s, peak RSS %.0f MB", scenario.name, result.wall_s, result.peak_rss_mb)
    return result


def measure_floor(
    port: int, url: str, workdir: Path, scenario: Scenario, extra: list[str]
) -> tuple[Measurement, int, Scenario]:
    """The tick's floor: the same tick run once through a recording proxy (not timed), then its requests
    (the same queries, the same points written) replayed in order from a bare process (timed). Returns the
    replay's measurement, the number of requests and the scenario."""
    warm_up(url, workdir, scenario, extra)
    recorder = http_record.Recorder(port)
    try:
        logger.info("running %s through a recording proxy (not timed)", scenario.name)
        measure.measure(
            job_command(workdir, scenario, extra),
            measure.job_env(recorder.url, scenario.database),
            workdir,
            workdir / "logs" / f"{scenario.name}-recorded.log",
        )
        kept = workdir / "logs" / f"{scenario.name}-requests.jsonl"
        requests = recorder.save(kept)
    finally:
        recorder.close()
    fleet.check_written(url, scenario)
    replay = [sys.executable, str(ROOT / "tools" / "http_record.py"), str(kept), url]
    result = measure.measure(replay, measure.job_env(url, scenario.database), workdir, workdir / "logs" / "floor.log")
    logger.info("floor: %d requests replayed in %.2f s, peak RSS %.0f MB", requests, result.wall_s, result.peak_rss_mb)
    return result, requests, scenario


# ------------------------------------------------------------------ report


def figures(scenario: Scenario, result: Measurement) -> dict:
    sensors = len(scenario.sensor_ids)
    return {
        "sensors": sensors,
        "windows": sensors * scenario.windows_per_sensor,
        "windows_per_sensor": scenario.windows_per_sensor,
        "engine": scenario.engine,
        "wall_s": result.wall_s,
        "peak_rss_mb": result.peak_rss_mb,
    }


def table(rows: list[tuple[Scenario, Measurement, int]], ratio: float) -> str:
    header = (
        f"{'scenario':<11} {'engine':<6} {'sensors':>8} {'windows':>8} {'wall s':>8} {'peak RSS MB':>12} "
        f"{'(wait4':>7} {'tree)':>6} {'ms/sensor':>10} {'anomalies':>10}"
    )
    out = [header, "-" * len(header)]
    for scenario, result, flagged in rows:
        sensors = len(scenario.sensor_ids)
        out.append(
            f"{scenario.name:<11} {scenario.engine:<6} {sensors:>8} {sensors * scenario.windows_per_sensor:>8} "
            f"{result.wall_s:>8.2f} {result.peak_rss_mb:>12.0f} {result.rusage_mb:>7.0f} "
            f"{result.sampled_mb:>6.0f} {1000 * result.wall_s / sensors:>10.2f} {flagged:>10}"
        )
    out.append(f"keras_ratio (tick_keras wall / tick wall): {ratio:.1f}x")
    return "\n".join(out)


def target_lines(report: dict, sensors: int, big: int) -> list[str]:
    tick, catchup, tick_big = report["tick"], report["catchup"], report.get("tick_big")
    checks = [
        (
            tick["keras_ratio"] >= TARGETS["keras_ratio"],
            f"tick {tick['keras_ratio']:.1f}x >= {TARGETS['keras_ratio']:g}x faster than --engine keras "
            f"({sensors} sensors; the target is for {TARGET_SENSORS})",
        ),
        (
            catchup["tick_ratio"] <= TARGETS["catchup_ratio"],
            f"catch-up of {CATCHUP_WINDOWS} windows {catchup['tick_ratio']:.2f}x <= {TARGETS['catchup_ratio']:g}x "
            "the one-window tick",
        ),
    ]
    if tick_big:
        checks += [
            (
                tick_big["floor_ratio"] <= TARGETS["floor_ratio_big"],
                f"big tick {tick_big['floor_ratio']:.2f}x <= {TARGETS['floor_ratio_big']:g}x its floor "
                f"({big} sensors; the target is for {TARGET_BIG})",
            ),
            (
                tick_big["peak_rss_mb"] <= TARGETS["peak_rss_mb_big"],
                f"big tick peak RSS {tick_big['peak_rss_mb']:.0f} MB <= {TARGETS['peak_rss_mb_big']:g} MB",
            ),
        ]
    return ["targets:"] + [f"  {'met' if ok else 'MISSED'}: {text}" for ok, text in checks]


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
    # The jobs' state (notifications, ranges to score again) stays with the run, not in the user's home.
    os.environ["STATE_DIRECTORY"] = str(workdir / "state")
    (workdir / "ratios.json").write_text("{}")
    (workdir / "windows.json").write_text("{}")
    fleet_ids = [fleet.sensor_id(n) for n in range(args.sensors)]
    big_ids = [fleet.sensor_id(n) for n in range(args.big)]
    trained_ids = fleet_ids[: args.trained]

    readings = fleet.generate_readings(big_ids or fleet_ids, set(trained_ids), args.seed)
    local_influxd.query(url, 'CREATE DATABASE "fleet"')
    local_influxd.write(url, "fleet", fleet.readings_lines({sid: readings[sid] for sid in fleet_ids}))
    if args.big:
        local_influxd.query(url, 'CREATE DATABASE "big"')
        local_influxd.write(url, "big", fleet.readings_lines(readings, since=NOW - fleet.BIG_READINGS_SPAN))
    logger.info("wrote the readings (%.0f s so far)", time.monotonic() - began)

    fleet.train(url, workdir, trained_ids, args.epochs)
    logger.info("trained %d models (%.0f s so far)", len(trained_ids), time.monotonic() - began)
    thresholds = fleet.derive_models(
        workdir / "models", trained_ids, fleet_ids[args.trained :], big_ids[args.sensors :], readings, args.seed
    )
    logger.info("derived %d models (%.0f s so far)", len(thresholds) - len(trained_ids), time.monotonic() - began)

    members = tuple(fleet_ids)
    scenarios = [
        Scenario("tick", "fleet", members, 1, "numpy", "PREDICT_ANOMALY"),
        Scenario("tick_cold", "fleet", members, 1, "numpy", "PREDICT_ANOMALY_COLD", warm=False),
        Scenario("tick_keras", "fleet", members, 1, "keras", "PREDICT_ANOMALY_KERAS"),
        Scenario("catchup", "fleet", members, CATCHUP_WINDOWS, "numpy", "PREDICT_ANOMALY_CATCHUP"),
    ]
    if args.big:
        scenarios.append(Scenario("tick_big", "big", tuple(big_ids), 1, "numpy", "PREDICT_ANOMALY"))
    scenarios.append(Scenario("floor", "fleet", members, 1, "numpy", "PREDICT_ANOMALY_FLOOR"))
    scenarios.append(
        Scenario("floor_catchup", "fleet", members, CATCHUP_WINDOWS, "numpy", "PREDICT_ANOMALY_FLOOR_CATCHUP")
    )
    if args.big:
        scenarios.append(Scenario("floor_big", "big", tuple(big_ids), 1, "numpy", "PREDICT_ANOMALY_FLOOR"))
    for scenario in scenarios:
        fleet.write_history(url, scenario, readings, thresholds)
    logger.info("wrote a day of earlier scores per sensor and scenario (%.0f s so far)", time.monotonic() - began)
    return scenarios


def run(args: argparse.Namespace, workdir: Path) -> dict:
    """Prepare, run every scenario, check what was written; print the table and return the figures."""
    began = time.monotonic()
    derived, numpy_only = args.sensors - args.trained, max(0, args.big - args.sensors)
    logger.info(
        "models: %d trained by sensor_training.py, %d derived from them by perturbing their weights "
        "(x (1 + N(0, %g))), %d more with perturbed weights for the numpy engine only (their Keras "
        "file is a copy of the base model's)",
        args.trained,
        derived,
        PERTURBATION,
        numpy_only,
    )
    server = local_influxd.LocalInfluxd(workdir / "influxd").start()
    try:
        scenarios = prepare(args, server.url, workdir)
        measured = [s for s in scenarios if not s.name.startswith("floor")]
        rows = []
        for scenario in measured:
            result = run_scenario(server.url, workdir, scenario, args.predict_arg)
            rows.append((scenario, result, fleet.anomalies(server.url, scenario)))
        floors = [
            measure_floor(server.port, server.url, workdir, s, args.predict_arg)
            for s in scenarios
            if s.name.startswith("floor")
        ]
        numpy_losses, keras_losses = (fleet.losses(server.url, s) for s in scenarios[:2])
    finally:
        server.stop()
    difference = max(abs(numpy_losses[sid] - keras_losses[sid]) for sid in scenarios[0].sensor_ids)
    if difference > 1e-3:
        raise RuntimeError(f"the numpy and keras ticks disagree: largest loss difference {difference:.2e}")
    report = print_report(args, rows, difference, floors)
    print(f"benchmark took {time.monotonic() - began:.0f} s in all")
    report["models"] = {
        "trained": args.trained,
        "derived": derived,
        "derived_numpy_only": numpy_only,
        "perturbation": PERTURBATION,
    }
    report["max_loss_difference"] = float(f"{difference:.3g}")
    report["targets"] = dict(TARGETS, sensors=TARGET_SENSORS, big=TARGET_BIG)
    return report


def print_report(
    args: argparse.Namespace,
    rows: list[tuple[Scenario, Measurement, int]],
    difference: float,
    floors: list[tuple[Measurement, int, Scenario]],
) -> dict:
    """The table, the models and data used and the targets; returns the figures per scenario."""
    derived, numpy_only = args.sensors - args.trained, max(0, args.big - args.sensors)
    report = {scenario.name: figures(scenario, result) for scenario, result, _ in rows}
    ratio = report["tick_keras"]["wall_s"] / report["tick"]["wall_s"]
    report["tick"]["keras_ratio"] = round(ratio, 2)
    report["catchup"]["tick_ratio"] = round(report["catchup"]["wall_s"] / report["tick"]["wall_s"], 2)
    print(table(rows, ratio))
    for floor_result, requests, floor_scenario in floors:
        report[floor_scenario.name] = {
            "requests": requests,
            "wall_s": floor_result.wall_s,
            "peak_rss_mb": floor_result.peak_rss_mb,
        }
        # A floor is a run's: only scenarios of the same sensors and windows compare with it.
        same = [
            s
            for s, _, _ in rows
            if (s.sensor_ids, s.windows_per_sensor) == (floor_scenario.sensor_ids, floor_scenario.windows_per_sensor)
        ]
        for scenario in same:
            report[scenario.name]["floor_ratio"] = round(report[scenario.name]["wall_s"] / floor_result.wall_s, 2)
        print(
            f"{floor_scenario.name}: the {len(floor_scenario.sensor_ids)}-sensor "
            f"{'tick' if floor_scenario.windows_per_sensor == 1 else 'catch-up'}'s {requests} requests to "
            f"InfluxDB replayed in order from a bare process: {floor_result.wall_s:.2f} s, peak RSS "
            f"{floor_result.peak_rss_mb:.0f} MB; "
            + ", ".join(f"{s.name} {report[s.name]['floor_ratio']:.1f}x" for s in same)
            + " the floor"
        )
    print(f"catch-up / tick: {report['catchup']['tick_ratio']:.2f}x")
    if "floor_catchup" in report:
        report["floor_catchup"]["tick_ratio"] = round(report["floor_catchup"]["wall_s"] / report["tick"]["wall_s"], 2)
        print(
            "the catch-up's reads and writes alone (floor_catchup) / the whole tick: "
            f"{report['floor_catchup']['tick_ratio']:.2f}x"
        )
    print(f"largest |loss numpy - loss keras| over the tick: {difference:.1e}")
    print(
        f"models: {args.trained} trained by sensor_training.py ({args.epochs} epochs at most), {derived} derived "
        f"by perturbing their weights x (1 + N(0, {PERTURBATION}))"
        + (
            f", {numpy_only} more derived the same way for the numpy engine only (Keras file copied from the base)"
            if numpy_only
            else ""
        )
    )
    print(
        "data: readings at 15-minute samples; a day of synthetic earlier scores per sensor; job flags: --now "
        f"{times.format_time(NOW)} --delay 0s --log-level WARNING {' '.join(args.predict_arg)}".rstrip()
    )
    print("\n".join(target_lines(report, args.sensors, args.big)))
    return report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--quick", action="store_true", help="small sizes for development: 40 and 200 sensors, 2 epochs"
    )
    parser.add_argument("--sensors", type=int, help="sensors of the tick, keras and catch-up scenarios (default 1000)")
    parser.add_argument("--big", type=int, help="sensors of the big tick, 0 to skip it (default 10000)")
    parser.add_argument(
        "--trained", type=int, default=4, help="models trained for real; the rest are derived (default 4)"
    )
    parser.add_argument("--epochs", type=int, help="training epochs at most (default 5, --quick 2)")
    parser.add_argument("--seed", type=int, default=7, help="seed of the readings and the perturbations (default 7)")
    parser.add_argument(
        "--predict-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for every measured sensor_predict.py run, repeatable "
        "(e.g. --predict-arg=--chunk-size=500)",
    )
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
