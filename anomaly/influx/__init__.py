"""The two dialects behind ``influx_interact.Database``, and line protocol.

``influxql``: InfluxDB 1.x and 3.x (and 2.x through its DBRP mapping) over the v1 HTTP API.
``flux``: InfluxDB 2.x and Cloud through influxdb-client. ``line_protocol``: the text every write sends.
Callers open a database with ``influx_interact.connect``, which picks the dialect.
"""
