"""The Flux read benchmark runs end to end at a tiny size and ends with its JSON line (no timing is judged)."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import ROOT

SENSORS, DAYS = 3, 1


def test_bench_flux_read_runs_and_every_path_reads_the_same():
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_flux_read.py"), "--sensors", str(SENSORS), "--days", str(DAYS)],
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("scenario"), result.stdout
    report = json.loads(lines[-1])
    assert report["sizes"] == {"sensors": SENSORS, "days": DAYS, "interval_min": 15}
    for scenario in ("means", "scores"):
        assert set(report[scenario]) == {"records", "data_frame", "bulk"}
        for figures in report[scenario].values():
            assert (figures["sensors"], figures["rows"]) == (SENSORS, SENSORS * DAYS * 96), scenario
            assert figures["records_per_s"] > 0 and figures["peak_rss_mb"] > 0, scenario
        assert report[scenario]["bulk"]["vs_records"]["speed"] > 0
