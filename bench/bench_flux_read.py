#!/usr/bin/env python3
"""Benchmark of the Flux read path (anomaly/influx/flux_csv.py): how fast, and in how much memory, the answer to a
chunk's query becomes a series (or frame) per sensor, through influxdb-client's record parser (the code
before) and through the bulk CSV reader the Flux dialect uses now. Not part of the test suite
(tests/test_bench_flux_read_smoke.py only checks that it runs).

No InfluxDB 2.x server runs on this machine, so the server is the imitation of InfluxDB 2.7 that the Flux tests
use (tools/fake_influx2/), in a process of its own so that neither its memory nor its CPU is counted as the
reader's. For each scenario it answers with what InfluxDB 2.7 sends for one chunk of --sensors sensors over
--days days at --interval-min minutes: one annotated header (the tables share their columns), then a table
per sensor in turn, CRLF line ends, sensor ids with a space, a comma and quotes (so quoted, as InfluxDB does):

    means   flux_means, the training and scoring read: _time, _value (double) and the sensor tag
    scores  flux_scores, the read-back of what the scorer wrote, pivoted: _time, the tag, loss, threshold,
            anomaly (boolean), the reading and score

Filtering and aggregating happen on the server, so the answer is the same whatever the sensor filter; what
pushing that filter down to storage saves (reading only the chunk's series) shows only on a real InfluxDB,
and is not measured here. What is measured is the answer's transfer over loopback and its reading.

Paths, each measured in a fresh process (so that its peak RSS is its own), one after another, same request:

    records     influxdb-client's query(): a FluxRecord per row, grouped per sensor as the code before did
    data_frame  influxdb-client's query_data_frame(), grouped per sensor as the Flux dialect does
    bulk        Flux.read_means / Flux.read_scores as the jobs call them: the raw answer read by pandas

Measurement: wall time of the read (time.perf_counter); records/s = rows of the answer / that time; peak RSS
= ru_maxrss of the process after the read, growth = that less ru_maxrss just before it (after the imports and
an opened client). MB are MiB. With --repeat N each path reads N times, each in a fresh process, and the
fastest read is reported with its own memory. Every path must give the same sensors, rows and sums of values,
or the benchmark fails.

    .venv/bin/python bench/bench_flux_read.py           # 200 sensors x 90 days at 15 min: 1,728,000 rows each
    .venv/bin/python bench/bench_flux_read.py --quick   # 20 sensors x 7 days

Progress goes to stderr; stdout gets a table and, as its last line, one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import math
import multiprocessing
import queue
import resource
import sys
import threading
import time
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import influx_interact  # noqa: E402
from anomaly.connection import Connection  # noqa: E402
from anomaly.influx import flux_csv, flux_text  # noqa: E402
from anomaly.settings import Schema  # noqa: E402
from tools.fake_influx2 import BUCKET, ORG, TOKEN, FakeInflux2  # noqa: E402

logger = logging.getLogger("bench_flux_read")

SCHEMA = Schema()
START = pd.Timestamp("2026-01-01T00:00:00Z")
SCENARIOS = ("means", "scores")
PATHS = ("records", "data_frame", "bulk")
MIB = 1024 * 1024


# ------------------------------------------------------------------ the answers InfluxDB 2.7 sends


def sensor_ids(count: int) -> list[str]:
    return [f'AHU-{i:03d} supply, "Zone {i % 7}"' for i in range(count)]


def interval_starts(days: int, interval: pd.Timedelta) -> pd.DatetimeIndex:
    return pd.date_range(START, START + pd.Timedelta(days=days), freq=interval, inclusive="left")


def annotated_header(columns: dict[str, str], group: Iterable[str]) -> str:
    """The #datatype, #group and #default rows and the header of tables with ``columns`` (name: datatype)."""
    lines = [
        ["#datatype", "string", "long", *columns.values()],
        ["#group", "false", "false", *("true" if c in group else "false" for c in columns)],
        ["#default", "_result", "", *([""] * len(columns))],
        ["", "result", "table", *columns],
    ]
    out = io.StringIO()
    pd.DataFrame(lines).to_csv(out, header=False, index=False, lineterminator="\r\n")
    return out.getvalue()


