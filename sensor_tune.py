#!/usr/bin/env python3
"""Choose each sensor's threshold ratio and the fleet's --min-consecutive, and optionally write the ratios
to threshold_ratios.json.

For a tuning range, per sensor: the loss of every window sensor_predict.py scored there (it does not
depend on the ratio), its readings, the model's metadata, and the labels (--labels-csv files, or the
--label-field in InfluxDB). Every ratio of --ratios-grid is tried with every K of --min-consecutive-grid,
each flag decided as the scorer decides it (detect.decide with the scorer's rules: the threshold x ratio,
fixed or dynamic, level, K windows in a row, flat-line; --threshold, --dynamic-history, --dynamic-floor and
--level-margin as the scoring job has them, by default its defaults: under the dynamic threshold a ratio
moves its floor, and the losses of --dynamic-history before the range are read so that each window's
threshold is the scorer's). For each K, each sensor's
ratio is chosen (ratio_choice.tune_ratio):

- with a labelled event in the range: the highest event F1, or, with --max-false-alarms N, the highest
  event recall among the ratios with at most N false alarms per week;
- without: the smallest ratio whose flag runs (all false alarms) stay within --alarm-budget a week, the
  rule training calibrates its threshold by (anomaly/calibration.py).

Ties go to the smallest change from the current ratio, then to the shortest mean delay. K is one flag of
sensor_predict.py for every sensor, so it is chosen for the fleet: the most sensors within their budget,
then the best event F1 (or recall) of the labelled sensors together, then the smallest change from
--min-consecutive (the scoring job's current K), then the shortest delay. The ratios printed and written
are the ones tuned for that K: set sensor_predict.py's --min-consecutive to it when writing them (pass
--min-consecutive-grid N to tune for a K you keep). Points of intervals without readings (kind missing)
are not windows: never scored, flagged or false alarms.

Tuning range: --tune-start/--tune-stop. Without them it is the range of the same length just before the
evaluation range (--eval-start/--eval-stop), so a report over the evaluation range is never made on the
data the ratio was fitted to; without either, the last 28 days. When both ranges are given and overlap,
the run stops (exit 2) unless --allow-overlap.

It prints, per K, what the fleet gets with it; the recommended K; per sensor, the old and new ratio and
the metrics at both (old: with --min-consecutive; new: with the recommended K) over the tuning range. Without
--write nothing changes (a dry run). With --write, the changed ratios go into --ratios: every other key,
"default" included, is kept; keys are sorted, indentation 2; the old file is copied to
<file>.bak first and the new one replaces it atomically. The next scoring run uses them.

Exit status: 0 when every sensor with a model and scores was tuned (sensors without a model or scores are
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
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

import clean
import model_predict
from anomaly import files, labels, review, runner, settings, times, tuning
from anomaly.errors import EXIT_FAILED, EXIT_OK, ConfigError
from anomaly.settings import Common
from influx_interact import Database
from model_predict import Policy, SensorModel

logger = logging.getLogger("sensor_tune")

DEFAULT_TUNING = pd.Timedelta(days=28)


@dataclass(frozen=True)
class TuneSettings:
    common: Common
    start: pd.Timestamp
    stop: pd.Timestamp
    grid: tuple[float, ...]
    consecutive: tuple[int, ...]
    current_consecutive: int
    objective: tuning.Objective
    policy: Policy  # the scorer's threshold rule and level margin (min_consecutive is tuned)
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
        "--min-consecutive-grid",
        default="1,2,3,4",
        help="candidate --min-consecutive of sensor_predict.py: a list 1,2,3,4 (default 1,2,3,4)",
    )
    tune.add_argument(
        "--min-consecutive",
        type=int,
        default=2,
        help="the --min-consecutive sensor_predict.py runs with now: the metrics before, and ties (default 2, "
        "as sensor_predict.py's)",
    )
    tune.add_argument(
        "--max-false-alarms",
        type=float,
        metavar="N",
        help="with labels: false alarms per week allowed; then the best event recall within it is chosen",
    )
    tune.add_argument(
        "--alarm-budget",
        type=float,
        default=0.5,
        metavar="RUNS_PER_WEEK",
        help="without labels: the smallest ratio giving at most this many flag runs a week is chosen, as "
        "training's --alarm-budget (default 0.5)",
    )
    model_predict.add_rule_arguments(parser)
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
    if not (math.isfinite(args.alarm_budget) and args.alarm_budget >= 0):
        raise ConfigError(f"--alarm-budget: {args.alarm_budget} must be a number >= 0 (flag runs per week)")
    return TuneSettings(
        common=common,
        start=start,
        stop=stop,
        grid=tuning.parse_grid(args.ratios_grid),
        consecutive=tuning.parse_consecutive(args.min_consecutive_grid),
        current_consecutive=settings.positive_int("--min-consecutive", args.min_consecutive),
        objective=tuning.Objective(args.max_false_alarms, args.alarm_budget),
        policy=model_predict.rule_policy(args, common.interval),
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


def scorer_rules(model: SensorModel, policy: Policy) -> tuning.RulesFor:
    """The rules sensor_predict.py decides a sensor by, at any ratio and K."""
    return lambda ratio, k: model_predict.rules_for(model, ratio, replace(policy, min_consecutive=k))


def tune_chunk(db: Database, chunk: Sequence[str], settings: TuneSettings) -> Iterator[tuning.SensorTuning | None]:
    """One query each for a chunk's labels, scores and readings; each sensor tuned inside its own error
    boundary. Yields each sensor's tuning, None for a sensor that failed."""
    common, interval = settings.common, settings.common.interval
    facts = {s: review.model_facts(common.models_dir, s, common.sensor_config, interval) for s in chunk}
    models = {s: SensorModel(f.metadata) for s, f in facts.items() if f.metadata is not None}
    widest = replace(settings.policy, min_consecutive=max(*settings.consecutive, settings.current_consecutive))
    # As the scorer reads: the windows that decide persistence before the range, and the readings the level
    # and flat-line detectors look back at before those.
    leads = [model_predict.lead(m, widest, interval) for m in models.values()]
    decided = max((d for d, _ in leads), default=pd.Timedelta(0))
    before = max((d + r for d, r in leads), default=pd.Timedelta(0)) + common.max_gap
    label_start = settings.start - (max(f.window for f in facts.values()) - 1) * interval
    marked = labels.read(db, chunk, label_start, settings.stop, interval, common.chunk_size, settings.labels)
    frames = db.read_scores(chunk, settings.start - decided, settings.stop)
    read = (settings.start - before, settings.stop)
    means = db.read_means(list(models), *read, interval) if models else {}
    for sensor_id in chunk:
        try:
            loss = review.stored_loss(frames.get(sensor_id))
            tuned = tuning.tune_sensor(
                sensor_id,
                loss,
                marked.get(sensor_id),
                facts[sensor_id],
                common.sensor_config.ratio(sensor_id),
                rules=scorer_rules(models[sensor_id], widest) if sensor_id in models else None,
                readings=clean.regular(means.get(sensor_id, review.no_readings()), interval, *read),
                start=settings.start,
                stop=settings.stop,
                interval=interval,
                candidates=settings.grid,
                consecutive=settings.consecutive,
                current_consecutive=settings.current_consecutive,
                objective=settings.objective,
                blame=review.stored_blame(frames.get(sensor_id), loss, facts[sensor_id].window),
            )
        except Exception:
            logger.exception("sensor %r: failed", sensor_id)
            yield None
            continue
        logger.info(
            "sensor %r: %s",
            sensor_id,
            f"skipped: {tuned.skipped}" if tuned.skipped else f"tuned ({tuned.rule}) for K {settings.consecutive}",
        )
        yield tuned


