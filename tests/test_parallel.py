"""anomaly/parallel.py's ``ahead``: the scorer gathers a chunk's models and readings while it scores the chunk
before, so its results must come in order, overlap the caller's work, and leave no thread behind."""

from __future__ import annotations

import threading
import time

import pytest

from anomaly.parallel import ahead


def test_ahead_gives_each_result_in_order():
    assert list(ahead(lambda x: x * x, [3, 1, 2])) == [9, 1, 4]
    assert list(ahead(lambda x: x, [])) == []


def test_ahead_computes_the_next_item_while_the_caller_works_on_the_one_before():
    started = threading.Event()

    def function(item: int) -> int:
        if item == 1:
            started.set()
        return item

    results = ahead(function, [0, 1])
    assert next(results) == 0
    # The caller has not asked for item 1 yet: it is being computed all the same.
    assert started.wait(timeout=10)
    assert next(results) == 1


def test_an_error_is_raised_where_its_result_is_taken_after_the_results_before_it():
    def function(item: int) -> int:
        if item == 1:
            raise ValueError("item 1")
        return item

    results = ahead(function, [0, 1, 2])
    assert next(results) == 0
    with pytest.raises(ValueError, match="item 1"):
        next(results)


def test_a_caller_that_stops_early_waits_for_the_item_being_computed():
    finished = threading.Event()

    def function(item: int) -> int:
        if item == 1:
            time.sleep(0.2)
            finished.set()
        return item

    results = ahead(function, [0, 1])
    assert next(results) == 0
    results.close()
    assert finished.is_set()


def test_ahead_of_ahead_is_a_pipeline_of_three():
    """sensor_predict scores a chunk while the next one's readings are read and the one after's models loaded."""
    loading = threading.Event()

    def load(item: int) -> int:
        if item == 2:
            loading.set()
        return item * 10

    results = ahead(lambda loaded: loaded + 1, ahead(load, [0, 1, 2, 3]))
    assert next(results) == 1
    # The caller holds chunk 0: chunk 1 is read (or was) and chunk 2's models are being loaded.
    assert loading.wait(timeout=10)
    assert list(results) == [11, 21, 31]
