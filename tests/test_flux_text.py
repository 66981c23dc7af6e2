"""The Flux text of the read-back queries (status, plots): every value is a parameter, columns are literals.

No InfluxDB 2.x server runs where these tests run (test_flux.py says why), so what a real server computes
from these pipelines is not checked here: only their text, and in test_flux.py the parsing of answers
written by hand the way InfluxDB 2.7 sends them.
"""

from __future__ import annotations

import pytest

from anomaly.influx.flux import flux_anomaly_counts, flux_last_reading, flux_missing_counts, flux_scores
from anomaly.settings import Schema

SCHEMA = Schema(where=(("siteRef", 'Campus "East"'),))


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
                'contains(value: r["uniqueID"], set: params.sensors)',
                '|> last()\n  |> group(columns: ["uniqueID"])\n  |> top(n: 1, columns: ["_time"])',
            ],
        ),
        (
            flux_anomaly_counts,
            [
                'r._field == "anomaly"',
                "r._value == true",
                "|> count()",
                'contains(value: r["uniqueID"], set: params.sensors)',
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
                'contains(value: r["uniqueID"], set: params.sensors)',
            ],
        ),
        (
            flux_scores,
            [
                "range(start: params.start, stop: params.stop)",
                'contains(value: r._field, set: ["loss", "threshold", "anomaly", "val_num", "score"])',
                'pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")',
            ],
        ),
    ],
)
def test_read_back_queries(build, pieces):
    text = build(SCHEMA)
    for piece in pieces:
        assert piece in text
    assert "Campus" not in text  # --where values travel as parameters
