"""Print what sensor_predict.py flagged, as the events it makes of the flags (anomaly.alerts.events) per sensor.

python -m tools.flagged --url http://127.0.0.1:8086 --database demo
"""

from __future__ import annotations

import argparse
import sys

import pandas as pd

from anomaly.alerts.events import events
from tools import local_influxd


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True)
    parser.add_argument("--database", required=True)
    parser.add_argument("--measurement", default="PREDICT_ANOMALY")
    parser.add_argument("--sensor-tag", default="uniqueID")
    parser.add_argument("--interval", default="15min")
    parser.add_argument(
        "--window", type=int, default=15, help="the sensors' window: flags that share a reading are one event"
    )
    args = parser.parse_args(argv)
    query = f'SELECT "loss", "threshold" FROM "{args.measurement}" WHERE "anomaly" = true GROUP BY "{args.sensor_tag}"'
    result = local_influxd.query(args.url, query, args.database)["results"][0]
    series = result.get("series", [])
    if not series:
        print("nothing flagged")
        return 0
    for s in series:
        frame = pd.DataFrame(s["values"], columns=["time", "loss", "threshold"]).assign(anomaly=True)
        frame.index = pd.to_datetime(frame.pop("time"), unit="s", utc=True)
        sensor_id = s["tags"][args.sensor_tag]
        print(f"{sensor_id}:")
        for e in events(sensor_id, frame, pd.Timedelta(args.interval), args.window):
            print(
                f"  {e.start:%Y-%m-%d %H:%M} .. {e.end:%H:%M} UTC  {e.windows:3d} windows  "
                f"peak loss {e.peak_loss:.3f} > threshold {e.threshold:.3f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
