"""Settings every job shares, parsed and validated once at start-up into frozen objects.

Every error is a ``ConfigError`` whose message names the file or flag, the key and the value, so a
person reading a cron mail knows what to fix without opening the code. Nothing below a job's
settings reads the environment or the flags again.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from anomaly.connection import Connection, add_connection_arguments, connection_from_args
from anomaly.errors import ConfigError
from anomaly.sensor_config import SensorConfig, load_sensor_config
from anomaly.times import current_time, parse_duration

PROJECT_DIR = Path(__file__).resolve().parent.parent
APP_NAME = "sensor-anomaly"
_UNMATCHED_SHOWN = 20  # keys named in one warning; a file of another fleet would otherwise flood the log

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Schema:
    """Where readings come from and where scores go, in InfluxDB terms."""

    measurement: str = "READINGS"
    field: str = "val_num"
    sensor_tag: str = "uniqueID"
    where: tuple[tuple[str, str], ...] = ()
    label_field: str | None = None
    output_measurement: str = "PREDICT_ANOMALY"
    health_measurement: str | None = "JOB_HEALTH"

    @property
    def score_fields(self) -> list[str]:
        """The fields of the output measurement that tools read back (Database.read_scores), in its frames'
        column order: what evaluation, plots and tuning need, the blame (losses.BLAME) for tuning's told once."""
        return ["loss", "threshold", "anomaly", self.field, "score", "worst", "newest"]


def state_dir(environ: Mapping[str, str]) -> Path:
    """Where the scoring job keeps what it remembers between runs (the notification state, the ranges to
    score again): not the models directory, which scorers may share read-only. ``$STATE_DIRECTORY`` when
    set (systemd's ``StateDirectory=`` sets it; the first when it names several), else
    ``$XDG_STATE_HOME/sensor-anomaly``, else ``~/.local/state/sensor-anomaly`` (the XDG base directory
    rules, which leave out a relative ``XDG_STATE_HOME``)."""
    if environ.get("STATE_DIRECTORY"):
        return Path(environ["STATE_DIRECTORY"].split(":")[0])
    xdg = Path(environ.get("XDG_STATE_HOME", ""))
    base = xdg if xdg.is_absolute() else Path(environ.get("HOME") or Path.home()) / ".local" / "state"
    return base / APP_NAME


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``I/N`` (1 <= I <= N) -> (I, N): this host takes the I-th of N disjoint parts of the fleet."""
    if text is None:
        return None
    index, sep, count = text.partition("/")
    if not (sep and index.isdigit() and count.isdigit() and 1 <= int(index) <= int(count)):
        raise ConfigError(f"--shard: {text!r} is not I/N with 1 <= I <= N, for example --shard 2/4")
    return int(index), int(count)


def in_shard(sensor_id: str, shard: tuple[int, int] | None) -> bool:
    """Whether a sensor belongs to a shard, by a hash of its id that is the same on every host and run."""
    if shard is None:
        return True
    index, count = shard
    digest = hashlib.sha256(sensor_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % count == index - 1


def parse_where(items: list[str]) -> tuple[tuple[str, str], ...]:
    """Repeated ``--where KEY=VALUE`` -> ((key, value), ...); values may contain ``=`` and spaces."""
    pairs = []
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(
                f"--where: {item!r} is not KEY=VALUE (for example --where 'siteRef=Campus Energy Centre')"
            )
        pairs.append((key, value))
    return tuple(pairs)


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags every job shares: connection, input schema and sensor selection, the grid, files, logging."""
    add_connection_arguments(parser)
    _add_schema_arguments(parser)
    _add_job_arguments(parser)


def _add_schema_arguments(parser: argparse.ArgumentParser) -> None:
    schema = parser.add_argument_group("input schema")
    schema.add_argument("--measurement", default="READINGS", help="measurement holding the readings (default READINGS)")
    schema.add_argument("--field", default="val_num", help="numeric field with the reading (default val_num)")
    schema.add_argument("--sensor-tag", default="uniqueID", help="tag whose value is the sensor id (default uniqueID)")
    schema.add_argument(
        "--where",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="tag filter, repeatable (for example --where 'siteRef=Campus Energy Centre')",
    )
    schema.add_argument(
        "--sensor",
        action="append",
        default=[],
        metavar="ID",
        help="sensor id to process, repeatable (default: every sensor found)",
    )
    schema.add_argument(
        "--shard",
        metavar="I/N",
        help="process only the I-th of N parts of the sensors (stable per sensor id), "
        "so N hosts can share a fleet without coordination",
    )
    schema.add_argument(
        "--output-measurement",
        default="PREDICT_ANOMALY",
        help="measurement the scores are written to (default PREDICT_ANOMALY)",
    )


