"""Building the packed model store that pack.py describes and the scorer reads: after each chunk of training,
``rebuild`` packs every usable model of the models directory, one pack per shape, and ``write_pack`` writes
each pack atomically and durably (a temporary name, fsync, ``os.replace``), so a scorer reads either the old
pack or the new.

A row is copied from one committed version of a sensor's files (``row_from_files``: read between two
identical looks at them), or reused from the old pack when the sensor's files are unchanged since.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from anomaly import files, store
from anomaly.metadata import ArtifactError
from anomaly.pack import (
    ALIGN,
    FIELDS_FLOAT,
    FIELDS_INT,
    FORMAT_VERSION,
    MAGIC,
    PATTERN,
    Pack,
    PackedStore,
    look,
    pack_name,
    row_digest,
    small_arrays,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Row:
    """One sensor's packed model: everything a pack holds of it."""

    sensor_id: str
    version: str
    files: tuple[str, str, str]
    looks: tuple[tuple[int, int], ...]
    fields: dict[str, float | int | bool]
    weights: dict[str, np.ndarray]


def row_from_files(directory: Path) -> Row | None:
    """A sensor's row read from its own files (checksums verified), or None when they cannot be used or
    changed while being read (a retrain: the next rebuild packs it)."""
    try:
        saved = store.load(directory, verify=())
        paths = [directory / store.METADATA] + [saved.paths[key] for key in store.FILES]
        before = look(paths)
        weights = store.load_weights(saved.paths["weights"], saved.sha256["weights"], saved.metadata.sensor_id)
        again = store.load(directory, verify=())
    except (ArtifactError, OSError) as e:
        logger.debug("%s: not packed: %s", directory, e)
        return None
    if (
        before is None
        or look(paths) != before
        or again.metadata.record.get("version") != saved.metadata.record.get("version")
    ):
        return None
    m = saved.metadata
    return Row(
        sensor_id=m.sensor_id,
        version=str(m.record.get("version")),
        files=(saved.paths["model"].name, saved.paths["scaler"].name, saved.paths["weights"].name),
        looks=before,
        fields={
            "threshold": m.threshold,
            "mean": m.mean,
            "scale": m.scale,
            "levels_low": m.levels[0] if m.levels else float("nan"),
            "levels_high": m.levels[1] if m.levels else float("nan"),
            "interval_s": int(m.interval.total_seconds()),
            "longest_flat_run": -1 if m.longest_flat_run is None else int(m.longest_flat_run),
            "centered": bool(m.centered),
            "window": m.window,
        },
        weights=weights,
    )


def _rows_from_pack(pack: Pack, models_dir: Path) -> dict[str, Row]:
    """The rows of an existing pack whose sensors' files are unchanged: reused without reading them again."""
    current = PackedStore(models_dir, [pack])
    rows = [row for row, sensor_id in enumerate(pack.sensor_ids) if current.current(sensor_id)]
    if not rows:
        return {}
    weights, verified = pack.weights(np.array(rows))
    out = {}
    for k, row in enumerate(rows):
        if not verified[k]:
            continue  # read again from its own files
        m = pack.metadata(row)
        out[m.sensor_id] = Row(
            sensor_id=m.sensor_id,
            version=pack.versions[row],
            files=(pack.files[row][0], pack.files[row][1], pack.files[row][2]),
            looks=tuple(zip(pack.fields["file_size"][row].tolist(), pack.fields["file_mtime_ns"][row].tolist())),
            fields={
                **{name: float(pack.fields[name][row]) for name in FIELDS_FLOAT},
                **{name: int(pack.fields[name][row]) for name in FIELDS_INT},
                "centered": bool(pack.fields["centered"][row]),
                "window": pack.window,
            },
            weights={name: array[k] for name, array in weights.items()},
        )
    return out


