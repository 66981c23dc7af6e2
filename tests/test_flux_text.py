"""The Flux text of the read-back queries (status, plots): every value is a parameter, columns are literals."""

from __future__ import annotations

import pytest

from anomaly.influx.flux import flux_anomaly_counts, flux_last_reading, flux_scores
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
                "|> last()",
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
            flux_scores,
            [
                "range(start: params.start, stop: params.stop)",
                'contains(value: r._field, set: ["loss", "threshold", "anomaly", "val_num"])',
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