def answer(scenario: str, sensors: int, days: int, interval: pd.Timedelta, seed: int) -> str:
    """What InfluxDB 2.7 answers to the scenario's query for the chunk: a table per sensor under one header."""
    rng = np.random.default_rng(seed)
    starts = interval_starts(days, interval)
    stamps = starts.strftime("%Y-%m-%dT%H:%M:%SZ")
    tag = SCHEMA.sensor_tag
    if scenario == "means":
        columns = {"_time": "dateTime:RFC3339", "_value": "double", tag: "string"}
    else:
        scores = dict.fromkeys(SCHEMA.score_fields, "double")
        columns = {"_time": "dateTime:RFC3339", tag: "string"} | scores
        columns["anomaly"] = "boolean"
    out = io.StringIO()
    out.write(annotated_header(columns, [tag]))
    for table, sensor_id in enumerate(sensor_ids(sensors)):
        reading = np.round(rng.normal(20.0, 3.0, len(starts)), 4)
        values: dict[str, Any] = {"_time": stamps, "_value": reading, tag: sensor_id}
        if scenario == "scores":
            loss = np.round(rng.gamma(2.0, 0.1, len(starts)), 6)
            values |= {"loss": loss, "threshold": 0.5, "anomaly": np.where(loss > 0.5, "true", "false")}
            values |= {SCHEMA.field: reading, "score": np.round(loss / 0.5, 6)}
            values |= {"worst": rng.integers(0, 15, len(starts)).astype(float), "newest": np.round(loss * 1.5, 6)}
        rows = pd.DataFrame({"": "", "result": "", "table": table} | {c: values[c] for c in columns})
        rows.to_csv(out, header=False, index=False, lineterminator="\r\n")
    out.write("\r\n")
    return out.getvalue()


def serve(scenario: str, sensors: int, days: int, interval: pd.Timedelta, seed: int, ready: Any) -> None:
    """The fake server's process: answer every query with the scenario's answer until terminated (canned: this
    measures transfer and reading, not the imitation's Flux); its URL and the answer's size in MiB go to
    ``ready``."""
    fake = FakeInflux2()
    fake.canned_answer = answer(scenario, sensors, days, interval, seed)
    fake.start()
    ready.put((fake.url, len(fake.canned_answer.encode()) / MIB))
    threading.Event().wait()


# ------------------------------------------------------------------ the paths read


def request(scenario: str, ids: list[str], days: int, interval: pd.Timedelta) -> tuple[str, dict[str, Any]]:
    """The Flux text and bind parameters the Flux dialect sends for the scenario's read of the chunk."""
    stop = START + pd.Timedelta(days=days)
    if scenario == "means":
        text = flux_text.flux_means(SCHEMA, len(ids))
        params = dict(every=interval, measurement=SCHEMA.measurement, field=SCHEMA.field)
    else:
        text = flux_text.flux_scores(SCHEMA, len(ids))
        params = dict(measurement=SCHEMA.output_measurement)
    chunk = flux_text.sensor_params(ids)
    option = flux_text.flux_params(SCHEMA, bucket=BUCKET, start=START, stop=stop, **params, **chunk)
    return text, flux_text.params_option(option)


# The code that read Flux answers before the bulk reader, kept here as the benchmark's "before".
def records_by_tag(records: Iterable[dict], tag: str) -> dict[str, pd.Series]:
    times: dict[str, list] = defaultdict(list)
    values: dict[str, list] = defaultdict(list)
    for record in records:
        sensor_id = record.get(tag)
        if sensor_id is None:
            continue
        times[sensor_id].append(record["_time"])
        values[sensor_id].append(record["_value"])
    return {
        sensor_id: pd.Series(
            values[sensor_id], index=pd.to_datetime(times[sensor_id], utc=True), dtype="float64", name=sensor_id
        )
        for sensor_id in times
    }


def record_frames_by_tag(records: Iterable[dict], tag: str, columns: list[str]) -> dict[str, pd.DataFrame]:
    rows_by_tag: dict[str, list[dict]] = defaultdict(list)
    for record in records:
        rows_by_tag[record[tag]].append(record)
    return {
        sensor_id: pd.DataFrame(rows)
        .set_index(pd.to_datetime([r["_time"] for r in rows], utc=True))
        .reindex(columns=columns)
        for sensor_id, rows in rows_by_tag.items()
    }