def write_pack(path: Path, rows: list[Row]) -> Path:
    """Write the rows of one shape (sorted by sensor id here) as a pack, atomically and durably."""
    rows = sorted(rows, key=lambda r: r.sensor_id)
    window = int(rows[0].fields["window"])
    units = int(rows[0].weights["encoder_recurrent_kernel"].shape[0])
    arrays: dict[str, np.ndarray] = {
        name: np.ascontiguousarray(np.stack([r.weights[name] for r in rows]), dtype="float32")
        for name in store.WEIGHT_NAMES
    }
    arrays |= {name: np.array([r.fields[name] for r in rows], dtype="float64") for name in FIELDS_FLOAT}
    arrays |= {name: np.array([r.fields[name] for r in rows], dtype="int64") for name in FIELDS_INT}
    arrays["centered"] = np.array([r.fields["centered"] for r in rows], dtype=bool)
    arrays["file_size"] = np.array([[size for size, _ in r.looks] for r in rows], dtype="int64")
    arrays["file_mtime_ns"] = np.array([[mtime for _, mtime in r.looks] for r in rows], dtype="int64")
    # Offsets depend on the header's length, which holds them: lay the arrays out after a generous guess.
    specs: dict[str, dict[str, Any]] = {}
    header: dict[str, Any] = {
        "window": window,
        "units": units,
        "sensors": len(rows),
        "sensor_ids": [r.sensor_id for r in rows],
        "versions": [r.version for r in rows],
        "files": [list(r.files) for r in rows],
        "row_sha256": [row_digest(arrays, k) for k in range(len(rows))],
        "arrays": specs,
    }
    first_line = MAGIC + f" {FORMAT_VERSION}\n".encode()
    prefix = len(first_line) + 65
    room = len(json.dumps(header, sort_keys=True)) + 128 * len(arrays) + ALIGN
    offset = -(-(prefix + room) // ALIGN) * ALIGN
    for name, array in arrays.items():
        specs[name] = {"dtype": array.dtype.str, "shape": list(array.shape), "offset": offset}
        offset += -(-array.nbytes // ALIGN) * ALIGN
    header_line = json.dumps(header, sort_keys=True).encode("utf-8") + b"\n"
    start = specs[next(iter(arrays))]["offset"]
    if prefix + len(header_line) > start:
        raise AssertionError("pack header larger than the room left for it")
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "w+b") as f:
            f.write(first_line)
            f.write(b"0" * 64 + b"\n")
            f.write(header_line)
            for name, array in arrays.items():
                f.write(b"\0" * (specs[name]["offset"] - f.tell()))
                f.write(array.tobytes())
            f.write(b"\0" * (offset - f.tell()))
            digest = hashlib.sha256(header_line)
            for name in small_arrays(arrays):
                digest.update(arrays[name].tobytes())
            f.seek(len(first_line))
            f.write(digest.hexdigest().encode("ascii"))
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    files.fsync_path(path.parent)
    return path


def rebuild(models_dir: Path) -> dict[tuple[int, int], int]:
    """Pack every usable model of ``models_dir``, one pack per shape, replacing the packs there; rows of the
    old packs whose files are unchanged are reused, the rest read from their own files. Models that cannot
    be read are left out (the scorer loads, and fails, them alone). Returns the sensors packed per shape."""
    old = PackedStore.open(models_dir)
    try:
        reusable: dict[str, Row] = {}
        for pack in old.packs:
            reusable |= _rows_from_pack(pack, models_dir)
    finally:
        old.close()
    # An old row is matched to its directory by name, so an unchanged model is not read again.
    by_directory = {store.sensor_dir(models_dir, sensor_id).name: row for sensor_id, row in reusable.items()}
    shapes: dict[tuple[int, int], list[Row]] = {}
    for directory in sorted(models_dir.iterdir()):
        if not directory.is_dir() or not (directory / store.METADATA).exists():
            continue
        row = by_directory.get(directory.name) or row_from_files(directory)
        if row is None or store.sensor_dir(models_dir, row.sensor_id) != directory:
            continue
        shape = (int(row.fields["window"]), int(row.weights["encoder_recurrent_kernel"].shape[0]))
        shapes.setdefault(shape, []).append(row)
    for (window, units), rows in shapes.items():
        write_pack(models_dir / pack_name(window, units), rows)
    for path in models_dir.glob("pack-w*-u*.bin"):
        match = PATTERN.fullmatch(path.name)
        if match and (int(match.group(1)), int(match.group(2))) not in shapes:
            path.unlink(missing_ok=True)
    # A rebuild killed while writing leaves its temporary file (as large as the pack); training's lock means
    # no other rebuild is writing one now.
    for path in models_dir.glob(".pack-w*-u*.bin.*.tmp"):
        path.unlink(missing_ok=True)
    return {shape: len(rows) for shape, rows in shapes.items()}
