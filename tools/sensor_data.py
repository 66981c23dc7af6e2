"""Generated building-sensor readings with known anomalies, for the demo, the tests and the benchmarks.

Each sensor follows a daily cycle with noise, at its own level and amplitude; anomalies of three
kinds are injected where asked and returned as labelled spans, so a test can check what is flagged.

    python -m tools.sensor_data --url http://127.0.0.1:8086 --database demo --sensors 5 --days 30

--database writes through the 1.x API and creates the database first (the demo, the tests). --bucket
writes to an existing InfluxDB 2.x bucket the way the jobs do, with INFLUX_TOKEN and INFLUX_ORG (or
--token, --org): the compose stack's seed service.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass

import numpy as np
import pandas as pd

from anomaly.errors import ConfigError
from anomaly.times import parse_time

ANOMALY_KINDS = ("spike", "level_shift", "flatline")
SENSOR_KINDS = ("daily", "noisy", "drift", "flat")


@dataclass(frozen=True)
class Anomaly:
    sensor_id: str
    kind: str
    start: pd.Timestamp
    stop: pd.Timestamp


def normal_readings(sensor_id: str, index: pd.DatetimeIndex, seed: int) -> np.ndarray:
    """A daily cycle around a per-sensor level, with Gaussian noise; deterministic per (sensor, seed)."""
    rng = np.random.default_rng([seed, *sensor_id.encode("utf-8")])
    level, amplitude = rng.uniform(15, 25), rng.uniform(2, 5)
    phase = rng.uniform(0, 2 * np.pi)
    hours = (index - index[0]) / pd.Timedelta(hours=1)
    daily = amplitude * np.sin(2 * np.pi * hours.to_numpy() / 24 + phase)
    return level + daily + rng.normal(0, 0.1 * amplitude, len(index))


def kind_readings(kind: str, sensor_id: str, index: pd.DatetimeIndex, seed: int) -> np.ndarray:
    """Clean readings of one of SENSOR_KINDS; deterministic per (kind, sensor, seed).

    ``daily``: ``normal_readings``; ``noisy``: the same with extra noise (0.4 x its spread); ``drift``: the
    same with a linear drift (0.08 x its spread per day); ``flat``: a held set point, a constant level with
    tiny noise (0.01).
    """
    rng = np.random.default_rng([seed, len(kind), *sensor_id.encode("utf-8")])
    values = normal_readings(sensor_id, index, seed)
    spread = float(np.std(values))
    if kind == "noisy":
        return values + rng.normal(0, 0.4 * spread, len(index))
    if kind == "drift":
        days = (index - index[0]) / pd.Timedelta(days=1)
        return values + 0.08 * spread * days.to_numpy()
    if kind == "flat":
        return np.full(len(index), float(np.mean(values))) + rng.normal(0, 0.01, len(index))
    return values


def inject(
    values: np.ndarray, index: pd.DatetimeIndex, sensor_id: str, kind: str, at: pd.Timestamp, sample: pd.Timedelta
) -> tuple[np.ndarray, Anomaly]:
    """Return a copy of ``values`` with one anomaly of ``kind`` starting at ``at``, and its span."""
    values = values.copy()
    spread = float(np.std(values))
    lengths = {
        "spike": pd.Timedelta(minutes=15),
        "level_shift": pd.Timedelta(hours=3),
        "flatline": pd.Timedelta(hours=4),
    }
    span = (index >= at) & (index < at + lengths[kind])
    if kind == "spike":
        values[span] += 6 * spread
    elif kind == "level_shift":
        values[span] += 3 * spread
    else:
        values[span] = 0.0
    return values, Anomaly(sensor_id, kind, at, at + lengths[kind])


def event_times(sensor_number: int, start: pd.Timestamp, per_kind: int, seed: int) -> list[tuple[str, pd.Timestamp]]:
    """``per_kind`` events of each kind, one a day from the day after ``start`` on, kinds shuffled, at an hour
    between 01:00 and 16:45. The longest event (4 h) plus one window (3 h 45 min) then ends before the next
    day's event. Deterministic per (sensor number, seed)."""
    rng = np.random.default_rng([seed, sensor_number])
    kinds = [kind for kind in ANOMALY_KINDS for _ in range(per_kind)]
    rng.shuffle(kinds)
    out = []
    for day, kind in enumerate(kinds, start=1):
        minutes = int(rng.integers(4, 68)) * 15
        out.append((kind, start + pd.Timedelta(days=day, minutes=minutes)))
    return out


