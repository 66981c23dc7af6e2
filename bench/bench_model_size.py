#!/usr/bin/env python3
"""Benchmark: LSTM units against training time and how well injected anomalies are flagged.

Not part of the test suite. Runs in one process, with no InfluxDB. Each sensor gets generated
15-minute readings (tools.sensor_data.normal_readings). A model is trained on the first part with each
units value, using the same seed and the job's own defaults for epochs, patience, batch size, dropout,
validation split and percentile (taken from sensor_training.build_parser()), and the default window
and ratio from time_step_sizes.json and threshold_ratios.json. The threshold is computed the way the
job computes it. The held-out stretch then gets spikes, level shifts and flatlines at known times
(tools.sensor_data.inject) and is scored the way sensor_predict.py scores it.

Definitions (w = window, i = interval, an event spans [start, stop)):
- event recall: an event is detected when any flagged window ends in [start, stop + w*i)
- false-alarm rate: flagged share of the windows that end outside every such zone
- window precision, recall and F1: a window is positive when it holds at least one point of an event,
  i.e. it ends in [start, stop + (w-1)*i)

    .venv/bin/python bench/bench_model_size.py            # full run
    .venv/bin/python bench/bench_model_size.py --quick    # about a minute, for development
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import clean  # noqa: E402
from anomaly import settings, times  # noqa: E402
import sensor_training  # noqa: E402
from tools import sensor_data  # noqa: E402

# Training ends here; the readings run from NOW - days up to NOW.
NOW = pd.Timestamp("2026-01-15T00:00:00Z")
UNITS = (16, 32, 64, 128)


@dataclass(frozen=True)
class JobDefaults:
    """The model settings sensor_training.py uses when no flag is given."""

    dropout: float
    epochs: int
    batch_size: int
    validation_split: float
    patience: int
    percentile: float
    min_windows: int
    interval: pd.Timedelta
    max_gap: pd.Timedelta
    window: int
    ratio: float


def job_defaults() -> JobDefaults:
    parser = sensor_training.build_parser()
    get = parser.get_default
    sensor_config = settings.load_sensor_config(get("ratios"), get("windows"))
    return JobDefaults(
        dropout=get("dropout"), epochs=get("epochs"), batch_size=get("batch_size"),
        validation_split=get("validation_split"), patience=get("patience"), percentile=get("percentile"),
        min_windows=get("min_windows"), interval=times.parse_duration(get("interval"), "--interval"),
        max_gap=times.parse_duration(get("max_gap"), "--max-gap"),
        window=sensor_config.default_window, ratio=sensor_config.default_ratio,
    )


def event_times(sensor_number: int, holdout_start: pd.Timestamp, per_kind: int, seed: int
                ) -> list[tuple[str, pd.Timestamp]]:
    """One event per held-out day from the second day on, kinds shuffled, at an hour between 01:00 and
    16:45. The longest event (4 h) plus one window (3 h 45 min) then ends before the next day's event."""
    rng = np.random.default_rng([seed, sensor_number])
    kinds = [kind for kind in sensor_data.ANOMALY_KINDS for _ in range(per_kind)]
    rng.shuffle(kinds)
    out = []
    for day, kind in enumerate(kinds, start=1):
        minutes = int(rng.integers(4, 68)) * 15
        out.append((kind, holdout_start + pd.Timedelta(days=day, minutes=minutes)))
    return out


def sensor_readings(sensor_id: str, sensor_number: int, index: pd.DatetimeIndex, interval: pd.Timedelta,
                    holdout_start: pd.Timestamp, per_kind: int, seed: int) -> tuple[pd.Series, list[sensor_data.Anomaly]]:
    """Readings with anomalies in the held-out stretch only.

    Each anomaly is injected into the clean readings and copied over, so every anomaly's size is
    relative to the spread of the clean readings, not inflated by the anomalies injected before it.
    """
    values = sensor_data.normal_readings(sensor_id, index, seed)
    out = values.copy()
    anomalies = []
    for kind, at in event_times(sensor_number, holdout_start, per_kind, seed):
        injected, anomaly = sensor_data.inject(values, index, sensor_id, kind, at, interval)
        span = (index >= anomaly.start) & (index < anomaly.stop)
        out[span] = injected[span]
        anomalies.append(anomaly)
    return pd.Series(out, index=index, name=sensor_id), anomalies