def read_records(client: Any, scenario: str, text: str, option: dict) -> dict:
    records = [row.values for table in client.query_api().query(text, params=option) for row in table.records]
    if scenario == "means":
        return records_by_tag(records, SCHEMA.sensor_tag)
    return record_frames_by_tag(records, SCHEMA.sensor_tag, SCHEMA.score_fields)


def read_data_frame(client: Any, scenario: str, text: str, option: dict) -> dict:
    from influxdb_client.client.warnings import MissingPivotFunction

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MissingPivotFunction)  # the means are one column already: nothing to pivot
        found = client.query_api().query_data_frame(text, params=option)
    frame = pd.concat(found, ignore_index=True) if isinstance(found, list) else found
    if scenario == "means":
        return flux_csv.series_by_tag(frame, SCHEMA.sensor_tag)
    return flux_csv.frames_by_tag(frame, SCHEMA.sensor_tag, SCHEMA.score_fields)


def read_bulk(db: influx_interact.Database, scenario: str, ids: list[str], days: int, interval: pd.Timedelta) -> dict:
    stop = START + pd.Timedelta(days=days)
    return db.read_means(ids, START, stop, interval) if scenario == "means" else db.read_scores(ids, START, stop)


def sums(found: dict, scenario: str) -> dict[str, float]:
    """What every path must agree on: rows, sensors and sums of the values read."""
    if scenario == "means":
        values = np.concatenate([s.to_numpy() for s in found.values()]) if found else np.array([])
        return {"rows": len(values), "sensors": len(found), "sum": float(values.sum())}
    frames = list(found.values())
    return {
        "rows": sum(len(f) for f in frames),
        "sensors": len(found),
        "sum": float(sum(pd.to_numeric(f["loss"]).sum() for f in frames)),
        "anomalies": int(sum(f["anomaly"].eq(True).sum() for f in frames)),
    }


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def measure(path: str, scenario: str, url: str, sensors: int, days: int, interval: pd.Timedelta) -> dict:
    """One read in this (fresh) process: its time, its memory and what it read."""
    from influxdb_client import InfluxDBClient

    ids = sensor_ids(sensors)
    connection = Connection(url=url, api="flux", token=TOKEN, org=ORG, bucket=BUCKET, timeout_s=3600, retries=0)
    text, option = request(scenario, ids, days, interval)
    with (
        InfluxDBClient(url=url, token=TOKEN, org=ORG, timeout=3_600_000) as client,
        influx_interact.connect(connection, SCHEMA) as db,
    ):
        reads: dict[str, Callable[[], dict]] = {
            "records": lambda: read_records(client, scenario, text, option),
            "data_frame": lambda: read_data_frame(client, scenario, text, option),
            "bulk": lambda: read_bulk(db, scenario, ids, days, interval),
        }
        before = peak_rss_mib()
        began = time.perf_counter()
        found = reads[path]()
        seconds = time.perf_counter() - began
        peak = peak_rss_mib()
    figures = sums(found, scenario)
    return figures | {
        "seconds": round(seconds, 3),
        "records_per_s": round(figures["rows"] / seconds),
        "peak_rss_mb": round(peak, 1),
        "growth_mb": round(peak - before, 1),
    }


# ------------------------------------------------------------------ the run


