#!/usr/bin/env python3
"""Benchmark: threshold choice and persistence against injected anomalies, per kind of sensor.

Not part of the test suite. Runs in one process, with no InfluxDB, like bench_model_size.py. Four kinds of
generated 15-minute sensors (tools.sensor_data.kind_readings, normal_readings as the base):

- ``daily``: the plain daily cycle with noise;
- ``noisy``: the same with extra noise (0.4 × its spread), so normal windows reconstruct worse;
- ``drift``: the same with a slow linear drift (0.08 × its spread per day) that goes on past training;
- ``flat``: a held set point, a constant level with tiny noise (0.01).

Each sensor trains the default model on the readings before the held-out stretch, with the job's own
defaults (parsed by sensor_training.py's own parser; window and ratio from time_step_sizes.json and
threshold_ratios.json) and its threshold (the --percentile of the training windows' losses), through the
training job's pipeline (model_trainer, by tools.in_memory). The held-out stretch gets one spike, level
shift or flatline a day (tools.sensor_data.inject, sizes relative to the sensor's spread) and is scored by
the scorer's pipeline (model_predict.prepare, anomaly.losses with the NumPy engine, model_predict.decide).
The flags of every method are evaluated against the injected spans with anomaly.evaluation.evaluate
(labels = the intervals of each event):

- ``percentile K=1/2/3``: loss > threshold × ratio, with --min-consecutive K (detect.Rules min_consecutive);
- ``dynamic K=1/2``: the dynamic threshold (detect.Rules dynamic_history), with --min-consecutive K (K=2 with
  ``--history 96``, a day of 15 minutes, is the scorer's default rule), the history being the ``--history``
  windows before each one (from the end of the training stretch on), floor = threshold × ratio.

Only the rules named above are applied (detect.Rules leaves the scorer's other detectors, such as the
flat-line and missing checks, off): the figures compare the reconstruction threshold alone.

    .venv/bin/python bench/bench_detection.py            # full run, a few minutes
    .venv/bin/python bench/bench_detection.py --quick    # about 20 s, for development
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import model_predict  # noqa: E402
from anomaly import detect, evaluation, losses, thresholds, times  # noqa: E402
from model_trainer import Plan  # noqa: E402
from tools import in_memory, sensor_data  # noqa: E402

NOW = pd.Timestamp("2026-01-15T00:00:00Z")
KINDS = sensor_data.SENSOR_KINDS
PERSISTENCE = (1, 2, 3)
METHODS = (*(f"percentile K={k}" for k in PERSISTENCE), "dynamic K=1", "dynamic K=2")
COLUMNS = (
    ("event_recall", "ev recall", ".2f"),
    ("false_alarms_per_week", "FA/week", ".2f"),
    ("event_precision", "ev prec", ".2f"),
    ("event_f1", "ev F1", ".2f"),
    ("f1", "point F1", ".2f"),
    ("mean_delay_min", "delay min", ".0f"),
)


def method_rules(threshold: float, history: int) -> dict[str, detect.Rules]:
    """The methods compared, as the scorer's rules: --min-consecutive K, or --threshold dynamic."""
    rules = {f"percentile K={k}": detect.Rules(threshold, min_consecutive=k) for k in PERSISTENCE}
    rules["dynamic K=1"] = detect.Rules(threshold, dynamic_history=history)
    rules["dynamic K=2"] = detect.Rules(threshold, dynamic_history=history, min_consecutive=2)
    return rules


def run_sensor(
    kind: str,
    sensor_id: str,
    series: pd.Series,
    anomalies: list[sensor_data.Anomaly],
    holdout_start: pd.Timestamp,
    history: int,
    plan: Plan,
    defaults: in_memory.JobDefaults,
) -> dict:
    """Train as the job does, score the held-out stretch (and the history before it), flag with every method."""
    window, interval = defaults.window, plan.interval
    trained = in_memory.train(sensor_id, series[series.index < holdout_start], window, plan)
    # The windows before the held-out stretch are the dynamic threshold's history and the persistence runs' start.
    first, last = holdout_start - thresholds.history_needed(history) * interval, series.index[-1]
    prepared = in_memory.scoring_windows(series, trained.model, plan, first)
    (loss,), (blame,) = losses.fleet_losses([trained.model], [prepared.windows])
    effective = trained.model.threshold * defaults.ratio
    scores = {
        method: model_predict.decide(prepared, loss, rules, interval, first, last, blame).frame()
        for method, rules in method_rules(effective, history).items()
    }
    held_out = prepared.ends >= holdout_start
    labels_start = holdout_start - (window - 1) * interval
    labels = sensor_data.labels(anomalies, labels_start, last + interval, interval)
    by_kind = {
        a: sensor_data.labels([x for x in anomalies if x.kind == a], labels_start, last + interval, interval)
        for a in sensor_data.ANOMALY_KINDS
    }
    metrics, recall_by_kind = {}, {}
    for method, frame in scores.items():
        flagged = frame["anomaly"][held_out]
        metrics[method] = evaluation.evaluate(flagged, labels, window, interval)
        recall_by_kind[method] = {a: evaluation.evaluate(flagged, lab, window, interval) for a, lab in by_kind.items()}
    dynamic_held = scores["dynamic K=1"]["threshold"][held_out]
    return {
        "kind": kind,
        "sensor_id": sensor_id,
        "train_s": trained.train_s,
        "epochs": trained.fit.epochs,
        "threshold": trained.model.threshold,
        "floor": effective,
        "metrics": metrics,
        "by_anomaly": recall_by_kind,
        "dynamic_above_floor": float(np.mean(dynamic_held > effective)),
        "dynamic_threshold_median": float(np.median(dynamic_held)),
    }


