"""Print what sensor_predict.py flagged, as events (runs of consecutive flagged intervals) per sensor.

    python -m tools.flagged --url http://127.0.0.1:8086 --database demo
"""
from __future__ import annotations

import argparse
import sys

import pandas as pd

from tools import local_influxd


def events(flags: pd.DataFrame, interval: pd.Timedelta) -> pd.DataFrame:
    """Group flagged rows (index: time, columns loss, threshold) into runs with no missing interval between."""
    if flags.empty:
        return pd.DataFrame(columns=["start", "end", "windows", "peak_loss", "threshold"])
    run = (flags.index.to_series().diff() != interval).cumsum()
    grouped = flags.groupby(run.to_numpy())
    return pd.DataFrame({
        "start": grouped.apply(lambda g: g.index[0]), "end": grouped.apply(lambda g: g.index[-1]),
        "windows": grouped.size(), "peak_loss": grouped["loss"].max(), "threshold": grouped["threshold"].max(),
    }).reset_index(drop=True)


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
            print(f"  {e.start:%Y-%m-%d %H:%M} .. {e.end:%H:%M} UTC  {e.windows:3d} windows  "
                  f"peak loss {e.peak_loss:.3f} > threshold {e.threshold:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
