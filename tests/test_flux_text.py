"""The Flux text of the read-back queries (status, plots): every value is a parameter, columns are literals.

No InfluxDB 2.x server runs where these tests run (test_flux.py says why), so what a real server computes
from these pipelines is not checked here: only their text, and in test_flux.py the parsing of answers
written by hand the way InfluxDB 2.7 sends them.
"""

from __future__ import annotations

import functools
import re

import pytest

from anomaly.influx.flux_text import (
    flux_anomaly_counts,
    flux_group_tags,
    flux_labels,
    flux_last_reading,
    flux_last_scored,
    flux_means,
    flux_missing_counts,
    flux_scores,
    sensor_params,
)
from anomaly.settings import Schema

SCHEMA = Schema(where=(("siteRef", 'Campus "East"'),))
CHUNK = '|> filter(fn: (r) => r["uniqueID"] == params.sensor0 or r["uniqueID"] == params.sensor1)'


@pytest.mark.parametrize(
    "build, pieces",
    [
        (
            flux_last_reading,
            [
                "range(start: params.start)",
                "r._measurement == params.measurement",
                "r._field == params.field",
                'r["siteRef"] == params.where0',
                '|> last()\n  |> group(columns: ["uniqueID"])\n  |> top(n: 1, columns: ["_time"])',
            ],
        ),
        (
            flux_anomaly_counts,
            [
                'r._field == "anomaly"',
                "r._value == true",
                "|> count()",
            ],
        ),
        (
            flux_missing_counts,
            [
                "range(start: params.start)",
                "r._measurement == params.measurement",
                'r._field == "kind"',
                "r._value == params.kind",  # "missing" travels as a parameter too
                'group(columns: ["uniqueID"])',
                "|> count()",
            ],
        ),
        (
            flux_scores,
            [
                "range(start: params.start, stop: params.stop)",
                '|> filter(fn: (r) => r._field == "loss" or r._field == "threshold" or r._field == "anomaly" '
                'or r._field == "val_num" or r._field == "score" or r._field == "worst" or r._field == "newest")',
                'pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")',
            ],
        ),
    ],
)
def test_read_back_queries(build, pieces):
    text = build(SCHEMA, 2)
    for piece in [*pieces, CHUNK]:
        assert piece in text
    assert "Campus" not in text  # --where values travel as parameters


# Every query that reads a chunk of sensors, with the number of sensors.
CHUNK_QUERIES = [
    flux_means,
    flux_labels,
    flux_last_scored,
    functools.partial(flux_last_scored, stop=True),
    flux_last_reading,
    functools.partial(flux_group_tags, key="equip"),
    flux_anomaly_counts,
    flux_missing_counts,
    flux_scores,
]


@pytest.mark.parametrize("build", CHUNK_QUERIES)
@pytest.mark.parametrize("sensors", [1, 3, 200])
def test_a_chunk_is_chosen_by_equalities_joined_with_or_which_storage_can_apply(build, sensors):
    """InfluxDB's planner pushes a filter down to storage only when it compares columns with literals (or record
    members, which Flux resolves to literals) and joins the comparisons with and/or: contains() is never
    pushed, so every point in range would be read. The chunk's ids are parameters sensor0, sensor1, ..."""
    text = build(SCHEMA, sensors)
    assert "contains(" not in text
    (chunk,) = [line for line in text.splitlines() if 'uniqueID"] ==' in line]
    body = chunk.removeprefix("  |> filter(fn: (r) => ").removesuffix(")")
    assert body.split(" or ") == [f'r["uniqueID"] == params.sensor{i}' for i in range(sensors)]
    assert {f"params.sensor{i}" for i in range(sensors)} == set(re.findall(r"params\.sensor\d+", text))


def test_sensor_params_name_each_id_by_its_place():
    ids = ["AHU-1 supply", 'Zone 3, "Café"=Süd', "${x}"]
    assert sensor_params(ids) == {"sensor0": ids[0], "sensor1": ids[1], "sensor2": ids[2]}


@pytest.mark.parametrize("build", CHUNK_QUERIES)
def test_a_query_for_no_sensor_is_refused(build):
    with pytest.raises(ValueError, match="at least one value"):
        build(SCHEMA, 0)
