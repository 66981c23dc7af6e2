"""One scoring run of sensor_predict.py, a chunk of sensors at a time, each gathered ahead (gathering.py): the
windows and their losses, the decisions, the lines to write and the counts.

Its lines are the job's: they are logged as ``sensor_predict``, the name operators filter the job's log by.
"""

from __future__ import annotations

import functools
import logging
from collections import Counter
from collections.abc import Callable, Mapping

import numpy as np
import pandas as pd

import model_predict
from anomaly import cold_start, detect, loss_memory, losses, times
from anomaly.chunk import Chunk, Cut
from anomaly.gathering import Gathered, Gatherer
from anomaly.predict_settings import PredictSettings
from anomaly.scores import Scores
from influx_interact import Database
from model_predict import SensorModel

logger = logging.getLogger("sensor_predict")
COUNTS = (
    "scored",
    "up_to_date",
    "no_data",
    "skipped",
    "failed",
    "windows",
    "anomalies",
    "missing",
    "notifications_failed",
    "alerts_failed",
    "unpacked",
)


class Run:
    """One scoring run: its settings, its database, its counts and the scores kept for the events."""

    def __init__(self, settings: PredictSettings, db: Database, pending: dict[str, pd.Timestamp]):
        """``pending``: per sensor, where an earlier run's write failed (rescore.py): scored again from there."""
        self.settings = settings
        self.common = settings.common
        self.db = db
        self.counts: Counter[str] = Counter(dict.fromkeys(COUNTS, 0))
        self.scored: dict[str, Scores] = {}
        # Each scored sensor's window (1: the cold-start detector), which joins its flags into events.
        self.window_of: dict[str, int] = {}
        self.pending = pending
        self.due: dict[str, tuple[pd.Timestamp, pd.Timestamp]] = {}
        self.gathering = Gatherer(settings, db, pending)
        # A backfill that writes clears what it does not write over (clear_stale): per sensor of the chunk, the
        # ranges it holds no window in, and the chunk's points without a loss.
        self.clears = settings.schedule.start is not None and not settings.dry_run
        self.stale: dict[str, list[tuple[pd.Timestamp, pd.Timestamp]]] = {}
        self.unscored: list[str] = []
        # A tick takes the losses of its history windows from the one before (loss_memory.py); a backfill
        # computes every loss from the readings as they are.
        self.memory = (
            loss_memory.load(settings.loss_memory_file, self.signature()) if settings.schedule.start is None else None
        )
        self.remembered = 0

    def signature(self) -> str:
        """What, besides its model, a sensor's losses depend on: kept with them (loss_memory.py)."""
        common = self.common
        return (
            f"engine={self.settings.engine} measurement={common.schema.measurement} field={common.schema.field} "
            f"interval={common.interval.value} max_gap_points={common.max_gap_points}"
        )

    @property
    def cold(self) -> cold_start.ColdStartSettings:
        """The cold-start detector's settings, asked for only for the sensors it scores, when it is on."""
        if self.settings.cold_start is None:
            raise RuntimeError("the cold-start detector is off (--no-cold-start)")
        return self.settings.cold_start

    def fail(self, sensor_id: str) -> None:
        logger.exception("sensor %r: failed", sensor_id)
        self.counts["failed"] += 1

    def no_window(self, sensor_id: str, first: pd.Timestamp, last: pd.Timestamp) -> None:
        logger.info(
            "sensor %r: no complete window ends in %s .. %s",
            sensor_id,
            times.format_time(first),
            times.format_time(last),
        )
        self.counts["no_data"] += 1

    def score_chunk(self, gathered: Gathered) -> list[str]:
        """Score one chunk of sensors from what was gathered for it; return the lines to write."""
        loaded = gathered.loaded
        self.counts.update(loaded.counts)
        self.due.update(gathered.due)
        lines = self.score_cold(loaded.cold) if loaded.cold else []
        models, due, leads, data, read = loaded.models, gathered.due, gathered.leads, gathered.data, gathered.read
        if not due:
            return lines
        policy, interval = self.settings.policy, self.common.interval
        if not data:
            # Not one reading for a whole chunk is a wrong --field or --measurement far more often than a chunk
            # of dead sensors: say so once rather than flag every sensor as missing.
            logger.warning(
                "no readings at all for %d sensors in %s .. %s; check --measurement and --field",
                len(due),
                times.format_time(read[0]),
                times.format_time(read[1]),
            )
            for sensor_id, (first, last) in due.items():
                self.no_window(sensor_id, first, last)
            return lines
        chunk = Chunk.of(data, list(due), interval, read, self.common.max_gap_points)
        ranges = {s: (first - leads[s][0], last) for s, (first, last) in due.items()}
        windows = self.windows(chunk, models, ranges)
        for sensor_id in [s for s in due if s not in chunk.rows]:
            try:
                prepared = model_predict.prepare(
                    data.get(sensor_id, no_readings()),
                    models[sensor_id],
                    interval,
                    read,
                    self.common.max_gap_points,
                    *ranges[sensor_id],
                )
                windows[sensor_id] = prepared
            except Exception:
                self.fail(sensor_id)
        scored = [s for s in due if s in windows]
        try:
            reach = max((leads[s][0] for s in scored), default=pd.Timedelta(0))
            found = self.losses(chunk, scored, models, windows, due, reach)
        except Exception:
            logger.exception(
                "failed to compute the losses of %d sensors: %s", len(scored), ", ".join(map(repr, scored))
            )
            self.counts["failed"] += len(scored)
            return lines
        rules = {s: model_predict.rules_for(models[s], self.common.sensor_config.ratio(s), policy) for s in scored}
        scorings = self.deciders(chunk, windows, found, rules, due)
        decided = {s: self.decide(s, scorings[s], due[s], rules[s].window) for s in scored if s in scorings}
        return lines + self.lines(decided, "lstm")

    def losses(
        self,
        chunk: Chunk,
        scored: list[str],
        models: dict[str, SensorModel],
        windows: dict[str, Cut | model_predict.Prepared],
        due: dict[str, tuple[pd.Timestamp, pd.Timestamp]],
        reach: pd.Timedelta,
    ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Each sensor's window losses and blame (losses.BLAME), computed at once (with the memory: only those it does
        not keep; ``reach``: how far before a due window the windows that decide it begin)."""

        def compute(cut: list[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
            return losses.fleet_losses([models[s] for s in scored], cut, self.settings.engine)

        if self.memory is None:
            return dict(zip(scored, zip(*compute([windows[s].windows for s in scored]))))
        seconds = chunk.grid.as_unit("s").asi8
        found, blame, remembered = loss_memory.losses(
            self.memory,
            scored,
            [loss_memory.model_key(models[s].metadata) for s in scored],
            [seconds[w.ends] if isinstance(w, Cut) else w.ends.as_unit("s").asi8 for w in (windows[s] for s in scored)],
            [due[s][0].value // 10**9 for s in scored],
            [windows[s].windows for s in scored],
            compute,
            int(reach.total_seconds()),
        )
        self.remembered += remembered
        return dict(zip(scored, zip(found, blame)))

    def windows(
        self, chunk: Chunk, models: dict[str, SensorModel], ranges: dict[str, tuple[pd.Timestamp, pd.Timestamp]]
    ) -> dict[str, Cut | model_predict.Prepared]:
        """The windows of the chunk's sensors on its grid, cut at once (their end positions with them)."""
        placed = [s for s in ranges if s in chunk.rows]
        try:
            cut = chunk.windows(placed, [models[s].metadata for s in placed], [ranges[s] for s in placed])
        except Exception:
            logger.exception("failed to cut the windows of %d sensors: %s", len(placed), ", ".join(map(repr, placed)))
            self.counts["failed"] += len(placed)
            return {}
        return dict(zip(placed, cut))

    def deciders(
        self,
        chunk: Chunk,
        windows: dict[str, Cut | model_predict.Prepared],
        found: dict[str, tuple[np.ndarray, np.ndarray]],
        rules: dict[str, detect.Rules],
        due: dict[str, tuple[pd.Timestamp, pd.Timestamp]],
    ) -> dict[str, Callable[[], Scores]]:
        """How each sensor's scores are made: the sensors on the chunk's grid decided at once (Chunk.decide),
        the others alone (model_predict.decide)."""
        together = [s for s, w in windows.items() if isinstance(w, Cut)]
        out: dict[str, Callable[[], Scores]] = {}
        if together:
            try:
                decided = chunk.decide(
                    together,
                    [windows[s].ends for s in together],
                    [found[s][0] for s in together],
                    [rules[s] for s in together],
                    [due[s] for s in together],
                    [found[s][1] for s in together],
                )
                out = dict(zip(together, decided))
            except Exception:
                logger.exception("failed to decide %d sensors: %s", len(together), ", ".join(map(repr, together)))
                self.counts["failed"] += len(together)
        for sensor_id, prepared in windows.items():
            if isinstance(prepared, model_predict.Prepared):
                loss, blame = found[sensor_id]
                out[sensor_id] = functools.partial(
                    model_predict.decide, prepared, loss, rules[sensor_id], self.common.interval, *due[sensor_id], blame
                )
        return out

    def decide(
        self,
        sensor_id: str,
        scoring: Callable[[], Scores],
        due: tuple[pd.Timestamp, pd.Timestamp],
        window: int = 1,
        detector: str = "lstm",
    ) -> tuple[str, Scores] | None:
        """A sensor's score_head and scores inside its error boundary (None: it failed, and is logged and
        counted); logs its one line."""
        try:
            scores = scoring()
            head = model_predict.score_head(sensor_id, self.common.schema)
        except Exception:
            self.fail(sensor_id)
            return None
        if self.clears and len(scores.ends):
            self.stale[sensor_id] = model_predict.without_windows(scores, *due, self.common.interval)
        if not len(scores.ends):
            if detector == "lstm":
                self.no_window(sensor_id, *due)
            else:
                logger.info(
                    "sensor %r: no model yet, and less than %s of readings before %s for the cold-start detector",
                    sensor_id,
                    times.format_duration(self.cold.min_history),
                    times.format_time(due[1]),
                )
                self.counts["no_data"] += 1
            return head, scores
        self.record(sensor_id, scores, "windows" if detector == "lstm" else "readings (no model yet: robust detector)")
        self.window_of[sensor_id] = window
        return head, scores

    def lines(self, decided: Mapping[str, tuple[str, Scores] | None], detector: str) -> list[str]:
        """The lines of the sensors decided (a failed one has none), all at once; a backfill that writes keeps
        those without a loss to write again after its deletes (clear_stale)."""
        done = [d for d in decided.values() if d is not None]
        lines = model_predict.score_lines([h for h, _ in done], [x for _, x in done], self.common.schema, detector)
        if self.clears:
            void = np.concatenate([np.empty(0, bool), *(np.isnan(scores.loss) for _, scores in done)])
            self.unscored += [line for line, empty in zip(lines, void) if empty]
        return lines

    def clear_stale(self) -> None:
        """After a backfill's chunk is written: InfluxDB merges a point into the one already at its key, so where
        this run wrote a point without a loss, or none (no window), an earlier run's fields would remain. Those
        ranges are deleted now that the windows are written, and the points without a loss written again: a
        run that dies midway never loses a score it did not replace."""
        self.db.delete_scores({s: spans for s, spans in self.stale.items() if spans})
        self.db.write(self.unscored)
        self.stale, self.unscored = {}, []

    def score_cold(self, sensor_ids: list[str]) -> list[str]:
        """Sensors with no model yet, scored by the robust detector until training gives them one (see
        cold_start.py); one read for all of them, reaching back over their history."""
        due = self.gathering.due_ranges(sensor_ids, self.counts)
        self.due.update(due)
        if not due:
            return []
        cold, interval = self.cold, self.common.interval
        data, read = self.gathering.read(due, dict.fromkeys(due, cold.reach))
        decided = {}
        for sensor_id, (first, last) in due.items():
            ratio = self.common.sensor_config.ratio(sensor_id)
            scoring = functools.partial(
                cold_start.cold_scores, data.get(sensor_id, no_readings()), interval, read, cold, ratio, first, last
            )
            decided[sensor_id] = self.decide(sensor_id, scoring, (first, last), detector="robust")
        return self.lines(decided, "robust")

    def record(self, sensor_id: str, scores: Scores, what: str) -> None:
        """Keep a sensor's scores for the events, count them, and log its one line, with the threshold its newest
        window was compared with (dynamic, or the cold-start detector's of the day, times the ratio)."""
        self.scored[sensor_id] = scores
        flagged = int(scores.anomaly.sum())
        windows = int(np.isfinite(scores.loss).sum())
        self.counts["scored"] += 1
        self.counts["windows"] += windows
        self.counts["anomalies"] += flagged
        self.counts["missing"] += len(scores.ends) - windows
        if not logger.isEnabledFor(logging.INFO):
            return  # formatted only when logged: a tick at WARNING decides thousands of sensors
        kinds = pd.Series(scores.kind[scores.anomaly]).value_counts() if flagged else {}
        thresholds = scores.threshold[np.isfinite(scores.threshold)]
        logger.info(
            "sensor %r: %d %s%s %s .. %s, %d anomalies%s, threshold %s at the newest window",
            sensor_id,
            windows,
            what,
            f" and {len(scores.ends) - windows} intervals without readings" if len(scores.ends) > windows else "",
            times.format_time(scores.ends[0]),
            times.format_time(scores.ends[-1]),
            flagged,
            " (" + ", ".join(f"{n} {kind}" for kind, n in kinds.items()) + ")" if flagged else "",
            f"{thresholds[-1]:.4f}" if len(thresholds) else "none",
        )


def no_readings() -> pd.Series:
    return pd.Series(dtype="float64", index=pd.DatetimeIndex([], tz="UTC"))
