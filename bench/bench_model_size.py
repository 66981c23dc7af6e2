#!/usr/bin/env python3
"""Benchmark: LSTM units against training time and how well injected anomalies are flagged.

Not part of the test suite. Runs in one process, with no InfluxDB. Each sensor gets generated
15-minute readings (tools.sensor_data.normal_readings). A model is trained on the first part with each
units value, using the same seed and the job's own defaults for epochs, patience, batch size, dropout,
validation split and percentile (parsed by sensor_training.py's own parser), and the default window
and ratio from time_step_sizes.json and threshold_ratios.json. It is trained and its threshold computed
by the training job's pipeline (model_trainer, through tools.in_memory), kept in memory. The held-out
stretch then gets spikes, level shifts and flatlines at known times (tools.sensor_data.inject) and is
scored by the scorer's pipeline (model_predict.prepare, anomaly.losses, model_predict.decide), the
flags from the Keras engine's losses, checked against the NumPy engine's.

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
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import model_predict  # noqa: E402
import model_trainer  # noqa: E402
from anomaly import detect, losses, runs, times  # noqa: E402
from model_trainer import Plan  # noqa: E402
from tools import in_memory, sensor_data  # noqa: E402

# Training ends here; the readings run from NOW - days up to NOW.
NOW = pd.Timestamp("2026-01-15T00:00:00Z")
UNITS = (16, 32, 64, 128)


def sensor_readings(
    sensor_id: str,
    sensor_number: int,
    index: pd.DatetimeIndex,
    interval: pd.Timedelta,
    holdout_start: pd.Timestamp,
    per_kind: int,
    seed: int,
) -> tuple[pd.Series, list[sensor_data.Anomaly]]:
    """Readings with anomalies in the held-out stretch only, one a day (tools.sensor_data.event_times)."""
    return sensor_data.with_anomalies(
        sensor_data.normal_readings(sensor_id, index, seed),
        index,
        sensor_id,
        sensor_data.event_times(sensor_number, holdout_start, per_kind, seed),
        interval,
    )


def window_labels(
    ends: pd.DatetimeIndex, anomalies: list[sensor_data.Anomaly], window: int, interval: pd.Timedelta
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
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
    return len(runs.runs(flagged & ~near))


def run_sensor(
    sensor_id: str,
    series: pd.Series,
    anomalies: list[sensor_data.Anomaly],
    holdout_start: pd.Timestamp,
    plan: Plan,
    defaults: in_memory.JobDefaults,
) -> dict:
    """Train on the readings before ``holdout_start`` as the job does, then score the rest as the scorer does."""
    window, interval = defaults.window, plan.interval
    trained = in_memory.train(sensor_id, series[series.index < holdout_start], window, plan)
    model, threshold = trained.model, trained.model.threshold
    prepared = in_memory.scoring_windows(series, model, plan, holdout_start)
    ends = prepared.ends
    (numpy_losses,), _ = losses.fleet_losses([model], [prepared.windows], "numpy")
    (keras_losses,), (keras_blame,) = losses.fleet_losses([model], [prepared.windows], "keras")
    # The scorer's default engine is the NumPy forward pass; it must agree with Keras.
    engine_diff = float(np.max(np.abs(numpy_losses - keras_losses)))
    rules = detect.Rules(threshold * defaults.ratio, window=model.window)
    scores = model_predict.decide(prepared, keras_losses, rules, interval, holdout_start, series.index[-1], keras_blame)
    flagged = scores.anomaly

    positive, near, zones = window_labels(ends, anomalies, window, interval)
    detected = {kind: [0, 0] for kind in sensor_data.ANOMALY_KINDS}
    for a, zone in zip(anomalies, zones):
        detected[a.kind][1] += 1
        detected[a.kind][0] += int(flagged[zone].any())
    return {
        "units": plan.units,
        "sensor_id": sensor_id,
        "train_s": trained.train_s,
        "fit_s": trained.fit_s,
        "epochs": trained.fit.epochs,
        "val_loss": trained.fit.val_loss,
        "threshold": threshold,
        "engine_diff": engine_diff,
        "detected": detected,
        "tp": int(np.sum(flagged & positive)),
        "fp": int(np.sum(flagged & ~positive)),
        "fn": int(np.sum(~flagged & positive)),
        "quiet_windows": int(np.sum(~near)),
        "false_alarms": int(np.sum(flagged & ~near)),
        "false_alarm_runs": false_alarm_runs(flagged, near),
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
        "false_alarm_runs_per_sensor_day": (
            sum(r["false_alarm_runs"] for r in rows) / sum(r["scored_days"] for r in rows)
        ),
        "window_precision": precision,
        "window_recall": recall,
        "window_f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "engine_max_abs_diff": max(r["engine_diff"] for r in rows),
    }


def print_table(summaries: list[dict]) -> None:
    header = (
        f"{'units':>5} {'train s/sensor':>14} {'s/epoch':>7} {'epochs':>6} {'val loss':>8} {'thresh':>6} "
        f"{'ev recall':>9} {'spike':>5} {'shift':>5} {'flat':>5} {'FA rate':>7} {'FA/day':>6} "
        f"{'prec':>5} {'recall':>6} {'F1':>5}"
    )
    print(header)
    print("-" * len(header))
    for s in summaries:
        kind = s["event_recall_by_kind"]
        print(
            f"{s['units']:>5} {s['train_s_per_sensor']:>14.1f} {s['s_per_epoch']:>7.2f} {s['epochs_mean']:>6.1f} "
            f"{s['val_loss_mean']:>8.4f} {s['threshold_mean']:>6.3f} {s['event_recall']:>9.2f} "
            f"{kind['spike']:>5.2f} {kind['level_shift']:>5.2f} {kind['flatline']:>5.2f} "
            f"{s['false_alarm_rate']:>7.4f} {s['false_alarm_runs_per_sensor_day']:>6.3f} "
            f"{s['window_precision']:>5.2f} {s['window_recall']:>6.2f} {s['window_f1']:>5.2f}"
        )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="about a minute: 2 sensors, 21 days (7 held out), 1 event of each kind, 3 epochs",
    )
    parser.add_argument("--sensors", type=int, help="sensors (default 4; quick 2)")
    in_memory.add_arguments(parser)
    parser.add_argument("--units", type=int, nargs="+", default=list(UNITS), help="units values (default 16 32 64 128)")
    parser.add_argument(
        "--threads",
        type=int,
        help="TensorFlow intra-op threads, set as the job sets them (default: every core, as with "
        "--jobs 1; 1 is what each worker gets when --jobs equals the core count)",
    )
    return parser


def print_header(args: argparse.Namespace, plan: Plan, defaults: in_memory.JobDefaults, threads: int) -> None:
    print(
        f"bench_model_size: {args.sensors} sensors x {args.days} days of {times.format_duration(plan.interval)} "
        f"readings ({args.days - args.holdout_days} days trained on, {args.holdout_days} held out with "
        f"{3 * args.per_kind} events per sensor: {args.per_kind} spike, {args.per_kind} level_shift, "
        f"{args.per_kind} flatline)"
    )
    print(
        f"model: units {' '.join(map(str, args.units))}; window {defaults.window}, dropout {plan.dropout}, "
        f"epochs <= {plan.epochs}, patience {plan.patience}, batch {plan.batch_size}, "
        f"validation split {plan.validation_split}, percentile {plan.percentile}, ratio {defaults.ratio}, "
        f"seed {args.seed} (deterministic ops); {threads} TensorFlow thread(s); {len(args.units) * args.sensors} fits"
        + ("  [--quick: fewer sensors, days and epochs than the full run]" if args.quick else "")
    )
    print(
        f"libraries: {', '.join(f'{k} {v}' for k, v in sorted(model_trainer.library_versions().items()))}; "
        f"{os.cpu_count()} CPUs",
        flush=True,
    )


def run_all(args: argparse.Namespace, plan: Plan, defaults: in_memory.JobDefaults) -> dict[int, list[dict]]:
    """Every sensor with every units value; one line each as it ends."""
    index = pd.date_range(plan.start, NOW, freq=plan.interval, inclusive="left")
    sensor_ids = [f"AHU-{n + 1} supply air temp" for n in range(args.sensors)]
    data = [
        sensor_readings(s, n, index, plan.interval, plan.stop, args.per_kind, args.seed)
        for n, s in enumerate(sensor_ids)
    ]
    rows: dict[int, list[dict]] = {units: [] for units in args.units}
    # Sensors outer, units inner: a drift in the machine's load then touches every units value alike.
    for sensor_id, (series, anomalies) in zip(sensor_ids, data):
        for units in args.units:
            row = run_sensor(sensor_id, series, anomalies, plan.stop, replace(plan, units=units), defaults)
            rows[units].append(row)
            print(
                f"  {sensor_id!r} units {units:>3}: {row['train_s']:6.1f}s, {row['epochs']:>2} epochs, "
                f"val loss {row['val_loss']:.4f}, threshold {row['threshold']:.4f}, "
                f"events {sum(d[0] for d in row['detected'].values())}/{len(anomalies)}, "
                f"false alarms {row['false_alarms']}/{row['quiet_windows']}",
                flush=True,
            )
    return rows


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    defaults = in_memory.job_defaults()
    problem = in_memory.resolve_sizes(args, defaults, sensors=(2, 4))
    if problem:
        print(problem, file=sys.stderr)
        return 2
    began = time.perf_counter()
    plan, threads = in_memory.start(args, defaults, NOW)
    print_header(args, plan, defaults, threads)
    in_memory.warm_up(plan, defaults.window)
    rows = run_all(args, plan, defaults)

    summaries = [summarize(rows[units]) for units in args.units]
    print()
    print_table(summaries)
    elapsed = time.perf_counter() - began
    print(
        f"\n{sum(s['events'] for s in summaries[:1])} events per units value; FA rate = flagged share of windows "
        f"away from every event; FA/day = runs of such flags per sensor-day; total {elapsed:.0f}s"
    )
    print(
        json.dumps(
            {
                "config": {
                    "sensors": args.sensors,
                    "days": args.days,
                    "holdout_days": args.holdout_days,
                    "events_per_kind": args.per_kind,
                    "epochs": plan.epochs,
                    "patience": plan.patience,
                    "batch_size": plan.batch_size,
                    "dropout": plan.dropout,
                    "validation_split": plan.validation_split,
                    "percentile": plan.percentile,
                    "window": defaults.window,
                    "ratio": defaults.ratio,
                    "seed": args.seed,
                    "threads": threads,
                    "quick": args.quick,
                },
                "elapsed_s": round(elapsed, 1),
                "results": summaries,
            },
            sort_keys=True,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
