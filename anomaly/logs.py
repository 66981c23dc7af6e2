"""Logging for cron, systemd and terminals: one line per event with a UTC time, or one JSON object."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tqdm import tqdm


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure(level: str, log_format: str = "text") -> None:
    """Logs go to stderr, one line each with a UTC time, so cron mail and journald read the same;
    ``json`` makes them one JSON object per line."""
    logging.Formatter.converter = time.gmtime
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter()
        if log_format == "json"
        else logging.Formatter("%(asctime)sZ %(levelname)s %(name)s: %(message)s")
    )
    logging.basicConfig(level=level, handlers=[handler], force=True)


@contextlib.contextmanager
def progress(total: int, unit: str = "sensors", stream=None) -> Iterator[tqdm]:
    """A progress bar with the log lines written above it, on a terminal only: under cron, systemd or a
    pipe it draws nothing, so their logs stay one line per event."""
    # tqdm (and the asyncio it brings) only where a bar may be drawn: a scoring tick starts without it.
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    stream = stream or sys.stderr
    bar = tqdm(total=total, unit=f" {unit}", file=stream, disable=not stream.isatty(), dynamic_ncols=True)
    with bar, contextlib.nullcontext() if bar.disable else logging_redirect_tqdm(tqdm_class=tqdm):
        yield bar