def window_labels(ends: pd.DatetimeIndex, anomalies: list[sensor_data.Anomaly], window: int,
                  interval: pd.Timedelta) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """Per window end: holds an event point (positive), lies in an event's zone, and each event's zone mask."""
    positive = np.zeros(len(ends), dtype=bool)
    zones = []
    for a in anomalies:
        positive |= (ends >= a.start) & (ends < a.stop + (window - 1) * interval)
        zones.append(np.asarray((ends >= a.start) & (ends < a.stop + window * interval)))
    near = np.logical_or.reduce(zones) if zones else np.zeros(len(ends), dtype=bool)
    return positive, near, zones


def false_alarm_runs(flagged: np.ndarray, near: np.ndarray) -> int:
    """Runs of consecutive flagged windows outside every event zone: what an operator sees as alerts."""
    alarm = (flagged & ~near).astype(int)
    return int(np.sum(np.diff(np.concatenate([[0], alarm])) == 1))


def warm_up(model_trainer, window: int, defaults: JobDefaults) -> None:
    """One tiny fit first, so library start-up is not charged to the first units value measured."""
    rng = np.random.default_rng(0)
    windows = rng.normal(size=(256, window, 1)).astype("float32")
    model = model_trainer.build_model(window, 8, defaults.dropout)
    model_trainer.fit_model(model, windows, 1, defaults.batch_size, defaults.validation_split, defaults.patience)


def run_sensor(sensor_id: str, series: pd.Series, anomalies: list[sensor_data.Anomaly], holdout_start: pd.Timestamp,
               units: int, epochs: int, seed: int, defaults: JobDefaults) -> dict:
    """Train on the readings before ``holdout_start`` as the job does, then score the rest as the scorer does."""
    import model_predict
    import model_trainer

    window, interval = defaults.window, defaults.interval
    max_gap_points = int(defaults.max_gap / interval)
    train = clean.fill_short_gaps(
        clean.regularize(clean.validate_series(series[series.index < holdout_start]), interval,
                         series.index[0], holdout_start), max_gap_points)
    reason = clean.unusable_reason(train, window, defaults.min_windows)
    if reason:
        raise ValueError(f"{sensor_id}: {reason}; use more --days")
    scaler = clean.fit_scaler(train)
    mean, scale = float(scaler.mean_[0]), float(scaler.scale_[0])
    windows, _ = clean.windows_without_gaps(clean.scale(train, mean, scale), window)

    model_trainer.seed_everything(sensor_training.sensor_seed(seed, sensor_id))
    began = time.perf_counter()
    model = model_trainer.build_model(window, units, defaults.dropout)
    fit = model_trainer.fit_model(model, windows, epochs, defaults.batch_size, defaults.validation_split,
                                  defaults.patience)
    fitted = time.perf_counter()
    threshold = model_trainer.loss_threshold(model_predict.reconstruction_loss(model, windows), defaults.percentile)
    train_s = time.perf_counter() - began

    full = clean.regularize(clean.validate_series(series), interval, series.index[0], series.index[-1] + interval)
    sensor = model_predict.SensorModel(sensor_id=sensor_id, window=window, interval=interval, threshold=threshold,
                                       mean=mean, scale=scale, weights=model_trainer.export_weights(model))
    scored, ends, _ = model_predict.windows_to_score(full, sensor, max_gap_points, holdout_start, full.index[-1])
    losses = model_predict.reconstruction_loss(model, scored)
    # The scorer's default engine is the NumPy forward pass; it must agree with Keras.
    engine_diff = float(np.max(np.abs(model_predict.fleet_losses([sensor], [scored])[0] - losses)))
    flagged = losses > threshold * defaults.ratio

    positive, near, zones = window_labels(ends, anomalies, window, interval)
    detected = {kind: [0, 0] for kind in sensor_data.ANOMALY_KINDS}
    for a, zone in zip(anomalies, zones):
        detected[a.kind][1] += 1
        detected[a.kind][0] += int(flagged[zone].any())
    return {
        "units": units, "sensor_id": sensor_id, "train_s": train_s, "fit_s": fitted - began,
        "epochs": fit.epochs, "val_loss": fit.val_loss, "threshold": threshold, "engine_diff": engine_diff,
        "detected": detected, "tp": int(np.sum(flagged & positive)), "fp": int(np.sum(flagged & ~positive)),
        "fn": int(np.sum(~flagged & positive)), "quiet_windows": int(np.sum(~near)),
        "false_alarms": int(np.sum(flagged & ~near)), "false_alarm_runs": false_alarm_runs(flagged, near),
        "scored_days": len(ends) * interval / pd.Timedelta(days=1),
    }


