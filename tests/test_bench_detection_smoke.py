"""The detection benchmark runs end to end at a tiny size and ends with its JSON line, and every method it
compares detects the injected events (a detector that never flags, or always does, fails here)."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import ROOT


def test_bench_detection_runs_reports_every_kind_and_method_and_each_method_detects(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "bench_detection.py"),
            "--quick",
            "--days",
            "10",
            "--holdout-days",
            "5",
            "--epochs",
            "1",
            "--history",
            "96",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert set(report["results"]) == {"daily", "noisy", "drift", "flat", "all"}
    for kind, table in report["results"].items():
        assert set(table) == {"percentile K=1", "percentile K=2", "percentile K=3", "dynamic K=1", "dynamic K=2"}, kind
        assert table["percentile K=1"]["events"] == (12 if kind == "all" else 3), kind
    assert "percentile K=1 against dynamic K=1:" in result.stdout
    # The injected events are large (a spike of 6x the sensor's spread, a shift of 3x, a drop to zero): even
    # a one-epoch model finds most of them with every method (11 or 12 of 12 here), and on each kind of
    # sensor at least one; few of its flag runs are false alarms (event precision 0.83 or more here).
    for kind, table in report["results"].items():
        for method, figures in table.items():
            assert figures["events_detected"] > 0, f"{method} on {kind} sensors detects nothing"
    for method, figures in report["results"]["all"].items():
        assert figures["events_detected"] >= 9 and figures["event_precision"] >= 0.5, (method, figures)
