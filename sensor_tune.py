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
import shutil
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from anomaly import files, labels, review, runner, settings, times, tuning
from anomaly.errors import EXIT_FAILED, EXIT_OK, ConfigError
from anomaly.settings import Common
from influx_interact import Database

logger = logging.getLogger("sensor_tune")

DEFAULT_TUNING = pd.Timedelta(days=28)


@dataclass(frozen=True)
class TuneSettings:
    common: Common
    start: pd.Timestamp
    stop: pd.Timestamp
    grid: tuple[float, ...]
    max_false_alarms: float | None
    labels: Mapping[str, pd.DatetimeIndex] | None  # from --labels-csv; None: from InfluxDB
    ratios_path: Path
    write: bool


def add_arguments(parser: argparse.ArgumentParser) -> None:
    labels.add_arguments(parser)
    tune = parser.add_argument_group("tuning")
    tune.add_argument(
        "--tune-start",
        "--start",
        dest="tune_start",
        help="start of the tuning range (default: before --eval-start, see above)",
    )
    tune.add_argument("--tune-stop", "--stop", dest="tune_stop", help="end of the tuning range")
    tune.add_argument("--eval-start", help="start of the evaluation range the tuning must not overlap")
    tune.add_argument("--eval-stop", help="end of the evaluation range (default now)")
    tune.add_argument("--allow-overlap", action="store_true", help="tune even when the two ranges overlap")
    tune.add_argument(
        "--ratios-grid",
        default="0.5:5:0.25",
        help="candidate ratios: START:STOP:STEP (inclusive) or a list 0.8,1,1.5 (default 0.5:5:0.25)",
    )
    tune.add_argument(
        "--max-false-alarms",
        type=float,
        metavar="N",
        help="false alarms per week allowed; then the best event recall within it is chosen",
    )
    tune.add_argument("--write", action="store_true", help="write the new ratios to --ratios (default: dry run)")


def tuning_range(
    args: argparse.Namespace, now: pd.Timestamp, interval: pd.Timedelta
) -> tuple[pd.Timestamp, pd.Timestamp]:
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
        start = stop - (eval_stop - eval_start if eval_start is not None and eval_stop is not None else DEFAULT_TUNING)
    if start >= stop:
        raise ConfigError(
            f"the tuning range {times.format_time(start)} .. {times.format_time(stop)} is empty; "
            f"check --tune-start and --tune-stop"
        )
    overlap = eval_start is not None and eval_stop is not None and start < eval_stop and eval_start < stop
    if overlap and not args.allow_overlap:
        raise ConfigError(
            f"the tuning range {times.format_time(start)} .. {times.format_time(stop)} overlaps the "
            f"evaluation range {times.format_time(eval_start)} .. {times.format_time(eval_stop)}: a "
            f"report over the evaluation range would then flatter the ratio; move one, or pass "
            f"--allow-overlap"
        )
    return start, stop


def settings_from_args(args: argparse.Namespace) -> TuneSettings:
    common = review.distinct_sensors(settings.common_from_args(args, label_field=labels.field_from_args(args)))
    start, stop = tuning_range(args, common.now, common.interval)
    if args.max_false_alarms is not None and not (math.isfinite(args.max_false_alarms) and args.max_false_alarms >= 0):
        raise ConfigError(f"--max-false-alarms: {args.max_false_alarms} must be a number >= 0 (per week)")
    return TuneSettings(
        common=common,
        start=start,
        stop=stop,
        grid=tuning.parse_grid(args.ratios_grid),
        max_false_alarms=args.max_false_alarms,
        labels=labels.from_files(args.labels_csv, common.interval),
        ratios_path=args.ratios,
        write=args.write,
    )


def write_ratios(path: Path, changes: Mapping[str, float]) -> Path:
    """Apply ``changes`` to the ratios file: back it up to <file>.bak, then replace it atomically."""
    current = json.loads(path.read_text(encoding="utf-8"))
    backup = path.with_name(path.name + ".bak")
    shutil.copy2(path, backup)
    files.write_atomic(path, tuning.updated_ratios(current, changes), durable=True)
    return backup


def tune_chunk(db: Database, chunk: Sequence[str], settings: TuneSettings) -> Iterator[tuning.SensorTuning | None]:
    """One query each for a chunk's labels and scores; each sensor tuned inside its own error boundary and
    printed. Yields each sensor's tuning, None for a sensor that failed."""
    common, interval = settings.common, settings.common.interval
    facts = {s: review.model_facts(common.models_dir, s, common.sensor_config, interval) for s in chunk}
    label_start = settings.start - (max(f.window for f in facts.values()) - 1) * interval
    marked = labels.read(db, chunk, label_start, settings.stop, interval, common.chunk_size, settings.labels)
    frames = db.read_scores(chunk, settings.start, settings.stop)
    for sensor_id in chunk:
        try:
            tuned = tuning.tune_sensor(
                sensor_id,
                review.stored_loss(frames.get(sensor_id)),
                marked.get(sensor_id),
                facts[sensor_id],
                common.sensor_config.ratio(sensor_id),
                start=settings.start,
                stop=settings.stop,
                interval=interval,
                candidates=settings.grid,
                max_false_alarms=settings.max_false_alarms,
            )
        except Exception:
            logger.exception("sensor %r: failed", sensor_id)
            yield None
            continue
        print(tuning.describe(tuned))
        yield tuned


def run(settings: TuneSettings, db: Database) -> runner.Outcome:
    began = time.monotonic()
    common = settings.common
    print(
        f"tuning range {times.format_time(settings.start)} .. {times.format_time(settings.stop)}, "
        f"{len(settings.grid)} candidate ratios {settings.grid[0]:g} .. {settings.grid[-1]:g}, objective: "
        + (
            "event F1"
            if settings.max_false_alarms is None
            else f"event recall with at most {settings.max_false_alarms:g} false alarms per week"
        )
    )
    sensor_ids = common.selected([] if common.sensors else db.sensor_ids(settings.start, settings.stop))
    found = [t for chunk in review.chunks(sensor_ids, common.chunk_size) for t in tune_chunk(db, chunk, settings)]
    tuned = [t for t in found if t is not None]
    failed = len(found) - len(tuned)
    changes = {t.sensor_id: t.new_ratio for t in tuned if t.new_ratio is not None and t.new_ratio != t.old_ratio}
    if settings.write and changes:
        try:
            backup = write_ratios(settings.ratios_path, changes)
        except OSError as e:
            logger.error("cannot write %s: %s", settings.ratios_path, e)
            return runner.Outcome(EXIT_FAILED)
        print(f"wrote {len(changes)} ratios to {settings.ratios_path} (previous file kept as {backup})")
    elif changes:
        print(f"dry run: {len(changes)} ratios would change; pass --write to write them to {settings.ratios_path}")
    else:
        print("no ratio changes")
    ok = sum(t.skipped is None for t in tuned)
    logger.info(
        "done in %.1fs: %d tuned, %d skipped, %d failed, %d changed%s",
        time.monotonic() - began,
        ok,
        len(tuned) - ok,
        failed,
        len(changes),
        "" if settings.write else " (dry run)",
    )
    return runner.Outcome(EXIT_FAILED if failed else EXIT_OK)


JOB = runner.Job("sensor_tune", __doc__, add_arguments, settings_from_args, run)

if __name__ == "__main__":
    sys.exit(runner.main(JOB))
