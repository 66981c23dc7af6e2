"""The losses a tick computed, kept for the next tick, beside the state file.

Under the dynamic threshold a tick decides its new window against the day of losses before it, and
computing that day again every tick was almost all of a tick's model work: about a hundred windows per
sensor for the one that is new. The next tick takes them from here instead, so a tick's model work is its
new windows. A loss is taken only for a window that ends before its sensor's due range (one an earlier run
scored), from the same model (model_key), under the same signature (engine, measurement, field, interval, gap
filling): anything else is computed, as it always was. A reading that arrives after its window was scored
changes neither that window's score nor, from then on, the history of later ones; a backfill computes
every loss from the readings as they are then. A missing, unreadable or foreign file costs time, never a
result: every loss is computed, and the run writes a new one.

Each window's blame (losses.BLAME) is kept with its loss.

File layout: a NumPy .npz (no pickles) of ``format`` and ``signature`` (text), ``sensor_ids`` and ``keys``
(text [S], model_key), ``sizes`` (int64 [S]), ``ends`` (int64, seconds since 1970), ``losses`` (float64),
``worst`` (int32) and ``newest`` (float32, the two fields of losses.BLAME), each sensor's windows one run of
the last four, in time order.
"""

from __future__ import annotations

import io
import logging
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from anomaly.files import write_atomic
from anomaly.losses import BLAME
from anomaly.metadata import ModelMetadata

logger = logging.getLogger(__name__)

FORMAT = 2


def model_key(metadata: ModelMetadata) -> str | None:
    """What a sensor's losses were computed by: its model's version (which names its weights) and the scaling
    its windows get; None for a model without a version, whose losses are not kept."""
    version = metadata.record.get("version")
    if not isinstance(version, str):
        return None
    return f"{version} {metadata.window} {metadata.mean!r} {metadata.scale!r} {metadata.centered}"


def beside(state_file: Path) -> Path:
    """The losses of one output's sensors, beside its state file: both belong to one output."""
    return state_file.with_suffix(".losses.npz")