def combined(rows: list[dict], method: str) -> dict:
    """Fleet metrics of one method over rows, plus event recall per anomaly kind."""
    figures = asdict(evaluation.combine([r["metrics"][method] for r in rows]))
    for a in sensor_data.ANOMALY_KINDS:
        figures[f"recall_{a}"] = evaluation.combine([r["by_anomaly"][method][a] for r in rows]).event_recall
    return figures


def cell(value: float, spec: str) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def print_table(title: str, table: dict[str, dict]) -> None:
    print(f"\n{title}")
    header = [
        "method",
        *(label for _, label, _ in COLUMNS),
        *(f"rec {a}" for a in ("spike", "shift", "flat")),
        "events",
        "false alarms",
    ]
    print("| " + " | ".join(header) + " |")
    print("|" + " --- |" * len(header))
    for method, f in table.items():
        cells = [
            method,
            *(cell(f[key], spec) for key, _, spec in COLUMNS),
            *(cell(f[f"recall_{a}"], ".2f") for a in sensor_data.ANOMALY_KINDS),
            f"{f['events_detected']}/{f['events']}",
            str(f["false_alarms"]),
        ]
        print("| " + " | ".join(cells) + " |")


def verdict(kind: str, table: dict[str, dict]) -> str:
    """Which of percentile K=1 and dynamic K=1 wins on this kind, and why, from the figures."""
    p, d = table["percentile K=1"], table["dynamic K=1"]

    def better(key: str, higher: bool) -> str:
        a, b = p[key], d[key]
        if any(isinstance(x, float) and math.isnan(x) for x in (a, b)) or abs(a - b) < 1e-9:
            return "tie"
        return "dynamic" if (b > a) == higher else "percentile"

    f1 = better("event_f1", True)
    parts = [
        f"event F1 {cell(p['event_f1'], '.2f')} (percentile) vs {cell(d['event_f1'], '.2f')} (dynamic)",
        f"recall {cell(p['event_recall'], '.2f')} vs {cell(d['event_recall'], '.2f')}",
        f"false alarms/week {cell(p['false_alarms_per_week'], '.2f')} vs {cell(d['false_alarms_per_week'], '.2f')}",
        f"mean delay {cell(p['mean_delay_min'], '.0f')} vs {cell(d['mean_delay_min'], '.0f')} min",
    ]
    head = "no winner" if f1 == "tie" else f"{f1} wins"
    notes = []
    if better("false_alarms_per_week", False) != "tie":
        notes.append(f"{better('false_alarms_per_week', False)} fewer false alarms")
    if better("event_recall", True) != "tie":
        notes.append(f"{better('event_recall', True)} better recall")
    return f"{kind}: {head} ({'; '.join(notes) or 'same recall and false alarms'}): " + ", ".join(parts)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="about 20 s: 1 sensor per kind, 21 days (7 held out), 1 event of each kind, 3 epochs",
    )
    parser.add_argument("--sensors", type=int, help="sensors per kind (default 3; quick 1)")
    in_memory.add_arguments(parser)
    parser.add_argument(
        "--history",
        type=int,
        default=672,
        help="windows of history for the dynamic threshold (default 672: 7 days of 15 minutes)",
    )
    parser.add_argument("--threads", type=int, help="TensorFlow intra-op threads (default: every core)")
    return parser


def history_problem(args: argparse.Namespace, defaults: in_memory.JobDefaults) -> str | None:
    """Why the readings before the held-out stretch are too few for --history, or None."""
    train_days = args.days - args.holdout_days
    interval = defaults.plan.interval
    needed = thresholds.history_needed(args.history) * interval + defaults.window * interval
    if pd.Timedelta(days=train_days) <= needed:
        return (
            f"--history {args.history} needs more than {needed} of readings before the held-out stretch; "
            f"there are {train_days} days"
        )
    return None