def with_anomalies(
    values: np.ndarray,
    index: pd.DatetimeIndex,
    sensor_id: str,
    events: list[tuple[str, pd.Timestamp]],
    sample: pd.Timedelta,
) -> tuple[pd.Series, list[Anomaly]]:
    """The readings with each of ``events`` (kind, start) in them, and their spans.

    Each anomaly is injected into the clean ``values`` and copied over, so its size is relative to the
    spread of the clean readings, not inflated by the anomalies injected before it.
    """
    out = np.array(values, dtype="float64")
    anomalies = []
    for kind, at in events:
        injected, anomaly = inject(values, index, sensor_id, kind, at, sample)
        span = (index >= anomaly.start) & (index < anomaly.stop)
        out[span] = injected[span]
        anomalies.append(anomaly)
    return pd.Series(out, index=index, name=sensor_id), anomalies


def labels(anomalies: list[Anomaly], start: pd.Timestamp, stop: pd.Timestamp, sample: pd.Timedelta) -> pd.Series:
    """Labels as anomaly.evaluation takes them, on the grid of [start, stop): True in every interval an
    anomaly touches."""
    from anomaly.evaluation import labels_on_grid

    marked = [t for a in anomalies for t in pd.date_range(a.start, a.stop, freq=sample, inclusive="left")]
    return labels_on_grid(marked, start, stop, sample)


def readings_lines(
    sensor_id: str,
    index: pd.DatetimeIndex,
    values: np.ndarray,
    measurement: str = "READINGS",
    site: str = "Campus Energy Centre",
    labelled: list[Anomaly] = (),
) -> list[str]:
    """Line protocol for the readings, with manual_anomaly=true on points inside a labelled span."""
    from anomaly.influx.line_protocol import line_protocol

    lines = []
    for stamp, value in zip(index, values):
        fields = {"val_num": float(value)}
        if any(a.start <= stamp < a.stop for a in labelled):
            fields["manual_anomaly"] = True
        lines.append(
            line_protocol(measurement, {"uniqueID": sensor_id, "siteRef": site}, fields, int(stamp.timestamp()))
        )
    return lines


def fleet(
    sensor_ids: list[str],
    start: pd.Timestamp,
    stop: pd.Timestamp,
    sample: pd.Timedelta,
    seed: int,
    anomalies_after: pd.Timestamp | None = None,
    label: bool = False,
) -> tuple[list[str], list[Anomaly]]:
    """Readings for every sensor in [start, stop); from ``anomalies_after`` on, each sensor gets one
    anomaly of a kind taken in turn, spread out so their windows do not overlap. With ``label``, the
    readings inside an anomaly carry manual_anomaly=true, as a person labelling them would set."""
    index = pd.date_range(start, stop, freq=sample, inclusive="left")
    lines, anomalies = [], []
    for number, sensor_id in enumerate(sensor_ids):
        values = normal_readings(sensor_id, index, seed)
        anomaly = None
        if anomalies_after is not None:
            kind = ANOMALY_KINDS[number % len(ANOMALY_KINDS)]
            at = anomalies_after + pd.Timedelta(hours=6 + 4 * (number % 3))
            values, anomaly = inject(values, index, sensor_id, kind, at, sample)
            anomalies.append(anomaly)
        lines += readings_lines(sensor_id, index, values, labelled=[anomaly] if label and anomaly else [])
    return lines, anomalies


# Oxygen in air (%): what a flue-gas analyser reads while the fan purges the furnace before firing.
AIR_O2 = 20.9
# Time constant of the flue gas's O2 after a change of firing, and how long a purge lasts.
O2_SETTLE = pd.Timedelta(minutes=30)


