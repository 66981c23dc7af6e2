"""One way to run a job: parse and validate its settings, set up logging, take its lock, open the
database, run it, write its health point, and map what went wrong to an exit status (errors.py).

A job is a small module that gives a ``Job``: its name, its flags on top of the common ones, how its
settings are made from them, and its run. Nothing else in a job repeats this.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import logging
import os
import socket
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar

import pandas as pd

from anomaly import logs
from anomaly.errors import EXIT_CONFIG, EXIT_FAILED, EXIT_LOCKED, ConfigError, LockedError
from anomaly.settings import Common, add_common_arguments
from influx_interact import Database, InfluxError, connect

logger = logging.getLogger(__name__)


class HasCommon(Protocol):
    """A job's settings: whatever it holds, its ``common`` part is what the runner needs."""

    @property
    def common(self) -> Common: ...


S = TypeVar("S", bound=HasCommon)


@dataclass
class Outcome:
    """What a run returns: its exit status, and the fields of its health point (None: write none)."""

    status: int
    health: dict[str, float | int | str] | None = field(default=None)


@dataclass(frozen=True)
class Job(Generic[S]):
    """A job as the runner runs it. ``lock``: only one run at a time per host and models directory."""

    name: str
    description: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    settings: Callable[[argparse.Namespace], S]
    run: Callable[[S, Database], Outcome]
    lock: bool = False

    def parser(self) -> argparse.ArgumentParser:
        parser = argparse.ArgumentParser(
            description=self.description, formatter_class=argparse.RawDescriptionHelpFormatter
        )
        add_common_arguments(parser)
        self.add_arguments(parser)
        return parser


def sensors_to_process(common: Common, db: Database, start: pd.Timestamp, stop: pd.Timestamp) -> list[str]:
    """The sensors a job takes: ``--sensor`` if given, else every sensor the database lists in [start, stop),
    whose absence from the per-sensor files' keys is warned about (Common.warn_unmatched_keys); then only
    this shard's. Every job that reads the per-sensor files lists its sensors here, so all of them warn alike."""
    found = [] if common.sensors else db.sensor_ids(start, stop)
    common.warn_unmatched_keys(found)
    return common.selected(found)


def lock_path(models_dir: Path, job: str) -> Path:
    """The lock file of one job and models directory, in the temporary directory, not the models directory,
    so scorers can run on a read-only copy of the models. Every run on the host must see the same file, so
    the deploy units must not give the job a private /tmp (tests/test_deploy_files.py checks)."""
    key = hashlib.sha256(str(models_dir.resolve()).encode("utf-8")).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"sensor-anomaly-{job}-{key}.lock"


@contextlib.contextmanager
def job_lock(models_dir: Path, job: str) -> Iterator[Path]:
    """Hold a per-host lock for one job and models directory (``lock_path``); a second run raises
    LockedError at once. The kernel releases it when the process ends, however it ends."""
    path = lock_path(models_dir, job)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise LockedError(
                f"another {job} run for {models_dir} is still going (pid {holder}, lock {path}); "
                f"this run exits without doing anything"
            ) from None
        handle.truncate(0)
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        yield path


def main(job: Job[Any], argv: list[str] | None = None) -> int:
    """Run ``job`` with the command line ``argv`` and return its exit status."""
    args = job.parser().parse_args(argv)
    logs.configure(args.log_level, args.log_format)
    try:
        settings = job.settings(args)
    except ConfigError as e:
        logging.getLogger(job.name).error("configuration: %s", e)
        return EXIT_CONFIG
    common = settings.common
    try:
        with job_lock(common.models_dir, job.name) if job.lock else contextlib.nullcontext():
            began = time.monotonic()
            with connect(common.connection, common.schema) as db:
                outcome = job.run(settings, db)
                if outcome.health is not None:
                    db.record_run(
                        job.name,
                        socket.gethostname(),
                        {
                            "duration_s": round(time.monotonic() - began, 3),
                            **outcome.health,
                            "exit_status": outcome.status,
                        },
                        time.time_ns(),
                    )
            return outcome.status
    except ConfigError as e:
        # Found when the run starts: a directory the settings name but the run cannot use.
        logging.getLogger(job.name).error("configuration: %s", e)
        return EXIT_CONFIG
    except LockedError as e:
        logging.getLogger(job.name).warning("%s", e)
        return EXIT_LOCKED
    except InfluxError as e:
        logging.getLogger(job.name).error("%s", e)
        return EXIT_FAILED
