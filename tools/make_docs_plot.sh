#!/usr/bin/env bash
# Make docs/plot-example.png, the picture in the README, from generated data: a throwaway local InfluxDB,
# 30 days of generated readings ending at a fixed time, training on the first 27 days, scoring the last 3,
# then sensor_plot.py on the last 3 days of one sensor. The same inputs give the same picture.
#
#   bash tools/make_docs_plot.sh [OUTPUT]     (default docs/plot-example.png)
source "$(dirname "$0")/../scripts/lib.sh"
ensure_debian_packages
ensure_venv requirements.txt

output=${1:-docs/plot-example.png}
now=2026-11-25T00:00:00Z
sensor="AHU-2 supply air temp"   # the level shift; AHU-1 gets a spike, AHU-3 a drop to zero
work=$(mktemp -d)
.venv/bin/python -m tools.local_influxd "$work/influxdb" > "$work/url" 2> "$work/influxd.err" &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 100); do [ -s "$work/url" ] && break; sleep 0.2; done
[ -s "$work/url" ] || { cat "$work/influxd.err" >&2; exit 1; }
export INFLUX_URL="$(head -1 "$work/url")" INFLUX_DATABASE=docs STATE_DIRECTORY="$work/state"
echo '{}' > "$work/empty.json"
common=(--now "$now" --models-dir "$work/models" --ratios "$work/empty.json" --windows "$work/empty.json")

.venv/bin/python -m tools.sensor_data --url "$INFLUX_URL" --database docs --sensors 3 --days 30 --now "$now"
.venv/bin/python sensor_training.py "${common[@]}" --sensor "$sensor" --stop=-3d --seed 1 --log-level WARNING
.venv/bin/python sensor_predict.py "${common[@]}" --sensor "$sensor" --first-run 3d --delay 0s --log-level WARNING
.venv/bin/python sensor_plot.py "${common[@]}" --sensor "$sensor" --start=-3d --output "$output"