def exhaust_o2(
    index: pd.DatetimeIndex,
    stages: list[tuple[pd.Timestamp, float]],
    seed: int,
    settle: pd.Timedelta = O2_SETTLE,
) -> np.ndarray:
    """Readings [len(index)] of a boiler's exhaust O2 (%), which holds one of a few levels at a time.

    ``stages`` are (start, level) in time order, each held until the next; level 0 is the boiler off, when
    the analyser reads exactly 0. While firing, the reading wanders with the day's load (+-0.3) and has
    measurement noise (0.05). Its normal transients: a move between levels follows a first-order lag (time
    constant ``settle``), and a start from off first purges the furnace with air (AIR_O2 for ``settle``), from
    which the reading falls to its level. Deterministic per seed.
    """
    rng = np.random.default_rng([seed, 2])
    hours = ((index - index[0]) / pd.Timedelta(hours=1)).to_numpy()
    starts = pd.DatetimeIndex([start for start, _ in stages])
    stage = starts.get_indexer(index, method="pad")
    if (stage < 0).any():
        raise ValueError(f"the first stage starts at {starts[0]}, after the first reading at {index[0]}")
    levels = np.array([float(lvl) for _, lvl in stages])
    level, before = levels[stage], np.r_[np.nan, levels[:-1]][stage]
    purging = (level > 0) & (before == 0) & ((index - starts[stage]) < settle)
    step = 1 - np.exp(-np.diff(hours, prepend=hours[0]) / (settle / pd.Timedelta(hours=1)))
    values = np.empty(len(index))
    reading = level[0]
    for i, (goal, gain) in enumerate(zip(level, step)):
        reading = AIR_O2 if purging[i] else reading + (goal - reading) * gain
        values[i] = reading
    firing = (level > 0) | (values > 0.05)
    wander = 0.3 * np.sin(2 * np.pi * hours / 24) + rng.normal(0, 0.05, len(index))
    return np.where(firing, values + np.where(level > 0, wander, 0.0), 0.0)


def stuck(values: np.ndarray, index: pd.DatetimeIndex, at: pd.Timestamp, duration: pd.Timedelta) -> np.ndarray:
    """A copy of ``values`` that repeats the reading at ``at`` exactly, for ``duration``: a stuck sensor."""
    values = np.array(values, dtype="float64")
    span = (index >= at) & (index < at + duration)
    values[span] = values[np.argmax(span)]
    return values


def outages(
    index: pd.DatetimeIndex, values: np.ndarray, gaps: list[tuple[pd.Timestamp, pd.Timedelta]]
) -> tuple[pd.DatetimeIndex, np.ndarray]:
    """The readings left when the data pipeline delivered nothing in each of ``gaps`` (start, duration)."""
    lost = np.zeros(len(index), dtype=bool)
    for start, duration in gaps:
        lost |= (index >= start) & (index < start + duration)
    return index[~lost], np.asarray(values)[~lost]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True)
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--database", help="InfluxDB 1.x database, created if missing")
    target.add_argument("--bucket", help="existing InfluxDB 2.x bucket (with --org and --token)")
    parser.add_argument("--org", default=os.environ.get("INFLUX_ORG"), help="INFLUX_ORG (with --bucket)")
    parser.add_argument(
        "--token",
        default=os.environ.get("INFLUX_TOKEN"),
        help="INFLUX_TOKEN (with --bucket); prefer the variable: flags show in ps",
    )
    parser.add_argument("--sensors", type=int, default=5)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument(
        "--label",
        action="store_true",
        help="mark the injected anomalies' readings with manual_anomaly=true (for sensor_evaluate.py)",
    )
    parser.add_argument("--now", help="RFC3339 time the data end at (default: the clock), for reproducible runs")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        now = (
            pd.Timestamp.now(tz="UTC") if args.now is None else parse_time(args.now, pd.Timestamp(0, tz="UTC"), "--now")
        )
    except ConfigError as e:
        parser.error(str(e))
    stop = now.floor("5min")
    start = stop - pd.Timedelta(days=args.days)
    sensor_ids = [f"AHU-{n + 1} supply air temp" for n in range(args.sensors)]
    lines, anomalies = fleet(
        sensor_ids,
        start,
        stop,
        pd.Timedelta(minutes=5),
        args.seed,
        anomalies_after=stop - pd.Timedelta(days=1),
        label=args.label,
    )
    if args.bucket:
        from anomaly.connection import Connection
        from anomaly.settings import Schema
        from influx_interact import InfluxError, connect

        connection = Connection(
            url=args.url.rstrip("/"), api="auto", token=args.token, org=args.org, bucket=args.bucket
        )
        try:
            with connect(connection, Schema()) as db:
                db.write(lines)
        except InfluxError as e:
            print(f"sensor_data: {e}", file=sys.stderr)
            return 1
    else:
        from tools import local_influxd

        local_influxd.query(args.url, f'CREATE DATABASE "{args.database}"')
        local_influxd.write(args.url, args.database, lines)
    print(
        f"wrote {len(lines)} readings of {len(sensor_ids)} sensors, {start:%Y-%m-%d %H:%M} .. {stop:%Y-%m-%d %H:%M} UTC"
    )
    for a in anomalies:
        print(f"  injected {a.kind:<11} on {a.sensor_id!r} {a.start:%Y-%m-%d %H:%M} .. {a.stop:%H:%M} UTC")
    return 0


if __name__ == "__main__":
    sys.exit(main())
