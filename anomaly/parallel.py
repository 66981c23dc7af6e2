"""NumPy work spread over the cores this process may use: NumPy lets go of the GIL in its loops, so
threads run batches of it side by side, without the cost of processes."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def thread_map(function: Callable[[T], R], items: Sequence[T]) -> list[R]:
    """``[function(item) for item in items]``, in threads, one per core, when there is more than one item."""
    if len(items) < 2 or cores() < 2:
        return [function(item) for item in items]
    with ThreadPoolExecutor(min(len(items), cores())) as pool:
        return list(pool.map(function, items))