def summarize(rows: list[dict]) -> dict:
    """Figures of one units value over all sensors; rates from summed counts (every window weighs the same)."""
    detected = {kind: [sum(r["detected"][kind][i] for r in rows) for i in (0, 1)] for kind in sensor_data.ANOMALY_KINDS}
    found, total = sum(d[0] for d in detected.values()), sum(d[1] for d in detected.values())
    tp, fp, fn = (sum(r[key] for r in rows) for key in ("tp", "fp", "fn"))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    quiet = sum(r["quiet_windows"] for r in rows)
    return {
        "units": rows[0]["units"],
        "train_s_per_sensor": float(np.mean([r["train_s"] for r in rows])),
        "s_per_epoch": float(np.sum([r["fit_s"] for r in rows]) / np.sum([r["epochs"] for r in rows])),
        "epochs_mean": float(np.mean([r["epochs"] for r in rows])),
        "val_loss_mean": float(np.mean([r["val_loss"] for r in rows])),
        "threshold_mean": float(np.mean([r["threshold"] for r in rows])),
        "event_recall": found / total if total else 0.0,
        "event_recall_by_kind": {kind: d[0] / d[1] if d[1] else 0.0 for kind, d in detected.items()},
        "events": total,
        "false_alarm_rate": sum(r["false_alarms"] for r in rows) / quiet if quiet else 0.0,
        "false_alarm_runs_per_sensor_day": sum(r["false_alarm_runs"] for r in rows) / sum(r["scored_days"] for r in rows),
        "window_precision": precision,
        "window_recall": recall,
        "window_f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "engine_max_abs_diff": max(r["engine_diff"] for r in rows),
    }


