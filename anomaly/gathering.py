"""What a chunk of sensors needs before sensor_predict.py scores it: its models (from the packed store, or
their own files), what each sensor has due, and one read of the readings. Gathered ahead, in threads, while
the chunk before is scored (parallel.ahead), so nothing here changes the run: what it counts travels with what
it gathered, and Run.score_chunk takes it in.

Its lines are the job's: they are logged as ``sensor_predict``, the name operators filter the job's log by.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

import pandas as pd

import model_predict
from anomaly import pack, store, times
from anomaly.due import due_ranges
from anomaly.metadata import ArtifactError
from anomaly.predict_settings import PredictSettings
from influx_interact import Database
from model_predict import SensorModel

logger = logging.getLogger("sensor_predict")


@dataclass
class Loaded:
    """A chunk's usable models, the sensors with none yet (for the cold-start detector), and the counts of the
    sensors it left out (Gatherer.load), to which Gatherer.gather adds those with nothing due."""

    models: dict[str, SensorModel]
    cold: list[str]
    counts: Counter[str]


@dataclass
class Gathered:
    """What a chunk needs before it is scored, gathered ahead (Gatherer.gather): what was loaded for it, what
    each sensor has due, how far before it each reads, and one read of the readings (over ``read``, empty when
    nothing is due)."""

    loaded: Loaded
    due: dict[str, tuple[pd.Timestamp, pd.Timestamp]]
    leads: dict[str, tuple[pd.Timedelta, pd.Timedelta]]
    data: Mapping[str, pd.Series]
    read: tuple[pd.Timestamp, pd.Timestamp]


class Gatherer:
    """A run's gathering: its settings, its database, its packed store and the ranges to score again."""

    def __init__(self, settings: PredictSettings, db: Database, pending: Mapping[str, pd.Timestamp]):
        """``pending``: per sensor, where an earlier run's write failed (rescore.py), as the run began: a
        chunk's sensors are in no other chunk, so what the chunks before settled does not concern it."""
        self.settings = settings
        self.common = settings.common
        self.db = db
        self.pending = pending
        # The NumPy engine reads the models from the packed store (anomaly/pack.py), opened once per run.
        self.packs = pack.PackedStore.open(self.common.models_dir) if settings.engine == "numpy" else None

    def load(self, sensor_ids: list[str]) -> Loaded:
        """A chunk's usable models by sensor id, and the sensors with no model yet for the cold-start detector;
        logs the sensors that cannot be scored and counts them in what it returns."""
        models, cold, counts = {}, [], Counter[str]()
        packed = self.packs.models(sensor_ids) if self.packs is not None else {}
        for sensor_id in sensor_ids:
            if sensor_id in packed:
                metadata, weights, stacked = packed[sensor_id]
                model = SensorModel(metadata, weights, stacked=stacked)
            else:
                directory = store.sensor_dir(self.common.models_dir, sensor_id)
                if not (directory / store.METADATA).exists():
                    if self.settings.cold_start is not None:
                        cold.append(sensor_id)
                        continue
                    logger.info("sensor %r: skipped: no model in %s; run sensor_training.py", sensor_id, directory)
                    counts["skipped"] += 1
                    continue
                # Not packed, or retrained, changed or damaged since it was: its own files decide, as they
                # always did.
                counts["unpacked"] += self.packs is not None
                try:
                    model = model_predict.load_sensor_model(directory, self.settings.engine)
                except ArtifactError as e:
                    logger.error("sensor %r: failed: %s", sensor_id, e)
                    counts["failed"] += 1
                    continue
            problem = model.metadata.mismatch(self.common.sensor_config.window(sensor_id), self.common.interval)
            if problem:
                logger.warning("sensor %r: skipped: %s", sensor_id, problem)
                counts["skipped"] += 1
                continue
            models[sensor_id] = model
        return Loaded(models, cold, counts)

    def due_ranges(self, sensor_ids: list[str], counts: Counter[str]) -> dict[str, tuple[pd.Timestamp, pd.Timestamp]]:
        """What each sensor has due (anomaly/due.py); logs the ones up to date and counts them in ``counts``."""
        if not sensor_ids:
            return {}
        output = self.common.schema.output_measurement
        due, up_to_date = due_ranges(self.db, self.settings.schedule, sensor_ids, self.pending, output)
        for sensor_id, at in up_to_date.items():
            logger.info("sensor %r: nothing due: scored up to %s", sensor_id, times.format_time(at))
        counts["up_to_date"] += len(up_to_date)
        return due

    def read(
        self, due: dict[str, tuple[pd.Timestamp, pd.Timestamp]], before: dict[str, pd.Timedelta]
    ) -> tuple[Mapping[str, pd.Series], tuple[pd.Timestamp, pd.Timestamp]]:
        """One read for a chunk: from the earliest reading any due sensor needs to the end of the latest."""
        start = min(first - before[s] for s, (first, _) in due.items())
        stop = max(last for _, last in due.values()) + self.common.interval
        return self.db.read_means(list(due), start, stop, self.common.interval), (start, stop)

    def gather(self, loaded: Loaded) -> Gathered:
        """What is due for a chunk whose models are loaded, and one read."""
        models = loaded.models
        due = self.due_ranges(list(models), loaded.counts)
        policy, interval = self.settings.policy, self.common.interval
        leads = {s: model_predict.lead(models[s], policy, interval) for s in due}
        data, read = (
            self.read(due, {s: decided + readings + self.common.max_gap for s, (decided, readings) in leads.items()})
            if due
            else ({}, (self.common.now, self.common.now))
        )
        return Gathered(loaded, due, leads, data, read)
