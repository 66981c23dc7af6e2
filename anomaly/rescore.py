"""The ranges whose write failed, kept for the next run: a write that fails part way (a partial write,
the server gone after some batches) may leave newer points than the gap it left, and a run that resumed
after the newest point would never fill that gap. The next run scores each such sensor again from the
first window of the failed range (rewriting the points that did land is harmless: same keys), and
forgets the range once its write goes through."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path

import pandas as pd

from anomaly.files import write_atomic
from anomaly.times import format_time

logger = logging.getLogger(__name__)


def beside(state_file: Path) -> Path:
    """The file of one output's ranges to score again, beside its state file: both belong to one output."""
    return state_file.with_suffix(".rescore.json")


def load(path: Path) -> dict[str, pd.Timestamp]:  # pragma: no mutate block
    """Sensor id -> first window end to score again; an unreadable file is reported and read as empty."""
    if not path.exists():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return {str(sensor_id): pd.Timestamp(at).tz_convert("UTC") for sensor_id, at in data["sensors"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        logger.error("%s: unreadable (%s); ranges whose write failed earlier may stay unscored", path, e)
        return {}


def save(path: Path, pending: Mapping[str, pd.Timestamp]) -> None:  # pragma: no mutate block
    """Keep ``pending`` for the next run (the file goes when nothing is pending); a failure is reported,
    since the job is already failing for the write that made the range pending."""
    try:
        if pending:
            path.parent.mkdir(parents=True, exist_ok=True)
            text = json.dumps({"sensors": {s: format_time(at) for s, at in sorted(pending.items())}}, indent=1)
            write_atomic(path, text + "\n")
        else:
            path.unlink(missing_ok=True)
    except OSError as e:
        logger.error("%s: cannot be written (%s); a range whose write failed may stay unscored", path, e)


def failed(
    pending: Mapping[str, pd.Timestamp], due: Mapping[str, tuple[pd.Timestamp, pd.Timestamp]]
) -> dict[str, pd.Timestamp]:
    """``pending`` with the due ranges of a chunk whose write failed added (the earliest start wins)."""
    out = dict(pending)
    for sensor_id, (first, _) in due.items():
        out[sensor_id] = min(first, out.get(sensor_id, first))
    return out