def wait_ready(ready: Any, server: Any, timeout_s: float = 600.0) -> tuple[str, float]:
    """The fake server's address and answer size, once it has made its answer; an error as soon as it dies
    making it (its traceback is above), not after the timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            return ready.get(timeout=1)
        except queue.Empty:
            if not server.is_alive():
                raise RuntimeError(f"the fake server exited with {server.exitcode} before it had answered") from None
    raise RuntimeError(f"the fake server made no answer in {timeout_s:.0f} s")


def run_scenario(args: argparse.Namespace, scenario: str, interval: pd.Timedelta) -> dict[str, dict]:
    spawn = multiprocessing.get_context("spawn")
    ready = spawn.Queue()
    logger.info("%s: the server makes its answer (%d sensors x %d days)", scenario, args.sensors, args.days)
    server = spawn.Process(
        target=serve, args=(scenario, args.sensors, args.days, interval, args.seed, ready), daemon=True
    )
    server.start()
    try:
        url, size_mb = wait_ready(ready, server)
        results = {}
        for path in args.path:
            logger.info("%s: reading through %s, %d time(s)", scenario, path, args.repeat)
            runs = []
            for _ in range(args.repeat):
                with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as pool:
                    runs.append(pool.submit(measure, path, scenario, url, args.sensors, args.days, interval).result())
            results[path] = min(runs, key=lambda figures: figures["seconds"])
    finally:
        server.terminate()
        server.join(timeout=10)
    check_agreement(scenario, results)
    for figures in results.values():
        figures["answer_mb"] = round(size_mb, 1)
    return results


def check_agreement(scenario: str, results: dict[str, dict]) -> None:
    """Every path read the same: same rows and sensors, same sums (up to float rounding)."""
    first_path, first = next(iter(results.items()))
    for path, figures in results.items():
        for key in ("rows", "sensors", "anomalies"):
            if figures.get(key) != first.get(key):
                raise RuntimeError(f"{scenario}: {path} read {key} {figures.get(key)}, {first_path} {first.get(key)}")
        if not math.isclose(figures["sum"], first["sum"], rel_tol=1e-9):
            raise RuntimeError(f"{scenario}: {path} summed to {figures['sum']}, {first_path} to {first['sum']}")


def table(report: dict[str, dict[str, dict]]) -> str:
    lines = [
        f"{'scenario':<9}{'path':<12}{'rows':>11}{'sensors':>9}{'answer MB':>11}{'seconds':>9}{'records/s':>12}"
        f"{'peak RSS MB':>13}{'growth MB':>11}"
    ]
    for scenario, results in report.items():
        for path, f in results.items():
            lines.append(
                f"{scenario:<9}{path:<12}{f['rows']:>11,}{f['sensors']:>9}{f['answer_mb']:>11.1f}{f['seconds']:>9.2f}"
                f"{f['records_per_s']:>12,}{f['peak_rss_mb']:>13.1f}{f['growth_mb']:>11.1f}"
            )
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes for development: 20 sensors x 7 days")
    parser.add_argument("--sensors", type=int, help="sensors in the chunk (default 200, --quick 20)")
    parser.add_argument("--days", type=int, help="days read (default 90, --quick 7)")
    parser.add_argument("--interval-min", type=int, default=15, help="minutes per interval (default 15)")
    parser.add_argument(
        "--scenario", action="append", choices=SCENARIOS, help="read to time, repeatable (default: both)"
    )
    parser.add_argument("--path", action="append", choices=PATHS, help="path to time, repeatable (default: all)")
    parser.add_argument(
        "--repeat", type=int, default=1, help="reads per path, each in a fresh process; the fastest is reported"
    )
    parser.add_argument("--seed", type=int, default=7, help="seed of the values (default 7)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.sensors = args.sensors or (20 if args.quick else 200)
    args.days = args.days or (7 if args.quick else 90)
    args.scenario = args.scenario or list(SCENARIOS)
    args.path = args.path or list(PATHS)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    interval = pd.Timedelta(minutes=args.interval_min)
    began = time.monotonic()
    try:
        report = {scenario: run_scenario(args, scenario, interval) for scenario in args.scenario}
    except RuntimeError as e:
        logger.error("%s", e)
        return 1
    logger.info("benchmark took %.0f s in all", time.monotonic() - began)
    print(table(report))
    if {"records", "bulk"} <= set(args.path):
        for scenario, results in report.items():
            old, new = results["records"], results["bulk"]
            speed, memory = new["records_per_s"] / old["records_per_s"], old["growth_mb"] / max(new["growth_mb"], 1)
            results["bulk"]["vs_records"] = {"speed": round(speed, 1), "growth": round(memory, 1)}
            print(f"{scenario}: bulk reads {speed:.1f}x as many records/s as records, in 1/{memory:.1f} of the growth")
    print(
        json.dumps(
            {
                "sizes": {"sensors": args.sensors, "days": args.days, "interval_min": args.interval_min},
                **report,
            },
            sort_keys=True,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
