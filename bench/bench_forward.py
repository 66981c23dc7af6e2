#!/usr/bin/env python3
"""Benchmark: the NumPy forward pass of a chunk's sensors, its batches' weights stacked anew from each sensor's
own arrays or sliced from the chunk's weights as the packed store read them (model_predict.SensorModel.stacked).

Not part of the test suite. Runs in one process, with no InfluxDB: random weights of the default shape
(window 15, 32 units) in chunks of --chunk-size sensors, as anomaly/pack.py reads them, each sensor's weights
a view of its row; losses.fleet_losses called once per chunk, as a scoring run calls it. The two ways are
run alternately, --repeats times each, in one run; prints each one's times, the median ratio and a JSON line.
The losses are checked to be the same to the last bit.

    .venv/bin/python bench/bench_forward.py                         # a tick: 10,000 sensors x 1 window
    .venv/bin/python bench/bench_forward.py --sensors 1000 --windows 96   # a catch-up
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from anomaly import losses  # noqa: E402
from anomaly.metadata import ModelMetadata  # noqa: E402
from anomaly.store import weight_shapes  # noqa: E402
from model_predict import SensorModel  # noqa: E402

WINDOW, UNITS = 15, 32


def chunk_models(size: int, rng: np.random.Generator) -> tuple[list[SensorModel], list[SensorModel]]:
    """One chunk's models twice: each with its weights only, and each also with the chunk's stacked weights."""
    block = {k: (0.2 * rng.normal(size=(size, *s))).astype("float32") for k, s in weight_shapes(UNITS).items()}
    metadata = ModelMetadata("bench", WINDOW, pd.Timedelta(minutes=15), 0.1, 0.0, 1.0)
    views = [{k: a[row] for k, a in block.items()} for row in range(size)]
    own = [SensorModel(metadata, v) for v in views]
    return own, [SensorModel(metadata, v, stacked=(block, row)) for row, v in enumerate(views)]


def run(chunks: list[tuple[list[SensorModel], list[np.ndarray]]]) -> tuple[float, list[np.ndarray]]:
    began = time.perf_counter()
    found = [loss for models, windows in chunks for loss in losses.fleet_losses(models, windows)[0]]
    return time.perf_counter() - began, found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sensors", type=int, default=10000)
    parser.add_argument("--windows", type=int, default=1, help="windows per sensor (default 1: a tick)")
    parser.add_argument("--chunk-size", type=int, default=200, help="sensors per chunk, as the jobs' (default 200)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(7)
    stacked, sliced = [], []
    for first in range(0, args.sensors, args.chunk_size):
        size = min(args.chunk_size, args.sensors - first)
        windows = [rng.normal(size=(args.windows, WINDOW, 1)).astype("float32") for _ in range(size)]
        own, packed = chunk_models(size, rng)
        stacked.append((own, windows))
        sliced.append((packed, windows))
    times: dict[str, list[float]] = {"stacked": [], "sliced": []}
    for _ in range(args.repeats):
        seconds, a = run(stacked)
        times["stacked"].append(seconds)
        seconds, b = run(sliced)
        times["sliced"].append(seconds)
        if not all(np.array_equal(x, y) for x, y in zip(a, b)):
            raise RuntimeError("the two ways gave different losses")
    ratio = statistics.median(times["stacked"]) / statistics.median(times["sliced"])
    for name, values in times.items():
        print(f"{name:>8}: " + " ".join(f"{v:.3f}" for v in values) + f" s (median {statistics.median(values):.3f})")
    print(f"stacked / sliced, medians: {ratio:.2f}x ({args.sensors} sensors x {args.windows} windows)")
    report = {k: [round(v, 4) for v in vs] for k, vs in times.items()}
    print(json.dumps({"sensors": args.sensors, "windows": args.windows, **report, "ratio": round(ratio, 3)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
