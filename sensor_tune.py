#!/usr/bin/env python3
"""Choose each sensor's threshold ratio from its labels, and optionally write it to threshold_ratios.json.

For a tuning range, per sensor: the loss of every window sensor_predict.py scored there (it does not
depend on the ratio), the model's saved threshold and window, and the labels (--labels-csv files, or the
--label-field in InfluxDB). Every ratio of --ratios-grid is evaluated (evaluation.tune_ratio): the chosen
one has the highest event F1, or, with --max-false-alarms N, the highest event recall among the ratios
with at most N false alarms per week; ties go to the larger ratio.

Tuning range: --tune-start/--tune-stop. Without them it is the range of the same length just before the
evaluation range (--eval-start/--eval-stop), so a report over the evaluation range is never made on the
data the ratio was fitted to; without either, the last 28 days. When both ranges are given and overlap,
the run stops (exit 2) unless --allow-overlap.

It prints, per sensor, the old and new ratio and the metrics at both over the tuning range. Without
--write nothing changes (a dry run). With --write, the changed ratios go into --ratios: every other key,
"default" included, is kept; keys are sorted, indentation 2; the old file is copied to
<file>.bak first and the new one replaces it atomically. The next scoring run uses them.

Exit status: 0 when every sensor with labels was tuned (sensors without labels, model or scores are
listed and skipped), 1 when the database failed or a sensor could not be tuned, 2 for bad configuration.
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from anomaly import logs, settings, times
import evaluation
import labels as label_io
import sensor_evaluate
from anomaly.errors import ConfigError
from anomaly.settings import Connection, Schema, SensorConfig
from influx_interact import Influx, InfluxError

logger = logging.getLogger("sensor_tune")

DEFAULT_TUNING = pd.Timedelta(days=28)


@dataclass(frozen=True)
class TuneSettings:
    connection: Connection
    schema: Schema
    sensors: tuple[str, ...]
    shard: tuple[int, int] | None
    sensor_config: SensorConfig
    interval: pd.Timedelta
    models_dir: Path
    chunk_size: int
    start: pd.Timestamp
    stop: pd.Timestamp
    grid: tuple[float, ...]
    max_false_alarms: float | None
    labels_csv: tuple[Path, ...]
    ratios_path: Path
    write: bool


@dataclass(frozen=True)
class Outcome:
    """One sensor's tuning: the ratio before and after and the metrics at both; ``skipped`` says why not."""

    sensor_id: str
    old_ratio: float
    new_ratio: float | None = None
    before: evaluation.Metrics | None = None
    after: evaluation.Metrics | None = None
    within_budget: bool = True
    skipped: str | None = None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    settings.add_common_arguments(parser)
    sensor_evaluate.add_label_arguments(parser)
    tune = parser.add_argument_group("tuning")
    tune.add_argument("--tune-start", "--start", dest="tune_start",
                      help="start of the tuning range (default: before --eval-start, see above)")
    tune.add_argument("--tune-stop", "--stop", dest="tune_stop", help="end of the tuning range")
    tune.add_argument("--eval-start", help="start of the evaluation range the tuning must not overlap")
    tune.add_argument("--eval-stop", help="end of the evaluation range (default now)")
    tune.add_argument("--allow-overlap", action="store_true", help="tune even when the two ranges overlap")
    tune.add_argument("--ratios-grid", default="0.5:5:0.25",
                      help="candidate ratios: START:STOP:STEP (inclusive) or a list 0.8,1,1.5 (default 0.5:5:0.25)")
    tune.add_argument("--max-false-alarms", type=float, metavar="N",
                      help="false alarms per week allowed; then the best event recall within it is chosen")
    tune.add_argument("--write", action="store_true", help="write the new ratios to --ratios (default: dry run)")
    tune.add_argument("--now", help="take this RFC3339 time as the current time (replays and tests)")
    return parser


def parse_grid(text: str) -> tuple[float, ...]:
    """``0.5:5:0.25`` (start, stop inclusive, step) or ``0.8,1,1.5`` -> sorted positive ratios."""
    try:
        if ":" in text:
            first, last, step = (float(part) for part in text.split(":"))
            if not (0 < step and first <= last) or (last - first) / step > 10_000:
                raise ValueError
            values = np.round(np.arange(first, last + step / 2, step), 6)
        else:
            values = np.array([float(part) for part in text.split(",") if part.strip()])
    except ValueError:
        values = np.array([])
    if values.size == 0 or not np.all(np.isfinite(values) & (values > 0)):
        raise ConfigError(f"--ratios-grid: {text!r} is not START:STOP:STEP (0.5:5:0.25) or a list of positive "
                          f"ratios (0.8,1,1.5)")
    return tuple(sorted(set(float(v) for v in values)))