def _add_job_arguments(parser: argparse.ArgumentParser) -> None:
    job = parser.add_argument_group("job")
    job.add_argument("--interval", default="15m", help="aggregation interval: mean per interval (default 15m)")
    job.add_argument(
        "--max-gap",
        default="1h",
        help="fill gaps up to this long by interpolation; no window spans a longer one (default 1h)",
    )
    job.add_argument(
        "--models-dir",
        type=Path,
        default=PROJECT_DIR / "models",
        help="where models are kept (default models/ beside the scripts)",
    )
    job.add_argument(
        "--ratios",
        type=Path,
        default=PROJECT_DIR / "threshold_ratios.json",
        help="threshold ratios per sensor (default threshold_ratios.json beside the scripts)",
    )
    job.add_argument(
        "--windows",
        type=Path,
        default=PROJECT_DIR / "time_step_sizes.json",
        help="window length per sensor (default time_step_sizes.json beside the scripts)",
    )
    job.add_argument("--chunk-size", type=int, default=200, help="sensors per query and per write (default 200)")
    job.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    job.add_argument(
        "--log-format",
        default="text",
        choices=("text", "json"),
        help="text: one readable line per event (default); json: one JSON object per line",
    )
    job.add_argument(
        "--health-measurement",
        default="JOB_HEALTH",
        help="measurement that gets one point per run (job, host, duration, counts, exit status); "
        "empty to write none (default JOB_HEALTH)",
    )
    job.add_argument("--now", help="take this RFC3339 time as the current time (replays and tests)")


def schema_from_args(args: argparse.Namespace, label_field: str | None = None) -> Schema:
    for flag, value in (
        ("--measurement", args.measurement),
        ("--field", args.field),
        ("--sensor-tag", args.sensor_tag),
        ("--output-measurement", args.output_measurement),
    ):
        if not value or "\n" in value:
            raise ConfigError(f"{flag}: {value!r} must be a non-empty single-line name")
    return Schema(
        measurement=args.measurement,
        field=args.field,
        sensor_tag=args.sensor_tag,
        where=parse_where(args.where),
        label_field=label_field,
        output_measurement=args.output_measurement,
        health_measurement=args.health_measurement or None,
    )


def positive_int(flag: str, value: int) -> int:
    if value < 1:
        raise ConfigError(f"{flag}: {value} must be a whole number >= 1")
    return value


@dataclass(frozen=True)
class Common:
    """What every job needs: where the data is, which sensors, on which grid, where the models are, and now."""

    connection: Connection
    schema: Schema
    sensors: tuple[str, ...]
    shard: tuple[int, int] | None
    sensor_config: SensorConfig
    interval: pd.Timedelta
    max_gap: pd.Timedelta
    models_dir: Path
    chunk_size: int
    now: pd.Timestamp

    @property
    def max_gap_points(self) -> int:
        return int(self.max_gap / self.interval)

    def selected(self, found: list[str]) -> list[str]:
        """The sensors this run takes: ``--sensor`` if given, else those found; then only this shard's."""
        return [s for s in (list(self.sensors) or found) if in_shard(s, self.shard)]

    def warn_unmatched_keys(self, found: Collection[str]) -> None:
        """Warn, per file, about keys of the per-sensor files that match no sensor found. Only when ``found``
        is the whole fleet: with --sensor nothing is listed, with --where only part of it, and when nothing
        is found the job has already said so."""
        if self.sensors or self.schema.where or not found:
            return
        for path, keys in self.sensor_config.unmatched(found):
            more = len(keys) - _UNMATCHED_SHOWN
            logger.warning(
                "%s: keys that match no sensor found, so are ignored (typos, or sensors without readings "
                "in the range read): %s%s",
                path,
                ", ".join(repr(k) for k in keys[:_UNMATCHED_SHOWN]),
                f" and {more} more" if more > 0 else "",
            )


def common_from_args(args: argparse.Namespace, label_field: str | None = None) -> Common:
    return Common(
        connection=connection_from_args(args),
        schema=schema_from_args(args, label_field),
        sensors=tuple(args.sensor),
        shard=parse_shard(args.shard),
        sensor_config=load_sensor_config(args.ratios, args.windows),
        interval=parse_duration(args.interval, "--interval"),
        max_gap=parse_duration(args.max_gap, "--max-gap"),
        models_dir=args.models_dir,
        chunk_size=positive_int("--chunk-size", args.chunk_size),
        now=current_time(args.now),
    )


def non_negative(flag: str, value: float) -> float:
    if not 0 <= value < float("inf"):
        raise ConfigError(f"{flag}: {value} must be a number >= 0")
    return value
