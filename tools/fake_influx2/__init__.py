"""An imitation of InfluxDB 2.7 for the Flux tests (tests/test_flux.py, tests/test_fake_flux*.py, the job tests
run on both dialects) and the Flux read benchmark (bench/bench_flux_read.py): no InfluxDB 2.x server can run
on this machine.

It keeps the points written to it (storage.py) and answers each query by running it (parser.py, interpreter.py)
with the Flux functions the project's queries use (functions.py, aggregates.py), as InfluxDB's documentation
says they behave; anything else is refused, so a query it cannot answer fails instead of passing unchecked.
Answers are annotated CSV as InfluxDB 2.7 writes them (tables.py); the HTTP API is server.py.
"""

from tools.fake_influx2.server import BUCKET, EMPTY_CSV, ORG, TOKEN, V2_ROUTES, FakeInflux2, run
from tools.fake_influx2.storage import Bucket
from tools.fake_influx2.tables import Table

__all__ = ["BUCKET", "EMPTY_CSV", "ORG", "TOKEN", "V2_ROUTES", "Bucket", "FakeInflux2", "Table", "run"]
