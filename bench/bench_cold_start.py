#!/usr/bin/env python3
"""Benchmark: what the cold-start detector's calibration costs a tick, per sensor with no model yet.

Not part of the test suite. Runs in one process, with no InfluxDB: the detector is a pure function
(anomaly/cold_start.py), and what a tick reads for such a sensor is its readings of --cold-start-history
before the due reading, plus the day before it when calibrating. Each sensor gets generated readings
(tools.sensor_data.normal_readings) at the given interval; each is scored as a tick scores it (its one
due reading, cold_start.cold_scores), first with --cold-start-alarm-budget 0 (the fixed z alone), then
with the default budget, side by side in one run. Prints milliseconds per sensor for both, their ratio,
and a final JSON line.

    .venv/bin/python bench/bench_cold_start.py              # 300 sensors at 5m
    .venv/bin/python bench/bench_cold_start.py --interval 15m
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from anomaly.cold_start import ColdStartSettings, cold_scores  # noqa: E402
from tools import sensor_data  # noqa: E402

NOW = pd.Timestamp("2026-03-01T12:00:00Z")


def per_sensor_ms(readings: list[pd.Series], cold: ColdStartSettings, interval: pd.Timedelta) -> float:
    """Milliseconds per sensor to score its due reading at NOW from what a tick reads for it."""
    read = (NOW - cold.reach, NOW + interval)
    began = time.perf_counter()
    for series in readings:
        cold_scores(series[series.index >= read[0]], interval, read, cold, 1.0, NOW, NOW)
    return 1000 * (time.perf_counter() - began) / len(readings)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sensors", type=int, default=300)
    parser.add_argument("--interval", default="5m")
    args = parser.parse_args(argv)
    interval = pd.Timedelta(args.interval)
    index = pd.date_range(NOW - pd.Timedelta(days=9), NOW, freq=interval)
    readings = [
        pd.Series(sensor_data.normal_readings(f"sensor {k}", index, seed=1), index=index) for k in range(args.sensors)
    ]
    fixed = ColdStartSettings(pd.Timedelta(days=7), pd.Timedelta(days=2), 6.0, alarm_budget=0.0)
    calibrated = ColdStartSettings(pd.Timedelta(days=7), pd.Timedelta(days=2), 6.0, alarm_budget=0.5)
    per_sensor_ms(readings[:10], calibrated, interval)  # warm-up: imports and caches, not timed
    figures = {
        "sensors": args.sensors,
        "interval": args.interval,
        "fixed_ms_per_sensor": round(per_sensor_ms(readings, fixed, interval), 3),
        "calibrated_ms_per_sensor": round(per_sensor_ms(readings, calibrated, interval), 3),
    }
    figures["ratio"] = round(figures["calibrated_ms_per_sensor"] / figures["fixed_ms_per_sensor"], 2)
    print("| budget | ms per sensor |\n| --- | ---: |")
    print(f"| 0 (--cold-start-z alone) | {figures['fixed_ms_per_sensor']:.2f} |")
    print(f"| 0.5 (calibrated, the default) | {figures['calibrated_ms_per_sensor']:.2f} |")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
