"""Writing files so that a reader sees the old content or the new, never half of either."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from anomaly.errors import ConfigError


def fsync_path(path: Path) -> None:
    """Flush a file or a directory entry to disk (a directory: so a rename survives a power cut)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, data: str | bytes, durable: bool = False) -> Path:
    """Write ``data`` to a temporary file beside ``path``, then rename it over ``path`` in one step.

    ``durable`` also flushes the file and the directory to disk (model metadata, which must survive
    a power cut); reports and state files only need the rename. Returns ``path``.
    """
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        if isinstance(data, str):
            temporary.write_text(data, encoding="utf-8")
        else:
            temporary.write_bytes(data)
        if durable:
            fsync_path(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    if durable:
        fsync_path(path.parent)
    return path


def move(old: Path, new: Path) -> None:
    """Move a file, across file systems too: written to ``new`` atomically (its directory made), then
    ``old`` removed. Raises OSError when ``old`` cannot be read or ``new`` written; a removal that fails
    (a read-only directory) is left: the caller reads ``new`` from now on."""
    new.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(new, old.read_bytes())
    with contextlib.suppress(OSError):
        old.unlink()


def check_writable(directory: Path, what: str) -> None:
    """Prove a file can be written in ``directory``, or in the nearest existing directory above it when it
    does not exist yet (a first run makes it later), without leaving anything behind: a job that will
    write there then fails at start-up with one line, not after hours of work."""
    existing = directory
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as e:
        raise ConfigError(f"{what} {directory} cannot be written ({e.strerror or e}); give a writable one") from None