@dataclass
class LossMemory:
    """``entries``: sensor id -> (model key, window ends in seconds [n] increasing, losses [n], blame
    [n])."""

    signature: str
    entries: dict[str, tuple[str, np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=dict)

    def recall(
        self, sensor_id: str, key: str, ends: np.ndarray, before: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Which of a sensor's windows (``ends``, seconds, increasing) have a loss kept from the model ``key``
        (model_key) and end before ``before``, and those losses and their blame, in order."""
        entry = self.entries.get(sensor_id)
        if entry is None or entry[0] != key or not len(entry[1]):
            return np.zeros(len(ends), dtype=bool), np.empty(0), np.empty(0, BLAME)
        kept_ends, losses, blame = entry[1], entry[2], entry[3]
        at = np.minimum(np.searchsorted(kept_ends, ends), len(kept_ends) - 1)
        hit = (kept_ends[at] == ends) & (ends < before)
        return hit, losses[at[hit]], blame[at[hit]]

    def keep(
        self, sensor_id: str, key: str, ends: np.ndarray, losses: np.ndarray, blame: np.ndarray, since: int
    ) -> None:
        """Keep the losses and blame of a sensor's windows ending at or after ``since``, in place of the
        ones kept before."""
        newer = ends >= since
        self.entries[sensor_id] = (
            key,
            ends[newer].astype(np.int64),
            losses[newer].astype("float64"),
            blame[newer].astype(BLAME),
        )

    def forget(self, before: int) -> None:
        """Drop the sensors none of whose kept windows ends at or after ``before``: no longer scored."""
        self.entries = {s: e for s, e in self.entries.items() if len(e[1]) and e[1][-1] >= before}


def losses(
    memory: LossMemory,
    sensor_ids: list[str],
    keys: list[str | None],
    ends: list[np.ndarray],
    befores: list[int],
    windows: list[np.ndarray],
    compute: Callable[[list[np.ndarray]], tuple[list[np.ndarray], list[np.ndarray]]],
    reach: int,
) -> tuple[list[np.ndarray], list[np.ndarray], int]:
    """Each sensor's window losses and blame (losses.fleet_losses): those ``memory`` keeps (from model
    ``keys[k]``, of windows ending before ``befores[k]``, its due range), the rest computed at once by ``compute``
    (the windows of every sensor, one array each, in order). Returns them, and how many came from the memory. Kept
    for the next tick: those of the windows ending up to ``reach`` seconds (how far a due window's history reaches
    back) before a sensor's newest. Its next due window ends after its newest score, which is at or after that
    newest window, so its history is all there however long this run's range was. A sensor whose model has no key is
    computed whole and not kept."""
    hits = [
        memory.recall(s, key, e, before) if key else (np.zeros(len(e), dtype=bool), np.empty(0), np.empty(0, BLAME))
        for s, key, e, before in zip(sensor_ids, keys, ends, befores)
    ]
    computed, computed_blame = compute([w[~hit] if hit.any() else w for w, (hit, _, _) in zip(windows, hits)])
    found, found_blame = [], []
    for s, key, e, (hit, kept, kept_blame), new, new_blame in zip(
        sensor_ids, keys, ends, hits, computed, computed_blame
    ):
        merged = np.empty(len(hit), dtype=new.dtype)
        merged[hit], merged[~hit] = kept, new
        blame = np.empty(len(hit), dtype=BLAME)
        blame[hit], blame[~hit] = kept_blame, new_blame
        found.append(merged)
        found_blame.append(blame)
        if key and len(e):
            memory.keep(s, key, e, merged, blame, int(e[-1]) - reach)
    return found, found_blame, int(sum(hit.sum() for hit, _, _ in hits))


def load(path: Path, signature: str) -> LossMemory:  # pragma: no mutate block
    """The memory at ``path`` when it was kept under ``signature``; else an empty one (logged when unreadable)."""
    memory = LossMemory(signature)
    if not path.exists():
        return memory
    try:
        with np.load(path, allow_pickle=False) as saved:
            if int(saved["format"]) != FORMAT or str(saved["signature"]) != signature:
                logger.info("%s: kept under other settings; every loss is computed this run", path)
                return memory
            sensor_ids, keys, sizes = saved["sensor_ids"], saved["keys"], saved["sizes"]
            ends, losses = saved["ends"], saved["losses"]
            blame = np.empty(len(saved["worst"]), dtype=BLAME)
            blame["worst"], blame["newest"] = saved["worst"], saved["newest"]
            if not (
                len(sensor_ids) == len(keys) == len(sizes) and sizes.sum() == len(ends) == len(losses) == len(blame)
            ):
                raise ValueError("arrays of inconsistent lengths")
            bounds = np.concatenate([[0], np.cumsum(sizes)])
            for k, sensor_id in enumerate(sensor_ids.tolist()):
                run = slice(int(bounds[k]), int(bounds[k + 1]))
                memory.entries[sensor_id] = (str(keys[k]), ends[run], losses[run], blame[run])
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as e:
        logger.warning("%s: unreadable (%s); every loss is computed this run, and the file written anew", path, e)
        return LossMemory(signature)
    return memory


def save(path: Path, memory: LossMemory) -> None:  # pragma: no mutate block
    """Write the memory atomically; a failure is logged (the next run computes every loss)."""
    entries = memory.entries
    blame = np.concatenate([np.empty(0, BLAME), *(e[3] for e in entries.values())])
    buffer = io.BytesIO()
    np.savez(
        buffer,
        format=np.array(FORMAT),
        signature=np.array(memory.signature),
        sensor_ids=np.array(list(entries), dtype=str),
        keys=np.array([e[0] for e in entries.values()], dtype=str),
        sizes=np.array([len(e[1]) for e in entries.values()], dtype=np.int64),
        ends=np.concatenate([np.empty(0, np.int64), *(e[1] for e in entries.values())]),
        losses=np.concatenate([np.empty(0), *(e[2] for e in entries.values())]),
        worst=blame["worst"],
        newest=blame["newest"],
    )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, buffer.getvalue())
    except OSError as e:
        logger.warning("%s: cannot be written (%s); the next run computes every loss", path, e)