def tuning_range(args: argparse.Namespace, now: pd.Timestamp,
                 interval: pd.Timedelta) -> tuple[pd.Timestamp, pd.Timestamp]:
    """The tuning range from the flags, as the module docstring says; refuses an overlap unless allowed."""
    def time_of(text: str | None, flag: str) -> pd.Timestamp | None:
        return None if text is None else times.parse_time(text, now, flag).floor(interval)

    eval_start, eval_stop = time_of(args.eval_start, "--eval-start"), time_of(args.eval_stop, "--eval-stop")
    if eval_stop is not None and eval_start is None:
        raise ConfigError("--eval-stop needs --eval-start")
    if eval_start is not None:
        eval_stop = eval_stop or now.floor(interval)
        if eval_start >= eval_stop:
            raise ConfigError(f"--eval-start {args.eval_start} must be before --eval-stop ({args.eval_stop or 'now'})")
    start, stop = time_of(args.tune_start, "--tune-start"), time_of(args.tune_stop, "--tune-stop")
    if stop is None:
        stop = eval_start if eval_start is not None else now.floor(interval)
    if start is None:
        start = stop - (eval_stop - eval_start if eval_start is not None else DEFAULT_TUNING)
    if start >= stop:
        raise ConfigError(f"the tuning range {times.format_time(start)} .. {times.format_time(stop)} is empty; "
                          f"check --tune-start and --tune-stop")
    if eval_start is not None and start < eval_stop and eval_start < stop and not args.allow_overlap:
        raise ConfigError(f"the tuning range {times.format_time(start)} .. {times.format_time(stop)} overlaps the "
                          f"evaluation range {times.format_time(eval_start)} .. {times.format_time(eval_stop)}: a "
                          f"report over the evaluation range would then flatter the ratio; move one, or pass "
                          f"--allow-overlap")
    return start, stop


def settings_from_args(args: argparse.Namespace) -> TuneSettings:
    now = times.current_time(args.now)
    interval = times.parse_duration(args.interval, "--interval")
    start, stop = tuning_range(args, now, interval)
    if args.max_false_alarms is not None and not (math.isfinite(args.max_false_alarms) and args.max_false_alarms >= 0):
        raise ConfigError(f"--max-false-alarms: {args.max_false_alarms} must be a number >= 0 (per week)")
    return TuneSettings(
        connection=settings.connection_from_args(args),
        schema=settings.schema_from_args(args, label_field=sensor_evaluate.label_field(args)),
        sensors=tuple(dict.fromkeys(args.sensor)),
        shard=settings.parse_shard(args.shard),
        sensor_config=settings.load_sensor_config(args.ratios, args.windows),
        interval=interval,
        models_dir=args.models_dir,
        chunk_size=settings.positive_int("--chunk-size", args.chunk_size),
        start=start,
        stop=stop,
        grid=parse_grid(args.ratios_grid),
        max_false_alarms=args.max_false_alarms,
        labels_csv=tuple(args.labels_csv),
        ratios_path=args.ratios,
        write=args.write,
    )


# ---------------------------------------------------------------- pure parts


def tune_sensor(sensor_id: str, loss: pd.Series, labelled: pd.DatetimeIndex | None,
                facts: sensor_evaluate.ModelFacts, old_ratio: float, settings: TuneSettings) -> Outcome:
    """The chosen ratio and the metrics at the old and new ratio over the tuning range; or why not."""
    if facts.threshold is None:
        return Outcome(sensor_id, old_ratio, skipped=facts.note or "no model")
    if labelled is None:
        return Outcome(sensor_id, old_ratio, skipped="no labels")
    if loss.empty:
        return Outcome(sensor_id, old_ratio, skipped="no scores in the tuning range (run sensor_predict.py "
                                                     "with --start/--stop over it)")
    grid = evaluation.labels_on_grid(labelled, settings.start - (facts.window - 1) * settings.interval,
                                     settings.stop, settings.interval)
    try:
        best, table = evaluation.tune_ratio(loss, facts.threshold, grid, facts.window, settings.interval,
                                            settings.grid, settings.max_false_alarms)
    except ValueError as e:
        return Outcome(sensor_id, old_ratio, skipped=str(e))
    before = evaluation.evaluate(evaluation.flags_for_ratio(loss, facts.threshold, old_ratio), grid, facts.window,
                                 settings.interval)
    row = table[table["chosen"]].iloc[0]
    after = evaluation.Metrics(**{name: row[name].item() if hasattr(row[name], "item") else row[name]
                                  for name in evaluation.METRIC_NAMES})
    return Outcome(sensor_id, old_ratio, best, before, after, bool(row["within_budget"]))


def _rate(value: float, fmt: str = "{:.2f}") -> str:
    return "–" if math.isnan(value) else fmt.format(value)


