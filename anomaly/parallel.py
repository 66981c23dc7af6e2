"""Work side by side in threads, without the cost of processes: NumPy work spread over the cores this process
may use (NumPy lets go of the GIL in its loops), and the next step's I/O begun while this one computes."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
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


def ahead(function: Callable[[T], R], items: Iterable[T]) -> Iterator[R]:
    """``function(item)`` for each item in order, the next one computed in a thread while the caller works on
    the one it was given: one step's waiting on the database overlaps the other's computing, and ``ahead``
    of an ``ahead`` is a pipeline of three. An error of ``function`` is raised where its result is taken; the
    thread is waited for when the caller stops early."""
    with ThreadPoolExecutor(1) as pool:
        upcoming = None
        for item in items:
            submitted = pool.submit(function, item)
            if upcoming is not None:
                yield upcoming.result()
            upcoming = submitted
        if upcoming is not None:
            yield upcoming.result()
