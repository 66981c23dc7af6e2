#!/usr/bin/env bash
# Make the example evaluation report in the README from generated data: a throwaway local InfluxDB,
# 30 days of 4 generated sensors ending at a fixed time, the injected anomalies of the last day labelled
# with manual_anomaly; training on the first 27 days, scoring the last 3, then sensor_evaluate.py on the
# last 3 days. Copies summary.md to docs/evaluation-summary.md and one sensor's PNG to
# docs/evaluation-example.png.
#
#   bash tools/make_docs_report.sh [OUTPUT_DIR]     (default: a temporary directory; docs/ gets the copies)
source "$(dirname "$0")/../scripts/lib.sh"
ensure_debian_packages
ensure_venv requirements.txt

now=2026-11-25T00:00:00Z
sensor="AHU-2 supply air temp"   # the level shift; AHU-1 gets a spike, AHU-3 a drop to zero, AHU-4 a spike
work=$(mktemp -d)
output=${1:-$work/report}
.venv/bin/python -m tools.local_influxd "$work/influxdb" > "$work/url" 2> "$work/influxd.err" &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 100); do [ -s "$work/url" ] && break; sleep 0.2; done
[ -s "$work/url" ] || { cat "$work/influxd.err" >&2; exit 1; }
export INFLUX_URL="$(head -1 "$work/url")" INFLUX_DATABASE=docs
echo '{}' > "$work/empty.json"
common=(--now "$now" --models-dir "$work/models" --ratios "$work/empty.json" --windows "$work/empty.json"
        --health-measurement "")

.venv/bin/python -m tools.sensor_data --url "$INFLUX_URL" --database docs --sensors 4 --days 30 --now "$now" --label
.venv/bin/python sensor_training.py "${common[@]}" --stop=-3d --seed 1 --jobs 1 --log-level WARNING
.venv/bin/python sensor_predict.py "${common[@]}" --start=-3d --stop now --delay 0s --events-measurement "" \
    --log-level WARNING
.venv/bin/python sensor_evaluate.py "${common[@]}" --start=-3d --output "$output"
cp "$output/summary.md" docs/evaluation-summary.md
cp "$output"/AHU-2_supply_air_temp-*.png docs/evaluation-example.png
echo "report in $output; copied to docs/evaluation-summary.md and docs/evaluation-example.png"
