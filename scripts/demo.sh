#!/usr/bin/env bash
# The whole tool on a throwaway local InfluxDB: seed generated sensor data, train, score, show the flags.
# Everything it makes lives in ./demo-run (deleted and made anew on each run).
source "$(dirname "$0")/lib.sh"
ensure_debian_packages
ensure_venv requirements.txt

rm -rf demo-run && mkdir -p demo-run
.venv/bin/python -m tools.local_influxd demo-run/influxdb > demo-run/url 2> demo-run/influxd.err &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
for _ in $(seq 100); do [ -s demo-run/url ] && break; sleep 0.2; done
[ -s demo-run/url ] || { cat demo-run/influxd.err >&2; exit 1; }
export INFLUX_URL="$(head -1 demo-run/url)" INFLUX_DATABASE=demo
export STATE_DIRECTORY="$PWD/demo-run/state"  # scoring's memory of events, with the rest of the demo
echo "== throwaway InfluxDB at $INFLUX_URL"

echo "== seeding 30 days of 5 sensors (the last day has injected anomalies)"
.venv/bin/python -m tools.sensor_data --url "$INFLUX_URL" --database demo --sensors 5 --days 30

echo "== training on all but the last day"
.venv/bin/python sensor_training.py --stop=-1d --models-dir demo-run/models --seed 1

echo "== scoring the last day"
.venv/bin/python sensor_predict.py --models-dir demo-run/models

echo "== flagged in InfluxDB (measurement PREDICT_ANOMALY)"
.venv/bin/python -m tools.flagged --url "$INFLUX_URL" --database demo
