"""The packed model store: every model of one shape (window, units) in one file, for the scorer.

A tick over thousands of sensors would otherwise open, parse and checksum each sensor's metadata.json
and weights file. Training writes (pack_build.py), beside the sensor directories, one
``pack-w<window>-u<units>.bin`` per shape holding what the NumPy scorer needs of each of its sensors
(weights, scaler, threshold, window, interval, flat-line and level fields) as arrays, and the scorer opens
each pack once, verifies the checksum of its header and small arrays, and reads the weights of a chunk's
sensors as slices of those arrays, each sensor's checked against its own checksum as it is read: a scorer of
one shard hashes its own sensors' weights, not the fleet's, and a damaged row fails only its sensor's use
of the pack (that sensor loads from its own files).

The per-sensor files stay the source of truth. A pack records, for each sensor, the size and modification
time of the four files its model was packed from (metadata.json, the Keras, scaler and weights files it
names); a sensor whose files differ now (retrained, damaged, deleted since) or that is not in any pack is
loaded from its own files by the scorer, as before packs existed, with their checks. A pack never holds
half a sensor: each row is copied from one committed version, read between two identical looks at its
files. A rebuild writes each pack under a temporary name and renames it over the old one, so a scorer
reads either the old pack or the new; it holds the file open for its run, so a rebuild during a tick
never changes what it reads.

File layout (format version 2)::

    b"sensor-anomaly-pack 2\\n"
    sha256 of the header line and of the small arrays (all but the weights, by name, sorted), 64 hex
            digits, b"\\n"
    header: one line of JSON (sorted keys): window, units, sensors; per sensor its id, version, the
            names of its four files and ``row_sha256``, the sha256 of its rows of the weights (in
            store.WEIGHT_NAMES order); the arrays' dtype, shape and offset, b"\\n"
    zero padding to a multiple of 64 bytes from the start of the file
    the arrays, C order, each at its offset (from the start of the file), 64-byte aligned

Arrays (S sensors, rows in the order of the header's ``sensor_ids``, sorted): the weights of
``store.WEIGHT_NAMES`` stacked [S, ...] float32; ``interval_s``, ``longest_flat_run`` (-1: not measured)
int64 [S]; ``threshold``, ``mean``, ``scale``, ``levels_low``, ``levels_high`` (NaN: not recorded) float64
[S]; ``centered`` bool [S]; ``file_size``, ``file_mtime_ns`` int64 [S, 4] (metadata, model, scaler,
weights). Format version 1, which training wrote before, has no ``row_sha256`` and its checksum covers
everything after its line: it is still read (verified whole), until the next training run rewrites it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from anomaly import store
from anomaly.metadata import ArtifactError, ModelMetadata

logger = logging.getLogger(__name__)

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
MAGIC = b"sensor-anomaly-pack"
PATTERN = re.compile(r"pack-w(\d+)-u(\d+)\.bin")
ALIGN = 64
# The files of a model, in the order of the pack's file_size and file_mtime_ns columns.
TRACKED = ("metadata", *store.FILES)
FIELDS_FLOAT = ("threshold", "mean", "scale", "levels_low", "levels_high")
FIELDS_INT = ("interval_s", "longest_flat_run")


def pack_name(window: int, units: int) -> str:
    return f"pack-w{window}-u{units}.bin"


def file_names(directory: Path, record_files: dict[str, str]) -> list[Path]:
    """The four tracked files of a committed model, in TRACKED order."""
    return [directory / store.METADATA] + [directory / record_files[key] for key in store.FILES]


def look(paths: Sequence[str | Path]) -> tuple[tuple[int, int], ...] | None:
    """(size, mtime in ns) of each file, or None when one is missing: what a pack row is checked against."""
    try:
        found = [os.stat(p) for p in paths]
    except OSError:
        return None
    return tuple((s.st_size, s.st_mtime_ns) for s in found)


# ---------------------------------------------------------------- reading


@dataclass
class Pack:
    """One opened, verified pack file: its small per-sensor arrays in memory, the weights read on demand
    from the open file (``weights``), so a fleet's weights are never all in memory at once."""

    path: Path
    window: int
    units: int
    sensor_ids: list[str]
    versions: list[str]
    files: list[list[str]]
    fields: dict[str, np.ndarray]
    arrays: dict[str, dict[str, Any]]
    handle: Any
    row_sha256: list[str] | None = None  # None: format version 1, verified whole when opened

    @property
    def shape(self) -> tuple[int, int]:
        return self.window, self.units

    def metadata(self, row: int) -> ModelMetadata:
        f = self.fields
        flat = int(f["longest_flat_run"][row])
        low, high = float(f["levels_low"][row]), float(f["levels_high"][row])
        return ModelMetadata(
            sensor_id=self.sensor_ids[row],
            window=self.window,
            interval=_seconds(int(f["interval_s"][row])),
            threshold=float(f["threshold"][row]),
            mean=float(f["mean"][row]),
            scale=float(f["scale"][row]),
            longest_flat_run=None if flat < 0 else flat,
            centered=bool(f["centered"][row]),
            levels=None if np.isnan(low) else (low, high),
            record={"version": self.versions[row]},
        )

    def weights(self, rows: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """The weights of ``rows`` (sorted, increasing) stacked [len(rows), ...], read from the open file, and
        which of them match their row's checksum (a row that does not must not be used)."""
        rows = np.asarray(rows, dtype=np.int64)
        # Runs of consecutive rows: one read per run and array (a chunk of a sorted fleet is mostly one run).
        breaks = np.flatnonzero(np.diff(rows) != 1) + 1
        runs = [(int(r[0]), int(r[-1]) + 1) for r in np.split(rows, breaks)] if len(rows) else []
        out = {}
        for name in store.WEIGHT_NAMES:
            spec = self.arrays[name]
            dtype, row_shape = np.dtype(spec["dtype"]), tuple(spec["shape"][1:])
            row_bytes = dtype.itemsize * int(np.prod(row_shape, dtype=np.int64))
            parts = []
            for first, stop in runs:
                data = os.pread(self.handle.fileno(), row_bytes * (stop - first), spec["offset"] + row_bytes * first)
                if len(data) != row_bytes * (stop - first):
                    raise ArtifactError(f"{self.path}: shorter than its header says; retrain any sensor to rebuild it")
                parts.append(np.frombuffer(data, dtype=dtype).reshape((stop - first, *row_shape)))
            out[name] = (
                parts[0] if len(parts) == 1 else np.concatenate(parts) if parts else np.empty((0, *row_shape), dtype)
            )
        return out, self._verified(rows, out)

    def _verified(self, rows: np.ndarray, weights: dict[str, np.ndarray]) -> np.ndarray:
        if self.row_sha256 is None:
            return np.ones(len(rows), dtype=bool)
        return np.array([row_digest(weights, k) == self.row_sha256[row] for k, row in enumerate(rows.tolist())], bool)

    def close(self) -> None:
        self.handle.close()


@functools.lru_cache(maxsize=64)
def _seconds(count: int) -> pd.Timedelta:
    """A pack's intervals are a handful of values shared by thousands of rows."""
    return pd.Timedelta(seconds=count)


def row_digest(weights: dict[str, np.ndarray], k: int) -> str:
    """The sha256 of row ``k`` of stacked weights, array by array in store.WEIGHT_NAMES order."""
    digest = hashlib.sha256()
    for name in store.WEIGHT_NAMES:
        digest.update(np.ascontiguousarray(weights[name][k]).data)
    return digest.hexdigest()


def small_arrays(names: Iterable[str]) -> list[str]:
    """The arrays a pack's own checksum covers, in the order it covers them: all but the weights."""
    return sorted(name for name in names if name not in store.WEIGHT_NAMES)


def _read_line(handle: Any, limit: int) -> bytes:
    line = handle.readline(limit)
    if not line.endswith(b"\n"):
        raise ArtifactError("truncated header")
    return line[:-1]


def open_pack(path: Path) -> Pack:
    """Open a pack and verify its own checksum (format 1: the whole file, read once in blocks; format 2: its
    header and small arrays, the weights being checked row by row as they are read); ArtifactError when
    unusable."""
    try:
        handle = open(path, "rb")  # noqa: SIM115 (held open for the run: the pack stays the one verified)
    except OSError as e:
        raise ArtifactError(f"{path}: unreadable ({e.strerror or e})") from None
    try:
        try:
            magic = _read_line(handle, 64)
            version = next((v for v in READABLE_VERSIONS if magic == MAGIC + f" {v}".encode()), None)
            if version is None:
                raise ArtifactError(f"not a pack of format version {FORMAT_VERSION} ({magic[:40]!r})")
            expected = _read_line(handle, 80).decode("ascii", "replace")
            header_line = handle.readline()
            digest = hashlib.sha256(header_line)
            if version == 1:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
            header = json.loads(header_line)
            specs = header["arrays"]
            if os.fstat(handle.fileno()).st_size < max(_end(spec) for spec in specs.values()):
                raise ArtifactError("shorter than its header says")
            small = {name: _read_bytes(handle, specs[name]) for name in small_arrays(specs)}
            if version == 2:
                for data in small.values():
                    digest.update(data)
            if digest.hexdigest() != expected:
                raise ArtifactError("checksum mismatch")
            pack = Pack(
                path=path,
                window=int(header["window"]),
                units=int(header["units"]),
                sensor_ids=list(header["sensor_ids"]),
                versions=list(header["versions"]),
                files=[list(names) for names in header["files"]],
                fields={name: _as_array(data, specs[name]) for name, data in small.items()},
                arrays=specs,
                handle=handle,
                row_sha256=list(header["row_sha256"]) if version == 2 else None,
            )
            count = len(pack.sensor_ids)
            if {*FIELDS_FLOAT, *FIELDS_INT, "centered", "file_size", "file_mtime_ns"} - pack.fields.keys():
                raise ArtifactError("inconsistent header")
            if not (len(pack.versions) == len(pack.files) == count and pack.sensor_ids == sorted(pack.sensor_ids)):
                raise ArtifactError("inconsistent header")
            if pack.row_sha256 is not None and len(pack.row_sha256) != count:
                raise ArtifactError("inconsistent header")
            for name in store.WEIGHT_NAMES:
                if specs[name]["shape"][0] != count:
                    raise ArtifactError(f"array {name} does not have one row per sensor")
        except (OSError, ValueError, KeyError, TypeError, IndexError) as e:
            raise ArtifactError(f"unreadable ({type(e).__name__}: {e})") from None
    except ArtifactError as e:
        handle.close()
        raise ArtifactError(f"{path}: {e}") from None
    return pack


def _end(spec: dict[str, Any]) -> int:
    """Where an array of the header ends in the file."""
    return int(spec["offset"]) + np.dtype(spec["dtype"]).itemsize * int(np.prod(spec["shape"], dtype=np.int64))


def _as_array(data: bytes, spec: dict[str, Any]) -> np.ndarray:
    return np.frombuffer(data, dtype=np.dtype(spec["dtype"])).reshape(tuple(spec["shape"]))


def _read_bytes(handle: Any, spec: dict[str, Any]) -> bytes:
    size = _end(spec) - int(spec["offset"])
    data = os.pread(handle.fileno(), size, int(spec["offset"]))
    if len(data) != size:
        raise ArtifactError("shorter than its header says")
    return data


class PackedStore:
    """The packs of a models directory, opened for one scoring run: ``models`` gives, for sensors whose
    files are unchanged since they were packed, their models from the packs."""

    def __init__(self, models_dir: Path, packs: list[Pack]):
        self.models_dir = models_dir
        self.packs = packs
        self.rows = {sensor_id: (pack, row) for pack in packs for row, sensor_id in enumerate(pack.sensor_ids)}

    @classmethod
    def open(cls, models_dir: Path) -> PackedStore:
        """Open every pack in ``models_dir``; a damaged one is logged and left out (its sensors then load
        from their own files)."""
        packs = []
        for path in sorted(models_dir.glob("pack-w*-u*.bin")) if models_dir.is_dir() else []:
            if not PATTERN.fullmatch(path.name):
                continue
            try:
                packs.append(open_pack(path))
            except ArtifactError as e:
                logger.warning(
                    "%s; its sensors load from their own files; the next sensor_training.py run rebuilds it", e
                )
        return cls(models_dir, packs)

    def close(self) -> None:
        for pack in self.packs:
            pack.close()

    def current(self, sensor_id: str) -> tuple[Pack, int] | None:
        """The pack row of a sensor whose four files are as they were packed, or None."""
        found = self.rows.get(sensor_id)
        if found is None:
            return None
        pack, row = found
        # Paths as text: a tick looks at four files of each of thousands of sensors, and pathlib costs more
        # than the stat.
        directory = os.fspath(store.sensor_dir(self.models_dir, sensor_id)) + os.sep
        now = look([directory + name for name in (store.METADATA, *pack.files[row])])
        packed = tuple(zip(pack.fields["file_size"][row].tolist(), pack.fields["file_mtime_ns"][row].tolist()))
        return found if now == packed else None

    def models(
        self, sensor_ids: Iterable[str]
    ) -> dict[str, tuple[ModelMetadata, dict[str, np.ndarray], tuple[dict[str, np.ndarray], int]]]:
        """Metadata and weights of each of ``sensor_ids`` that ``current`` finds, and the weights of its pack's
        sensors among them as read, stacked, with its row in them; the rest are absent."""
        by_pack: dict[int, list[tuple[int, str]]] = {}
        for sensor_id in sensor_ids:
            found = self.current(sensor_id)
            if found is not None:
                by_pack.setdefault(id(found[0]), []).append((found[1], sensor_id))
        out = {}
        for pack in self.packs:
            members = sorted(by_pack.get(id(pack), []))
            if not members:
                continue
            rows = np.array([row for row, _ in members])
            weights, verified = pack.weights(rows)
            for k, (row, sensor_id) in enumerate(members):
                if verified[k]:
                    out[sensor_id] = (
                        pack.metadata(row),
                        {name: array[k] for name, array in weights.items()},
                        (weights, k),
                    )
                else:
                    logger.warning(
                        "%s: the weights of sensor %r do not match their checksum; it loads from its own files; the "
                        "next sensor_training.py run rebuilds the pack",
                        pack.path,
                        sensor_id,
                    )
        return out