def describe(outcome: Outcome) -> str:
    """One line per sensor for people: old -> new ratio and the expected effect."""
    if outcome.skipped:
        return f"{outcome.sensor_id}: ratio {outcome.old_ratio:g} kept: {outcome.skipped}"
    b, a = outcome.before, outcome.after
    pairs = [("event recall", b.event_recall, a.event_recall, "{:.2f}"),
             ("event precision", b.event_precision, a.event_precision, "{:.2f}"),
             ("event F1", b.event_f1, a.event_f1, "{:.2f}"),
             ("false alarms/week", b.false_alarms_per_week, a.false_alarms_per_week, "{:.1f}"),
             ("mean delay min", b.mean_delay_min, a.mean_delay_min, "{:.0f}")]
    effect = ", ".join(f"{name} {_rate(x, fmt)} -> {_rate(y, fmt)}" for name, x, y, fmt in pairs)
    budget = "" if outcome.within_budget else " (no ratio keeps within --max-false-alarms: fewest false alarms)"
    return (f"{outcome.sensor_id}: ratio {outcome.old_ratio:g} -> {outcome.new_ratio:g}{budget}; "
            f"{b.events} events, {effect}")


def updated_ratios(current: Mapping[str, object], changes: Mapping[str, float]) -> str:
    """The ratios file's new text: ``current`` with ``changes`` applied, keys sorted, indentation 2."""
    return json.dumps({**current, **changes}, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def write_ratios(path: Path, changes: Mapping[str, float]) -> Path:
    """Apply ``changes`` to the ratios file: back it up to <file>.bak, then replace it atomically."""
    current = json.loads(path.read_text(encoding="utf-8"))
    backup = path.with_name(path.name + ".bak")
    shutil.copy2(path, backup)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(updated_ratios(current, changes))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return backup


# ---------------------------------------------------------------- the run


def run(settings: TuneSettings, csv_labels: Mapping[str, pd.DatetimeIndex] | None) -> int:
    began = time.monotonic()
    outcomes: list[Outcome] = []
    failed = 0
    interval = settings.interval
    print(f"tuning range {times.format_time(settings.start)} .. {times.format_time(settings.stop)}, "
          f"{len(settings.grid)} candidate ratios {settings.grid[0]:g} .. {settings.grid[-1]:g}, objective: "
          + ("event F1" if settings.max_false_alarms is None
             else f"event recall with at most {settings.max_false_alarms:g} false alarms per week"))
    with Influx(settings.connection, settings.schema) as db:
        sensor_ids = sensor_evaluate.select_sensors(db, settings.sensors, settings.shard, settings.start, settings.stop)
        for first in range(0, len(sensor_ids), settings.chunk_size):
            chunk = sensor_ids[first:first + settings.chunk_size]
            facts = {s: sensor_evaluate.model_facts(settings.models_dir, s, settings.sensor_config, interval)
                     for s in chunk}
            label_start = settings.start - (max(f.window for f in facts.values()) - 1) * interval
            marked = sensor_evaluate.read_labels(db, chunk, label_start, settings.stop, interval,
                                                 settings.chunk_size, csv_labels)
            frames = db.read_scores(chunk, settings.start, settings.stop)
            for sensor_id in chunk:
                frame = frames.get(sensor_id)
                loss = (pd.to_numeric(frame["loss"], errors="coerce").sort_index() if frame is not None
                        else pd.Series(dtype="float64", index=pd.DatetimeIndex([], tz="UTC")))
                try:
                    outcome = tune_sensor(sensor_id, loss, marked.get(sensor_id), facts[sensor_id],
                                          settings.sensor_config.ratio(sensor_id), settings)
                except Exception:
                    logger.exception("sensor %r: failed", sensor_id)
                    failed += 1
                    continue
                outcomes.append(outcome)
                print(describe(outcome))
    changes = {o.sensor_id: o.new_ratio for o in outcomes if o.new_ratio is not None and o.new_ratio != o.old_ratio}
    if settings.write and changes:
        backup = write_ratios(settings.ratios_path, changes)
        print(f"wrote {len(changes)} ratios to {settings.ratios_path} (previous file kept as {backup})")
    elif changes:
        print(f"dry run: {len(changes)} ratios would change; pass --write to write them to {settings.ratios_path}")
    else:
        print("no ratio changes")
    tuned = sum(o.skipped is None for o in outcomes)
    logger.info("done in %.1fs: %d tuned, %d skipped, %d failed, %d changed%s", time.monotonic() - began, tuned,
                len(outcomes) - tuned, failed, len(changes), "" if settings.write else " (dry run)")
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.configure(args.log_level, args.log_format)
    try:
        settings = settings_from_args(args)
        csv_labels = sensor_evaluate.labels_of_files(settings.labels_csv, settings.interval)
    except (ConfigError, label_io.LabelError) as e:
        logger.error("configuration: %s", e)
        return 2
    try:
        return run(settings, csv_labels)
    except InfluxError as e:
        logger.error("%s", e)
        return 1
    except OSError as e:
        logger.error("cannot write %s: %s", settings.ratios_path, e)
        return 1


if __name__ == "__main__":
    sys.exit(main())