def print_table(summaries: list[dict]) -> None:
    header = (f"{'units':>5} {'train s/sensor':>14} {'s/epoch':>7} {'epochs':>6} {'val loss':>8} {'thresh':>6} "
              f"{'ev recall':>9} {'spike':>5} {'shift':>5} {'flat':>5} {'FA rate':>7} {'FA/day':>6} "
              f"{'prec':>5} {'recall':>6} {'F1':>5}")
    print(header)
    print("-" * len(header))
    for s in summaries:
        kind = s["event_recall_by_kind"]
        print(f"{s['units']:>5} {s['train_s_per_sensor']:>14.1f} {s['s_per_epoch']:>7.2f} {s['epochs_mean']:>6.1f} "
              f"{s['val_loss_mean']:>8.4f} {s['threshold_mean']:>6.3f} {s['event_recall']:>9.2f} "
              f"{kind['spike']:>5.2f} {kind['level_shift']:>5.2f} {kind['flatline']:>5.2f} "
              f"{s['false_alarm_rate']:>7.4f} {s['false_alarm_runs_per_sensor_day']:>6.3f} "
              f"{s['window_precision']:>5.2f} {s['window_recall']:>6.2f} {s['window_f1']:>5.2f}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="about a minute: 2 sensors, 21 days (7 held out), 1 event of each kind, 3 epochs")
    parser.add_argument("--sensors", type=int, help="sensors (default 4; quick 2)")
    parser.add_argument("--days", type=int, help="days of readings, the held-out stretch included (default 60; quick 21)")
    parser.add_argument("--holdout-days", type=int, help="newest days scored, not trained on (default 14; quick 7)")
    parser.add_argument("--per-kind", type=int,
                        help="events of each kind per sensor, one per held-out day (default 3; quick 1)")
    parser.add_argument("--epochs", type=int, help="epoch limit (default: the job's default; quick 3)")
    parser.add_argument("--units", type=int, nargs="+", default=list(UNITS), help="units values (default 16 32 64 128)")
    parser.add_argument("--seed", type=int, default=1, help="data and model seed (default 1)")
    parser.add_argument("--threads", type=int,
                        help="TensorFlow intra-op threads, set as the job sets them (default: every core, as with "
                             "--jobs 1; 1 is what each worker gets when --jobs equals the core count)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    defaults = job_defaults()
    quick = args.quick
    sensors = args.sensors or (2 if quick else 4)
    days = args.days or (21 if quick else 60)
    holdout_days = args.holdout_days or (7 if quick else 14)
    per_kind = args.per_kind or (1 if quick else 3)
    epochs = args.epochs or (3 if quick else defaults.epochs)
    if 3 * per_kind + 1 >= holdout_days:
        print(f"--holdout-days {holdout_days} is too short for {3 * per_kind} events, one a day from the second day",
              file=sys.stderr)
        return 2

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    began = time.perf_counter()
    import model_trainer

    threads = args.threads or len(os.sched_getaffinity(0))
    model_trainer.limit_threads(threads)
    interval = defaults.interval
    index = pd.date_range(NOW - pd.Timedelta(days=days), NOW, freq=interval, inclusive="left")
    holdout_start = NOW - pd.Timedelta(days=holdout_days)
    sensor_ids = [f"AHU-{n + 1} supply air temp" for n in range(sensors)]
    data = [sensor_readings(s, n, index, interval, holdout_start, per_kind, args.seed) for n, s in enumerate(sensor_ids)]

    print(f"bench_model_size: {sensors} sensors x {days} days of {times.format_duration(interval)} readings "
          f"({days - holdout_days} days trained on, {holdout_days} held out with {3 * per_kind} events per sensor: "
          f"{per_kind} spike, {per_kind} level_shift, {per_kind} flatline)")
    print(f"model: units {' '.join(map(str, args.units))}; window {defaults.window}, dropout {defaults.dropout}, "
          f"epochs <= {epochs}, patience {defaults.patience}, batch {defaults.batch_size}, "
          f"validation split {defaults.validation_split}, percentile {defaults.percentile}, ratio {defaults.ratio}, "
          f"seed {args.seed} (deterministic ops); {threads} TensorFlow thread(s); {len(args.units) * sensors} fits"
          + ("  [--quick: fewer sensors, days and epochs than the full run]" if quick else ""))
    print(f"libraries: {', '.join(f'{k} {v}' for k, v in sorted(model_trainer.library_versions().items()))}; "
          f"{os.cpu_count()} CPUs", flush=True)

    warm_up(model_trainer, defaults.window, defaults)
    rows: dict[int, list[dict]] = {units: [] for units in args.units}
    # Sensors outer, units inner: a drift in the machine's load then touches every units value alike.
    for sensor_id, (series, anomalies) in zip(sensor_ids, data):
        for units in args.units:
            row = run_sensor(sensor_id, series, anomalies, holdout_start, units, epochs, args.seed, defaults)
            rows[units].append(row)
            print(f"  {sensor_id!r} units {units:>3}: {row['train_s']:6.1f}s, {row['epochs']:>2} epochs, "
                  f"val loss {row['val_loss']:.4f}, threshold {row['threshold']:.4f}, "
                  f"events {sum(d[0] for d in row['detected'].values())}/{len(anomalies)}, "
                  f"false alarms {row['false_alarms']}/{row['quiet_windows']}", flush=True)

    summaries = [summarize(rows[units]) for units in args.units]
    print()
    print_table(summaries)
    elapsed = time.perf_counter() - began
    print(f"\n{sum(s['events'] for s in summaries[:1])} events per units value; FA rate = flagged share of windows "
          f"away from every event; FA/day = runs of such flags per sensor-day; total {elapsed:.0f}s")
    print(json.dumps({
        "config": {"sensors": sensors, "days": days, "holdout_days": holdout_days, "events_per_kind": per_kind,
                   "epochs": epochs, "patience": defaults.patience, "batch_size": defaults.batch_size,
                   "dropout": defaults.dropout, "validation_split": defaults.validation_split,
                   "percentile": defaults.percentile, "window": defaults.window, "ratio": defaults.ratio,
                   "seed": args.seed, "threads": threads, "quick": quick},
        "elapsed_s": round(elapsed, 1),
        "results": summaries,
    }, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