def print_header(args: argparse.Namespace, plan: Plan, defaults: in_memory.JobDefaults) -> None:
    per_kind = args.per_kind
    print(
        f"bench_detection: {len(KINDS)} kinds ({', '.join(KINDS)}) x {args.sensors} sensors x {args.days} days of "
        f"{times.format_duration(plan.interval)} readings ({args.days - args.holdout_days} trained on, "
        f"{args.holdout_days} held out with {per_kind} spike, {per_kind} level_shift, {per_kind} flatline each)"
    )
    print(
        f"model: units {plan.units}, window {defaults.window}, epochs <= {plan.epochs}, patience {plan.patience}, "
        f"percentile {plan.percentile}, ratio {defaults.ratio}, seed {args.seed}; dynamic: history "
        f"{args.history} windows, smoothing {thresholds.SMOOTHING}, fence {thresholds.FENCE}, z "
        f"{thresholds.Z_RANGE[0]}..{thresholds.Z_RANGE[-1]}" + ("  [--quick]" if args.quick else ""),
        flush=True,
    )


def run_all(args: argparse.Namespace, plan: Plan, defaults: in_memory.JobDefaults) -> list[dict]:
    """Every sensor of every kind; one line each as it ends."""
    index = pd.date_range(plan.start, NOW, freq=plan.interval, inclusive="left")
    rows: list[dict] = []
    for kind in KINDS:
        for n in range(args.sensors):
            sensor_id = f"{kind}-{n + 1}"
            values = sensor_data.kind_readings(kind, sensor_id, index, args.seed)
            events = sensor_data.event_times(n, plan.stop, args.per_kind, args.seed)
            series, anomalies = sensor_data.with_anomalies(values, index, sensor_id, events, plan.interval)
            row = run_sensor(kind, sensor_id, series, anomalies, plan.stop, args.history, plan, defaults)
            rows.append(row)
            summary = ", ".join(
                f"{m}: {row['metrics'][m].events_detected}/{row['metrics'][m].events} events, "
                f"{row['metrics'][m].false_alarms} FA"
                for m in ("percentile K=1", "dynamic K=1")
            )
            print(
                f"  {sensor_id}: {row['train_s']:.1f}s, {row['epochs']} epochs, floor {row['floor']:.4f}, dynamic "
                f"threshold median {row['dynamic_threshold_median']:.4f} (above the floor "
                f"{100 * row['dynamic_above_floor']:.0f}% of windows); {summary}",
                flush=True,
            )
    return rows


def print_report(rows: list[dict]) -> dict[str, dict[str, dict]]:
    """The tables per kind and for all, the verdicts and persistence line; returns the tables."""
    tables = {kind: {m: combined([r for r in rows if r["kind"] == kind], m) for m in METHODS} for kind in KINDS}
    tables["all"] = {m: combined(rows, m) for m in METHODS}
    for kind, table in tables.items():
        print_table(
            f"{kind} ({sum(r['kind'] == kind for r in rows) if kind != 'all' else len(rows)} sensors, "
            f"{table[METHODS[0]]['weeks']:.1f} sensor-weeks)",
            table,
        )
    print(
        "\nrec = event recall per anomaly kind; FA/week = false-alarm runs per sensor-week; delay = mean minutes "
        "from event start to the first flagged window"
    )
    print("\npercentile K=1 against dynamic K=1:")
    for kind, table in tables.items():
        print("  " + verdict(kind, table))
    print(
        "persistence (percentile): "
        + "; ".join(
            f"K={k}: recall {cell(tables['all'][f'percentile K={k}']['event_recall'], '.2f')}, "
            f"FA/week {cell(tables['all'][f'percentile K={k}']['false_alarms_per_week'], '.2f')}, "
            f"delay {cell(tables['all'][f'percentile K={k}']['mean_delay_min'], '.0f')} min"
            for k in PERSISTENCE
        )
    )
    return tables


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    defaults = in_memory.job_defaults()
    problem = in_memory.resolve_sizes(args, defaults, sensors=(1, 3)) or history_problem(args, defaults)
    if problem:
        print(problem, file=sys.stderr)
        return 2
    began = time.perf_counter()
    plan, threads = in_memory.start(args, defaults, NOW)
    print_header(args, plan, defaults)
    in_memory.warm_up(plan, defaults.window)
    tables = print_report(run_all(args, plan, defaults))
    elapsed = time.perf_counter() - began
    print(f"total {elapsed:.0f}s")
    print(
        json.dumps(
            {
                "config": {
                    "kinds": list(KINDS),
                    "sensors_per_kind": args.sensors,
                    "days": args.days,
                    "holdout_days": args.holdout_days,
                    "events_per_kind": args.per_kind,
                    "epochs": plan.epochs,
                    "history": args.history,
                    "smoothing": thresholds.SMOOTHING,
                    "fence": thresholds.FENCE,
                    "percentile": plan.percentile,
                    "ratio": defaults.ratio,
                    "window": defaults.window,
                    "seed": args.seed,
                    "threads": threads,
                    "quick": args.quick,
                },
                "elapsed_s": round(elapsed, 1),
                "results": {
                    kind: {
                        m: {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in f.items()}
                        for m, f in table.items()
                    }
                    for kind, table in tables.items()
                },
            },
            sort_keys=True,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
