"""Print what sensor_predict.py flagged, as events (runs of consecutive flagged intervals) per sensor.

python -m tools.flagged --url http://127.0.0.1:8086 --database demo
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import pandas as pd

from anomaly.runs import runs
from tools import local_influxd


def events(flags: pd.DataFrame, interval: pd.Timedelta) -> pd.DataFrame:
    """Group flagged rows (index: time, sorted; columns loss, threshold) into runs with no missing interval
    between."""
    spans = runs(np.ones(len(flags), dtype=bool), pd.DatetimeIndex(flags.index), interval)
    return pd.DataFrame(
        {
            "start": [flags.index[first] for first, _ in spans],
            "end": [flags.index[last] for _, last in spans],
            "windows": [last - first + 1 for first, last in spans],
            "peak_loss": [flags["loss"].iloc[first : last + 1].max() for first, last in spans],
            "threshold": [flags["threshold"].iloc[first : last + 1].max() for first, last in spans],
        },
        columns=["start", "end", "windows", "peak_loss", "threshold"],
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True)
    parser.add_argument("--database", required=True)
    parser.add_argument("--measurement", default="PREDICT_ANOMALY")
    parser.add_argument("--sensor-tag", default="uniqueID")
    parser.add_argument("--interval", default="15min")
    args = parser.parse_args(argv)
    query = f'SELECT "loss", "threshold" FROM "{args.measurement}" WHERE "anomaly" = true GROUP BY "{args.sensor_tag}"'
    result = local_influxd.query(args.url, query, args.database)["results"][0]
    series = result.get("series", [])
    if not series:
        print("nothing flagged")
        return 0
    for s in series:
        frame = pd.DataFrame(s["values"], columns=["time", "loss", "threshold"])
        frame.index = pd.to_datetime(frame.pop("time"), unit="s", utc=True)
        print(f"{s['tags'][args.sensor_tag]}:")
        for e in events(frame, pd.Timedelta(args.interval)).itertuples():
            print(
                f"  {e.start:%Y-%m-%d %H:%M} .. {e.end:%H:%M} UTC  {e.windows:3d} windows  "
                f"peak loss {e.peak_loss:.3f} > threshold {e.threshold:.3f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