def objective_text(settings: TuneSettings) -> str:
    labelled = (
        "event F1"
        if settings.objective.max_false_alarms is None
        else f"event recall with at most {settings.objective.max_false_alarms:g} false alarms per week"
    )
    return f"{labelled} with labels; without, at most {settings.objective.alarm_budget:g} flag runs per week"


def run(settings: TuneSettings, db: Database) -> runner.Outcome:
    began = time.monotonic()
    common = settings.common
    print(
        f"tuning range {times.format_time(settings.start)} .. {times.format_time(settings.stop)}, "
        f"{len(settings.grid)} candidate ratios {settings.grid[0]:g} .. {settings.grid[-1]:g}, --min-consecutive "
        f"{','.join(map(str, settings.consecutive))}, objective: {objective_text(settings)}"
    )
    sensor_ids = runner.sensors_to_process(common, db, settings.start, settings.stop)
    found = [t for chunk in review.chunks(sensor_ids, common.chunk_size) for t in tune_chunk(db, chunk, settings)]
    tuned = [t for t in found if t is not None]
    failed = len(found) - len(tuned)
    fleet = tuning.fleet_choices(tuned, settings.consecutive)
    for choice in fleet:
        print(tuning.describe_fleet(choice))
    k = tuning.recommend(fleet, settings.current_consecutive, settings.objective)
    for t in tuned:
        print(tuning.describe(t, k, settings.objective))
    changes = {t.sensor_id: t.choices[k].ratio for t in tuned if k in t.choices and t.choices[k].ratio != t.old_ratio}
    if k != settings.current_consecutive:
        print(
            f"recommended: sensor_predict.py --min-consecutive {k} (now {settings.current_consecutive}); the new "
            f"ratios are tuned for it: change the flag together with them"
        )
    else:
        print(f"recommended: sensor_predict.py --min-consecutive {k}, as now")
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
        "done in %.1fs: %d tuned, %d skipped, %d failed, %d changed%s; --min-consecutive %d recommended",
        time.monotonic() - began,
        ok,
        len(tuned) - ok,
        failed,
        len(changes),
        "" if settings.write else " (dry run)",
        k,
    )
    return runner.Outcome(EXIT_FAILED if failed else EXIT_OK)


JOB = runner.Job("sensor_tune", __doc__, add_arguments, settings_from_args, run)

if __name__ == "__main__":
    sys.exit(runner.main(JOB))
